//! Everything the coordinator keeps on disk. Only this layer runs SQL or names a file.
//!
//! - [`sqlite`]: the database: sweeps, trials, attempts, results, worker ids; one process
//!   (`ServerLock`), written by the committer in `app::commit` and by the admin changes one
//!   at a time; integrity checks.
//! - [`files`]: checkpoints, kept models and TorchScript modules beside the database, each
//!   with its SHA-256.

pub mod files;
pub mod sqlite;

pub use sqlite::*;
