//! Bad gRPC input against a real in-process server on 127.0.0.1:0: missing and wrong tokens,
//! oversized messages, unknown workers and trials, a worker reporting on another worker's
//! lease, duplicate and malformed reports. Each must get a clear status and change nothing.

use coordinator::api::server::{serve, Tokens, MAX_MESSAGE_BYTES};
use coordinator::app::Handle;
use coordinator::sched::core::{Config, TrialState};
use std::path::Path;
use sweep_proto::pb::{self, admin_client::AdminClient, coordinator_client::CoordinatorClient};
use sweep_proto::{TrialResult, TrialStatus};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request};

const TOKEN: &str = "grpc-test-token";
const ADMIN: &str = "grpc-admin-token";

/// Adds (or leaves out) the authorization header.
type AddAuth = Box<dyn FnMut(Request<()>) -> Result<Request<()>, tonic::Status> + Send>;
type Client = CoordinatorClient<tonic::service::interceptor::InterceptedService<Channel, AddAuth>>;
type AdminC = AdminClient<tonic::service::interceptor::InterceptedService<Channel, AddAuth>>;

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
        Server::on(
            tempfile::tempdir().unwrap(),
            Some("name = \"g\"\n[grid]\nseed = [1, 2]\n"),
        )
        .await
    }

    /// A coordinator on `dir`'s database (kept across restarts), submitting `sweep` first.
    async fn on(dir: tempfile::TempDir, sweep: Option<&str>) -> Server {
        let handle = Handle::open(&dir.path().join("g.db"), Config::default()).unwrap();
        if let Some(text) = sweep {
            let sweep = coordinator::plan::parse(text, Path::new("g.toml")).unwrap();
            handle.submit(&sweep, false).unwrap();
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let h = handle.clone();
        let task = tokio::spawn(async move {
            let tokens = Tokens {
                worker: TOKEN.into(),
                admin: Some(ADMIN.into()),
            };
            serve(h, listener, &tokens, None, async {
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

    /// A channel to the server and an interceptor sending `authorization: <header>` (or
    /// nothing).
    async fn connect(&self, header: Option<&str>) -> (Channel, AddAuth) {
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
        (channel, add)
    }

    /// A worker-API client sending `authorization: <header>` (or nothing).
    async fn client(&self, header: Option<&str>) -> Client {
        let (channel, add) = self.connect(header).await;
        CoordinatorClient::with_interceptor(channel, add)
    }

    async fn worker(&self) -> Client {
        self.client(Some(&format!("Bearer {TOKEN}"))).await
    }

    /// An `Admin` client with the admin token.
    async fn admin(&self) -> AdminC {
        self.admin_as(ADMIN).await
    }

    /// An `Admin` client sending `token`.
    async fn admin_as(&self, token: &str) -> AdminC {
        let (channel, add) = self.connect(Some(&format!("Bearer {token}"))).await;
        AdminClient::with_interceptor(channel, add)
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let _ = (&mut self.task).await;
    }

    /// Stops the server and hands back its directory, database included.
    async fn stop_keeping_data(mut self) -> tempfile::TempDir {
        let _ = self.stop.take().unwrap().send(());
        let _ = (&mut self.task).await;
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().unwrap());
        drop(self);
        dir
    }
}

async fn register(c: &mut Client, name: &str) -> String {
    register_slots(c, name, 1).await
}

async fn register_slots(c: &mut Client, name: &str, slots: u32) -> String {
    c.register(pb::RegisterRequest {
        name: name.into(),
        device: pb::DeviceKind::Cpu as i32,
        slots,
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

/// A coordinator with sweep `toml` submitted, and a worker `w` holding its first lease.
async fn leased(toml: &str) -> (Server, Client, String, pb::Lease) {
    let server = Server::on(tempfile::tempdir().unwrap(), Some(toml)).await;
    let mut c = server.worker().await;
    let w = register(&mut c, "w").await;
    let lease = lease_one(&mut c, &w).await;
    (server, c, w, lease)
}

/// A valid completed result whose best validation accuracy is `acc`.
fn result_msg(acc: f64) -> pb::TrialResult {
    pb::TrialResult::from(
        &TrialResult::builder()
            .test_accuracy(0.5)
            .best_val_accuracy(acc)
            .images(1, 0)
            .parameters(1)
            .seconds(1.0)
            .build(),
    )
}

fn report(worker: &str, trial: &str, attempt: u32, result: pb::TrialResult) -> pb::ResultReport {
    pb::ResultReport {
        worker_id: worker.into(),
        lease: Some(pb::LeaseRef {
            trial_id: trial.into(),
            attempt,
        }),
        result: Some(result),
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
    let mut huge = result_msg(0.5);
    huge.notes = vec!["x".repeat(MAX_MESSAGE_BYTES + 1)];
    let err = c
        .report_result(report(&w, &lease.trial_id, lease.attempt, huge))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("too large"), "{err:?}");
    // The same connection still works, and the lease is untouched.
    let ack = c
        .report_result(report(&w, &lease.trial_id, lease.attempt, result_msg(0.5)))
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
            .report_result(report(who, t, a, result_msg(0.9)))
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

    // The owner's result counts; sending it again (its first answer was lost) is
    // acknowledged as stored without counting twice; a different result for the same attempt
    // is refused.
    let result = result_msg(0.42);
    for n in 1..=2 {
        let ack = c
            .report_result(report(&owner, &trial, attempt, result.clone()))
            .await
            .unwrap()
            .into_inner();
        assert!(ack.accepted, "report {n}: {ack:?}");
        assert_eq!(ack.reason.contains("already stored"), n == 2, "{ack:?}");
    }
    let ack = c
        .report_result(report(&owner, &trial, attempt, result_msg(0.43)))
        .await
        .unwrap()
        .into_inner();
    assert!(!ack.accepted, "{ack:?}");
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

    let mut no_status = result_msg(0.1);
    no_status.status = 0;
    let err = c
        .report_result(report(&w, &lease.trial_id, lease.attempt, no_status))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("result.status"), "{err:?}");
    let mut no_result = report(&w, &lease.trial_id, lease.attempt, result_msg(0.1));
    no_result.result = None;
    let err = c.report_result(no_result).await.unwrap_err();
    assert!(err.message().contains("missing result"), "{err:?}");

    let mut no_lease = report(&w, "", 0, result_msg(0.1));
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

    // Another worker cannot take over a live id by naming it, even with the same name.
    for name in ["impostor", "w"] {
        let other = c
            .register(pb::RegisterRequest {
                name: name.into(),
                device: pb::DeviceKind::Cpu as i32,
                resume_worker_id: w.clone(),
                resume_secret: "guess".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .worker_id;
        assert_ne!(other, w);
    }

    // Nothing above changed the lease.
    let ack = c
        .report_result(report(&w, &lease.trial_id, lease.attempt, result_msg(0.3)))
        .await
        .unwrap()
        .into_inner();
    assert!(ack.accepted, "{ack:?}");
    server.stop().await;
}

#[tokio::test]
async fn names_and_slots_are_bounded_and_ids_unguessable() {
    let server = Server::start().await;
    let mut c = server.worker().await;
    for (name, needle) in [
        ("x".repeat(1 << 20), "over the limit of 64"),
        ("evil\n2026-01-01 INFO forged".to_string(), "is not allowed"),
        ("a b".to_string(), "is not allowed"),
    ] {
        let err = c
            .register(pb::RegisterRequest {
                name: name.clone(),
                device: pb::DeviceKind::Cpu as i32,
                slots: 1,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message().contains(needle) && err.message().len() < 200,
            "{err:?}"
        );
    }
    let err = c
        .register(pb::RegisterRequest {
            name: "w".into(),
            device: pb::DeviceKind::Cpu as i32,
            slots: 1_000_000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("slots"), "{err:?}");
    // Two workers of one host: different ids, each NAME-<16 hex digits>.
    let a = register(&mut c, "host").await;
    let b = register(&mut c, "host").await;
    assert_ne!(a, b);
    for id in [&a, &b] {
        let suffix = id.strip_prefix("host-").unwrap();
        assert!(
            suffix.len() == 16 && suffix.chars().all(|c| c.is_ascii_hexdigit()),
            "{id}"
        );
    }
    // A one-slot worker asking for every trial gets one.
    let leases = c
        .lease(pb::LeaseRequest {
            worker_id: a.clone(),
            free_slots: 35,
        })
        .await
        .unwrap()
        .into_inner()
        .leases;
    assert_eq!(leases.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn impossible_values_are_refused_naming_the_field_and_results_are_stored_bit_for_bit() {
    let server = Server::start().await;
    let mut c = server.worker().await;
    let w = register(&mut c, "w").await;
    let lease = lease_one(&mut c, &w).await;
    let at = |r: pb::TrialResult| report(&w, &lease.trial_id, lease.attempt, r);
    let mut cases = Vec::new();
    let mut r = result_msg(0.5);
    r.best_val_accuracy = Some(1.7);
    cases.push((r, "result.best_val_accuracy"));
    let mut r = result_msg(0.5);
    r.test.as_mut().unwrap().accuracy = 1e308;
    cases.push((r, "result.test.accuracy"));
    let mut r = result_msg(0.5);
    r.status = pb::TrialStatus::Failed as i32;
    r.reason = Some("oom".into());
    cases.push((r, "result.test"));
    let mut r = result_msg(0.5);
    r.epochs.push(pb::EpochMetrics {
        epoch: 1,
        train_loss: f64::NAN,
        ..Default::default()
    });
    cases.push((r, "result.epochs[0].train_loss"));
    for (r, field) in cases {
        let err = c.report_result(at(r)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().starts_with(field), "{field}: {err:?}");
    }
    let err = c
        .report_progress(pb::ProgressReport {
            worker_id: w.clone(),
            lease: Some(pb::LeaseRef {
                trial_id: lease.trial_id.clone(),
                attempt: lease.attempt,
            }),
            metrics: Some(pb::EpochMetrics {
                epoch: 1,
                train_accuracy: -0.5,
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("metrics.train_accuracy"), "{err:?}");

    // A value the coordinator's JSON parser used to re-round: stored and read back exactly.
    let exact = 0.11147540983606559f64;
    let mut r = result_msg(exact);
    r.seconds = 0.1 + 0.2;
    let ack = c.report_result(at(r)).await.unwrap().into_inner();
    assert!(ack.accepted, "{ack:?}");
    let stored = server.handle.store().load_trials().unwrap();
    let TrialState::Finished { result, .. } = &stored
        .iter()
        .find(|t| t.id == lease.trial_id)
        .unwrap()
        .state
    else {
        panic!("not finished")
    };
    assert_eq!(
        result.best_val_accuracy.map(f64::to_bits),
        Some(exact.to_bits())
    );
    assert_eq!(result.seconds.to_bits(), (0.1f64 + 0.2).to_bits());
    server.stop().await;
}

#[tokio::test]
async fn a_lease_whose_reply_was_lost_goes_back_to_the_queue() {
    let server = Server::start().await;
    let mut c = server.worker().await;
    let w = register(&mut c, "w").await;
    // The worker never saw this lease: its heartbeats list nothing.
    let lease = lease_one(&mut c, &w).await;
    for _ in 0..2 {
        c.heartbeat(pb::HeartbeatRequest {
            worker_id: w.clone(),
            running: vec![],
        })
        .await
        .unwrap();
    }
    let state = server
        .handle
        .lock()
        .core
        .trial(&lease.trial_id)
        .unwrap()
        .state
        .clone();
    assert_eq!(state, TrialState::Queued { attempt: 2 });
    // And the database agrees, for the next coordinator.
    let stored = server.handle.store().load_trials().unwrap();
    let t = stored.iter().find(|t| t.id == lease.trial_id).unwrap();
    assert_eq!(
        (t.state.clone(), t.lost),
        (TrialState::Queued { attempt: 2 }, 1)
    );
    server.stop().await;
}

/// Cancel through the Admin API, while a trial is leased: once the cancel is acknowledged,
/// nothing of the sweep is leased again, the running lease is told to stop, and its late
/// result is refused; the watch stream saw each step in order.
#[tokio::test]
async fn an_acknowledged_cancel_stops_leases_and_results_and_watch_sees_it() {
    let s = Server::start().await;
    let mut admin = s.admin().await;
    let mut events = admin
        .watch(pb::WatchRequest { sweep: "g".into() })
        .await
        .unwrap()
        .into_inner();
    let mut c = s.worker().await;
    let w = register(&mut c, "w").await;
    let lease = lease_one(&mut c, &w).await;
    let cancelled = admin
        .cancel(pb::CancelRequest {
            sweep: "g".into(),
            trial_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .cancelled;
    assert_eq!(cancelled.len(), 2, "{cancelled:?}");
    let more = c
        .lease(pb::LeaseRequest {
            worker_id: w.clone(),
            free_slots: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .leases;
    assert!(more.is_empty(), "{more:?}");
    let beat = c
        .heartbeat(pb::HeartbeatRequest {
            worker_id: w.clone(),
            running: vec![pb::LeaseRef {
                trial_id: lease.trial_id.clone(),
                attempt: lease.attempt,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(beat.cancel.len(), 1, "the running lease is told to stop");
    let ack = c
        .report_result(report(&w, &lease.trial_id, lease.attempt, result_msg(0.5)))
        .await
        .unwrap()
        .into_inner();
    assert!(!ack.accepted, "a result after the cancel is refused");
    let kinds: Vec<i32> = {
        let mut k = Vec::new();
        for _ in 0..3 {
            k.push(events.message().await.unwrap().unwrap().kind);
        }
        k
    };
    assert_eq!(
        kinds,
        [
            pb::EventKind::Leased as i32,
            pb::EventKind::Cancelled as i32,
            pb::EventKind::Cancelled as i32
        ]
    );
    let status = admin
        .sweep_status(pb::SweepStatusRequest {
            sweep: "g".into(),
            curves: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(status
        .trials
        .iter()
        .all(|t| t.phase == pb::TrialPhase::Cancelled as i32));
    // The open stream ends when the server stops, instead of holding the shutdown.
    tokio::time::timeout(std::time::Duration::from_secs(10), s.stop())
        .await
        .expect("the server stops with a watch open");
}

/// The Admin API checks what it is given: a bad sweep file is refused with its position and
/// stores nothing; unknown sweeps and trials are NOT_FOUND; the worker token is refused.
#[tokio::test]
async fn admin_calls_check_their_input_and_role() {
    let s = Server::start().await;
    let mut admin = s.admin().await;
    let err = admin
        .submit_sweep(pb::SubmitSweepRequest {
            file_name: "lab/bad.toml".into(),
            sweep_toml: "name = \"bad\"\n[grid]\nlr = [\"fast\"]\n".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("lab/bad.toml:3"),
        "{}",
        err.message()
    );
    let list = admin
        .list_sweeps(pb::ListSweepsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.sweeps.len(), 1, "only `g`: {list:?}");
    let err = admin
        .sweep_status(pb::SweepStatusRequest {
            sweep: "nope".into(),
            curves: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = admin
        .cancel(pb::CancelRequest {
            sweep: "g".into(),
            trial_id: "0123456789abcdef".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let big = "#".repeat(2 * 1024 * 1024);
    let err = admin
        .submit_sweep(pb::SubmitSweepRequest {
            file_name: "big.toml".into(),
            sweep_toml: big,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::InvalidArgument | Code::OutOfRange),
        "{err:?}"
    );
    // Submitting over gRPC queues the trials for workers like a local submit.
    let r = admin
        .submit_sweep(pb::SubmitSweepRequest {
            file_name: "two.toml".into(),
            sweep_toml: "name = \"two\"\n[grid]\nseed = [7, 8, 9]\n".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.name.as_str(), r.trials, r.reused), ("two", 3, 0));
    assert_eq!(s.handle.lock().core.trials().count(), 5);
    // A worker's token cannot administer.
    let mut as_worker = s.admin_as(TOKEN).await;
    let err = as_worker
        .list_sweeps(pb::ListSweepsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    s.stop().await;
}

/// Pollers share one view for half a second; a change made here (cancel) shows at once.
#[tokio::test]
async fn views_are_shared_between_polls_and_rebuilt_after_a_change() {
    let s = Server::start().await;
    let a = s.handle.sweep_view("g", false).unwrap().unwrap();
    let b = s.handle.sweep_view("g", false).unwrap().unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &b), "one build for both polls");
    assert_eq!(a.sweep.counts.queued, 2);
    s.handle.cancel("g").unwrap();
    let c = s.handle.sweep_view("g", false).unwrap().unwrap();
    assert_eq!(c.sweep.counts.cancelled, 2, "the cancel shows at once");
    assert!(c.sweep.cancelled);
    tokio::time::sleep(coordinator::app::VIEW_MAX_AGE).await;
    let d = s.handle.sweep_view("g", false).unwrap().unwrap();
    assert!(!std::sync::Arc::ptr_eq(&c, &d), "rebuilt once stale");
    // A rerun, and a one-trial cancel, show at once too.
    assert_eq!(s.handle.rerun("g").unwrap().len(), 2);
    let e = s.handle.sweep_view("g", false).unwrap().unwrap();
    assert_eq!(e.sweep.counts.queued, 2);
    assert!(!e.sweep.cancelled, "the sweep is active again");
    let one = e.trials[0].id.clone();
    assert_eq!(s.handle.cancel_trial(&one).unwrap(), [one]);
    let f = s.handle.sweep_view("g", false).unwrap().unwrap();
    assert_eq!((f.sweep.counts.queued, f.sweep.counts.cancelled), (1, 1));
    s.stop().await;
}

/// A watch on a sweep follows it when it is submitted again with more trials.
#[tokio::test]
async fn a_watch_follows_trials_added_by_a_resubmit() {
    let s = Server::start().await;
    let mut admin = s.admin().await;
    let mut events = admin
        .watch(pb::WatchRequest { sweep: "g".into() })
        .await
        .unwrap()
        .into_inner();
    let r = admin
        .submit_sweep(pb::SubmitSweepRequest {
            file_name: "g.toml".into(),
            sweep_toml: "name = \"g\"\n[grid]\nseed = [3]\n".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.trials, r.dropped_queued), (1, 2));
    let first = events.message().await.unwrap().unwrap();
    assert_eq!(first.kind, pb::EventKind::Submitted as i32);
    // Only the new trial (seed 3) belongs to `g` now: the two the file no longer lists were
    // dropped, and its lease is the one seen.
    let mut c = s.worker().await;
    let w = c
        .register(pb::RegisterRequest {
            name: "w".into(),
            device: pb::DeviceKind::Cpu as i32,
            slots: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .worker_id;
    let leases = c
        .lease(pb::LeaseRequest {
            worker_id: w,
            free_slots: 3,
        })
        .await
        .unwrap()
        .into_inner()
        .leases;
    assert_eq!(leases.len(), 1);
    let e = tokio::time::timeout(std::time::Duration::from_secs(5), events.message())
        .await
        .expect("an event")
        .unwrap()
        .unwrap();
    let seed3 = leases
        .iter()
        .find(|l| l.spec_toml.contains("seed = 3"))
        .expect("seed 3 leased");
    assert_eq!(
        (e.kind, e.trial_id.as_str()),
        (pb::EventKind::Leased as i32, seed3.trial_id.as_str()),
        "the first lease event is the new trial's, not the old ones'"
    );
    s.stop().await;
}

fn epoch_msg(epoch: u32, val_accuracy: f64) -> pb::EpochMetrics {
    pb::EpochMetrics {
        epoch,
        train_loss: 1.0,
        train_accuracy: 0.5,
        val_loss: Some(1.0),
        val_accuracy: Some(val_accuracy),
        lr: 0.001,
        seconds: 1.0,
        images_per_sec: 10.0,
        ..Default::default()
    }
}

fn progress(worker: &str, lease: &pb::Lease, m: pb::EpochMetrics) -> pb::ProgressReport {
    pb::ProgressReport {
        worker_id: worker.into(),
        lease: Some(pb::LeaseRef {
            trial_id: lease.trial_id.clone(),
            attempt: lease.attempt,
        }),
        metrics: Some(m),
    }
}

/// ASHA through the protocol: leases say the trial is judged, the progress answer says stop
/// (again, if the worker trained on), a STOPPED result is stored with its epochs, and a
/// restarted coordinator judges new trials against the results it stored before.
#[tokio::test]
async fn early_stopping_is_answered_on_progress_and_survives_a_restart() {
    let sweep =
        "name = \"e\"\n[defaults]\nepochs = 9\nvalidation_split = 0.1\n[grid]\nseed = [1, 2, 3]\n\
                 [early_stopping]\nmethod = \"asha\"\ngrace_epochs = 1\nreduction_factor = 3\n";
    let server = Server::on(tempfile::tempdir().unwrap(), Some(sweep)).await;
    let mut c = server.worker().await;
    let w = register(&mut c, "w").await;
    let first = lease_one(&mut c, &w).await;
    assert!(first.early_stopping, "the lease says the trial is judged");
    let ack = c
        .report_progress(progress(&w, &first, epoch_msg(1, 0.9)))
        .await
        .unwrap()
        .into_inner();
    assert!(
        ack.accepted && !ack.stop,
        "the first at the rung goes on: {ack:?}"
    );
    // A worker may also end a trial as stopped; the result keeps its epochs.
    let mut stopped = result_msg(0.9);
    stopped.status = pb::TrialStatus::Stopped as i32;
    stopped.reason = Some("stopped by hand".into());
    stopped.epochs = vec![epoch_msg(1, 0.9)];
    let ack = c
        .report_result(report(&w, &first.trial_id, first.attempt, stopped.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(ack.accepted, "{ack:?}");
    // Without its epochs a stopped result is refused, naming the field.
    stopped.epochs.clear();
    let err = c
        .report_result(report(&w, &first.trial_id, first.attempt, stopped))
        .await
        .unwrap_err();
    assert!(err.message().contains("epochs"), "{err:?}");

    let dir = server.stop_keeping_data().await;
    let server = Server::on(dir, None).await;
    let mut c = server.worker().await;
    let w = register(&mut c, "w2").await;
    let second = lease_one(&mut c, &w).await;
    assert!(second.early_stopping);
    let ack = c
        .report_progress(progress(&w, &second, epoch_msg(1, 0.5)))
        .await
        .unwrap()
        .into_inner();
    assert!(
        ack.accepted && ack.stop,
        "behind the stored trial at the rung: {ack:?}"
    );
    assert!(
        ack.reason.contains("ASHA rung at epoch 1"),
        "{}",
        ack.reason
    );
    // The answer was lost and the worker trained on: it is told again.
    let ack = c
        .report_progress(progress(&w, &second, epoch_msg(2, 0.95)))
        .await
        .unwrap()
        .into_inner();
    assert!(ack.stop, "{ack:?}");
    let stored = server
        .handle
        .lock()
        .core
        .trial(&first.trial_id)
        .map(|t| t.state.clone());
    match stored {
        Some(TrialState::Finished { result, .. }) => {
            assert_eq!(result.status, TrialStatus::Stopped);
            assert_eq!(result.epochs.len(), 1);
        }
        other => panic!("{other:?}"),
    }
    // The same trials in a sweep without early stopping: not judged any more. The stopped
    // trial is sweep e's too, so submitting this one does not reopen it (issue 28); with
    // `rerun` it trains again in full.
    // (Named to come before "e": a restart replays sweeps in submission order, not by name.)
    let plain = "name = \"a-plain\"\n[defaults]\nepochs = 9\nvalidation_split = 0.1\n[grid]\nseed = [1, 2, 3]\n";
    let plain = coordinator::plan::parse(plain, Path::new("plain.toml")).unwrap();
    let kept = server.handle.submit(&plain, false).unwrap();
    assert_eq!((kept.stale, kept.kept_shared), (0, 1), "{kept:?}");
    let state = server
        .handle
        .lock()
        .core
        .trial(&first.trial_id)
        .map(|t| t.state.clone());
    assert!(
        matches!(state, Some(TrialState::Finished { .. })),
        "{state:?}"
    );
    server.handle.submit(&plain, true).unwrap();
    let state = server
        .handle
        .lock()
        .core
        .trial(&first.trial_id)
        .map(|t| t.state.clone());
    assert!(
        matches!(state, Some(TrialState::Queued { attempt: 2 })),
        "{state:?}"
    );
    let w3 = register(&mut c, "w3").await;
    let next = lease_one(&mut c, &w3).await;
    assert!(!next.early_stopping, "{next:?}");
    let ack = c
        .report_progress(progress(&w3, &next, epoch_msg(1, 0.0)))
        .await
        .unwrap()
        .into_inner();
    assert!(!ack.stop, "{ack:?}");
    // Still so after a restart.
    let dir = server.stop_keeping_data().await;
    let server = Server::on(dir, None).await;
    let mut c = server.worker().await;
    let w4 = register(&mut c, "w4").await;
    let again = lease_one(&mut c, &w4).await;
    assert!(!again.early_stopping, "{again:?}");
    server.stop().await;
}

fn chunks(
    worker: &str,
    lease: &pb::Lease,
    kind: pb::ArtifactKind,
    epoch: u32,
    bytes: &[u8],
) -> Vec<pb::CheckpointChunk> {
    let header = pb::CheckpointChunk {
        worker_id: worker.into(),
        lease: Some(pb::LeaseRef {
            trial_id: lease.trial_id.clone(),
            attempt: lease.attempt,
        }),
        epoch,
        size: bytes.len() as u64,
        sha256: coordinator::plan::sha256_hex(bytes),
        kind: kind as i32,
        ..Default::default()
    };
    // Small chunks, so that a test can damage one in the middle.
    sweep_proto::convert::artifact_chunks(bytes, 1000, header)
}

/// Artifacts over the protocol: a checkpoint whose bytes do not match the announced checksum
/// is refused and not kept; a good one is offered to the next attempt; a model sent before
/// the result is kept and exported through the Admin API (the best-ranked trial's by
/// default), byte for byte.
#[tokio::test]
async fn checkpoints_and_models_travel_checked_and_the_best_model_is_exported() {
    let (server, mut c, w, lease) =
        leased("name = \"m\"\nkeep_models = \"all\"\n[grid]\nseed = [1, 2]\n").await;
    assert!(lease.keep_model && lease.checkpoint_epoch == 0, "{lease:?}");

    let mut bad = chunks(&w, &lease, pb::ArtifactKind::Checkpoint, 1, &[7u8; 3000]);
    bad[1].data[5] ^= 1;
    let err = c
        .save_checkpoint(tokio_stream::iter(bad))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    let good = chunks(&w, &lease, pb::ArtifactKind::Checkpoint, 1, &[7u8; 3000]);
    assert!(
        c.save_checkpoint(tokio_stream::iter(good))
            .await
            .unwrap()
            .into_inner()
            .accepted
    );

    let model: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
    let sent = chunks(&w, &lease, pb::ArtifactKind::Model, 10, &model);
    assert!(
        c.save_checkpoint(tokio_stream::iter(sent))
            .await
            .unwrap()
            .into_inner()
            .accepted
    );
    c.report_result(report(&w, &lease.trial_id, lease.attempt, result_msg(0.9)))
        .await
        .unwrap();

    let mut admin = server.admin().await;
    for trial in ["", lease.trial_id.as_str()] {
        let mut stream = admin
            .export_model(pb::ExportModelRequest {
                sweep: "m".into(),
                trial_id: trial.into(),
            })
            .await
            .unwrap()
            .into_inner();
        let mut got = Vec::new();
        let mut first = None;
        while let Some(chunk) = stream.message().await.unwrap() {
            first.get_or_insert(chunk.clone());
            got.extend(chunk.data);
        }
        let first = first.unwrap();
        assert_eq!(first.lease.unwrap().trial_id, lease.trial_id);
        assert_eq!(first.sha256, coordinator::plan::sha256_hex(&model));
        assert_eq!(got, model);
    }
    let err = admin
        .export_model(pb::ExportModelRequest {
            sweep: "m".into(),
            trial_id: "0123456789abcdef".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    server.stop().await;
}

/// Numbers a worker sends are checked against the leased trial (2 epochs), and refused with
/// INVALID_ARGUMENT naming the field: a checkpoint of epoch 4,000,000,000, a result whose
/// epochs are [1, 1, 1], progress for epoch 10,000, an unknown artifact kind. Nothing is
/// stored, and the trial's real reports still count afterwards. A stale upload's answer
/// names its own attempt.
#[tokio::test]
async fn numbers_that_do_not_fit_the_trial_are_refused_naming_the_field() {
    let (server, mut c, w, lease) =
        leased("name = \"n\"\n[defaults]\nepochs = 2\n[grid]\nseed = [1, 2]\n").await;
    let lease_ref = || {
        Some(pb::LeaseRef {
            trial_id: lease.trial_id.clone(),
            attempt: lease.attempt,
        })
    };
    let refused = |e: tonic::Status, field: &str| {
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().starts_with(field), "{field}: {}", e.message());
    };

    let far = chunks(
        &w,
        &lease,
        pb::ArtifactKind::Checkpoint,
        4_000_000_000,
        b"x",
    );
    refused(
        c.save_checkpoint(tokio_stream::iter(far))
            .await
            .unwrap_err(),
        "epoch: 4000000000 is not an epoch of this trial (1 to 2)",
    );
    let mut odd = chunks(&w, &lease, pb::ArtifactKind::Checkpoint, 1, b"x");
    odd[0].kind = 7;
    refused(
        c.save_checkpoint(tokio_stream::iter(odd))
            .await
            .unwrap_err(),
        "kind: 7 is not an artifact kind",
    );
    let epoch = |n: u32| sweep_proto::EpochMetrics::from(epoch_msg(n, 0.5));
    refused(
        c.report_progress(pb::ProgressReport {
            worker_id: w.clone(),
            lease: lease_ref(),
            metrics: Some(epoch_msg(10_000, 0.5)),
        })
        .await
        .unwrap_err(),
        "metrics.epoch: 10000 is not an epoch of this trial (1 to 2)",
    );
    let repeated = TrialResult::builder()
        .test_accuracy(0.5)
        .epochs(vec![epoch(1), epoch(1), epoch(1)])
        .images(1, 0)
        .parameters(1)
        .seconds(1.0)
        .build();
    refused(
        c.report_result(report(
            &w,
            &lease.trial_id,
            lease.attempt,
            pb::TrialResult::from(&repeated),
        ))
        .await
        .unwrap_err(),
        "result.epochs[1].epoch: 1 comes after epoch 1",
    );
    // None of it was stored: the checkpoint slot is empty and the real reports count.
    assert!(matches!(
        server.handle.lock().core.trial(&lease.trial_id).unwrap().state,
        TrialState::Running { ref epochs, .. } if epochs.is_empty()
    ));
    let good = chunks(&w, &lease, pb::ArtifactKind::Checkpoint, 2, b"x");
    assert!(
        c.save_checkpoint(tokio_stream::iter(good))
            .await
            .unwrap()
            .into_inner()
            .accepted
    );
    let ack = c
        .report_result(report(&w, &lease.trial_id, lease.attempt, result_msg(0.5)))
        .await
        .unwrap()
        .into_inner();
    assert!(ack.accepted, "{ack:?}");
    // Too late now: the answer names the attempt the upload was for.
    let late = chunks(&w, &lease, pb::ArtifactKind::Checkpoint, 2, b"x");
    let ack = c
        .save_checkpoint(tokio_stream::iter(late))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !ack.accepted && ack.reason.contains(&format!("attempt {}", lease.attempt)),
        "{ack:?}"
    );
    server.stop().await;
}

/// Submits sweep `toml` through the Admin API, as `e.toml`.
async fn submit_text(server: &Server, toml: String) -> pb::SubmitSweepResponse {
    server
        .admin()
        .await
        .submit_sweep(pb::SubmitSweepRequest {
            file_name: "e.toml".into(),
            sweep_toml: toml,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// Issue 28: a 40-trial sweep edited down to 4 and submitted again. The 34 queued trials it no
/// longer lists are removed (no worker gets them, before or after a restart), the running one
/// is stopped through its worker's heartbeat, the finished one is kept for reuse, and the
/// answer says so.
#[tokio::test]
async fn an_edited_sweep_drops_what_it_no_longer_lists() {
    let seeds = |r: std::ops::RangeInclusive<u32>| {
        let list: Vec<String> = r.map(|s| s.to_string()).collect();
        format!("name = \"e\"\n[grid]\nseed = [{}]\n", list.join(", "))
    };
    let server = Server::on(tempfile::tempdir().unwrap(), Some(&seeds(1..=40))).await;
    let mut c = server.worker().await;
    let w = register(&mut c, "w").await;
    let done = lease_one(&mut c, &w).await;
    c.report_result(report(&w, &done.trial_id, 1, result_msg(0.5)))
        .await
        .unwrap();
    let running = lease_one(&mut c, &w).await;
    // The edited file lists neither of those two, nor 34 more.
    let r = submit_text(&server, seeds(3..=6)).await;
    assert_eq!(
        (r.trials, r.dropped_queued, r.dropped_running),
        (4, 34, 1),
        "{r:?}"
    );
    let beat = c
        .heartbeat(pb::HeartbeatRequest {
            worker_id: w.clone(),
            running: vec![pb::LeaseRef {
                trial_id: running.trial_id.clone(),
                attempt: 1,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(beat.cancel.len(), 1, "the dropped running trial is stopped");
    let leasable = |h: &Handle| {
        h.lock()
            .core
            .trials()
            .filter(|(_, t)| matches!(t.state, TrialState::Queued { .. }))
            .count()
    };
    assert_eq!(leasable(&server.handle), 4);
    let dir = server.stop_keeping_data().await;
    let server = Server::on(dir, None).await;
    assert_eq!(leasable(&server.handle), 4, "a restart brings none back");
    let h = &server.handle;
    assert!(matches!(
        h.lock().core.trial(&done.trial_id).unwrap().state,
        TrialState::Finished { .. }
    ));
    // Listing the finished one again reuses its result.
    let r = submit_text(&server, seeds(1..=6)).await;
    // (This test's result has no provenance, so it counts as another trainer's: stale.)
    assert_eq!(
        (r.reused + r.stale, r.dropped_queued, r.dropped_running),
        (1, 0, 0),
        "{r:?}"
    );
    server.stop().await;
}

/// Issue 28's admin input. UploadModule refuses what cannot be a TorchScript module (random
/// bytes, a zip without code, an empty file); a sweep naming a module the coordinator lacks is
/// FAILED_PRECONDITION (not UNAVAILABLE, which clients retry); a 10 kB name or file name comes
/// back as a bounded message with the right code, not an HTTP/2 error.
#[tokio::test]
async fn admin_input_is_refused_with_the_right_code_and_a_bounded_message() {
    let server = Server::start().await;
    let mut admin = server.admin().await;
    let upload = |bytes: Vec<u8>| {
        let header = pb::CheckpointChunk {
            size: bytes.len() as u64,
            sha256: coordinator::plan::sha256_hex(&bytes),
            ..Default::default()
        };
        sweep_proto::convert::artifact_chunks(&bytes, 1000, header)
    };
    let mut zip_without_code = b"PK\x03\x04".to_vec();
    zip_without_code.extend_from_slice(b"archive/data.pkl....PK\x05\x06");
    for (bytes, why) in [
        (
            (0..3000u32).map(|i| (i * 7 % 251) as u8).collect(),
            "not a zip archive",
        ),
        (zip_without_code, "no data.pkl and code/"),
        (Vec::new(), "not a zip archive"),
    ] {
        let e = admin
            .upload_module(tokio_stream::iter(upload(bytes)))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(why), "{why}: {}", e.message());
    }
    let hash = "0123456789abcdef0123456789abcdef";
    let e = admin
        .submit_sweep(pb::SubmitSweepRequest {
            file_name: "m.toml".into(),
            sweep_toml: format!("name = \"m\"\n[defaults]\nmodel = \"torchscript:{hash}\"\n"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("does not have"), "{}", e.message());
    let long = "x".repeat(10_000);
    let e = admin
        .sweep_status(pb::SweepStatusRequest {
            sweep: long.clone(),
            curves: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().len() < 1100, "{} bytes", e.message().len());
    let e = admin
        .submit_sweep(pb::SubmitSweepRequest {
            file_name: long,
            sweep_toml: "name = \"g\"\n".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().starts_with("file_name: 10000 bytes"),
        "{}",
        e.message()
    );
    server.stop().await;
}

/// Issue 28: the coordinator does not read an image folder a submitted sweep names (it could be
/// `/proc`): the submitter lists it and sends its fingerprint. Without one the sweep is refused,
/// even where the folder exists on the coordinator's machine; with one the trials train on it,
/// though it does not.
#[tokio::test]
async fn a_submitted_image_folder_is_not_read_by_the_coordinator() {
    let server = Server::on(tempfile::tempdir().unwrap(), None).await;
    let mut admin = server.admin().await;
    let here = tempfile::tempdir().unwrap();
    let images = here.path().join("images");
    cifar10::testdata::write_image_folder(&images, &["cat", "dog"], 2, 1, 8);
    let submit = |data: String, image_folder: &str| pb::SubmitSweepRequest {
        file_name: "/elsewhere/f.toml".into(),
        sweep_toml: format!("name = \"f\"\ndata = \"imagefolder:{data}\"\n[grid]\nseed = [1, 2]\n"),
        image_folder: image_folder.into(),
        ..Default::default()
    };
    for data in [images.display().to_string(), "/proc".into()] {
        let e = admin.submit_sweep(submit(data, "")).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(
            e.message().contains("/elsewhere/f.toml:2:8")
                && e.message().contains("coordinator submit"),
            "{}",
            e.message()
        );
    }
    let e = admin
        .submit_sweep(submit("pics".into(), "imagefolder:xyz"))
        .await
        .unwrap_err();
    assert!(e.message().starts_with("image_folder: "), "{}", e.message());
    let fp = "imagefolder:00000000000000ab";
    let ok = admin
        .submit_sweep(submit("pics".into(), fp))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.trials, 2);
    let mut c = server.worker().await;
    let w = register(&mut c, "w").await;
    let lease = lease_one(&mut c, &w).await;
    let spec = sweep_proto::TrialSpec::from_toml(&lease.spec_toml).unwrap();
    assert_eq!(spec.dataset.to_string(), fp, "{lease:?}");
    assert_eq!(lease.data_hint, "imagefolder:/elsewhere/pics");
    // A fingerprint for a sweep that names no folder is a client's mistake, said as such.
    let e = admin
        .submit_sweep(pb::SubmitSweepRequest {
            sweep_toml: "name = \"g\"\n".into(),
            image_folder: fp.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        e.message().contains("names no image folder"),
        "{}",
        e.message()
    );
    server.stop().await;
}

/// PBT over the protocol (issue 25): a population of 2 with one exploit step. Generation 0's
/// segments end at epoch 2 with their checkpoints; the tick makes generation 1, in which the
/// worse member starts from the better one's checkpoint (the bytes it sent, byte for byte)
/// with a change to the explored values from epoch 3, and the better one goes on from its own.
/// A restarted coordinator replays the same history and makes nothing twice.
#[tokio::test]
async fn a_population_exploits_the_better_members_checkpoint() {
    let pbt = "name = \"p\"\nsearch = \"pbt\"\nsearch_seed = 1\n[defaults]\nepochs = 4\nvalidation_split = 0.1\noptimizer = \"sgd\"\n[pbt]\npopulation = 2\ninterval_epochs = 2\nquantile = 0.5\n[pbt.mutations]\nlr = { min = 0.001, max = 0.1, log = true }\n";
    let server = Server::on(tempfile::tempdir().unwrap(), Some(pbt)).await;
    let mut c = server.worker().await;
    let w = register_slots(&mut c, "w", 2).await;
    let leases = c
        .lease(pb::LeaseRequest {
            worker_id: w.clone(),
            free_slots: 2,
        })
        .await
        .unwrap()
        .into_inner()
        .leases;
    assert_eq!(leases.len(), 2);
    let spec = |l: &pb::Lease| sweep_proto::TrialSpec::from_toml(&l.spec_toml).unwrap();
    // Member order is the sweep's: member 0 scores 0.3, member 1 scores 0.8.
    let members = server
        .handle
        .lock()
        .population("p")
        .unwrap()
        .segments
        .clone();
    let mut sent = Vec::new();
    for (m, score) in [(0usize, 0.3), (1, 0.8)] {
        let lease = leases
            .iter()
            .find(|l| l.trial_id == members[m].id.as_str())
            .unwrap();
        assert_eq!(spec(lease).stop_after, Some(2));
        let bytes = format!("checkpoint of member {m}").repeat(100).into_bytes();
        let ack = c
            .save_checkpoint(tokio_stream::iter(chunks(
                &w,
                lease,
                pb::ArtifactKind::Checkpoint,
                2,
                &bytes,
            )))
            .await
            .unwrap()
            .into_inner();
        assert!(ack.accepted, "{ack:?}");
        let mut r = result_msg(score);
        r.status = pb::TrialStatus::Stopped as i32;
        r.reason = Some("stop_after = 2".into());
        r.epochs = vec![epoch_msg(1, 0.1), epoch_msg(2, score)];
        let ack = c
            .report_result(report(&w, &lease.trial_id, lease.attempt, r))
            .await
            .unwrap()
            .into_inner();
        assert!(ack.accepted, "{ack:?}");
        sent.push(bytes);
    }
    let h = server.handle.clone();
    tokio::task::spawn_blocking(move || h.tick())
        .await
        .unwrap()
        .unwrap();
    let next = c
        .lease(pb::LeaseRequest {
            worker_id: w.clone(),
            free_slots: 2,
        })
        .await
        .unwrap()
        .into_inner()
        .leases;
    assert_eq!(next.len(), 2);
    let segments = server
        .handle
        .lock()
        .population("p")
        .unwrap()
        .segments
        .clone();
    assert_eq!(segments.len(), 4);
    for (m, parent) in [(0usize, 1usize), (1, 1)] {
        let seg = &segments[2 + m];
        let lease = next.iter().find(|l| l.trial_id == seg.id.as_str()).unwrap();
        assert_eq!(lease.checkpoint_epoch, 2, "member {m}");
        let mut stream = c
            .load_checkpoint(pb::LoadCheckpointRequest {
                worker_id: w.clone(),
                lease: Some(pb::LeaseRef {
                    trial_id: lease.trial_id.clone(),
                    attempt: lease.attempt,
                }),
            })
            .await
            .unwrap()
            .into_inner();
        let got = sweep_proto::convert::receive_artifact(&mut stream, 1 << 20)
            .await
            .unwrap();
        assert_eq!(
            got, sent[parent],
            "member {m} starts from member {parent}'s weights"
        );
        let s = spec(lease);
        assert_eq!(s.stop_after, None, "the last generation trains to the end");
        assert_eq!(s.changes.len(), usize::from(m == 0), "{s:?}");
    }
    assert!(matches!(
        segments[2].segment.start,
        coordinator::sched::pbt::Start::Exploit { parent: 1, .. }
    ));
    // Restarted: the same four segments, nothing left to make, nothing made twice.
    let dir = server.stop_keeping_data().await;
    let server = Server::on(dir, None).await;
    let h = server.handle.clone();
    tokio::task::spawn_blocking(move || h.tick())
        .await
        .unwrap()
        .unwrap();
    let again = server
        .handle
        .lock()
        .population("p")
        .unwrap()
        .segments
        .clone();
    let ids =
        |s: &[coordinator::app::pbt::Placed]| s.iter().map(|p| p.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&again), ids(&segments));
    assert_eq!(server.handle.lock().segments_left("p"), 0);
    server.stop().await;
}

/// A cancelled population makes no more generations; `rerun` queues its cancelled segments
/// again and it goes on, with every segment still to make.
#[tokio::test]
async fn a_cancelled_population_goes_on_when_rerun() {
    let pbt = "name = \"p\"\nsearch = \"pbt\"\n[defaults]\nepochs = 4\nvalidation_split = 0.1\n[pbt]\npopulation = 2\ninterval_epochs = 2\n[pbt.mutations]\nlr = { min = 0.001, max = 0.1, log = true }\n";
    let server = Server::on(tempfile::tempdir().unwrap(), Some(pbt)).await;
    let left = |s: &Server| s.handle.lock().segments_left("p");
    assert_eq!(left(&server), 2);
    assert_eq!(server.handle.cancel("p").unwrap().len(), 2);
    assert_eq!(left(&server), 0, "a cancelled population makes nothing");
    assert_eq!(server.handle.rerun("p").unwrap().len(), 2);
    assert_eq!(left(&server), 2, "rerun: it goes on");
    server.stop().await;
}
