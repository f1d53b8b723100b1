//! The admin commands against a running coordinator (`--server URL`): submit, status,
//! cancel, rerun, report and watch, over the `Admin` gRPC service with the admin token.

use anyhow::{bail, Context, Result};
use coordinator::sched::core::Counts;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Duration;
use sweep_proto::pb::{self, admin_client::AdminClient};
use sweep_proto::tls::{Bearer, ClientTls};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Largest answer accepted (a report of 1,000 trials with curves is a few MB).
const MAX_ANSWER_BYTES: usize = 256 * 1024 * 1024;

pub type Client = AdminClient<InterceptedService<Channel, Bearer>>;

/// The admin token from `file`, else `$SWEEP_ADMIN_TOKEN`; never from the command line.
pub fn admin_token(file: Option<&Path>) -> Result<String> {
    sweep_proto::convert::read_token_as(
        file,
        "SWEEP_ADMIN_TOKEN",
        "admin token",
        " (`coordinator tls init` writes admin-token; `coordinator sweep` writes OUT/admin-token)",
    )
    .map_err(anyhow::Error::msg)
}

pub async fn connect(server: &str, tls: &ClientTls, token: &str) -> Result<Client> {
    let channel = sweep_proto::tls::endpoint(server, tls)?
        .connect()
        .await
        .with_context(|| format!("cannot reach the coordinator at {server}"))?;
    let bearer =
        Bearer::new(token).context("the admin token has characters a header cannot carry")?;
    Ok(AdminClient::with_interceptor(channel, bearer).max_decoding_message_size(MAX_ANSWER_BYTES))
}

/// A refused call as one line: the server's own message.
fn refused(what: &str, s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{what}: {} ({:?})", s.message(), s.code())
}

pub async fn submit(c: &mut Client, file: &Path, rerun: bool, force: bool) -> Result<()> {
    // Read and checked here first: errors name the file as the user wrote it.
    let sweep = coordinator::plan::load(file)?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let name = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    // TorchScript modules travel with the sweep: uploaded first, then named by hash in the
    // text the coordinator reads, so it need not see the files.
    let (text, modules) = coordinator::plan::resolve_modules(&text, &name)?;
    for (hash, path) in &modules {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let header = pb::CheckpointChunk {
            size: bytes.len() as u64,
            sha256: coordinator::store::files::sha256_hex(&bytes),
            ..Default::default()
        };
        let chunks = sweep_proto::convert::artifact_chunks(
            &bytes,
            sweep_proto::convert::CHUNK_BYTES,
            header,
        );
        let ack = c
            .upload_module(tokio_stream::iter(chunks))
            .await
            .map_err(|s| refused("upload module", s))?
            .into_inner();
        anyhow::ensure!(
            ack.reason == hash.to_string(),
            "{}: the coordinator stored it as {}, not {hash}",
            path.display(),
            ack.reason
        );
        println!("uploaded TorchScript module {} ({hash})", path.display());
    }
    let r = c
        .submit_sweep(pb::SubmitSweepRequest {
            file_name: name.display().to_string(),
            sweep_toml: text,
            rerun,
            force,
            // Listed here, where the file is: the coordinator does not read the folder.
            image_folder: sweep
                .image_folder
                .map(|fp| sweep_proto::DatasetKind::ImageFolder(fp).to_string())
                .unwrap_or_default(),
        })
        .await
        .map_err(|s| refused("submit", s))?
        .into_inner();
    println!(
        "submitted sweep `{}`: {} trials ({} finished results reused)",
        r.name, r.trials, r.reused
    );
    let notes = crate::SubmitNotes {
        stale: r.stale,
        kept_shared: r.kept_shared,
        dropped_queued: r.dropped_queued,
        dropped_running: r.dropped_running,
    };
    for line in crate::submitted_lines(&notes) {
        println!("{line}");
    }
    debug_assert_eq!(r.name, sweep.name);
    Ok(())
}

/// The wire counts as the core's `Counts`, which print ("N trials: ... finished, ...") and
/// total as the local commands do.
fn counts_of(c: Option<pb::TrialCounts>) -> Counts {
    let c = c.unwrap_or_default();
    Counts {
        queued: c.queued as usize,
        running: c.running as usize,
        finished: c.finished as usize,
        failed: c.failed as usize,
        cancelled: c.cancelled as usize,
        to_suggest: c.to_suggest as usize,
    }
}

fn percent(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v))
}

fn phase_name(t: &pb::TrialView) -> String {
    match pb::TrialPhase::try_from(t.phase).unwrap_or_default() {
        pb::TrialPhase::Queued => "queued".into(),
        pb::TrialPhase::Running => "running".into(),
        pb::TrialPhase::Finished => match pb::TrialStatus::try_from(t.status).unwrap_or_default() {
            pb::TrialStatus::Diverged => "diverged".into(),
            pb::TrialStatus::Failed => "failed".into(),
            pb::TrialStatus::Stopped => "stopped".into(),
            _ => "completed".into(),
        },
        pb::TrialPhase::Failed => "failed".into(),
        pb::TrialPhase::Cancelled => "cancelled".into(),
        pb::TrialPhase::Unspecified => "?".into(),
    }
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// `status`: every sweep's counts, or one sweep's trials.
pub async fn status(c: &mut Client, sweep: Option<&str>) -> Result<()> {
    let Some(name) = sweep else {
        let list = c
            .list_sweeps(pb::ListSweepsRequest {})
            .await
            .map_err(|s| refused("status", s))?
            .into_inner();
        if list.sweeps.is_empty() {
            println!("no sweeps");
        }
        for s in list.sweeps {
            println!(
                "{}: {}{}",
                s.name,
                counts_of(s.counts),
                if s.cancelled { " (cancelled)" } else { "" }
            );
        }
        return Ok(());
    };
    let v = sweep_status(c, name).await?;
    let s = v.sweep.clone().unwrap_or_default();
    println!(
        "{}: {}{}",
        s.name,
        counts_of(s.counts),
        if s.cancelled { " (cancelled)" } else { "" }
    );
    println!("| trial | state | attempt | epoch | accuracy | test accuracy | worker | params |");
    println!("|---|---|---|---|---|---|---|---|");
    for t in &v.trials {
        println!(
            "| {} | {} | {} | {}/{} | {} | {} | {} | {} |",
            t.trial_id,
            phase_name(t),
            t.attempt,
            t.epoch,
            t.epochs,
            percent(t.accuracy),
            percent(t.test_accuracy),
            if t.worker_id.is_empty() {
                "-"
            } else {
                &t.worker_id
            },
            if t.label.is_empty() {
                &t.params
            } else {
                &t.label
            },
        );
    }
    Ok(())
}

async fn sweep_status(c: &mut Client, name: &str) -> Result<pb::SweepStatusResponse> {
    status_now(c, name).await.map_err(|s| refused("status", s))
}

pub async fn cancel(c: &mut Client, sweep: &str, trial: Option<&str>) -> Result<()> {
    let r = c
        .cancel(pb::CancelRequest {
            sweep: sweep.to_string(),
            trial_id: trial.unwrap_or_default().to_string(),
        })
        .await
        .map_err(|s| refused("cancel", s))?
        .into_inner();
    match trial {
        Some(t) if r.cancelled.is_empty() => {
            println!("trial {t} had already ended; nothing to cancel")
        }
        Some(t) => println!("cancelled trial {t} of sweep `{sweep}`"),
        None => println!(
            "cancelled sweep `{sweep}`: {} unfinished trials stopped",
            r.cancelled.len()
        ),
    }
    Ok(())
}

pub async fn rerun(c: &mut Client, sweep: &str) -> Result<()> {
    let r = c
        .rerun(pb::RerunRequest {
            sweep: sweep.to_string(),
        })
        .await
        .map_err(|s| refused("rerun", s))?
        .into_inner();
    println!(
        "sweep `{sweep}`: {} failed or cancelled trials queued again",
        r.queued.len()
    );
    Ok(())
}

/// A TorchScript trial's trained module inside its model file (the U8 tensor `torchscript`),
/// read through the safetensors crate, which checks the header and every tensor's offsets.
fn model_module(bytes: &[u8]) -> Result<Option<&[u8]>> {
    use safetensors::{tensor::Dtype, SafeTensorError, SafeTensors};
    let file = SafeTensors::deserialize(bytes).context("not a safetensors model file")?;
    let tensor = match file.tensor("torchscript") {
        Ok(t) => t,
        Err(SafeTensorError::TensorNotFound(_)) => return Ok(None),
        Err(e) => return Err(anyhow::anyhow!("the model's torchscript tensor: {e:?}")),
    };
    if tensor.dtype() != Dtype::U8 || tensor.shape() != [tensor.data().len()] {
        anyhow::bail!(
            "the model's torchscript tensor is not a U8 vector: {:?} {:?}",
            tensor.dtype(),
            tensor.shape()
        );
    }
    // The view borrows the parsed file; the same bytes as a slice of the caller's buffer.
    let data = tensor.data();
    let start = data.as_ptr() as usize - bytes.as_ptr() as usize;
    Ok(bytes.get(start..start + data.len()))
}

/// A model file's description: the JSON the worker put in its safetensors header
/// (`__metadata__["sweep_model"]`), read without loading the tensors.
pub fn model_info(bytes: &[u8]) -> Result<serde_json::Value> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| anyhow::anyhow!("not a safetensors model file: {e:?}"))?;
    let info = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("sweep_model"))
        .ok_or_else(|| anyhow::anyhow!("not a model of this project (no sweep_model metadata)"))?;
    serde_json::from_str(info).context("the model's metadata")
}

/// Writes a model file as `OUT/model.safetensors` and `OUT/model.json` (and a TorchScript
/// trial's trained module as `OUT/model.pt`), and says so.
pub fn write_model(bytes: &[u8], out: &Path, trial: &str) -> Result<()> {
    let info = model_info(bytes)?;
    let module = model_module(bytes)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let json = serde_json::to_string_pretty(&info)? + "\n";
    // The trial itself, to train it again from scratch: for a PBT member its whole schedule
    // (the replay; docs/SWEEP.md).
    let trial_toml = serde_json::from_value::<sweep_proto::TrialSpec>(info["trial"].clone())
        .map(|spec| spec.to_toml())
        .unwrap_or_default();
    let mut files = vec![
        ("model.safetensors", bytes),
        ("model.json", json.as_bytes()),
    ];
    if !trial_toml.is_empty() {
        files.push(("trial.toml", trial_toml.as_bytes()));
    }
    match module {
        Some(m) => files.push(("model.pt", m)),
        // Not one left over from an earlier export into the same directory.
        None => match std::fs::remove_file(out.join("model.pt")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot remove {}/model.pt", out.display()))
            }
            _ => {}
        },
    }
    for (name, content) in files {
        let path = out.join(name);
        std::fs::write(&path, content)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let accuracy = info["test_accuracy"]
        .as_f64()
        .map_or("-".into(), |a| format!("{:.2}%", 100.0 * a));
    println!(
        "model of trial {trial} ({}, test accuracy {accuracy}) written to {}",
        info["trial"]["model"].as_str().unwrap_or("?"),
        out.display()
    );
    if module.is_some() {
        println!(
            "  model.pt: the trained TorchScript module, for torch.jit.load; model.json says how to normalise inputs"
        );
    }
    Ok(())
}

/// Fetches a kept model (`trial` empty: the best-ranked trial's) into `out`.
pub async fn export(c: &mut Client, sweep: &str, trial: &str, out: &Path) -> Result<()> {
    let mut chunks = c
        .export_model(pb::ExportModelRequest {
            sweep: sweep.to_string(),
            trial_id: trial.to_string(),
        })
        .await
        .map_err(|s| refused("export", s))?
        .into_inner();
    let (mut bytes, mut size, mut sha, mut id) = (Vec::new(), 0u64, String::new(), String::new());
    while let Some(c) = chunks.message().await.map_err(|s| refused("export", s))? {
        if let Some(l) = &c.lease {
            (size, sha, id) = (c.size, c.sha256.clone(), l.trial_id.clone());
        }
        if bytes.len() as u64 + c.data.len() as u64 > size {
            bail!("the coordinator sent more than the {size} bytes it announced");
        }
        bytes.extend_from_slice(&c.data);
    }
    if bytes.len() as u64 != size || coordinator::plan::sha256_hex(&bytes) != sha {
        bail!(
            "the model arrived damaged ({} of {size} bytes, checksum mismatch); try again",
            bytes.len()
        );
    }
    write_model(&bytes, out, &id)
}

pub async fn report(c: &mut Client, sweep: &str, out: &Path) -> Result<()> {
    let r = c
        .get_report(pb::ReportRequest {
            sweep: sweep.to_string(),
        })
        .await
        .map_err(|s| refused("report", s))?
        .into_inner();
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for f in &r.files {
        // The server names the files: only the report's own names are written.
        if !coordinator::report::render::FILE_NAMES.contains(&f.name.as_str()) {
            bail!(
                "the coordinator sent a report file with a bad name: {:?}",
                f.name
            );
        }
        let path = out.join(&f.name);
        std::fs::write(&path, &f.content)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    print!("{}", r.summary);
    println!("report written to {}", out.display());
    Ok(())
}

/// Lines worth printing above the progress bar.
fn event_line(e: &pb::TrialEvent) -> Option<String> {
    let id = short(&e.trial_id);
    Some(match pb::EventKind::try_from(e.kind).ok()? {
        pb::EventKind::Finished => format!(
            "{id} finished: {} test accuracy {} (attempt {}, {})",
            match pb::TrialStatus::try_from(e.status).unwrap_or_default() {
                pb::TrialStatus::Diverged => "diverged,",
                _ => "completed,",
            },
            percent(e.test_accuracy),
            e.attempt,
            e.worker_id
        ),
        pb::EventKind::Failed => format!("{id} failed: {}", e.message),
        pb::EventKind::Cancelled => format!("{id} cancelled"),
        pb::EventKind::WorkerLost => format!("{id} lost its worker {}: {}", e.worker_id, e.message),
        pb::EventKind::Submitted => format!("sweep `{}` submitted again", e.sweep),
        _ => return None,
    })
}

/// First and longest wait between `watch`'s reconnection attempts: as the workers'.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// How one subscription of `watch` ended.
enum Watched {
    /// The sweep ended, or the user pressed Ctrl-C.
    Done,
    /// The coordinator went away (stopped, restarted, the network): subscribe again.
    Lost(String),
}

/// Whether a failed call means the coordinator or the network went away (reconnect), rather
/// than a refusal (a wrong token, an unknown sweep: stop and say so). A restarting server's
/// stream ends with UNAVAILABLE or, mid-stream, with h2's "protocol error" (UNKNOWN/INTERNAL).
fn gone(s: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        s.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::Cancelled
            | Code::DeadlineExceeded
    )
}

/// Follows sweep `name` until every trial has ended (or Ctrl-C): events as lines, the counts
/// as a bar. A coordinator that goes away (a restart, a network cut) is waited for: `watch`
/// subscribes again with backoff, 200 ms doubling to 10 s, as the workers do, and says so.
pub async fn watch(c: &mut Client, name: &str, quiet: bool) -> Result<()> {
    let bar = watch_bar(quiet);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut wait = RETRY_FIRST;
    let mut again = false;
    loop {
        let why = match watch_once(c, name, &bar, quiet, again, &mut ctrl_c, &mut wait).await {
            Ok(Watched::Done) => return Ok(()),
            Ok(Watched::Lost(why)) => why,
            Err(e) => {
                bar.abandon();
                return Err(e);
            }
        };
        say(
            &bar,
            quiet,
            format!("lost the coordinator ({why}); reconnecting in {wait:?}"),
        );
        tokio::select! {
            _ = &mut ctrl_c => {
                bar.abandon();
                return Ok(());
            }
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(RETRY_MAX);
        again = true;
    }
}

/// A line above the bar (or on its own with `--quiet`).
fn say(bar: &ProgressBar, quiet: bool, line: String) {
    if quiet {
        println!("{line}");
    } else {
        bar.println(line);
    }
}

/// One subscription: until the sweep ends, Ctrl-C, or the coordinator goes away. `wait` goes
/// back to its first value once subscribed.
async fn watch_once(
    c: &mut Client,
    name: &str,
    bar: &ProgressBar,
    quiet: bool,
    again: bool,
    ctrl_c: &mut std::pin::Pin<&mut impl std::future::Future<Output = std::io::Result<()>>>,
    wait: &mut Duration,
) -> Result<Watched> {
    let status = |s: tonic::Status| {
        if gone(&s) {
            Ok(Watched::Lost(s.message().to_string()))
        } else {
            Err(refused("watch", s))
        }
    };
    // Subscribed first, then the state: nothing in between is missed.
    let request = pb::WatchRequest {
        sweep: name.to_string(),
    };
    let mut events = match c.watch(request).await {
        Ok(r) => r.into_inner(),
        Err(s) => return status(s),
    };
    let first = match status_now(c, name).await {
        Ok(v) => v,
        Err(s) => return status(s),
    };
    *wait = RETRY_FIRST;
    let counts = counts_of(first.sweep.and_then(|s| s.counts));
    let verb = if again { "watching again" } else { "watching" };
    say(bar, quiet, format!("{verb} sweep `{name}`: {counts}"));
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut *ctrl_c => {
                bar.abandon();
                return Ok(Watched::Done);
            }
            e = events.message() => match e {
                Ok(Some(e)) => {
                    if let Some(line) = event_line(&e) {
                        say(bar, quiet, line);
                    }
                    continue;
                }
                Ok(None) => return Ok(Watched::Lost("it closed the stream: stopping".into())),
                Err(s) => return status(s),
            },
            _ = every.tick() => {}
        }
        // The state once a second: events only add lines above the bar.
        let v = match status_now(c, name).await {
            Ok(v) => v,
            Err(s) => return status(s),
        };
        if let Some(counts) = show_status(bar, v) {
            bar.finish_and_clear();
            println!("{name}: {counts}");
            return Ok(Watched::Done);
        }
    }
}

/// A sweep's state, or the call's status (for `watch` to tell a restart from a refusal).
async fn status_now(c: &mut Client, name: &str) -> Result<pb::SweepStatusResponse, tonic::Status> {
    c.sweep_status(pb::SweepStatusRequest {
        sweep: name.to_string(),
        curves: false,
    })
    .await
    .map(tonic::Response::into_inner)
}

/// The progress bar `watch` draws (hidden with `--quiet`).
fn watch_bar(quiet: bool) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    if let Ok(style) = ProgressStyle::with_template(
        "[{elapsed_precise}] {bar:30} {pos}/{len} trials ({prefix})\n  {wide_msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Draws a sweep's state on the bar: counts, and the running trials with their epoch,
/// accuracy and ETA. Returns the counts once every trial has ended.
fn show_status(bar: &ProgressBar, v: pb::SweepStatusResponse) -> Option<Counts> {
    let counts = counts_of(v.sweep.and_then(|s| s.counts));
    bar.set_length((counts.total() + counts.to_suggest) as u64);
    bar.set_position((counts.finished + counts.failed + counts.cancelled) as u64);
    bar.set_prefix(format!(
        "{} running, {} queued, {} failed",
        counts.running, counts.queued, counts.failed
    ));
    let running: Vec<String> = v
        .trials
        .iter()
        .filter(|t| t.phase == pb::TrialPhase::Running as i32)
        .map(|t| {
            let eta = t
                .eta_seconds
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .map(|d| format!(" eta {}", indicatif::HumanDuration(d)))
                .unwrap_or_default();
            format!(
                "{} e{}/{} acc {}{eta}",
                short(&t.trial_id),
                t.epoch,
                t.epochs,
                percent(t.accuracy)
            )
        })
        .collect();
    bar.set_message(running.join(" | "));
    counts.is_done().then_some(counts)
}

/// Default report directory for a sweep.
pub fn default_out(sweep: &str) -> PathBuf {
    Path::new("out").join(sweep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn safetensors(header: serde_json::Value, data: &[u8]) -> Vec<u8> {
        let header = header.to_string().into_bytes();
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend(header);
        out.extend(data);
        out
    }

    /// The kept module of a TorchScript trial comes out of its model file byte for byte; a
    /// built-in model's file has none; offsets, types and shapes that do not describe bytes
    /// inside the file are errors, never a panic.
    #[test]
    fn a_kept_module_is_read_out_of_its_model_file_and_bad_entries_are_errors() {
        let module =
            |entry: serde_json::Value| safetensors(json!({ "torchscript": entry }), b"PK\x03\x04");
        let ok = module(json!({"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}));
        assert_eq!(model_module(&ok).unwrap(), Some(&b"PK\x03\x04"[..]));
        let built_in = safetensors(
            json!({"fc.weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}),
            &[0; 4],
        );
        assert_eq!(model_module(&built_in).unwrap(), None);
        for bad in [
            json!({"dtype": "U8", "shape": [8], "data_offsets": [0, 8]}),
            json!({"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}),
            json!({"dtype": "U8", "shape": [3], "data_offsets": [0, 4]}),
            json!({"dtype": "U8", "shape": [4], "data_offsets": ["x", 0, 4]}),
            json!({"dtype": "U8", "shape": [0], "data_offsets": [4, 0]}),
            json!({"dtype": "U8", "shape": [0], "data_offsets": [u64::MAX, u64::MAX]}),
            json!("not an entry"),
        ] {
            assert!(model_module(&module(bad.clone())).is_err(), "{bad}");
        }
        assert!(model_module(&[1, 0, 0]).is_err());
    }
}
