//! `sweep-load`: how fast one coordinator hands out trials.
//!
//! For each worker count it submits a sweep of `--trials` trials, starts a real `coordinator
//! serve` process on loopback, and runs that many simulated workers in this process, each on
//! its own gRPC connection: register, then lease one trial and report a canned result at once
//! (a stand-in trainer that takes no time), until every trial is done. It measures trials per
//! second, lease latency (p50/p99, as the worker sees it), the coordinator's CPU time and peak
//! memory (from /proc) and the database size, and prints a markdown table.
//!
//!     cargo build --release -p coordinator -p load-bench
//!     target/release/sweep-load --workers 10,100,1000 --trials 100000
//!
//! `--search tpe` runs a TPE search of `--trials` trials over 8 hyperparameters instead of a
//! grid: every lease then makes a suggestion (off the coordinator's core lock).
//!
//! `--pollers 0,50` repeats each run with that many status pollers beside the workers, as
//! dashboards and `coordinator status` would be: half call `Admin.SweepStatus` over gRPC, half
//! fetch the dashboard's `/api/sweeps/NAME` (with curves) over HTTP, each once a second (one
//! second after its previous answer, as the dashboard page does).

mod common;

use anyhow::{bail, Context, Result};
use clap::Parser;
use common::{cpu_seconds, serve_sweep, stand_in_result, Served, ADMIN_TOKEN, TOKEN};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use sweep_proto::pb::{self, coordinator_client::CoordinatorClient};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::Request;

#[derive(Parser)]
struct Args {
    /// Worker counts to measure, one run each.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    workers: Vec<usize>,
    /// Trials per run.
    #[arg(long, default_value_t = 100_000)]
    trials: usize,
    /// The coordinator binary.
    #[arg(long, default_value = "target/release/coordinator")]
    coordinator: PathBuf,
    /// Status pollers beside the workers, one run per value.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pollers: Vec<usize>,
    /// The sweep: "grid" (one configuration, `--trials` seeds) or "tpe" (a TPE search of
    /// `--trials` trials over 8 hyperparameters, each suggested as a worker asks).
    #[arg(long, default_value = "grid")]
    search: String,
}

/// The sweep file of a run.
fn sweep_text(search: &str, trials: usize) -> Result<String> {
    Ok(match search {
        "grid" => format!(
            "name = \"load\"\nrepeats = {trials}\n[defaults]\nmodel = \"dense\"\nepochs = 1\n"
        ),
        "tpe" => format!(
            "name = \"load\"\nsearch = \"tpe\"\ntrials = {trials}\n[defaults]\nmodel = \"dense\"\nepochs = 2\n\
             [grid]\nlr = {{ min = 1e-5, max = 1.0, log = true }}\nmomentum = {{ min = 0.0, max = 0.99 }}\n\
             weight_decay = {{ min = 1e-6, max = 1e-2, log = true }}\nlabel_smoothing = {{ min = 0.0, max = 0.3 }}\n\
             warmup_epochs = {{ min = 0.0, max = 0.9 }}\nstep_gamma = {{ min = 0.1, max = 0.9 }}\n\
             validation_split = {{ min = 0.05, max = 0.3 }}\nbatch_size = {{ min = 16, max = 256, log = true }}\n"
        ),
        other => bail!("--search {other}: give grid or tpe"),
    })
}

struct Row {
    workers: usize,
    pollers: usize,
    polls: usize,
    poll_p50_ms: f64,
    poll_p99_ms: f64,
    trials: usize,
    submit_s: f64,
    wall_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_cores: f64,
    peak_rss_mb: f64,
    db_mb: f64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !args.coordinator.is_file() {
        bail!(
            "{} not found; build it: cargo build --release -p coordinator",
            args.coordinator.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for &n in &args.workers {
        for &p in &args.pollers {
            eprintln!("load: {n} workers, {p} pollers, {} trials", args.trials);
            let row = runtime.block_on(run(&args.coordinator, n, args.trials, p, &args.search))?;
            eprintln!(
                "load: {:.0} trials/s, lease p50 {:.2} ms p99 {:.2} ms",
                row.trials as f64 / row.wall_s,
                row.p50_ms,
                row.p99_ms
            );
            rows.push(row);
        }
    }
    println!("| workers | pollers | trials | submit (s) | run (s) | trials/s | lease p50 (ms) | lease p99 (ms) | polls | poll p50 (ms) | poll p99 (ms) | coordinator CPU (cores) | coordinator peak RSS (MB) | database (MB) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.0} | {:.2} | {:.2} | {} | {:.1} | {:.1} | {:.2} | {:.0} | {:.1} |",
            r.workers,
            r.pollers,
            r.trials,
            r.submit_s,
            r.wall_s,
            r.trials as f64 / r.wall_s,
            r.p50_ms,
            r.p99_ms,
            r.polls,
            r.poll_p50_ms,
            r.poll_p99_ms,
            r.cpu_cores,
            r.peak_rss_mb,
            r.db_mb
        );
    }
    Ok(())
}

async fn run(
    bin: &Path,
    workers: usize,
    trials: usize,
    pollers: usize,
    search: &str,
) -> Result<Row> {
    let dir = tempfile::tempdir()?;
    // Heartbeats are not simulated: a long timeout keeps the workers' leases.
    let Served {
        server,
        url,
        http,
        submit_s,
    } = serve_sweep(
        bin,
        dir.path(),
        "load",
        &sweep_text(search, trials)?,
        &["--heartbeat-timeout", "600"],
    )
    .await?;
    let pid = server.0.id();

    let cpu_before = cpu_seconds(pid)?;
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..workers {
        let (url, done) = (url.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            simulated_worker(&url, i, trials, &done).await
        }));
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut polls = Vec::new();
    for i in 0..pollers {
        let (url, stop) = (url.clone(), stop.clone());
        polls.push(tokio::spawn(async move {
            if i % 2 == 0 {
                grpc_poller(&url, &stop).await
            } else {
                http_poller(http, &stop).await
            }
        }));
    }
    let mut latencies: Vec<u32> = Vec::with_capacity(trials + workers);
    for t in tasks {
        latencies.extend(t.await??);
    }
    let wall_s = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    let mut poll_latencies: Vec<u32> = Vec::new();
    for p in polls {
        poll_latencies.extend(p.await??);
    }
    poll_latencies.sort_unstable();
    let poll_pct = |p: f64| {
        poll_latencies
            .get(((poll_latencies.len().max(1) - 1) as f64 * p) as usize)
            .map_or(0.0, |v| *v as f64 / 1000.0)
    };
    let cpu_cores = (cpu_seconds(pid)? - cpu_before) / wall_s;
    let peak_rss_mb = status_kb(pid, "VmHWM:")? / 1024.0;
    drop(server);
    let db_bytes: u64 = ["load.db", "load.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.path().join(f)).ok())
        .map(|m| m.len())
        .sum();
    let finished = done.load(Ordering::SeqCst);
    if finished != trials {
        bail!("{finished} of {trials} trials were reported");
    }
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    Ok(Row {
        workers,
        pollers,
        polls: poll_latencies.len(),
        poll_p50_ms: poll_pct(0.50),
        poll_p99_ms: poll_pct(0.99),
        trials,
        submit_s,
        wall_s,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        cpu_cores,
        peak_rss_mb,
        db_mb: db_bytes as f64 / 1e6,
    })
}

/// Adds the worker token to every request.
type AddAuth = Box<dyn FnMut(Request<()>) -> Result<Request<()>, tonic::Status> + Send>;
type Client = CoordinatorClient<tonic::service::interceptor::InterceptedService<Channel, AddAuth>>;

/// One worker with a stand-in trainer; returns its lease latencies in microseconds.
async fn simulated_worker(
    url: &str,
    i: usize,
    trials: usize,
    done: &AtomicUsize,
) -> Result<Vec<u32>> {
    let channel = Endpoint::from_shared(url.to_string())?
        .connect()
        .await
        .context("connect")?;
    let auth: MetadataValue<_> = format!("Bearer {TOKEN}").parse()?;
    let add: AddAuth = Box::new(move |mut req: Request<()>| {
        req.metadata_mut().insert("authorization", auth.clone());
        Ok(req)
    });
    let mut client: Client = CoordinatorClient::with_interceptor(channel, add);
    let worker_id = client
        .register(pb::RegisterRequest {
            name: format!("sim{i}"),
            device: pb::DeviceKind::Cpu as i32,
            slots: 1,
            ..Default::default()
        })
        .await?
        .into_inner()
        .worker_id;
    let result = stand_in_result();
    let mut latencies = Vec::new();
    loop {
        let asked = Instant::now();
        let leases = client
            .lease(pb::LeaseRequest {
                worker_id: worker_id.clone(),
                free_slots: 1,
            })
            .await?
            .into_inner()
            .leases;
        latencies.push(asked.elapsed().as_micros() as u32);
        if leases.is_empty() {
            if done.load(Ordering::SeqCst) >= trials {
                return Ok(latencies);
            }
            // Others hold the last leases; real workers ask again at their next heartbeat.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        for l in leases {
            let ack = client
                .report_result(pb::ResultReport {
                    worker_id: worker_id.clone(),
                    lease: Some(pb::LeaseRef {
                        trial_id: l.trial_id,
                        attempt: l.attempt,
                    }),
                    result: Some(result.clone()),
                })
                .await?
                .into_inner();
            if !ack.accepted {
                bail!("result refused: {}", ack.reason);
            }
            done.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// `Admin.SweepStatus` once a second until `stop`; returns latencies in microseconds.
async fn grpc_poller(url: &str, stop: &std::sync::atomic::AtomicBool) -> Result<Vec<u32>> {
    let channel = Endpoint::from_shared(url.to_string())?.connect().await?;
    let auth: MetadataValue<_> = format!("Bearer {ADMIN_TOKEN}").parse()?;
    let add: AddAuth = Box::new(move |mut req: Request<()>| {
        req.metadata_mut().insert("authorization", auth.clone());
        Ok(req)
    });
    let mut client = pb::admin_client::AdminClient::with_interceptor(channel, add)
        .max_decoding_message_size(256 * 1024 * 1024);
    let mut latencies = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let asked = Instant::now();
        client
            .sweep_status(pb::SweepStatusRequest {
                sweep: "load".into(),
                curves: false,
            })
            .await?;
        latencies.push(asked.elapsed().as_micros() as u32);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(latencies)
}

/// The dashboard's `GET /api/sweeps/load` once a second until `stop`.
async fn http_poller(port: u16, stop: &std::sync::atomic::AtomicBool) -> Result<Vec<u32>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut latencies = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let asked = Instant::now();
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(
            b"GET /api/sweeps/load HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .await?;
        let mut body = Vec::new();
        s.read_to_end(&mut body).await?;
        if !body.starts_with(b"HTTP/1.1 200") {
            bail!(
                "dashboard answered {:?}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            );
        }
        latencies.push(asked.elapsed().as_micros() as u32);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(latencies)
}

/// A `/proc/PID/status` field in kB.
fn status_kb(pid: u32, field: &str) -> Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("{field} missing"))?;
    Ok(line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?)
}
