//! Transport security end to end: `coordinator tls init` makes the certificates, `serve`
//! requires them (mTLS), workers train over TLS, and every way of getting it wrong is refused
//! with a message that says why. Health endpoints are checked on the same processes.

use coordinator::store::Store;
use integration_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// `coordinator tls init` into `dir`; returns the token it wrote.
fn tls_init(dir: &Path) -> String {
    let out = Command::new(bin("coordinator"))
        .args([
            "tls",
            "init",
            "--host",
            "localhost",
            "--host",
            "127.0.0.1",
            "--out",
        ])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(dir.join("token")).unwrap()
}

struct TlsCluster {
    dir: tempfile::TempDir,
    certs: PathBuf,
    data: PathBuf,
    db: PathBuf,
    port: u16,
    health: u16,
    _server: Proc,
}

fn start() -> TlsCluster {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    tls_init(&certs);
    let data = dir.path().join("data");
    synthetic_cifar(&data, 20, 10);
    let sweep = dir.path().join("tls.toml");
    std::fs::write(
        &sweep,
        "name = \"tls\"\ndata = \"data\"\n[defaults]\nmodel = \"dense\"\nepochs = 1\n\
         train_images = 80\ntest_images = 10\nbatch_size = 20\n[grid]\nseed = [1, 2]\n",
    )
    .unwrap();
    let db = dir.path().join("tls.db");
    let (ok, _, err) = coordinator(&["submit", sweep.to_str().unwrap()], &db);
    assert!(ok, "{err}");
    let [port, health] = free_ports();
    let c = |f: &str| certs.join(f);
    let mut cmd = Command::new(bin("coordinator"));
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--db"])
        .arg(&db)
        .arg("--tls-cert")
        .arg(c("server.pem"))
        .arg("--tls-key")
        .arg(c("server-key.pem"))
        .arg("--tls-client-ca")
        .arg(c("ca.pem"))
        .arg("--token-file")
        .arg(c("token"))
        .args(["--health-listen", &format!("127.0.0.1:{health}")])
        .env("RUST_LOG", "info");
    let server = Proc::spawn(&mut cmd, dir.path().join("server.log"));
    assert!(
        wait_until(Duration::from_secs(20), || http_status(health, "/readyz")
            == Some(200)),
        "coordinator never became ready: {}",
        server.log_text()
    );
    TlsCluster {
        dir,
        certs,
        data,
        db,
        port,
        health,
        _server: server,
    }
}

impl TlsCluster {
    /// A worker with the given TLS flags (paths relative to the certificate directory).
    fn worker(
        &self,
        name: &str,
        url: &str,
        flags: &[(&str, &str)],
        token: &str,
        health: Option<u16>,
    ) -> Proc {
        let mut cmd = Command::new(bin("worker"));
        cmd.args([
            "--coordinator",
            url,
            "--device",
            "cpu",
            "--name",
            name,
            "--data",
        ])
        .arg(&self.data)
        .env("SWEEP_TOKEN", token)
        .env("RUST_LOG", "info");
        for (flag, file) in flags {
            cmd.arg(flag).arg(self.certs.join(file));
        }
        if let Some(h) = health {
            cmd.args(["--health-listen", &format!("127.0.0.1:{h}")]);
        }
        Proc::spawn(&mut cmd, self.dir.path().join(format!("{name}.log")))
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.certs.join("token")).unwrap()
    }

    fn finished(&self) -> usize {
        Store::open(&self.db)
            .and_then(|s| s.raw_states())
            .unwrap_or_default()
            .iter()
            .filter(|t| t.state == "finished")
            .count()
    }
}

/// Waits for a worker that must be turned away: it exits, unsuccessfully.
fn refused(w: &mut Proc, why: &str) {
    let status = w.wait_exit(Duration::from_secs(30)).expect(why);
    assert!(!status.success(), "{why}: {}", w.log_text());
}

const MTLS: [(&str, &str); 3] = [
    ("--tls-ca", "ca.pem"),
    ("--tls-cert", "worker.pem"),
    ("--tls-key", "worker-key.pem"),
];

#[test]
fn sweep_over_mtls_with_health_endpoints() {
    let _serial = serial();
    let c = start();
    assert_eq!(http_status(c.health, "/healthz"), Some(200));
    let url = format!("https://localhost:{}", c.port);
    let worker_health = free_port();
    let w = c.worker("good", &url, &MTLS, &c.token(), Some(worker_health));
    assert!(
        wait_until(Duration::from_secs(120), || c.finished() == 2),
        "sweep over mTLS did not finish: {}",
        w.log_text()
    );
    assert_eq!(http_status(worker_health, "/healthz"), Some(200));
    assert_eq!(
        http_status(worker_health, "/readyz"),
        Some(200),
        "connected worker is ready"
    );
    // The coordinator goes away: the worker stays alive but is no longer ready.
    drop(c._server);
    assert!(
        wait_until(Duration::from_secs(30), || http_status(
            worker_health,
            "/readyz"
        ) == Some(503)),
        "worker still ready without a coordinator"
    );
    assert_eq!(
        http_status(worker_health, "/healthz"),
        Some(200),
        "liveness must not follow the coordinator"
    );
}

#[test]
fn wrong_ca_missing_client_cert_and_wrong_token_are_refused() {
    let _serial = serial();
    let c = start();
    let url = format!("https://localhost:{}", c.port);
    let other = c.dir.path().join("other-ca");
    tls_init(&other);

    // The coordinator's certificate is not signed by the CA this worker trusts.
    let mut w = c.worker(
        "wrong-ca",
        &url,
        &[
            ("--tls-ca", "../other-ca/ca.pem"),
            ("--tls-cert", "worker.pem"),
            ("--tls-key", "worker-key.pem"),
        ],
        &c.token(),
        None,
    );
    refused(&mut w, "a worker with the wrong CA must stop");
    assert!(
        !w.log_text().contains("requires a client certificate"),
        "{}",
        w.log_text()
    );
    assert!(
        w.log_text().contains("TLS") && w.log_text().contains("certificate"),
        "{}",
        w.log_text()
    );

    // A client certificate from another CA: the coordinator refuses the handshake.
    let mut w = c.worker(
        "foreign-cert",
        &url,
        &[
            ("--tls-ca", "ca.pem"),
            ("--tls-cert", "../other-ca/worker.pem"),
            ("--tls-key", "../other-ca/worker-key.pem"),
        ],
        &c.token(),
        None,
    );
    refused(&mut w, "a foreign client certificate must stop the worker");

    // No client certificate at all.
    let mut w = c.worker("no-cert", &url, &[("--tls-ca", "ca.pem")], &c.token(), None);
    refused(&mut w, "a worker without a client certificate must stop");
    // With the reason, whatever the timing (the server's alert races the first request; the
    // worker's handshake probe sees the certificate request every time).
    assert!(
        w.log_text().contains("client certificate"),
        "{}",
        w.log_text()
    );

    // Right certificates, wrong token: TLS does not replace the token check.
    let mut w = c.worker("wrong-token", &url, &MTLS, "not-the-token-at-all", None);
    refused(&mut w, "a worker with the wrong token must stop");
    assert!(
        w.log_text().contains("wrong worker token"),
        "{}",
        w.log_text()
    );

    // Plaintext to a coordinator that is not on loopback is refused before connecting.
    let mut w = c.worker("plain", "http://192.0.2.1:50051", &[], &c.token(), None);
    refused(&mut w, "plaintext off loopback must be refused");
    assert!(w.log_text().contains("--plaintext"), "{}", w.log_text());

    assert_eq!(
        c.finished(),
        0,
        "no refused worker may have trained anything"
    );
}

#[test]
fn serve_refuses_plaintext_off_loopback_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    let out = Command::new(bin("coordinator"))
        .args(["serve", "--listen", "0.0.0.0:0", "--db"])
        .arg(&db)
        .env("SWEEP_TOKEN", "t0123456789abcdef")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--plaintext") && err.contains("tls init"),
        "{err}"
    );

    let missing = Command::new(bin("coordinator"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "nope.pem",
            "--tls-key",
            "nope-key.pem",
            "--db",
        ])
        .arg(&db)
        .env("SWEEP_TOKEN", "t0123456789abcdef")
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("nope.pem"), "{err}");

    // A guessable worker token is refused as an admin token is (one rule for both).
    let short = Command::new(bin("coordinator"))
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .env("SWEEP_TOKEN", "x")
        .output()
        .unwrap();
    assert!(!short.status.success());
    let err = String::from_utf8_lossy(&short.stderr);
    assert!(err.contains("worker token is too short (1 < 16"), "{err}");
}
