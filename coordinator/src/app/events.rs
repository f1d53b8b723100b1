//! Trial events for watchers (`Admin.Watch`, `coordinator watch`), sent once the change they
//! describe is on disk. A slow watcher that falls more than [`EVENT_BUFFER`] behind misses
//! some and reads the state again.

use super::Handle;
use crate::sched::core::{TrialId, WorkerId};
use sweep_proto::{EpochMetrics, TrialStatus};
use tokio::sync::{broadcast, watch};

/// Events a slow watcher may fall behind by before it misses some (it then reads the state).
pub const EVENT_BUFFER: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A sweep was submitted (or re-run): it may hold other trials now.
    Submitted,
    Leased,
    Epoch,
    Finished,
    Failed,
    Cancelled,
    /// A worker stopped answering; its trial goes back to the queue (or fails).
    WorkerLost,
}

/// What happened to one trial (or, for [`EventKind::Submitted`], to one sweep).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: EventKind,
    /// Empty for [`EventKind::Submitted`].
    pub trial: TrialId,
    pub attempt: u32,
    pub worker: WorkerId,
    /// The sweep an [`EventKind::Submitted`] event is about.
    pub sweep: Option<String>,
    /// [`EventKind::Epoch`]: the epoch's metrics.
    pub metrics: Option<EpochMetrics>,
    /// [`EventKind::Finished`] and [`EventKind::Failed`]: the result's status.
    pub status: Option<TrialStatus>,
    pub test_accuracy: Option<f64>,
    /// Why (a failure's reason, a lost worker), or empty.
    pub message: String,
    pub unix_ms: u64,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Event {
    /// An event about one trial, stamped now.
    pub fn trial(kind: EventKind, trial: &str, attempt: u32, worker: &str) -> Event {
        Event {
            kind,
            trial: trial.into(),
            attempt,
            worker: worker.into(),
            sweep: None,
            metrics: None,
            status: None,
            test_accuracy: None,
            message: String::new(),
            unix_ms: unix_ms(),
        }
    }

    /// Sweep `name` was submitted or re-run, stamped now.
    pub fn submitted(name: &str) -> Event {
        Event {
            sweep: Some(name.to_string()),
            ..Event::trial(EventKind::Submitted, "", 0, "")
        }
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Event {
        self.message = message.into();
        self
    }
}

/// The broadcast and the shutdown signal for never-ending streams.
pub(crate) struct Events {
    pub(crate) sender: broadcast::Sender<Event>,
    /// Set on shutdown: ends the never-ending streams (`Watch`) so the server can stop.
    pub(crate) streams: watch::Sender<bool>,
}

impl Default for Events {
    fn default() -> Events {
        Events {
            sender: broadcast::channel(EVENT_BUFFER).0,
            streams: watch::channel(false).0,
        }
    }
}

impl Handle {
    /// Tells open streams to end (the server is stopping).
    pub fn stop_streams(&self) {
        self.events.streams.send_replace(true);
    }

    /// Becomes true when open streams must end.
    pub fn streams_stop(&self) -> watch::Receiver<bool> {
        self.events.streams.subscribe()
    }

    /// Live trial events (see `Admin.Watch`).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.sender.subscribe()
    }

    pub(crate) fn emit(&self, e: Event) {
        // No receiver is not an error: nobody is watching.
        let _ = self.events.sender.send(e);
    }
}
