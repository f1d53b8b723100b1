//! A real coordinator and real workers as processes on loopback, with failures made real:
//! workers killed with SIGKILL mid-trial, the coordinator killed and restarted, a worker
//! without the token, CPU workers facing a CUDA trial.
//!
//! Workers train for real (libtorch, through `worker`) on small synthetic datasets so the
//! tests stay short; `sweep_on_real_data` uses real CIFAR-10 when it is available.

use coordinator::store::Store;
use integration_tests::*;
use std::time::Duration;

/// `repeats = 3`: every format carries each configuration's mean and 95% interval over its
/// three seeds, and the colour axis gets a Welch's t-test verdict that agrees with its p.
#[test]
fn a_sweep_with_repeats_reports_intervals_in_every_format() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    synthetic_cifar(&dir.path().join("data"), 60, 40);
    let sweep = write_sweep(
        dir.path(),
        "repeats",
        "repeats = 3\n[defaults]\nmodel = \"dense\"\nepochs = 1\nbatch_size = 32\n\
         [grid]\ncolor = [\"color\", \"grayscale\"]\n",
    );
    let out = dir.path().join("out");
    let run = sweep_command(&sweep, &out, 2).output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("95% CI over 3 runs"),
        "the terminal shows configurations: {stdout}"
    );

    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("## Configurations") && md.contains("95% CI over 3 runs"),
        "{md}"
    );
    let verdict = md
        .lines()
        .find(|l| l.contains("Welch's t-test p "))
        .unwrap_or_else(|| panic!("no tested verdict: {md}"));
    // "p = 0.028", or "p < 0.001".
    let p: f64 = if verdict.contains("p < 0.001") {
        0.0
    } else {
        verdict
            .split("p = ")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .map(|p| p.parse().unwrap())
            .unwrap()
    };
    let expect = if p < 0.05 {
        "better ("
    } else {
        "within noise ("
    };
    assert!(verdict.contains(expect), "{verdict}");

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("95% CI over 3 runs") && html.contains("Welch"));
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 6);
    for r in rows {
        let interval = &r["config"]["estimate"]["interval"];
        assert_eq!(
            (&interval["kind"], &interval["runs"]),
            (&"repeats".into(), &3.into()),
            "{r}"
        );
        assert!(interval["low"].as_f64().unwrap() <= interval["high"].as_f64().unwrap());
    }
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(csv
        .lines()
        .next()
        .unwrap()
        .contains("config_ci95_low,config_ci95_high"));
    assert_eq!(
        csv.lines()
            .filter(|l| l.ends_with("95% CI over 3 runs"))
            .count(),
        6,
        "{csv}"
    );
}

#[test]
fn sweep_command_runs_to_the_end_and_resumes() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    synthetic_cifar(&dir.path().join("data"), 60, 40);
    let sweep = write_sweep(
        dir.path(),
        "tiny",
        "[defaults]\nmodel = \"dense\"\nepochs = 2\nbatch_size = 32\nvalidation_split = 0.1\n\
         [grid]\ncolor = [\"color\", \"grayscale\"]\nlr = [0.001, 0.0001]\n",
    );
    let out = dir.path().join("out");
    let run = || sweep_command(&sweep, &out, 2).output().unwrap();
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(stdout.contains("4 trials: 4 finished"), "{stdout}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let rows = results.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for r in rows {
        assert_eq!(r["status"], "completed", "{r}");
        assert_eq!(r["epochs"].as_array().unwrap().len(), 2);
        assert!(r["test_accuracy"].is_number() && r["best_val_accuracy"].is_number());
        assert!(r["worker"].as_str().unwrap().starts_with("local-"));
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("### color") && md.contains("### lr"), "{md}");
    assert_eq!(
        std::fs::read_to_string(out.join("results.csv"))
            .unwrap()
            .lines()
            .count(),
        5
    );

    // A second run reuses every finished trial: nothing is trained again.
    let second = run();
    assert!(second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("reusing 4 finished trials"));
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(again, results);
}

/// ASHA on a real worker: one trial that learns, then two whose learning rate is near zero.
/// The first reaches the rung alone and goes on; each hopeless one is behind it at the rung
/// (top 1 of 2, then of 3) and is stopped there, tested, and ranked with its one epoch. A
/// sweep of the same trials without early stopping trains the stopped ones in full.
#[test]
fn asha_stops_hopeless_trials_at_the_rung_and_they_still_rank() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    learnable_cifar(&dir.path().join("data"), 200, 100);
    let body =
        "[defaults]\nmodel = \"dense\"\nepochs = 3\nbatch_size = 32\nvalidation_split = 0.2\n\
                [grid]\nlr = [0.001, 1e-9, 2e-9]\n";
    let sweep = write_sweep(
        dir.path(),
        "asha",
        &format!(
            "{body}[early_stopping]\nmethod = \"asha\"\ngrace_epochs = 1\nreduction_factor = 3\n"
        ),
    );
    let out = dir.path().join("out");
    // One worker: trials run in plan order, so who reaches the rung first is fixed.
    let run = sweep_command(&sweep, &out, 1).output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let rows = results.as_array().unwrap();
    let by_lr = |lr: f64| {
        rows.iter()
            .find(|r| r["params"]["lr"].as_f64() == Some(lr))
            .unwrap_or_else(|| panic!("no row with lr {lr}: {results}"))
    };
    let good = by_lr(0.001);
    assert_eq!(good["status"], "completed", "{good}");
    assert_eq!(good["epochs"].as_array().unwrap().len(), 3);
    assert_eq!(good["rank"], 1, "{good}");
    for lr in [1e-9, 2e-9] {
        let r = by_lr(lr);
        assert_eq!(r["status"], "stopped", "{r}");
        assert_eq!(r["epochs"].as_array().unwrap().len(), 1, "{r}");
        assert!(
            r["reason"]
                .as_str()
                .unwrap()
                .contains("ASHA rung at epoch 1"),
            "{r}"
        );
        assert!(
            r["test_accuracy"].is_number() && r["rank"].is_number(),
            "{r}"
        );
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## Early stopping"), "{md}");
    assert!(
        md.contains("stopped 2 of 3 ended trials; they trained 5 of the 9 epochs"),
        "{md}"
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("id=\"early-stopping\"") && html.contains("<svg"),
        "the rungs chart"
    );

    // Without early stopping the stopped trials are not reused: they train in full.
    let full = write_sweep(dir.path(), "asha", body);
    let run = sweep_command(&full, &out, 1).output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    for r in results.as_array().unwrap() {
        assert_eq!(r["status"], "completed", "{r}");
        assert_eq!(r["epochs"].as_array().unwrap().len(), 3, "{r}");
    }
}

#[test]
fn killed_worker_trial_finishes_elsewhere() {
    let _serial = serial();
    let c = Cluster::start("kill", SLOW, 100, 3.0);
    let db = c.db.clone();
    let mut victim = c.worker("victim");

    // Kill the victim once its trial has reported an epoch: mid-trial, for real.
    let running = wait_until(Duration::from_secs(90), || {
        let store = Store::open(&db).unwrap();
        states(&db)
            .iter()
            .any(|t| t.state == "running" && store.epochs_of(&t.id, t.attempt).unwrap_or(0) >= 1)
    });
    assert!(running, "no trial got going: {}", victim.log_text());
    let running = states(&db)
        .into_iter()
        .find(|t| t.state == "running")
        .unwrap();
    let (victim_trial, attempt) = (running.id, running.attempt);
    assert_eq!(attempt, 1);
    victim.kill();

    let rescuer = c.worker("rescuer");
    assert!(
        wait_until(Duration::from_secs(180), || all_finished(&db, 3)),
        "sweep did not finish: {:?}",
        states(&db)
    );
    let s = states(&db);
    let t = s.iter().find(|t| t.id == victim_trial).unwrap();
    assert_eq!(t.attempt, 2, "the killed trial ran again as attempt 2");
    assert!(t.worker.as_deref().unwrap().starts_with("rescuer"));
    // Every trial has exactly one result, and all came from the rescuer: the victim died
    // before finishing anything, and its attempt's late report could not count.
    let store = Store::open(&db).unwrap();
    for trial in store.load_trials().unwrap() {
        match trial.state {
            coordinator::sched::core::TrialState::Finished { worker, .. } => {
                assert!(worker.starts_with("rescuer"), "{worker}")
            }
            other => panic!("{other:?}"),
        }
    }
    faults::assert_every_result_counted_once(&c, 3, &[&victim, &rescuer]);
}

/// keep_models: the sweep keeps the best trial's trained model only; `coordinator export`
/// fetches it (by --db here, by --server in tests/tests/admin.rs), and `worker eval` on the
/// exported files alone reproduces the test accuracy the sweep reported for it.
#[test]
fn the_best_model_is_kept_exported_and_evaluates_to_its_reported_accuracy() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    learnable_cifar(&data, 100, 60);
    let sweep = write_sweep(
        dir.path(),
        "models",
        "keep_best = 1\n[defaults]\nmodel = \"dense\"\nepochs = 2\nbatch_size = 32\n\
         normalization = \"standard\"\n[grid]\nlr = [0.001, 1e-9, 0.0003]\n",
    );
    let out = dir.path().join("out");
    let run = sweep_command(&sweep, &out, 1).output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let best = &rows[0];
    assert_eq!(best["rank"], 1);
    let models = out.join("sweep.db.checkpoints").join("models");
    let kept: Vec<String> = std::fs::read_dir(&models)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".ckpt"))
        .collect();
    assert_eq!(
        kept,
        vec![format!("{}.ckpt", best["id"].as_str().unwrap())],
        "only the best is kept"
    );

    let exported = dir.path().join("exported");
    let stdout = export_best("models", &out.join("sweep.db"), &exported);
    assert!(stdout.contains(best["id"].as_str().unwrap()), "{stdout}");
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(exported.join("model.json")).unwrap())
            .unwrap();
    assert_eq!(info["trial"]["lr"], best["params"]["lr"]);
    assert_eq!(info["classes"].as_array().unwrap().len(), 10);
    let eval = worker_eval(&data, &exported);
    assert_eq!(eval["test_accuracy"], best["test_accuracy"], "{eval}");

    // A trial whose model was not kept, and a sweep without models: clear errors.
    let other = rows[1]["id"].as_str().unwrap();
    let (ok, _, err) = coordinator(
        &[
            "export",
            "models",
            "--trial",
            other,
            "--out",
            exported.to_str().unwrap(),
        ],
        &out.join("sweep.db"),
    );
    assert!(!ok && err.contains("has no kept model"), "{err}");
}

/// What a trial computed (times and attempt details left out).
fn numbers(r: &serde_json::Value) -> serde_json::Value {
    let epochs: Vec<serde_json::Value> = r["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            serde_json::json!([
                e["epoch"],
                e["train_loss"],
                e["train_accuracy"],
                e["val_loss"],
                e["val_accuracy"],
                e["lr"]
            ])
        })
        .collect();
    serde_json::json!({"status": r["status"], "epochs": epochs, "test": r["test"]})
}

/// A worker killed with SIGKILL after its trial saved a checkpoint: the next attempt, on
/// another worker, resumes from it (or, with the checkpoint damaged on the coordinator's disk,
/// starts over with a note) and ends with exactly the numbers of an uninterrupted run of the
/// same trial by `worker train`. The checkpoint is removed once the trial has ended.
fn kill_after_a_checkpoint(damage: bool) {
    let _serial = serial();
    let body = "[defaults]\nmodel = \"seed-cnn\"\ntrain_images = 400\ntest_images = 50\nepochs = 6\n\
                batch_size = 50\nvalidation_split = 0.1\nschedule = \"cosine\"\n[checkpoints]\nevery_epochs = 1\n";
    let c = Cluster::start("resume", body, 100, 3.0);
    let db = c.db.clone();
    let dir = std::path::PathBuf::from(format!("{}.checkpoints", db.display()));
    let mut victim = c.worker("victim");
    let saved = |epoch: u64| {
        std::fs::read_dir(&dir).ok().and_then(|entries| {
            entries.flatten().find_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let meta: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
                (name.ends_with(".json") && meta["epoch"].as_u64()? >= epoch).then(|| {
                    (
                        name.trim_end_matches(".json").to_string(),
                        meta["epoch"].as_u64().unwrap(),
                    )
                })
            })
        })
    };
    assert!(
        wait_until(Duration::from_secs(120), || saved(2).is_some()),
        "no checkpoint after epoch 2: {}",
        victim.log_text()
    );
    // Frozen first, so that no later checkpoint lands between looking and killing; one whose
    // chunks had all arrived is given a moment to commit.
    faults::signal(&victim, libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(500));
    let (trial, epoch) = saved(2).unwrap();
    assert!(epoch < 6, "killed mid-trial: {epoch}");
    assert_eq!(states(&db)[0].state, "running");
    victim.kill();
    if damage {
        let file = dir.join(format!("{trial}.ckpt"));
        let mut bytes = std::fs::read(&file).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&file, bytes).unwrap();
    }

    let rescuer = c.worker("rescuer");
    assert!(
        wait_until(Duration::from_secs(180), || all_finished(&db, 1)),
        "{:?} {}",
        states(&db),
        rescuer.log_text()
    );
    let rows = c.report_rows();
    let r = &rows[0];
    assert_eq!(r["attempt"], 2, "{r}");
    assert!(r["worker"].as_str().unwrap().starts_with("rescuer"), "{r}");
    let notes = r["provenance"].to_string() + &rescuer.log_text();
    if damage {
        assert!(
            r.get("resumed_from_epoch").is_none_or(|v| v.is_null()),
            "{r}"
        );
        assert!(
            rescuer.log_text().contains("failed its checksum"),
            "{notes}"
        );
    } else {
        assert_eq!(r["resumed_from_epoch"].as_u64(), Some(epoch), "{r}");
    }

    // The same trial, uninterrupted, by `worker train`.
    let spec = Store::open(&db)
        .unwrap()
        .load_trials()
        .unwrap()
        .remove(0)
        .spec;
    let file = c.dir.path().join("trial.toml");
    std::fs::write(&file, spec.to_toml()).unwrap();
    let json = c.dir.path().join("alone.json");
    let alone = std::process::Command::new(bin("worker"))
        .args(["train", "--quiet", "--device", "cpu", "--data"])
        .arg(&c.data)
        .arg("--json")
        .arg(&json)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        alone.status.success(),
        "{}",
        String::from_utf8_lossy(&alone.stderr)
    );
    let alone: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let stored: serde_json::Value = {
        let trials = Store::open(&db).unwrap().load_trials().unwrap();
        match &trials[0].state {
            coordinator::sched::core::TrialState::Finished { result, .. } => {
                serde_json::to_value(result).unwrap()
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        numbers(&stored),
        numbers(&alone),
        "resumed vs uninterrupted"
    );
    if damage {
        let notes = stored["notes"].to_string();
        assert!(
            notes.contains("was not used") && notes.contains("failed its checksum"),
            "{notes}"
        );
    }
    assert!(
        wait_until(Duration::from_secs(30), || saved(1).is_none()),
        "the ended trial's checkpoint is removed"
    );
}

#[test]
fn a_killed_trial_resumes_from_its_checkpoint_and_ends_as_if_uninterrupted() {
    kill_after_a_checkpoint(false);
}

#[test]
fn a_damaged_checkpoint_is_caught_by_its_checksum_and_the_trial_starts_over() {
    kill_after_a_checkpoint(true);
}

/// SIGKILL of `coordinator serve` mid-trial: finished results stay byte for byte, and the
/// worker resumes its id, so the trial it was training finishes on its first attempt.
#[test]
fn coordinator_restart_mid_sweep_loses_nothing() {
    let _serial = serial();
    let mut c = Cluster::start("restart", SLOW, 100, 3.0);
    let (db, port) = (c.db.clone(), c.port);
    let w = c.worker("steady");

    // Killed with one trial finished and another mid-training (an epoch reported).
    let mut running = None;
    assert!(
        wait_until(Duration::from_secs(120), || {
            running = running_with_an_epoch(&db);
            any_in(&db, "finished") && running.is_some()
        }),
        "{}",
        w.log_text()
    );
    let (running, attempt, holder) = running.expect("waited for it");
    let finished_before: Vec<_> = states(&db)
        .into_iter()
        .filter(|t| t.state == "finished")
        .map(|t| t.id)
        .collect();
    let results_of = |ids: &[coordinator::sched::core::TrialId]| -> Vec<String> {
        let trials = Store::open(&db).unwrap().load_trials().unwrap();
        trials
            .into_iter()
            .filter(|t| ids.contains(&t.id))
            .map(|t| format!("{:?}", t.state))
            .collect()
    };
    let results_before = results_of(&finished_before);
    c.server.kill();
    // Down for longer than a heartbeat interval (1 s), so the worker notices: a restarted
    // coordinator knows its id, and a worker that never called in meanwhile would go on
    // without reconnecting at all.
    std::thread::sleep(Duration::from_millis(1500));
    let _server = serve(c.dir.path(), &db, port, TOKEN, 3.0, "server2.log", &[]);

    // The worker reconnects by itself and the sweep completes.
    assert!(
        wait_until(Duration::from_secs(180), || all_finished(&db, 3)),
        "{:?}\n{}",
        states(&db),
        w.log_text()
    );
    let after = results_of(&finished_before);
    assert_eq!(
        after, results_before,
        "finished results changed across the restart"
    );
    assert!(
        w.log_text().contains("reconnecting") || w.log_text().contains("cannot reach"),
        "{}",
        w.log_text()
    );
    // The restart cost nothing: the worker resumed its id, and the trial it was training
    // finished on the same attempt under it, not on a rerun.
    assert!(
        w.log_text().contains("resumed the session"),
        "{}",
        w.log_text()
    );
    let after = states(&db);
    let t = after.iter().find(|t| t.id == running.as_str()).unwrap();
    assert_eq!(
        (t.attempt, t.worker.as_deref()),
        (attempt, Some(holder.as_str())),
        "{after:?}"
    );
    faults::assert_every_result_counted_once(&c, 3, &[&w]);
}

#[test]
fn workers_without_the_token_are_refused() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synthetic_cifar(&data, 20, 10);
    let db = dir.path().join("auth.db");
    let port = free_port();
    let _server = serve(dir.path(), &db, port, TOKEN, 3.0, "server.log", &[]);
    let mut wrong = worker(
        dir.path(),
        port,
        Some("not-the-token-at-all"),
        &data,
        "wrong",
    );
    let status = wrong
        .wait_exit(Duration::from_secs(30))
        .expect("a refused worker must exit");
    assert!(!status.success());
    assert!(
        wrong.log_text().contains("refused") && wrong.log_text().contains("wrong worker token"),
        "{}",
        wrong.log_text()
    );
    let mut none = worker(dir.path(), port, None, &data, "none");
    let status = none
        .wait_exit(Duration::from_secs(30))
        .expect("a worker without a token must exit");
    assert!(!status.success());
    assert!(
        none.log_text().contains("SWEEP_TOKEN"),
        "{}",
        none.log_text()
    );
}

#[test]
fn cpu_workers_never_get_cuda_trials() {
    let _serial = serial();
    let body = "[defaults]\nmodel = \"dense\"\nepochs = 1\n[grid]\ndevice = [\"auto\", \"cpu\", \"cuda\"]\n";
    let c = Cluster::start("devices", body, 20, 3.0);
    let db = c.db.clone();
    let _w = c.worker("cpu-only");
    assert!(wait_until(Duration::from_secs(60), || states(&db)
        .iter()
        .filter(|t| t.state == "finished")
        .count()
        == 2));
    std::thread::sleep(Duration::from_secs(2));
    let store = Store::open(&db).unwrap();
    for t in store.load_trials().unwrap() {
        if t.spec.device == sweep_proto::DeviceRequest::Cuda {
            assert_eq!(
                t.state,
                coordinator::sched::core::TrialState::Queued { attempt: 1 },
                "the CUDA trial was never leased"
            );
        }
    }
    let (ok, out, _) = admin(&["status"], c.port);
    assert!(
        ok && out.contains("2 finished") && out.contains("1 queued"),
        "{out}"
    );
}

#[test]
fn cancel_stops_a_running_sweep() {
    let _serial = serial();
    let c = Cluster::start("cancel", SLOW, 100, 3.0);
    let db = c.db.clone();
    let w = c.worker("busy");
    assert!(wait_until(Duration::from_secs(60), || any_in(
        &db, "running"
    )));
    // A running coordinator's database is its own: a local cancel is refused, with the way.
    let (ok, _, err) = coordinator(&["cancel", "cancel"], &db);
    assert!(!ok && err.contains("--server"), "{err}");
    let (ok, out, err) = admin(&["cancel", "cancel"], c.port);
    assert!(ok, "{err}");
    assert!(out.contains("3 unfinished trials stopped"), "{out}");
    // The worker hears about it at its next heartbeat and stops training.
    assert!(
        wait_until(Duration::from_secs(30), || w
            .log_text()
            .contains("stopping: the coordinator cancelled")),
        "{}",
        w.log_text()
    );
    assert!(
        states(&db).iter().all(|t| t.state == "cancelled"),
        "{:?}",
        states(&db)
    );
}

#[test]
fn sweep_on_real_data() {
    let _serial = serial();
    let Some(data) = std::env::var_os("CIFAR10_DATA").filter(|v| !v.is_empty()) else {
        assert!(
            std::env::var("REQUIRE_REAL_DATA").as_deref() != Ok("1"),
            "REQUIRE_REAL_DATA=1 but CIFAR10_DATA is not set"
        );
        eprintln!("skipped: set CIFAR10_DATA to run this test");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("real.toml");
    std::fs::write(
        &sweep,
        format!(
            "name = \"real\"\ndata = {:?}\n[defaults]\nmodel = \"dense\"\ntrain_batches = 1\ntrain_images = 5000\n\
             test_images = 1000\nepochs = 2\nlr = 0.001\n[grid]\ncolor = [\"color\", \"grayscale\"]\n",
            std::path::PathBuf::from(data)
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let run = sweep_command(&sweep, &out, 1).output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    for r in results.as_array().unwrap() {
        let acc = r["test_accuracy"].as_f64().unwrap();
        assert!(acc > 0.2, "{} reached only {acc}", r["id"]);
    }
}

#[test]
fn ctrl_c_stops_the_sweep_and_a_second_run_resumes() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    synthetic_cifar(&dir.path().join("data"), 100, 50);
    let sweep = write_sweep(dir.path(), "interrupt", SLOW);
    let out = dir.path().join("out");
    let start = || sweep_command(&sweep, &out, 1);
    let mut first = Proc::spawn(&mut start(), dir.path().join("first.log"));
    let db = out.join("sweep.db");
    assert!(
        wait_until(Duration::from_secs(120), || any_in(&db, "finished")),
        "{}",
        first.log_text()
    );
    let pid = first.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let status = first
        .wait_exit(Duration::from_secs(30))
        .expect("the sweep must stop on SIGINT");
    assert_eq!(status.code(), Some(130), "{}", first.log_text());
    assert!(first
        .log_text()
        .contains("Run the same command again to resume"));
    let finished_before = states(&db).iter().filter(|t| t.state == "finished").count();
    assert!((1..3).contains(&finished_before), "{:?}", states(&db));

    let second = start().output().unwrap();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(String::from_utf8_lossy(&second.stderr)
        .contains(&format!("reusing {finished_before} finished trials")));
    assert!(all_finished(&db, 3), "{:?}", states(&db));
}

/// `search = "tpe"` with ASHA (BOHB-like), run by `coordinator sweep` with one real worker on
/// learnable data: the budget is met, hopeless learning rates are stopped at the rung and
/// still rank, the model is fitted at a budget once enough trials reached it, and a second
/// run from scratch with the same seed suggests the same trials in the same order.
#[test]
fn a_tpe_search_with_asha_runs_end_to_end() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    learnable_cifar(&dir.path().join("data"), 200, 100);
    let sweep = write_sweep(
        dir.path(),
        "bohb",
        "search = \"tpe\"\ntrials = 8\nstartup_trials = 3\nsearch_seed = 2\n\
         [defaults]\nmodel = \"dense\"\nepochs = 3\nbatch_size = 32\nvalidation_split = 0.2\n\
         [grid]\nlr = { min = 1e-9, max = 1e-2, log = true }\n\
         [early_stopping]\nmethod = \"asha\"\ngrace_epochs = 1\nreduction_factor = 3\n",
    );
    let run = |out: &std::path::Path| {
        let done = sweep_command(&sweep, out, 1)
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&done.stderr).into_owned();
        assert!(done.status.success(), "{log}");
        let store = Store::open(&out.join("sweep.db")).unwrap();
        let ids: Vec<String> = store
            .sweep("bohb")
            .unwrap()
            .unwrap()
            .trials
            .iter()
            .map(|t| t.id.to_string())
            .collect();
        (ids, log)
    };
    let out = dir.path().join("out");
    let (ids, log) = run(&out);
    assert_eq!(ids.len(), 8, "{log}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let rows = results.as_array().unwrap();
    assert_eq!(rows.len(), 8, "{results}");
    assert!(
        rows.iter()
            .all(|r| r["status"] == "completed" || r["status"] == "stopped"),
        "{results}"
    );
    assert!(rows.iter().any(|r| r["status"] == "stopped"), "{results}");
    assert!(rows.iter().all(|r| r["rank"].is_number()), "{results}");
    assert!(
        log.contains("model_epoch=Some("),
        "no suggestion from the model: {log}"
    );
    let (again, _) = run(&dir.path().join("again"));
    assert_eq!(ids, again, "the same seed with one worker: the same trials");
}

/// PBT end to end (issue 25): `coordinator sweep` trains a population of 3 in two segments
/// with a real worker. Every second segment resumes from a checkpoint after epoch 2, and its
/// first two epochs are those of the member it continues or copied (the parent's weights):
/// the same numbers, byte for byte. Run again with the same seed and one worker, it makes
/// the same history.
#[test]
fn a_population_trains_end_to_end_and_its_history_repeats() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    learnable_cifar(&dir.path().join("data"), 200, 100);
    let sweep = write_sweep(
        dir.path(),
        "pbt",
        "search = \"pbt\"\nsearch_seed = 3\n\
         [defaults]\nmodel = \"dense\"\nepochs = 4\nbatch_size = 32\nvalidation_split = 0.2\noptimizer = \"sgd\"\n\
         [pbt]\npopulation = 3\ninterval_epochs = 2\n\
         [pbt.mutations]\nlr = { min = 1e-4, max = 0.1, log = true }\nmomentum = { min = 0.5, max = 0.95 }\n",
    );
    let run = |out: &std::path::Path| {
        let done = sweep_command(&sweep, out, 1).output().unwrap();
        let log = String::from_utf8_lossy(&done.stderr).into_owned();
        assert!(done.status.success(), "{log}");
        let handle =
            coordinator::app::Handle::open(&out.join("sweep.db"), Default::default()).unwrap();
        let segments = handle.lock().population("pbt").unwrap().segments.clone();
        let trials = Store::open(&out.join("sweep.db"))
            .unwrap()
            .load_trials()
            .unwrap();
        (segments, trials)
    };
    let out = dir.path().join("out");
    let (segments, trials) = run(&out);
    assert_eq!(segments.len(), 6);
    let result = |id: &coordinator::sched::core::TrialId| match &trials
        .iter()
        .find(|t| &t.id == id)
        .unwrap()
        .state
    {
        coordinator::sched::core::TrialState::Finished { result, .. } => result.clone(),
        other => panic!("{id}: {other:?}"),
    };
    for s in &segments[3..] {
        let r = result(&s.id);
        assert_eq!(
            r.status,
            sweep_proto::TrialStatus::Completed,
            "{:?}",
            r.reason
        );
        assert_eq!(r.resumed_from_epoch, Some(2), "{}: {:?}", s.id, r.notes);
        let from = match s.segment.start {
            coordinator::sched::pbt::Start::Exploit { parent, .. } => parent,
            _ => s.segment.member,
        };
        let parent = result(&segments[from].id);
        assert_eq!(
            serde_json::to_value(&r.epochs[..2]).unwrap(),
            serde_json::to_value(&parent.epochs[..2]).unwrap(),
            "member {} starts from member {from}'s epoch 2",
            s.segment.member
        );
    }
    // The report's replay.toml is the best member's whole schedule: trained from scratch it
    // ends with the same numbers as the population's segments.
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("## Population-based training"), "{report}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    for chart in [
        "lr by epoch",
        "momentum by epoch",
        "validation accuracy by epoch",
    ] {
        assert!(html.contains(chart), "no chart {chart:?} in report.html");
    }
    let replay = std::process::Command::new(bin("worker"))
        .args(["train", "--device", "cpu", "--data"])
        .arg(dir.path().join("data"))
        .arg(out.join("replay.toml"))
        .output()
        .unwrap();
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let replayed: sweep_proto::TrialResult = serde_json::from_slice(&replay.stdout).unwrap();
    // Times left out: the numbers each epoch computed.
    let numbers = |r: &sweep_proto::TrialResult| -> Vec<String> {
        r.epochs
            .iter()
            .map(|e| {
                format!(
                    "{} {} {} {:?} {:?} {}",
                    e.epoch, e.train_loss, e.train_accuracy, e.val_loss, e.val_accuracy, e.lr
                )
            })
            .collect()
    };
    let best = segments[3..]
        .iter()
        .map(|s| result(&s.id))
        .find(|r| numbers(r) == numbers(&replayed));
    let best = best.expect("replay.toml trains to one of the last generation's results");
    assert_eq!(best.test_accuracy(), replayed.test_accuracy());
    // `coordinator export` of the best member writes the same schedule beside its model.
    let export = out.join("export");
    let (ok, _, err) = coordinator(
        &["export", "pbt", "--out", export.to_str().unwrap()],
        &out.join("sweep.db"),
    );
    assert!(ok, "{err}");
    let body = |text: String| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(String::from)
            .collect()
    };
    assert_eq!(
        body(std::fs::read_to_string(export.join("trial.toml")).unwrap()),
        body(std::fs::read_to_string(out.join("replay.toml")).unwrap())
    );
    let (again, _) = run(&dir.path().join("again"));
    let ids =
        |s: &[coordinator::app::pbt::Placed]| s.iter().map(|p| p.id.clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(&again),
        ids(&segments),
        "the same seed with one worker: the same history"
    );
}
