//! What both binaries share for being watched: log set-up (`--log-format`) and the
//! `/metrics` answer.
//!
//! Rules:
//! - Logs go to stderr; `RUST_LOG` filters them (`default` when it is unset). `text` is the
//!   human format (colours only on a terminal); `json` writes one object per line with the
//!   event's fields as fields (`trial`, `attempt`, `worker`, `sweep`, ...), never folded into
//!   the message, so a log pipeline can select on them.
//! - `/metrics` answers in the OpenMetrics text format (`prometheus-client`'s encoder), which
//!   Prometheus negotiates since 2.5. Labels have bounded cardinality: never a trial id.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// `--log-format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the process's log subscriber (once, before anything logs).
pub fn init_logs(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // Fields at the top level, beside `timestamp`, `level`, `target` and `message`.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

/// Renders the current metrics as OpenMetrics text.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `text` (from a [`Render`]) as the answer to `GET /metrics`.
pub fn metrics_response(text: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response()
}

/// Encodes `registry` (an encoding error cannot happen when writing to a String; it would
/// give an empty answer, which Prometheus reports as a failed scrape).
pub fn encode(registry: &prometheus_client::registry::Registry) -> String {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        text.clear();
    }
    text
}
