//! Bad gRPC input against a real in-process server on 127.0.0.1:0: missing and wrong tokens,
//! oversized messages, unknown workers and trials, a worker reporting on another worker's
//! lease, duplicate and malformed reports. Each must get a clear status and change nothing.

use coordinator::core::{Config, TrialState};
use coordinator::server::{serve, MAX_MESSAGE_BYTES};
use coordinator::service::Handle;
use std::path::Path;
use sweep_proto::pb::{self, coordinator_client::CoordinatorClient};
use sweep_proto::{TrialResult, TrialStatus};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request};

const TOKEN: &str = "grpc-test-token";

/// Adds (or leaves out) the authorization header.
type AddAuth = Box<dyn FnMut(Request<()>) -> Result<Request<()>, tonic::Status> + Send>;
type Client = CoordinatorClient<tonic::service::interceptor::InterceptedService<Channel, AddAuth>>;

struct Server {
    _dir: tempfile::TempDir,
    handle: Handle,
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// A coordinator with one two-trial sweep queued.
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let handle = Handle::open(&dir.path().join("g.db"), Config::default()).unwrap();
        let sweep =
            coordinator::sweep::parse("name = \"g\"\n[grid]\nseed = [1, 2]\n", Path::new("g.toml"))
                .unwrap();
        handle.submit(&sweep, false).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let h = handle.clone();
        let task = tokio::spawn(async move {
            serve(h, listener, TOKEN, None, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Server {
            _dir: dir,
            handle,
            url,
            stop: Some(tx),
            task,
        }
    }

    /// A client sending `authorization: <header>` (or nothing).
    async fn client(&self, header: Option<&str>) -> Client {
        let channel = Channel::from_shared(self.url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let value: Option<MetadataValue<_>> = header.map(|h| h.parse().unwrap());
        let add: AddAuth = Box::new(move |mut req: Request<()>| {
            if let Some(v) = &value {
                req.metadata_mut().insert("authorization", v.clone());
            }
            Ok(req)
        });
        CoordinatorClient::with_interceptor(channel, add)
    }

    async fn worker(&self) -> Client {
        self.client(Some(&format!("Bearer {TOKEN}"))).await
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let _ = self.task.await;
    }
}

async fn register(c: &mut Client, name: &str) -> String {
    c.register(pb::RegisterRequest {
        name: name.into(),
        device: pb::DeviceKind::Cpu as i32,
        slots: 1,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .worker_id
}

async fn lease_one(c: &mut Client, worker: &str) -> pb::Lease {
    c.lease(pb::LeaseRequest {
        worker_id: worker.into(),
        free_slots: 1,
    })
    .await
    .unwrap()
    .into_inner()
    .leases
    .remove(0)
}

fn result_json(acc: f64) -> String {
    serde_json::to_string(&TrialResult {
        status: TrialStatus::Completed,
        reason: None,
        epochs: vec![],
        test: None,
        best_val_accuracy: Some(acc),
        train_images: 1,
        val_images: 0,
        parameters: 1,
        device: "cpu".into(),
        seconds: 1.0,
        notes: Vec::new(),
    })
    .unwrap()
}

fn report(worker: &str, trial: &str, attempt: u32, json: String) -> pb::ResultReport {
    pb::ResultReport {
        worker_id: worker.into(),
        lease: Some(pb::LeaseRef {
            trial_id: trial.into(),
            attempt,
        }),
        result_json: json,
    }
}

#[tokio::test]
async fn requests_without_the_right_token_are_refused() {
    let server = Server::start().await;
    let cases: [(Option<String>, &str); 4] = [
        (None, "missing worker token"),
        (Some("Bearer not-the-token".into()), "wrong worker token"),
        (Some(format!("Basic {TOKEN}")), "missing worker token"),
        (Some(format!("Bearer {TOKEN}x")), "wrong worker token"),
    ];
    for (header, message) in cases {
        let mut c = server.client(header.as_deref()).await;
        let err = c
            .register(pb::RegisterRequest {
                name: "w".into(),
                device: pb::DeviceKind::Cpu as i32,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{header:?}: {err:?}");
        assert!(err.message().contains(message), "{header:?}: {err:?}");
    }
    assert_eq!(server.handle.lock().core.workers().count(), 0);
    server.stop().await;
}

#[tokio::test]
async fn oversized_messages_are_refused_and_the_server_carries_on() {
    let server = Server::start().await;
    let mut c = server.worker().await;
    let w = register(&mut c, "w").await;
    let lease = lease_one(&mut c, &w).await;
    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(MAX_MESSAGE_BYTES + 1));
    let err = c
        .report_result(report(&w, &lease.trial_id, lease.attempt, huge))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("too large"), "{err:?}");
    // The same connection still works, and the lease is untouched.
    let ack = c
        .report_result(report(&w, &lease.trial_id, lease.attempt, result_json(0.5)))
        .await
        .unwrap()
        .into_inner();
    assert!(ack.accepted, "{}", ack.reason);
    server.stop().await;
}

#[tokio::test]
async fn reports_on_unknown_or_foreign_leases_are_ignored_and_a_result_counts_once() {
    let server = Server::start().await;
    let mut c = server.worker().await;
    let owner = register(&mut c, "owner").await;
    let thief = register(&mut c, "thief").await;
    let lease = lease_one(&mut c, &owner).await;
    let (trial, attempt) = (lease.trial_id.clone(), lease.attempt);

    // (who, trial, attempt, expected reason) for results that must not count.
    let refused = [
        (
            thief.as_str(),
            trial.as_str(),
            attempt,
            "not leased to this worker",
        ),
        (
            owner.as_str(),
            trial.as_str(),
            attempt + 1,
            "not leased to this worker",
        ),
        (owner.as_str(), "0123456789abcdef", 1, "unknown trial"),
    ];
    for (who, t, a, reason) in refused {
        let ack = c
            .report_result(report(who, t, a, result_json(0.9)))
            .await
            .unwrap()
            .into_inner();
        assert!(
            !ack.accepted && ack.reason.contains(reason),
            "{who} {t} {a}: {ack:?}"
        );
        let progress = c
            .report_progress(pb::ProgressReport {
                worker_id: who.into(),
                lease: Some(pb::LeaseRef {
                    trial_id: t.into(),
                    attempt: a,
                }),
                metrics: Some(pb::EpochMetrics {
                    epoch: 1,
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!progress.accepted, "{who} {t} {a}: {progress:?}");
    }
    // The thief's heartbeat claiming the lease is told to stop it.
    let hb = c
        .heartbeat(pb::HeartbeatRequest {
            worker_id: thief.clone(),
            running: vec![pb::LeaseRef {
                trial_id: trial.clone(),
                attempt,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hb.cancel.len(), 1);

    // The owner's result counts; sending it again does not count twice.
    let json = result_json(0.42);
    for (n, expect) in [(1, true), (2, false)] {
        let ack = c
            .report_result(report(&owner, &trial, attempt, json.clone()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ack.accepted, expect, "report {n}: {ack:?}");
    }
    {
        let s = server.handle.lock();
        match &s.core.trial(&trial).unwrap().state {
            TrialState::Finished { worker, result, .. } => {
                assert_eq!(worker, &owner);
                assert_eq!(result.best_val_accuracy, Some(0.42));
            }
            other => panic!("{other:?}"),
        }
    }
    let stored = server.handle.store().load_trials().unwrap();
    let finished: Vec<_> = stored
        .iter()
        .filter(|t| matches!(t.state, TrialState::Finished { .. }))
        .collect();
    assert_eq!(finished.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_invalid_argument_or_not_found() {
    let server = Server::start().await;
    let mut c = server.worker().await;
    let w = register(&mut c, "w").await;
    let lease = lease_one(&mut c, &w).await;

    let err = c
        .report_result(report(
            &w,
            &lease.trial_id,
            lease.attempt,
            "{not json".into(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("result_json"), "{err:?}");

    let mut no_lease = report(&w, "", 0, result_json(0.1));
    no_lease.lease = None;
    let err = c.report_result(no_lease).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("missing lease"), "{err:?}");

    let err = c
        .register(pb::RegisterRequest {
            name: "w".into(),
            device: 7,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("device"), "{err:?}");

    let err = c
        .lease(pb::LeaseRequest {
            worker_id: "nobody-9".into(),
            free_slots: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("register again"), "{err:?}");
    let err = c
        .heartbeat(pb::HeartbeatRequest {
            worker_id: "nobody-9".into(),
            running: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Another worker cannot take over a live id by naming it.
    let other = c
        .register(pb::RegisterRequest {
            name: "impostor".into(),
            device: pb::DeviceKind::Cpu as i32,
            resume_worker_id: w.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .worker_id;
    assert_ne!(other, w);

    // Nothing above changed the lease.
    let ack = c
        .report_result(report(&w, &lease.trial_id, lease.attempt, result_json(0.3)))
        .await
        .unwrap()
        .into_inner();
    assert!(ack.accepted, "{ack:?}");
    server.stop().await;
}
