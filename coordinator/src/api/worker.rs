//! The workers' gRPC service (`Coordinator` in proto/sweep.proto): protobuf in, an `app`
//! call, protobuf out. Checkpoint uploads are received here chunk by chunk into the file the
//! app names, checked against the announced size and SHA-256, and handed back to the app.

use super::convert::{ack, device, lease_pb, lease_ref};
use crate::app::work::{Registration, Reply};
use crate::app::{AppError, Handle};
use crate::sched::core::{LeaseRef, Rejected};
use crate::store::files::{Meta, MAX_CHECKPOINT_BYTES};
use std::path::Path;
use sweep_proto::convert::{artifact_chunks, CHUNK_BYTES};
use sweep_proto::pb::{self, coordinator_server::Coordinator};
use sweep_proto::{EpochMetrics, TrialResult};
use tonic::{Request, Response, Status};

/// The `Coordinator` service over a [`Handle`].
#[derive(Clone)]
pub struct WorkerApi {
    handle: Handle,
}

impl WorkerApi {
    pub fn new(handle: Handle) -> WorkerApi {
        WorkerApi { handle }
    }
}

type ChunkStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::CheckpointChunk, Status>> + Send>>;

fn stale(lease: &LeaseRef) -> Response<pb::Ack> {
    Response::new(ack(Reply::ignored(
        Rejected::StaleLease {
            trial: lease.trial.clone(),
            attempt: lease.attempt,
        }
        .to_string(),
    )))
}

/// Receives the rest of an upload into `path`, checking it against the first chunk's
/// announced size and SHA-256; removes the file on any failure.
async fn receive_upload(
    first: &pb::CheckpointChunk,
    chunks: &mut tonic::Streaming<pb::CheckpointChunk>,
    path: &Path,
    trial: &str,
) -> Result<(u64, String), Status> {
    use sha2::{Digest, Sha256};
    use tokio::io::AsyncWriteExt;
    let fail = |status: Status| {
        let _ = std::fs::remove_file(path);
        Err(status)
    };
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| Status::unavailable(format!("cannot store the checkpoint: {e}")))?;
    let (mut hasher, mut size) = (Sha256::new(), 0u64);
    let mut next = Some(first.data.clone());
    loop {
        let data = match next.take() {
            Some(d) => d,
            None => match chunks.message().await {
                Ok(Some(c)) => c.data,
                Ok(None) => break,
                Err(e) => return fail(e),
            },
        };
        size += data.len() as u64;
        if size > first.size {
            return fail(Status::invalid_argument(format!(
                "more than the {} bytes announced",
                first.size
            )));
        }
        hasher.update(&data);
        if let Err(e) = file.write_all(&data).await {
            return fail(Status::unavailable(format!(
                "cannot store the checkpoint: {e}"
            )));
        }
    }
    drop(file);
    let sha = sweep_proto::hex(&hasher.finalize());
    if size != first.size || sha != first.sha256 {
        return fail(Status::data_loss(format!(
            "checkpoint of trial {trial} arrived as {size} bytes with SHA-256 {sha}; announced {} bytes, {}",
            first.size, first.sha256
        )));
    }
    Ok((size, sha))
}

#[tonic::async_trait]
impl Coordinator for WorkerApi {
    type LoadCheckpointStream = ChunkStream;
    type FetchModuleStream = ChunkStream;

    async fn save_checkpoint(
        &self,
        req: Request<tonic::Streaming<pb::CheckpointChunk>>,
    ) -> Result<Response<pb::Ack>, Status> {
        let mut chunks = req.into_inner();
        let first = chunks
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("an empty checkpoint stream"))?;
        let lease = lease_ref(first.lease.clone())?;
        let model = match pb::ArtifactKind::try_from(first.kind) {
            Ok(kind) => kind == pb::ArtifactKind::Model,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "kind: {} is not an artifact kind (0 checkpoint, 1 model)",
                    first.kind
                )))
            }
        };
        match self
            .handle
            .holds_upload(&first.worker_id, &lease, first.epoch)
        {
            Ok(()) => {}
            Err(AppError::NotHeld(_)) => return Ok(stale(&lease)),
            Err(e) => return Err(e.into()),
        }
        if first.size > MAX_CHECKPOINT_BYTES {
            return Err(Status::invalid_argument(format!(
                "size: {} bytes is over the limit of {} MiB",
                first.size,
                MAX_CHECKPOINT_BYTES >> 20
            )));
        }
        // (Its epoch was checked against the trial by holds_upload.)
        if first.sha256.len() != 64 {
            return Err(Status::invalid_argument(
                "the first chunk names the SHA-256 (64 hex digits)",
            ));
        }
        let path = self
            .handle
            .upload_target(model)
            .upload_path(&lease.trial, lease.attempt);
        let (size, sha256) = receive_upload(&first, &mut chunks, &path, &lease.trial).await?;
        let meta = Meta {
            epoch: first.epoch,
            attempt: lease.attempt,
            size,
            sha256,
        };
        let reply = self
            .handle
            .keep_upload(&first.worker_id, &lease, path, meta, model)
            .await?;
        Ok(Response::new(ack(reply)))
    }

    async fn load_checkpoint(
        &self,
        req: Request<pb::LoadCheckpointRequest>,
    ) -> Result<Response<Self::LoadCheckpointStream>, Status> {
        let r = req.into_inner();
        let lease = lease_ref(r.lease)?;
        let (meta, bytes) = self.handle.load_checkpoint(&r.worker_id, &lease).await?;
        let header = pb::CheckpointChunk {
            epoch: meta.epoch,
            size: meta.size,
            sha256: meta.sha256,
            ..Default::default()
        };
        let chunks = artifact_chunks(&bytes, CHUNK_BYTES, header);
        Ok(Response::new(Box::pin(tokio_stream::iter(
            chunks.into_iter().map(Ok),
        ))))
    }

    async fn fetch_module(
        &self,
        req: Request<pb::FetchModuleRequest>,
    ) -> Result<Response<Self::FetchModuleStream>, Status> {
        let r = req.into_inner();
        let lease = lease_ref(r.lease)?;
        let (hash, size, sha256, path) = self.handle.module_for(&r.worker_id, &lease).await?;
        // Streamed from the file a chunk at a time (a few chunks in flight), so many workers
        // fetching a large module at once cost no memory to speak of; the worker checks the
        // SHA-256.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) => {
                    let _ = tx.blocking_send(Err(Status::not_found(format!("module {hash}: {e}"))));
                    return;
                }
            };
            let mut first = Some(pb::CheckpointChunk {
                size,
                sha256,
                ..Default::default()
            });
            loop {
                let mut data = vec![0u8; CHUNK_BYTES];
                let n = match file.read(&mut data) {
                    Ok(n) => n,
                    Err(e) => {
                        let _ =
                            tx.blocking_send(Err(Status::internal(format!("module {hash}: {e}"))));
                        return;
                    }
                };
                if n == 0 && first.is_none() {
                    return;
                }
                data.truncate(n);
                let mut chunk = first.take().unwrap_or_default();
                chunk.data = data;
                if tx.blocking_send(Ok(chunk)).is_err() || n == 0 {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let r = req.into_inner();
        let registered = self
            .handle
            .register(Registration {
                device: device(r.device)?,
                name: r.name,
                slots: r.slots,
                gpu_model: r.gpu_model,
                version: r.version,
                resume: Some((r.resume_worker_id, r.resume_secret)),
            })
            .await?;
        Ok(Response::new(pb::RegisterResponse {
            worker_id: registered.worker.into(),
            heartbeat_interval_ms: registered.heartbeat_interval_ms,
            resume_secret: registered.secret,
        }))
    }

    async fn lease(
        &self,
        req: Request<pb::LeaseRequest>,
    ) -> Result<Response<pb::LeaseResponse>, Status> {
        let r = req.into_inner();
        let leases = self.handle.lease(&r.worker_id, r.free_slots).await?;
        Ok(Response::new(pb::LeaseResponse {
            leases: leases.into_iter().map(lease_pb).collect(),
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let r = req.into_inner();
        let running: Vec<LeaseRef> = r.running.into_iter().map(LeaseRef::from).collect();
        let stop = self.handle.heartbeat(&r.worker_id, &running).await?;
        Ok(Response::new(pb::HeartbeatResponse {
            cancel: stop.iter().map(pb::LeaseRef::from).collect(),
        }))
    }

    async fn report_progress(
        &self,
        req: Request<pb::ProgressReport>,
    ) -> Result<Response<pb::Ack>, Status> {
        let r = req.into_inner();
        let lease = lease_ref(r.lease)?;
        let metrics = EpochMetrics::from(
            r.metrics
                .ok_or_else(|| Status::invalid_argument("missing metrics"))?,
        );
        metrics
            .validate("metrics")
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let reply = self.handle.progress(&r.worker_id, &lease, metrics).await?;
        Ok(Response::new(ack(reply)))
    }

    async fn report_result(
        &self,
        req: Request<pb::ResultReport>,
    ) -> Result<Response<pb::Ack>, Status> {
        let r = req.into_inner();
        let lease = lease_ref(r.lease)?;
        let result = TrialResult::try_from(
            r.result
                .ok_or_else(|| Status::invalid_argument("missing result"))?,
        )
        .map_err(|e| Status::invalid_argument(format!("result.{e}")))?;
        let reply = self.handle.finish(&r.worker_id, &lease, result).await?;
        Ok(Response::new(ack(reply)))
    }
}
