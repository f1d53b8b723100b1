//! `coordinator plan` as a user runs it: the example sweeps, bad files, the trial limit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn coordinator(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .args(args)
        .output()
        .expect("failed to start coordinator")
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

#[test]
fn plans_the_quick_example() {
    let out = coordinator(&["plan", repo("examples/quick.toml").to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("| # | trial | label | model | color | loss |"),
        "{text}"
    );
    assert!(
        text.contains("| dense, binary cross-entropy | dense | color | binary-cross-entropy |"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("5 trials"), "{text}");
}

#[test]
fn bad_sweep_file_is_rejected_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.toml");
    std::fs::write(
        &f,
        "name = \"x\"\n\n[grid]\nmodel = [\"dense\"]\nbatch_sise = [32]\n",
    )
    .unwrap();
    let out = coordinator(&["plan", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:5:1") && err.contains("batch_sise"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
}

#[test]
fn huge_grids_need_force() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("huge.toml");
    let seeds: Vec<String> = (0..1001).map(|s| s.to_string()).collect();
    std::fs::write(
        &f,
        format!("name = \"h\"\n[grid]\nseed = [{}]\n", seeds.join(", ")),
    )
    .unwrap();
    let out = coordinator(&["plan", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    let out = coordinator(&["plan", "--force", f.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("1001 trials"));
}

/// examples/study.toml plans every row of the published study with its reported accuracy, in
/// the study's own preprocessing, plus the corrected copies and today's ResNet-56 recipe.
#[test]
fn study_file_plans_every_row_with_its_reported_value() {
    use sweep_proto::{Layout, Model, Normalization};
    let sweep = coordinator::plan::load(&repo("examples/study.toml")).unwrap();
    let row = |label: &str| {
        sweep
            .trials
            .iter()
            .find(|t| t.label.as_deref() == Some(label))
            .unwrap_or_else(|| panic!("no row {label:?}"))
    };
    let table = [
        ("r1 dense", 0.0926),
        ("r1 seed-cnn color", 0.4663),
        ("r1 seed-cnn grayscale", 0.4712),
        ("r2 seed-cnn color", 0.4946),
        ("r2 resnet56 color", 0.6289),
        ("r2 seed-cnn grayscale", 0.5811),
        ("r2 resnet56 grayscale", 0.6074),
        ("r3 resnet56 color", 0.7081),
        ("r3 seed-cnn color (the post's label)", 0.7081),
        ("r3 resnet56 grayscale", 0.6432),
        ("r4 resnet56 final", 0.7369),
    ];
    for (label, reported) in table {
        let t = row(label);
        assert_eq!(t.reported, Some(reported), "{label}");
        assert_eq!(
            (t.spec.layout, t.spec.normalization),
            (Layout::SeedReshape, Normalization::None),
            "{label}"
        );
        let fixed = row(&format!("{label}, fixed preprocessing")
            .replace(" (the post's label), fixed", ", fixed"));
        assert_eq!(
            (fixed.spec.layout, fixed.spec.normalization),
            (Layout::Standard, Normalization::Standard)
        );
        assert_eq!(fixed.spec.model, t.spec.model, "{label}");
    }
    let r4 = row("r4 resnet56 final");
    assert_eq!(
        (r4.spec.batch_size, r4.spec.epochs, r4.spec.lr),
        (32, 80, 0.005)
    );
    assert!(
        r4.spec.augment.flip && r4.spec.augment.rotation == 10.0 && r4.spec.augment.shift == 0.1
    );
    let bce = row("extra: r4 with binary cross-entropy, 1 epoch");
    assert_eq!(bce.spec.loss, sweep_proto::Loss::BinaryCrossEntropy);
    let modern = row("resnet56, SGD + cosine + pad-crop/flip, 160 epochs");
    assert_eq!(
        (modern.spec.model, modern.spec.epochs, modern.reported),
        (Model::ResNet(56), 160, Some(0.9303))
    );
    assert_eq!(sweep.trials.len(), 24);
}

#[test]
fn damaged_or_orphaned_databases_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sweep.db");
    let arg = db.to_str().unwrap();
    // The database was deleted but its write-ahead log is still there: starting empty would
    // overwrite the log, the only copy of what it holds.
    std::fs::write(dir.path().join("sweep.db-wal"), b"journal").unwrap();
    let out = coordinator(&["status", "--db", arg]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("sweep.db-wal") && err.contains("refusing"),
        "{err}"
    );
    assert!(!db.exists(), "no fresh database was created");
    std::fs::remove_file(dir.path().join("sweep.db-wal")).unwrap();
    // Not a database at all.
    std::fs::write(&db, vec![0x42u8; 8192]).unwrap();
    let out = coordinator(&["status", "--db", arg]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("sweep.db") && err.contains("damaged"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// examples/study-bce-row.toml, the trial file docs/STUDY.md measured, is exactly the study
/// file's binary-cross-entropy row, and round 3 starts from the lr its log implies.
#[test]
fn the_bce_trial_file_is_the_study_row_and_round_3_starts_at_lr_0_01() {
    let sweep = coordinator::plan::load(&repo("examples/study.toml")).unwrap();
    let row = |label: &str| {
        &sweep
            .trials
            .iter()
            .find(|t| t.label.as_deref() == Some(label))
            .unwrap_or_else(|| panic!("no row {label:?}"))
            .spec
    };
    let text = std::fs::read_to_string(repo("examples/study-bce-row.toml")).unwrap();
    let file = sweep_proto::TrialSpec::from_toml(&text).unwrap();
    assert_eq!(&file, row("extra: r4 with binary cross-entropy, 1 epoch"));
    for label in [
        "r3 resnet56 color",
        "r3 seed-cnn color (the post's label)",
        "r3 resnet56 grayscale",
    ] {
        let spec = row(label);
        assert_eq!(spec.lr, 0.01, "{label}");
        // The logged final lr: 0.01 * exp(0.1 * (10 - 99)).
        assert!((0.01 * (0.1f64 * (10.0 - 99.0)).exp() - 1.3639e-6).abs() < 1e-10);
    }
}

/// examples/study-r1-seeds.toml and study-r1-fixed-seeds.toml repeat exactly the study file's
/// round-1 rows (seed 1 is the same trial) with further seeds.
#[test]
fn the_seed_sweeps_repeat_the_study_rows() {
    let study = coordinator::plan::load(&repo("examples/study.toml")).unwrap();
    for (file, repeats, suffix) in [
        ("examples/study-r1-seeds.toml", 5, ""),
        (
            "examples/study-r1-fixed-seeds.toml",
            3,
            ", fixed preprocessing",
        ),
    ] {
        let seeds = coordinator::plan::load(&repo(file)).unwrap();
        assert_eq!(seeds.trials.len(), 3 * repeats, "{file}");
        for model in ["r1 dense", "r1 seed-cnn color", "r1 seed-cnn grayscale"] {
            let label = format!("{model}{suffix}");
            let row = study
                .trials
                .iter()
                .find(|t| t.label.as_deref() == Some(label.as_str()))
                .unwrap_or_else(|| panic!("no study row {label:?}"));
            assert_eq!(row.spec.semantics, sweep_proto::Semantics::Keras);
            let mine: Vec<_> = seeds
                .trials
                .iter()
                .filter(|t| t.label.as_deref() == Some(label.as_str()))
                .collect();
            assert_eq!(mine.len(), repeats, "{file}: {label}");
            assert_eq!(mine[0].id, row.id, "{file}: {label}");
            for (i, t) in mine.iter().enumerate() {
                let same_but_seed = sweep_proto::TrialSpec {
                    seed: t.spec.seed,
                    ..row.spec.clone()
                };
                assert_eq!((t.spec.seed, &t.spec), (i as u64 + 1, &same_but_seed));
            }
        }
    }
}

/// Every sweep and trial file the repository ships parses and plans, and so does every TOML
/// snippet in the docs: a documented first run must not fail at its first command (the k8s
/// example once asked for `color = "rgb"`).
#[test]
fn every_shipped_sweep_and_trial_file_plans() {
    let mut files = Vec::new();
    for dir in ["examples", "deploy", "bench/recipes"] {
        let mut stack = vec![repo(dir)];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "toml") {
                    files.push(path);
                }
            }
        }
    }
    assert!(files.len() >= 10, "{files:?}");
    let mut checked = 0;
    let mut check = |text: &str, origin: &str| {
        let value: toml::Value = toml::from_str(text).unwrap_or_else(|e| panic!("{origin}: {e}"));
        if value.get("name").is_some() {
            // Files a sweep names that its user makes first (examples/own-model: an exported
            // module and an image folder) are stood in for, beside a copy of the sweep.
            let scratch = tempfile::tempdir().unwrap();
            let own_inputs = value
                .get("data")
                .and_then(|d| d.as_str())
                .and_then(|d| d.strip_prefix("imagefolder:"))
                .map(|d| {
                    cifar10::testdata::write_image_folder(
                        &scratch.path().join(d),
                        &["a", "b"],
                        1,
                        1,
                        8,
                    )
                })
                .is_some();
            let modules = coordinator::plan::unresolved_modules(text);
            for m in &modules {
                std::fs::write(scratch.path().join(&m["torchscript:".len()..]), b"stand-in")
                    .unwrap();
            }
            let place = if own_inputs || !modules.is_empty() {
                scratch.path().join("sweep.toml").display().to_string()
            } else {
                origin.to_string()
            };
            let sweep = coordinator::plan::parse(text, std::path::Path::new(&place))
                .unwrap_or_else(|e| panic!("{origin}: {e}"));
            assert!(sweep.size() > 0, "{origin} plans no trial");
        } else {
            sweep_proto::TrialSpec::from_toml(text).unwrap_or_else(|e| panic!("{origin}: {e}"));
        }
        checked += 1;
    };
    for f in &files {
        check(
            &std::fs::read_to_string(f).unwrap(),
            &f.display().to_string(),
        );
    }
    for doc in [
        "README.md",
        "docs/SWEEP.md",
        "docs/TRIAL.md",
        "docs/DEPLOY.md",
        "docs/STUDY.md",
    ] {
        let text = std::fs::read_to_string(repo(doc)).unwrap();
        for (i, block) in text.split("```toml\n").skip(1).enumerate() {
            let snippet = block.split("```").next().unwrap();
            check(snippet, &format!("{doc} toml snippet {}", i + 1));
        }
    }
    assert!(checked > files.len(), "no doc snippet found");
}
