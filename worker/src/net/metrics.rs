//! The worker's Prometheus metrics, on its health port (`--health-listen`, `GET /metrics`;
//! docs/METRICS.md lists them).
//!
//! Rules:
//! - Recorded by the session as messages pass through it (an epoch's metrics, a result), so
//!   training itself does nothing extra. Memory is read when scraped.
//! - No label names a trial: the current trials are a count, and what they do shows in the
//!   epoch and result series.
//! - Memory is the process' resident set (`/proc/self/statm`), which is where a CPU worker's
//!   tensors live. A CUDA worker's device memory is not read here (libtorch's caching
//!   allocator is not reachable through tch); NVIDIA's DCGM exporter reports it per GPU.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;
use sweep_proto::TrialStatus;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum Status {
    completed,
    stopped,
    diverged,
    failed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: Status,
}

/// Every metric a worker exports.
pub struct Metrics {
    registry: Registry,
    running: Gauge,
    epochs: Counter,
    epoch_seconds: Histogram,
    images_per_second: Gauge<f64, AtomicU64>,
    results: Family<StatusLabels, Counter>,
    memory: Gauge,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("worker");
        // Epochs take 0.1 s (a small test trial) to over an hour (ResNet-56 on a CPU).
        let epoch_seconds = Histogram::new(exponential_buckets(0.1, 2.0, 17));
        let m = Metrics {
            registry: Registry::default(),
            running: Gauge::default(),
            epochs: Counter::default(),
            epoch_seconds,
            images_per_second: Gauge::default(),
            results: Family::default(),
            memory: Gauge::default(),
        };
        registry.register("trials_running", "Trials training now", m.running.clone());
        registry.register("epochs", "Epochs trained", m.epochs.clone());
        registry.register_with_unit(
            "epoch_duration",
            "Time per epoch, evaluation included",
            Unit::Seconds,
            m.epoch_seconds.clone(),
        );
        registry.register(
            "images_per_second",
            "Training images per second in the last epoch",
            m.images_per_second.clone(),
        );
        registry.register("results", "Trials ended, by status", m.results.clone());
        registry.register_with_unit(
            "resident_memory",
            "The process' resident memory",
            Unit::Bytes,
            m.memory.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub fn running(&self, n: usize) {
        self.running.set(n as i64);
    }

    pub fn epoch(&self, seconds: f64, images_per_second: f64) {
        self.epochs.inc();
        self.epoch_seconds.observe(seconds);
        self.images_per_second.set(images_per_second);
    }

    pub fn ended(&self, status: TrialStatus) {
        let status = match status {
            TrialStatus::Completed => Status::completed,
            TrialStatus::Stopped => Status::stopped,
            TrialStatus::Diverged => Status::diverged,
            TrialStatus::Failed => Status::failed,
        };
        self.results.get_or_create(&StatusLabels { status }).inc();
    }

    /// The metrics as OpenMetrics text, memory read now.
    pub fn text(&self) -> String {
        if let Some(bytes) = resident_bytes() {
            self.memory.set(bytes as i64);
        }
        sweep_proto::observe::encode(&self.registry)
    }
}

/// Resident set size from /proc/self/statm (its second field, in pages).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a constant of the running system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}
