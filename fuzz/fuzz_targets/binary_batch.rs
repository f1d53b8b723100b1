//! Any bytes as a binary-layout batch file: an error or a batch whose sizes add up.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("data_batch_1.bin");
    if let Ok(batch) = cifar10::binary::parse_batch(data, path) {
        assert_eq!(batch.images.len(), batch.labels.len() * cifar10::IMAGE_BYTES);
        let _ = batch.check(path, 10);
    }
});
