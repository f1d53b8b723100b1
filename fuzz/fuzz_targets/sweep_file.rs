//! Any bytes as a sweep file: an error or a plan, never a panic. A plan's trials must survive
//! the trip through canonical TOML (what crosses the wire to workers) unchanged. A search
//! (`search = "tpe"`) plans no trials but a space: its first suggestions must be trials that
//! survive the same trip and map back to their points.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use sweep_proto::TrialSpec;

fuzz_target!(|data: &[u8]| {
    let Ok(sweep) = coordinator::plan::parse_bytes(data.to_vec(), Path::new("fuzz.toml")) else {
        return;
    };
    assert!(sweep.size() > 0);
    let mut trials: Vec<(TrialSpec, sweep_proto::ids::TrialId)> = sweep
        .trials
        .iter()
        .map(|t| (t.spec.clone(), t.id.clone()))
        .collect();
    if let Some(rule) = &sweep.search {
        use coordinator::sched::search::{Next, Searcher};
        let mut s = Searcher::new(rule.clone()).expect("a planned space holds together");
        for _ in 0..3 {
            match s.next(&[]).expect("no observations to refuse") {
                Next::Suggest { id, spec, point } => {
                    assert_eq!(s.point(&spec), Some(point), "a suggestion maps back");
                    s.add_member(id.clone(), &spec);
                    trials.push((spec, id));
                }
                Next::Done | Next::Exhausted(_) | Next::Refused => break,
            }
        }
    }
    for (spec, id) in &trials {
        let text = spec.to_toml();
        let back = TrialSpec::from_toml(&text).expect("canonical TOML parses");
        assert_eq!(back.to_toml(), text, "canonical TOML is stable");
        assert_eq!(&coordinator::plan::trial_id(&back), id);
    }
});
