//! The live dashboard over HTTP (`--http-listen`): one self-contained page (no CDN, no
//! network fetch beyond this server) polling a small JSON API, beside `/healthz` and `/readyz`.
//!
//! - `GET /`: the page (`dashboard.html`, embedded); `#/sweep/NAME` shows one sweep.
//! - `GET /api/sweeps`, `GET /api/sweeps/NAME`: the list and one sweep's trials with their
//!   learning curves, and a search's best so far (`search`, drawn as a step chart; the
//!   report's rule, `report::search::best_so_far`) ([`crate::app::status`], the view model
//!   `status` and the Admin API share).
//! - `GET /sweeps/NAME/report`: the report as it stands (report.html).
//! - `POST /api/sweeps/NAME/cancel`, `POST /api/sweeps/NAME/rerun`: need the admin token.
//! - `GET /metrics`: Prometheus metrics ([`crate::app::metrics`]; docs/METRICS.md), read
//!   under the same rule as the dashboard, so a scrape off loopback sends the admin token
//!   (Prometheus' `authorization: { credentials_file: ... }`). One rule for every read of
//!   this listener: the metrics name the sweeps, as the dashboard does.
//!
//! Reading needs no token when the listener is on loopback (only this machine's users reach
//! it) and the request names a loopback host (not a rebound DNS name); on any other address
//! every request needs `authorization: Bearer <admin token>`. Actions always need it, in a
//! header that another site's form or link cannot send.

use super::auth::{self, Refusal, Role, Tokens};
use crate::app::AppError;
use crate::app::Handle;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

const PAGE: &str = include_str!("dashboard.html");

#[derive(Clone)]
struct Dash {
    handle: Handle,
    tokens: Arc<Tokens>,
    /// Reads without a token (the listener is on loopback).
    open_reads: bool,
}

fn json(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

fn to_json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn error(status: StatusCode, message: &str) -> Response {
    json(status, serde_json::json!({ "error": message }).to_string())
}

fn from_app(e: AppError) -> Response {
    let code = match e {
        AppError::NotFound(_) => StatusCode::NOT_FOUND,
        AppError::Invalid(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(code, &e.to_string())
}

impl Dash {
    /// `None` when the request may go on, else the refusal (the one check of [`auth`]).
    fn refuse(&self, headers: &HeaderMap, write: bool) -> Option<Response> {
        if !write && self.open_reads && loopback_host(headers) {
            return None;
        }
        let given = auth::bearer(
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        );
        // The page asks for the token on 401, so every token problem answers 401.
        match auth::check(&self.tokens, given, Role::Admin) {
            Ok(_) => None,
            Err(r @ Refusal::NoAdminToken) => Some(error(StatusCode::FORBIDDEN, &r.to_string())),
            Err(Refusal::Missing(_)) => Some(error(
                StatusCode::UNAUTHORIZED,
                "this needs the admin token (authorization: Bearer ...)",
            )),
            Err(Refusal::Wrong(_) | Refusal::WorkerToken) => {
                Some(error(StatusCode::UNAUTHORIZED, "wrong admin token"))
            }
        }
    }

    /// Runs `f` on a blocking thread (it may read the store, and serialising a large view
    /// takes a while) and answers with the JSON text it makes.
    async fn answer(
        &self,
        f: impl FnOnce(&Handle) -> Result<String, AppError> + Send + 'static,
    ) -> Response {
        let h = self.handle.clone();
        match tokio::task::spawn_blocking(move || f(&h)).await {
            Ok(Ok(text)) => json(StatusCode::OK, text),
            Ok(Err(e)) => from_app(e),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        }
    }
}

/// The request names this machine (`Host: localhost:PORT`, `127.0.0.1:PORT`, `[::1]:PORT`):
/// a page on another site that rebinds its own name to 127.0.0.1 sends its own name here, so
/// open reads on loopback are not open to it.
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    sweep_proto::tls::is_loopback(name)
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response()
}

async fn metrics(State(d): State<Dash>, headers: HeaderMap) -> Response {
    if let Some(r) = d.refuse(&headers, false) {
        return r;
    }
    let h = d.handle.clone();
    match tokio::task::spawn_blocking(move || h.metrics_text()).await {
        Ok(text) => sweep_proto::observe::metrics_response(text),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn sweeps(State(d): State<Dash>, headers: HeaderMap) -> Response {
    if let Some(r) = d.refuse(&headers, false) {
        return r;
    }
    d.answer(|h| Ok(to_json(&serde_json::json!({ "sweeps": h.list()? }))))
        .await
}

async fn sweep(State(d): State<Dash>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    if let Some(r) = d.refuse(&headers, false) {
        return r;
    }
    d.answer(move |h| Ok(to_json(&*h.view(&name, true)?))).await
}

async fn report(State(d): State<Dash>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    if let Some(r) = d.refuse(&headers, false) {
        return r;
    }
    let h = d.handle.clone();
    // Rendering draws every trial's curves: on the blocking thread too.
    match tokio::task::spawn_blocking(move || {
        h.report(&name).map(|r| crate::report::html::render(&r))
    })
    .await
    {
        Ok(Ok(html)) => {
            ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
        }
        Ok(Err(e)) => from_app(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn cancel(State(d): State<Dash>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    if let Some(r) = d.refuse(&headers, true) {
        return r;
    }
    d.answer(move |h| {
        Ok(to_json(
            &serde_json::json!({ "trials": h.cancel_in(&name, "")? }),
        ))
    })
    .await
}

async fn rerun(State(d): State<Dash>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    if let Some(r) = d.refuse(&headers, true) {
        return r;
    }
    d.answer(move |h| Ok(to_json(&serde_json::json!({ "trials": h.rerun(&name)? }))))
        .await
}

/// The dashboard and the health endpoints on `listener`, for the rest of the process.
pub async fn spawn(
    addr: &str,
    handle: Handle,
    tokens: &Tokens,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let check = handle.clone();
    let dash = Dash {
        handle,
        tokens: Arc::new(tokens.clone()),
        open_reads: local.ip().is_loopback(),
    };
    let app = Router::new()
        .route("/", get(page))
        .route("/api/sweeps", get(sweeps))
        .route("/api/sweeps/{name}", get(sweep))
        .route("/api/sweeps/{name}/cancel", post(cancel))
        .route("/api/sweeps/{name}/rerun", post(rerun))
        .route("/sweeps/{name}/report", get(report))
        .route("/metrics", get(metrics))
        .with_state(dash)
        .merge(sweep_proto::health::router(Arc::new(move || check.ready())));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("dashboard failed: {e}");
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::HOST, h.parse().unwrap());
        m
    }

    #[test]
    fn only_loopback_host_names_read_without_a_token() {
        for h in [
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "localhost",
        ] {
            assert!(loopback_host(&host(h)), "{h}");
        }
        for h in ["evil.example:8080", "192.168.1.4:8080", "[fe80::1]:80"] {
            assert!(!loopback_host(&host(h)), "{h}");
        }
        assert!(!loopback_host(&HeaderMap::new()));
    }
}
