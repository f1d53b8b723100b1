//! What the load benchmarks share: the coordinator process they run, the stand-in result
//! their simulated workers report, and its CPU time from /proc.

use anyhow::{Context, Result};
use std::process::Child;
use sweep_proto::pb;

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
