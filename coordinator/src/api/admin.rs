//! The `Admin` gRPC service: the control plane beside the workers' API. Every change goes
//! through the coordinator process (one writer per database); store work runs on blocking
//! threads, never on the async workers that serve RPCs.

use super::convert::{event_pb, summary_pb, view_pb};
use crate::app::{blocking, AppError, EventKind, Handle};
use crate::plan::{self, MAX_FILE_BYTES};
use crate::sched::core::TrialId;
use std::collections::HashSet;
use std::path::Path;
use std::pin::Pin;
use sweep_proto::convert::{artifact_chunks, receive_artifact, ArtifactError, CHUNK_BYTES};
use sweep_proto::pb::{self, admin_server::Admin};
use tonic::{Request, Response, Status};

/// [`blocking`] with its error as a `Status`.
async fn run<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, Status> {
    blocking(f).await.map_err(Status::from)
}

/// `SubmitSweepRequest.image_folder`: empty, or "imagefolder:<16 hex digits>".
fn sent_folder(field: &str) -> Result<Option<u64>, Status> {
    if field.is_empty() {
        return Ok(None);
    }
    match field.parse::<sweep_proto::DatasetKind>() {
        Ok(sweep_proto::DatasetKind::ImageFolder(fp)) => Ok(Some(fp)),
        _ => Err(Status::invalid_argument(super::convert::bounded(format!(
            "image_folder: {field:?} is not \"imagefolder:<16 hex digits>\""
        )))),
    }
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
        if r.file_name.len() > 256 {
            return Err(Status::invalid_argument(format!(
                "file_name: {} bytes, over the limit of 256",
                r.file_name.len()
            )));
        }
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
        let folder = sent_folder(&r.image_folder)?;
        let text = r.sweep_toml;
        let name = file.clone();
        // Planning a large grid takes a while: not on the threads that serve workers.
        let sweep = run(move || {
            plan::parse_with(&text, Path::new(&name), plan::FolderScan::Sent(folder))
                .map_err(|e| AppError::Invalid(e.to_string()))
        })
        .await?;
        sweep
            .check_size(r.force)
            .map_err(Status::invalid_argument)?;
        let h = self.handle.clone();
        run(move || {
            let submitted = h.submit(&sweep, r.rerun)?;
            let planned: Vec<TrialId> = sweep.trials.iter().map(|t| t.id.clone()).collect();
            let finished = h.sweep_counts(&sweep.name, &planned).1.finished;
            tracing::info!(sweep = %sweep.name, trials = sweep.size(), "sweep submitted");
            Ok(pb::SubmitSweepResponse {
                name: sweep.name.clone(),
                trials: sweep.size() as u32,
                reused: finished as u32,
                stale: submitted.stale as u32,
                kept_shared: submitted.kept_shared as u32,
                dropped_queued: submitted.dropped.queued.len() as u32,
                dropped_running: submitted.dropped.running.len() as u32,
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
        let sweeps = run(move || h.list()).await?;
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
        let v = run(move || h.view(&r.sweep, r.curves)).await?;
        Ok(Response::new(view_pb(&v)))
    }

    async fn cancel(
        &self,
        req: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::CancelResponse>, Status> {
        let r = req.into_inner();
        let h = self.handle.clone();
        let cancelled = run(move || h.cancel_in(&r.sweep, &r.trial_id)).await?;
        Ok(Response::new(pb::CancelResponse {
            cancelled: cancelled.into_iter().map(String::from).collect(),
        }))
    }

    async fn rerun(
        &self,
        req: Request<pb::RerunRequest>,
    ) -> Result<Response<pb::RerunResponse>, Status> {
        let r = req.into_inner();
        let h = self.handle.clone();
        let queued = run(move || h.rerun(&r.sweep)).await?;
        Ok(Response::new(pb::RerunResponse {
            queued: queued.into_iter().map(String::from).collect(),
        }))
    }

    async fn get_report(
        &self,
        req: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportResponse>, Status> {
        let r = req.into_inner();
        let h = self.handle.clone();
        // Rendering draws every trial's curves: on the blocking thread too.
        let (files, summary) = run(move || {
            let report = h.report(&r.sweep)?;
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
        let (trial, bytes) = run(move || {
            let (trial, meta, bytes) = h.model_of(&r.sweep, &r.trial_id)?;
            tracing::info!(sweep = %r.sweep, %trial, size = meta.size, "model exported");
            Ok((trial, bytes))
        })
        .await?;
        let header = pb::CheckpointChunk {
            lease: Some(pb::LeaseRef {
                trial_id: trial.into(),
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
        let hash = run(move || h.store_module(&bytes)).await?;
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
            run(move || h.stored(&n)).await.map(|s| {
                s.trials
                    .into_iter()
                    .map(|t| t.id)
                    .collect::<HashSet<TrialId>>()
            })
        };
        let mut filter: Option<HashSet<TrialId>> = if name.is_empty() {
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
                let resubmitted: bool =
                    e.kind == EventKind::Submitted && e.sweep.as_deref() == Some(name.as_str());
                if resubmitted && filter.is_some() {
                    // The sweep may hold other trials now (an edited grid submitted again).
                    if let Ok(ids) = members(handle.clone(), name.clone()).await {
                        filter = Some(ids);
                    }
                }
                let wanted = match &filter {
                    None => true,
                    Some(ids) => ids.contains(&e.trial) || resubmitted,
                };
                if !wanted {
                    continue;
                }
                // A client that stops reading must not hold the server's shutdown.
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    sent = tx.send(Ok(event_pb(e))) => if sent.is_err() { break },
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
