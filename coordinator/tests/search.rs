//! `search = "tpe"` through the coordinator's handle, in process: suggestions made as workers
//! ask, stored before they are leased, the budget met exactly, the same sequence after a
//! restart, earlier sweeps' trials as prior observations, cancel.

use coordinator::app::work::{Registered, Registration};
use coordinator::app::Handle;
use coordinator::sched::core::{Config, DeviceKind, LeaseRef, TrialId};
use coordinator::store::Store;
use std::path::Path;
use sweep_proto::TrialResult;

const TPE: &str =
    "name = \"t\"\nsearch = \"tpe\"\ntrials = 6\nstartup_trials = 2\nsearch_seed = 4\n\
                   [defaults]\nepochs = 2\n[grid]\nlr = { min = 1e-4, max = 1.0, log = true }\n\
                   optimizer = [\"sgd\", \"adam\"]\n";

fn open(db: &Path) -> Handle {
    Handle::open(db, Config::default()).unwrap()
}

fn submit(h: &Handle, text: &str) {
    let sweep = coordinator::plan::parse(text, Path::new("t.toml")).unwrap();
    h.submit(&sweep, false).unwrap();
}

/// A fresh database in a temporary directory with sweep `text` submitted: the directory
/// (kept while the test runs), the database's path and the handle.
fn started(text: &str) -> (tempfile::TempDir, std::path::PathBuf, Handle) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let h = open(&db);
    submit(&h, text);
    (dir, db, h)
}

fn registration(resume: Option<(String, String)>) -> Registration {
    Registration {
        name: "w".into(),
        device: DeviceKind::Cpu,
        slots: 1,
        gpu_model: String::new(),
        version: String::new(),
        resume,
    }
}

async fn register(h: &Handle, slots: u32) -> String {
    h.register(Registration {
        slots,
        ..registration(None)
    })
    .await
    .unwrap()
    .worker
    .to_string()
}

/// The accuracy a trial "trains" to: best at lr = 0.01.
fn accuracy(spec_toml: &str) -> f64 {
    let spec: sweep_proto::TrialSpec = toml::from_str(spec_toml).unwrap();
    (0.9 - 0.1 * (spec.lr.log10() + 2.0).powi(2)).clamp(0.05, 0.95)
}

/// The result a trial "trains" to, from its spec.
fn result_of(spec_toml: &str) -> TrialResult {
    let acc = accuracy(spec_toml);
    TrialResult::builder()
        .test_accuracy(acc)
        .best_val_accuracy(acc)
        .build()
}

/// Leases one trial at a time and finishes it, `n` times (or until nothing is left); returns
/// the trials in lease order.
async fn train(h: &Handle, worker: &str, n: usize) -> Vec<TrialId> {
    let mut order = Vec::new();
    for _ in 0..n {
        let Some(l) = h.lease(worker, 1).await.unwrap().pop() else {
            break;
        };
        let reply = h
            .finish(worker, &l.lease, result_of(&l.spec_toml))
            .await
            .unwrap();
        assert!(reply.accepted, "{reply:?}");
        order.push(l.lease.trial);
    }
    order
}

fn members(db: &Path) -> Vec<TrialId> {
    Store::open(db)
        .unwrap()
        .sweep("t")
        .unwrap()
        .unwrap()
        .trials
        .into_iter()
        .map(|t| t.id)
        .collect()
}

#[tokio::test]
async fn a_search_suggests_as_workers_ask_and_stops_at_its_budget() {
    let (_dir, db, h) = started(TPE);
    assert_eq!(h.sweep_counts("t", &[]).1.to_suggest, 6);
    // Two slots: two different suggestions, on disk before the worker hears of them.
    let w = register(&h, 2).await;
    let two = h.lease(&w, 2).await.unwrap();
    assert_eq!(two.len(), 2);
    assert_ne!(two[0].lease.trial, two[1].lease.trial);
    let stored = members(&db);
    assert_eq!(
        stored,
        vec![two[0].lease.trial.clone(), two[1].lease.trial.clone()]
    );
    for l in &two {
        let result = TrialResult::builder().test_accuracy(0.5).build();
        assert!(h.finish(&w, &l.lease, result).await.unwrap().accepted);
    }
    let rest = train(&h, &w, 10).await;
    assert_eq!(rest.len(), 4, "the budget is 6");
    let all = members(&db);
    assert_eq!(all.len(), 6);
    let distinct: std::collections::HashSet<&TrialId> = all.iter().collect();
    assert_eq!(distinct.len(), 6);
    let (_, counts) = h.sweep_counts("t", &[]);
    assert_eq!((counts.finished, counts.to_suggest), (6, 0));
    assert!(counts.is_done());
    assert!(h.lease(&w, 2).await.unwrap().is_empty());

    // The report shows the search: best so far, importance, parallel coordinates.
    let report = h.report("t").unwrap();
    let search = report.search.as_ref().unwrap();
    assert_eq!(search.steps.len(), 6);
    assert_eq!(
        search.steps.iter().map(|s| s.n).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    let bests: Vec<f64> = search.steps.iter().filter_map(|s| s.best).collect();
    assert!(bests.windows(2).all(|p| p[1] >= p[0]), "{bests:?}");
    assert_eq!(search.importance.len(), 2);
    let md = coordinator::report::render::markdown(&report);
    assert!(
        md.contains("## Search") && md.contains("TPE search: 6 of 6 trials"),
        "{md}"
    );
    let csv = coordinator::report::render::csv(&report);
    assert!(csv
        .lines()
        .next()
        .unwrap()
        .ends_with(",suggested,best_so_far"));
    let html = coordinator::report::html::render(&report);
    assert!(html.contains("id=\"search\"") && html.contains("parallel coordinates"));

    // The dashboard's view carries the same best so far: its improvements are the report's
    // steps where the best changed.
    let view = h.view("t", false).unwrap();
    let progress = view.search.as_ref().unwrap();
    assert_eq!((progress.budget, progress.suggested), (6, 6));
    let mut changes = search.steps.clone();
    changes.dedup_by(|b, a| b.best == a.best);
    changes.retain(|s| s.best.is_some());
    assert_eq!(progress.improvements, changes);
}

/// Three trials trained and a fourth leased when the coordinator goes (as under kill -9):
/// the trials in lease order, the worker's registration and the fourth's spec.
async fn killed_mid_search(db: &Path) -> (Vec<TrialId>, Registered, String) {
    let h = open(db);
    submit(&h, TPE);
    let reg = h.register(registration(None)).await.unwrap();
    let w = reg.worker.to_string();
    let mut first = train(&h, &w, 3).await;
    let held = h.lease(&w, 1).await.unwrap().remove(0);
    first.push(held.lease.trial);
    (first, reg, held.spec_toml.to_string())
}

/// A restart in the middle (the database reopened, as after kill -9) gives the same trials
/// in the same order as a run without one: whether the worker comes back to its lease, or
/// never does and the lease is given away.
#[tokio::test]
async fn a_restarted_coordinator_goes_on_with_the_same_search() {
    let straight = {
        let dir = tempfile::tempdir().unwrap();
        let h = open(&dir.path().join("t.db"));
        submit(&h, TPE);
        let w = register(&h, 1).await;
        train(&h, &w, 10).await
    };
    assert_eq!(straight.len(), 6);
    // The worker comes back with its id and secret: its lease is still its own.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let (mut order, reg, spec) = killed_mid_search(&db).await;
    let h = open(&db);
    let back = h
        .register(registration(Some((reg.worker.to_string(), reg.secret))))
        .await
        .unwrap();
    assert_eq!(back.worker, reg.worker, "resumed its id");
    let w = back.worker.to_string();
    let held = LeaseRef {
        trial: order[3].clone(),
        attempt: 1,
    };
    let reply = h.finish(&w, &held, result_of(&spec)).await.unwrap();
    assert!(reply.accepted, "its result counts: {reply:?}");
    order.extend(train(&h, &w, 10).await);
    assert_eq!(order, straight);
    assert_eq!(members(&db), straight);
    // The worker never comes back (a local sweep gives its leases away at once).
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let (mut order, ..) = killed_mid_search(&db).await;
    let h = open(&db);
    h.drop_restored_workers().await.unwrap();
    let w = register(&h, 1).await;
    let after = train(&h, &w, 10).await;
    assert_eq!(
        after[0], order[3],
        "the running trial is queued again, not suggested anew"
    );
    order.extend(after.into_iter().skip(1));
    assert_eq!(order, straight);
    assert_eq!(members(&db), straight);
}

/// Finished trials of an earlier sweep in the same space are prior observations: a search
/// over them does not suggest them again, and they shape its model.
#[tokio::test]
async fn earlier_sweeps_trials_are_prior_observations() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(&dir.path().join("t.db"));
    submit(
        &h,
        "name = \"grid\"\n[defaults]\nepochs = 2\n[grid]\nlr = [0.001, 0.01, 0.1]\noptimizer = [\"sgd\", \"adam\"]\n",
    );
    let w = register(&h, 1).await;
    let grid = train(&h, &w, 10).await;
    assert_eq!(grid.len(), 6);
    submit(&h, TPE);
    {
        let s = h.lock();
        let searcher = s.searcher("t").unwrap();
        assert_eq!((searcher.prior_count(), searcher.member_count()), (6, 0));
    }
    let order = train(&h, &w, 10).await;
    assert_eq!(order.len(), 6);
    assert!(
        order.iter().all(|t| !grid.contains(t)),
        "a prior trial suggested again"
    );
}

/// A cancelled search suggests nothing; submitted again, it goes on from its trials.
#[tokio::test]
async fn a_cancelled_search_stops_and_a_resubmitted_one_goes_on() {
    let (_dir, db, h) = started(TPE);
    let w = register(&h, 1).await;
    assert_eq!(train(&h, &w, 2).await.len(), 2);
    h.cancel("t").unwrap();
    assert!(h.lease(&w, 1).await.unwrap().is_empty());
    assert!(h.sweep_counts("t", &[]).1.is_done());
    submit(&h, TPE);
    assert_eq!(h.sweep_counts("t", &[]).1.to_suggest, 4);
    assert_eq!(train(&h, &w, 10).await.len(), 4);
    assert_eq!(members(&db).len(), 6);
}

/// A sweep that was a grid and is submitted again as a search starts its budget afresh: the
/// grid's trials are not its members (they stay, as prior observations).
#[tokio::test]
async fn a_grid_turned_search_does_not_count_the_grid_as_its_budget() {
    let (_dir, db, h) = started(
        "name = \"t\"\n[defaults]\nepochs = 2\n[grid]\nlr = [0.001, 0.01, 0.1]\noptimizer = [\"sgd\", \"adam\"]\n",
    );
    let w = register(&h, 1).await;
    assert_eq!(train(&h, &w, 10).await.len(), 6);
    submit(&h, TPE);
    assert!(members(&db).is_empty());
    assert_eq!(h.sweep_counts("t", &[]).1.to_suggest, 6);
    assert_eq!(h.lock().searcher("t").unwrap().prior_count(), 6);
    assert_eq!(train(&h, &w, 10).await.len(), 6);
    assert_eq!(members(&db).len(), 6);
}

/// Eight workers asking at once: suggestions are made off the core's lock, concurrently,
/// each at its own reserved position. Every one is a distinct stored trial, and the budget
/// is met exactly: no more (reservations count against it) and no fewer (each is released).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_asking_at_once_get_distinct_trials_and_the_budget_holds() {
    let (_dir, db, h) = started(
        &TPE.replace("trials = 6", "trials = 40")
            .replace("startup_trials = 2", "startup_trials = 5"),
    );
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (h, w) = (h.clone(), register(&h, 1).await);
        tasks.push(tokio::spawn(async move {
            let mut trained = 0;
            // Until the search has suggested its budget and nothing is left to lease.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while std::time::Instant::now() < deadline {
                let Some(l) = h.lease(&w, 1).await.unwrap().pop() else {
                    let (_, counts) = h.sweep_counts("t", &[]);
                    if counts.is_done() {
                        break;
                    }
                    // Another worker's suggestion is being made: ask again.
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    continue;
                };
                let acc = accuracy(&l.spec_toml);
                let result = TrialResult::builder().test_accuracy(acc).build();
                assert!(h.finish(&w, &l.lease, result).await.unwrap().accepted);
                trained += 1;
            }
            trained
        }));
    }
    let mut trained = 0;
    for t in tasks {
        trained += t.await.unwrap();
    }
    let all = members(&db);
    let distinct: std::collections::HashSet<&TrialId> = all.iter().collect();
    assert_eq!((trained, all.len(), distinct.len()), (40, 40, 40));
    let (_, counts) = h.sweep_counts("t", &[]);
    assert_eq!((counts.finished, counts.to_suggest), (40, 0));
}

/// A lease whose request goes away while its suggestion is being made (the worker hung up)
/// releases the position it reserved: the search still makes its whole budget.
#[tokio::test]
async fn a_lease_dropped_mid_suggestion_gives_its_position_back() {
    let (_dir, db, h) = started(TPE);
    let w = register(&h, 1).await;
    for _ in 0..3 {
        let mut lease = Box::pin(h.lease(&w, 1));
        // One poll: the position is reserved and the suggestion handed to a blocking thread.
        tokio::select! {
            biased;
            _ = &mut lease => {}
            _ = std::future::ready(()) => {}
        }
        drop(lease);
    }
    // Let any suggestion that was already made settle, then train the rest.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let mut trials: Vec<TrialId> = Vec::new();
    // Trials the dropped leases placed before they went away are queued: leased here too.
    trials.extend(train(&h, &w, 20).await);
    assert_eq!(members(&db).len(), 6, "the budget is 6");
    assert_eq!(trials.len(), 6);
    let (_, counts) = h.sweep_counts("t", &[]);
    assert_eq!((counts.finished, counts.to_suggest), (6, 0));
}
