//! The borders of the coordinator: everything that speaks a wire format. Only this layer
//! sees tonic and the `pb` types; it translates and calls `app`.
//!
//! - [`worker`]: the workers' gRPC service (`Coordinator`: register, lease, heartbeat,
//!   progress, results, checkpoints, modules).
//! - [`admin`]: the `Admin` gRPC service (submit, status, watch, cancel, rerun, report,
//!   export, upload).
//! - [`dashboard`]: the live dashboard and its JSON over HTTP.
//! - [`auth`]: the one bearer-token check, returning the caller's role.
//! - [`convert`]: the one border between `pb::*` and the domain types.
//! - [`server`]: serving all of it, with the periodic tick.
//! - [`tls`]: server TLS from PEM files; `tls init` (CA, certificates, tokens).

pub mod admin;
pub mod auth;
pub mod convert;
pub mod dashboard;
pub mod server;
pub mod tls;
pub mod worker;
