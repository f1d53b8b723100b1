//! A submitted sweep, a `coordinator serve` process and `worker` processes around it, and
//! what the database says about its trials.

use crate::{
    admin, coordinator, serve, start_listening, synthetic_cifar, worker, worker_command, Proc,
};
use coordinator::store::Store;
use std::path::{Path, PathBuf};

pub const TOKEN: &str = "test-token-0123456789";
/// The admin token every test coordinator is started with.
pub const ADMIN_TOKEN: &str = "test-admin-token-9876543210";

/// Slow enough to be killed mid-trial (a few seconds per epoch on 2 cores), fast enough for CI.
pub const SLOW: &str = "[defaults]\nmodel = \"seed-cnn\"\ntrain_images = 400\ntest_images = 50\nepochs = 3\nbatch_size = 50\n\
                        [grid]\nseed = [1, 2, 3]\n";

/// Every trial in the database as stored.
pub fn states(db: &Path) -> Vec<coordinator::store::RawTrial> {
    Store::open(db)
        .and_then(|s| s.raw_states())
        .unwrap_or_default()
}

pub fn any_in(db: &Path, state: &str) -> bool {
    states(db).iter().any(|t| t.state == state)
}

pub fn all_finished(db: &Path, n: usize) -> bool {
    let s = states(db);
    s.len() == n && s.iter().all(|t| t.state == "finished")
}

/// A running trial that has stored at least one epoch: (id, attempt, worker).
pub fn running_with_an_epoch(db: &Path) -> Option<(String, u32, String)> {
    let store = Store::open(db).ok()?;
    states(db).into_iter().find_map(|t| {
        (t.state == "running" && store.epochs_of(&t.id, t.attempt).unwrap_or(0) >= 1)
            .then(|| (t.id.to_string(), t.attempt, t.worker.unwrap_or_default()))
    })
}

pub fn write_sweep(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, format!("name = \"{name}\"\ndata = \"data\"\n{body}")).unwrap();
    path
}

/// A submitted sweep and a coordinator serving it on a fresh port, with health endpoints.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub name: String,
    pub data: PathBuf,
    pub db: PathBuf,
    pub port: u16,
    pub health_port: u16,
    pub server: Proc,
}

impl Cluster {
    pub fn start(name: &str, body: &str, per_batch: usize, heartbeat_timeout: f64) -> Cluster {
        Cluster::start_with(name, body, per_batch, heartbeat_timeout, &[])
    }

    /// [`Cluster::start`] with more arguments for `coordinator serve`.
    pub fn start_with(
        name: &str,
        body: &str,
        per_batch: usize,
        heartbeat_timeout: f64,
        extra: &[&str],
    ) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        synthetic_cifar(&data, per_batch, 50);
        let sweep = write_sweep(dir.path(), name, body);
        let db = dir.path().join(format!("{name}.db"));
        let (ok, _, err) = coordinator(&["submit", sweep.to_str().unwrap()], &db);
        assert!(ok, "{err}");
        // A port that was free a moment ago may have been taken since (by any process's
        // outgoing connection): then the server exits at once, and gets other ports.
        let (server, [port, health_port]) =
            start_listening("Address already in use", |[port, health_port]| {
                let http = format!("127.0.0.1:{health_port}");
                let mut args = vec!["--health-listen", &http];
                args.extend(extra);
                serve(
                    dir.path(),
                    &db,
                    port,
                    TOKEN,
                    heartbeat_timeout,
                    "server.log",
                    &args,
                )
            });
        Cluster {
            dir,
            name: name.to_string(),
            data,
            db,
            port,
            health_port,
            server,
        }
    }

    pub fn worker(&self, name: &str) -> Proc {
        worker(self.dir.path(), self.port, Some(TOKEN), &self.data, name)
    }

    /// A worker with more arguments (after the usual ones).
    pub fn worker_with(&self, name: &str, extra: &[&str]) -> Proc {
        let mut cmd = worker_command(self.port, Some(TOKEN), &self.data, name);
        cmd.args(extra);
        Proc::spawn(&mut cmd, self.dir.path().join(format!("{name}.log")))
    }

    /// A worker that reaches the coordinator through `port` (a proxy) instead.
    pub fn worker_via(&self, port: u16, name: &str) -> Proc {
        worker(self.dir.path(), port, Some(TOKEN), &self.data, name)
    }

    /// The report's results.json rows, fetched by `coordinator report --server`.
    pub fn report_rows(&self) -> Vec<serde_json::Value> {
        let out = self.dir.path().join("report");
        let (ok, _, err) = admin(
            &["report", &self.name, "--out", out.to_str().unwrap()],
            self.port,
        );
        assert!(ok, "{err}");
        let text = std::fs::read_to_string(out.join("results.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&text)
            .unwrap()
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}
