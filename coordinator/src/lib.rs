//! The sweep coordinator: sweep files in, trials scheduled on workers over gRPC, results kept
//! in SQLite, ranked reports out. It never links libtorch.
//!
//! - [`sweep`]: parse, validate and expand sweep files into trials with stable ids.
//! - [`core`]: the scheduling state machine (pure; events in, decisions out).
//! - [`store`]: SQLite persistence.
//! - [`service`]: shared handle and the gRPC service over it.
//! - [`server`]: serving that service (token check, TLS, worker expiry tick).
//! - [`report`]: ranked tables, effects per axis, report.md / results.json / results.csv.
//! - [`tls`]: server TLS from PEM files; `tls init` (CA, certificates, token).
//! - [`html`]: the self-contained report.html with SVG charts and computed findings.

pub mod admin;
pub mod checkpoints;
pub mod core;
pub mod dashboard;
pub mod early_stop;
pub mod html;
pub mod render;
pub mod report;
pub mod server;
pub mod service;
pub mod stats;
pub mod status;
pub mod store;
pub mod sweep;
pub mod tls;
