//! The worker on the network.
//!
//! - [`client`]: the long-running loop: register, lease, heartbeat, report, and the chunked
//!   checkpoint, model and module transfers.
//! - [`tls_probe`]: a clear error when the coordinator's TLS does not fit the worker's.

pub mod client;
pub mod tls_probe;
