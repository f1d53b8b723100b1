//! Any bytes as a Python-layout batch file: an error or a checked batch, never a panic,
//! never memory out of proportion to the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("data_batch_1");
    let _ = cifar10::pickle::load(data);
    if let Ok(batch) = cifar10::python::parse_batch(data, path) {
        let _ = batch.check(path, 10);
    }
});
