//! `coordinator`: plan and run sweeps.
//!
//!   coordinator plan grid.toml [--force]
//!   coordinator sweep grid.toml [--local-workers N] [--out DIR] [--listen ADDR] [--rerun]
//!   coordinator serve --listen ADDR --db PATH
//!   coordinator submit grid.toml --db PATH [--rerun]
//!   coordinator status [SWEEP] --db PATH
//!   coordinator cancel SWEEP --db PATH
//!   coordinator report SWEEP --db PATH [--out DIR]

mod local;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use coordinator::core::Config;
use coordinator::report::Report;
use coordinator::service::{Handle, TokenCheck};
use coordinator::sweep::{self, Sweep, MAX_TRIALS};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use sweep_proto::pb::coordinator_server::CoordinatorServer;

#[derive(Parser)]
#[command(
    name = "coordinator",
    version,
    about = "Runs hyperparameter sweeps of CIFAR-10 trials on workers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the trials a sweep file expands to, without running anything.
    Plan {
        sweep: PathBuf,
        /// Allow more than 1000 trials.
        #[arg(long)]
        force: bool,
    },
    /// Run a sweep on this machine: an embedded coordinator plus local worker processes
    /// (remote workers may join). Ctrl-C stops; running it again resumes.
    Sweep {
        sweep: PathBuf,
        /// Local worker processes (default: one per GPU, else one). 0 waits for remote workers.
        #[arg(long)]
        local_workers: Option<u32>,
        /// Report and database directory (default: out/<sweep name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Address for workers; use 0.0.0.0:PORT to accept remote workers.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Device for the local workers.
        #[arg(long, default_value = "auto")]
        device: String,
        /// Train finished trials again instead of reusing their results.
        #[arg(long)]
        rerun: bool,
        #[arg(long)]
        force: bool,
        /// The worker binary (default: `worker` next to this binary).
        #[arg(long, env = "SWEEP_WORKER_BIN")]
        worker_bin: Option<PathBuf>,
        /// Seconds without a heartbeat before a worker is declared lost.
        #[arg(long, default_value_t = 15.0)]
        heartbeat_timeout: f64,
        #[arg(long, short)]
        quiet: bool,
    },
    /// Run a long-lived coordinator for remote workers. The token comes from $SWEEP_TOKEN or
    /// --token-file; sweeps are added with `submit` against the same database.
    Serve {
        #[arg(long, default_value = "0.0.0.0:50051")]
        listen: String,
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        token_file: Option<PathBuf>,
        #[arg(long, default_value_t = 15.0)]
        heartbeat_timeout: f64,
    },
    /// Add a sweep to a coordinator's database; a running `serve` picks it up.
    Submit {
        sweep: PathBuf,
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        rerun: bool,
        #[arg(long)]
        force: bool,
    },
    /// Trial counts per sweep.
    Status {
        sweep: Option<String>,
        #[arg(long)]
        db: PathBuf,
    },
    /// Cancel a sweep: queued trials are dropped, running ones stopped.
    Cancel {
        sweep: String,
        #[arg(long)]
        db: PathBuf,
    },
    /// Write report.md, results.json and results.csv for a sweep.
    Report {
        sweep: String,
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(Cli::parse())) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads a sweep file and enforces the trial limit.
fn load_sweep(path: &Path, force: bool) -> Result<Sweep> {
    let sweep = sweep::load(path)?;
    if sweep.trials.len() > MAX_TRIALS && !force {
        bail!("{}: the sweep expands to {} trials, over the limit of {MAX_TRIALS}; pass --force to run it anyway", path.display(), sweep.trials.len());
    }
    Ok(sweep)
}

fn config(heartbeat_timeout: f64) -> Result<Config> {
    if !(heartbeat_timeout.is_finite() && heartbeat_timeout > 0.0) {
        bail!("--heartbeat-timeout must be a positive number of seconds");
    }
    Ok(Config {
        heartbeat_timeout_ms: (heartbeat_timeout * 1000.0) as u64,
        ..Config::default()
    })
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Plan { sweep, force } => {
            let s = load_sweep(&sweep, force)?;
            print!("{}", plan_table(&s));
            println!("{} trials", s.trials.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Sweep {
            sweep,
            local_workers,
            out,
            listen,
            device,
            rerun,
            force,
            worker_bin,
            heartbeat_timeout,
            quiet,
        } => {
            let s = load_sweep(&sweep, force)?;
            let out = out.unwrap_or_else(|| Path::new("out").join(&s.name));
            let opts = local::Options {
                local_workers,
                listen,
                device,
                rerun,
                worker_bin,
                config: config(heartbeat_timeout)?,
                quiet,
            };
            local::run_sweep(s, &out, opts).await
        }
        Command::Serve {
            listen,
            db,
            token_file,
            heartbeat_timeout,
        } => {
            let token =
                sweep_proto::read_token(token_file.as_deref()).map_err(anyhow::Error::msg)?;
            let handle = Handle::open(&db, config(heartbeat_timeout)?)?;
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            eprintln!(
                "coordinator: serving workers on {} (database {})",
                listener.local_addr()?,
                db.display()
            );
            serve(handle, listener, &token, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Submit {
            sweep,
            db,
            rerun,
            force,
        } => {
            let s = load_sweep(&sweep, force)?;
            let handle = Handle::open(&db, Config::default())?;
            handle.submit(&s, rerun)?;
            println!("submitted sweep `{}`: {} trials", s.name, s.trials.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { sweep, db } => {
            let handle = Handle::open(&db, Config::default())?;
            let names = match sweep {
                Some(n) => vec![n],
                None => handle.lock().store.sweep_names()?,
            };
            for name in names {
                let stored = handle
                    .sweep(&name)?
                    .with_context(|| format!("no sweep named `{name}` in {}", db.display()))?;
                let c = handle.lock().store.state_counts(&name)?;
                println!(
                    "{name}: {c}{}",
                    if stored.cancelled { " (cancelled)" } else { "" }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cancel { sweep, db } => {
            let handle = Handle::open(&db, Config::default())?;
            handle
                .sweep(&sweep)?
                .with_context(|| format!("no sweep named `{sweep}` in {}", db.display()))?;
            let n = handle.cancel(&sweep)?.len();
            println!("cancelled sweep `{sweep}`: {n} unfinished trials stopped");
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { sweep, db, out } => {
            let handle = Handle::open(&db, Config::default())?;
            let stored = handle
                .sweep(&sweep)?
                .with_context(|| format!("no sweep named `{sweep}` in {}", db.display()))?;
            let report = Report::build(&stored, &handle.lock().core);
            let out = out.unwrap_or_else(|| Path::new("out").join(&sweep));
            report
                .write(&out)
                .with_context(|| format!("cannot write the report to {}", out.display()))?;
            print!("{}", report.table());
            println!("report written to {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Serves the gRPC API on `listener` until `shutdown`, expiring silent workers meanwhile.
pub async fn serve(
    handle: Handle,
    listener: tokio::net::TcpListener,
    token: &str,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let ticker = {
        let handle = handle.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(250));
            loop {
                every.tick().await;
                if let Err(e) = handle.tick() {
                    tracing::error!("{e}");
                }
            }
        })
    };
    let svc = CoordinatorServer::with_interceptor(handle, TokenCheck::new(token));
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let served = tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    ticker.abort();
    served.context("gRPC server failed")
}

fn plan_table(s: &Sweep) -> String {
    let mut head = vec!["#".to_string(), "trial".to_string()];
    let labels = s.trials.iter().any(|t| t.label.is_some());
    if labels {
        head.push("label".into());
    }
    head.extend(s.axes.iter().cloned());
    let mut out = format!("| {} |\n|{}\n", head.join(" | "), "---|".repeat(head.len()));
    for (i, t) in s.trials.iter().enumerate() {
        let params = serde_json::to_value(&t.spec).unwrap_or_default();
        let mut cells = vec![(i + 1).to_string(), t.id.clone()];
        if labels {
            cells.push(t.label.clone().unwrap_or_default());
        }
        for a in &s.axes {
            cells.push(match params.get(a) {
                Some(serde_json::Value::String(v)) => v.clone(),
                Some(v) => v.to_string(),
                None => "-".into(),
            });
        }
        out += &format!("| {} |\n", cells.join(" | "));
    }
    out
}
