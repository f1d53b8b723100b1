//! The sweep coordinator: sweep files in, trials scheduled on workers over gRPC, results kept
//! in SQLite, ranked reports out. It never links libtorch. One folder per layer, in the order
//! a trial passes through them (docs/ARCHITECTURE.md tells the whole path):
//!
//! - [`plan`]: the sweep file: parse, check, expand into trials with content-hash ids
//!   (`plan::parse` is pure; `plan::load` reads the file and lists image folders).
//! - [`sched`]: pure decisions over observations, the clock passed in: the scheduling core
//!   (leases, heartbeats, retries, cancel) and early stopping.
//! - [`store`]: everything on disk: SQLite (one process) and the checkpoint, model and module
//!   files beside it. Only this layer runs SQL.
//! - [`app`]: the running coordinator: the shared handle, the group-commit thread, the cached
//!   views, and the operations (submit, cancel, rerun, lease, report) over core and store.
//!   Knows no tonic or protobuf types.
//! - [`api`]: the borders: the workers' and the admin gRPC services, the dashboard over HTTP,
//!   one bearer-token check, protobuf conversions, the server and its TLS.
//! - [`report`]: the report's one view model and its renderings (md, csv, json, html).
//!
//! The `coordinator` binary (`cli/`: main, local sweeps, remote commands) sits on top.

pub mod api;
pub mod app;
pub mod plan;
pub mod report;
pub mod sched;
pub mod store;
