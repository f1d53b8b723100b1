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
    assert!(text.contains("| # | trial | model | color |"), "{text}");
    assert!(text.trim_end().ends_with("4 trials"), "{text}");
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
