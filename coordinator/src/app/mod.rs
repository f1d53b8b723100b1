//! The running coordinator: state shared by every request, and the operations on it.
pub mod handle;
pub mod status;
pub use handle::*;
