//! What the load benchmarks share: the coordinator process they run, the stand-in result
//! their simulated workers report, and its CPU time from /proc.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use sweep_proto::pb;

/// The worker and admin tokens the benchmarks' coordinators run with.
pub const TOKEN: &str = "load-bench-token";
pub const ADMIN_TOKEN: &str = "load-bench-admin-token";

/// A served sweep: the coordinator, its gRPC URL and HTTP port, and how long submit took.
pub struct Served {
    pub server: Server,
    pub url: String,
    pub http: u16,
    pub submit_s: f64,
}

/// Submits `sweep_text` (a sweep named in it) into `dir/NAME.db` with `coordinator submit
/// --force`, then serves it on loopback (gRPC and HTTP), with `extra` arguments for `serve`,
/// and waits until it listens.
pub async fn serve_sweep(
    bin: &Path,
    dir: &Path,
    name: &str,
    sweep_text: &str,
    extra: &[&str],
) -> Result<Served> {
    let sweep = dir.join(format!("{name}.toml"));
    std::fs::write(&sweep, sweep_text)?;
    let db = dir.join(format!("{name}.db"));
    let started = Instant::now();
    let ok = Command::new(bin)
        .args(["submit", "--force", "--db"])
        .arg(&db)
        .arg(&sweep)
        .stdout(Stdio::null())
        .status()?
        .success();
    if !ok {
        bail!("coordinator submit failed");
    }
    let submit_s = started.elapsed().as_secs_f64();
    let free = || -> Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let (port, http) = (free()?, free()?);
    let server = Server(
        Command::new(bin)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--http-listen", &format!("127.0.0.1:{http}")])
            .args(extra)
            .arg("--db")
            .arg(&db)
            .env("SWEEP_TOKEN", TOKEN)
            .env("SWEEP_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()?,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("the coordinator did not start listening");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Served {
        server,
        url: format!("http://127.0.0.1:{port}"),
        http,
        submit_s,
    })
}

/// Kills the coordinator however the run ends.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The smallest result the coordinator accepts: completed, with a 2-class test.
pub fn stand_in_result() -> pb::TrialResult {
    pb::TrialResult {
        status: pb::TrialStatus::Completed as i32,
        test: Some(pb::TestMetrics {
            accuracy: 0.5,
            per_class_accuracy: vec![0.5, 0.5],
            confusion: vec![1, 1, 1, 1],
            images: 4,
            ..Default::default()
        }),
        best_val_accuracy: Some(0.5),
        train_images: 1,
        parameters: 1,
        device: "cpu".into(),
        ..Default::default()
    }
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').context("stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}
