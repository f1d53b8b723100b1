//! `sweep-open-load`: the coordinator's latency under an offered load (open loop).
//!
//! `sweep-load` is closed-loop: each simulated worker waits for its answer before asking
//! again, so its p99 is about N divided by throughput and hides queueing (coordinated
//! omission). Here requests arrive on a schedule instead: lease requests at a fixed rate,
//! spread over `--workers` registered workers (each lease is reported at once, as a stand-in
//! trainer that takes no time), while every worker also heartbeats at the interval the
//! coordinator gave it. Each latency runs from the request's *intended* start, so a request
//! the generator could not send on time counts its wait. Latencies go into HdrHistograms.
//!
//!     cargo build --release -p coordinator -p load-bench
//!     target/release/sweep-open-load --workers 1000 --rates 250,500,1000,2000 --readers 0,50
//!
//! For each reader count and rate it prints offered and achieved lease rates and the p50,
//! p99 and p999 of lease, result and heartbeat latency. `--readers N` adds N readers each
//! fetching `--read-path` (default `/metrics`) once a second, as Prometheus servers or
//! dashboards would. Each (readers, rate) pair runs on a fresh coordinator and database.

#[path = "../common.rs"]
#[allow(dead_code)] // sweep-load reads what this binary does not (`Served::submit_s`)
mod common;

use anyhow::{bail, Context, Result};
use clap::Parser;
use common::{cpu_seconds, serve_sweep, stand_in_result, Served, TOKEN};
use hdrhistogram::Histogram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use sweep_proto::pb::{self, coordinator_client::CoordinatorClient};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::Request;

#[derive(Parser)]
struct Args {
    /// Registered workers; each heartbeats at the coordinator's interval.
    #[arg(long, default_value_t = 1000)]
    workers: usize,
    /// Offered lease requests per second, one run each.
    #[arg(long, value_delimiter = ',', default_value = "250,500,1000,2000")]
    rates: Vec<u32>,
    /// Seconds of load per run (after every worker has registered and heartbeat once).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Readers beside the workers, one set of runs per value.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    readers: Vec<usize>,
    /// What the readers fetch from the coordinator's HTTP listener.
    #[arg(long, default_value = "/metrics")]
    read_path: String,
    /// gRPC connections the workers share (real workers have one each; 1,000 connections
    /// from one process on 2 cores measure the generator more than the coordinator).
    #[arg(long, default_value_t = 16)]
    connections: usize,
    #[arg(long, default_value = "target/release/coordinator")]
    coordinator: PathBuf,
}

/// Adds the worker token to every request (cloneable, so clients share a connection).
#[derive(Clone)]
struct AddAuth(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for AddAuth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

type Client = CoordinatorClient<tonic::service::interceptor::InterceptedService<Channel, AddAuth>>;

/// Microsecond histograms, 1 µs to 100 s, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("histogram bounds")
}

#[derive(Default)]
struct Latencies {
    lease: Option<Histogram<u64>>,
    result: Option<Histogram<u64>>,
    heartbeat: Option<Histogram<u64>>,
    read: Option<Histogram<u64>>,
}

impl Latencies {
    fn new() -> Latencies {
        Latencies {
            lease: Some(histogram()),
            result: Some(histogram()),
            heartbeat: Some(histogram()),
            read: Some(histogram()),
        }
    }
}

fn record(
    h: &Mutex<Latencies>,
    pick: fn(&mut Latencies) -> &mut Option<Histogram<u64>>,
    since: Instant,
) {
    let us = since.elapsed().as_micros().clamp(1, 100_000_000) as u64;
    let mut l = h.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(h) = pick(&mut l) {
        let _ = h.record(us);
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !args.coordinator.is_file() {
        bail!(
            "{} not found; cargo build --release -p coordinator",
            args.coordinator.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!("| readers | offered leases/s | trials done/s | lease p50 / p99 / p999 (ms) | result p50 / p99 / p999 (ms) | heartbeat p50 / p99 (ms) | heartbeats/s | reads | read p50 / p99 (ms) | coordinator CPU (cores) |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &readers in &args.readers {
        for &rate in &args.rates {
            eprintln!(
                "open-load: {} workers, {rate} leases/s, {readers} readers",
                args.workers
            );
            let line = runtime.block_on(run(&args, rate, readers))?;
            println!("{line}");
        }
    }
    Ok(())
}

async fn client(url: &str) -> Result<Client> {
    // A stalled coordinator fails its requests instead of hanging the run.
    let channel = Endpoint::from_shared(url.to_string())?
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .context("connect")?;
    let auth = AddAuth(format!("Bearer {TOKEN}").parse()?);
    Ok(CoordinatorClient::with_interceptor(channel, auth))
}

async fn run(args: &Args, rate: u32, readers: usize) -> Result<String> {
    let dir = tempfile::tempdir()?;
    // One trial per lease at most; a sweep holds at most 100,000.
    let trials = (u64::from(rate) * args.seconds + 1000).min(100_000);
    let text =
        format!("name = \"open\"\nrepeats = {trials}\n[defaults]\nmodel = \"dense\"\nepochs = 1\n");
    // The default heartbeat timeout (15 s): workers beat every 5 s, as deployed.
    let Served {
        server, url, http, ..
    } = serve_sweep(&args.coordinator, dir.path(), "open", &text, &[]).await?;
    let pid = server.0.id();
    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        clients.push(client(&url).await?);
    }
    // Register every worker first.
    let mut ids = Vec::with_capacity(args.workers);
    let mut interval_ms = 5000;
    for i in 0..args.workers {
        let r = clients[i % clients.len()]
            .clone()
            .register(pb::RegisterRequest {
                name: format!("open{i}"),
                device: pb::DeviceKind::Cpu as i32,
                slots: 1,
                ..Default::default()
            })
            .await?
            .into_inner();
        interval_ms = r.heartbeat_interval_ms.max(50);
        ids.push(r.worker_id);
    }
    let ids = Arc::new(ids);
    // Each worker's leases between grant and report, which its heartbeats list (a lease left
    // out of two heartbeats in a row is taken back).
    let held: Arc<Vec<Mutex<Vec<pb::LeaseRef>>>> =
        Arc::new((0..args.workers).map(|_| Mutex::default()).collect());
    let lat = Arc::new(Mutex::new(Latencies::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let granted = Arc::new(AtomicUsize::new(0));
    let beats = Arc::new(AtomicUsize::new(0));

    // Heartbeats: each worker at the real interval, phases spread evenly.
    let mut background = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let (mut c, id, lat, stop, beats, held) = (
            clients[i % clients.len()].clone(),
            id.clone(),
            lat.clone(),
            stop.clone(),
            beats.clone(),
            held.clone(),
        );
        let phase = Duration::from_millis(interval_ms as u64 * i as u64 / args.workers as u64);
        background.push(tokio::spawn(async move {
            tokio::time::sleep(phase).await;
            let mut tick = tokio::time::interval(Duration::from_millis(interval_ms as u64));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            while !stop.load(Ordering::Relaxed) {
                // From the tick's due time: a late heartbeat counts its wait.
                let intended = tick.tick().await.into_std();
                let running = held[i].lock().unwrap_or_else(|p| p.into_inner()).clone();
                let ok = c
                    .heartbeat(pb::HeartbeatRequest {
                        worker_id: id.clone(),
                        running,
                    })
                    .await
                    .is_ok();
                if ok {
                    record(&lat, |l| &mut l.heartbeat, intended);
                    beats.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let reads = Arc::new(AtomicUsize::new(0));
    for _ in 0..readers {
        let (lat, stop, reads, path) = (
            lat.clone(),
            stop.clone(),
            reads.clone(),
            args.read_path.clone(),
        );
        background.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let asked = Instant::now();
                if get(http, &path).await.is_ok() {
                    record(&lat, |l| &mut l.read, asked);
                    reads.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }
    // Warm-up: one heartbeat interval, so every worker has beaten once.
    tokio::time::sleep(Duration::from_millis(interval_ms as u64)).await;
    *lat.lock().unwrap_or_else(|p| p.into_inner()) = Latencies::new();
    beats.store(0, Ordering::Relaxed);
    reads.store(0, Ordering::Relaxed);
    let cpu_before = cpu_seconds(pid)?;

    // The schedule: request k is due at start + k / rate, on worker k mod N.
    let started = Instant::now();
    let total = u64::from(rate) * args.seconds;
    let mut inflight = Vec::with_capacity(total as usize);
    for k in 0..total {
        let due = started + Duration::from_secs_f64(k as f64 / f64::from(rate));
        tokio::time::sleep_until(due.into()).await;
        let i = (k as usize) % ids.len();
        let (mut c, id, lat, granted, held) = (
            clients[i % clients.len()].clone(),
            ids[i].clone(),
            lat.clone(),
            granted.clone(),
            held.clone(),
        );
        inflight.push(tokio::spawn(async move {
            let Ok(reply) = c
                .lease(pb::LeaseRequest {
                    worker_id: id.clone(),
                    free_slots: 1,
                })
                .await
            else {
                return;
            };
            record(&lat, |l| &mut l.lease, due);
            for l in reply.into_inner().leases {
                let lease = pb::LeaseRef {
                    trial_id: l.trial_id,
                    attempt: l.attempt,
                };
                held[i]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(lease.clone());
                let sent = Instant::now();
                let report = pb::ResultReport {
                    worker_id: id.clone(),
                    lease: Some(lease.clone()),
                    result: Some(stand_in_result()),
                };
                let accepted = c
                    .report_result(report)
                    .await
                    .is_ok_and(|ack| ack.into_inner().accepted);
                held[i]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|h| h != &lease);
                if accepted {
                    record(&lat, |l| &mut l.result, sent);
                    granted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in inflight {
        let _ = t.await;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = (cpu_seconds(pid)? - cpu_before) / wall;
    stop.store(true, Ordering::Relaxed);
    for t in background {
        t.abort();
    }
    drop(server);
    let l = lat.lock().unwrap_or_else(|p| p.into_inner());
    let ms = |h: &Option<Histogram<u64>>, q: f64| {
        h.as_ref()
            .map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0)
    };
    let three = |h: &Option<Histogram<u64>>| {
        format!(
            "{:.2} / {:.2} / {:.2}",
            ms(h, 0.5),
            ms(h, 0.99),
            ms(h, 0.999)
        )
    };
    Ok(format!(
        "| {readers} | {rate} | {:.0} | {} | {} | {:.2} / {:.2} | {:.0} | {} | {:.1} / {:.1} | {cpu:.2} |",
        granted.load(Ordering::Relaxed) as f64 / wall,
        three(&l.lease),
        three(&l.result),
        ms(&l.heartbeat, 0.5),
        ms(&l.heartbeat, 0.99),
        beats.load(Ordering::Relaxed) as f64 / wall,
        reads.load(Ordering::Relaxed),
        ms(&l.read, 0.5),
        ms(&l.read, 0.99),
    ))
}

/// GET `path` on the coordinator's HTTP listener; Err unless it answers 200.
async fn get(port: u16, path: &str) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut body = Vec::new();
    s.read_to_end(&mut body).await?;
    if !body.starts_with(b"HTTP/1.1 200") {
        bail!(
            "{path} answered {:?}",
            String::from_utf8_lossy(&body[..body.len().min(100)])
        );
    }
    Ok(())
}
