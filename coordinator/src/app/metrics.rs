//! The coordinator's Prometheus metrics (`GET /metrics` on `--http-listen`; docs/METRICS.md
//! lists them).
//!
//! Rules:
//! - Counters and histograms are recorded where the work happens, in this layer's operations
//!   (a lease is counted when it is on disk; latencies run from the operation's start to its
//!   answer, the commit wait included).
//! - Gauges of state (trials by sweep and state, workers by device and GPU) are read when
//!   scraped, from the status views' cache and the core: nothing keeps a second copy of the
//!   state to drift from the first.
//! - Labels are bounded: a sweep name (users make a handful), a state, a device, a GPU model,
//!   a reason from a fixed list. Never a trial or worker id.
//! - Names follow Prometheus' conventions: base units (`_seconds`, `_bytes`), `_total` for
//!   counters (the encoder adds it).

use super::Handle;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrialLabels {
    sweep: String,
    state: TrialStateLabel,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum TrialStateLabel {
    queued,
    running,
    finished,
    failed,
    cancelled,
    to_suggest,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    device: String,
    gpu: String,
}

/// What became of a result a worker sent.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ResultOutcome {
    /// Stored.
    accepted,
    /// A repeat of a stored result, acknowledged again.
    repeated,
    /// The lease is not (or no longer) the worker's: a late or lost report.
    stale_lease,
    /// The worker or the trial is unknown.
    unknown,
    /// It does not fit the trial (epochs, values).
    invalid,
    /// The disk refused it; the worker keeps it and sends it again.
    unavailable,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    outcome: ResultOutcome,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum DecisionLabel {
    stop,
    go_on,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: DecisionLabel,
}

/// Which files' bytes.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Artifact {
    checkpoint,
    model,
}

/// Into the coordinator (a worker saved it) or out of it (a worker loaded it).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Direction {
    received,
    sent,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    kind: Artifact,
    direction: Direction,
}

/// Every metric the coordinator exports, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    trials: Family<TrialLabels, Gauge>,
    workers: Family<WorkerLabels, Gauge>,
    leases: Counter,
    lease_seconds: Histogram,
    result_seconds: Histogram,
    heartbeats: Counter,
    results: Family<ResultLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    commit_seconds: Histogram,
    commit_writes: Histogram,
    bytes: Family<BytesLabels, Counter>,
    /// Each registered worker's GPU model (the core keeps only its device kind).
    gpus: Mutex<HashMap<String, String>>,
    /// When the state gauges were last refilled. Held while a scrape refills them: two scrapes
    /// at once (two Prometheus servers) would otherwise clear and count into the same
    /// families together.
    refreshed: Mutex<Option<Instant>>,
}

/// How old the state gauges may be when scraped. Counting a sweep's trials walks them under
/// the core's lock; with 50 readers a second refilling them on every scrape, leases at 2,000
/// a second had a p99 of 47 ms instead of 3 ms (`sweep-open-load --readers 0,50`,
/// docs/RELIABILITY.md). Prometheus scrapes every 15-60 s.
const STATE_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(1);

/// Latency buckets: 0.25 ms to about 8 s, doubling (a lease on an idle coordinator takes
/// about 1 ms, one under 1,000 workers tens of ms: docs/PERFORMANCE.md, "Load").
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("coordinator");
        let m = Metrics {
            trials: Family::default(),
            workers: Family::default(),
            leases: Counter::default(),
            lease_seconds: latency(),
            result_seconds: latency(),
            heartbeats: Counter::default(),
            results: Family::default(),
            decisions: Family::default(),
            commit_seconds: latency(),
            // Writes per committed batch: 1 to 4,096.
            commit_writes: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            bytes: Family::default(),
            gpus: Mutex::default(),
            refreshed: Mutex::default(),
            registry: Registry::default(),
        };
        registry.register(
            "trials",
            "Trials by sweep and state (to_suggest: a search's trials not yet made)",
            m.trials.clone(),
        );
        registry.register(
            "workers",
            "Workers connected, by device kind and GPU model",
            m.workers.clone(),
        );
        registry.register(
            "leases_granted",
            "Leases granted (on disk)",
            m.leases.clone(),
        );
        registry.register_with_unit(
            "lease_duration",
            "Time to answer a worker's lease request, the commit included",
            Unit::Seconds,
            m.lease_seconds.clone(),
        );
        registry.register_with_unit(
            "result_duration",
            "Time to answer a worker's result, the commit included",
            Unit::Seconds,
            m.result_seconds.clone(),
        );
        registry.register("heartbeats", "Heartbeats answered", m.heartbeats.clone());
        registry.register(
            "results",
            "Results workers sent, by what became of them",
            m.results.clone(),
        );
        registry.register(
            "early_stopping_decisions",
            "Early-stopping verdicts on reported epochs (stop or go_on)",
            m.decisions.clone(),
        );
        registry.register_with_unit(
            "store_commit_duration",
            "Time to write one batch to the database",
            Unit::Seconds,
            m.commit_seconds.clone(),
        );
        registry.register(
            "store_commit_writes",
            "Writes per committed batch",
            m.commit_writes.clone(),
        );
        registry.register_with_unit(
            "artifact",
            "Checkpoint and model bytes saved to (received) or loaded from (sent) the coordinator",
            Unit::Bytes,
            m.bytes.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Notes a registered worker's GPU model; forgets the workers not in `live` (called
    /// with the core's workers) once the map has grown well past them, so worker churn
    /// (pods replaced) does not grow it without bound, scraped or not.
    pub(crate) fn registered(
        &self,
        worker: &str,
        gpu: &str,
        live: impl FnOnce() -> std::collections::HashSet<String>,
    ) {
        let mut gpus = self.gpus.lock().unwrap_or_else(|p| p.into_inner());
        gpus.insert(worker.to_string(), gpu.to_string());
        if gpus.len() > 1024 && gpus.len().is_power_of_two() {
            let live = live();
            gpus.retain(|id, _| live.contains(id));
        }
    }

    pub(crate) fn leased(&self, granted: usize, started: Instant) {
        self.leases.inc_by(granted as u64);
        self.lease_seconds.observe(started.elapsed().as_secs_f64());
    }

    pub(crate) fn heartbeat(&self) {
        self.heartbeats.inc();
    }

    pub(crate) fn result(&self, outcome: ResultOutcome, started: Instant) {
        self.results.get_or_create(&ResultLabels { outcome }).inc();
        self.result_seconds.observe(started.elapsed().as_secs_f64());
    }

    pub(crate) fn judged(&self, stop: bool) {
        let decision = if stop {
            DecisionLabel::stop
        } else {
            DecisionLabel::go_on
        };
        self.decisions
            .get_or_create(&DecisionLabels { decision })
            .inc();
    }

    pub(crate) fn committed(&self, writes: usize, started: Instant) {
        self.commit_seconds.observe(started.elapsed().as_secs_f64());
        self.commit_writes.observe(writes as f64);
    }

    pub(crate) fn moved(&self, kind: Artifact, direction: Direction, bytes: u64) {
        self.bytes
            .get_or_create(&BytesLabels { kind, direction })
            .inc_by(bytes);
    }
}

impl Handle {
    /// The metrics as OpenMetrics text, the state gauges read now. May read the database
    /// (the first read of a sweep's row): call from a blocking thread.
    pub fn metrics_text(&self) -> String {
        let m = &self.metrics;
        let mut refreshed = m.refreshed.lock().unwrap_or_else(|p| p.into_inner());
        if refreshed.is_none_or(|t| t.elapsed() >= STATE_MAX_AGE) {
            self.refresh_state_gauges();
            *refreshed = Some(Instant::now());
        }
        drop(refreshed);
        sweep_proto::observe::encode(&m.registry)
    }

    /// Refills the trials and workers gauges from the views and the core.
    fn refresh_state_gauges(&self) {
        let m = &self.metrics;
        m.trials.clear();
        if let Ok(sweeps) = self.list() {
            for s in sweeps {
                let c = &s.counts;
                for (state, n) in [
                    (TrialStateLabel::queued, c.queued),
                    (TrialStateLabel::running, c.running),
                    (TrialStateLabel::finished, c.finished),
                    (TrialStateLabel::failed, c.failed),
                    (TrialStateLabel::cancelled, c.cancelled),
                    (TrialStateLabel::to_suggest, c.to_suggest),
                ] {
                    let labels = TrialLabels {
                        sweep: s.name.clone(),
                        state,
                    };
                    m.trials.get_or_create(&labels).set(n as i64);
                }
            }
        }
        let connected: Vec<(String, String)> = {
            let s = self.lock();
            s.core
                .workers()
                .filter(|(_, w)| !w.restored)
                .map(|(id, w)| (id.to_string(), w.device.as_str().to_string()))
                .collect()
        };
        m.workers.clear();
        {
            let gpus = m.gpus.lock().unwrap_or_else(|p| p.into_inner());
            for (id, device) in connected {
                let gpu = gpus.get(&id).cloned().unwrap_or_default();
                m.workers.get_or_create(&WorkerLabels { device, gpu }).inc();
            }
        }
    }
}
