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
            .id
            == trial
            && t.attempt == 2
            && t.worker
                .as_deref()
                .is_some_and(|w| w.starts_with("rescuer-")))),
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
        "{}\n{}",
        w.log_text(),
        c.server.log_text()
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
            .any(|t| t.id == first && t.state == "finished")),
        "{:?}\n{}",
        states(&c.db),
        w.log_text()
    );
    let t = states(&c.db).into_iter().find(|t| t.id == first).unwrap();
    assert_eq!(
        (t.attempt, t.worker.as_deref()),
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
            .id
            == second
            && t.state == "queued"
            && t.attempt == 2)),
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
    let finished_before: Vec<_> = states(&c.db)
        .into_iter()
        .filter(|t| t.state == "finished")
        .map(|t| t.id)
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
    let finished_during: Vec<_> = states(&c.db)
        .into_iter()
        .filter(|t| t.state == "finished")
        .map(|t| t.id)
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

/// Process ids whose parent is `pid`, from /proc.
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after its ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// Running (not a zombie waiting to be reaped) and not gone.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

#[test]
fn killing_coordinator_sweep_leaves_no_worker_behind() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    synthetic_cifar(&dir.path().join("data"), 100, 50);
    let sweep = write_sweep(dir.path(), "orphans", SLOW);
    let out = dir.path().join("out");
    let mut run = Proc::spawn(
        &mut sweep_command(&sweep, &out, 2),
        dir.path().join("sweep.log"),
    );
    let db = out.join("sweep.db");
    assert!(
        wait_until(Duration::from_secs(120), || any_in(&db, "running")),
        "{}",
        run.log_text()
    );
    let workers = children_of(run.child.id());
    assert_eq!(workers.len(), 2, "two local workers: {workers:?}");
    // SIGKILL: the coordinator gets no chance to stop them itself.
    run.kill();
    assert!(
        wait_until(Duration::from_secs(15), || !workers
            .iter()
            .any(|w| alive(*w))),
        "local workers outlived their coordinator: {workers:?}"
    );
}

#[test]
fn a_stopped_coordinator_does_not_drop_its_workers() {
    let _serial = serial();
    let c = Cluster::start("paused", SLOW, 100, 3.0);
    let workers = [c.worker("a"), c.worker("b")];
    assert!(
        wait_until(Duration::from_secs(120), || running_with_an_epoch(&c.db)
            .is_some()),
        "{:?}",
        states(&c.db)
    );
    // Stopped for more than twice the heartbeat timeout while its workers keep training and
    // their heartbeats and results queue up in the sockets.
    signal(&c.server, libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(8));
    signal(&c.server, libc::SIGCONT);
    assert!(
        wait_until(Duration::from_secs(240), || all_finished(&c.db, 3)),
        "{:?}\n{}",
        states(&c.db),
        c.server.log_text()
    );
    let log = c.server.log_text();
    assert!(
        !log.contains("worker lost"),
        "a worker was blamed for the coordinator's pause:\n{log}"
    );
    let sent = assert_every_result_counted_once(&c, 3, &[&workers[0], &workers[1]]);
    assert!(
        sent.iter().all(|s| s.accepted && s.attempt == 1),
        "every first attempt counts: {sent:?}"
    );
}

#[test]
fn two_workers_of_one_host_keep_distinct_ids_across_a_coordinator_restart() {
    let _serial = serial();
    let mut c = Cluster::start("host", SLOW, 100, 3.0);
    let (dir, data) = (c.dir.path().to_path_buf(), c.data.clone());
    // One host, two workers (one per GPU under systemd): the same name.
    let a = worker_logging_to(&dir, c.port, Some(TOKEN), &data, "host", "host-a.log");
    let b = worker_logging_to(&dir, c.port, Some(TOKEN), &data, "host", "host-b.log");
    assert!(
        wait_until(Duration::from_secs(120), || running_with_an_epoch(&c.db)
            .is_some()),
        "{:?}",
        states(&c.db)
    );
    c.server.kill();
    std::thread::sleep(Duration::from_millis(500));
    c.server = serve(&dir, &c.db, c.port, TOKEN, 3.0, "server2.log", &[]);
    assert!(
        wait_until(Duration::from_secs(240), || all_finished(&c.db, 3)),
        "{:?}\n{}\n{}",
        states(&c.db),
        a.log_text(),
        b.log_text()
    );
    assert_every_result_counted_once(&c, 3, &[&a, &b]);
    // Every id either worker ever held is its own.
    let ids = |p: &Proc| -> std::collections::BTreeSet<String> {
        p.log_text()
            .lines()
            .filter_map(|l| l.split(" worker=").nth(1))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(|id| id.trim_end_matches(':').to_string())
            .collect()
    };
    let (ia, ib) = (ids(&a), ids(&b));
    assert!(!ia.is_empty() && !ib.is_empty(), "{ia:?} {ib:?}");
    assert!(ia.is_disjoint(&ib), "a shared id: {ia:?} {ib:?}");
}

#[test]
fn one_database_one_server_and_a_clean_stop_leaves_one_file() {
    let _serial = serial();
    let mut c = Cluster::start(
        "single",
        "[defaults]\nmodel = \"dense\"\nepochs = 1\nbatch_size = 32\n[grid]\nseed = [1, 2]\n",
        60,
        3.0,
    );
    // A second server on the same database (another port) is refused, naming the first.
    assert!(
        wait_until(Duration::from_secs(30), || http_status(
            c.health_port,
            "/readyz"
        ) == Some(200)),
        "{}",
        c.server.log_text()
    );
    let (ok, _, err) = {
        let mut second = serve(
            c.dir.path(),
            &c.db,
            free_port(),
            TOKEN,
            3.0,
            "second.log",
            &[],
        );
        let status = second
            .wait_exit(Duration::from_secs(30))
            .expect("the second server must exit");
        (status.success(), (), second.log_text())
    };
    assert!(!ok, "{err}");
    let first = c.server.child.id();
    assert!(
        err.contains("in use by another coordinator") && err.contains(&format!("pid {first}")),
        "{err}"
    );
    let w = c.worker("w");
    assert!(
        wait_until(Duration::from_secs(120), || all_finished(&c.db, 2)),
        "{}",
        w.log_text()
    );
    // A clean stop (SIGTERM) folds the WAL into the file: the .db alone, copied elsewhere as
    // users do to share results, holds every result.
    signal(&c.server, libc::SIGTERM);
    let status = c
        .server
        .wait_exit(Duration::from_secs(30))
        .expect("serve stops on SIGTERM");
    assert!(status.success(), "{}", c.server.log_text());
    // ... and leaves no -wal or -shm beside it.
    for leftover in ["-wal", "-shm"] {
        let f = format!("{}{leftover}", c.db.display());
        assert!(!std::path::Path::new(&f).exists(), "{f} is left after a clean stop");
    }
    let copy = tempfile::tempdir().unwrap();
    let alone = copy.path().join("copy.db");
    std::fs::copy(&c.db, &alone).unwrap();
    let (ok, out, err) = coordinator(&["status", "single"], &alone);
    assert!(ok && out.contains("2 finished"), "{out}{err}");
}

/// A TPE search whose coordinator is killed (SIGKILL) with trials running: the restarted one
/// goes on from the stored suggestions, so the sweep ends with exactly its budget of trials,
/// none suggested twice and none lost, each result counted once.
#[test]
fn a_tpe_search_killed_mid_sweep_meets_its_budget_exactly() {
    let _serial = serial();
    let body = "search = \"tpe\"\ntrials = 8\nstartup_trials = 3\nsearch_seed = 5\n\
                [defaults]\nmodel = \"seed-cnn\"\ntrain_images = 400\ntest_images = 50\nepochs = 2\nbatch_size = 50\n\
                [grid]\nlr = { min = 1e-4, max = 0.5, log = true }\noptimizer = [\"sgd\", \"adam\"]\n";
    let mut c = Cluster::start("tpe-kill", body, 100, 3.0);
    let (dir, data) = (c.dir.path().to_path_buf(), c.data.clone());
    let a = worker_logging_to(&dir, c.port, Some(TOKEN), &data, "a", "a.log");
    let b = worker_logging_to(&dir, c.port, Some(TOKEN), &data, "b", "b.log");
    // Kill it once some trials have finished and others run.
    assert!(
        wait_until(Duration::from_secs(180), || {
            let s = states(&c.db);
            s.iter().filter(|t| t.state == "finished").count() >= 2
                && s.iter().any(|t| t.state == "running")
        }),
        "{:?}",
        states(&c.db)
    );
    c.server.kill();
    let stored_at_kill = states(&c.db).len();
    std::thread::sleep(Duration::from_millis(500));
    c.server = serve(&dir, &c.db, c.port, TOKEN, 3.0, "server2.log", &[]);
    assert!(
        wait_until(Duration::from_secs(300), || all_finished(&c.db, 8)),
        "{:?}",
        states(&c.db)
    );
    assert!(
        stored_at_kill < 8,
        "killed after the last suggestion: {stored_at_kill}"
    );
    assert_every_result_counted_once(&c, 8, &[&a, &b]);
    let sweep = coordinator::store::Store::open(&c.db)
        .unwrap()
        .sweep("tpe-kill")
        .unwrap()
        .unwrap();
    let ids: std::collections::BTreeSet<&str> =
        sweep.trials.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(
        (sweep.trials.len(), ids.len()),
        (8, 8),
        "{:?}",
        sweep.trials
    );
    // Nothing more is suggested once the budget is met.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(states(&c.db).len(), 8);
}

/// PBT under `kill -9` (issue 25): the coordinator is killed once a population of 3 has made
/// its second generation, and restarted on the same database. The population goes on from
/// its stored segments: 9 segments in the end, none made twice, every result counted once,
/// and the same history (the same trials, member by member) as an uninterrupted run of the
/// same file with one worker.
#[test]
fn a_population_killed_mid_training_keeps_its_history() {
    let _serial = serial();
    let body = "search = \"pbt\"\nsearch_seed = 4\n\
                [defaults]\nmodel = \"seed-cnn\"\ntrain_images = 400\ntest_images = 50\nepochs = 6\nbatch_size = 50\nvalidation_split = 0.2\noptimizer = \"sgd\"\n\
                [pbt]\npopulation = 3\ninterval_epochs = 2\n\
                [pbt.mutations]\nlr = { min = 1e-3, max = 0.3, log = true }\n";
    let mut c = Cluster::start("pbt-kill", body, 100, 3.0);
    let (dir, data) = (c.dir.path().to_path_buf(), c.data.clone());
    let a = worker_logging_to(&dir, c.port, Some(TOKEN), &data, "a", "a.log");
    let members = |db: &std::path::Path| {
        coordinator::store::Store::open(db)
            .unwrap()
            .sweep("pbt-kill")
            .unwrap()
            .map_or(Vec::new(), |s| s.trials.into_iter().map(|t| t.id).collect())
    };
    assert!(
        wait_until(Duration::from_secs(180), || members(&c.db).len() > 3
            && states(&c.db).iter().any(|t| t.state == "running")),
        "{:?}",
        states(&c.db)
    );
    c.server.kill();
    let made_at_kill = members(&c.db).len();
    std::thread::sleep(Duration::from_millis(1500));
    c.server = serve(&dir, &c.db, c.port, TOKEN, 3.0, "server2.log", &[]);
    assert!(
        wait_until(Duration::from_secs(300), || all_finished(&c.db, 9)),
        "{:?}",
        states(&c.db)
    );
    assert!(
        made_at_kill < 9,
        "killed after the last generation: {made_at_kill}"
    );
    assert_every_result_counted_once(&c, 9, &[&a]);
    let killed = members(&c.db);
    let out = dir.join("uninterrupted");
    let done = sweep_command(&dir.join("pbt-kill.toml"), &out, 1)
        .output()
        .unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(
        killed,
        members(&out.join("sweep.db")),
        "the history changed across the kill"
    );
}
