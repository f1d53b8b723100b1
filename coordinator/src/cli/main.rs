//! `coordinator`: plan and run sweeps.
//!
//!   coordinator plan grid.toml [--force]
//!   coordinator sweep grid.toml [--local-workers N] [--out DIR] [--listen ADDR] [--rerun]
//!                    [--http-listen ADDR]
//!   coordinator serve --listen ADDR --db PATH [--tls-cert F --tls-key F [--tls-client-ca F] | --plaintext]
//!                    [--http-listen ADDR] [--admin-token-file F]
//!   coordinator tls init --out DIR --host NAME...
//!
//! Admin commands go to a running coordinator (`--server URL`, admin token from
//! $SWEEP_ADMIN_TOKEN or --token-file, TLS flags as workers have them), or to a database no
//! coordinator holds (`--db PATH`):
//!
//!   coordinator submit grid.toml [--rerun] [--force]
//!   coordinator status [SWEEP]
//!   coordinator cancel SWEEP [--trial ID]
//!   coordinator rerun SWEEP
//!   coordinator report SWEEP [--out DIR]
//!   coordinator watch SWEEP --server URL

mod local;
mod remote;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use coordinator::api::server::{serve, Tokens};
use coordinator::api::tls::ServerTls;
use coordinator::app::Handle;
use coordinator::plan::{self, Sweep};
use coordinator::sched::core::Config;
use coordinator::store::ServerLock;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use sweep_proto::tls::ClientTls;

#[derive(Parser)]
#[command(
    name = "coordinator",
    version,
    about = "Runs hyperparameter sweeps of CIFAR-10 trials on workers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text, or as one JSON object per line with the ids as fields.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: sweep_proto::observe::LogFormat,
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
    Sweep(SweepArgs),
    /// Run a long-lived coordinator for remote workers and admin commands. The worker token
    /// comes from $SWEEP_TOKEN or --token-file, the admin token from $SWEEP_ADMIN_TOKEN or
    /// --admin-token-file; sweeps are added with `submit --server`.
    Serve(ServeArgs),
    /// Certificates for TLS/mTLS between the coordinator and its workers.
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
    /// Add a sweep to a running coordinator (`--server`), or to a database no coordinator
    /// holds (`--db`; a `serve` started on it later runs it).
    Submit {
        sweep: PathBuf,
        #[command(flatten)]
        target: Target,
        /// Train finished trials again instead of reusing their results.
        #[arg(long)]
        rerun: bool,
        /// Allow more than 1000 trials.
        #[arg(long)]
        force: bool,
    },
    /// Trial counts per sweep, or one sweep's trials (state, attempt, epoch, accuracy, worker).
    Status {
        sweep: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Cancel a sweep (queued trials are dropped, running ones stopped), or one trial of it.
    Cancel {
        sweep: String,
        /// Only this trial (its id, as `status SWEEP` lists it).
        #[arg(long)]
        trial: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Queue the failed and cancelled trials of a sweep again (finished results are kept).
    Rerun {
        sweep: String,
        #[command(flatten)]
        target: Target,
    },
    /// Write report.md, results.json, results.csv and report.html for a sweep (and, for a
    /// PBT population, replay.toml: its best member's whole schedule).
    Report {
        sweep: String,
        #[command(flatten)]
        target: Target,
        /// Output directory (default: out/<sweep>).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Fetch a trained model the sweep kept (keep_models): model.safetensors and model.json,
    /// for `worker eval`, `worker predict` or PyTorch, and trial.toml, to train it again.
    Export {
        sweep: String,
        /// This trial's model (default: the best-ranked trial that has one).
        #[arg(long, conflicts_with = "best")]
        trial: Option<String>,
        /// The best-ranked trial's model (the default).
        #[arg(long)]
        best: bool,
        #[command(flatten)]
        target: Target,
        /// Output directory (default: out/<sweep>/model).
        #[arg(long)]
        out: Option<PathBuf>,
        /// With --db: the checkpoint directory `serve --checkpoint-dir` was given (models are
        /// kept in its models/; default DB.checkpoints).
        #[arg(long, requires = "db")]
        checkpoint_dir: Option<PathBuf>,
    },
    /// Follow a sweep on a running coordinator: progress, running trials, results as they
    /// come; ends when every trial has ended.
    Watch {
        sweep: String,
        #[command(flatten)]
        client: ClientArgs,
        /// The coordinator's gRPC address, e.g. https://coord.lab:50051.
        #[arg(long)]
        server: String,
        /// Print events as lines, without the progress bar.
        #[arg(long, short)]
        quiet: bool,
    },
}

#[derive(clap::Args)]
struct SweepArgs {
    sweep: PathBuf,
    /// Local worker processes (default: one per GPU, else one). 0 waits for remote workers.
    #[arg(long)]
    local_workers: Option<u32>,
    /// Report and database directory (default: out/<sweep name>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Address for workers; use 0.0.0.0:PORT (with --plaintext) to accept remote workers.
    /// For TLS between machines use `serve` instead.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Allow remote workers without TLS when --listen is not a loopback address.
    #[arg(long)]
    plaintext: bool,
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
    /// Serve the live dashboard on this address (e.g. 127.0.0.1:8080).
    #[arg(long)]
    http_listen: Option<String>,
    /// File holding the admin token for `watch`, `status`, `cancel` from another terminal
    /// (default: $SWEEP_ADMIN_TOKEN, else a new one written to OUT/admin-token).
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    #[arg(long, short)]
    quiet: bool,
}

#[derive(clap::Args)]
struct ServeArgs {
    #[arg(long, default_value = "0.0.0.0:50051")]
    listen: String,
    #[arg(long)]
    db: PathBuf,
    /// File holding the worker token (default: $SWEEP_TOKEN).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// File holding the admin token (default: $SWEEP_ADMIN_TOKEN). Without one, the Admin
    /// API refuses every call.
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    #[arg(long, default_value_t = 15.0)]
    heartbeat_timeout: f64,
    #[command(flatten)]
    tls: TlsArgs,
    /// Serve the live dashboard, /metrics, /healthz and /readyz over HTTP on this address (e.g.
    /// 127.0.0.1:8080). Off loopback, the dashboard needs the admin token.
    #[arg(long, alias = "health-listen")]
    http_listen: Option<String>,
    /// Where running trials' checkpoints are kept (default: DB.checkpoints beside the
    /// database; in Kubernetes, on the same volume).
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
}

/// Where an admin command goes: a running coordinator, or a database nobody serves.
#[derive(clap::Args)]
struct Target {
    /// The running coordinator's gRPC address (e.g. https://coord.lab:50051); needs the
    /// admin token.
    #[arg(long, required_unless_present = "db", conflicts_with = "db")]
    server: Option<String>,
    /// A database no running coordinator holds (one that is served is refused: use --server).
    #[arg(long)]
    db: Option<PathBuf>,
    #[command(flatten)]
    client: ClientArgs,
}

/// How the admin commands reach a coordinator: the token, and TLS as workers use it.
#[derive(clap::Args)]
struct ClientArgs {
    /// File holding the admin token (default: $SWEEP_ADMIN_TOKEN).
    #[arg(long)]
    token_file: Option<PathBuf>,
    #[command(flatten)]
    tls: ClientTls,
}

impl ClientArgs {
    async fn connect(self, server: &str) -> Result<remote::Client> {
        let token = remote::admin_token(self.token_file.as_deref())?;
        remote::connect(server, &self.tls, &token).await
    }
}

/// Where an admin command runs, once its flags are read.
enum Place {
    /// A running coordinator, over its Admin API.
    Remote(remote::Client),
    /// A database nobody serves, locked for the command's length.
    Local {
        db: PathBuf,
        handle: Handle,
        _lock: ServerLock,
    },
}

impl Target {
    /// Connects to `--server`, or opens and locks `--db` (models in `checkpoint_dir` when
    /// given) for the command `what`.
    async fn open(self, what: &str, checkpoint_dir: Option<PathBuf>) -> Result<Place> {
        if let Some(server) = self.server {
            return Ok(Place::Remote(self.client.connect(&server).await?));
        }
        let db = self.db.context(
            "give --server URL (a running coordinator) or --db PATH (a database nobody serves)",
        )?;
        let lock = match checkpoint_dir {
            Some(_) => ServerLock::acquire(&db, &format!("coordinator {what}"))?,
            None => ServerLock::acquire(&db, &format!("coordinator {what} --db (local)"))?,
        };
        let handle = match &checkpoint_dir {
            Some(dir) => Handle::open_with(&db, Config::default(), dir)?,
            None => Handle::open(&db, Config::default())?,
        };
        Ok(Place::Local {
            db,
            handle,
            _lock: lock,
        })
    }
}

#[derive(clap::Args)]
struct TlsArgs {
    /// Server certificate chain (PEM); with --tls-key, gRPC is served over TLS.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require workers to present a certificate signed by this CA (mTLS).
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Serve without TLS on a non-loopback address (the token crosses the network in clear).
    #[arg(long, conflicts_with = "tls_cert")]
    plaintext: bool,
}

#[derive(Subcommand)]
enum TlsCommand {
    /// Write a private CA, a server certificate for --host, a worker client certificate and a
    /// worker token into --out (keys and token readable by their owner only).
    Init {
        #[arg(long)]
        out: PathBuf,
        /// Names and addresses workers use to reach the coordinator (repeat the flag).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// Days the certificates stay valid.
        #[arg(long, default_value_t = 825)]
        days: i64,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

/// TLS from the flags, or plaintext where that was asked for or cannot leave the machine.
fn server_tls(args: TlsArgs, listen: &str) -> Result<Option<ServerTls>> {
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        return Ok(Some(ServerTls {
            cert,
            key,
            client_ca: args.tls_client_ca,
        }));
    }
    let loopback = listen
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback())
        || listen.starts_with("localhost:");
    if !args.plaintext && !loopback {
        bail!("refusing to serve {listen} without TLS: pass --tls-cert and --tls-key (make them with `coordinator tls init`), or --plaintext to accept unencrypted connections");
    }
    Ok(None)
}

fn main() -> ExitCode {
    // A file-size limit (ulimit -f) must surface as a write error the coordinator reports and
    // survives, not as SIGXFSZ killing it mid-write.
    // SAFETY: setting a signal's disposition to "ignore" before any thread starts.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let cli = Cli::parse();
    sweep_proto::observe::init_logs(cli.log_format, "warn");
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
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The admin token from `file` or `$SWEEP_ADMIN_TOKEN`, if either is given.
fn optional_admin_token(file: Option<&Path>) -> Result<Option<String>> {
    if file.is_none() && std::env::var_os("SWEEP_ADMIN_TOKEN").is_none() {
        return Ok(None);
    }
    remote::admin_token(file).map(Some)
}

/// Loads a sweep file and enforces the trial limit.
fn load_sweep(path: &Path, force: bool) -> Result<Sweep> {
    let sweep = plan::load(path)?;
    sweep.check_size(force).map_err(anyhow::Error::msg)?;
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
            match (&s.search, &s.pbt) {
                (Some(rule), _) => print!("{}", plan::describe_search(rule)),
                (_, Some(rule)) => print!("{}", plan::describe_pbt(rule)?),
                _ => println!("{}{} trials", plan_table(&s), s.trials.len()),
            }
        }
        Command::Sweep(args) => return sweep_here(args).await,
        Command::Serve(args) => serve_db(args).await?,
        Command::Tls {
            command:
                TlsCommand::Init {
                    out,
                    hosts,
                    days,
                    force,
                },
        } => tls_init(&out, &hosts, days, force)?,
        Command::Submit {
            sweep,
            target,
            rerun,
            force,
        } => submit(target, &sweep, rerun, force).await?,
        Command::Status { sweep, target } => match target.open("status", None).await? {
            Place::Remote(mut c) => remote::status(&mut c, sweep.as_deref()).await?,
            Place::Local { db, handle, .. } => local_status(&db, &handle, sweep)?,
        },
        Command::Cancel {
            sweep,
            trial,
            target,
        } => match target.open("cancel", None).await? {
            Place::Remote(mut c) => remote::cancel(&mut c, &sweep, trial.as_deref()).await?,
            Place::Local { handle, .. } => cancel_here(&handle, &sweep, trial)?,
        },
        Command::Rerun { sweep, target } => match target.open("rerun", None).await? {
            Place::Remote(mut c) => remote::rerun(&mut c, &sweep).await?,
            Place::Local { handle, .. } => {
                let n = handle.rerun(&sweep)?.len();
                println!("sweep `{sweep}`: {n} failed or cancelled trials queued again");
            }
        },
        Command::Report { sweep, target, out } => {
            let out = out.unwrap_or_else(|| remote::default_out(&sweep));
            match target.open("report", None).await? {
                Place::Remote(mut c) => remote::report(&mut c, &sweep, &out).await?,
                Place::Local { db, handle, .. } => report_here(&db, &handle, &sweep, &out)?,
            }
        }
        Command::Export {
            sweep,
            trial,
            best: _,
            target,
            out,
            checkpoint_dir,
        } => {
            let out = out.unwrap_or_else(|| remote::default_out(&sweep).join("model"));
            let trial = trial.unwrap_or_default();
            match target.open("export", checkpoint_dir).await? {
                Place::Remote(mut c) => remote::export(&mut c, &sweep, &trial, &out).await?,
                Place::Local { db, handle, .. } => {
                    let (id, _, bytes) = handle
                        .model_of(&sweep, &trial)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", db.display()))?;
                    remote::write_model(&bytes, &out, &id)?;
                }
            }
        }
        Command::Watch {
            sweep,
            client,
            server,
            quiet,
        } => remote::watch(&mut client.connect(&server).await?, &sweep, quiet).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `coordinator sweep`: an embedded coordinator with local workers.
async fn sweep_here(a: SweepArgs) -> Result<ExitCode> {
    let s = load_sweep(&a.sweep, a.force)?;
    server_tls(
        TlsArgs {
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            plaintext: a.plaintext,
        },
        &a.listen,
    )?;
    let out = a.out.unwrap_or_else(|| Path::new("out").join(&s.name));
    let opts = local::Options {
        local_workers: a.local_workers,
        listen: a.listen,
        device: a.device,
        rerun: a.rerun,
        worker_bin: a.worker_bin,
        config: config(a.heartbeat_timeout)?,
        quiet: a.quiet,
        http_listen: a.http_listen,
        admin_token: optional_admin_token(a.admin_token_file.as_deref())?,
    };
    local::run_sweep(s, &out, opts).await
}

/// `coordinator serve`: a long-lived coordinator for remote workers and admin commands, until
/// SIGTERM or Ctrl-C; the database is one self-contained file afterwards.
async fn serve_db(a: ServeArgs) -> Result<()> {
    let tls = server_tls(a.tls, &a.listen)?;
    let tokens = Tokens {
        worker: sweep_proto::read_token(a.token_file.as_deref()).map_err(anyhow::Error::msg)?,
        admin: optional_admin_token(a.admin_token_file.as_deref())?,
    };
    if tokens.admin.as_deref() == Some(tokens.worker.as_str()) {
        bail!("the admin token must differ from the worker token (workers must not be able to administer)");
    }
    if tokens.admin.is_none() {
        eprintln!("coordinator: no admin token ($SWEEP_ADMIN_TOKEN or --admin-token-file): submit, status, cancel, report and watch over --server are refused");
    }
    let (listen, db) = (a.listen, a.db);
    let _lock = ServerLock::acquire(&db, &format!("coordinator serve --listen {listen}"))?;
    let handle = match &a.checkpoint_dir {
        Some(dir) => Handle::open_with(&db, config(a.heartbeat_timeout)?, dir)?,
        None => Handle::open(&db, config(a.heartbeat_timeout)?)?,
    };
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    eprintln!(
        "coordinator: serving workers on {} over {} (database {}, checkpoints in {})",
        listener.local_addr()?,
        match &tls {
            Some(t) if t.client_ca.is_some() => "mTLS",
            Some(_) => "TLS",
            None => "plaintext",
        },
        db.display(),
        handle.checkpoint_dir().display()
    );
    if let Some(addr) = a.http_listen {
        let bound = coordinator::api::dashboard::spawn(&addr, handle.clone(), &tokens)
            .await
            .with_context(|| format!("cannot listen on {addr} for the dashboard"))?;
        eprintln!("coordinator: dashboard, /metrics, /healthz and /readyz on http://{bound}");
    }
    let shutdown = sweep_proto::signal::shutdown();
    serve(handle.clone(), listener, &tokens, tls, shutdown).await?;
    handle
        .checkpoint()
        .await
        .map_err(|e| anyhow::anyhow!("{}: final checkpoint failed: {e}", db.display()))
}

/// `coordinator tls init`: a CA, certificates and tokens, and the flags that use them.
fn tls_init(out: &Path, hosts: &[String], days: i64, force: bool) -> Result<()> {
    if days <= 0 {
        bail!("--days must be at least 1");
    }
    for f in &coordinator::api::tls::init(out, hosts, days, force)? {
        println!("{}", f.display());
    }
    println!("coordinator: --tls-cert {0}/server.pem --tls-key {0}/server-key.pem --tls-client-ca {0}/ca.pem --token-file {0}/token --admin-token-file {0}/admin-token", out.display());
    println!("worker:      --tls-ca {0}/ca.pem --tls-cert {0}/worker.pem --tls-key {0}/worker-key.pem --token-file {0}/token", out.display());
    println!("admin:       --tls-ca {0}/ca.pem --tls-cert {0}/worker.pem --tls-key {0}/worker-key.pem --token-file {0}/admin-token", out.display());
    Ok(())
}

/// `coordinator submit`: to a running coordinator, or into a database nobody serves (the
/// sweep file is read, and refused, before that database is opened).
async fn submit(target: Target, sweep: &Path, rerun: bool, force: bool) -> Result<()> {
    let local = match target.server {
        None => Some(load_sweep(sweep, force)?),
        Some(_) => None,
    };
    match target.open("submit", None).await? {
        Place::Remote(mut c) => remote::submit(&mut c, sweep, rerun, force).await,
        Place::Local { handle, .. } => {
            let s = match local {
                Some(s) => s,
                None => load_sweep(sweep, force)?,
            };
            submit_here(&handle, s, rerun)
        }
    }
}

/// `coordinator submit --db`: the sweep goes into a database nobody serves.
fn submit_here(handle: &Handle, s: Sweep, rerun: bool) -> Result<()> {
    let submitted = handle.submit(&s, rerun)?;
    println!("submitted sweep `{}`: {} trials", s.name, s.size());
    for line in submitted_lines(&SubmitNotes::from(&submitted)) {
        println!("{line}");
    }
    Ok(())
}

/// What a submit did beyond queueing new trials, as `coordinator submit` and `sweep` say it.
#[derive(Debug, Clone, Copy, Default)]
pub struct SubmitNotes {
    pub stale: u32,
    pub kept_shared: u32,
    pub dropped_queued: u32,
    pub dropped_running: u32,
}

impl From<&coordinator::store::Submitted> for SubmitNotes {
    fn from(s: &coordinator::store::Submitted) -> SubmitNotes {
        SubmitNotes {
            stale: s.stale as u32,
            kept_shared: s.kept_shared as u32,
            dropped_queued: s.dropped.queued.len() as u32,
            dropped_running: s.dropped.running.len() as u32,
        }
    }
}

/// One line for each thing a submit did that the user did not write: results of another
/// trainer run again, shared ones kept, trials an edited sweep no longer lists dropped.
pub fn submitted_lines(n: &SubmitNotes) -> Vec<String> {
    let mut lines = Vec::new();
    if n.stale > 0 {
        lines.push(format!(
            "{} finished trials will run again: their results came from a trainer of other semantics (this one is v{})",
            n.stale,
            sweep_proto::TRAINER_SEMANTICS
        ));
    }
    if n.kept_shared > 0 {
        lines.push(format!(
            "{} finished trials are shared with another sweep and reused as they are, though this sweep would train them again (another trainer's semantics or early-stopping rule); --rerun trains them again for every sweep that lists them",
            n.kept_shared
        ));
    }
    if n.dropped_queued + n.dropped_running > 0 {
        lines.push(format!(
            "dropped the trials this version no longer lists: {} queued removed, {} running stopped (finished ones are kept for reuse)",
            n.dropped_queued, n.dropped_running
        ));
    }
    lines
}

/// `coordinator cancel --db`: a sweep, or one of its trials.
fn cancel_here(handle: &Handle, sweep: &str, trial: Option<String>) -> Result<()> {
    let n = handle
        .cancel_in(sweep, trial.as_deref().unwrap_or(""))?
        .len();
    match trial {
        Some(t) => println!("trial {t}: {n} cancelled"),
        None => println!("cancelled sweep `{sweep}`: {n} unfinished trials stopped"),
    }
    Ok(())
}

/// `coordinator report --db`: the report files, and the summary on the terminal.
fn report_here(db: &Path, handle: &Handle, sweep: &str, out: &Path) -> Result<()> {
    let report = handle
        .report(sweep)
        .map_err(|e| anyhow::anyhow!("{}: {e}", db.display()))?;
    coordinator::report::render::write(&report, out)
        .with_context(|| format!("cannot write the report to {}", out.display()))?;
    print!("{}", coordinator::report::render::terminal(&report));
    println!("report written to {}", out.display());
    Ok(())
}

/// `coordinator status --db`: counts per sweep, read from the database.
fn local_status(db: &Path, handle: &Handle, sweep: Option<String>) -> Result<()> {
    let names = match sweep {
        Some(n) => vec![n],
        None => handle.store().sweep_names()?,
    };
    for name in names {
        let stored = handle
            .sweep(&name)?
            .with_context(|| format!("no sweep named `{name}` in {}", db.display()))?;
        let mut c = handle.store().state_counts(&name)?;
        c.to_suggest = handle.lock().to_suggest(&name);
        println!(
            "{name}: {c}{}",
            if stored.cancelled { " (cancelled)" } else { "" }
        );
    }
    Ok(())
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
        let mut cells = vec![(i + 1).to_string(), t.id.to_string()];
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
