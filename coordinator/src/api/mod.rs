//! The borders of the coordinator.
pub mod admin;
pub mod dashboard;
pub mod server;
pub mod tls;
