//! The `Admin` gRPC service: the control plane beside the workers' API. Every change goes
//! through the coordinator process (one writer per database); store work runs on blocking
//! threads, never on the async workers that serve RPCs.

use crate::app::status::{self, Phase, SweepSummary, SweepView};
use crate::app::Handle;
use crate::plan::{self, MAX_FILE_BYTES, MAX_TRIALS};
use crate::report::Report;
use crate::store::StoredSweep;
use std::collections::HashSet;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use sweep_proto::convert::{artifact_chunks, receive_artifact, ArtifactError, CHUNK_BYTES};
use sweep_proto::pb::{self, admin_server::Admin};
use tonic::{Request, Response, Status};

/// Runs store work on a blocking thread and maps its error to `UNAVAILABLE`/`INTERNAL`.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("admin task failed: {e}")))?
}

fn store_error(e: crate::store::StoreError) -> Status {
    Status::unavailable(e.to_string())
}

fn no_sweep(name: &str) -> Status {
    Status::not_found(format!("no sweep named `{name}`"))
}

/// The stored sweep `name`, or NOT_FOUND.
fn stored(handle: &Handle, name: &str) -> Result<StoredSweep, Status> {
    handle
        .sweep(name)
        .map_err(store_error)?
        .ok_or_else(|| no_sweep(name))
}

pub fn counts_pb(c: &status::CountsView) -> pb::TrialCounts {
    pb::TrialCounts {
        queued: c.queued as u32,
        running: c.running as u32,
        finished: c.finished as u32,
        failed: c.failed as u32,
        cancelled: c.cancelled as u32,
    }
}

fn summary_pb(s: &SweepSummary) -> pb::SweepSummary {
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

fn view_pb(v: &SweepView) -> pb::SweepStatusResponse {
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

/// Sweep `name` as views read it (kept in memory), or NOT_FOUND.
fn meta(handle: &Handle, name: &str) -> Result<Arc<status::SweepMeta>, Status> {
    handle
        .sweep_meta(name)
        .map_err(store_error)?
        .ok_or_else(|| no_sweep(name))
}

/// Every sweep with its counts (may read the store: call on a blocking thread).
pub fn list(handle: &Handle) -> Result<Vec<SweepSummary>, Status> {
    let names = handle.sweep_names().map_err(store_error)?;
    let mut sweeps = Vec::new();
    for name in names {
        let m = meta(handle, &name)?;
        sweeps.push(status::summary(&m.stored, &handle.lock().core));
    }
    Ok(sweeps)
}

/// One sweep's trials as of at most half a second ago (may read the store: call on a
/// blocking thread).
pub fn view(handle: &Handle, name: &str, curves: bool) -> Result<Arc<SweepView>, Status> {
    handle
        .sweep_view(name, curves)
        .map_err(store_error)?
        .ok_or_else(|| no_sweep(name))
}

/// The report of sweep `name` as it stands (reads the store: call on a blocking thread).
pub fn report(handle: &Handle, name: &str) -> Result<Report, Status> {
    let s = stored(handle, name)?;
    Ok(Report::build(&s, &handle.lock().core))
}

/// The kept model of a sweep's trial (`trial` empty: of its best-ranked trial that has one):
/// (trial id, its description, the file's bytes). Blocking.
pub fn model_of(
    handle: &Handle,
    name: &str,
    trial: &str,
) -> Result<(String, crate::store::files::Meta, Vec<u8>), Status> {
    let s = stored(handle, name)?;
    let trial = if trial.is_empty() {
        let report = Report::build(&s, &handle.lock().core);
        report
            .rows
            .iter()
            .filter(|r| r.rank.is_some())
            .find(|r| handle.has_model(&r.id))
            .map(|r| r.id.clone())
            .ok_or_else(|| {
                Status::not_found(format!(
                    "sweep `{name}` has no kept model yet (keep_models = \"none\", or no trial has finished with one)"
                ))
            })?
    } else if s.trials.iter().any(|t| t.0 == trial) {
        trial.to_string()
    } else {
        return Err(Status::not_found(format!(
            "sweep `{name}` has no trial {trial}"
        )));
    };
    if !handle.has_model(&trial) {
        return Err(Status::not_found(format!(
            "trial {trial} of sweep `{name}` has no kept model (keep_models keeps the best {} by default; it may not have finished)",
            crate::plan::DEFAULT_KEEP_BEST
        )));
    }
    let (meta, bytes) = handle.model(&trial).map_err(Status::data_loss)?;
    Ok((trial, meta, bytes))
}

/// Cancels a sweep, or one of its trials.
pub fn cancel(handle: &Handle, name: &str, trial: &str) -> Result<Vec<String>, Status> {
    let s = stored(handle, name)?;
    if trial.is_empty() {
        return handle.cancel(name).map_err(store_error);
    }
    if !s.trials.iter().any(|t| t.0 == trial) {
        return Err(Status::not_found(format!(
            "sweep `{name}` has no trial `{trial}`"
        )));
    }
    handle.cancel_trial(trial).map_err(store_error)
}

pub fn rerun(handle: &Handle, name: &str) -> Result<Vec<String>, Status> {
    stored(handle, name)?;
    handle.rerun(name).map_err(store_error)
}

/// The `Admin` service over a [`Handle`].
#[derive(Clone)]
pub struct AdminService {
    handle: Handle,
}

impl AdminService {
    pub fn new(handle: Handle) -> AdminService {
        AdminService { handle }
    }
}

type EventStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::TrialEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Admin for AdminService {
    async fn submit_sweep(
        &self,
        req: Request<pb::SubmitSweepRequest>,
    ) -> Result<Response<pb::SubmitSweepResponse>, Status> {
        let r = req.into_inner();
        if r.sweep_toml.len() as u64 > MAX_FILE_BYTES {
            return Err(Status::invalid_argument(format!(
                "{}: over {} KiB; a sweep file is a few KB of TOML",
                r.file_name,
                MAX_FILE_BYTES / 1024
            )));
        }
        let file = if r.file_name.is_empty() {
            "submitted.toml".to_string()
        } else {
            r.file_name
        };
        // Module files are the submitter's to upload (`coordinator submit` does, then names
        // them by hash): the coordinator never reads a path a client names.
        if let Some(path) = plan::unresolved_modules(&r.sweep_toml).first() {
            return Err(Status::invalid_argument(format!(
                "{file}: model `{path}` names a file; submit with `coordinator submit`, which uploads TorchScript modules and names them by hash"
            )));
        }
        let text = r.sweep_toml;
        let name = file.clone();
        // Planning scans image folders: not on the threads that serve workers.
        let sweep = blocking(move || {
            plan::parse(&text, Path::new(&name))
                .map_err(|e| Status::invalid_argument(e.to_string()))
        })
        .await?;
        if sweep.trials.len() > MAX_TRIALS && !r.force {
            return Err(Status::invalid_argument(format!(
                "{file}: the sweep expands to {} trials, over the limit of {MAX_TRIALS}; pass --force to run it anyway",
                sweep.trials.len()
            )));
        }
        let h = self.handle.clone();
        blocking(move || {
            let stale = h.submit(&sweep, r.rerun).map_err(store_error)?;
            let ids: Vec<String> = sweep.trials.iter().map(|t| t.id.clone()).collect();
            let finished = h.counts(&ids).finished;
            tracing::info!(sweep = %sweep.name, trials = ids.len(), "sweep submitted");
            Ok(pb::SubmitSweepResponse {
                name: sweep.name.clone(),
                trials: ids.len() as u32,
                reused: finished as u32,
                stale: stale as u32,
            })
        })
        .await
        .map(Response::new)
    }

    async fn list_sweeps(
        &self,
        _req: Request<pb::ListSweepsRequest>,
    ) -> Result<Response<pb::ListSweepsResponse>, Status> {
        let h = self.handle.clone();
        let sweeps = blocking(move || list(&h)).await?;
        Ok(Response::new(pb::ListSweepsResponse {
            sweeps: sweeps.iter().map(summary_pb).collect(),
        }))
    }

    async fn sweep_status(
        &self,
        req: Request<pb::SweepStatusRequest>,
    ) -> Result<Response<pb::SweepStatusResponse>, Status> {
        let r = req.into_inner();
        let h = self.handle.clone();
        let v = blocking(move || view(&h, &r.sweep, r.curves)).await?;
        Ok(Response::new(view_pb(&v)))
    }

    async fn cancel(
        &self,
        req: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::CancelResponse>, Status> {
        let r = req.into_inner();
        let h = self.handle.clone();
        let cancelled = blocking(move || cancel(&h, &r.sweep, &r.trial_id)).await?;
        Ok(Response::new(pb::CancelResponse { cancelled }))
    }

    async fn rerun(
        &self,
        req: Request<pb::RerunRequest>,
    ) -> Result<Response<pb::RerunResponse>, Status> {
        let r = req.into_inner();
        let h = self.handle.clone();
        let queued = blocking(move || rerun(&h, &r.sweep)).await?;
        Ok(Response::new(pb::RerunResponse { queued }))
    }

    async fn get_report(
        &self,
        req: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportResponse>, Status> {
        let r = req.into_inner();
        let h = self.handle.clone();
        // Rendering draws every trial's curves: on the blocking thread too.
        let (files, summary) = blocking(move || {
            let report = report(&h, &r.sweep)?;
            Ok((
                crate::report::render::files(&report),
                crate::report::render::terminal(&report),
            ))
        })
        .await?;
        Ok(Response::new(pb::ReportResponse {
            files: files
                .into_iter()
                .map(|(name, text)| pb::ReportFile {
                    name: name.to_string(),
                    content: text.into_bytes(),
                })
                .collect(),
            summary,
        }))
    }

    type ExportModelStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::CheckpointChunk, Status>> + Send>>;

    async fn export_model(
        &self,
        req: Request<pb::ExportModelRequest>,
    ) -> Result<Response<Self::ExportModelStream>, Status> {
        let r = req.into_inner();
        let h = self.handle.clone();
        let (trial, bytes) = blocking(move || {
            let (trial, meta, bytes) = model_of(&h, &r.sweep, &r.trial_id)?;
            tracing::info!(sweep = %r.sweep, %trial, size = meta.size, "model exported");
            Ok((trial, bytes))
        })
        .await?;
        let header = pb::CheckpointChunk {
            lease: Some(pb::LeaseRef {
                trial_id: trial,
                attempt: 0,
            }),
            size: bytes.len() as u64,
            sha256: crate::store::files::sha256_hex(&bytes),
            kind: pb::ArtifactKind::Model as i32,
            ..Default::default()
        };
        let chunks = artifact_chunks(&bytes, CHUNK_BYTES, header);
        Ok(Response::new(Box::pin(tokio_stream::iter(
            chunks.into_iter().map(Ok),
        ))))
    }

    async fn upload_module(
        &self,
        req: Request<tonic::Streaming<pb::CheckpointChunk>>,
    ) -> Result<Response<pb::Ack>, Status> {
        let bytes = receive_artifact(&mut req.into_inner(), plan::MAX_MODULE_BYTES)
            .await
            .map_err(|e| match e {
                ArtifactError::Stream(status) => status,
                ArtifactError::Mismatch { .. } => {
                    Status::data_loss(format!("the TorchScript module: {e}"))
                }
                _ => Status::invalid_argument(format!("the TorchScript module: {e}")),
            })?;
        let size = bytes.len();
        let h = self.handle.clone();
        let hash = blocking(move || h.store_module(&bytes).map_err(Status::unavailable)).await?;
        tracing::info!(%hash, size, "TorchScript module uploaded");
        Ok(Response::new(pb::Ack {
            accepted: true,
            reason: hash.to_string(),
            ..Default::default()
        }))
    }

    type WatchStream = EventStream;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let name = req.into_inner().sweep;
        // Subscribed before the sweep is read, so nothing between the two is missed.
        let mut events = self.handle.subscribe();
        let mut stop = self.handle.streams_stop();
        let members = |h: Handle, n: String| async move {
            blocking(move || stored(&h, &n)).await.map(|s| {
                s.trials
                    .into_iter()
                    .map(|t| t.0)
                    .collect::<HashSet<String>>()
            })
        };
        let mut filter: Option<HashSet<String>> = if name.is_empty() {
            None
        } else {
            Some(members(self.handle.clone(), name.clone()).await?)
        };
        let handle = self.handle.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                let e = tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    _ = tx.closed() => break,
                    e = events.recv() => e,
                };
                let e = match e {
                    Ok(e) => e,
                    // Fell behind: the watcher reads the state again; carry on.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                let resubmitted = e.kind == pb::EventKind::Submitted as i32 && e.message == name;
                if resubmitted && filter.is_some() {
                    // The sweep may hold other trials now (an edited grid submitted again).
                    if let Ok(ids) = members(handle.clone(), name.clone()).await {
                        filter = Some(ids);
                    }
                }
                let wanted = match &filter {
                    None => true,
                    Some(ids) => ids.contains(&e.trial_id) || resubmitted,
                };
                if !wanted {
                    continue;
                }
                // A client that stops reading must not hold the server's shutdown.
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    sent = tx.send(Ok(e)) => if sent.is_err() { break },
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Checks the admin token on every `Admin` call: the worker token is refused with the role it
/// lacks, and a coordinator started without an admin token refuses every call.
#[derive(Clone)]
pub struct AdminCheck {
    admin: Option<Arc<str>>,
    worker: Arc<str>,
}

impl AdminCheck {
    pub fn new(admin: Option<&str>, worker: &str) -> AdminCheck {
        AdminCheck {
            admin: admin.map(Arc::from),
            worker: Arc::from(worker),
        }
    }
}

impl tonic::service::Interceptor for AdminCheck {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(admin) = &self.admin else {
            return Err(Status::failed_precondition(
                "this coordinator has no admin token: start it with $SWEEP_ADMIN_TOKEN or --admin-token-file",
            ));
        };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        use crate::sched::core::constant_time_eq as same;
        match given {
            Some(t) if same(t.as_bytes(), admin.as_bytes()) => Ok(req),
            Some(t) if same(t.as_bytes(), self.worker.as_bytes()) => {
                Err(Status::permission_denied(
                    "this call needs the admin role: a worker token was given (use the admin token)",
                ))
            }
            Some(_) => Err(Status::unauthenticated(
                "wrong admin token (this call needs the admin role)",
            )),
            None => Err(Status::unauthenticated(
                "missing admin token (authorization: Bearer ...); this call needs the admin role",
            )),
        }
    }
}
