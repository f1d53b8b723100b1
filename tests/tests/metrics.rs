//! Metrics as an operator sees them: a real Prometheus (Debian's `prometheus` package, which
//! scripts/test.sh installs) scrapes a running coordinator and a running worker during a small
//! sweep, and the series are read back through Prometheus' own HTTP API. Both processes log
//! JSON (`--log-format json`), checked on the same run.
//!
//! Without a `prometheus` binary the test says it was skipped, unless REQUIRE_PROMETHEUS is
//! set (scripts/test.sh sets it once the package is there): then it fails.

use integration_tests::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Three trials of 3 epochs, judged by the median rule and checkpointed every epoch, so that
/// every family the issue names has something to count.
const SWEEP: &str = "[defaults]\nmodel = \"dense\"\ntrain_images = 400\ntest_images = 50\n\
                     epochs = 3\nbatch_size = 50\nvalidation_split = 0.1\n\
                     [grid]\nseed = [1, 2, 3]\n\
                     [early_stopping]\nmethod = \"median\"\nmetric = \"val_accuracy\"\n\
                     [checkpoints]\nevery_epochs = 1\n";

fn prometheus() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("prometheus"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("REQUIRE_PROMETHEUS").is_none(),
            "REQUIRE_PROMETHEUS is set but no `prometheus` is on PATH"
        );
        eprintln!("skipped: no `prometheus` on PATH (apt-get install prometheus)");
    }
    found
}

/// Starts Prometheus scraping `targets` (job name, port, with the admin token) every second.
fn start_prometheus(bin: &Path, dir: &Path, targets: &[(&str, u16, bool)]) -> (Proc, u16) {
    let token = dir.join("admin-token");
    std::fs::write(&token, cluster::ADMIN_TOKEN).unwrap();
    let mut config =
        String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n");
    for (job, port, auth) in targets {
        config += &format!("  - job_name: {job}\n");
        if *auth {
            // As deployed: the coordinator's /metrics off loopback needs the admin token.
            config += &format!(
                "    authorization:\n      credentials_file: {}\n",
                token.display()
            );
        }
        config += &format!("    static_configs:\n      - targets: ['127.0.0.1:{port}']\n");
    }
    let file = dir.join("prometheus.yml");
    std::fs::write(&file, config).unwrap();
    let (p, [port]) = start_listening("address already in use", |[port]| {
        Proc::spawn(
            std::process::Command::new(bin)
                .arg(format!("--config.file={}", file.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("tsdb").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}")),
            dir.join("prometheus.log"),
        )
    });
    (p, port)
}

/// The value of the instant query `q`, summed over its series (None: no series yet).
fn query(port: u16, q: &str) -> Option<f64> {
    let mut answer = ureq::get(format!("http://127.0.0.1:{port}/api/v1/query"))
        .query("query", q)
        .call()
        .ok()?;
    let body: serde_json::Value =
        serde_json::from_str(&answer.body_mut().read_to_string().ok()?).ok()?;
    let result = body["data"]["result"].as_array()?;
    if result.is_empty() {
        return None;
    }
    result
        .iter()
        .map(|r| r["value"][1].as_str()?.parse::<f64>().ok())
        .sum()
}

/// Waits until query `q` gives `want` (as Prometheus sees it, after a scrape).
fn wait_for(port: u16, q: &str, want: impl Fn(f64) -> bool, logs: &[&Proc]) -> f64 {
    let mut last = None;
    let ok = wait_until(Duration::from_secs(30), || {
        last = query(port, q);
        last.is_some_and(&want)
    });
    let text: Vec<String> = logs.iter().map(|p| p.log_text()).collect();
    assert!(ok, "{q} = {last:?}\n{}", text.join("\n----\n"));
    last.unwrap_or_default()
}

/// GET `path` on Prometheus, as JSON.
fn get_json(port: u16, path: &str) -> serde_json::Value {
    let text = ureq::get(format!("http://127.0.0.1:{port}{path}"))
        .call()
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .body_mut()
        .read_to_string()
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A worker serving /metrics on a free port (another one if that was taken meanwhile).
fn worker_with_metrics(c: &Cluster) -> (Proc, u16) {
    let (w, [port]) = start_listening("cannot listen", |[port]| {
        let http = format!("127.0.0.1:{port}");
        c.worker_with("w", &["--health-listen", &http, "--log-format", "json"])
    });
    (w, port)
}

/// The status of `GET /metrics` with this Host header and, if given, the admin token.
fn metrics_status(port: u16, host: &str, token: Option<&str>) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Every line that is a JSON object, parsed; panics on one that starts as JSON and is not.
fn json_lines(p: &Proc) -> Vec<serde_json::Value> {
    p.log_text()
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn prometheus_scrapes_the_coordinator_and_a_worker() {
    let Some(bin) = prometheus() else { return };
    let _serial = serial();
    let c = Cluster::start_with("metrics", SWEEP, 100, 6.0, &["--log-format", "json"]);
    let (w, worker_http) = worker_with_metrics(&c);
    let dir = c.dir.path().join("prom");
    std::fs::create_dir_all(&dir).unwrap();
    let (prom, port) = start_prometheus(
        &bin,
        &dir,
        &[
            ("coordinator", c.health_port, true),
            ("worker", worker_http, false),
        ],
    );
    let logs = [&c.server, &w, &prom];

    assert!(
        wait_until(Duration::from_secs(180), || all_finished(&c.db, 3)),
        "{:?}\n{}",
        states(&c.db),
        w.log_text()
    );
    // Both targets are up, and the series count what happened.
    wait_for(port, "up{job=\"coordinator\"}", |v| v == 1.0, &logs);
    wait_for(port, "up{job=\"worker\"}", |v| v == 1.0, &logs);
    let finished = "coordinator_trials{sweep=\"metrics\",state=\"finished\"}";
    wait_for(port, finished, |v| v == 3.0, &logs);
    wait_for(
        port,
        "coordinator_trials{state=\"queued\"}",
        |v| v == 0.0,
        &logs,
    );
    wait_for(
        port,
        "coordinator_leases_granted_total",
        |v| v == 3.0,
        &logs,
    );
    wait_for(
        port,
        "coordinator_results_total{outcome=\"accepted\"}",
        |v| v == 3.0,
        &logs,
    );
    wait_for(
        port,
        "coordinator_lease_duration_seconds_count",
        |v| v >= 3.0,
        &logs,
    );
    wait_for(
        port,
        "coordinator_result_duration_seconds_count",
        |v| v == 3.0,
        &logs,
    );
    wait_for(port, "coordinator_heartbeats_total", |v| v >= 1.0, &logs);
    wait_for(
        port,
        "coordinator_workers{device=\"cpu\"}",
        |v| v == 1.0,
        &logs,
    );
    wait_for(
        port,
        "coordinator_store_commit_duration_seconds_count",
        |v| v >= 3.0,
        &logs,
    );
    wait_for(
        port,
        "coordinator_store_commit_writes_sum",
        |v| v >= 6.0,
        &logs,
    );
    // The median rule judges epochs from the second trial on (it needs others to compare).
    wait_for(
        port,
        "coordinator_early_stopping_decisions_total",
        |v| v >= 1.0,
        &logs,
    );
    wait_for(
        port,
        "coordinator_artifact_bytes_total{kind=\"checkpoint\",direction=\"received\"}",
        |v| v > 0.0,
        &logs,
    );
    let epochs = c
        .report_rows()
        .iter()
        .map(|r| r["epochs"].as_array().map_or(0, Vec::len))
        .sum::<usize>();
    wait_for(port, "worker_epochs_total", |v| v == epochs as f64, &logs);
    wait_for(
        port,
        "worker_epoch_duration_seconds_count",
        |v| v == epochs as f64,
        &logs,
    );
    wait_for(port, "worker_results_total", |v| v == 3.0, &logs);
    wait_for(port, "worker_images_per_second", |v| v > 0.0, &logs);
    wait_for(port, "worker_resident_memory_bytes", |v| v > 1e6, &logs);
    wait_for(port, "worker_trials_running", |v| v == 0.0, &logs);

    // No label carries a trial id (bounded cardinality).
    let ids: Vec<String> = states(&c.db)
        .into_iter()
        .map(|t| t.id.to_string())
        .collect();
    for series in ["coordinator", "worker"] {
        let q = format!("count by (__name__) ({{job=\"{series}\"}})");
        assert!(query(port, &q).is_some(), "{q}");
    }
    let labels = get_json(port, "/api/v1/labels");
    for name in labels["data"].as_array().unwrap() {
        let name = name.as_str().unwrap();
        let values = get_json(port, &format!("/api/v1/label/{name}/values"));
        for v in values["data"].as_array().unwrap() {
            let v = v.as_str().unwrap();
            assert!(
                !ids.iter().any(|id| v.contains(id.as_str())),
                "label {name}={v}"
            );
        }
    }

    // The dashboard's read rule: a request naming another host (a rebound DNS name, or any
    // listener off loopback) needs the admin token.
    let h = c.health_port;
    assert_eq!(metrics_status(h, "localhost", None), 200);
    assert_eq!(metrics_status(h, "metrics.example", None), 401);
    assert_eq!(metrics_status(h, "metrics.example", Some("wrong")), 401);
    assert_eq!(
        metrics_status(h, "metrics.example", Some(cluster::ADMIN_TOKEN)),
        200
    );

    // JSON logs: ids are fields, not text.
    let server = json_lines(&c.server);
    assert!(
        server
            .iter()
            .any(|l| l["message"] == "worker registered" && l["worker"].is_string()),
        "{}",
        c.server.log_text()
    );
    let worker = json_lines(&w);
    assert!(
        worker.iter().any(|l| l["message"] == "result accepted"
            && ids.iter().any(|id| l["trial"] == id.as_str())
            && l["attempt"] == 1),
        "{}",
        w.log_text()
    );
}
