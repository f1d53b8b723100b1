//! `worker --coordinator URL`: the long-running loop that pulls trials from a coordinator.
//!
//! It registers, leases as many trials as it has free slots, trains each on its own thread,
//! streams every finished epoch, reports the result, and heartbeats in between. When the
//! coordinator goes away it reconnects with exponential backoff and registers again; trials
//! that were training keep going, and their results are delivered once it is back (the
//! coordinator ignores them if it has given the lease to someone else meanwhile).

use crate::artifacts::checkpoint;
use crate::data::{self, Dataset};
use crate::model::torchscript;
use crate::train::device;
use crate::train::{self, failed, Control, Event};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use sweep_proto::convert::{artifact_chunks, receive_artifact, CHUNK_BYTES};
use sweep_proto::ids::LeaseRef;
use sweep_proto::limits::MAX_CHECKPOINT_BYTES;
use sweep_proto::pb::{self, coordinator_client::CoordinatorClient};
use sweep_proto::tls::{Bearer, ClientTls, TlsError};
use sweep_proto::{EpochMetrics, TrialResult, TrialSpec};
use tch::Device;
use tokio::sync::mpsc;
use tonic::{Code, Status};

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
    /// What `/metrics` on the health port exports.
    pub metrics: Arc<super::metrics::Metrics>,
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

/// A lease, as trials, uploads and results name it.
type Key = LeaseRef;

/// The lease a coordinator's `pb::Lease` or `pb::LeaseRef` names.
fn key(trial_id: &str, attempt: u32) -> Key {
    LeaseRef {
        trial: trial_id.into(),
        attempt,
    }
}

enum Msg {
    /// An epoch's metrics; with a reply channel, the trainer waits for the coordinator's
    /// early-stopping verdict (`Some(why)`: stop after this epoch).
    Progress(
        Key,
        EpochMetrics,
        Option<std::sync::mpsc::SyncSender<Option<String>>>,
    ),
    /// A checkpoint after this many epochs, or the trained model, to send to the coordinator.
    Upload(Key, pb::ArtifactKind, u32, Vec<u8>),
    Done(Key, Box<TrialResult>),
}

/// The dataset directory for a lease's trial. The coordinator's hint is a path on its
/// machine: it is used only where it holds the data, else $CIFAR10_DATA and ./data are. The
/// worker's --data comes first, unless it does not hold what this trial trains on and the hint
/// does (a worker for CIFAR-10 that also sees the sweep's image folder).
fn lease_data(
    lease: &pb::Lease,
    spec: &TrialSpec,
    opts_data: Option<&PathBuf>,
) -> Result<PathBuf, String> {
    // Each candidate is looked at once (for an image folder that lists every file).
    let look = |d: &PathBuf| data::find_data_for(Some(d), spec.dataset);
    let hint = (!lease.data_hint.is_empty()).then(|| PathBuf::from(&lease.data_hint));
    let image_folder = matches!(spec.dataset, sweep_proto::DatasetKind::ImageFolder(_));
    let found = match opts_data.map(look) {
        Some(Ok(d)) => Ok(d),
        Some(Err(e)) => hint.as_ref().and_then(|h| look(h).ok()).ok_or(e),
        None => match hint.as_ref().map(look) {
            Some(Ok(h)) => Ok(h),
            // Only the sweep names an image folder: the error says its path is not here.
            Some(Err(e)) if image_folder => Err(e),
            _ => data::find_data_for(None, spec.dataset),
        },
    };
    match found {
        Ok(d) => Ok(d),
        // The sweep says `data = "fetch"`: download the official archive into ./data.
        Err(_)
            if opts_data.is_none()
                && lease.data_hint == "fetch"
                && spec.dataset == sweep_proto::DatasetKind::Cifar10 =>
        {
            data::fetch::fetch(
                &data::fetch::Archive::official(),
                std::path::Path::new("data"),
                false,
            )
            .map_err(|e| format!("data = \"fetch\": {e}"))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Trains one leased trial on the calling (blocking) thread.
fn train_lease(
    lease: &pb::Lease,
    opts_data: Option<PathBuf>,
    device: Device,
    control: &Control,
    tx: &mpsc::UnboundedSender<Msg>,
) -> TrialResult {
    let key = key(&lease.trial_id, lease.attempt);
    let spec = match TrialSpec::from_toml(&lease.spec_toml) {
        Ok(s) => s,
        Err(e) => return failed(format!("invalid trial from the coordinator: {e}"), device),
    };
    if let Err(e) = device::check_request(spec.device, device) {
        return failed(e, device);
    }
    let dir = match lease_data(lease, &spec, opts_data.as_ref()) {
        Ok(d) => d,
        Err(e) => return failed(e, device),
    };
    let dataset = match Dataset::open(&dir, spec.dataset, spec.image_size, spec.train_batches) {
        Ok(d) => d,
        Err(e) => return failed(e.to_string(), device),
    };
    train::run_until(&spec, &dataset, device, control, &mut |e| {
        if let Event::Checkpoint { epoch, bytes } = e {
            let kind = pb::ArtifactKind::Checkpoint;
            let _ = tx.send(Msg::Upload(key.clone(), kind, epoch, bytes.to_vec()));
            return;
        }
        if let Event::Model { epochs, bytes } = e {
            // Sent before the result (the channel keeps the order): a finished trial's model
            // is on the coordinator when its result is.
            let kind = pb::ArtifactKind::Model;
            let _ = tx.send(Msg::Upload(key.clone(), kind, epochs, bytes.to_vec()));
            return;
        }
        let Event::Epoch(m) = e else { return };
        if !lease.early_stopping {
            let _ = tx.send(Msg::Progress(key.clone(), m.clone(), None));
            return;
        }
        // Early stopping: the verdict on this epoch decides whether there is a next one. A
        // coordinator that does not answer in time does not hold training up: the verdict,
        // when it comes, stops the trial after a later epoch instead.
        let (reply, verdict) = std::sync::mpsc::sync_channel(1);
        if tx
            .send(Msg::Progress(key.clone(), m.clone(), Some(reply)))
            .is_ok()
        {
            if let Ok(Some(why)) = verdict.recv_timeout(VERDICT_WAIT) {
                control.stop_after_epoch(why);
            }
        }
    })
}

/// How long a trial under early stopping waits, after each epoch, for the coordinator's
/// verdict on it before it trains on regardless.
const VERDICT_WAIT: Duration = Duration::from_secs(30);

/// Exponential backoff between reconnection attempts: 200 ms doubling up to 10 s (or the
/// coordinator's heartbeat interval, once one was heard), back to the start once a session is
/// healthy again.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(200);

    fn new() -> Backoff {
        Backoff {
            next: Self::FIRST,
            max: MAX_BACKOFF,
        }
    }

    /// Never waits longer than the coordinator's heartbeat interval: a restarted coordinator
    /// keeps this worker's leases for one heartbeat timeout (three intervals), so a worker
    /// that retried less often could come back after they were given away.
    fn at_most(&mut self, interval: Duration) {
        self.max = interval.clamp(Self::FIRST, MAX_BACKOFF);
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// The delay to wait now; the next one is twice as long.
    fn take(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        now
    }
}

type Client = CoordinatorClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
>;

/// What outlives a session: the trials training on their threads and the results not yet
/// delivered, plus the identity to resume with after a network cut.
struct Trials {
    tx: mpsc::UnboundedSender<Msg>,
    rx: mpsc::UnboundedReceiver<Msg>,
    running: HashMap<Key, Arc<Control>>,
    pending: Vec<(Key, Box<TrialResult>)>,
    /// The last session's id and secret: offered back on reconnect so that a short network
    /// cut does not cost the leases this worker holds.
    resume: Option<(String, String)>,
}

/// One registered session with the coordinator, until the connection breaks.
struct Session<'a> {
    client: Client,
    id: String,
    opts: &'a Options,
}

impl Session<'_> {
    /// Delivers finished results; keeps the ones that cannot be sent yet.
    async fn deliver(&mut self, trials: &mut Trials) -> Result<(), Status> {
        while let Some((key, result)) = trials.pending.first() {
            let report = pb::ResultReport {
                worker_id: self.id.clone(),
                lease: Some(pb::LeaseRef::from(key)),
                result: Some(pb::TrialResult::from(result.as_ref())),
            };
            // The exact JSON of the result is logged so it can be traced from worker to report
            // (the coordinator stores and reports these values bit for bit).
            let json = serde_json::to_string(result).unwrap_or_default();
            let ack = match self.client.report_result(report).await {
                Ok(ack) => ack.into_inner(),
                Err(e) => {
                    tracing::warn!(trial = %key.trial, attempt = key.attempt, "could not deliver the result, keeping it: {}", e.message());
                    return Err(e);
                }
            };
            if ack.accepted {
                tracing::info!(worker = %self.id, trial = %key.trial, attempt = key.attempt, result = %json, "result accepted");
            } else {
                tracing::info!(worker = %self.id, trial = %key.trial, attempt = key.attempt, result = %json, "result not accepted: {}", ack.reason);
            }
            trials.pending.remove(0);
        }
        Ok(())
    }

    /// A heartbeat (stopping what the coordinator cancelled), then leases for free slots.
    async fn beat(&mut self, trials: &mut Trials) -> Result<(), Status> {
        let refs: Vec<pb::LeaseRef> = trials.running.keys().map(pb::LeaseRef::from).collect();
        let hb = self
            .client
            .heartbeat(pb::HeartbeatRequest {
                worker_id: self.id.clone(),
                running: refs,
            })
            .await?
            .into_inner();
        for c in hb.cancel {
            if let Some(flag) = trials.running.get(&key(&c.trial_id, c.attempt)) {
                tracing::info!(trial = %c.trial_id, "stopping: the coordinator cancelled this lease");
                flag.cancel.store(true, Ordering::Relaxed);
            }
        }
        let free = self.opts.slots.saturating_sub(trials.running.len() as u32);
        if free == 0 {
            return Ok(());
        }
        let leases = self
            .client
            .lease(pb::LeaseRequest {
                worker_id: self.id.clone(),
                free_slots: free,
            })
            .await?
            .into_inner()
            .leases;
        for lease in leases {
            self.start(lease, trials).await;
        }
        Ok(())
    }

    /// Starts a leased trial on its own thread (resuming from the coordinator's checkpoint
    /// when there is one), after fetching its TorchScript module beside the session.
    async fn start(&mut self, lease: pb::Lease, trials: &mut Trials) {
        let key = key(&lease.trial_id, lease.attempt);
        tracing::info!(trial = %key.trial, attempt = key.attempt, "training");
        let mut control = Control {
            checkpoints: checkpoint::Policy {
                every_epochs: lease.checkpoint_every_epochs,
                every_seconds: lease.checkpoint_every_seconds,
            },
            export_model: lease.keep_model,
            ..Control::default()
        };
        if lease.checkpoint_epoch > 0 {
            match self.load_checkpoint(&key).await {
                Ok(bytes) => {
                    tracing::info!(trial = %key.trial, attempt = key.attempt, epoch = lease.checkpoint_epoch, size = bytes.len(), "resuming from a checkpoint");
                    control.resume = Some(bytes);
                }
                Err(why) => {
                    tracing::warn!(trial = %key.trial, attempt = key.attempt, "checkpoint not used: {why}");
                    control.resume_note = Some(format!(
                        "the checkpoint after epoch {} was not used ({why}); trained from the first epoch",
                        lease.checkpoint_epoch
                    ));
                }
            }
        }
        let control = Arc::new(control);
        trials.running.insert(key.clone(), control.clone());
        self.opts.metrics.running(trials.running.len());
        let (tx, data, device) = (trials.tx.clone(), self.opts.data.clone(), self.opts.device);
        // A module download runs beside the session (heartbeats go on meanwhile); the
        // lease is listed as running from now on.
        let (client, id) = (self.client.clone(), self.id.clone());
        tokio::spawn(async move {
            let fetched = tokio::time::timeout(
                MODULE_FETCH_TIMEOUT,
                fetch_module(client, id, &key, &lease.spec_toml),
            )
            .await
            .unwrap_or_else(|_| Err(format!("no module after {MODULE_FETCH_TIMEOUT:?}")));
            std::thread::spawn(move || {
                let result = match fetched {
                    // Whatever panics (a bug included) ends the trial, not the thread
                    // that must report it.
                    Ok(()) => crate::train::trial_panic::catch(|| {
                        train_lease(&lease, data, device, &control, &tx)
                    })
                    .unwrap_or_else(|why| train::failed(why, device)),
                    Err(why) => train::failed(
                        format!("the trial's TorchScript module was not received: {why}"),
                        device,
                    ),
                };
                let _ = tx.send(Msg::Done(key, Box::new(result)));
            });
        });
    }

    /// The coordinator's checkpoint of a leased trial, checked against its SHA-256.
    async fn load_checkpoint(&mut self, key: &Key) -> Result<Vec<u8>, String> {
        let chunks = self
            .client
            .load_checkpoint(pb::LoadCheckpointRequest {
                worker_id: self.id.clone(),
                lease: Some(pb::LeaseRef::from(key)),
            })
            .await
            .map_err(|e| e.message().to_string())?
            .into_inner();
        receive(chunks, MAX_CHECKPOINT_BYTES).await
    }

    /// Sends a checkpoint or a model in chunks; a failure costs only the resume or the
    /// export, so it is logged.
    async fn save_checkpoint(
        &mut self,
        key: &Key,
        kind: pb::ArtifactKind,
        epoch: u32,
        bytes: Vec<u8>,
    ) {
        let (size, sha256) = (bytes.len() as u64, checkpoint::sha256_hex(&bytes));
        let header = pb::CheckpointChunk {
            worker_id: self.id.clone(),
            lease: Some(pb::LeaseRef::from(key)),
            epoch,
            size,
            sha256,
            kind: kind as i32,
            ..Default::default()
        };
        let chunks = artifact_chunks(&bytes, CHUNK_BYTES, header);
        match self
            .client
            .save_checkpoint(tokio_stream::iter(chunks))
            .await
        {
            Ok(ack) if ack.get_ref().accepted => {
                tracing::info!(trial = %key.trial, attempt = key.attempt, epoch, size, ?kind, "saved on the coordinator")
            }
            Ok(ack) => {
                tracing::info!(trial = %key.trial, attempt = key.attempt, epoch, ?kind, "not kept: {}", ack.get_ref().reason)
            }
            Err(e) => {
                tracing::warn!(trial = %key.trial, attempt = key.attempt, epoch, ?kind, "not saved: {}", e.message())
            }
        }
    }

    /// Serves the session until `shutdown` (Ok) or the connection breaks (Err).
    async fn run(
        &mut self,
        trials: &mut Trials,
        heartbeat: Duration,
        backoff: &mut Backoff,
        shutdown: &mut (impl std::future::Future<Output = ()> + Unpin),
    ) -> Result<(), Status> {
        let mut ticker = tokio::time::interval(heartbeat);
        loop {
            self.deliver(trials).await?;
            tokio::select! {
                _ = &mut *shutdown => return Ok(()),
                _ = ticker.tick() => {
                    self.beat(trials).await?;
                    // A session that gets this far is healthy again.
                    backoff.reset();
                }
                Some(msg) = trials.rx.recv() => match msg {
                    Msg::Progress(key, m, reply) => {
                        self.opts.metrics.epoch(m.seconds, m.images_per_sec);
                        let report = pb::ProgressReport {
                            worker_id: self.id.clone(),
                            lease: Some(pb::LeaseRef::from(&key)),
                            metrics: Some(pb::EpochMetrics::from(&m)),
                        };
                        // On error the reply is dropped: the trainer goes on without a verdict.
                        let ack = self.client.report_progress(report).await?.into_inner();
                        if ack.stop {
                            tracing::info!(trial = %key.trial, attempt = key.attempt, epoch = m.epoch, "stopping early: {}", ack.reason);
                            if let Some(control) = trials.running.get(&key) {
                                control.stop_after_epoch(ack.reason.clone());
                            }
                        }
                        if let Some(reply) = reply {
                            let _ = reply.try_send(ack.stop.then_some(ack.reason));
                        }
                    }
                    Msg::Upload(key, kind, epoch, bytes) => {
                        self.save_checkpoint(&key, kind, epoch, bytes).await;
                    }
                    Msg::Done(key, result) => {
                        trials.running.remove(&key);
                        self.opts.metrics.running(trials.running.len());
                        self.opts.metrics.ended(result.status);
                        trials.pending.push((key, result));
                        // A slot is free: ask for the next trial now, not at the next beat.
                        ticker.reset_immediately();
                    }
                },
            }
        }
    }
}

/// Why a connection or a registration failed, and whether retrying can help.
enum Failure {
    /// Stop the worker: the coordinator refused it or its certificates.
    Fatal(ClientError),
    Retry(String),
}

/// Connects and registers (resuming the last identity if there is one). A failure that looks
/// like the network but is a missing client certificate stops the worker with that reason.
async fn open_session<'a>(
    opts: &'a Options,
    endpoint: &tonic::transport::Endpoint,
    auth: &Bearer,
    trials: &mut Trials,
) -> Result<(Session<'a>, Duration), Failure> {
    let outcome = try_open(opts, endpoint, auth, trials).await;
    // The same reason every time, whether the server's alert arrived intact or as a reset. A
    // failure of this side's own checks (the server's certificate) keeps its reason.
    let server_refused = match &outcome {
        Err(Failure::Retry(_)) => true,
        Err(Failure::Fatal(ClientError::Tls { reason, .. })) => reason.contains("alert"),
        _ => false,
    };
    if server_refused {
        if let Some(reason) = missing_client_certificate(opts).await {
            return Err(Failure::Fatal(ClientError::Tls {
                url: opts.url.clone(),
                reason,
            }));
        }
    }
    outcome
}

/// After a failed connection over TLS without a client certificate: the reason, if the
/// coordinator requires one (see [`crate::net::tls_probe`]).
async fn missing_client_certificate(opts: &Options) -> Option<String> {
    if opts.tls.cert.is_some() {
        return None;
    }
    let uri: tonic::codegen::http::Uri = opts.url.parse().ok()?;
    if uri.scheme_str() != Some("https") {
        return None;
    }
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(443);
    crate::net::tls_probe::requires_client_certificate(host, port)
        .await
        .then(|| {
            "the coordinator requires a client certificate (mTLS): pass --tls-cert and --tls-key"
                .to_string()
        })
}

async fn try_open<'a>(
    opts: &'a Options,
    endpoint: &tonic::transport::Endpoint,
    auth: &Bearer,
    trials: &mut Trials,
) -> Result<(Session<'a>, Duration), Failure> {
    let tls_error = |reason| {
        Failure::Fatal(ClientError::Tls {
            url: opts.url.clone(),
            reason,
        })
    };
    let channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => {
            return Err(match tls_failure(&e) {
                Some(reason) => tls_error(reason),
                None => Failure::Retry(format!("cannot reach {}: {e}", opts.url)),
            })
        }
    };
    let mut client = CoordinatorClient::with_interceptor(channel, auth.clone());
    let (device_kind, gpu_model) = match opts.device {
        Device::Cuda(i) => (pb::DeviceKind::Cuda, format!("cuda:{i}")),
        _ => (pb::DeviceKind::Cpu, String::new()),
    };
    let (resume_worker_id, resume_secret) = trials.resume.clone().unwrap_or_default();
    let reg = client
        .register(pb::RegisterRequest {
            name: opts.name.clone(),
            device: device_kind as i32,
            gpu_model,
            gpu_memory_bytes: 0,
            slots: opts.slots,
            version: env!("CARGO_PKG_VERSION").into(),
            resume_worker_id: resume_worker_id.clone(),
            resume_secret,
        })
        .await;
    let reg = match reg {
        Ok(r) => r.into_inner(),
        Err(s) if matches!(s.code(), Code::Unauthenticated | Code::InvalidArgument) => {
            return Err(Failure::Fatal(ClientError::Refused(
                s.message().to_string(),
            )))
        }
        Err(s) => {
            return Err(match tls_failure(&s) {
                Some(reason) => tls_error(reason),
                None => Failure::Retry(format!("register failed: {}", s.message())),
            })
        }
    };
    if reg.worker_id == resume_worker_id {
        tracing::info!(worker = %reg.worker_id, "resumed the session with {}", opts.url);
    } else {
        tracing::info!(worker = %reg.worker_id, "registered with {}", opts.url);
    }
    trials.resume = Some((reg.worker_id.clone(), reg.resume_secret));
    let heartbeat = Duration::from_millis(reg.heartbeat_interval_ms.max(50) as u64);
    let session = Session {
        client,
        id: reg.worker_id,
        opts,
    };
    Ok((session, heartbeat))
}

/// Runs until `shutdown` resolves (or the coordinator refuses the token).
pub async fn run(
    opts: Options,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ClientError> {
    // A request that hangs (a half-dead network path) must end so the session can reconnect.
    let endpoint =
        sweep_proto::tls::endpoint(&opts.url, &opts.tls)?.timeout(Duration::from_secs(30));
    let auth = Bearer::new(&opts.token)
        .ok_or_else(|| ClientError::Refused("the token has invalid characters".into()))?;
    let (tx, rx) = mpsc::unbounded_channel::<Msg>();
    let mut trials = Trials {
        tx,
        rx,
        running: HashMap::new(),
        pending: Vec::new(),
        resume: None,
    };
    let mut backoff = Backoff::new();
    tokio::pin!(shutdown);

    loop {
        let opened = tokio::select! {
            _ = &mut shutdown => break,
            o = open_session(&opts, &endpoint, &auth, &mut trials) => o,
        };
        let why = match opened {
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retry(why)) => format!("{why}; retrying"),
            Ok((mut session, heartbeat)) => {
                opts.connected.store(true, Ordering::Relaxed);
                backoff.at_most(heartbeat);
                let outcome = session
                    .run(&mut trials, heartbeat, &mut backoff, &mut shutdown)
                    .await;
                opts.connected.store(false, Ordering::Relaxed);
                match outcome {
                    Ok(()) => break,
                    Err(s) if s.code() == Code::Unauthenticated => {
                        return Err(ClientError::Refused(s.message().to_string()))
                    }
                    // Back off here too: a coordinator that accepts the session but fails
                    // every write (disk full) must not be hammered.
                    Err(s) => format!("lost the coordinator ({}); reconnecting", s.message()),
                }
            }
        };
        let delay = backoff.take();
        tracing::warn!("{why} in {delay:?}");
        tokio::select! { _ = &mut shutdown => break, _ = tokio::time::sleep(delay) => {} }
    }
    for flag in trials.running.values() {
        flag.cancel.store(true, Ordering::Relaxed);
    }
    Ok(())
}

/// How long a TorchScript module may take to arrive (512 MiB at 1 MB/s is under 10 minutes).
const MODULE_FETCH_TIMEOUT: Duration = Duration::from_secs(600);

/// Puts the TorchScript module a leased trial trains into the module cache, from the
/// coordinator, unless it is there already.
async fn fetch_module(
    mut client: Client,
    worker_id: String,
    key: &Key,
    spec_toml: &str,
) -> Result<(), String> {
    let Ok(spec) = TrialSpec::from_toml(spec_toml) else {
        return Ok(()); // train_lease reports the bad spec
    };
    let sweep_proto::Model::TorchScript(hash) = spec.model else {
        return Ok(());
    };
    if torchscript::have(hash) {
        return Ok(());
    }
    let chunks = client
        .fetch_module(pb::FetchModuleRequest {
            worker_id,
            lease: Some(pb::LeaseRef::from(key)),
        })
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner();
    let bytes = receive(chunks, torchscript::MAX_MODULE_BYTES).await?;
    let bytes_len = bytes.len();
    tokio::task::spawn_blocking(move || torchscript::store(&bytes, Some(hash)))
        .await
        .map_err(|e| e.to_string())??;
    tracing::info!(trial = %key.trial, %hash, bytes = bytes_len, "received a TorchScript module");
    Ok(())
}

/// An artifact streamed in chunks (the first announces size and SHA-256), checked.
async fn receive(
    mut chunks: tonic::Streaming<pb::CheckpointChunk>,
    limit: u64,
) -> Result<Vec<u8>, String> {
    receive_artifact(&mut chunks, limit)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_ten_seconds_and_resets() {
        let mut b = Backoff::new();
        let waits: Vec<u64> = (0..8).map(|_| b.take().as_millis() as u64).collect();
        assert_eq!(waits, [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]);
        b.reset();
        assert_eq!(b.take(), Duration::from_millis(200));
    }

    #[test]
    fn backoff_never_outwaits_the_heartbeat_interval_it_was_given() {
        let mut b = Backoff::new();
        b.at_most(Duration::from_secs(1));
        let waits: Vec<u64> = (0..6).map(|_| b.take().as_millis() as u64).collect();
        assert_eq!(waits, [200, 400, 800, 1000, 1000, 1000]);
        // A tiny interval still leaves the first wait alone; a long one is capped at 10 s.
        b.at_most(Duration::from_millis(10));
        b.reset();
        assert_eq!(b.take(), Duration::from_millis(200));
        b.at_most(Duration::from_secs(60));
        let last = (0..10).map(|_| b.take()).last();
        assert_eq!(last, Some(MAX_BACKOFF));
    }
}
