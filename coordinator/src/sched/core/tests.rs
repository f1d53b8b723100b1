use super::*;
use sweep_proto::TrialSpec;

fn spec(device: DeviceRequest) -> TrialSpec {
    TrialSpec {
        device,
        ..TrialSpec::default()
    }
}

fn core_with(ids: &[(&str, DeviceRequest)]) -> Core {
    let mut core = Core::new(Config {
        heartbeat_timeout_ms: 1000,
        max_attempts: 3,
    });
    for (id, dev) in ids {
        core.add_trial(
            (*id).into(),
            spec(*dev),
            TrialState::Queued { attempt: 1 },
            false,
        );
    }
    core
}

fn result() -> TrialResult {
    TrialResult::builder()
        .images(1, 0)
        .parameters(1)
        .seconds(1.0)
        .build()
}

/// Registers a worker with a fixed secret, resuming `resume` if given.
fn reg(
    core: &mut Core,
    name: &str,
    device: DeviceKind,
    slots: u32,
    resume: Option<&str>,
    now_ms: u64,
) -> WorkerId {
    let w = NewWorker {
        name: name.into(),
        device,
        slots,
        nonce: 0,
        secret: "s".into(),
    };
    core.register(w, resume.map(|id| (id, "s")), now_ms).0.id
}

fn metrics(epoch: u32) -> EpochMetrics {
    EpochMetrics {
        epoch,
        train_loss: 1.0,
        train_accuracy: 0.5,
        val_loss: None,
        val_accuracy: None,
        train_binary_accuracy: None,
        val_binary_accuracy: None,
        lr: 0.1,
        seconds: 1.0,
        images_per_sec: 1.0,
    }
}

fn ids(grants: &[Grant]) -> Vec<&str> {
    grants.iter().map(|g| g.trial.as_str()).collect()
}

#[test]
fn leases_follow_queue_order_and_slots() {
    let mut core = core_with(&[
        ("a", DeviceRequest::Auto),
        ("b", DeviceRequest::Auto),
        ("c", DeviceRequest::Auto),
    ]);
    let w = reg(&mut core, "w", DeviceKind::Cpu, 2, None, 0);
    assert_eq!(ids(&core.lease(&w, 2, 0).unwrap()), vec!["a", "b"]);
    // Asking for more than its registered slots gets nothing while both are busy (a one-slot
    // worker once leased all 35 queued trials).
    assert!(core.lease(&w, 5, 0).unwrap().is_empty());
    core.finish(&w, "a", 1, result(), 1).unwrap();
    assert_eq!(ids(&core.lease(&w, 5, 1).unwrap()), vec!["c"]);
    assert_eq!(
        core.counts(&["a".into(), "b".into(), "c".into()]).running,
        2
    );
    // Slots are capped too.
    let big = reg(&mut core, "big", DeviceKind::Cpu, 100_000, None, 0);
    assert_eq!(
        core.workers().find(|(id, _)| **id == big).unwrap().1.slots,
        MAX_SLOTS
    );
}

#[test]
fn worker_ids_are_never_reused_and_resuming_needs_the_secret() {
    let mut core = core_with(&[("a", DeviceRequest::Auto)]);
    // Ids from the database's history are never given out again, even with the same nonce.
    core.remember_worker_ids(["host-0000000000000000".into()]);
    let a = reg(&mut core, "host", DeviceKind::Cpu, 1, None, 0);
    let b = reg(&mut core, "host", DeviceKind::Cpu, 1, None, 0);
    assert_eq!(a, "host-0000000000000001");
    assert_eq!(b, "host-0000000000000002");
    core.lease(&b, 1, 0).unwrap();
    // Same name, right id, wrong secret: a new id, and the lease stays b's.
    let thief = NewWorker {
        name: "host".into(),
        device: DeviceKind::Cpu,
        slots: 1,
        nonce: 7,
        secret: "t".into(),
    };
    let taken = core.register(thief.clone(), Some((&b, "wrong")), 10).0.id;
    assert_ne!(taken, b);
    assert!(matches!(
        core.finish(&taken, "a", 1, result(), 11),
        Err(Rejected::StaleLease { .. })
    ));
    // With the secret, b resumes.
    assert_eq!(core.register(thief, Some((&b, "s")), 12).0.id, b);
    core.finish(&b, "a", 1, result(), 13).unwrap();
}

#[test]
fn a_lease_missing_from_two_heartbeats_goes_back_to_the_queue() {
    let mut core = core_with(&[("a", DeviceRequest::Auto), ("b", DeviceRequest::Auto)]);
    let w = reg(&mut core, "w", DeviceKind::Cpu, 2, None, 0);
    core.lease(&w, 2, 0).unwrap(); // the reply carrying b is lost
    let running = [lease("a", 1)];
    let Beat { stop, lost } = core.heartbeat(&w, &running, 100).unwrap();
    assert!(stop.is_empty() && lost.is_empty(), "one heartbeat of grace");
    let lost = core.heartbeat(&w, &running, 200).unwrap().lost;
    assert_eq!(
        lost,
        vec![Requeued::Retry {
            trial: "b".into(),
            next_attempt: 2,
            lost: 1
        }]
    );
    assert_eq!(
        core.trial("b").unwrap().state,
        TrialState::Queued { attempt: 2 }
    );
    // A listed lease is never taken back, and a listed-again one resets its count.
    for t in [300, 400, 500] {
        assert!(core.heartbeat(&w, &running, t).unwrap().lost.is_empty());
    }
    assert!(matches!(
        core.trial("a").unwrap().state,
        TrialState::Running { .. }
    ));
}

#[test]
fn a_coordinator_that_was_not_running_does_not_expire_its_workers() {
    let mut core = core_with(&[("a", DeviceRequest::Auto)]);
    let w = reg(&mut core, "w", DeviceKind::Cpu, 1, None, 0);
    core.lease(&w, 1, 0).unwrap();
    core.tick(250);
    // Stopped (SIGSTOP) for 30 s: the next tick is late; the worker's queued heartbeat has not
    // been read yet. It is not lost.
    assert!(core.tick(30_250).is_empty());
    assert!(core.tick(30_500).is_empty());
    // But a worker that stays silent after the coordinator resumed is, one timeout later.
    let mut now = 30_500;
    while now < 31_500 {
        now += 250;
        if !core.tick(now).is_empty() {
            break;
        }
    }
    assert_eq!(now, 31_500, "expired exactly one timeout after the resume");
}

#[test]
fn an_identical_repeat_of_a_stored_result_is_acknowledged() {
    let mut core = core_with(&[("a", DeviceRequest::Auto)]);
    let w = reg(&mut core, "w", DeviceKind::Cpu, 1, None, 0);
    core.lease(&w, 1, 0).unwrap();
    assert_eq!(core.finish(&w, "a", 1, result(), 1), Ok(Finished::New));
    assert_eq!(
        core.finish(&w, "a", 1, result(), 2),
        Ok(Finished::AlreadyStored)
    );
    // Not from another worker, even one of the same name that re-registered under a new id
    // (a restart or a short cut keeps the id; this attempt was never the new one's).
    let again = reg(&mut core, "w", DeviceKind::Cpu, 1, None, 3);
    assert_eq!(
        core.finish(&again, "a", 1, result(), 4),
        Err(Rejected::StaleLease {
            trial: "a".into(),
            attempt: 1
        })
    );
    let mut other = result();
    other.seconds = 2.0;
    assert!(core.finish(&w, "a", 1, other, 5).is_err());
}

#[test]
fn cuda_trials_never_go_to_cpu_workers() {
    let mut core = core_with(&[
        ("gpu", DeviceRequest::Cuda),
        ("any", DeviceRequest::Auto),
        ("cpu", DeviceRequest::Cpu),
    ]);
    let cpu = reg(&mut core, "cpu", DeviceKind::Cpu, 3, None, 0);
    let gpu = reg(&mut core, "gpu", DeviceKind::Cuda, 1, None, 0);
    assert_eq!(ids(&core.lease(&cpu, 3, 0).unwrap()), vec!["any", "cpu"]);
    assert!(core.lease(&cpu, 3, 0).unwrap().is_empty());
    assert_eq!(ids(&core.lease(&gpu, 3, 0).unwrap()), vec!["gpu"]);
}

#[test]
fn results_only_from_the_current_attempt() {
    let mut core = core_with(&[("a", DeviceRequest::Auto)]);
    let w1 = reg(&mut core, "w1", DeviceKind::Cpu, 1, None, 0);
    let w2 = reg(&mut core, "w2", DeviceKind::Cpu, 1, None, 0);
    let g = core.lease(&w1, 1, 0).unwrap().remove(0);
    assert_eq!(g.attempt, 1);
    core.progress(&w1, "a", 1, metrics(1), 100).unwrap();
    // w1 goes silent; w2 keeps beating.
    core.heartbeat(&w2, &[], 1500).unwrap();
    let lost = core.tick(1500);
    assert_eq!(
        lost,
        vec![(
            w1.clone(),
            vec![Requeued::Retry {
                trial: "a".into(),
                next_attempt: 2,
                lost: 1,
            }]
        )]
    );
    let g2 = core.lease(&w2, 1, 1600).unwrap().remove(0);
    assert_eq!(g2.attempt, 2);
    // The lost attempt reports late: ignored, whoever sends it.
    assert_eq!(
        core.finish(&w1, "a", 1, result(), 1700),
        Err(Rejected::UnknownWorker(w1.clone()))
    );
    assert_eq!(
        core.finish(&w2, "a", 1, result(), 1700),
        Err(Rejected::StaleLease {
            trial: "a".into(),
            attempt: 1
        })
    );
    core.finish(&w2, "a", 2, result(), 1800).unwrap();
    // Counted once: a second, different report of the same attempt is refused.
    let mut other = result();
    other.seconds = 9.0;
    assert!(core.finish(&w2, "a", 2, other, 1900).is_err());
    assert!(matches!(
        core.trial("a").unwrap().state,
        TrialState::Finished { attempt: 2, .. }
    ));
}

#[test]
fn a_worker_cannot_report_on_another_workers_lease() {
    let mut core = core_with(&[("a", DeviceRequest::Auto)]);
    let w1 = reg(&mut core, "w1", DeviceKind::Cpu, 1, None, 0);
    let w2 = reg(&mut core, "w2", DeviceKind::Cpu, 1, None, 0);
    core.lease(&w1, 1, 0).unwrap();
    assert!(matches!(
        core.progress(&w2, "a", 1, metrics(1), 1),
        Err(Rejected::StaleLease { .. })
    ));
    assert!(matches!(
        core.finish(&w2, "a", 1, result(), 1),
        Err(Rejected::StaleLease { .. })
    ));
    assert_eq!(
        core.finish(&w2, "zzz", 1, result(), 1),
        Err(Rejected::UnknownTrial("zzz".into()))
    );
}

#[test]
fn lost_trials_go_to_the_front_and_fail_after_max_attempts() {
    let mut core = core_with(&[("a", DeviceRequest::Auto), ("b", DeviceRequest::Auto)]);
    let mut now = 0;
    for attempt in 1..=3 {
        let w = reg(
            &mut core,
            &format!("w{attempt}"),
            DeviceKind::Cpu,
            1,
            None,
            now,
        );
        let g = core.lease(&w, 1, now).unwrap();
        assert_eq!(
            (g[0].trial.as_str(), g[0].attempt),
            ("a", attempt),
            "re-queued at the front"
        );
        // Ticks every 250 ms, as the service does (a late tick would mean a paused coordinator).
        let lost = loop {
            now += 250;
            let lost = core.tick(now);
            if !lost.is_empty() {
                break lost;
            }
        };
        assert_eq!(lost.len(), 1);
        if attempt == 3 {
            assert!(
                matches!(&lost[0].1[0], Requeued::GaveUp { reason, .. } if reason.contains("heartbeats"))
            );
        }
    }
    match &core.trial("a").unwrap().state {
        TrialState::Failed { attempts, reason } => {
            assert_eq!(*attempts, 3);
            assert!(reason.contains("lost its worker 3 times"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let w = reg(&mut core, "w", DeviceKind::Cpu, 1, None, now);
    assert_eq!(ids(&core.lease(&w, 5, now).unwrap()), vec!["b"]);
}

#[test]
fn heartbeat_expiry_is_exact() {
    let mut core = core_with(&[]);
    let w = reg(&mut core, "w", DeviceKind::Cpu, 1, None, 0);
    assert!(
        core.expired_workers(1000).is_empty(),
        "at the timeout, still alive"
    );
    assert_eq!(core.expired_workers(1001), vec![w.clone()]);
    core.heartbeat(&w, &[], 900).unwrap();
    assert!(core.expired_workers(1900).is_empty());
    assert!(core.heartbeat("nobody", &[], 0).is_err());
}

#[test]
fn cancel_stops_queued_and_running_trials() {
    let mut core = core_with(&[
        ("a", DeviceRequest::Auto),
        ("b", DeviceRequest::Auto),
        ("c", DeviceRequest::Auto),
    ]);
    let w = reg(&mut core, "w", DeviceKind::Cpu, 1, None, 0);
    core.lease(&w, 2, 0).unwrap(); // a, b running
    core.finish(&w, "a", 1, result(), 1).unwrap();
    let cancelled = core.cancel(&["a".into(), "b".into(), "c".into()]);
    assert_eq!(cancelled, vec!["b".to_string(), "c".to_string()]);
    // The worker learns at its next heartbeat that b must stop.
    assert_eq!(
        core.heartbeat(&w, &[lease("b", 1)], 2).unwrap().stop,
        vec![lease("b", 1)]
    );
    assert!(core.lease(&w, 5, 3).unwrap().is_empty());
    assert!(
        core.finish(&w, "b", 1, result(), 4).is_err(),
        "a cancelled trial takes no result"
    );
    let c = core.counts(&["a".into(), "b".into(), "c".into()]);
    assert_eq!((c.finished, c.cancelled), (1, 2));
    assert!(c.is_done());
}

#[test]
fn restored_finished_trials_are_not_requeued() {
    let mut core = core_with(&[]);
    core.add_trial(
        "done".into(),
        TrialSpec::default(),
        TrialState::Finished {
            attempt: 1,
            worker: "old".into(),
            result: Box::new(result()),
        },
        false,
    );
    core.add_trial(
        "done".into(),
        TrialSpec::default(),
        TrialState::Queued { attempt: 1 },
        false,
    );
    let w = reg(&mut core, "w", DeviceKind::Cpu, 1, None, 0);
    assert!(core.lease(&w, 1, 0).unwrap().is_empty());
    // --rerun replaces it.
    core.add_trial(
        "done".into(),
        TrialSpec::default(),
        TrialState::Queued { attempt: 2 },
        true,
    );
    assert_eq!(core.lease(&w, 1, 0).unwrap()[0].attempt, 2);
}

#[test]
fn a_reconnecting_worker_keeps_its_id_and_leases_until_it_expires() {
    let mut core = core_with(&[("a", DeviceRequest::Auto), ("b", DeviceRequest::Auto)]);
    let w = reg(&mut core, "w", DeviceKind::Cpu, 1, None, 0);
    core.lease(&w, 1, 0).unwrap();
    // A network cut shorter than the timeout: same id, the result still counts.
    assert_eq!(
        reg(&mut core, "w", DeviceKind::Cpu, 1, Some(w.as_str()), 900),
        w
    );
    assert!(
        core.expired_workers(1800).is_empty(),
        "resuming is a heartbeat"
    );
    core.finish(&w, "a", 1, result(), 1000).unwrap();
    // Another name (or device) cannot take over an id.
    assert_ne!(
        reg(&mut core, "x", DeviceKind::Cpu, 1, Some(w.as_str()), 1000),
        w
    );
    assert_ne!(
        reg(&mut core, "w", DeviceKind::Cuda, 1, Some(w.as_str()), 1000),
        w
    );
    // After expiry the id is gone: a new one, and the old lease's report is stale.
    core.lease(&w, 1, 1000).unwrap(); // b, attempt 1
    core.tick(2500);
    let again = reg(&mut core, "w", DeviceKind::Cpu, 1, Some(w.as_str()), 2500);
    assert_ne!(again, w);
    assert!(matches!(
        core.finish(&again, "b", 1, result(), 2600),
        Err(Rejected::StaleLease { .. })
    ));
    assert_eq!(
        core.trial("b").unwrap().state,
        TrialState::Queued { attempt: 2 }
    );
}

#[test]
fn an_unrecorded_lease_goes_back_to_the_front_with_the_same_attempt() {
    let mut core = core_with(&[("a", DeviceRequest::Auto), ("b", DeviceRequest::Auto)]);
    let w = reg(&mut core, "w", DeviceKind::Cpu, 2, None, 0);
    core.lease(&w, 2, 0).unwrap();
    core.unlease(&w, "b", 1);
    assert_eq!(
        core.trial("b").unwrap().state,
        TrialState::Queued { attempt: 1 }
    );
    assert!(
        matches!(core.trial("a").unwrap().state, TrialState::Running { .. }),
        "the worker's other lease is untouched"
    );
    // Only the current holder's lease can be taken back.
    core.unlease("other", "a", 1);
    core.unlease(&w, "a", 7);
    assert!(matches!(
        core.trial("a").unwrap().state,
        TrialState::Running { .. }
    ));
    let g = core.lease(&w, 1, 1).unwrap();
    assert_eq!((g[0].trial.as_str(), g[0].attempt), ("b", 1));
}

#[test]
fn an_unrecorded_result_is_taken_back() {
    let mut core = core_with(&[("a", DeviceRequest::Auto), ("b", DeviceRequest::Auto)]);
    let w = reg(&mut core, "w", DeviceKind::Cpu, 2, None, 0);
    core.lease(&w, 2, 0).unwrap();
    core.finish(&w, "a", 1, result(), 10).unwrap();
    core.unfinish(&w, "a", 1, 20);
    assert!(matches!(
        core.trial("a").unwrap().state,
        TrialState::Running { attempt: 1, .. }
    ));
    // The worker's retry of the same report now counts.
    core.finish(&w, "a", 1, result(), 30).unwrap();
    // If the worker is gone meanwhile, the trial is queued again instead.
    core.finish(&w, "b", 1, result(), 40).unwrap();
    core.lose_worker(&w, "test");
    core.unfinish(&w, "b", 1, 50);
    assert_eq!(
        core.trial("b").unwrap().state,
        TrialState::Queued { attempt: 2 }
    );
    assert!(matches!(
        core.trial("a").unwrap().state,
        TrialState::Finished { .. }
    ));
}

#[test]
fn restarts_and_reruns_do_not_use_up_the_retry_budget() {
    // Two coordinator restarts left the trial at attempt 3 with no lost attempt: one lost
    // worker now is a retry, not "attempt 3 of 3 lost".
    let mut core = Core::new(Config {
        heartbeat_timeout_ms: 1000,
        max_attempts: 3,
    });
    core.add_trial_lost(
        "a".into(),
        spec(DeviceRequest::Auto),
        TrialState::Queued { attempt: 3 },
        0,
        false,
    );
    let w = reg(&mut core, "w", DeviceKind::Cpu, 1, None, 0);
    core.lease(&w, 1, 0).unwrap();
    assert_eq!(
        core.lose_worker(&w, "gone"),
        vec![Requeued::Retry {
            trial: "a".into(),
            next_attempt: 4,
            lost: 1
        }]
    );
    // Already lost twice (as stored): the third loss fails it.
    core.add_trial_lost(
        "b".into(),
        spec(DeviceRequest::Auto),
        TrialState::Queued { attempt: 1 },
        2,
        false,
    );
    let w = reg(&mut core, "w", DeviceKind::Cpu, 2, None, 0);
    core.lease(&w, 2, 0).unwrap();
    let out = core.lose_worker(&w, "gone");
    assert!(
        out.iter()
            .any(|r| matches!(r, Requeued::GaveUp { trial, lost: 3, .. } if trial == "b")),
        "{out:?}"
    );
    assert!(
        out.iter()
            .any(|r| matches!(r, Requeued::Retry { trial, lost: 2, .. } if trial == "a")),
        "{out:?}"
    );
}

fn lease(trial: &str, attempt: u32) -> LeaseRef {
    LeaseRef {
        trial: trial.into(),
        attempt,
    }
}

/// The core follows a cancel the database made: queued and running trials are cancelled, a
/// trial given up on in between (the database kept its cancel over the give-up) is cancelled
/// too, and a trial whose result arrived in between stays finished.
#[test]
fn the_core_follows_a_cancel_the_database_made() {
    let mut core = core_with(&[("a", DeviceRequest::Auto)]);
    // Already lost twice (as stored): the next loss gives it up.
    core.add_trial_lost(
        "gone".into(),
        spec(DeviceRequest::Auto),
        TrialState::Queued { attempt: 1 },
        2,
        false,
    );
    let w = reg(&mut core, "w", DeviceKind::Cpu, 2, None, 0);
    assert_eq!(core.lease(&w, 2, 0).unwrap().len(), 2);
    core.finish(&w, "a", 1, result(), 1).unwrap();
    assert!(core
        .lose_worker(&w, "gone")
        .iter()
        .any(|r| matches!(r, Requeued::GaveUp { trial, .. } if trial == "gone")));
    core.add_trial(
        "q".into(),
        spec(DeviceRequest::Auto),
        TrialState::Queued { attempt: 1 },
        false,
    );
    let ids: Vec<TrialId> = ["a", "q", "gone"].into_iter().map(TrialId::from).collect();
    assert!(matches!(
        core.trial("gone").unwrap().state,
        TrialState::Failed { .. }
    ));
    let mut cancelled = core.follow_cancel(&ids);
    cancelled.sort();
    assert_eq!(cancelled, vec![TrialId::from("gone"), TrialId::from("q")]);
    assert_eq!(core.trial("gone").unwrap().state, TrialState::Cancelled);
    assert!(matches!(
        core.trial("a").unwrap().state,
        TrialState::Finished { .. }
    ));
}

/// The core a restarted coordinator builds from a database in which worker `w` (secret "s")
/// holds trial "a" on attempt 2 after one lost attempt, with epoch 1 reported.
fn restarted() -> (Core, WorkerId) {
    let mut core = core_with(&[("b", DeviceRequest::Auto)]);
    core.add_trial_lost(
        "a".into(),
        spec(DeviceRequest::Auto),
        TrialState::Queued { attempt: 3 },
        1,
        true,
    );
    let w = WorkerId::from("w-0000000000000000");
    core.restore_worker(
        WorkerRecord {
            id: w.clone(),
            name: "w".into(),
            device: DeviceKind::Cpu,
            slots: 2,
            secret_sha: secret_sha("s"),
        },
        0,
    );
    core.restore_lease("a", 2, &w, vec![metrics(1)], 0);
    (core, w)
}

#[test]
fn a_restored_worker_that_comes_back_keeps_its_leases_and_results() {
    let (mut core, w) = restarted();
    assert!(matches!(
        &core.trial("a").unwrap().state,
        TrialState::Running { attempt: 2, worker, epochs, .. } if *worker == w && epochs.len() == 1
    ));
    // Restored leases are not in the queue: the other trial is the only one to hand out.
    let other = reg(&mut core, "x", DeviceKind::Cpu, 4, None, 10);
    assert_eq!(ids(&core.lease(&other, 4, 10).unwrap()), vec!["b"]);
    // The wrong secret gets a new id and nothing of w's.
    let thief = core
        .register(
            NewWorker {
                name: "w".into(),
                device: DeviceKind::Cpu,
                slots: 2,
                nonce: 0,
                secret: "t".into(),
            },
            Some((w.as_str(), "t")),
            20,
        )
        .0;
    assert_ne!(thief.id, w);
    // The secret resumes the id within the timeout; the heartbeat keeps the lease.
    assert_eq!(reg(&mut core, "w", DeviceKind::Cpu, 2, Some(&w), 900), w);
    let beat = core.heartbeat(&w, &[lease("a", 2)], 950).unwrap();
    assert!(beat.stop.is_empty() && beat.lost.is_empty(), "{beat:?}");
    assert!(!core.workers().any(|(id, x)| *id == w && x.restored));
    // Long after the first timeout: it is a live worker now, and its result counts.
    core.tick(1500);
    assert_eq!(core.finish(&w, "a", 2, result(), 1600), Ok(Finished::New));
    assert_eq!(core.trial("a").unwrap().lost, 1);
}

#[test]
fn a_restored_worker_that_stays_away_loses_its_leases_without_using_up_retries() {
    let (mut core, w) = restarted();
    assert!(core.tick(900).is_empty());
    let lost = core.tick(1200);
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(
        lost[0].1,
        vec![Requeued::Retry {
            trial: "a".into(),
            next_attempt: 3,
            lost: 1
        }]
    );
    // Lost once before; with max_attempts 3 a counted loss now would leave one retry, an
    // uncounted one leaves two. Its id is gone: resuming it gets a new one.
    assert_eq!(core.trial("a").unwrap().lost, 1);
    assert_ne!(reg(&mut core, "w", DeviceKind::Cpu, 2, Some(&w), 1300), w);
    // The late report of the old attempt is refused.
    assert!(core.finish(&w, "a", 2, result(), 1400).is_err());
}

#[test]
fn a_local_sweep_drops_restored_workers_at_once() {
    let (mut core, w) = restarted();
    let dropped = core.drop_restored();
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].0, w);
    assert!(matches!(
        core.trial("a").unwrap().state,
        TrialState::Queued { attempt: 3 }
    ));
    assert_eq!(core.trial("a").unwrap().lost, 1);
    // A worker that registers afterwards gets both trials, the restored one first.
    let x = reg(&mut core, "x", DeviceKind::Cpu, 2, None, 1);
    assert_eq!(ids(&core.lease(&x, 2, 1).unwrap()), vec!["a", "b"]);
}

#[test]
fn a_lease_for_a_worker_the_database_lacks_stays_queued() {
    let mut core = core_with(&[]);
    core.add_trial(
        "a".into(),
        spec(DeviceRequest::Auto),
        TrialState::Queued { attempt: 2 },
        false,
    );
    core.restore_lease("a", 1, "gone-0000000000000000", Vec::new(), 0);
    assert!(matches!(
        core.trial("a").unwrap().state,
        TrialState::Queued { attempt: 2 }
    ));
    let x = reg(&mut core, "x", DeviceKind::Cpu, 1, None, 1);
    assert_eq!(ids(&core.lease(&x, 1, 1).unwrap()), vec!["a"]);
}
