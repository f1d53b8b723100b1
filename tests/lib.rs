//! Helpers for the cluster tests in `tests/`: locating the built binaries, starting and
//! always killing processes, synthetic datasets, and polling with a deadline.
//!
//! - [`cluster`]: a submitted sweep with a coordinator and workers around it.
//! - [`faults`]: a cuttable proxy, signals, resource limits and the exactly-once check.
//! - [`webdriver`]: a minimal W3C WebDriver client driving headless Chromium (chromedriver).

#[path = "support/cluster.rs"]
pub mod cluster;
#[path = "support/faults.rs"]
pub mod faults;
#[path = "support/webdriver.rs"]
pub mod webdriver;

pub use cluster::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A built workspace binary (`cargo test --workspace` builds `worker` and `coordinator`,
/// because both packages have integration tests of their own).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built; run `cargo test --workspace`",
        path.display()
    );
    path
}

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The project's Python (scripts/setup-libtorch.sh makes it, with torch, numpy and pillow).
pub fn python() -> PathBuf {
    let py = repo().join(".venv/bin/python");
    assert!(
        py.is_file(),
        "{} is missing; run scripts/setup-libtorch.sh",
        py.display()
    );
    py
}

/// Writes examples/own-model's SmallResNet as TorchScript to `out` (`classes` outputs).
pub fn export_small_resnet(out: &Path, classes: u32) {
    let o = Command::new(python())
        .arg(repo().join("examples/own-model/export.py"))
        .arg(out)
        .args(["--classes", &classes.to_string()])
        .output()
        .expect("spawn python");
    assert!(
        o.status.success(),
        "export.py failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A child process that is killed (SIGKILL) and reaped when dropped, so no test leaves a
/// process behind, whatever fails.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr going to `log`. The test process writes the log
    /// (through a pipe), so limits set on the child (file size, memory) never cost its log.
    pub fn spawn(cmd: &mut Command, log: PathBuf) -> Proc {
        let mut file = std::fs::File::create(&log).expect("log file");
        let (mut reader, writer) = std::io::pipe().expect("pipe");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(writer.try_clone().expect("pipe"))
            .stderr(writer)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        // Ends when the child and everything it started have closed the pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut file));
        Proc { child, log }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit on its own, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Cluster tests hold this lock so they run one at a time: each starts processes that train
/// on both cores, and running them side by side would make their timing depend on each other.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Polls `f` every 100 ms until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

/// A port that was free a moment ago (for a coordinator that must come back on the same
/// address after a restart).
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct ports that were free a moment ago. Each listener is held until all are
/// chosen: released one by one, the kernel may hand the same port out twice (a coordinator
/// whose health port was its own gRPC port could not start).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    std::array::from_fn(|i| held[i].local_addr().expect("addr").port())
}

/// Waits until `p` accepts connections on 127.0.0.1:`port`. Until then the port is only
/// reserved by a number, and anything binding port 0 meanwhile (a proxy) may be given it.
/// Err with its log if it exits first; panics if 60 s pass.
pub fn wait_listening(p: &mut Proc, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = p.child.try_wait() {
            return Err(format!(
                "{} exited ({status}):\n{}",
                p.log.display(),
                p.log_text()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on {port} after 60 s:\n{}", p.log_text());
}

/// Starts `spawn(ports)` on `N` ports free a moment ago and waits until it listens on the
/// first. A port may be taken between choosing and binding it: if the process exits with
/// `taken` in its log, it starts again on other ports (4 tries in all).
pub fn start_listening<const N: usize>(
    taken: &str,
    mut spawn: impl FnMut([u16; N]) -> Proc,
) -> (Proc, [u16; N]) {
    for _ in 0..4 {
        let ports = free_ports::<N>();
        let mut p = spawn(ports);
        match wait_listening(&mut p, ports[0]) {
            Ok(()) => return (p, ports),
            Err(why) if why.contains(taken) => continue,
            Err(why) => panic!("{why}"),
        }
    }
    panic!("no free ports after 4 tries");
}

/// Writes a small CIFAR-10 binary-layout dataset of random images: 5 training files of
/// `per_batch` images and a test file of `test` images.
pub fn synthetic_cifar(root: &Path, per_batch: usize, test: usize) {
    write_cifar(root, per_batch, test, 0x9e37_79b9_7f4a_7c15, |_, noise| {
        noise
    });
}

/// Like [`synthetic_cifar`], but learnable: every pixel of an image of class k is 20k plus
/// noise below 40, so a model that trains at all tells the classes apart within an epoch, and
/// one that does not (a learning rate near zero) stays at chance.
pub fn learnable_cifar(root: &Path, per_batch: usize, test: usize) {
    write_cifar(
        root,
        per_batch,
        test,
        0x2545_f491_4f6c_dd1d,
        |label, noise| label * 20 + noise % 40,
    );
}

/// The binary layout with labels 0, 1, ..., 9, 0, ... and each pixel `pixel(label, noise)`,
/// the noise from an xorshift generator started at `seed`.
fn write_cifar(root: &Path, per_batch: usize, test: usize, seed: u64, pixel: fn(u8, u8) -> u8) {
    let dir = root.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut state = seed;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 24) as u8
    };
    let mut write = |name: &str, n: usize| {
        let mut bytes = Vec::with_capacity(n * 3073);
        for i in 0..n {
            let label = (i % 10) as u8;
            bytes.push(label);
            bytes.extend((0..3072).map(|_| pixel(label, next())));
        }
        std::fs::write(dir.join(name), bytes).expect("write batch");
    };
    for b in 1..=5 {
        write(&format!("data_batch_{b}.bin"), per_batch);
    }
    write("test_batch.bin", test);
}

/// A coordinator `serve` process on 127.0.0.1:`port`.
pub fn serve(
    dir: &Path,
    db: &Path,
    port: u16,
    token: &str,
    heartbeat_timeout: f64,
    log: &str,
    extra: &[&str],
) -> Proc {
    let mut cmd = Command::new(bin("coordinator"));
    cmd.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--heartbeat-timeout",
        &heartbeat_timeout.to_string(),
        "--db",
    ])
    .arg(db)
    .args(extra)
    .env("SWEEP_TOKEN", token)
    .env("SWEEP_ADMIN_TOKEN", cluster::ADMIN_TOKEN)
    .env("RUST_LOG", "info");
    Proc::spawn(&mut cmd, dir.join(log))
}

/// A worker process pulling from the coordinator on `port`, logging to `NAME.log`.
pub fn worker(dir: &Path, port: u16, token: Option<&str>, data: &Path, name: &str) -> Proc {
    worker_logging_to(dir, port, token, data, name, &format!("{name}.log"))
}

/// [`worker`] with its own log file, for several workers of one name (one host).
pub fn worker_logging_to(
    dir: &Path,
    port: u16,
    token: Option<&str>,
    data: &Path,
    name: &str,
    log: &str,
) -> Proc {
    let mut cmd = worker_command(port, token, data, name);
    Proc::spawn(&mut cmd, dir.join(log))
}

/// The command [`worker`] runs.
pub fn worker_command(port: u16, token: Option<&str>, data: &Path, name: &str) -> Command {
    let mut cmd = Command::new(bin("worker"));
    cmd.args([
        "--coordinator",
        &format!("http://127.0.0.1:{port}"),
        "--device",
        "cpu",
        "--name",
        name,
        "--data",
    ])
    .arg(data)
    .env("RUST_LOG", "info")
    .env_remove("SWEEP_TOKEN");
    if let Some(t) = token {
        cmd.env("SWEEP_TOKEN", t);
    }
    cmd
}

/// `coordinator sweep` with local workers, quiet, writing into `out`.
pub fn sweep_command(sweep: &Path, out: &Path, local_workers: u32) -> Command {
    let mut cmd = Command::new(bin("coordinator"));
    cmd.args([
        "sweep",
        "--quiet",
        "--local-workers",
        &local_workers.to_string(),
        "--out",
    ])
    .arg(out)
    .arg(sweep)
    .env("SWEEP_WORKER_BIN", bin("worker"));
    cmd
}

/// Runs a coordinator subcommand to completion and returns (success, stdout, stderr).
pub fn coordinator(args: &[&str], db: &Path) -> (bool, String, String) {
    let out = Command::new(bin("coordinator"))
        .args(args)
        .arg("--db")
        .arg(db)
        .output()
        .expect("coordinator");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `coordinator export SWEEP --best --out OUT` on the database `db`, which must succeed; its
/// stdout.
pub fn export_best(sweep: &str, db: &Path, out: &Path) -> String {
    let out = out.to_str().expect("a UTF-8 path");
    let (ok, stdout, err) = coordinator(&["export", sweep, "--best", "--out", out], db);
    assert!(ok, "coordinator export: {err}");
    stdout
}

/// `worker eval` (on CPU) of the exported model `model` on `data` (a dataset directory or
/// `imagefolder:DIR`), which must succeed: the JSON it prints.
pub fn worker_eval(data: impl AsRef<std::ffi::OsStr>, model: &Path) -> serde_json::Value {
    let out = Command::new(bin("worker"))
        .args(["eval", "--device", "cpu", "--data"])
        .arg(data)
        .arg(model)
        .output()
        .expect("spawn worker eval");
    assert!(
        out.status.success(),
        "worker eval: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("worker eval prints JSON")
}

/// Runs an admin command against the coordinator on 127.0.0.1:`port` (`--server`, with
/// [`cluster::ADMIN_TOKEN`]) and returns (success, stdout, stderr).
pub fn admin(args: &[&str], port: u16) -> (bool, String, String) {
    let out = Command::new(bin("coordinator"))
        .args(args)
        .arg("--server")
        .arg(format!("http://127.0.0.1:{port}"))
        .env("SWEEP_ADMIN_TOKEN", cluster::ADMIN_TOKEN)
        .output()
        .expect("coordinator");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The HTTP status of `GET path` on 127.0.0.1:`port`, or None if nothing answers.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}
