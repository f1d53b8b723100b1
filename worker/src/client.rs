//! `worker --coordinator URL`: the long-running loop that pulls trials from a coordinator.
//!
//! It registers, leases as many trials as it has free slots, trains each on its own thread,
//! streams every finished epoch, reports the result, and heartbeats in between. When the
//! coordinator goes away it reconnects with exponential backoff and registers again; trials
//! that were training keep going, and their results are delivered once it is back (the
//! coordinator ignores them if it has given the lease to someone else meanwhile).

use crate::data::{self, Dataset};
use crate::device;
use crate::train::{self, Event};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use sweep_proto::pb::{self, coordinator_client::CoordinatorClient};
use sweep_proto::tls::{ClientTls, TlsError};
use sweep_proto::{EpochMetrics, TrialResult, TrialSpec, TrialStatus};
use tch::Device;
use tokio::sync::mpsc;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Status};

const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the coordinator refused this worker: {0}")]
    Refused(String),
    #[error(transparent)]
    Setup(#[from] TlsError),
    /// Certificate problems do not heal by retrying: stop and say so.
    #[error("TLS with {url} failed: {reason}")]
    Tls { url: String, reason: String },
}

pub struct Options {
    pub url: String,
    pub token: String,
    pub name: String,
    pub device: Device,
    pub slots: u32,
    /// Dataset directory; overrides the coordinator's hint.
    pub data: Option<PathBuf>,
    pub tls: ClientTls,
    /// True while a session with the coordinator is up: the worker's readiness.
    pub connected: Arc<AtomicBool>,
}

/// The TLS error somewhere in `e`'s chain of causes, if the failure was one.
///
/// During the handshake the rustls error arrives intact. After it (TLS 1.3 checks the client's
/// certificate only then) h2 passes it on as an `io::Error` that holds only the message, so
/// those are recognised by rustls' wording for alerts and certificate errors.
fn tls_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t.to_string());
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(t) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(t.to_string());
            }
            let text = io.to_string();
            let tls_words = [
                "received fatal alert",
                "invalid peer certificate",
                "peer sent no certificates",
            ];
            if io.kind() == std::io::ErrorKind::InvalidData
                && tls_words.iter().any(|w| text.contains(w))
            {
                return Some(format!("{text} (is this worker's certificate signed by the CA the coordinator trusts?)"));
            }
        }
        cur = err.source();
    }
    None
}

type Key = (String, u32);

enum Msg {
    Progress(Key, EpochMetrics),
    Done(Key, Box<TrialResult>),
}

fn lease_ref(k: &Key) -> pb::LeaseRef {
    pb::LeaseRef {
        trial_id: k.0.clone(),
        attempt: k.1,
    }
}

/// A trial that could not even start: reported as failed with the reason.
fn failed(reason: String, device: Device) -> TrialResult {
    TrialResult {
        status: TrialStatus::Failed,
        reason: Some(reason),
        epochs: vec![],
        test: None,
        best_val_accuracy: None,
        train_images: 0,
        val_images: 0,
        parameters: 0,
        device: train::device_name(device),
        seconds: 0.0,
        notes: Vec::new(),
    }
}

/// Trains one leased trial on the calling (blocking) thread.
fn train_lease(
    lease: &pb::Lease,
    opts_data: Option<PathBuf>,
    device: Device,
    stop: &AtomicBool,
    tx: &mpsc::UnboundedSender<Msg>,
) -> TrialResult {
    let key = (lease.trial_id.clone(), lease.attempt);
    let spec = match TrialSpec::from_toml(&lease.spec_toml) {
        Ok(s) => s,
        Err(e) => return failed(format!("invalid trial from the coordinator: {e}"), device),
    };
    if let Err(e) = device::check_request(spec.device, device) {
        return failed(e, device);
    }
    // The coordinator's hint is a path on its machine: use it only where it holds the data,
    // else fall back to $CIFAR10_DATA and ./data.
    let hint = Some(PathBuf::from(&lease.data_hint))
        .filter(|h| !lease.data_hint.is_empty() && data::find_data_dir(Some(h)).is_ok());
    let dir = match data::find_data_dir(opts_data.clone().or(hint).as_deref()) {
        Ok(d) => d,
        // The sweep says `data = "fetch"`: download the official archive into ./data.
        Err(_) if opts_data.is_none() && lease.data_hint == "fetch" => {
            match data::fetch::fetch(
                &data::fetch::Archive::official(),
                std::path::Path::new("data"),
                false,
            ) {
                Ok(d) => d,
                Err(e) => return failed(format!("data = \"fetch\": {e}"), device),
            }
        }
        Err(e) => return failed(e.to_string(), device),
    };
    let dataset = match Dataset::load(&dir, spec.train_batches) {
        Ok(d) => d,
        Err(e) => return failed(e.to_string(), device),
    };
    train::run_until(&spec, &dataset, device, stop, &mut |e| {
        if let Event::Epoch(m) = e {
            let _ = tx.send(Msg::Progress(key.clone(), m.clone()));
        }
    })
}

/// Runs until `shutdown` resolves (or the coordinator refuses the token).
pub async fn run(
    opts: Options,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ClientError> {
    // A request that hangs (a half-dead network path) must end so the session can reconnect.
    let endpoint =
        sweep_proto::tls::endpoint(&opts.url, &opts.tls)?.timeout(Duration::from_secs(30));
    let tls_error = |reason| ClientError::Tls {
        url: opts.url.clone(),
        reason,
    };
    let auth: MetadataValue<_> = format!("Bearer {}", opts.token)
        .parse()
        .map_err(|_| ClientError::Refused("the token has invalid characters".into()))?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let mut running: HashMap<Key, Arc<AtomicBool>> = HashMap::new();
    let mut pending: Vec<(Key, Box<TrialResult>)> = Vec::new();
    let mut backoff = Duration::from_millis(200);
    // The id of the last session: offered back on reconnect so that a short network cut does
    // not cost the leases this worker holds.
    let mut last_id = String::new();
    tokio::pin!(shutdown);

    loop {
        let channel = tokio::select! {
            _ = &mut shutdown => break,
            c = endpoint.connect() => c,
        };
        let channel = match channel {
            Ok(c) => c,
            Err(e) => {
                if let Some(reason) = tls_failure(&e) {
                    return Err(tls_error(reason));
                }
                tracing::warn!("cannot reach {}: {e}; retrying in {backoff:?}", opts.url);
                tokio::select! { _ = &mut shutdown => break, _ = tokio::time::sleep(backoff) => {} }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let auth = auth.clone();
        let mut client =
            CoordinatorClient::with_interceptor(channel, move |mut req: Request<()>| {
                req.metadata_mut().insert("authorization", auth.clone());
                Ok(req)
            });
        let (device_kind, gpu_model) = match opts.device {
            Device::Cuda(i) => (pb::DeviceKind::Cuda, format!("cuda:{i}")),
            _ => (pb::DeviceKind::Cpu, String::new()),
        };
        let reg = client
            .register(pb::RegisterRequest {
                name: opts.name.clone(),
                device: device_kind as i32,
                gpu_model,
                gpu_memory_bytes: 0,
                slots: opts.slots,
                version: env!("CARGO_PKG_VERSION").into(),
                resume_worker_id: last_id.clone(),
            })
            .await;
        let reg = match reg {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::Unauthenticated => {
                return Err(ClientError::Refused(s.message().to_string()))
            }
            Err(s) => {
                if let Some(reason) = tls_failure(&s) {
                    return Err(tls_error(reason));
                }
                tracing::warn!("register failed: {}; retrying in {backoff:?}", s.message());
                tokio::select! { _ = &mut shutdown => break, _ = tokio::time::sleep(backoff) => {} }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        opts.connected.store(true, Ordering::Relaxed);
        let id = reg.worker_id;
        if id == last_id {
            tracing::info!(worker = %id, "resumed the session with {}", opts.url);
        } else {
            tracing::info!(worker = %id, "registered with {}", opts.url);
        }
        last_id = id.clone();
        let mut ticker = tokio::time::interval(Duration::from_millis(
            reg.heartbeat_interval_ms.max(50) as u64,
        ));

        // One session: until the connection breaks or we are told to stop.
        let outcome: Result<(), Status> = async {
            loop {
                // Deliver finished results first; keep the ones that cannot be sent yet.
                while let Some((key, result)) = pending.first().cloned() {
                    let report = pb::ResultReport {
                        worker_id: id.clone(),
                        lease: Some(lease_ref(&key)),
                        result_json: serde_json::to_string(&result).unwrap_or_default(),
                    };
                    let ack = match client.report_result(report.clone()).await {
                        Ok(ack) => ack.into_inner(),
                        Err(e) => {
                            tracing::warn!(trial = %key.0, attempt = key.1, "could not deliver the result, keeping it: {}", e.message());
                            return Err(e);
                        }
                    };
                    // The exact JSON is logged so a result can be traced from worker to report.
                    if ack.accepted {
                        tracing::info!(worker = %id, trial = %key.0, attempt = key.1, result = %report.result_json, "result accepted");
                    } else {
                        tracing::info!(worker = %id, trial = %key.0, attempt = key.1, result = %report.result_json, "result not accepted: {}", ack.reason);
                    }
                    pending.remove(0);
                }
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    _ = ticker.tick() => {
                        let refs: Vec<pb::LeaseRef> = running.keys().map(lease_ref).collect();
                        let hb = client.heartbeat(pb::HeartbeatRequest { worker_id: id.clone(), running: refs }).await?.into_inner();
                        // A session that gets this far is healthy again.
                        backoff = Duration::from_millis(200);
                        for c in hb.cancel {
                            if let Some(flag) = running.get(&(c.trial_id.clone(), c.attempt)) {
                                tracing::info!(trial = %c.trial_id, "stopping: the coordinator cancelled this lease");
                                flag.store(true, Ordering::Relaxed);
                            }
                        }
                        let free = opts.slots.saturating_sub(running.len() as u32);
                        if free > 0 {
                            let leases = client.lease(pb::LeaseRequest { worker_id: id.clone(), free_slots: free }).await?.into_inner().leases;
                            for lease in leases {
                                let key = (lease.trial_id.clone(), lease.attempt);
                                tracing::info!(trial = %key.0, attempt = key.1, "training");
                                let stop = Arc::new(AtomicBool::new(false));
                                running.insert(key.clone(), stop.clone());
                                let (tx, data, device) = (tx.clone(), opts.data.clone(), opts.device);
                                std::thread::spawn(move || {
                                    let result = train_lease(&lease, data, device, &stop, &tx);
                                    let _ = tx.send(Msg::Done(key, Box::new(result)));
                                });
                            }
                        }
                    }
                    Some(msg) = rx.recv() => match msg {
                        Msg::Progress(key, m) => {
                            let report = pb::ProgressReport { worker_id: id.clone(), lease: Some(lease_ref(&key)), metrics: Some(pb::EpochMetrics::from(&m)) };
                            client.report_progress(report).await?;
                        }
                        Msg::Done(key, result) => {
                            running.remove(&key);
                            pending.push((key, result));
                            // A slot is free: ask for the next trial now, not at the next beat.
                            ticker.reset_immediately();
                        }
                    },
                }
            }
        }
        .await;
        opts.connected.store(false, Ordering::Relaxed);
        match outcome {
            Ok(()) => break,
            Err(s) if s.code() == Code::Unauthenticated => {
                return Err(ClientError::Refused(s.message().to_string()))
            }
            Err(s) => {
                // Back off here too: a coordinator that accepts the session but fails every
                // write (disk full) must not be hammered.
                tracing::warn!(
                    "lost the coordinator ({}); reconnecting in {backoff:?}",
                    s.message()
                );
                tokio::select! { _ = &mut shutdown => break, _ = tokio::time::sleep(backoff) => {} }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    for flag in running.values() {
        flag.store(true, Ordering::Relaxed);
    }
    Ok(())
}
