//! The `worker` binary as a user runs it: exit codes, JSON output, error messages, and real
//! training on real CIFAR-10.
//!
//! Real-data tests read the dataset from `$CIFAR10_DATA` (scripts/test.sh prepares it from
//! ../shared/data). Without it they are skipped with a note, unless `REQUIRE_REAL_DATA=1`,
//! which CI sets so that a missing dataset fails instead of silently skipping.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn worker() -> Command {
    Command::new(env!("CARGO_BIN_EXE_worker"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("failed to start the worker binary")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn real_data() -> Option<PathBuf> {
    match std::env::var_os("CIFAR10_DATA").filter(|v| !v.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir)),
        None if std::env::var("REQUIRE_REAL_DATA").as_deref() == Ok("1") => {
            panic!("REQUIRE_REAL_DATA=1 but CIFAR10_DATA is not set")
        }
        None => {
            eprintln!("skipped: set CIFAR10_DATA to a CIFAR-10 directory to run this test");
            None
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn data_check_on_real_data() {
    let Some(data) = real_data() else { return };
    let out = run(worker().args(["data", "check", "--data"]).arg(&data));
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["format"], "binary");
    assert_eq!(
        (v["train"].as_u64(), v["test"].as_u64()),
        (Some(50_000), Some(10_000))
    );
    assert_eq!(v["classes"][3], "cat");
    assert!(v["train_class_counts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c == 5000));
    assert!(v["test_class_counts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c == 1000));
    // The well-known CIFAR-10 training means (JPEG re-encoding moves them by < 0.5).
    let means: Vec<f64> = v["pixel_mean_rgb"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_f64().unwrap())
        .collect();
    for (got, want) in means.iter().zip([125.3, 123.0, 113.9]) {
        assert!((got - want).abs() < 0.5, "pixel means {means:?}");
    }
}

/// One short real training run: the dense model on 10,000 real images for 2 epochs must beat
/// chance (10%) by a wide margin, and the JSON result must carry every metric.
#[test]
fn short_real_training_beats_chance() {
    let Some(data) = real_data() else { return };
    let dir = tempfile::tempdir().unwrap();
    let trial = write(
        dir.path(),
        "trial.toml",
        "model = \"dense\"\ntrain_batches = 1\nvalidation_split = 0.1\nepochs = 2\nlr = 0.001\n\
         normalization = \"standard\"\ntest_images = 2000\nseed = 3\n",
    );
    let json = dir.path().join("result.json");
    let out = run(worker()
        .arg("train")
        .arg(&trial)
        .arg("--data")
        .arg(&data)
        .args(["--device", "cpu", "--quiet", "--json"])
        .arg(&json));
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["status"], "completed");
    assert_eq!(
        (v["train_images"].as_u64(), v["val_images"].as_u64()),
        (Some(9000), Some(1000))
    );
    let acc = v["test"]["accuracy"].as_f64().unwrap();
    assert!(
        acc > 0.25,
        "test accuracy {acc} is not clearly above chance"
    );
    assert_eq!(v["test"]["images"], 2000);
    assert_eq!(v["epochs"].as_array().unwrap().len(), 2);
    assert!(v["epochs"][1]["val_accuracy"].as_f64().unwrap() > 0.25);
    assert!(stderr(&out).contains("test accuracy"), "{}", stderr(&out));
}

/// The study's binary cross-entropy on real data: Keras' "binary accuracy" is far above the
/// true top-1 accuracy (it is at least 80% even for a model that learnt nothing).
#[test]
fn binary_cross_entropy_trap_on_real_data() {
    let Some(data) = real_data() else { return };
    let dir = tempfile::tempdir().unwrap();
    let trial = write(
        dir.path(),
        "bce.toml",
        "model = \"dense\"\nloss = \"binary-cross-entropy\"\ntrain_batches = 1\ntrain_images = 4000\n\
         epochs = 1\ntest_images = 1000\nnormalization = \"scale\"\n",
    );
    let out = run(worker()
        .arg("train")
        .arg(&trial)
        .arg("--data")
        .arg(&data)
        .args(["--device", "cpu", "--quiet"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (acc, bin) = (
        v["test"]["accuracy"].as_f64().unwrap(),
        v["test"]["binary_accuracy"].as_f64().unwrap(),
    );
    assert!(
        bin >= 0.8 && bin > acc + 0.3,
        "binary accuracy {bin} vs top-1 {acc}"
    );
    assert!(stderr(&out).contains("Keras binary accuracy"));
}

#[test]
fn bad_trial_file_names_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, needles) in [
        ("modle = \"dense\"\n", vec!["bad.toml", "modle", "line 1"]),
        ("epochs = 3\nlr = -1.0\n", vec!["bad.toml", "`lr`", "-1"]),
        ("model = [1, 2]\n", vec!["bad.toml", "model"]),
    ] {
        let trial = write(dir.path(), "bad.toml", text);
        let out = run(worker()
            .arg("train")
            .arg(&trial)
            .args(["--data", "/nonexistent"]));
        assert_eq!(out.status.code(), Some(1), "{text}");
        let err = stderr(&out);
        for n in needles {
            assert!(
                err.contains(n),
                "error for {text:?} should mention {n:?}: {err}"
            );
        }
        assert!(!err.contains("panicked"), "{err}");
    }
    let out = run(worker().args(["train", "/nonexistent/trial.toml"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/nonexistent/trial.toml"));
}

#[test]
fn missing_dataset_says_what_to_put_where() {
    let dir = tempfile::tempdir().unwrap();
    let trial = write(dir.path(), "t.toml", "epochs = 1\n");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    // stdin is not a terminal here, so no download is offered.
    let out = run(worker().arg("train").arg(&trial).arg("--data").arg(&empty));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cifar-10-batches-bin/data_batch_1.bin") && err.contains("worker data fetch"),
        "{err}"
    );

    // No --data, no $CIFAR10_DATA, no ./data: the message lists what was tried.
    let out = run(worker()
        .args(["data", "check"])
        .current_dir(&empty)
        .env_remove("CIFAR10_DATA"));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("CIFAR10_DATA"), "{}", stderr(&out));
}

#[test]
fn corrupt_dataset_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&bin).unwrap();
    for name in [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ] {
        std::fs::write(bin.join(name), vec![1u8; 3073 * 2]).unwrap();
    }
    std::fs::write(bin.join("data_batch_4.bin"), vec![1u8; 3073 + 17]).unwrap();
    let out = run(worker().args(["data", "check", "--data"]).arg(dir.path()));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("data_batch_4.bin") && err.contains("not a positive multiple of 3073"),
        "{err}"
    );
}

#[test]
fn cuda_trial_on_a_cpu_worker_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let trial = write(dir.path(), "t.toml", "device = \"cuda\"\n");
    let out =
        run(worker()
            .arg("train")
            .arg(&trial)
            .args(["--device", "cpu", "--data", "/nonexistent"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("device = \"cuda\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bench_prints_throughput_json() {
    let out = run(worker().args([
        "bench",
        "--model",
        "dense",
        "--images",
        "512",
        "--batch-size",
        "64",
        "--device",
        "cpu",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["model"], "dense");
    assert!(v["images_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(v["epoch_images_per_sec"].as_array().unwrap().len(), 2);
}

/// CIFAR-100 in both official layouts (synthetic files written as the archives hold them):
/// `worker data check` finds it, counts 100 fine or 20 coarse classes, and a trial with
/// `dataset = "cifar100-coarse"` trains on it with a 20-way output and its class names.
#[test]
fn cifar100_is_checked_and_trained_in_both_layouts() {
    use cifar10::testdata::{synthetic100, write_cifar100_binary, write_cifar100_python};
    let data = synthetic100(200, 40);
    for (layout, write_files) in [
        ("cifar100-binary", write_cifar100_binary as fn(&Path, &_)),
        ("cifar100-python", write_cifar100_python),
    ] {
        let dir = tempfile::tempdir().unwrap();
        write_files(dir.path(), &data);
        for (coarse, classes) in [(false, 100), (true, 20)] {
            let mut cmd = worker();
            cmd.args(["data", "check", "--data"]).arg(dir.path());
            if coarse {
                cmd.arg("--coarse");
            }
            let out = run(&mut cmd);
            assert!(out.status.success(), "{}", stderr(&out));
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["format"], layout);
            assert_eq!(v["classes"].as_array().unwrap().len(), classes);
            assert_eq!(v["train"], 200);
        }
        let trial = write(
            dir.path(),
            "t.toml",
            "dataset = \"cifar100-coarse\"\nmodel = \"dense\"\nepochs = 1\nbatch_size = 50\n",
        );
        let out = run(worker()
            .args(["train", "--quiet", "--device", "cpu", "--data"])
            .arg(dir.path())
            .arg(&trial));
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            v["test"]["per_class_accuracy"].as_array().unwrap().len(),
            20
        );
        assert_eq!(v["test"]["class_names"][19], "coarse_19");
        assert_eq!(v["test"]["images"], 40);
    }
    // A CIFAR-100 trial where only CIFAR-10 is: the error says which files to put where.
    let empty = tempfile::tempdir().unwrap();
    let trial = write(empty.path(), "t.toml", "dataset = \"cifar100\"\n");
    let out = run(worker()
        .args(["train", "--data"])
        .arg(empty.path())
        .arg(&trial));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cifar-100-binary/train.bin"),
        "{}",
        stderr(&out)
    );
}
