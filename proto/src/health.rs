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
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
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
    axum::serve(listener, router(ready))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds `addr` and serves the endpoints on a background task for the rest of the process.
pub async fn spawn(addr: &str, ready: ReadyCheck) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = serve(listener, ready, std::future::pending()).await {
            tracing::error!("health endpoint failed: {e}");
        }
    });
    Ok(local)
}
