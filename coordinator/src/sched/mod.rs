//! Pure decisions over observations. Nothing here does I/O or reads a clock: time comes in as
//! milliseconds, decisions go out as data, and every rule is unit-tested on hand-made
//! sequences.
//!
//! - [`core`]: the scheduling state machine: trials, workers, leases, heartbeats, retries.
//! - [`early_stop`]: ASHA and the median rule, fed each trial's epochs.
//! - [`tpe`]: the Tree-structured Parzen Estimator, fed finished, diverged and pending
//!   trials' points (not yet wired to sweeps: see its module doc).

pub mod core;
pub mod early_stop;
pub mod tpe;
