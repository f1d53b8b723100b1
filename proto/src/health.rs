//! Liveness and readiness endpoints over plain HTTP, for Kubernetes probes and load balancers.
//!
//! `/healthz` answers 200 while the process can serve HTTP at all: a failing liveness probe
//! restarts the pod, so it must not depend on anything outside the process. `/readyz` runs the
//! given check (the coordinator: its database answers; a worker: it holds a live session with
//! the coordinator) and answers 503 with the reason when it fails.

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use std::future::Future;
use std::sync::Arc;

/// Returns `Err(reason)` while the process should not receive work.
pub type ReadyCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

pub fn router(ready: ReadyCheck) -> Router {
    router_with_metrics(ready, None)
}

/// [`router`], plus `GET /metrics` when `metrics` is given (a worker's health port: it holds
/// no admin token to check, and what it exports is its own training's numbers, so the port's
/// network policy is the guard, as for the probes).
pub fn router_with_metrics(ready: ReadyCheck, metrics: Option<crate::observe::Render>) -> Router {
    let router = match metrics {
        Some(render) => Router::new().route(
            "/metrics",
            get(move || {
                let render = render.clone();
                async move { crate::observe::metrics_response(render()) }
            }),
        ),
        None => Router::new(),
    };
    router.route("/healthz", get(|| async { "ok\n" })).route(
        "/readyz",
        get(move || {
            let ready = ready.clone();
            async move {
                // The check may read a database: on a blocking thread.
                let outcome = tokio::task::spawn_blocking(move || ready())
                    .await
                    .unwrap_or_else(|e| Err(format!("readiness check panicked: {e}")));
                match outcome {
                    Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                    Err(why) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready: {why}\n"),
                    ),
                }
            }
        }),
    )
}

/// Serves the two endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ready: ReadyCheck,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router(listener, router(ready), shutdown).await
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds `addr` and serves the endpoints on a background task for the rest of the process.
pub async fn spawn(addr: &str, ready: ReadyCheck) -> std::io::Result<std::net::SocketAddr> {
    spawn_router(addr, router(ready)).await
}

/// Binds `addr` and serves `router` on a background task for the rest of the process.
pub async fn spawn_router(addr: &str, router: Router) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = serve_router(listener, router, std::future::pending()).await {
            tracing::error!("health endpoint failed: {e}");
        }
    });
    Ok(local)
}
