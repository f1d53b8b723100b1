//! `worker`: train CIFAR-10 trials with libtorch.
//!
//!   worker train TRIAL.toml [--data DIR] [--device auto|cpu|cuda] [--json OUT]
//!   worker data check [--data DIR]
//!   worker data fetch [--dest DIR]
//!   worker bench --model resnet20 [--batch-size 128] [--images 2560] [--epochs 2]
//!   worker --coordinator URL [--device auto|cpu|cuda] [--slots N] [--data DIR] [--token-file F]
//!          [--tls-ca F] [--tls-cert F --tls-key F] [--plaintext] [--health-listen ADDR]

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use sweep_proto::tls::ClientTls;
use sweep_proto::{EpochMetrics, Model, Precision, TrialResult, TrialSpec, TrialStatus};
use worker::data::{self, fetch, Dataset};
use worker::train::device::{self, DeviceArg};
use worker::train::{self, Event};

#[derive(Parser)]
#[command(
    name = "worker",
    version,
    about = "Trains CIFAR-10 trials with libtorch on CPU or CUDA"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Run as a long-lived worker that pulls trials from this coordinator, e.g.
    /// https://lab-server:50051. The token comes from $SWEEP_TOKEN or --token-file.
    #[arg(long)]
    coordinator: Option<String>,
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceArg,
    /// Trials trained at once. More than one shares the device (and libtorch's seed, so
    /// results are no longer bit-for-bit reproducible).
    #[arg(long, default_value_t = 1)]
    slots: u32,
    /// Log lines as text, or as one JSON object per line with the ids as fields.
    #[arg(long, value_enum, default_value = "text")]
    log_format: sweep_proto::observe::LogFormat,
    /// CPU threads libtorch uses for each trial (default: libtorch's, one per core). Several
    /// workers on one machine should share the cores: `coordinator sweep` gives each of its
    /// local workers cores / workers.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,
    /// Name shown by the coordinator (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// Dataset directory (default: the coordinator's hint, $CIFAR10_DATA, then ./data).
    #[arg(long)]
    data: Option<PathBuf>,
    /// File holding the worker token (instead of $SWEEP_TOKEN).
    #[arg(long)]
    token_file: Option<PathBuf>,
    #[command(flatten)]
    tls: ClientTls,
    /// Serve /healthz, /readyz and /metrics over HTTP here (e.g. 0.0.0.0:8081); ready =
    /// connected.
    #[arg(long)]
    health_listen: Option<String>,
    /// Stop when the process with this id is no longer this worker's parent (it exited or was
    /// killed). `coordinator sweep` sets it for its local workers so none outlives it.
    #[arg(long, env = "SWEEP_EXIT_WITH_PARENT", hide_env_values = true)]
    exit_with_parent: Option<u32>,
}

/// Resolves once `parent` is no longer this process's parent: it died and the worker was
/// re-parented (to init or a subreaper). Polled twice a second.
async fn parent_gone(parent: Option<u32>) {
    let Some(parent) = parent else {
        return std::future::pending().await;
    };
    loop {
        if std::os::unix::process::parent_id() != parent {
            eprintln!("worker: parent process {parent} is gone; stopping");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

#[derive(Subcommand)]
enum Command {
    /// Train one trial described by a TOML file and print its result as JSON.
    ///
    /// Exit status: 0 completed, 3 diverged (non-finite loss), 1 failed or bad input.
    Train {
        /// Trial file; every key is optional (see docs/TRIAL.md).
        trial: PathBuf,
        /// Dataset directory (default: $CIFAR10_DATA, then ./data), or `imagefolder:DIR`
        /// for an image folder (train/<class>/*, test/<class>/*).
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceArg,
        /// Also write the result JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write the trained model here (model.safetensors and model.json) for `worker eval`,
        /// `worker predict` or PyTorch.
        #[arg(long)]
        save_model: Option<PathBuf>,
        /// No progress bars.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Evaluate an exported model (a directory from `--save-model` or `coordinator export`)
    /// on the test set and print JSON: test_accuracy, test_loss, images, per_class_accuracy.
    Eval {
        model: PathBuf,
        /// The dataset the model was trained on: a directory, or imagefolder:DIR (default for
        /// CIFAR-10: $CIFAR10_DATA, then ./data).
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceArg,
    },
    /// Classify PNG or JPEG images with an exported model; prints JSON: per image the top
    /// classes with their probabilities. Images are resized to 32x32.
    Predict {
        model: PathBuf,
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// How many classes to list per image.
        #[arg(long, default_value_t = 3)]
        top: usize,
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceArg,
    },
    /// Inspect or download the dataset.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Measure training images/s of one model on random images (prints JSON).
    Bench {
        #[arg(long)]
        model: Model,
        #[arg(long, default_value_t = 128)]
        batch_size: u32,
        #[arg(long, default_value_t = 2560)]
        images: usize,
        #[arg(long, default_value_t = 2)]
        epochs: u32,
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceArg,
        /// fp32 or bf16 (autocast; falls back to fp32 where unsupported, with a note).
        #[arg(long, default_value = "fp32", value_parser = parse_precision)]
        precision: Precision,
        /// Channels-last (NHWC) images and convolution weights.
        #[arg(long)]
        channels_last: bool,
    },
}

/// Prints a command's output. A reader that went away (`worker eval ... | head`) ends the
/// output quietly instead of panicking.
fn print_out(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

fn parse_precision(s: &str) -> Result<Precision, String> {
    match s {
        "fp32" => Ok(Precision::Fp32),
        "bf16" => Ok(Precision::Bf16),
        _ => Err(format!("expected fp32 or bf16, not `{s}`")),
    }
}

#[derive(Subcommand)]
enum DataCommand {
    /// Print a JSON summary: format, image and class counts, mean pixel per channel. Finds
    /// CIFAR-10, CIFAR-100 (fine labels; --coarse for the 20 superclasses) or an image folder
    /// (decoded at --image-size, which also fills its cache).
    Check {
        #[arg(long)]
        data: Option<PathBuf>,
        /// CIFAR-100: count the 20 coarse labels.
        #[arg(long)]
        coarse: bool,
        /// Image folders: the side length images are resized to.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(8..=512))]
        image_size: u32,
    },
    /// Download and unpack the official binary archive (170 MB, MD5-checked).
    Fetch {
        #[arg(long, default_value = "data")]
        dest: PathBuf,
        /// Mirror to download from instead of the official address.
        #[arg(long)]
        url: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Unset RUST_LOG: errors only (as EnvFilter::from_default_env gave).
    sweep_proto::observe::init_logs(cli.log_format, "error");
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let Some(command) = cli.command else {
        return worker_loop(cli);
    };
    match command {
        Command::Train {
            trial,
            data,
            device,
            json,
            save_model,
            quiet,
        } => train_cmd(
            &trial,
            data.as_deref(),
            device,
            json.as_deref(),
            save_model.as_deref(),
            quiet,
        ),
        Command::Eval {
            model,
            data,
            device,
        } => eval_cmd(&model, data, device),
        Command::Predict {
            model,
            images,
            top,
            device,
        } => {
            let device = device::choose(device).map_err(anyhow::Error::msg)?;
            let out = worker::artifacts::predict::predict(&model, &images, top, device)
                .map_err(anyhow::Error::msg)?;
            print_out(&serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Data {
            command:
                DataCommand::Check {
                    data,
                    coarse,
                    image_size,
                },
        } => data_check(data, coarse, image_size),
        Command::Data {
            command: DataCommand::Fetch { dest, url },
        } => fetch_cmd(&dest, url),
        Command::Bench {
            model,
            batch_size,
            images,
            epochs,
            device,
            precision,
            channels_last,
        } => {
            let config = worker::train::bench::BenchConfig {
                model,
                batch_size,
                images,
                epochs,
                precision,
                channels_last,
            };
            bench_cmd(config, device)
        }
    }
}

/// `worker data fetch`: the official CIFAR-10 archive into `dest`.
fn fetch_cmd(dest: &Path, url: Option<String>) -> Result<ExitCode> {
    let mut archive = fetch::Archive::official();
    if let Some(url) = url {
        archive.url = url;
    }
    // Offline, say what to do by hand as well as why the download failed.
    let root = fetch::fetch(&archive, dest, std::io::stderr().is_terminal())
        .map_err(|e| anyhow::anyhow!("{e}\n{}", data::missing_message(dest)))?;
    eprintln!("CIFAR-10 is ready in {}", root.display());
    Ok(ExitCode::SUCCESS)
}

/// `worker bench`: training throughput of one model.
fn bench_cmd(config: worker::train::bench::BenchConfig, device: DeviceArg) -> Result<ExitCode> {
    let device = device::choose(device).map_err(anyhow::Error::msg)?;
    let result = worker::train::bench::run(config, device).map_err(anyhow::Error::msg)?;
    print_out(&serde_json::to_string(&result)?);
    Ok(ExitCode::SUCCESS)
}

/// `worker eval`: an exported model on the test set of the dataset it was trained on.
fn eval_cmd(model: &Path, data: Option<PathBuf>, device: DeviceArg) -> Result<ExitCode> {
    let device = device::choose(device).map_err(anyhow::Error::msg)?;
    let model = worker::artifacts::export::load(model, device).map_err(anyhow::Error::msg)?;
    // The dataset is the one the model was trained on (its description says which);
    // CIFAR-10 without --data is looked for as `worker train` does, download offered.
    let data = match data {
        None if model.info.trial.dataset == data::DatasetKind::Cifar10 => {
            Some(find_or_offer_fetch(None)?)
        }
        data => data,
    };
    let out =
        worker::artifacts::predict::eval(&model, data.as_deref()).map_err(anyhow::Error::msg)?;
    print_out(&serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

/// `worker data check`: what a dataset directory holds, after reading all of it.
fn data_check(data: Option<PathBuf>, coarse: bool, image_size: u32) -> Result<ExitCode> {
    let arg = data.as_deref().map(data::DataArg::from_path);
    let kind = match &arg {
        Some(a) => match Dataset::detect(&a.dir) {
            data::DatasetKind::Cifar100 if coarse => data::DatasetKind::Cifar100Coarse,
            _ if a.image_folder => data::DatasetKind::ImageFolder(0),
            k => k,
        },
        None => data::DatasetKind::Cifar10,
    };
    let summary = match kind {
        data::DatasetKind::Cifar10 => {
            let dir = find_or_offer_fetch(arg.as_ref().map(|a| a.dir.as_path()))?;
            Dataset::load(&dir, data::TRAIN_BATCHES)?
        }
        data::DatasetKind::ImageFolder(_) => {
            let dir = arg.map(|a| a.dir).unwrap_or_default();
            data::imagefolder::Folder::scan(&dir)?
                .load(image_size as usize, &data::imagefolder::Cache::from_env())?
        }
        k => Dataset::open(&data::find_data_for(data.as_deref(), k)?, k, 32, 5)?,
    }
    .summary();
    print_out(&serde_json::to_string_pretty(&summary)?);
    Ok(ExitCode::SUCCESS)
}

fn worker_loop(cli: Cli) -> Result<ExitCode> {
    let Some(url) = cli.coordinator else {
        bail!("nothing to do: give a command (see --help) or --coordinator URL to serve a coordinator");
    };
    let token = sweep_proto::read_token(cli.token_file.as_deref()).map_err(anyhow::Error::msg)?;
    let device = device::choose(cli.device).map_err(anyhow::Error::msg)?;
    // The coordinator accepts names of letters, digits, '.', '_' and '-', up to 64 bytes: a
    // host name fits (its first label if the whole is longer).
    let name = cli.name.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        let host = if host.len() > 64 {
            host.split('.')
                .next()
                .unwrap_or("")
                .chars()
                .take(64)
                .collect()
        } else {
            host
        };
        if host.is_empty() {
            "worker".into()
        } else {
            host
        }
    });
    if let Some(n) = cli.threads {
        tch::set_num_threads(n as i32);
    }
    let connected = Arc::new(AtomicBool::new(false));
    let opts = worker::net::client::Options {
        url,
        token,
        name,
        device,
        slots: cli.slots.max(1),
        data: cli.data,
        tls: cli.tls,
        connected: connected.clone(),
        metrics: Arc::default(),
    };
    let metrics = opts.metrics.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        if let Some(addr) = &cli.health_listen {
            let ready = move || {
                if connected.load(Ordering::Relaxed) {
                    Ok(())
                } else {
                    Err("no session with the coordinator".to_string())
                }
            };
            let render: sweep_proto::observe::Render = Arc::new(move || metrics.text());
            let router = sweep_proto::health::router_with_metrics(Arc::new(ready), Some(render));
            let bound = sweep_proto::health::spawn_router(addr, router)
                .await
                .with_context(|| format!("cannot listen on {addr} for health checks"))?;
            eprintln!("worker: /healthz, /readyz and /metrics on http://{bound}");
        }
        let parent = cli.exit_with_parent;
        let stop = async move {
            tokio::select! {
                _ = sweep_proto::signal::shutdown() => {}
                _ = parent_gone(parent) => {}
            }
        };
        worker::net::client::run(opts, stop).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Finds the dataset; on a terminal, offers to download it when it is missing.
fn find_or_offer_fetch(explicit: Option<&Path>) -> Result<PathBuf> {
    let err = match data::find_data_dir(explicit) {
        Ok(dir) => return Ok(dir),
        Err(e) => e,
    };
    if explicit.is_some() || !std::io::stdin().is_terminal() {
        return Err(err.into());
    }
    eprintln!("{err}");
    eprint!("Download CIFAR-10 (170 MB) into ./data now? [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        bail!("no dataset; see above for where to put it");
    }
    Ok(fetch::fetch(
        &fetch::Archive::official(),
        Path::new("data"),
        true,
    )?)
}

fn train_cmd(
    trial: &Path,
    data: Option<&Path>,
    device: DeviceArg,
    json: Option<&Path>,
    save_model: Option<&Path>,
    quiet: bool,
) -> Result<ExitCode> {
    let text = std::fs::read_to_string(trial)
        .with_context(|| format!("cannot read {}", trial.display()))?;
    let base = trial.parent().unwrap_or(Path::new("."));
    let text = worker::model::torchscript::resolve_trial_text(&text, base)
        .map_err(|e| anyhow::anyhow!("{}: {e}", trial.display()))?;
    let mut spec = TrialSpec::from_toml(&text).with_context(|| format!("{}", trial.display()))?;
    let device = device::choose(device).map_err(anyhow::Error::msg)?;
    device::check_request(spec.device, device)
        .map_err(|e| anyhow::anyhow!("{}: {e}", trial.display()))?;
    // `--data imagefolder:DIR` names the dataset of a trial file that does not.
    let arg = data.map(data::DataArg::from_path);
    if let Some(a) = arg.as_ref().filter(|a| a.image_folder) {
        if spec.dataset == data::DatasetKind::Cifar10 {
            let folder = data::imagefolder::Folder::scan(&a.dir)?;
            spec.dataset = data::DatasetKind::ImageFolder(folder.fingerprint());
            spec.validate()
                .map_err(|e| anyhow::anyhow!("{}: {e}", trial.display()))?;
        }
    }
    let dir = if spec.dataset == data::DatasetKind::Cifar10 {
        find_or_offer_fetch(arg.as_ref().map(|a| a.dir.as_path()))?
    } else {
        data::find_data_for(data, spec.dataset)?
    };
    let dataset = Dataset::open(&dir, spec.dataset, spec.image_size, spec.train_batches)?;
    eprintln!(
        "training {} ({}, {:?} layout, {:?} normalization) on {} for {} epochs",
        spec.model,
        if spec.input_channels() == 3 {
            "color"
        } else {
            "grayscale"
        },
        spec.layout,
        spec.normalization,
        train::device_name(device),
        spec.epochs
    );
    let mut progress = Progress::new(spec.epochs, quiet);
    let mut control = train::Control::default();
    control.export_model = save_model.is_some();
    let mut saved = Ok(());
    let result = train::run_until(&spec, &dataset, device, &control, &mut |e| {
        if let (Event::Model { bytes, .. }, Some(dir)) = (&e, save_model) {
            saved = worker::artifacts::export::write_dir(dir, bytes).map(|_| ());
        }
        progress.on_event(e)
    });
    if let (Err(e), Some(dir)) = (&saved, save_model) {
        eprintln!("the model was not saved to {}: {e}", dir.display());
    }
    progress.finish();
    let text = serde_json::to_string_pretty(&result)?;
    if let Some(path) = json {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    print_out(&text);
    eprintln!("{}", summary_line(&result));
    Ok(match result.status {
        TrialStatus::Completed | TrialStatus::Stopped => ExitCode::SUCCESS,
        TrialStatus::Diverged => ExitCode::from(3),
        TrialStatus::Failed => ExitCode::FAILURE,
    })
}

fn pct(v: f64) -> String {
    format!("{:.2}%", 100.0 * v)
}

fn summary_line(r: &TrialResult) -> String {
    match (&r.status, &r.test) {
        (TrialStatus::Completed | TrialStatus::Stopped, Some(t)) => {
            let binary = t
                .binary_accuracy
                .map(|b| format!(" (Keras binary accuracy {})", pct(b)))
                .unwrap_or_default();
            format!(
                "test accuracy {}{binary} on {} images, {:.1}s",
                pct(t.accuracy),
                t.images,
                r.seconds
            )
        }
        (status, _) => format!(
            "trial {status:?}: {}",
            r.reason.as_deref().unwrap_or("no reason given")
        ),
    }
}

/// One progress bar per epoch on stderr, and a line of metrics when each epoch ends.
struct Progress {
    epochs: u32,
    bar: ProgressBar,
    quiet: bool,
}

impl Progress {
    fn new(epochs: u32, quiet: bool) -> Progress {
        Progress {
            epochs,
            bar: ProgressBar::hidden(),
            quiet,
        }
    }

    fn on_event(&mut self, e: Event) {
        if self.quiet {
            return;
        }
        match e {
            Event::Started {
                train_images,
                val_images,
                parameters,
                ..
            } => {
                eprintln!("{train_images} training images, {val_images} validation images, {parameters} parameters");
            }
            Event::Step {
                epoch,
                step,
                steps,
                loss,
            } => {
                if step == 1 {
                    self.bar = ProgressBar::new(steps as u64);
                    if let Ok(style) = ProgressStyle::with_template(
                        "epoch {prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}",
                    ) {
                        self.bar.set_style(style.progress_chars("=> "));
                    }
                    self.bar.set_prefix(format!("{epoch}/{}", self.epochs));
                }
                if let Some(l) = loss {
                    self.bar.set_message(format!("loss {l:.4}"));
                }
                self.bar.set_position(step as u64);
            }
            Event::Epoch(m) => {
                self.bar.finish_and_clear();
                eprintln!("{}", epoch_line(m, self.epochs));
            }
            Event::Checkpoint { .. } | Event::Model { .. } => {}
            Event::Testing => eprintln!("evaluating on the test set"),
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn epoch_line(m: &EpochMetrics, epochs: u32) -> String {
    let mut line = format!(
        "epoch {}/{epochs}: loss {:.4} acc {}",
        m.epoch,
        m.train_loss,
        pct(m.train_accuracy)
    );
    if let (Some(l), Some(a)) = (m.val_loss, m.val_accuracy) {
        line += &format!(" | val loss {l:.4} acc {}", pct(a));
    }
    if let Some(b) = m.val_binary_accuracy.or(m.train_binary_accuracy) {
        line += &format!(" | binary acc {}", pct(b));
    }
    line + &format!(
        " | lr {:.3e} | {:.1}s, {:.0} img/s",
        m.lr, m.seconds, m.images_per_sec
    )
}
