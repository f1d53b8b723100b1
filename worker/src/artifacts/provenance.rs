//! Where and how a result was produced: the worker and libtorch versions, the device's model,
//! threads, start and end time, and a fingerprint of the data (sweep_proto::Provenance).

use crate::data::Dataset;
use std::time::{SystemTime, UNIX_EPOCH};
use sweep_proto::{Provenance, TRAINER_SEMANTICS};
use tch::Device;

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The version of the libtorch this process loaded (the wheel's `version.py` beside the
/// library that /proc/self/maps shows), else the one the binary was built against.
pub fn libtorch_version() -> String {
    let from_maps = || -> Option<String> {
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        let lib = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.ends_with("/libtorch_cpu.so"))?;
        let torch = std::path::Path::new(lib).parent()?.parent()?;
        let text = std::fs::read_to_string(torch.join("version.py")).ok()?;
        let line = text.lines().find(|l| l.starts_with("__version__"))?;
        Some(line.split(['\'', '"']).nth(1)?.to_string())
    };
    from_maps().unwrap_or_else(|| "unknown".into())
}

/// The CPU model (/proc/cpuinfo) or the GPU's name (nvidia-smi).
pub fn device_model(device: Device) -> String {
    match device {
        Device::Cuda(i) => std::process::Command::new("nvidia-smi")
            .args([
                "--query-gpu=name",
                "--format=csv,noheader",
                "-i",
                &i.to_string(),
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("cuda:{i}")),
        _ => std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, m)| m.trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string()),
    }
}

/// The provenance of a trial that started at `started` and ends now.
pub fn record(started: SystemTime, data: Option<&Dataset>, device: Device) -> Provenance {
    Provenance {
        semantics: TRAINER_SEMANTICS,
        worker_version: env!("CARGO_PKG_VERSION").to_string(),
        libtorch_version: libtorch_version(),
        device_name: device_model(device),
        threads: tch::get_num_threads().max(0) as u32,
        started_unix_ms: unix_ms(started),
        finished_unix_ms: unix_ms(SystemTime::now()),
        dataset_fingerprint: data.map(Dataset::fingerprint).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_versions_device_and_data() {
        let dir = tempfile::tempdir().unwrap();
        crate::data::testdata::write_small_binary(dir.path(), 8, 4);
        let data = Dataset::load(dir.path(), 1).unwrap();
        let started = SystemTime::now();
        let p = record(started, Some(&data), Device::Cpu);
        assert_eq!(p.semantics, TRAINER_SEMANTICS);
        // The test binary links the wheel's libtorch (scripts/setup-libtorch.sh).
        assert!(p.libtorch_version.starts_with("2."), "{p:?}");
        assert!(!p.device_name.is_empty() && p.threads >= 1, "{p:?}");
        assert!(p.started_unix_ms <= p.finished_unix_ms);
        assert_eq!(p.dataset_fingerprint.len(), 64);
        // Same data, same fingerprint; one changed pixel, another.
        assert_eq!(p.dataset_fingerprint, data.fingerprint());
        let mut other = data.clone();
        other.train.images[0] ^= 1;
        assert_ne!(other.fingerprint(), data.fingerprint());
    }
}
