//! Any values in stored results (an old or hand-edited database holds anything): the report in
//! every format renders, never panics and never hangs (libFuzzer's -timeout catches a loop).
//! Floats come straight from the input's bits, so NaN, infinities, f64::MAX and subnormals all
//! reach the renderers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use sweep_proto::{EpochMetrics, TestMetrics, TrialResult, TrialStatus};

/// Reads the input as a stream of numbers; zeros once it runs out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u64(&mut self) -> u64 {
        let n = self.0.len().min(8);
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        u64::from_le_bytes(b)
    }
    fn f64(&mut self) -> f64 {
        f64::from_bits(self.u64())
    }
    fn small(&mut self, max: u64) -> u64 {
        self.u64() % (max + 1)
    }
    fn opt(&mut self) -> Option<f64> {
        (self.small(1) == 1).then(|| self.f64())
    }
}

fn result(b: &mut Bytes) -> TrialResult {
    let status = [
        TrialStatus::Completed,
        TrialStatus::Diverged,
        TrialStatus::Failed,
        TrialStatus::Stopped,
    ][b.small(3) as usize];
    let epochs = (0..b.small(12))
        .map(|_| EpochMetrics {
            epoch: b.u64() as u32,
            train_loss: b.f64(),
            train_accuracy: b.f64(),
            val_loss: b.opt(),
            val_accuracy: b.opt(),
            train_binary_accuracy: b.opt(),
            val_binary_accuracy: b.opt(),
            lr: b.f64(),
            seconds: b.f64(),
            images_per_sec: b.f64(),
        })
        .collect();
    let test = (b.small(1) == 1).then(|| {
        let classes = b.small(12) as usize;
        TestMetrics {
            loss: b.f64(),
            accuracy: b.f64(),
            binary_accuracy: b.opt(),
            per_class_accuracy: (0..classes).map(|_| b.f64()).collect(),
            confusion: (0..b.small(12))
                .map(|_| (0..b.small(12)).map(|_| b.u64()).collect())
                .collect(),
            images: b.u64(),
            class_names: Vec::new(),
        }
    });
    TrialResult {
        status,
        reason: (b.small(1) == 1).then(|| "why\n<b>&".to_string()),
        epochs,
        test,
        best_val_accuracy: b.opt(),
        train_images: b.u64(),
        val_images: b.u64(),
        parameters: b.u64(),
        device: "cpu".into(),
        seconds: b.f64(),
        notes: Vec::new(),
        diverged_epoch: None,
        resumed_from_epoch: (b.small(1) == 1).then(|| b.u64() as u32),
        provenance: None,
    }
}

fuzz_target!(|data: &[u8]| {
    let text = "name = \"fuzz\"\n[grid]\nmodel = [\"dense\", \"seed-cnn\"]\nseed = [1, 2]\n";
    let sweep = coordinator::plan::parse(text, Path::new("fuzz.toml")).expect("fixed sweep");
    let mut b = Bytes(data);
    let results = (0..b.small(4)).map(|_| result(&mut b)).collect();
    let report = coordinator::report::Report::from_results(&sweep, results);
    for (name, contents) in coordinator::report::render::files(&report) {
        assert!(!contents.is_empty(), "{name} is empty");
    }
});
