//! `coordinator sweep`: the one-machine default. An embedded coordinator, N local worker
//! processes, a live progress display, and the report when every trial has ended.

use anyhow::{bail, Context, Result};
use coordinator::api::server::{serve, Tokens};
use coordinator::app::Handle;
use coordinator::plan::Sweep;
use coordinator::sched::core::{Config, TrialId, TrialState};
use coordinator::store::ServerLock;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;
use tokio::process::{Child, Command};

pub struct Options {
    pub local_workers: Option<u32>,
    pub listen: String,
    pub device: String,
    pub rerun: bool,
    pub worker_bin: Option<PathBuf>,
    pub config: Config,
    pub quiet: bool,
    /// Serve the dashboard here.
    pub http_listen: Option<String>,
    /// The admin token (else a new one in OUT/admin-token).
    pub admin_token: Option<String>,
}

/// GPUs visible to `nvidia-smi`, without linking CUDA: one local worker per GPU.
fn gpu_count() -> u32 {
    std::process::Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.starts_with("GPU "))
                .count() as u32
        })
        .unwrap_or(0)
}

fn worker_binary(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    let exe = std::env::current_exe().context("cannot locate this binary")?;
    let sibling = exe.with_file_name("worker");
    if sibling.is_file() {
        return Ok(sibling);
    }
    bail!("no `worker` binary next to {}; build it (cargo build --release -p worker) or pass --worker-bin", exe.display())
}

/// A random token for this run, written to OUT/`file` (mode 0600): `worker-token` so that
/// remote workers can join with `--token-file`, `admin-token` for `watch`/`status`/`cancel`
/// from another terminal.
fn make_token(out: &Path, file: &str) -> Result<String> {
    let token = coordinator::api::tls::random_token();
    let path = out.join(file);
    coordinator::api::tls::write_private(&path, &token)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(token)
}

/// How the local workers are started: all alike but for their number.
struct LocalWorkers<'a> {
    bin: PathBuf,
    url: &'a str,
    token: &'a str,
    device: &'a str,
    data: Option<&'a Path>,
    /// libtorch threads each (the machine's cores shared out).
    threads: u32,
}

fn spawn_worker(w: &LocalWorkers, n: u32, out: &Path) -> Result<Child> {
    let LocalWorkers {
        bin,
        url,
        token,
        device,
        data,
        threads,
    } = w;
    let log_path = out.join(format!("worker-{n}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let mut cmd = Command::new(bin);
    cmd.args([
        "--coordinator",
        url,
        "--device",
        device,
        "--name",
        &format!("local-{n}"),
        "--threads",
        &threads.to_string(),
    ])
    .env("SWEEP_TOKEN", token)
    // The worker exits when this process does, even if it is killed with SIGKILL and never
    // gets to stop it (it watches its parent: see the worker's --exit-with-parent).
    .env("SWEEP_EXIT_WITH_PARENT", std::process::id().to_string())
    .env(
        "RUST_LOG",
        std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
    )
    .stdin(Stdio::null())
    .stdout(log.try_clone()?)
    .stderr(log)
    .kill_on_drop(true);
    if let Some(d) = data {
        cmd.arg("--data").arg(d);
    }
    cmd.spawn()
        .with_context(|| format!("cannot start {}", bin.display()))
}

/// One line about the running trials: id, epoch and latest accuracy.
fn running_line(handle: &Handle, ids: &[TrialId]) -> String {
    let s = handle.lock();
    let mut parts = Vec::new();
    for id in ids {
        if let Some(TrialState::Running { epochs, .. }) = s.core.trial(id).map(|t| &t.state) {
            let total = s.core.trial(id).map_or(0, |t| t.spec.epochs);
            let last = epochs.iter().max_by_key(|e| e.epoch);
            parts.push(match last {
                Some(e) => format!(
                    "{} e{}/{} acc {:.1}%",
                    &id[..8.min(id.len())],
                    e.epoch,
                    total,
                    100.0 * e.val_accuracy.unwrap_or(e.train_accuracy)
                ),
                None => format!("{} e0/{total}", &id[..8.min(id.len())]),
            });
        }
    }
    parts.join(" | ")
}

pub async fn run_sweep(sweep: Sweep, out: &Path, opts: Options) -> Result<ExitCode> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let db = out.join("sweep.db");
    let _lock = ServerLock::acquire(&db, &format!("coordinator sweep {}", sweep.file.display()))?;
    let handle = Handle::open(&db, opts.config)?;
    // The local workers of an earlier run of this sweep died with it: none will resume.
    handle.drop_restored_workers().await?;
    let submitted = handle.submit(&sweep, opts.rerun)?;
    for line in crate::submitted_lines(&crate::SubmitNotes::from(&submitted)) {
        eprintln!("{line}");
    }
    let planned: Vec<TrialId> = sweep.trials.iter().map(|t| t.id.clone()).collect();
    let (_, counts) = handle.sweep_counts(&sweep.name, &planned);
    if counts.finished > 0 {
        eprintln!(
            "reusing {} finished trials from {}",
            counts.finished,
            db.display()
        );
    }
    if !counts.is_done() {
        let outcome = train_here(&handle, &sweep, &planned, out, &opts).await?;
        // The last models may have come after the last tick: keep only what the sweep keeps.
        let h = handle.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || h.prune_models()).await {
            tracing::warn!("{}: pruning trained models: {e}", db.display());
        }
        if let Err(e) = handle.checkpoint().await {
            tracing::warn!("{}: final checkpoint failed: {e}", db.display());
        }
        if let Err(e) = outcome {
            return match e {
                Stop::Interrupted => {
                    eprintln!("stopped; finished results are kept in {}. Run the same command again to resume.", db.display());
                    Ok(ExitCode::from(130))
                }
                Stop::Failed(e) => Err(e),
            };
        }
    }
    // Built from a snapshot, outside the core's lock (the server may still be answering).
    let report = handle.report(&sweep.name)?;
    coordinator::report::render::write(&report, out)
        .with_context(|| format!("cannot write the report to {}", out.display()))?;
    print!("{}", coordinator::report::render::terminal(&report));
    let (_, counts) = handle.sweep_counts(&sweep.name, &planned);
    println!("{counts}; report in {}", out.display());
    Ok(ExitCode::SUCCESS)
}

/// Serves the sweep's trials to local workers (and any remote ones) until they have all
/// ended, Ctrl-C, or no worker is left; then stops the workers and the server.
async fn train_here(
    handle: &Handle,
    sweep: &Sweep,
    ids: &[TrialId],
    out: &Path,
    opts: &Options,
) -> Result<Result<(), Stop>> {
    let tokens = Tokens {
        worker: make_token(out, "worker-token")?,
        admin: Some(match opts.admin_token.clone() {
            Some(t) => t,
            None => make_token(out, "admin-token")?,
        }),
    };
    let listener = tokio::net::TcpListener::bind(&opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = {
        let (handle, tokens) = (handle.clone(), tokens.clone());
        tokio::spawn(async move {
            serve(handle, listener, &tokens, None, async {
                let _ = stop_rx.await;
            })
            .await
        })
    };
    let n_local = opts.local_workers.unwrap_or_else(|| gpu_count().max(1));
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    let url = format!("http://{host}:{}", addr.port());
    let dashboard = match &opts.http_listen {
        Some(a) => Some(
            coordinator::api::dashboard::spawn(a, handle.clone(), &tokens)
                .await
                .with_context(|| format!("cannot listen on {a} for the dashboard"))?,
        ),
        None => None,
    };
    if !opts.quiet {
        announce(
            sweep,
            n_local,
            &url,
            out,
            opts.admin_token.is_none(),
            dashboard,
        );
    }
    let mut workers = spawn_workers(sweep, n_local, &url, &tokens.worker, out, opts)?;
    let outcome = watch(handle, sweep, ids, &mut workers, out, opts.quiet).await;
    for w in &mut workers {
        let _ = w.kill().await;
    }
    let _ = stop_tx.send(());
    let _ = server.await;
    Ok(outcome)
}

/// Where the sweep runs and how to follow it from elsewhere.
fn announce(
    sweep: &Sweep,
    n_local: u32,
    url: &str,
    out: &Path,
    admin_token_written: bool,
    dashboard: Option<std::net::SocketAddr>,
) {
    let n = sweep.size();
    eprintln!(
        "sweep `{}`: {}{n} trial{} on {n_local} local worker{}; remote workers may join at {url} with --token-file {}",
        sweep.name,
        if sweep.search.is_some() { "a TPE search of " } else { "" },
        if n == 1 { "" } else { "s" },
        if n_local == 1 { "" } else { "s" },
        out.join("worker-token").display()
    );
    if admin_token_written {
        eprintln!(
            "  from another terminal: coordinator watch {} --server {url} --token-file {}",
            sweep.name,
            out.join("admin-token").display()
        );
    }
    if let Some(d) = dashboard {
        eprintln!("  dashboard: http://{d}/#/sweep/{}", sweep.name);
    }
}

/// Starts `n_local` worker processes sharing this machine's cores.
fn spawn_workers(
    sweep: &Sweep,
    n_local: u32,
    url: &str,
    token: &str,
    out: &Path,
    opts: &Options,
) -> Result<Vec<Child>> {
    let mut workers = Vec::new();
    // The local workers share this machine's cores: libtorch alone would give each one a
    // thread per core, and two workers on 2 cores then trained a dense-model epoch in
    // 16-25 s instead of 2.5 s (bench/asha.sh, before this split).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    if let Some(threads) = cores.checked_div(n_local) {
        let local = LocalWorkers {
            bin: worker_binary(opts.worker_bin.clone())?,
            url,
            token,
            device: &opts.device,
            data: sweep
                .data
                .as_deref()
                .filter(|d| *d != Path::new(coordinator::plan::FETCH)),
            threads: threads.max(1),
        };
        for n in 1..=n_local {
            workers.push(spawn_worker(&local, n, out)?);
        }
    }
    Ok(workers)
}

enum Stop {
    Interrupted,
    Failed(anyhow::Error),
}

/// Shows progress until every trial has ended, Ctrl-C, or no worker is left.
async fn watch(
    handle: &Handle,
    sweep: &Sweep,
    planned: &[TrialId],
    workers: &mut [Child],
    out: &Path,
    quiet: bool,
) -> Result<(), Stop> {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(sweep.size() as u64)
    };
    if let Ok(style) = ProgressStyle::with_template(
        "[{elapsed_precise}] {bar:30} {pos}/{len} trials ({prefix})\n  {wide_msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut every = tokio::time::interval(Duration::from_millis(500));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut idle_since: Option<std::time::Instant> = None;
    let started = std::time::Instant::now();
    let ended = |c: &coordinator::sched::core::Counts| c.finished + c.failed + c.cancelled;
    let ended_at_start = ended(&handle.sweep_counts(&sweep.name, planned).1);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => {
                bar.abandon();
                return Err(Stop::Interrupted);
            }
            _ = every.tick() => {}
        }
        let (ids, c) = handle.sweep_counts(&sweep.name, planned);
        bar.set_position(ended(&c) as u64);
        // ETA from the trials this run has finished (reused ones took no time).
        let done_here = ended(&c).saturating_sub(ended_at_start);
        let eta = if done_here == 0 {
            "eta: after the first trial".to_string()
        } else {
            let per_trial = started.elapsed().as_secs_f64() / done_here as f64;
            let left = (c.queued + c.running) as f64 * per_trial;
            format!(
                "eta {}",
                indicatif::HumanDuration(Duration::from_secs_f64(left))
            )
        };
        bar.set_prefix(format!("{} running, {} failed, {eta}", c.running, c.failed));
        bar.set_message(running_line(handle, &ids));
        if c.is_done() {
            bar.finish_and_clear();
            return Ok(());
        }
        // All local workers gone and nobody else connected: say so instead of hanging.
        let alive = workers
            .iter_mut()
            .map(|w| w.try_wait())
            .filter(|s| matches!(s, Ok(None)))
            .count();
        let remote = handle.lock().core.workers().count();
        if !workers.is_empty() && alive == 0 && remote == 0 {
            let since = *idle_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() > Duration::from_secs(2) {
                bar.abandon();
                return Err(Stop::Failed(anyhow::anyhow!(
                    "every local worker exited with trials left; see {}/worker-*.log",
                    out.display()
                )));
            }
        } else {
            idle_since = None;
        }
    }
}
