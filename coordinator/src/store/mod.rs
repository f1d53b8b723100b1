//! Everything the coordinator keeps on disk. Only this layer runs SQL or names a file.
//!
//! - [`sqlite`]: the database: sweeps, trials, attempts, results, worker ids; one writer
//!   (the committer in `app::commit`), integrity checks, one server per file.
//! - [`files`]: checkpoints, kept models and TorchScript modules beside the database, each
//!   with its SHA-256.

pub mod files;
pub mod sqlite;

pub use sqlite::*;
