//! Tools for making failures real: a TCP proxy whose connections can be cut, signals
//! (SIGSTOP for a hung worker), resource limits on a running process (a full disk, too little
//! memory), and the end-of-test check that every result was counted exactly once.

use crate::cluster::Cluster;
use crate::Proc;
use coordinator::sched::core::TrialState;
use coordinator::store::Store;
use std::io::Read;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A loopback TCP proxy to `127.0.0.1:upstream`. `cut()` closes every open connection and
/// turns new ones away (accepted and closed at once) until `restore()`.
pub struct Proxy {
    pub port: u16,
    shared: Arc<ProxyShared>,
    accept: Option<JoinHandle<()>>,
}

struct ProxyShared {
    open: AtomicBool,
    stop: AtomicBool,
    conns: Mutex<Vec<TcpStream>>,
}

impl Proxy {
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let shared = Arc::new(ProxyShared {
            open: AtomicBool::new(true),
            stop: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let accept = std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                if !s.open.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let pairs = [
                    (client.try_clone(), up.try_clone()),
                    (up.try_clone(), client.try_clone()),
                ];
                s.conns.lock().unwrap().extend([client, up]);
                for pair in pairs {
                    if let (Ok(mut from), Ok(mut to)) = pair {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(Shutdown::Both);
                            let _ = from.shutdown(Shutdown::Both);
                        });
                    }
                }
            }
        });
        Proxy {
            port,
            shared,
            accept: Some(accept),
        }
    }

    pub fn cut(&self) {
        self.shared.open.store(false, Ordering::SeqCst);
        for c in self.shared.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.shared.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.cut();
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Sends `sig` (e.g. `libc::SIGSTOP`) to the process.
pub fn signal(p: &Proc, sig: i32) {
    let rc = unsafe { libc::kill(p.child.id() as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({}, {sig}) failed", p.child.id());
}

/// Sets a resource limit (`libc::RLIMIT_FSIZE`, `libc::RLIMIT_AS`) of a running process;
/// `None` lifts it.
pub fn set_limit(p: &Proc, resource: libc::__rlimit_resource_t, bytes: Option<u64>) {
    let value = bytes.unwrap_or(libc::RLIM_INFINITY);
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: libc::RLIM_INFINITY,
    };
    let rc = unsafe {
        libc::prlimit(
            p.child.id() as libc::pid_t,
            resource,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit({}) failed", p.child.id());
}

/// A process' virtual memory size in bytes (VmSize), from /proc.
pub fn virtual_memory(p: &Proc) -> u64 {
    let mut text = String::new();
    std::fs::File::open(format!("/proc/{}/status", p.child.id()))
        .and_then(|mut f| f.read_to_string(&mut text))
        .expect("/proc/PID/status");
    text.lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmSize")
}

/// A result a worker says it sent, from its log: (worker id, trial, attempt, result JSON).
#[derive(Debug, Clone)]
pub struct Sent {
    pub worker: String,
    pub trial: String,
    pub attempt: u32,
    pub accepted: bool,
    pub result: serde_json::Value,
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..].split_whitespace().next()
}

/// Every result report in the workers' logs, accepted or not.
pub fn sent_results(workers: &[&Proc]) -> Vec<Sent> {
    let mut out = Vec::new();
    for w in workers {
        for line in w.log_text().lines() {
            let accepted = line.contains("result accepted");
            if !accepted && !line.contains("result not accepted") {
                continue;
            }
            let json = &line[line.find(" result=").expect("result= field") + 8..];
            let result = serde_json::Deserializer::from_str(json)
                .into_iter::<serde_json::Value>()
                .next()
                .expect("result JSON")
                .expect("result JSON parses");
            out.push(Sent {
                worker: field(line, "worker").expect("worker=").to_string(),
                trial: field(line, "trial").expect("trial=").to_string(),
                attempt: field(line, "attempt")
                    .and_then(|a| a.parse().ok())
                    .expect("attempt="),
                accepted,
                result,
            });
        }
    }
    out
}

/// The end-of-test check: all `n` trials ended (finished, or failed for a reason); each finished
/// one has exactly one accepted report in the workers' logs, and the database and the report
/// hold exactly what that worker sent, attributed to that worker and attempt.
pub fn assert_every_result_counted_once(c: &Cluster, n: usize, workers: &[&Proc]) -> Vec<Sent> {
    let trials = Store::open(&c.db).unwrap().load_trials().unwrap();
    // A result is on disk before its worker hears it was accepted and logs so: give the last
    // acknowledgements a moment to reach the logs.
    let finished: Vec<&str> = trials
        .iter()
        .filter(|t| matches!(t.state, TrialState::Finished { .. }))
        .map(|t| t.id.as_str())
        .collect();
    crate::wait_until(std::time::Duration::from_secs(15), || {
        let sent = sent_results(workers);
        finished
            .iter()
            .all(|id| sent.iter().any(|s| s.accepted && s.trial == *id))
    });
    let sent = sent_results(workers);
    assert_eq!(trials.len(), n, "trials in the database");
    let rows = c.report_rows();
    assert_eq!(rows.len(), n, "rows in the report");
    for t in &trials {
        let accepted: Vec<&Sent> = sent
            .iter()
            .filter(|s| s.accepted && s.trial == t.id)
            .collect();
        let row = rows.iter().find(|r| r["id"] == t.id.as_str()).unwrap();
        match &t.state {
            TrialState::Finished {
                attempt,
                worker,
                result,
            } => {
                assert_eq!(accepted.len(), 1, "trial {}: accepted {accepted:?}", t.id);
                let s = accepted[0];
                assert_eq!(
                    (s.worker.as_str(), s.attempt),
                    (worker.as_str(), *attempt),
                    "trial {}",
                    t.id
                );
                assert_eq!(
                    serde_json::to_value(result).unwrap(),
                    s.result,
                    "trial {}: stored result differs from what the worker sent",
                    t.id
                );
                assert_eq!(row["status"], s.result["status"], "{row}");
                assert_eq!(row["reason"], s.result["reason"], "{row}");
                assert_eq!(row["epochs"], s.result["epochs"], "{row}");
                assert_eq!(row["test_accuracy"], s.result["test"]["accuracy"], "{row}");
                assert_eq!(row["attempt"], *attempt, "{row}");
                assert_eq!(row["worker"], worker.as_str(), "{row}");
            }
            TrialState::Failed { reason, .. } => {
                assert!(accepted.is_empty(), "trial {}: {accepted:?}", t.id);
                assert!(!reason.is_empty());
                assert_eq!(row["status"], "failed");
            }
            other => panic!("trial {} did not end: {other:?}", t.id),
        }
    }
    sent
}
