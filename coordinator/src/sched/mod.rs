//! Pure decisions over observations. Nothing here does I/O or reads a clock: time comes in as
//! milliseconds, decisions go out as data, and every rule is unit-tested on hand-made
//! sequences.
//!
//! - [`core`]: the scheduling state machine: trials, workers, leases, heartbeats, retries.
//! - [`early_stop`]: ASHA and the median rule, fed each trial's epochs.

pub mod core;
pub mod early_stop;
