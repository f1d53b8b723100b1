//! The control plane end to end, as a user at a second terminal drives it: a `coordinator
//! serve` on mTLS, and `coordinator submit|status|watch|cancel|rerun|report --server` against
//! it with the admin token. The worker token is refused on every admin call, and no command
//! opens the database a running coordinator holds.

use integration_tests::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

struct Admin {
    dir: tempfile::TempDir,
    certs: PathBuf,
    data: PathBuf,
    db: PathBuf,
    port: u16,
    http: u16,
    server: Proc,
}

fn start() -> Admin {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let out = Command::new(bin("coordinator"))
        .args(["tls", "init", "--host", "localhost", "--out"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = dir.path().join("data");
    synthetic_cifar(&data, 20, 10);
    let db = dir.path().join("admin.db");
    let [port, http] = free_ports();
    let server = serve_tls(&dir.path().join("server.log"), &certs, &db, port, http);
    Admin {
        dir,
        certs,
        data,
        db,
        port,
        http,
        server,
    }
}

/// `coordinator serve` on `port` with mTLS, both tokens and the dashboard on `http`, once
/// it is ready.
fn serve_tls(log: &Path, certs: &Path, db: &Path, port: u16, http: u16) -> Proc {
    let mut cmd = Command::new(bin("coordinator"));
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--db"])
        .arg(db)
        .arg("--tls-cert")
        .arg(certs.join("server.pem"))
        .arg("--tls-key")
        .arg(certs.join("server-key.pem"))
        .arg("--tls-client-ca")
        .arg(certs.join("ca.pem"))
        .arg("--token-file")
        .arg(certs.join("token"))
        .arg("--admin-token-file")
        .arg(certs.join("admin-token"))
        .args(["--http-listen", &format!("127.0.0.1:{http}")])
        .env_remove("SWEEP_TOKEN")
        .env_remove("SWEEP_ADMIN_TOKEN")
        .env("RUST_LOG", "info");
    let server = Proc::spawn(&mut cmd, log.to_path_buf());
    assert!(
        wait_until(Duration::from_secs(20), || http_status(http, "/readyz")
            == Some(200)),
        "coordinator never became ready: {}",
        server.log_text()
    );
    server
}

impl Admin {
    /// `coordinator ARGS --server https://localhost:PORT` with mTLS and the token in `token`.
    fn command(&self, args: &[&str], token: &str) -> Command {
        let mut cmd = Command::new(bin("coordinator"));
        cmd.args(args)
            .args(["--server", &format!("https://localhost:{}", self.port)])
            .env_remove("SWEEP_ADMIN_TOKEN");
        self.client_flags(&mut cmd, token);
        cmd
    }

    /// What every client of this coordinator passes: its CA, the client certificate (mTLS)
    /// and the token file `token` (a name in the certificate directory, or a path).
    fn client_flags(&self, cmd: &mut Command, token: &str) {
        cmd.arg("--tls-ca")
            .arg(self.certs.join("ca.pem"))
            .arg("--tls-cert")
            .arg(self.certs.join("worker.pem"))
            .arg("--tls-key")
            .arg(self.certs.join("worker-key.pem"))
            .arg("--token-file")
            .arg(self.certs.join(token));
    }

    fn run(&self, args: &[&str], token: &str) -> Output {
        self.command(args, token).output().unwrap()
    }

    /// An admin command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, "admin-token");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {text}{}\nserver: {}",
            String::from_utf8_lossy(&out.stderr),
            self.server.log_text()
        );
        text
    }

    fn sweep(&self, name: &str, body: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, format!("name = \"{name}\"\ndata = \"data\"\n{body}")).unwrap();
        path
    }

    /// `coordinator watch SWEEP --quiet`, once it says it is subscribed (from then on it
    /// misses nothing).
    fn watching(&self, sweep: &str) -> Proc {
        let watch = Proc::spawn(
            &mut self.command(&["watch", sweep, "--quiet"], "admin-token"),
            self.dir.path().join("watch.log"),
        );
        let subscribed = format!("watching sweep `{sweep}`");
        assert!(
            wait_until(Duration::from_secs(30), || watch
                .log_text()
                .contains(&subscribed)),
            "{}",
            watch.log_text()
        );
        watch
    }

    /// A worker named `name` presenting the token file `token`.
    fn worker(&self, name: &str, token: &str) -> Proc {
        let mut cmd = Command::new(bin("worker"));
        cmd.args(["--coordinator", &format!("https://localhost:{}", self.port)])
            .args(["--device", "cpu", "--name", name, "--data"])
            .arg(&self.data)
            .env_remove("SWEEP_TOKEN")
            .env("RUST_LOG", "info");
        self.client_flags(&mut cmd, token);
        Proc::spawn(&mut cmd, self.dir.path().join(format!("{name}.log")))
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const QUICK: &str = "[defaults]\nmodel = \"dense\"\nepochs = 2\ntrain_images = 80\n\
                     test_images = 10\nbatch_size = 20\n[grid]\nseed = [1, 2]\n";

#[test]
fn remote_submit_watch_status_report_over_mtls() {
    let _serial = serial();
    let a = start();
    let quick = a.sweep("quick", QUICK);
    let quick = quick.to_str().unwrap();

    // The database is the running coordinator's: local commands on it are refused.
    let (ok, _, err) = coordinator(&["submit", quick], &a.db);
    assert!(
        !ok && err.contains("in use") && err.contains("--server"),
        "{err}"
    );

    let out = a.ok(&["submit", quick]);
    assert!(out.contains("submitted sweep `quick`: 2 trials"), "{out}");
    // A second terminal follows it live while a worker trains.
    let mut watch = a.watching("quick");
    let _w = a.worker("w1", "token");
    let status = watch
        .wait_exit(Duration::from_secs(120))
        .expect("watch ends when every trial has ended");
    let seen = watch.log_text();
    assert!(status.success(), "{seen}");
    assert_eq!(seen.matches(" finished: completed").count(), 2, "{seen}");
    assert!(seen.contains("quick: 2 trials: 2 finished"), "{seen}");

    let out = a.ok(&["status"]);
    assert!(out.contains("quick: 2 trials: 2 finished"), "{out}");
    let out = a.ok(&["status", "quick"]);
    assert_eq!(out.matches("| completed | 1 | 2/2 |").count(), 2, "{out}");

    let report = a.dir.path().join("report");
    let out = a.ok(&["report", "quick", "--out", report.to_str().unwrap()]);
    assert!(out.contains("report written to"), "{out}");
    for f in ["report.md", "results.csv", "results.json", "report.html"] {
        assert!(report.join(f).is_file(), "{f} missing");
    }
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("results.json")).unwrap())
            .unwrap();
    assert_eq!(rows.as_array().map(Vec::len), Some(2), "{rows}");

    // A bad sweep file is refused with its position, before anything is stored.
    let bad = a.sweep("bad", "[defaults]\nlr = \"fast\"\n");
    let out = a.run(&["submit", bad.to_str().unwrap()], "admin-token");
    assert!(
        !out.status.success() && text(&out).contains("bad.toml:4"),
        "{}",
        text(&out)
    );
    let out = a.ok(&["status"]);
    assert!(!out.contains("bad"), "{out}");

    // The dashboard's JSON on loopback, read without a token.
    assert_eq!(http_status(a.http, "/api/sweeps"), Some(200));
    assert_eq!(http_status(a.http, "/api/sweeps/quick"), Some(200));
    assert_eq!(http_status(a.http, "/api/sweeps/nope"), Some(404));
    assert_eq!(http_status(a.http, "/"), Some(200));
}

/// `coordinator watch` rides out a coordinator killed and restarted under it: it says it
/// lost the coordinator, subscribes again, and ends as usual when the sweep does. Before, it
/// ended with "h2 protocol error".
#[test]
fn a_watch_reconnects_when_the_coordinator_restarts() {
    let _serial = serial();
    let mut a = start();
    let quick = a.sweep("quick", QUICK);
    a.ok(&["submit", quick.to_str().unwrap()]);
    let mut watch = a.watching("quick");
    a.server.kill();
    // Down long enough for watch to notice and retry at least once.
    assert!(
        wait_until(Duration::from_secs(30), || watch
            .log_text()
            .contains("reconnecting in")),
        "{}",
        watch.log_text()
    );
    a.server = serve_tls(
        &a.dir.path().join("server2.log"),
        &a.certs,
        &a.db,
        a.port,
        a.http,
    );
    let _w = a.worker("w1", "token");
    let status = watch
        .wait_exit(Duration::from_secs(120))
        .expect("watch ends when every trial has ended");
    let seen = watch.log_text();
    assert!(status.success(), "{seen}");
    assert!(seen.contains("watching again sweep `quick`"), "{seen}");
    assert!(seen.contains("quick: 2 trials: 2 finished"), "{seen}");
}

#[test]
fn cancel_one_trial_then_the_sweep_then_rerun_them() {
    let _serial = serial();
    let a = start();
    // No worker: every trial stays queued, so each step's count is exact.
    let body = "[defaults]\nmodel = \"dense\"\nepochs = 1\n[grid]\nseed = [1, 2, 3]\n";
    let slow = a.sweep("held", body);
    a.ok(&["submit", slow.to_str().unwrap()]);
    let out = a.ok(&["status", "held"]);
    let first = out
        .lines()
        .filter_map(|l| l.strip_prefix("| ").and_then(|l| l.split(" | ").next()))
        .find(|id| id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit()))
        .map(str::to_string)
        .expect("a trial id in the status table");
    let out = a.ok(&["cancel", "held", "--trial", &first]);
    assert!(out.contains(&format!("cancelled trial {first}")), "{out}");
    let out = a.ok(&["status", "held"]);
    assert!(
        out.contains("3 trials: 0 finished, 0 running, 2 queued, 0 failed, 1 cancelled"),
        "{out}"
    );
    let out = a.ok(&["cancel", "held"]);
    assert!(out.contains("2 unfinished trials stopped"), "{out}");
    let out = a.ok(&["rerun", "held"]);
    assert!(
        out.contains("3 failed or cancelled trials queued again"),
        "{out}"
    );
    let out = a.ok(&["status"]);
    assert!(
        out.contains("held: 3 trials: 0 finished, 0 running, 3 queued"),
        "{out}"
    );
    assert!(!out.contains("(cancelled)"), "{out}");
    let out = a.run(
        &["cancel", "held", "--trial", "0000000000000000"],
        "admin-token",
    );
    assert!(
        !out.status.success() && text(&out).contains("has no trial"),
        "{}",
        text(&out)
    );
    let out = a.run(&["cancel", "nope"], "admin-token");
    assert!(
        !out.status.success() && text(&out).contains("no sweep named `nope`"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_worker_token_is_refused_on_every_admin_call() {
    let _serial = serial();
    let a = start();
    let quick = a.sweep("quick", QUICK);
    let q = quick.to_str().unwrap();
    let out_dir = a.dir.path().join("r");
    let calls: [&[&str]; 7] = [
        &["submit", q],
        &["status"],
        &["status", "quick"],
        &["cancel", "quick"],
        &["rerun", "quick"],
        &["report", "quick", "--out", out_dir.to_str().unwrap()],
        &["watch", "quick"],
    ];
    for args in calls {
        let out = a.run(args, "token");
        let t = text(&out);
        assert!(!out.status.success(), "{args:?} with the worker token: {t}");
        assert!(
            t.contains("needs the admin role") && t.contains("PermissionDenied"),
            "{args:?}: {t}"
        );
    }
    // A wrong token is refused too, and nothing was submitted meanwhile.
    let wrong = a.dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-token-at-all").unwrap();
    let out = a.run(&["status"], wrong.to_str().unwrap());
    assert!(
        !out.status.success() && text(&out).contains("wrong admin token"),
        "{}",
        text(&out)
    );
    let out = a.ok(&["status"]);
    assert!(out.contains("no sweeps"), "{out}");
    // The admin token is not a worker token either.
    let mut w = a.worker("intruder", "admin-token");
    let status = w
        .wait_exit(Duration::from_secs(30))
        .expect("refused worker exits");
    assert!(!status.success(), "{}", w.log_text());
}

/// `coordinator submit --server` uploads the TorchScript modules a sweep names (the
/// coordinator reads only the resolved text), and a worker with an empty module cache fetches
/// the module and trains it. A sweep naming a module the coordinator never received is
/// refused. A sweep on an image folder goes with the folder's fingerprint.
#[test]
fn a_torchscript_module_travels_with_a_remote_submission() {
    let a = start();
    let elsewhere = a.dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let module = elsewhere.join("net.pt");
    export_small_resnet(&module, 10);
    let hash = coordinator::plan::sha256_hex(&std::fs::read(&module).unwrap())[..32].to_string();
    let sweep = elsewhere.join("own.toml");
    std::fs::write(
        &sweep,
        "name = \"own\"\ndata = \"../data\"\n[defaults]\nmodel = \"torchscript:net.pt\"\nepochs = 1\n",
    )
    .unwrap();
    let out = a.ok(&["submit", sweep.to_str().unwrap()]);
    assert!(
        out.contains("uploaded TorchScript module") && out.contains(&hash),
        "{out}"
    );
    let stored = PathBuf::from(format!("{}.checkpoints", a.db.display()))
        .join("modules")
        .join(format!("{hash}.pt"));
    assert!(stored.is_file(), "{} is missing", stored.display());
    let cache = a.dir.path().join("worker-cache");
    let mut cmd = Command::new(bin("worker"));
    cmd.args(["--coordinator", &format!("https://localhost:{}", a.port)])
        .args(["--device", "cpu", "--name", "w1", "--data"])
        .arg(&a.data)
        .env_remove("SWEEP_TOKEN")
        .env("SWEEP_MODULE_CACHE", &cache)
        .env("RUST_LOG", "info");
    a.client_flags(&mut cmd, "token");
    let _worker = Proc::spawn(&mut cmd, a.dir.path().join("w1.log"));
    assert!(
        wait_until(Duration::from_secs(120), || a
            .ok(&["status", "own"])
            .contains("1 trials: 1 finished")),
        "{}",
        a.ok(&["status", "own"])
    );
    assert!(cache.join(format!("{hash}.pt")).is_file());

    let unknown = a.sweep(
        "unknown",
        &format!("[defaults]\nmodel = \"torchscript:{}\"\n", "0".repeat(32)),
    );
    let out = a.run(&["submit", unknown.to_str().unwrap()], "admin-token");
    assert!(
        !out.status.success() && text(&out).contains("does not have"),
        "{}",
        text(&out)
    );
    // An image folder is listed where the sweep file is, and its fingerprint sent along: the
    // coordinator does not read folders a client names (issue 28).
    cifar10::testdata::write_image_folder(&elsewhere.join("images"), &["a", "b"], 1, 1, 8);
    let folder = elsewhere.join("folder.toml");
    std::fs::write(
        &folder,
        "name = \"folder\"\ndata = \"imagefolder:images\"\n[defaults]\nepochs = 1\n[grid]\nseed = [1, 2]\n",
    )
    .unwrap();
    let out = a.ok(&["submit", folder.to_str().unwrap()]);
    assert!(out.contains("`folder`: 2 trials"), "{out}");
}
