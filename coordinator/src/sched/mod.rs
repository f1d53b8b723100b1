//! Pure decisions over observations. Nothing here does I/O or reads a clock: time comes in as
//! milliseconds, decisions go out as data, and every rule is unit-tested on hand-made
//! sequences.
//!
//! - [`core`]: the scheduling state machine: trials, workers, leases, heartbeats, retries.
//! - [`early_stop`]: ASHA and the median rule, fed each trial's epochs.
//! - [`pbt`]: population-based training's generations: who copies whom, and the values
//!   explored.
//! - [`search`]: a search's space, budget and members, and the next trial it suggests.
//! - [`tpe`]: the Tree-structured Parzen Estimator, fed finished, diverged and pending
//!   trials' points.

pub mod core;
pub mod early_stop;
pub mod pbt;
pub mod search;
pub mod tpe;
