//! Any bytes as a sweep file: an error or a plan, never a panic. A plan's trials must survive
//! the trip through canonical TOML (what crosses the wire to workers) unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use sweep_proto::TrialSpec;

fuzz_target!(|data: &[u8]| {
    let Ok(sweep) = coordinator::plan::parse_bytes(data.to_vec(), Path::new("fuzz.toml")) else {
        return;
    };
    assert!(!sweep.trials.is_empty());
    for t in &sweep.trials {
        let text = t.spec.to_toml();
        let back = TrialSpec::from_toml(&text).expect("canonical TOML parses");
        assert_eq!(back.to_toml(), text, "canonical TOML is stable");
        assert_eq!(coordinator::plan::trial_id(&back), t.id);
    }
});
