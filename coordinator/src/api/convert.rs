//! The one border between protobuf and the coordinator's domain types: every `pb::*` value
//! the services send or take is made or read here, and every [`AppError`] becomes a tonic
//! `Status` here.

use crate::app::status::{CountsView, Phase, SweepSummary, SweepView};
use crate::app::work::{LeaseGrant, Reply};
use crate::app::{AppError, Event, EventKind};
use crate::sched::core::{DeviceKind, LeaseRef};
use sweep_proto::pb;
use tonic::Status;

impl From<AppError> for Status {
    fn from(e: AppError) -> Status {
        match e {
            AppError::Unavailable(m) => Status::unavailable(bounded(m)),
            AppError::NotFound(m) => Status::not_found(bounded(m)),
            AppError::Invalid(m) => Status::invalid_argument(bounded(m)),
            AppError::NotHeld(m) => Status::failed_precondition(bounded(m)),
            AppError::DataLoss(m) => Status::data_loss(bounded(m)),
            AppError::Internal(m) => Status::internal(bounded(m)),
        }
    }
}

/// Longest error message sent back. A message travels in an HTTP/2 header (grpc-message), and
/// one that echoes a client's 10 kB value overflowed the header limit: the client saw a
/// protocol error instead of the reason.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// `m`, cut to [`MAX_MESSAGE_BYTES`] (at a character boundary) and saying so.
pub fn bounded(mut m: String) -> String {
    if m.len() > MAX_MESSAGE_BYTES {
        let total = m.len();
        let mut end = MAX_MESSAGE_BYTES;
        while !m.is_char_boundary(end) {
            end -= 1;
        }
        m.truncate(end);
        m.push_str(&format!("... ({total} bytes, cut)"));
    }
    m
}

/// A request's lease, which it must name.
pub fn lease_ref(l: Option<pb::LeaseRef>) -> Result<LeaseRef, Status> {
    Ok(l.ok_or_else(|| Status::invalid_argument("missing lease"))?
        .into())
}

pub fn device(d: i32) -> Result<DeviceKind, Status> {
    match pb::DeviceKind::try_from(d) {
        Ok(pb::DeviceKind::Cuda) => Ok(DeviceKind::Cuda),
        Ok(pb::DeviceKind::Cpu) => Ok(DeviceKind::Cpu),
        _ => Err(Status::invalid_argument("device must be cpu or cuda")),
    }
}

pub fn lease_pb(g: LeaseGrant) -> pb::Lease {
    pb::Lease {
        trial_id: g.lease.trial.into(),
        attempt: g.lease.attempt,
        spec_toml: g.spec_toml.to_string(),
        data_hint: g.data_hint,
        early_stopping: g.early_stopping,
        checkpoint_epoch: g.checkpoint_epoch,
        checkpoint_every_epochs: g.checkpoints.every_epochs,
        checkpoint_every_seconds: g.checkpoints.every_seconds,
        keep_model: g.keep_model,
    }
}

pub fn ack(r: Reply) -> pb::Ack {
    pb::Ack {
        accepted: r.accepted,
        reason: r.reason,
        stop: r.stop,
    }
}

fn event_kind(k: EventKind) -> pb::EventKind {
    match k {
        EventKind::Submitted => pb::EventKind::Submitted,
        EventKind::Leased => pb::EventKind::Leased,
        EventKind::Epoch => pb::EventKind::Epoch,
        EventKind::Finished => pb::EventKind::Finished,
        EventKind::Failed => pb::EventKind::Failed,
        EventKind::Cancelled => pb::EventKind::Cancelled,
        EventKind::WorkerLost => pb::EventKind::WorkerLost,
    }
}

pub fn event_pb(e: Event) -> pb::TrialEvent {
    pb::TrialEvent {
        kind: event_kind(e.kind) as i32,
        trial_id: e.trial.into(),
        attempt: e.attempt,
        worker_id: e.worker.into(),
        metrics: e.metrics.as_ref().map(pb::EpochMetrics::from),
        status: e.status.map_or(0, |s| pb::TrialStatus::from(s) as i32),
        test_accuracy: e.test_accuracy,
        message: e.message,
        unix_ms: e.unix_ms,
        sweep: e.sweep.unwrap_or_default(),
    }
}

pub fn counts_pb(c: &CountsView) -> pb::TrialCounts {
    pb::TrialCounts {
        queued: c.queued as u32,
        running: c.running as u32,
        finished: c.finished as u32,
        failed: c.failed as u32,
        cancelled: c.cancelled as u32,
        to_suggest: c.to_suggest as u32,
    }
}

pub fn summary_pb(s: &SweepSummary) -> pb::SweepSummary {
    pb::SweepSummary {
        name: s.name.clone(),
        file: s.file.clone(),
        cancelled: s.cancelled,
        counts: Some(counts_pb(&s.counts)),
    }
}

fn phase_pb(p: Phase) -> pb::TrialPhase {
    match p {
        Phase::Queued => pb::TrialPhase::Queued,
        Phase::Running => pb::TrialPhase::Running,
        Phase::Finished => pb::TrialPhase::Finished,
        Phase::Failed => pb::TrialPhase::Failed,
        Phase::Cancelled => pb::TrialPhase::Cancelled,
    }
}

pub fn view_pb(v: &SweepView) -> pb::SweepStatusResponse {
    pb::SweepStatusResponse {
        sweep: Some(summary_pb(&v.sweep)),
        axes: v.axes.clone(),
        trials: v
            .trials
            .iter()
            .map(|t| pb::TrialView {
                trial_id: t.id.clone(),
                label: t.label.clone().unwrap_or_default(),
                params: t.params.clone(),
                phase: phase_pb(t.phase) as i32,
                attempt: t.attempt,
                worker_id: t.worker.clone().unwrap_or_default(),
                epoch: t.epoch,
                epochs: t.epochs,
                accuracy: t.accuracy,
                test_accuracy: t.test_accuracy,
                status: t.status.map_or(0, |s| pb::TrialStatus::from(s) as i32),
                reason: t.reason.clone().unwrap_or_default(),
                elapsed_seconds: t.elapsed_seconds,
                eta_seconds: t.eta_seconds,
                curve: t.metrics.iter().map(pb::EpochMetrics::from).collect(),
            })
            .collect(),
        omitted: v.omitted as u32,
    }
}
