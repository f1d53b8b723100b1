use super::*;
use sweep_proto::{ColorMode, Model};

fn plan(text: &str) -> Result<Sweep, SweepError> {
    parse(text, Path::new("grid.toml"))
}

/// `text` is refused with `needle` in the message, at `position` (line, column) if given,
/// naming the file.
fn assert_refused(text: &str, needle: &str, position: Option<(usize, usize)>) {
    let e = plan(text).expect_err(text);
    assert!(
        e.to_string().contains(needle),
        "for {text:?}: expected {needle:?} in {e}"
    );
    if let Some(p) = position {
        assert_eq!(e.position, Some(p), "position for {text:?}: {e}");
    }
    assert!(e.to_string().starts_with("grid.toml"), "{e}");
}

#[test]
fn grid_expands_in_file_order_with_defaults() {
    let s = plan(
        r#"
name = "t"
[defaults]
epochs = 3
[grid]
model = ["dense", "seed-cnn"]
color = ["color", "grayscale"]
"#,
    )
    .unwrap();
    assert_eq!(s.axes, vec!["model", "color"]);
    assert_eq!(s.trials.len(), 4);
    assert!(s.trials.iter().all(|t| t.spec.epochs == 3));
    let first: Vec<(Model, ColorMode)> = s
        .trials
        .iter()
        .map(|t| (t.spec.model, t.spec.color))
        .collect();
    assert_eq!(first[0], (Model::Dense, ColorMode::Color));
    assert_eq!(first[1], (Model::Dense, ColorMode::Grayscale));
    assert_eq!(first[3], (Model::SeedCnn, ColorMode::Grayscale));
    assert_eq!(s.rank_by, Metric::TestAccuracy);
    assert_eq!(s.direction, Direction::Max);
}

#[test]
fn ids_are_stable_and_follow_the_config() {
    let text = "name = \"t\"\n[grid]\nlr = [0.1, 0.01]\n";
    let a = plan(text).unwrap();
    let b = plan(text).unwrap();
    assert_eq!(a.trials[0].id, b.trials[0].id);
    assert_ne!(a.trials[0].id, a.trials[1].id);
    assert_eq!(a.trials[0].id.len(), 16);
    // An edited grid keeps the ids of the unchanged trials.
    let c = plan("name = \"other\"\n[grid]\nlr = [0.1, 0.001]\n").unwrap();
    assert_eq!(c.trials[0].id, a.trials[0].id);
    assert_ne!(c.trials[1].id, a.trials[1].id);
}

#[test]
fn include_exclude_and_repeats() {
    let s = plan(
        r#"
name = "t"
repeats = 2
[grid]
model = ["dense", "seed-cnn"]
color = ["color", "grayscale"]
[[exclude]]
model = "dense"
color = "grayscale"
[[include]]
label = "the study's resnet"
reported = 0.6289
model = "resnet56"
epochs = 1
"#,
    )
    .unwrap();
    // (4 - 1 excluded + 1 included) x 2 seeds
    assert_eq!(s.trials.len(), 8);
    assert!(!s
        .trials
        .iter()
        .any(|t| t.spec.model == Model::Dense && t.spec.color == ColorMode::Grayscale));
    let inc: Vec<_> = s
        .trials
        .iter()
        .filter(|t| t.spec.model == Model::ResNet(56))
        .collect();
    assert_eq!(inc.len(), 2);
    assert_eq!(inc[0].label.as_deref(), Some("the study's resnet"));
    assert_eq!(inc[0].reported, Some(0.6289));
    assert_eq!((inc[0].spec.seed, inc[1].spec.seed), (0, 1));
    assert_eq!(s.axes, vec!["model", "color", "epochs", "seed"]);
}

#[test]
fn random_search_samples_lists_and_ranges_reproducibly() {
    let text = r#"
name = "r"
search = "random"
samples = 20
search_seed = 7
[grid]
model = ["dense", "seed-cnn"]
lr = { min = 1e-4, max = 1e-1, log = true }
epochs = { min = 1, max = 4 }
"#;
    let a = plan(text).unwrap();
    let b = plan(text).unwrap();
    assert_eq!(a, b);
    assert!(a.trials.len() <= 20 && a.trials.len() >= 15);
    for t in &a.trials {
        assert!((1e-4..=1e-1).contains(&t.spec.lr), "{}", t.spec.lr);
        assert!((1..=4).contains(&t.spec.epochs));
    }
    let low = a.trials.iter().filter(|t| t.spec.lr < 1e-2).count();
    assert!(
        low >= 5,
        "log-uniform should put most samples below 1e-2, got {low}"
    );
}

#[test]
fn data_path_is_relative_to_the_sweep_file() {
    let s = parse(
        "name = \"t\"\ndata = \"../data\"\n",
        Path::new("examples/grid.toml"),
    )
    .unwrap();
    assert_eq!(s.data, Some(PathBuf::from("examples/../data")));
    assert_eq!(s.trials.len(), 1, "no grid: one trial of the defaults");
}

/// Malformed sweep files: the message and the position each must name.
#[test]
fn bad_sweep_files_name_line_column_and_key() {
    type Case<'a> = (&'a str, &'a str, Option<(usize, usize)>);
    let cases: &[Case] = &[
        ("name = \"t\"\n[grid]\nmodle = [\"dense\"]\n", "`grid.modle`: unknown field `modle`", Some((3, 1))),
        ("name = \"t\"\n[grid]\nmodel = [\"resnet18\"]\n", "unknown model `resnet18`", Some((3, 1))),
        ("name = \"t\"\n[grid]\nmodel = []\n", "`grid.model` is an empty list", Some((3, 9))),
        ("name = \"t\"\n[grid]\nmodel = \"dense\"\n", "must be a list", Some((3, 9))),
        ("name = \"t\"\n[grid]\nlr = { min = 0.1, max = 1.0 }\n", "ranges need search = \"random\" or \"tpe\"", Some((3, 6))),
        ("name = \"t\"\n[defaults]\nepochs = \"ten\"\n", "`defaults.epochs`", Some((3, 1))),
        ("name = \"t\"\n[defaults]\nepochs = 5\n[grid]\nlr = [0.1, -0.5]\n", "invalid value for `lr`: -0.5", Some((5, 1))),
        ("name = \"t\"\n[defaults]\nschedule = \"step\"\nepochs = 4\n[grid]\nstep_epochs = [[2], [9]]\n", "`step_epochs`: 9", Some((6, 1))),
        ("name = \"t\"\nrepeat = 3\n", "unknown field `repeat`", Some((2, 1))),
        ("nme = \"t\"\n", "unknown field `nme`", Some((1, 1))),
        ("[grid]\nmodel = [\"dense\"]\n", "missing field `name`", None),
        ("name = \"t\"\nsearch = \"random\"\n", "needs `samples`", None),
        ("name = \"t\"\n[grid]\nmodel = [\"dense\"]\n[[exclude]]\nmodel = \"dense\"\n", "expands to no trials", None),
        ("name = \"t\"\n[[include]]\nreported = \"high\"\n", "`include.reported` must be a number", Some((3, 12))),
        ("name = \"t\"\n[[exclude]]\ncolour = \"color\"\n", "`exclude.colour`", Some((3, 1))),
        ("name = \"t\"\n[grid]\nmodel = [\"dense\"\n", "", Some((3, 17))),
        ("name = \"\"\n", "`name` must not be empty", Some((1, 8))),
        // Names become paths and terminal output.
        ("name = \"../../../somewhere\"\n", "must not start with '.'", Some((1, 8))),
        ("name = \"a/b\"\n", "has '/'", Some((1, 8))),
        ("name = \"red\\u001b[31m\"\n", "has '\\u{1b}'", Some((1, 8))),
        ("name = \"nul\\u0000\"\n", "has '\\0'", Some((1, 8))),
        ("name = \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"\n", "at most 64", Some((1, 8))),
        // Wrong types.
        ("name = 3\n", "invalid type: integer `3`, expected a string", Some((1, 8))),
        ("name = \"t\"\ndata = [\"a\"]\n", "expected a string", Some((2, 8))),
        ("name = \"t\"\nrepeats = \"two\"\n", "expected u32", Some((2, 11))),
        ("name = \"t\"\nrepeats = -1\n", "invalid value: integer `-1`", Some((2, 11))),
        ("name = \"t\"\n[grid]\nlr = [\"fast\"]\n", "`grid.lr`", Some((3, 1))),
        ("name = \"t\"\n[grid]\nseed = [1.5]\n", "`grid.seed`", Some((3, 1))),
        ("name = \"t\"\n[grid]\naugment = [{ flip = \"yes\" }]\n", "`grid.augment`", Some((3, 1))),
        ("name = \"t\"\ngrid = 3\n", "invalid type", Some((2, 8))),
        ("name = \"t\"\nrank_by = \"loss\"\n", "unknown variant `loss`", Some((2, 11))),
        // Out of range.
        ("name = \"t\"\n[defaults]\nepochs = 0\n", "`epochs`", Some((3, 1))),
        ("name = \"t\"\n[defaults]\nmomentum = 1.5\n", "`momentum`", Some((3, 1))),
        ("name = \"t\"\n[defaults]\nvalidation_split = 0.95\n", "`validation_split`", Some((3, 1))),
        ("name = \"t\"\n[grid]\nbatch_size = [32, 0]\n", "`batch_size`: 0", Some((3, 1))),
        ("name = \"t\"\n[grid]\ntrain_batches = [6]\n", "`train_batches`", Some((3, 1))),
        ("name = \"t\"\n[defaults]\nepochs = 99999999999\n", "`defaults.epochs`", Some((3, 1))),
        ("name = \"t\"\nrepeats = 0\n", "`repeats` must be at least 1", None),
        ("name = \"t\"\nsearch = \"random\"\nsamples = 0\n", "`samples` must be at least 1", Some((3, 11))),
        ("name = \"t\"\nsearch = \"random\"\nsamples = 3\n[grid]\nepochs = {min = 1, max = 9223372036854775807}\n", "`grid.epochs.max`: invalid value: integer `9223372036854775807`", Some((5, 10))),
        ("name = \"t\"\nsearch = \"random\"\nsamples = 3\n[grid]\nepochs = {min = \"a\", max = 3}\n", "`grid.epochs.min`", Some((5, 10))),
        // Empty axes, empty tables.
        ("name = \"t\"\n[grid]\nlr = []\nseed = [1]\n", "`grid.lr` is an empty list", Some((3, 6))),
        // Grids too large to expand, refused before expanding.
        (HUGE_GRID, "more than 100000 trials (axes: seed 20 x lr 20 x batch_size 20 x epochs 20 x momentum 20", None),
        ("name = \"t\"\nrepeats = 4000000000\n", "more than 100000 trials", None),
        ("name = \"t\"\nsearch = \"random\"\nsamples = 4000000000\n[grid]\nlr = { min = 0.1, max = 1.0 }\n", "samples: 4000000000", None),
    ];
    for (text, needle, position) in cases {
        assert_refused(text, needle, *position);
    }
}

/// Five 20-value axes: 3.2 million combinations.
const HUGE_GRID: &str = "name = \"t\"\n[grid]\nseed = [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20]\n\
    lr = [0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,0.01,0.02,0.03,0.04,0.05,0.06,0.07,0.08,0.09,0.001,0.002]\n\
    batch_size = [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20]\n\
    epochs = [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20]\n\
    momentum = [0.0,0.01,0.02,0.03,0.04,0.05,0.06,0.07,0.08,0.09,0.1,0.11,0.12,0.13,0.14,0.15,0.16,0.17,0.18,0.19]\n";

#[test]
fn non_utf8_file_is_rejected_with_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, b"name = \"t\"\n# caf\xe9\n").unwrap();
    let e = load(&path).unwrap_err();
    assert!(e.to_string().contains("not valid UTF-8"), "{e}");
    assert_eq!(e.position, Some((2, 6)));
    let missing = load(&dir.path().join("nope.toml")).unwrap_err();
    assert!(
        missing.to_string().contains("nope.toml") && missing.to_string().contains("cannot read")
    );
}

#[test]
fn only_regular_files_of_sensible_size_are_read() {
    let dir = tempfile::tempdir().unwrap();
    // A directory, a FIFO with no writer (opening it would block forever), /dev/zero (reading
    // it would fill memory), and a file over the size limit.
    let fifo = dir.path().join("fifo.toml");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let big = dir.path().join("big.toml");
    std::fs::write(
        &big,
        format!("name = \"t\"\n#{}\n", "x".repeat(MAX_FILE_BYTES as usize)),
    )
    .unwrap();
    for (path, needle) in [
        (dir.path().to_path_buf(), "not a regular file"),
        (fifo, "not a regular file"),
        (PathBuf::from("/dev/zero"), "not a regular file"),
        (big.clone(), "over 1024 KiB"),
    ] {
        let e = load(&path).unwrap_err().to_string();
        assert!(
            e.contains(needle) && e.contains(path.to_str().unwrap()),
            "{e}"
        );
    }
}

#[test]
fn integer_ranges_sample_values_inside_the_range() {
    let s = plan("name = \"t\"\nsearch = \"random\"\nsamples = 20\n[grid]\nseed = {min = 9223372036854775000, max = 9223372036854775807}\n").unwrap();
    for t in &s.trials {
        assert!(t.spec.seed >= 9223372036854775000, "{}", t.spec.seed);
    }
}

#[test]
fn data_fetch_is_kept_as_is() {
    let s = parse(
        "name = \"t\"\ndata = \"fetch\"\n",
        Path::new("examples/grid.toml"),
    )
    .unwrap();
    assert_eq!(s.data, Some(PathBuf::from(FETCH)));
}

#[test]
fn includes_alone_list_the_trials_and_label_repeated_combinations() {
    let only = plan("name = \"t\"\n[[include]]\nlabel = \"a\"\nmodel = \"dense\"\n").unwrap();
    assert_eq!(only.trials.len(), 1, "no extra trial of the bare defaults");
    assert_eq!(only.trials[0].label.as_deref(), Some("a"));
    let both = plan("name = \"t\"\n[grid]\nmodel = [\"dense\", \"seed-cnn\"]\n[[include]]\nlabel = \"b\"\nreported = 0.5\nmodel = \"dense\"\n").unwrap();
    assert_eq!(both.trials.len(), 2);
    assert_eq!(
        (both.trials[0].label.as_deref(), both.trials[0].reported),
        (Some("b"), Some(0.5))
    );
}

#[test]
fn early_stopping_section_is_read_and_checked_against_the_trials() {
    let head = "name = \"t\"\n[defaults]\nepochs = 9\nvalidation_split = 0.1\n";
    let s = plan(&format!(
        "{head}[early_stopping]\nmethod = \"asha\"\nmetric = \"val_loss\"\ngrace_epochs = 1\nreduction_factor = 3\n"
    ))
    .unwrap();
    let rule = s.early_stopping.unwrap();
    assert_eq!(rule.method, Method::Asha);
    assert_eq!(rule.metric, StopMetric::ValLoss);
    assert_eq!(rule.rungs(9), vec![1, 3]);
    let median = plan(&format!(
        "{head}[early_stopping]\nmethod = \"median\"\nmin_trials = 2\n"
    ))
    .unwrap()
    .early_stopping
    .unwrap();
    assert_eq!(
        (median.metric, median.min_trials, median.grace_epochs),
        (StopMetric::ValAccuracy, 2, 1)
    );
    assert!(plan(head).unwrap().early_stopping.is_none());

    type Case<'a> = (&'a str, &'a str, (usize, usize));
    let cases: &[Case] = &[
        (
            "method = \"hyperband\"\n",
            "unknown variant `hyperband`",
            (6, 10),
        ),
        (
            "method = \"asha\"\ngrace_epochs = 0\n",
            "`early_stopping.grace_epochs` = 0 must be between 1",
            (7, 16),
        ),
        (
            "method = \"asha\"\ngrace_epochs = -3\n",
            "= -3 must be between 1",
            (7, 16),
        ),
        (
            "method = \"asha\"\nreduction_factor = 1\n",
            "`early_stopping.reduction_factor` = 1",
            (7, 20),
        ),
        (
            "method = \"asha\"\nmin_trials = 2\n",
            "`early_stopping.min_trials` is only for method = \"median\"",
            (7, 14),
        ),
        (
            "method = \"median\"\nreduction_factor = 2\n",
            "only for method = \"asha\"",
            (7, 20),
        ),
        (
            "method = \"median\"\nmin_trials = 0\n",
            "`early_stopping.min_trials` = 0",
            (7, 14),
        ),
        (
            "method = \"asha\"\ngrace_epochs = 9\n",
            "not below the longest trial's 9 epoch(s)",
            (7, 16),
        ),
        (
            "method = \"asha\"\nmetric = \"accuracy\"\n",
            "unknown variant `accuracy`",
            (7, 10),
        ),
        (
            "method = \"asha\"\npatience = 3\n",
            "unknown field `patience`",
            (7, 1),
        ),
        ("grace_epochs = 1\n", "missing field `method`", (5, 1)),
    ];
    for (section, message, at) in cases {
        let text = format!("{head}[early_stopping]\n{section}");
        let e = plan(&text).expect_err(section);
        assert!(e.message.contains(message), "{section}: {e}");
        assert_eq!(e.position, Some(*at), "{section}: {e}");
    }
    // Judging on validation metrics needs a validation split in every trial.
    let e = plan("name = \"t\"\n[defaults]\nepochs = 9\n[early_stopping]\nmethod = \"asha\"\nmetric = \"val_accuracy\"\n")
        .unwrap_err();
    assert!(e.message.contains("validation_split = 0"), "{e}");
    assert_eq!(e.position, Some((6, 10)));
}

/// `model = "torchscript:PATH"` (relative to the sweep file) becomes the file's hash, so the
/// trial id follows the module's content, not its name; a missing file is an error at the
/// value's place.
#[test]
fn torchscript_modules_are_named_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("grid.toml");
    std::fs::write(dir.path().join("a.pt"), b"module A").unwrap();
    std::fs::write(dir.path().join("b.pt"), b"module A").unwrap();
    let text =
        "name = \"t\"\n[grid]\nmodel = [\"torchscript:a.pt\", \"dense\", 'torchscript:b.pt']\n";
    let s = parse(text, &file).unwrap();
    let hash = ModuleHash::of(b"module A");
    // Two paths, one content: one trial.
    assert_eq!(s.trials.len(), 2);
    assert_eq!(s.trials[0].spec.model, Model::TorchScript(hash));
    assert_eq!(s.modules, vec![(hash, dir.path().join("a.pt"))]);
    let before = s.trials[0].id.clone();
    std::fs::write(dir.path().join("a.pt"), b"module A, trained further").unwrap();
    let changed = parse(text, &file).unwrap();
    assert_ne!(
        changed.trials[0].id, before,
        "a new module file is a new trial"
    );

    let err = parse(
        "name = \"t\"\n[defaults]\nepochs = 1\nmodel = \"torchscript:gone.pt\"\n",
        &file,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("grid.toml:4:") && err.contains("gone.pt"),
        "{err}"
    );
    // A resolved hash is taken as it is (a plan written out and read back).
    let resolved = format!("name = \"t\"\n[defaults]\nmodel = \"torchscript:{hash}\"\n");
    assert_eq!(
        parse(&resolved, &file).unwrap().trials[0].spec.model,
        Model::TorchScript(hash)
    );
}

/// `data = "imagefolder:DIR"` sets every trial's dataset to the folder's fingerprint (so its
/// results never mix with CIFAR-10's or another folder's), and a trial may not set it.
#[test]
fn image_folders_are_part_of_the_trial_id() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("grid.toml");
    let images = dir.path().join("images");
    cifar10::testdata::write_image_folder(&images, &["cat", "dog"], 2, 1, 8);
    let text = "name = \"t\"\ndata = \"imagefolder:images\"\n[defaults]\nimage_size = 16\n[grid]\nlr = [0.1, 0.01]\n";
    let s = parse(text, &file).unwrap();
    let fp = cifar10::imagefolder::Folder::scan(&images)
        .unwrap()
        .fingerprint();
    assert!(s
        .trials
        .iter()
        .all(|t| t.spec.dataset == sweep_proto::DatasetKind::ImageFolder(fp)));
    assert_eq!(s.trials[0].spec.image_size, 16);
    assert_eq!(
        s.data.as_deref(),
        Some(Path::new(&format!("imagefolder:{}", images.display())))
    );
    let cifar = parse(
        "name = \"t\"\n[defaults]\nimage_size = 32\n[grid]\nlr = [0.1, 0.01]\n",
        &file,
    )
    .unwrap();
    assert_ne!(cifar.trials[0].id, s.trials[0].id);

    let err = parse(
        "name = \"t\"\ndata = \"imagefolder:images\"\n[grid]\ndataset = [\"cifar10\"]\n",
        &file,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains(":4:1") && err.contains("`dataset`"), "{err}");
    let err = parse("name = \"t\"\ndata = \"imagefolder:nowhere\"\n", &file)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nowhere") && err.contains("train/"), "{err}");
    let err = parse("name = \"t\"\n[defaults]\nimage_size = 64\n", &file)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("image_size") && err.contains("image folders"),
        "{err}"
    );
}

const TPE: &str = r#"name = "t"
search = "tpe"
trials = 30
search_seed = 3
[defaults]
epochs = 2
validation_split = 0.1
[grid]
momentum = { min = 0.5, max = 0.99, when = { optimizer = "sgd" } }
optimizer = ["sgd", "adamw"]
lr = { min = 1e-4, max = 0.3, log = true }
batch_size = { min = 32, max = 256, step = 32 }
nesterov = { values = [true, false], when = { optimizer = ["sgd"] } }
"#;

/// A TPE sweep plans its space and budget, not trials; a condition's parent comes first
/// whatever the file order, and integer bounds make an integer axis.
#[test]
fn a_tpe_sweep_plans_a_space_and_a_budget() {
    use crate::sched::search::Values;
    let s = plan(TPE).unwrap();
    assert!(s.trials.is_empty());
    assert_eq!(s.size(), 30);
    let rule = s.search.as_ref().unwrap();
    assert_eq!((rule.budget, rule.startup, rule.seed), (30, 10, 3));
    let names: Vec<&str> = rule.axes.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        ["optimizer", "momentum", "lr", "batch_size", "nesterov"]
    );
    assert_eq!(
        rule.axes[3].values,
        Values::Int {
            min: 32,
            max: 256,
            log: false,
            step: Some(32)
        }
    );
    assert_eq!(rule.axes[1].when.as_ref().unwrap().axis, "optimizer");
    let text = describe_search(rule);
    assert!(
        text.contains("TPE search: 30 trials (10 uniform first)"),
        "{text}"
    );
    assert!(text.contains("(when optimizer is \"sgd\")"), "{text}");
    // Over the interactive limit, as for grids.
    let big = plan(&TPE.replace("trials = 30", "trials = 5000")).unwrap();
    assert!(big
        .check_size(false)
        .unwrap_err()
        .contains("asks for 5000 trials"));
    assert!(big.check_size(true).is_ok());
}

/// Bad TPE sweeps, each with its place.
#[test]
fn bad_tpe_sweeps_name_line_column_and_key() {
    let head = "name = \"t\"\nsearch = \"tpe\"\ntrials = 10\n[grid]\n";
    type Case<'a> = (String, &'a str, Option<(usize, usize)>);
    let cases: Vec<Case> = vec![
        ("name = \"t\"\nsearch = \"tpe\"\ntrials = 0\n[grid]\nlr = [0.1, 0.2]\n".into(), "`trials` = 0 must be between 1", Some((3, 10))),
        ("name = \"t\"\nsearch = \"tpe\"\ntrials = 100001\n[grid]\nlr = { min = 0.1, max = 0.2 }\n".into(), "between 1 and 100000", Some((3, 10))),
        ("name = \"t\"\nsearch = \"tpe\"\n[grid]\nlr = [0.1, 0.2]\n".into(), "needs `trials`", None),
        ("name = \"t\"\ntrials = 5\n".into(), "`trials` is the budget of search = \"tpe\"", Some((2, 10))),
        ("name = \"t\"\nsearch = \"tpe\"\ntrials = 5\n".into(), "needs at least one range or list axis", None),
        (format!("{head}lr = {{ min = 0.3, max = 0.1 }}\n"), "`grid.lr`: `min` (0.3) must be below `max` (0.1)", Some((5, 6))),
        (format!("{head}lr = {{ min = 0.1, max = 0.1 }}\n"), "must be below", Some((5, 6))),
        (format!("{head}weight_decay = {{ min = 0.0, max = 0.1, log = true }}\n"), "a log range needs `min` > 0", Some((5, 16))),
        (format!("{head}lr = {{ min = 0.1, max = 0.5, log = true, step = 0.1 }}\n"), "`step` does not go with `log`", Some((5, 6))),
        (format!("{head}lr = {{ min = 0.1, max = 0.5, stepp = 0.1 }}\n"), "unknown key `stepp`", Some((5, 6))),
        (format!("{head}lr = {{ min = -1.0, max = 0.5 }}\n"), "`grid.lr`: `min`: invalid value for `lr`", Some((5, 6))),
        (format!("{head}momentum = {{ min = 0.1, max = 0.9, when = {{ optimiser = \"sgd\" }} }}\noptimizer = [\"sgd\", \"adamw\"]\n"), "`when` names `optimiser`, which is not an axis", Some((5, 12))),
        (format!("{head}momentum = {{ min = 0.1, max = 0.9, when = {{ optimizer = \"rmsprop\" }} }}\noptimizer = [\"sgd\", \"adamw\"]\n"), "`optimizer` never takes \"rmsprop\"", Some((5, 12))),
        (format!("{head}momentum = {{ min = 0.1, max = 0.9, when = {{ lr = 0.1 }} }}\nlr = {{ min = 0.1, max = 0.5 }}\n"), "which is a range", Some((5, 12))),
        (format!("{head}a = {{ values = [1] }}\n"), "`grid.a`", Some((5, 1))),
        (format!("{head}optimizer = [\"sgd\", \"adamw\"]\n"), "more than the 2 points the space has", Some((3, 10))),
        (format!("{head}lr = {{ min = 0.1, max = 0.5, step = 0.1 }}\nbatch_size = [32]\n"), "more than the 5 points the space has", Some((3, 10))),
        (format!("{head}batch_size = {{ min = 32, max = 250, step = 32 }}\n"), "`max` (250) is not `min` plus a whole number of `step`s (32); the last point of that grid is 224", Some((5, 14))),
        (format!("name = \"t\"\nsearch = \"tpe\"\ntrials = 10\nrepeats = 2\n[grid]\nlr = {{ min = 0.1, max = 0.5 }}\n"), "`repeats` is for grids", None),
        (format!("{head}lr = {{ min = 0.1, max = 0.5 }}\n[[include]]\nepochs = 3\n"), "`[[include]]` is for grids", Some((7, 1))),
        (format!("name = \"t\"\nsearch = \"tpe\"\ntrials = 10\nsamples = 4\n[grid]\nlr = {{ min = 0.1, max = 0.5 }}\n"), "`samples` (use `trials`)", Some((4, 11))),
        (format!("name = \"t\"\nsearch = \"tpe\"\ntrials = 10\nstartup_trials = -1\n[grid]\nlr = {{ min = 0.1, max = 0.5 }}\n"), "`startup_trials` = -1", Some((4, 18))),
        (format!("{head}nesterov = {{ values = [true, false], when = {{ channels_last = true }} }}\nchannels_last = {{ values = [true, false], when = {{ nesterov = true }} }}\n"), "form a cycle", Some((5, 12))),
    ];
    for (text, needle, position) in &cases {
        assert_refused(text, needle, *position);
    }
}

const PBT: &str = "name = \"p\"\nsearch = \"pbt\"\nsearch_seed = 2\n[defaults]\nepochs = 6\nvalidation_split = 0.1\n[pbt]\npopulation = 4\ninterval_epochs = 2\n[pbt.mutations]\nlr = { min = 1e-3, max = 0.3, log = true }\naugment.shift = { min = 0.0, max = 0.2 }\nweight_decay = [0.0, 1e-4]\n";

/// A PBT sweep plans its population (its first generation's segments; the others are made
/// as it trains), with the defaults of the settings, the mutations in file order
/// (`augment.shift` a field of `augment`), and members whose trials are valid.
#[test]
fn a_pbt_sweep_plans_its_population() {
    let s = parse(PBT, Path::new("p.toml")).unwrap();
    let rule = s.pbt.as_ref().unwrap();
    assert!(s.search.is_none());
    assert_eq!(s.trials.len(), 4);
    assert!(s.trials.iter().all(|t| t.spec.stop_after == Some(2)));
    assert_eq!(s.size(), 12, "4 members, 3 segments each");
    assert_eq!(
        (
            rule.interval_epochs,
            rule.quantile,
            rule.resample_probability,
            rule.seed
        ),
        (2, 0.25, 0.25, 2)
    );
    assert_eq!(rule.perturbation_factors, [0.8, 1.2]);
    let names: Vec<&str> = rule.mutations.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["lr", "augment.shift", "weight_decay"]);
    let pbt = crate::sched::pbt::Pbt::new(rule.clone()).unwrap();
    for seg in pbt.first_generation().unwrap() {
        let spec = pbt.spec(&seg.point).unwrap();
        assert!((0.0..=0.2).contains(&spec.augment.shift) && spec.epochs == 6);
    }
    let text = describe_pbt(rule).unwrap();
    assert!(
        text.contains("population 4, 6 epochs each in 3 segments of 2")
            && text.contains("member 3: lr = "),
        "{text}"
    );
}

/// Bad PBT settings are refused where they are written.
#[test]
fn bad_pbt_settings_name_their_place() {
    let with = |from: &str, to: &str| PBT.replace(from, to);
    type Case = (String, &'static str, Option<(usize, usize)>);
    let cases: Vec<Case> = vec![
        (
            with("lr = { min", "model = [\"dense\"]\nlr = { min"),
            "`pbt.mutations.model`: `model` cannot change mid-training (it fixes the shapes",
            Some((11, 1)),
        ),
        (
            with(
                "weight_decay = [0.0, 1e-4]",
                "optimizer = [\"sgd\", \"adam\"]",
            ),
            "`optimizer` cannot change mid-training",
            Some((13, 1)),
        ),
        (
            with(
                "augment.shift = { min = 0.0, max = 0.2 }",
                "augment.cutout = [0, 40]",
            ),
            "`pbt.mutations.augment.cutout`: invalid value for `augment.cutout`: 40",
            Some((12, 1)),
        ),
        (
            with("population = 4", "population = 1"),
            "`pbt.population` = 1 must be between 2",
            Some((8, 14)),
        ),
        (
            with("interval_epochs = 2", "interval_epochs = 6"),
            "`interval_epochs` = 6 must be at least 1 and below `epochs` (6)",
            Some((9, 19)),
        ),
        (
            with("interval_epochs = 2", "interval_epochs = 0"),
            "`pbt.interval_epochs` = 0 must be between 1",
            Some((9, 19)),
        ),
        (
            with("population = 4", "population = 4\nquantile = 0.6"),
            "`pbt.quantile` = 0.6 must be a number in (0, 0.5]",
            Some((9, 12)),
        ),
        (
            with("population = 4", "population = 4\nquantile = 0"),
            "`pbt.quantile` = 0 must be",
            Some((9, 12)),
        ),
        (
            with("population = 4", "population = 4\nresample_probability = 2"),
            "[0, 1]",
            Some((9, 24)),
        ),
        (
            with(
                "population = 4",
                "population = 4\nperturbation_factors = [0.8, -1]",
            ),
            "positive numbers",
            Some((9, 24)),
        ),
        (
            with("population = 4", "population = 4\npopulaton = 5"),
            "unknown field `populaton`",
            Some((9, 1)),
        ),
        (
            with("validation_split = 0.1\n", ""),
            "compares members on validation accuracy",
            None,
        ),
        (
            with("[pbt]", "[grid]\nseed = [1, 2]\n[pbt]"),
            "[grid] is not for search = \"pbt\"",
            Some((8, 1)),
        ),
        (
            with("search = \"pbt\"\n", ""),
            "[pbt] goes with search = \"pbt\"",
            None,
        ),
        (
            with(
                "lr = { min = 1e-3, max = 0.3, log = true }",
                "lr = { min = 1e-3, max = 0.3, when = { x = 1 } }",
            ),
            "`when` is for search = \"tpe\"",
            Some((11, 6)),
        ),
        (
            with(
                "lr = { min = 1e-3, max = 0.3, log = true }",
                "lr = { min = -1.0, max = 0.3 }",
            ),
            "`pbt.mutations.lr`: `min`: invalid value for `lr`",
            Some((11, 6)),
        ),
        (
            "name = \"p\"\nsearch = \"pbt\"\n[defaults]\nvalidation_split = 0.1\n".into(),
            "needs a [pbt] section",
            None,
        ),
        (
            with(
                "[pbt.mutations]\n",
                "[early_stopping]\nmethod = \"asha\"\n[pbt.mutations]\n",
            ),
            "[early_stopping] is not for search = \"pbt\"",
            None,
        ),
    ];
    for (text, needle, position) in &cases {
        assert_refused(text, needle, *position);
    }
}
