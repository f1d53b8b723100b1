//! Fault injection with real processes on loopback: workers killed again and again, a worker
//! that hangs (SIGSTOP) and wakes up after its lease was given away, network cuts through a
//! proxy, a full disk under the coordinator, and trials that diverge, run out of memory or
//! meet corrupt data. Every test ends by checking that each trial ended and each finished
//! result is the one its worker sent, counted exactly once, in the database and the report.

use integration_tests::faults::*;
use integration_tests::*;
use std::time::Duration;

/// Three trials of a few seconds per epoch (see `SLOW`), four of them here.
const FOUR_SLOW: &str = "[defaults]\nmodel = \"seed-cnn\"\ntrain_images = 400\ntest_images = 50\nepochs = 3\nbatch_size = 50\n\
                         [grid]\nseed = [1, 2, 3, 4]\n";

/// The worker process whose registered id (`name-N`) is `id`.
fn owner<'a>(procs: &'a mut [(String, Proc)], id: &str) -> Option<&'a mut Proc> {
    let name = id.rsplit_once('-').map(|(n, _)| n)?;
    procs.iter_mut().find(|(n, _)| n == name).map(|(_, p)| p)
}

#[test]
fn workers_killed_again_and_again_lose_no_result() {
    let _serial = serial();
    let c = Cluster::start("kills", FOUR_SLOW, 100, 3.0);
    let mut procs: Vec<(String, Proc)> = ["a", "b"]
        .iter()
        .map(|n| (n.to_string(), c.worker(n)))
        .collect();
    let mut killed = Vec::new();
    // Three times: find a trial mid-epoch on its first attempt and SIGKILL its worker.
    for round in 0..3 {
        let mut victim = None;
        assert!(
            wait_until(Duration::from_secs(120), || {
                victim = running_with_an_epoch(&c.db)
                    .filter(|(t, attempt, _)| *attempt == 1 && !killed.iter().any(|(k, _)| k == t));
                victim.is_some()
            }),
            "round {round}: no fresh trial got going: {:?}",
            states(&c.db)
        );
        let (trial, _, worker) = victim.unwrap();
        owner(&mut procs, &worker)
            .unwrap_or_else(|| panic!("no process for {worker}"))
            .kill();
        killed.push((trial, worker));
        let name = format!("r{round}");
        procs.push((name.clone(), c.worker(&name)));
    }
    assert!(
        wait_until(Duration::from_secs(300), || all_finished(&c.db, 4)),
        "{:?}",
        states(&c.db)
    );
    let workers: Vec<&Proc> = procs.iter().map(|(_, p)| p).collect();
    let sent = assert_every_result_counted_once(&c, 4, &workers);
    for (trial, worker) in &killed {
        let s = sent
            .iter()
            .find(|s| s.accepted && &s.trial == trial)
            .unwrap();
        assert!(s.attempt >= 2, "{trial} was killed on attempt 1: {s:?}");
        assert_ne!(&s.worker, worker, "a killed worker cannot deliver");
    }
}

#[test]
fn a_hung_worker_loses_its_lease_and_its_late_result_is_ignored() {
    let _serial = serial();
    let c = Cluster::start("hang", SLOW, 100, 3.0);
    let hung = c.worker("hung");
    assert!(
        wait_until(Duration::from_secs(120), || running_with_an_epoch(&c.db)
            .is_some()),
        "{}",
        hung.log_text()
    );
    let (trial, _, _) = running_with_an_epoch(&c.db).unwrap();
    // Alive but silent: no heartbeats, no progress, the process still exists.
    signal(&hung, libc::SIGSTOP);
    let rescuer = c.worker("rescuer");
    assert!(
        wait_until(Duration::from_secs(60), || states(&c.db).iter().any(|t| t
            .0
            == trial
            && t.2 == 2
            && t.3.as_deref().is_some_and(|w| w.starts_with("rescuer-")))),
        "the lease was not given away: {:?}",
        states(&c.db)
    );
    signal(&hung, libc::SIGCONT);
    // The woken worker sends what it has for its lost attempt; it must not count.
    assert!(
        wait_until(Duration::from_secs(60), || sent_results(&[&hung])
            .iter()
            .any(|s| s.trial == trial && s.attempt == 1 && !s.accepted)),
        "{}",
        hung.log_text()
    );
    assert!(
        wait_until(Duration::from_secs(180), || all_finished(&c.db, 3)),
        "{:?}",
        states(&c.db)
    );
    let sent = assert_every_result_counted_once(&c, 3, &[&hung, &rescuer]);
    let s = sent
        .iter()
        .find(|s| s.accepted && s.trial == trial)
        .unwrap();
    assert!(s.worker.starts_with("rescuer-") && s.attempt == 2, "{s:?}");
}

#[test]
fn network_cuts_short_and_long() {
    let _serial = serial();
    let c = Cluster::start("cut", SLOW, 100, 6.0);
    let proxy = Proxy::start(c.port);
    let w = c.worker_via(proxy.port, "remote");

    // A cut shorter than the heartbeat timeout: the worker reconnects with backoff, resumes
    // its id, and the trial it was training counts on its first attempt.
    assert!(
        wait_until(Duration::from_secs(120), || running_with_an_epoch(&c.db)
            .is_some()),
        "{}",
        w.log_text()
    );
    let (first, _, id) = running_with_an_epoch(&c.db).unwrap();
    // Cut until the worker notices (its next call fails; heartbeats come every 2 s).
    proxy.cut();
    assert!(
        wait_until(Duration::from_secs(20), || w
            .log_text()
            .contains("lost the coordinator")),
        "{}",
        w.log_text()
    );
    proxy.restore();
    assert!(
        wait_until(Duration::from_secs(120), || states(&c.db)
            .iter()
            .any(|t| t.0 == first && t.1 == "finished")),
        "{:?}\n{}",
        states(&c.db),
        w.log_text()
    );
    let t = states(&c.db).into_iter().find(|t| t.0 == first).unwrap();
    assert_eq!(
        (t.2, t.3.as_deref()),
        (1, Some(id.as_str())),
        "{}",
        w.log_text()
    );
    assert!(
        w.log_text().contains("resumed the session"),
        "{}",
        w.log_text()
    );

    // A cut longer than the timeout: the lease expires and the trial runs again; what the
    // worker trained meanwhile is reported and ignored.
    assert!(
        wait_until(Duration::from_secs(120), || running_with_an_epoch(&c.db)
            .is_some_and(|r| r.0 != first)),
        "{}",
        w.log_text()
    );
    let (second, _, _) = running_with_an_epoch(&c.db)
        .filter(|r| r.0 != first)
        .unwrap();
    proxy.cut();
    assert!(
        wait_until(Duration::from_secs(30), || states(&c.db).iter().any(|t| t
            .0
            == second
            && t.1 == "queued"
            && t.2 == 2)),
        "{:?}",
        states(&c.db)
    );
    proxy.restore();
    assert!(
        wait_until(Duration::from_secs(180), || all_finished(&c.db, 3)),
        "{:?}\n{}",
        states(&c.db),
        w.log_text()
    );
    let sent = assert_every_result_counted_once(&c, 3, &[&w]);
    assert!(
        sent.iter()
            .any(|s| s.trial == second && s.attempt == 1 && !s.accepted),
        "{sent:?}"
    );
    let s = sent
        .iter()
        .find(|s| s.accepted && s.trial == second)
        .unwrap();
    assert_eq!(s.attempt, 2);
    // Reconnecting went through failed attempts, spaced by the backoff.
    assert!(w.log_text().contains("retrying in"), "{}", w.log_text());
}

#[test]
fn a_full_disk_stops_work_and_loses_nothing() {
    let _serial = serial();
    // A long heartbeat timeout: the worker's backoff (at most 10 s) must not cost its lease.
    let c = Cluster::start("full", SLOW, 100, 15.0);
    let w = c.worker("w");
    assert!(
        wait_until(Duration::from_secs(120), || running_with_an_epoch(&c.db)
            .is_some()),
        "{}",
        w.log_text()
    );
    assert_eq!(http_status(c.health_port, "/readyz"), Some(200));
    let finished_before: Vec<String> = states(&c.db)
        .into_iter()
        .filter(|t| t.1 == "finished")
        .map(|t| t.0)
        .collect();
    // The disk is "full": no file of the coordinator may grow (its write-ahead log must).
    let wal = std::fs::metadata(c.db.with_extension("db-wal"))
        .unwrap()
        .len();
    set_limit(&c.server, libc::RLIMIT_FSIZE, Some(wal));

    // The worker finishes its trial but cannot deliver it; the coordinator says it is not
    // ready, and its database keeps what it had.
    assert!(
        wait_until(Duration::from_secs(120), || w
            .log_text()
            .contains("could not deliver the result, keeping it")),
        "{}\n{}",
        w.log_text(),
        c.server.log_text()
    );
    assert_eq!(http_status(c.health_port, "/readyz"), Some(503));
    assert_eq!(http_status(c.health_port, "/healthz"), Some(200));
    assert!(
        w.log_text()
            .contains("coordinator storage error, not accepting work"),
        "{}",
        w.log_text()
    );
    let finished_during: Vec<String> = states(&c.db)
        .into_iter()
        .filter(|t| t.1 == "finished")
        .map(|t| t.0)
        .collect();
    assert_eq!(finished_during, finished_before);

    // Space comes back: the kept result lands and the sweep completes.
    set_limit(&c.server, libc::RLIMIT_FSIZE, None);
    assert!(
        wait_until(Duration::from_secs(180), || all_finished(&c.db, 3)),
        "{:?}\n{}",
        states(&c.db),
        c.server.log_text()
    );
    assert_eq!(http_status(c.health_port, "/readyz"), Some(200));
    assert_every_result_counted_once(&c, 3, &[&w]);
}

#[test]
fn bad_trials_end_with_their_reason_and_the_sweep_goes_on() {
    let _serial = serial();
    let body = "[defaults]\nmodel = \"dense\"\ntrain_batches = 4\ntest_images = 50\nepochs = 2\nbatch_size = 50\n\
                [[include]]\nlabel = \"good\"\n\
                [[include]]\nlabel = \"diverges\"\noptimizer = \"sgd\"\nmomentum = 0.9\nlr = 1e6\nnormalization = \"none\"\n\
                [[include]]\nlabel = \"corrupt data\"\ntrain_batches = 5\n\
                [[include]]\nlabel = \"out of memory\"\nmodel = \"fast\"\nbatch_size = 600\nepochs = 1\n";
    let c = Cluster::start("bad", body, 150, 3.0);
    // The fifth training file is cut short: only the trial that reads it can notice.
    let batch5 = c.data.join("cifar-10-batches-bin/data_batch_5.bin");
    let bytes = std::fs::read(&batch5).unwrap();
    std::fs::write(&batch5, &bytes[..bytes.len() - 100]).unwrap();
    let w = c.worker("w");
    // Too little memory for the ResNet-9 on 600 images at once, plenty for the dense trials.
    assert!(wait_until(Duration::from_secs(60), || w
        .log_text()
        .contains("registered with")));
    set_limit(&w, libc::RLIMIT_AS, Some(virtual_memory(&w) + (700 << 20)));
    assert!(
        wait_until(Duration::from_secs(180), || all_finished(&c.db, 4)),
        "{:?}\n{}",
        states(&c.db),
        w.log_text()
    );
    assert_every_result_counted_once(&c, 4, &[&w]);
    let rows = c.report_rows();
    let row = |label: &str| {
        rows.iter()
            .find(|r| r["label"] == label)
            .unwrap_or_else(|| panic!("no row {label}"))
            .clone()
    };
    assert_eq!(row("good")["status"], "completed");
    let diverged = row("diverges");
    assert_eq!(diverged["status"], "diverged");
    assert!(
        diverged["reason"]
            .as_str()
            .unwrap()
            .contains("training loss became"),
        "{diverged}"
    );
    let corrupt = row("corrupt data");
    assert_eq!(corrupt["status"], "failed");
    assert!(
        corrupt["reason"]
            .as_str()
            .unwrap()
            .contains("data_batch_5.bin"),
        "{corrupt}"
    );
    let oom = row("out of memory");
    assert_eq!(oom["status"], "failed");
    assert!(
        oom["reason"].as_str().unwrap().starts_with("out of memory"),
        "{oom}"
    );
}
