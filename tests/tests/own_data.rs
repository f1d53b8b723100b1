//! The user's own data and model: an image folder trains exactly as its conversion to the
//! binary layout does, and a TorchScript module exported by examples/own-model/export.py
//! reaches remote workers from the coordinator and trains like a built-in model.

use integration_tests::*;
use std::path::PathBuf;
use std::process::Command;

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// 500 training and 200 test JPEGs of the real CIFAR-10 (../shared/data) as an image folder,
/// and the same images written in the binary layout by PIL (scripts/imagefolder-to-cifar-bin.py,
/// which decodes as the study's converter does): one trial on each sees the same pixels in
/// the same order, so on CPU it ends with the same numbers, and the dataset fingerprint in
/// the results (a hash of every pixel and label) is the same.
#[test]
fn an_image_folder_trains_exactly_as_its_binary_conversion() {
    let shared = std::env::var_os("SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/data"));
    let archive = shared.join("cifar10-jpeg.tar.xz");
    if !archive.is_file() {
        assert!(
            std::env::var("REQUIRE_REAL_DATA").as_deref() != Ok("1"),
            "REQUIRE_REAL_DATA=1 but {} is missing",
            archive.display()
        );
        eprintln!("skipped: no {}", archive.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("folder");
    std::fs::create_dir_all(&folder).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xJf")
            .arg(&archive)
            .arg("-C")
            .arg(&folder)
            .args(["--wildcards", "train/*/00[0-4]?.jpg", "test/*/00[01]?.jpg"]),
    );
    let binary = dir.path().join("binary");
    run_ok(
        Command::new(python())
            .arg(repo().join("scripts/imagefolder-to-cifar-bin.py"))
            .arg(&folder)
            .arg(&binary),
    );
    let trial = dir.path().join("trial.toml");
    std::fs::write(
        &trial,
        "model = \"seed-cnn\"\nepochs = 2\nbatch_size = 50\naugment = { flip = true }\n",
    )
    .unwrap();
    let train = |data: String, json: &str| -> serde_json::Value {
        let out = dir.path().join(json);
        run_ok(
            Command::new(bin("worker"))
                .args([
                    "train", "--quiet", "--device", "cpu", "--data", &data, "--json",
                ])
                .arg(&out)
                .arg("--save-model")
                .arg(out.with_extension("model"))
                .arg(&trial),
        );
        serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
    };
    let from_folder = train(format!("imagefolder:{}", folder.display()), "folder.json");
    let from_binary = train(binary.display().to_string(), "binary.json");
    assert_eq!(from_folder["status"], "completed");
    assert_eq!(
        from_folder["provenance"]["dataset_fingerprint"],
        from_binary["provenance"]["dataset_fingerprint"],
        "the image folder decodes to other pixels than PIL's"
    );
    assert_eq!(
        (
            from_folder["train_images"].as_u64(),
            from_folder["test"]["images"].as_u64()
        ),
        (Some(500), Some(200))
    );
    for key in ["epochs", "test"] {
        let strip = |v: &serde_json::Value| {
            let mut v = v[key].clone();
            if let Some(epochs) = v.as_array_mut() {
                for e in epochs {
                    let e = e.as_object_mut().unwrap();
                    e.remove("seconds");
                    e.remove("images_per_sec");
                }
            }
            v
        };
        assert_eq!(strip(&from_folder), strip(&from_binary), "{key} differ");
    }
    // `worker eval` of the saved model, on the folder, gives back the trial's test accuracy.
    let eval = worker_eval(
        format!("imagefolder:{}", folder.display()),
        &dir.path().join("folder.model"),
    );
    assert_eq!(
        eval["test_accuracy"], from_folder["test"]["accuracy"],
        "{eval}"
    );
    // The later trials on the folder read the decode cache beside it.
    let cache = folder.join(".sweep-cache");
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        1,
        "{}",
        cache.display()
    );
}

/// examples/own-model/export.py writes a TorchScript ResNet; a sweep names it by path, the
/// coordinator stores it, its local workers (separate processes with an empty module cache)
/// fetch it by hash, train it for an epoch and beat chance (10%) clearly. The best trial's
/// trained module is kept: `coordinator export` writes it as model.pt, which PyTorch's
/// `torch.jit.load` reads, and `worker eval` on the exported files gives back the sweep's test
/// accuracy. A module whose output does not fit the classes is refused before training, with
/// the shapes.
#[test]
fn a_torchscript_resnet_reaches_the_workers_and_beats_chance() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    learnable_cifar(&data, 200, 200);
    let module = dir.path().join("model.pt");
    export_small_resnet(&module, 10);
    let hash = coordinator::plan::sha256_hex(&std::fs::read(&module).unwrap())[..32].to_string();
    let sweep = write_sweep(
        dir.path(),
        "own-model",
        "keep_best = 1\n[defaults]\nmodel = \"torchscript:model.pt\"\nepochs = 1\nbatch_size = 32\n\
         [grid]\noptimizer = [\"adam\", \"sgd\"]\nlr = [0.003]\n",
    );
    let cache = dir.path().join("worker-modules");
    let out = dir.path().join("out");
    let run = sweep_command(&sweep, &out, 1)
        .env("SWEEP_MODULE_CACHE", &cache)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        cache.join(format!("{hash}.pt")).is_file(),
        "the worker did not fetch the module into {}",
        cache.display()
    );
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(row["status"], "completed", "{row}");
        assert_eq!(
            row["params"]["model"],
            format!("torchscript:{hash}"),
            "{row}"
        );
        let acc = row["test_accuracy"].as_f64().unwrap();
        eprintln!("{}: test accuracy {acc}", row["params"]["optimizer"]);
        assert!(
            acc > 0.3,
            "{} reached only {acc}",
            row["params"]["optimizer"]
        );
    }

    let exported = dir.path().join("exported");
    export_best("own-model", &out.join("sweep.db"), &exported);
    let check = "import sys, torch\n\
                 m = torch.jit.load(sys.argv[1])\n\
                 print(tuple(m(torch.zeros(2, 3, 32, 32)).shape), m.training)\n";
    let printed = run_ok(
        Command::new(python())
            .args(["-c", check])
            .arg(exported.join("model.pt")),
    );
    assert_eq!(
        printed.trim(),
        "(2, 10) False",
        "torch.jit.load of the kept module"
    );
    let eval = worker_eval(&data, &exported);
    assert_eq!(eval["test_accuracy"], rows[0]["test_accuracy"], "{eval}");

    let bad = dir.path().join("seven.pt");
    export_small_resnet(&bad, 7);
    let trial = dir.path().join("seven.toml");
    std::fs::write(&trial, "model = \"torchscript:seven.pt\"\nepochs = 1\n").unwrap();
    let out = Command::new(bin("worker"))
        .args(["train", "--quiet", "--device", "cpu", "--data"])
        .arg(&data)
        .arg(&trial)
        .env("SWEEP_MODULE_CACHE", &cache)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains("[2, 7]") && stdout.contains("10 classes"),
        "{stdout}"
    );
}
