//! Sweep files: TOML that expands into trials.
//!
//! ```toml
//! name = "quick"
//! data = "../data"              # dataset directory (relative to this file), "fetch", or
//!                               # "imagefolder:DIR" (train/<class>/*, test/<class>/*)
//! rank_by = "test_accuracy"     # or "best_val_accuracy"
//! direction = "max"
//! repeats = 1                   # the same config with N seeds (seed, seed+1, ...)
//! keep_models = "best"          # trained models kept: "best" (keep_best = 3), "all", "none"
//! search = "grid"               # or "random", with samples = N and search_seed; or "tpe",
//!                               # with trials = N (see `space`); or "pbt", with [pbt] (see
//!                               # `pbt`)
//!
//! [defaults]                    # any trial field (docs/TRIAL.md)
//! epochs = 2
//!
//! [grid]                        # each axis a list; random search and TPE also take ranges
//! model = ["dense", "seed-cnn"]
//! color = ["color", "grayscale"]
//!
//! [[exclude]]                   # drop combinations matching every key
//! model = "dense"
//! color = "grayscale"
//!
//! [early_stopping]              # optional: stop hopeless trials (docs/SWEEP.md)
//! method = "asha"               # or "median"
//! metric = "val_accuracy"       # or "val_loss"; needs validation_split > 0
//! grace_epochs = 1
//! reduction_factor = 3          # ASHA only; min_trials = 3 for the median rule
//!
//! [checkpoints]                 # optional: when running trials save (default: 300 s)
//! every_epochs = 1
//!
//! [[include]]                   # extra trials on top of the defaults
//! label = "resnet, 1 epoch"     # optional: label and reported accuracy are not trial fields
//! reported = 0.6289
//! model = "resnet20"
//! ```
//!
//! Parsing is two-step: serde with `deny_unknown_fields` for the file's shape, then every
//! trial-field entry is checked through `TrialSpec` itself, so an error names the file, line,
//! column and key exactly as a worker would reject the value.

use crate::sched::early_stop::{self, EarlyStopping, Method, StopMetric};
use crate::sched::pbt::PbtRule;
use crate::sched::search::SearchRule;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use sweep_proto::module::{module_paths, read_module, substitute_modules};
use sweep_proto::{
    DatasetKind, ModuleHash, SpecError, TrialSpec, IMAGEFOLDER_PREFIX, TORCHSCRIPT_PREFIX,
};
use toml::Spanned;

/// Above this many trials `plan`/`sweep` refuse without `--force`.
pub const MAX_TRIALS: usize = 1000;

/// No sweep may expand to more trials than this, `--force` or not: it is checked before the
/// grid is expanded, so a typo like five 20-value axes is an error, not an out-of-memory.
pub const HARD_MAX_TRIALS: usize = 100_000;

/// `data = "fetch"`: workers that have no dataset download the official archive into ./data.
pub const FETCH: &str = "fetch";

/// Keys an `[[include]]` entry may carry that are about the row, not the trial.
const LABEL: &str = "label";
const REPORTED: &str = "reported";

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct SweepError {
    pub file: PathBuf,
    /// 1-based line and column, when the error has a place in the file.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for SweepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => {
                write!(f, "{}:{line}:{col}: {}", self.file.display(), self.message)
            }
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    #[default]
    TestAccuracy,
    BestValAccuracy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    #[default]
    Max,
    Min,
}

/// Which trained models a sweep keeps (`keep_models`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Keep {
    #[default]
    Best,
    All,
    None,
}

/// What a sweep keeps of its finished trials' trained models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepModels {
    /// The best `n` by the sweep's ranking.
    Best(u32),
    All,
    None,
}

/// Models kept by default: the three best.
pub const DEFAULT_KEEP_BEST: u32 = 3;

impl KeepModels {
    /// How many of a sweep's ranked trials keep their models.
    pub fn count(self) -> usize {
        match self {
            KeepModels::None => 0,
            KeepModels::All => usize::MAX,
            KeepModels::Best(n) => n as usize,
        }
    }
}

impl Default for KeepModels {
    fn default() -> KeepModels {
        KeepModels::Best(DEFAULT_KEEP_BEST)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Search {
    #[default]
    Grid,
    Random,
    Tpe,
    Pbt,
}

type Entries = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSweep {
    name: Spanned<String>,
    data: Option<Spanned<String>>,
    #[serde(default)]
    rank_by: Metric,
    #[serde(default)]
    direction: Direction,
    #[serde(default = "one")]
    repeats: u32,
    #[serde(default)]
    keep_models: Keep,
    keep_best: Option<Spanned<i64>>,
    #[serde(default)]
    search: Search,
    samples: Option<Spanned<u32>>,
    #[serde(default)]
    search_seed: u64,
    /// TPE's budget (`space`).
    trials: Option<Spanned<i64>>,
    startup_trials: Option<Spanned<i64>>,
    #[serde(default)]
    defaults: Entries,
    #[serde(default)]
    grid: Entries,
    #[serde(default)]
    include: Vec<Entries>,
    #[serde(default)]
    exclude: Vec<Entries>,
    early_stopping: Option<Spanned<RawEarly>>,
    checkpoints: Option<RawCheckpoints>,
    /// `search = "pbt"`'s settings (`pbt`).
    pbt: Option<Spanned<pbt::RawPbt>>,
}

/// `[checkpoints]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheckpoints {
    every_epochs: Option<Spanned<i64>>,
    every_seconds: Option<Spanned<i64>>,
}

/// `[early_stopping]` as written; numbers are read wide so that a negative one is refused
/// with its key and place, not as a type error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEarly {
    method: Method,
    metric: Option<Spanned<StopMetric>>,
    grace_epochs: Option<Spanned<i64>>,
    reduction_factor: Option<Spanned<i64>>,
    min_trials: Option<Spanned<i64>>,
}

/// A sweep's `[checkpoints]`: when its running trials save one. After `every_epochs` epochs
/// since the last, or after an epoch that ends `every_seconds` or more after it (0: off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointPolicy {
    pub every_epochs: u32,
    pub every_seconds: u32,
}

/// By default a trial saves after any epoch that ends 5 minutes or more after its last
/// checkpoint: long trials lose at most about that much to a lost worker, short ones never
/// pay for saving.
impl Default for CheckpointPolicy {
    fn default() -> CheckpointPolicy {
        CheckpointPolicy {
            every_epochs: 0,
            every_seconds: 300,
        }
    }
}

/// One trial of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTrial {
    /// Stable id: a hash of the fully resolved configuration.
    pub id: sweep_proto::ids::TrialId,
    pub spec: TrialSpec,
    pub label: Option<String>,
    /// The accuracy a publication reported for this row, for side-by-side reports.
    pub reported: Option<f64>,
}

/// An expanded sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    pub name: String,
    pub file: PathBuf,
    /// Dataset directory, resolved against the sweep file's directory, or [`FETCH`].
    pub data: Option<PathBuf>,
    pub rank_by: Metric,
    pub direction: Direction,
    /// Trial fields that vary across the plan, in file order.
    pub axes: Vec<String>,
    pub trials: Vec<PlannedTrial>,
    /// `[early_stopping]`, checked against the trials.
    pub early_stopping: Option<EarlyStopping>,
    /// `[checkpoints]`, or the default.
    pub checkpoints: CheckpointPolicy,
    /// `keep_models` (and `keep_best`).
    pub keep_models: KeepModels,
    /// The TorchScript modules the trials name (`model = "torchscript:PATH"`), by hash, with
    /// the file each was read from.
    pub modules: Vec<(ModuleHash, PathBuf)>,
    /// `search = "tpe"`: the space and budget. Its trials are suggested as workers ask, so
    /// `trials` is empty.
    pub search: Option<SearchRule>,
    /// `search = "pbt"`: the population's rule. Its trials are made generation by
    /// generation, so `trials` is empty.
    pub pbt: Option<PbtRule>,
    /// `data = "imagefolder:DIR"`: the folder's fingerprint, which every trial's `dataset`
    /// names (what `coordinator submit` sends along, see [`FolderScan`]).
    pub image_folder: Option<u64>,
}

/// Where the fingerprint of `data = "imagefolder:DIR"` comes from. The folder is the
/// workers' business, and the sweep file's: the coordinator serving the admin API reads no
/// path a client names (issue 28), as with TorchScript modules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FolderScan {
    /// List the folder here, on the sweep file's machine (`coordinator sweep`, `plan`, `submit`).
    Here,
    /// The submitter listed it and sent this fingerprint (`SubmitSweepRequest.image_folder`);
    /// a sweep naming a folder without one is refused.
    Sent(Option<u64>),
}

impl Sweep {
    /// The trials the sweep will train: those planned, or a search's budget.
    pub fn size(&self) -> usize {
        match (&self.search, &self.pbt) {
            (Some(s), _) => s.budget,
            (_, Some(p)) => crate::sched::pbt::Pbt::new(p.clone()).map_or(p.population, |pbt| {
                p.population * pbt.generations() as usize
            }),
            _ => self.trials.len(),
        }
    }

    /// Above [`MAX_TRIALS`] a sweep runs only with `--force` (the message says so).
    pub fn check_size(&self, force: bool) -> Result<(), String> {
        if self.size() > MAX_TRIALS && !force {
            return Err(format!(
                "{}: the sweep {} {} trials, over the limit of {MAX_TRIALS}; pass --force to run it anyway",
                self.file.display(),
                if self.search.is_some() { "asks for" } else { "expands to" },
                self.size()
            ));
        }
        Ok(())
    }
}

/// Largest TorchScript module file a sweep may name.
pub use sweep_proto::module::MAX_MODULE_BYTES;

/// Stable trial id: the first 16 hex digits of SHA-256 over the canonical TOML.
pub fn trial_id(spec: &TrialSpec) -> sweep_proto::ids::TrialId {
    sweep_proto::ids::TrialId::of(spec)
}

/// SHA-256 of `data` in lower-case hex (trial ids, stored results' checksums).
pub use sweep_proto::sha256_hex;

/// Largest sweep file read (the study's file is 6 KB).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Longest sweep name; names become directory names under `out/`.
pub use sweep_proto::limits::MAX_NAME;

/// Reads and expands a sweep file. Only regular files up to [`MAX_FILE_BYTES`] are read: a
/// FIFO would block forever and `/dev/zero` would fill memory.
pub fn load(path: &Path) -> Result<Sweep, SweepError> {
    use std::io::Read;
    let fail = |message: String| SweepError {
        file: path.into(),
        position: None,
        message,
    };
    // stat, not open: opening a FIFO without a writer blocks.
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(fail("not a regular file; give a sweep file (TOML)".into()));
    }
    let too_big = || {
        fail(format!(
            "over {} KiB; a sweep file is a few KB of TOML",
            MAX_FILE_BYTES / 1024
        ))
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_big());
    }
    parse_bytes(bytes, path)
}

/// The first character not allowed in a name that ends up in a path, an id or a log line
/// (sweep and worker names): only ASCII letters, digits, `.`, `_` and `-` are.
pub fn unsafe_name_char(name: &str) -> Option<char> {
    name.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
}

/// Sweep names become paths (`out/NAME`) and appear in terminals: letters, digits, `.`, `_`
/// and `-`, not starting with `.`, at most [`MAX_NAME`] bytes.
fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("`name` must not be empty".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!(
            "`name` is {} bytes long; at most {MAX_NAME}",
            name.len()
        ));
    }
    if name.starts_with('.') {
        return Err(format!("`name` {name:?} must not start with '.'"));
    }
    if let Some(c) = unsafe_name_char(name) {
        return Err(format!(
            "`name` {name:?} has {c:?}; use letters, digits, '.', '_' and '-' (it names the report's directory)"
        ));
    }
    Ok(())
}

/// Expands a sweep file's raw bytes; `path` names it in errors and anchors `data`.
pub fn parse_bytes(bytes: Vec<u8>, path: &Path) -> Result<Sweep, SweepError> {
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let text = String::from_utf8_lossy(&e.into_bytes()[..at]).into_owned();
        SweepError {
            file: path.into(),
            position: Some(line_col(&text, at)),
            message: "the file is not valid UTF-8".into(),
        }
    })?;
    parse(&text, path)
}

/// Expands sweep text; `file` names it in errors and anchors the relative `data` path. In
/// stages: read the TOML, check each entry where it is written, refuse a plan too large
/// before expanding it, expand the grid (or random samples) minus the excludes, add the
/// includes, and name the axes.
pub fn parse(text: &str, file: &Path) -> Result<Sweep, SweepError> {
    parse_with(text, file, FolderScan::Here)
}

/// [`parse`], with the image folder's fingerprint taken from `folders`.
pub fn parse_with(text: &str, file: &Path, folders: FolderScan) -> Result<Sweep, SweepError> {
    let (text, modules) = resolve_modules(text, file)?;
    let text = text.as_str();
    let mut p = Parser::read(text, file)?;
    let image_folder = p.image_folder(folders)?;
    p.check_entries()?;
    p.check_size()?;
    let mut plan = Plan::new(p.raw.repeats);
    for spec in p.grid_trials()? {
        plan.push(spec, None, None);
    }
    for (spec, label, reported) in p.include_trials()? {
        plan.push(spec, label, reported);
    }
    let search = match p.raw.search {
        Search::Tpe => Some(p.search_rule()?),
        _ => None,
    };
    // A population's planned trials are its first generation; the others are made as it
    // trains.
    let pbt = match p.raw.search {
        Search::Pbt => {
            let (rule, first) = p.pbt_rule()?;
            for spec in first {
                plan.push(spec, None, None);
            }
            Some(rule)
        }
        _ => None,
    };
    if plan.trials.is_empty() && search.is_none() && pbt.is_none() {
        return Err(p.err(
            None,
            "the sweep expands to no trials (every combination is excluded?)".into(),
        ));
    }
    let early_stopping = match (&search, &pbt) {
        (Some(rule), _) => p.early_stopping(&space::corners(rule))?,
        // Refused with the rule (`pbt_only_keys`).
        (_, Some(_)) => None,
        _ => p.early_stopping(&plan.trials)?,
    };
    let checkpoints = p.checkpoints()?;
    let keep_models = p.keep_models()?;
    let mut sweep = p.finish(plan.trials);
    sweep.search = search;
    if let Some(rule) = &pbt {
        sweep.axes = rule.mutations.iter().map(|m| m.name.clone()).collect();
    }
    sweep.pbt = pbt;
    sweep.keep_models = keep_models;
    sweep.early_stopping = early_stopping;
    sweep.checkpoints = checkpoints;
    sweep.modules = modules;
    sweep.image_folder = image_folder;
    Ok(sweep)
}

/// Every `model = "torchscript:PATH"` value (PATH relative to the sweep file) becomes
/// `torchscript:<hash of the file>` in the text, so the trials name the module's content and
/// the rest of parsing sees resolved values. Returns the text and the modules read.
pub fn resolve_modules(
    text: &str,
    file: &Path,
) -> Result<(String, Vec<(ModuleHash, PathBuf)>), SweepError> {
    let base = file.parent().unwrap_or(Path::new("."));
    // Where `needle` is first written, `back` bytes before it (1: at its opening quote).
    let at = |needle: &str, back: usize| {
        text.find(needle)
            .map(|i| line_col(text, i.saturating_sub(back)))
    };
    let mut resolved = Vec::new();
    let mut modules: Vec<(ModuleHash, PathBuf)> = Vec::new();
    for value in module_paths(text) {
        let path = base.join(&value[TORCHSCRIPT_PREFIX.len()..]);
        let (hash, _) = read_module(&path).map_err(|e| SweepError {
            file: file.to_path_buf(),
            position: at(&value, 1),
            message: format!("model `{value}`: {e}"),
        })?;
        if !modules.iter().any(|(h, _)| *h == hash) {
            modules.push((hash, path));
        }
        resolved.push((value, hash));
    }
    // A value written with escapes or across lines is not found verbatim: say so here
    // rather than let the trial's parser call it unresolved.
    let out = substitute_modules(text, &resolved).map_err(|left| SweepError {
        file: file.to_path_buf(),
        position: at(&left[TORCHSCRIPT_PREFIX.len()..], 0),
        message: format!(
            "model `{left}`: write the path as a plain string (no escapes), e.g. \"torchscript:models/net.pt\""
        ),
    })?;
    Ok((out, modules))
}

/// The `torchscript:PATH` values of a sweep text that are paths, not yet hashes.
pub use sweep_proto::module::module_paths as unresolved_modules;

/// An include's trial, label and reported value.
type Included = (TrialSpec, Option<String>, Option<f64>);

/// A sweep file read but not yet expanded.
struct Parser<'a> {
    text: &'a str,
    file: &'a Path,
    raw: RawSweep,
    defaults: toml::Table,
    /// Grid keys in file order.
    axes: Vec<Spanned<String>>,
}

impl<'a> Parser<'a> {
    /// Stage 1: the TOML, the name, and the counts that must be positive.
    fn read(text: &'a str, file: &'a Path) -> Result<Parser<'a>, SweepError> {
        let err = |span: Option<std::ops::Range<usize>>, message: String| SweepError {
            file: file.to_path_buf(),
            position: span.map(|s| line_col(text, s.start)),
            message,
        };
        let raw: RawSweep =
            toml::from_str(text).map_err(|e| err(e.span(), e.message().to_string()))?;
        check_name(raw.name.get_ref()).map_err(|m| err(Some(raw.name.span()), m))?;
        if let Some(n) = raw.samples.as_ref().filter(|n| *n.get_ref() == 0) {
            return Err(err(Some(n.span()), "`samples` must be at least 1".into()));
        }
        if raw.repeats == 0 {
            return Err(err(None, "`repeats` must be at least 1".into()));
        }
        if let Some(t) = raw.trials.as_ref().filter(|_| raw.search != Search::Tpe) {
            return Err(err(
                Some(t.span()),
                "`trials` is the budget of search = \"tpe\"; a grid's trials are its combinations, random search's its `samples`".into(),
            ));
        }
        if let Some(p) = raw.pbt.as_ref().filter(|_| raw.search != Search::Pbt) {
            return Err(err(
                Some(p.span()),
                "[pbt] goes with search = \"pbt\"".into(),
            ));
        }
        if let Some(t) = raw
            .startup_trials
            .as_ref()
            .filter(|_| raw.search != Search::Tpe)
        {
            return Err(err(
                Some(t.span()),
                "`startup_trials` is for search = \"tpe\"".into(),
            ));
        }
        let defaults = raw
            .defaults
            .iter()
            .map(|(k, v)| (k.get_ref().clone(), v.get_ref().clone()))
            .collect();
        let mut axes: Vec<Spanned<String>> = raw.grid.keys().cloned().collect();
        axes.sort_by_key(|k| k.span().start);
        Ok(Parser {
            text,
            file,
            raw,
            defaults,
            axes,
        })
    }

    /// `data = "imagefolder:DIR"`: every trial trains on the folder, named in its id by the
    /// fingerprint of its file list (the trials may not set `dataset` themselves). The
    /// fingerprint is listed here or sent by the submitter (`folders`).
    fn image_folder(&mut self, folders: FolderScan) -> Result<Option<u64>, SweepError> {
        let Some(dir) = self
            .raw
            .data
            .as_ref()
            .and_then(|d| d.get_ref().strip_prefix(IMAGEFOLDER_PREFIX))
        else {
            return match folders {
                FolderScan::Sent(Some(fp)) => Err(self.err(
                    None,
                    format!("an image folder's fingerprint ({fp:016x}) came with a sweep whose `data` names no image folder"),
                )),
                _ => Ok(None),
            };
        };
        let sets_dataset = self
            .raw
            .defaults
            .keys()
            .chain(self.raw.grid.keys())
            .chain(self.raw.include.iter().flat_map(|i| i.keys()))
            .find(|k| k.get_ref() == "dataset");
        if let Some(k) = sets_dataset {
            return Err(self.err(
                Some(k.span()),
                format!("`dataset` is set by `data = \"{IMAGEFOLDER_PREFIX}{dir}\"`; remove it"),
            ));
        }
        let fingerprint = match folders {
            FolderScan::Here => {
                let base = self.file.parent().unwrap_or(Path::new("."));
                cifar10::imagefolder::Folder::scan(&base.join(dir))
                    .map_err(|e| {
                        self.err(None, format!("data = \"{IMAGEFOLDER_PREFIX}{dir}\": {e}"))
                    })?
                    .fingerprint()
            }
            FolderScan::Sent(Some(fp)) => fp,
            FolderScan::Sent(None) => {
                return Err(self.err(
                    self.raw.data.as_ref().map(|d| d.span()),
                    format!("data = \"{IMAGEFOLDER_PREFIX}{dir}\" names a folder on the submitter's machine, which this coordinator does not read: submit with `coordinator submit`, which lists it and sends its fingerprint"),
                ))
            }
        };
        let kind = DatasetKind::ImageFolder(fingerprint);
        self.defaults
            .insert("dataset".into(), toml::Value::String(kind.to_string()));
        Ok(Some(fingerprint))
    }

    fn err(&self, span: Option<std::ops::Range<usize>>, message: String) -> SweepError {
        SweepError {
            file: self.file.to_path_buf(),
            position: span.map(|s| line_col(self.text, s.start)),
            message,
        }
    }

    /// Stage 2: each entry on its own, so a bad key or value is reported where it is written.
    fn check_entries(&self) -> Result<(), SweepError> {
        for (key, value) in &self.raw.defaults {
            self.check_value("defaults", key, value.get_ref())?;
        }
        for (key, value) in &self.raw.grid {
            for v in self.grid_values(key, value)? {
                self.check_value("grid", key, &v)?;
            }
        }
        for (section, list) in [
            ("include", &self.raw.include),
            ("exclude", &self.raw.exclude),
        ] {
            for (key, value) in list.iter().flatten() {
                if section == "include" && (key.get_ref() == LABEL || key.get_ref() == REPORTED) {
                    continue;
                }
                self.check_value(section, key, value.get_ref())?;
            }
        }
        Ok(())
    }

    fn check_value(
        &self,
        section: &str,
        key: &Spanned<String>,
        value: &toml::Value,
    ) -> Result<(), SweepError> {
        check_entry(key.get_ref(), value).map_err(|m| {
            self.err(
                Some(key.span()),
                format!("`{section}.{}`: {m}", key.get_ref()),
            )
        })
    }

    /// The values of one grid axis to check on their own: a list's items, none for a range
    /// (its bounds are checked here, as values of the key).
    fn grid_values(
        &self,
        key: &Spanned<String>,
        value: &Spanned<toml::Value>,
    ) -> Result<Vec<toml::Value>, SweepError> {
        let name = key.get_ref();
        match value.get_ref() {
            toml::Value::Array(items) if items.is_empty() => Err(self.err(
                Some(value.span()),
                format!("`grid.{name}` is an empty list; give at least one value"),
            )),
            toml::Value::Array(items) => Ok(items.clone()),
            // TPE's ranges and conditions are read with the space (`space`); here a value
            // list's items, or a range's bounds, are checked as values of the key.
            toml::Value::Table(t) if self.raw.search == Search::Tpe => Ok(match t.get("values") {
                Some(toml::Value::Array(items)) => items.clone(),
                _ => ["min", "max"]
                    .iter()
                    .filter_map(|b| t.get(*b).cloned())
                    .collect(),
            }),
            toml::Value::Table(range) if self.raw.search == Search::Random => {
                // Each bound must be a value the key takes, so an impossible range is reported
                // at its key, not as a sampled number the file never wrote.
                for bound in ["min", "max"] {
                    if let Some(v) = range.get(bound) {
                        check_entry(name, v).map_err(|m| {
                            self.err(Some(value.span()), format!("`grid.{name}.{bound}`: {m}"))
                        })?;
                    }
                }
                Ok(Vec::new())
            }
            toml::Value::Table(_) => Err(self.err(
                Some(value.span()),
                format!("`grid.{name}`: ranges need search = \"random\" or \"tpe\""),
            )),
            _ => Err(self.err(
                Some(value.span()),
                format!("`grid.{name}` must be a list of values"),
            )),
        }
    }

    /// Stage 3: refuse before expanding: a few long axes multiply into more trials than
    /// memory holds.
    fn check_size(&self) -> Result<(), SweepError> {
        let raw = &self.raw;
        let axis_lengths: Vec<(&str, usize)> = self
            .axes
            .iter()
            .filter_map(|k| match raw.grid[k].get_ref() {
                toml::Value::Array(values) => Some((k.get_ref().as_str(), values.len())),
                _ => None,
            })
            .collect();
        let per_repeat = match raw.search {
            Search::Grid => axis_lengths
                .iter()
                .try_fold(1usize, |n, (_, len)| n.checked_mul(*len)),
            Search::Random => Some(raw.samples.as_ref().map_or(0, |n| *n.get_ref()) as usize),
            // The budget is checked with the space.
            Search::Tpe | Search::Pbt => Some(0),
        };
        let total = per_repeat
            .and_then(|n| n.checked_add(raw.include.len()))
            .and_then(|n| n.checked_mul(raw.repeats as usize));
        if total.is_some_and(|n| n <= HARD_MAX_TRIALS) {
            return Ok(());
        }
        let sizes: Vec<String> = axis_lengths
            .iter()
            .map(|(name, len)| format!("{name} {len}"))
            .collect();
        Err(self.err(
            None,
            format!(
                "the sweep expands to more than {HARD_MAX_TRIALS} trials (axes: {}; samples: {}; includes: {}; repeats: {}); split it into several sweeps",
                if sizes.is_empty() { "none".to_string() } else { sizes.join(" x ") },
                raw.samples.as_ref().map_or("-".to_string(), |n| n.get_ref().to_string()),
                raw.include.len(),
                raw.repeats
            ),
        ))
    }

    /// A combined trial, validated; an error only the combination reveals (e.g. step_epochs
    /// beyond epochs) points at the grid axis that sets the key, else at its default.
    fn resolve(&self, table: toml::Table) -> Result<TrialSpec, SweepError> {
        let locate = |key: &str| -> Option<std::ops::Range<usize>> {
            let root = key.split(['.', '[']).next().unwrap_or(key);
            self.raw
                .grid
                .get_key_value(root)
                .or_else(|| self.raw.defaults.get_key_value(root))
                .map(|(k, _)| k.span())
        };
        let spec: TrialSpec = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| self.err(None, e.message().to_string()))?;
        spec.validate().map_err(|e| match &e {
            SpecError::Invalid { key, .. } => self.err(locate(key), e.to_string()),
            SpecError::Parse(_) => self.err(None, e.to_string()),
        })?;
        Ok(spec)
    }

    /// Stage 4: the grid's combinations (or random samples), less the excludes. Without grid
    /// axes the defaults alone are a trial, unless includes list the trials.
    fn grid_trials(&self) -> Result<Vec<TrialSpec>, SweepError> {
        let axes: Vec<&Spanned<String>> = self.axes.iter().collect();
        let combos = match self.raw.search {
            // Suggested as workers ask.
            Search::Tpe | Search::Pbt => return Ok(Vec::new()),
            Search::Grid => grid_combinations(&self.defaults, &axes, &self.raw.grid),
            Search::Random => {
                let samples = *self
                    .raw
                    .samples
                    .as_ref()
                    .ok_or_else(|| self.err(None, "search = \"random\" needs `samples`".into()))?
                    .get_ref();
                random_samples(
                    &self.defaults,
                    &axes,
                    &self.raw.grid,
                    samples,
                    self.raw.search_seed,
                )
                .map_err(|(k, m)| self.err(Some(k), m))?
            }
        };
        if self.axes.is_empty() && !self.raw.include.is_empty() {
            return Ok(Vec::new());
        }
        let excludes: Vec<toml::Table> = self
            .raw
            .exclude
            .iter()
            .map(|e| {
                e.iter()
                    .map(|(k, v)| (k.get_ref().clone(), v.get_ref().clone()))
                    .collect()
            })
            .collect();
        let mut specs = Vec::new();
        for combo in combos {
            let spec = self.resolve(combo)?;
            if !excludes.iter().any(|ex| matches(&spec, ex)) {
                specs.push(spec);
            }
        }
        Ok(specs)
    }

    /// Stage 5: each include is the defaults plus its keys, with its label and reported value.
    fn include_trials(&self) -> Result<Vec<Included>, SweepError> {
        let mut out = Vec::new();
        for inc in &self.raw.include {
            let mut table = self.defaults.clone();
            let (mut label, mut reported) = (None, None);
            for (k, v) in inc {
                match (k.get_ref().as_str(), v.get_ref()) {
                    (LABEL, toml::Value::String(s)) => label = Some(s.clone()),
                    (REPORTED, toml::Value::Float(f)) => reported = Some(*f),
                    (REPORTED, toml::Value::Integer(i)) => reported = Some(*i as f64),
                    (LABEL | REPORTED, _) => {
                        let kind = if k.get_ref() == LABEL {
                            "string"
                        } else {
                            "number"
                        };
                        return Err(self.err(
                            Some(v.span()),
                            format!("`include.{}` must be a {kind}", k.get_ref()),
                        ));
                    }
                    _ => {
                        table.insert(k.get_ref().clone(), v.get_ref().clone());
                    }
                }
            }
            let spec = self.resolve(table).map_err(|e| SweepError {
                position: e.position.or(Some(line_col(self.text, inc_start(inc)))),
                ..e
            })?;
            out.push((spec, label, reported));
        }
        Ok(out)
    }

    /// Stage 6: `[early_stopping]`, checked against the planned trials: values in range,
    /// keys that belong to the method, a validation split to judge on in every trial, and a
    /// grace period shorter than the longest trial (else nothing could ever be stopped).
    fn early_stopping(&self, trials: &[PlannedTrial]) -> Result<Option<EarlyStopping>, SweepError> {
        let Some(raw) = &self.raw.early_stopping else {
            return Ok(None);
        };
        let section = raw.span();
        let raw = raw.get_ref();
        let only_for = |v: &Option<Spanned<i64>>, key: &str, method: &str| match v {
            Some(n) => Err(self.err(
                Some(n.span()),
                format!("`early_stopping.{key}` is only for method = \"{method}\""),
            )),
            None => Ok(()),
        };
        match raw.method {
            Method::Asha => only_for(&raw.min_trials, "min_trials", "median")?,
            Method::Median => only_for(&raw.reduction_factor, "reduction_factor", "asha")?,
        }
        let rule = EarlyStopping {
            method: raw.method,
            metric: raw
                .metric
                .as_ref()
                .map(|m| *m.get_ref())
                .unwrap_or_default(),
            grace_epochs: self.early_number(
                &raw.grace_epochs,
                "grace_epochs",
                1,
                sweep_proto::MAX_EPOCH as i64,
                early_stop::DEFAULT_GRACE,
            )?,
            reduction_factor: self.early_number(
                &raw.reduction_factor,
                "reduction_factor",
                2,
                100,
                early_stop::DEFAULT_REDUCTION,
            )?,
            min_trials: self.early_number(
                &raw.min_trials,
                "min_trials",
                1,
                HARD_MAX_TRIALS as i64,
                early_stop::DEFAULT_MIN_TRIALS,
            )?,
        };
        self.early_stopping_fits(&rule, raw, section, trials)?;
        Ok(Some(rule))
    }

    /// `early_stopping.KEY`: between `min` and `max`, `default` when absent.
    fn early_number(
        &self,
        v: &Option<Spanned<i64>>,
        key: &str,
        min: i64,
        max: i64,
        default: u32,
    ) -> Result<u32, SweepError> {
        match v {
            None => Ok(default),
            Some(n) if (min..=max).contains(n.get_ref()) => Ok(*n.get_ref() as u32),
            Some(n) => Err(self.err(
                Some(n.span()),
                format!(
                    "`early_stopping.{key}` = {} must be between {min} and {max}",
                    n.get_ref()
                ),
            )),
        }
    }

    /// The rule can judge the sweep's trials: they hold out a validation split, and at least
    /// one runs past the grace epochs.
    fn early_stopping_fits(
        &self,
        rule: &EarlyStopping,
        raw: &RawEarly,
        section: std::ops::Range<usize>,
        trials: &[PlannedTrial],
    ) -> Result<(), SweepError> {
        if let Some(t) = trials.iter().find(|t| t.spec.validation_split <= 0.0) {
            return Err(self.err(
                Some(raw.metric.as_ref().map_or(section.clone(), |m| m.span())),
                format!(
                    "`early_stopping` judges trials on {}, which needs a validation split; \
                     trial {} has validation_split = 0 (set it in [defaults])",
                    rule.metric.name(),
                    t.id
                ),
            ));
        }
        let longest = trials.iter().map(|t| t.spec.epochs).max().unwrap_or(0);
        if rule.rungs(longest).is_empty() {
            let at = raw
                .grace_epochs
                .as_ref()
                .map(|g| g.span())
                .unwrap_or(section);
            return Err(self.err(
                Some(at),
                format!(
                    "`early_stopping.grace_epochs` = {} is not below the longest trial's {longest} \
                     epoch(s): no trial could be stopped",
                    rule.grace_epochs
                ),
            ));
        }
        Ok(())
    }

    /// `keep_models` and `keep_best` (only with "best", 1 to 1000).
    fn keep_models(&self) -> Result<KeepModels, SweepError> {
        match (self.raw.keep_models, &self.raw.keep_best) {
            (Keep::Best, None) => Ok(KeepModels::default()),
            (Keep::Best, Some(n)) if (1..=1000).contains(n.get_ref()) => {
                Ok(KeepModels::Best(*n.get_ref() as u32))
            }
            (Keep::Best, Some(n)) => Err(self.err(
                Some(n.span()),
                format!("`keep_best` = {} must be between 1 and 1000", n.get_ref()),
            )),
            (_, Some(n)) => Err(self.err(
                Some(n.span()),
                "`keep_best` is only for keep_models = \"best\"".into(),
            )),
            (Keep::All, None) => Ok(KeepModels::All),
            (Keep::None, None) => Ok(KeepModels::None),
        }
    }

    /// `[checkpoints]`: each key a number of epochs or seconds in range (0 turns it off).
    fn checkpoints(&self) -> Result<CheckpointPolicy, SweepError> {
        let mut policy = CheckpointPolicy::default();
        let Some(raw) = &self.raw.checkpoints else {
            return Ok(policy);
        };
        let read =
            |v: &Option<Spanned<i64>>, key: &str, max: i64| -> Result<Option<u32>, SweepError> {
                match v {
                    None => Ok(None),
                    Some(n) if (0..=max).contains(n.get_ref()) => Ok(Some(*n.get_ref() as u32)),
                    Some(n) => Err(self.err(
                        Some(n.span()),
                        format!(
                            "`checkpoints.{key}` = {} must be between 0 (off) and {max}",
                            n.get_ref()
                        ),
                    )),
                }
            };
        if let Some(n) = read(
            &raw.every_epochs,
            "every_epochs",
            sweep_proto::MAX_EPOCH as i64,
        )? {
            policy.every_epochs = n;
            // Setting only the epochs means only the epochs.
            if raw.every_seconds.is_none() {
                policy.every_seconds = 0;
            }
        }
        if let Some(n) = read(&raw.every_seconds, "every_seconds", 7 * 24 * 3600)? {
            policy.every_seconds = n;
        }
        Ok(policy)
    }

    /// Stage 7: the axes (grid axes, then the fields includes set that really differ between
    /// the trials, in the order they first appear, then `seed` when repeats make it vary) and
    /// the dataset path.
    fn finish(self, trials: Vec<PlannedTrial>) -> Sweep {
        let mut axis_names: Vec<String> = self.axes.iter().map(|k| k.get_ref().clone()).collect();
        let resolved: Vec<serde_json::Value> = trials
            .iter()
            .map(|t| serde_json::to_value(&t.spec).unwrap_or_default())
            .collect();
        let mut include_keys: Vec<(usize, String)> = self
            .raw
            .include
            .iter()
            .flat_map(|inc| inc.keys().map(|k| (k.span().start, k.get_ref().clone())))
            .collect();
        include_keys.sort();
        for (_, k) in include_keys {
            let varies = resolved.iter().any(|v| v.get(&k) != resolved[0].get(&k));
            if k != LABEL && k != REPORTED && varies && !axis_names.contains(&k) {
                axis_names.push(k);
            }
        }
        if self.raw.repeats > 1 && !axis_names.iter().any(|a| a == "seed") {
            axis_names.push("seed".into());
        }
        let base = self.file.parent().unwrap_or(Path::new("."));
        Sweep {
            name: self.raw.name.into_inner(),
            file: self.file.to_path_buf(),
            data: self.raw.data.map(|d| {
                let d = d.into_inner();
                if d == FETCH {
                    PathBuf::from(FETCH)
                } else if let Some(dir) = d.strip_prefix(IMAGEFOLDER_PREFIX) {
                    PathBuf::from(format!("{IMAGEFOLDER_PREFIX}{}", base.join(dir).display()))
                } else {
                    base.join(d)
                }
            }),
            rank_by: self.raw.rank_by,
            direction: self.raw.direction,
            axes: axis_names,
            trials,
            early_stopping: None,
            checkpoints: Default::default(),
            keep_models: Default::default(),
            modules: Vec::new(),
            search: None,
            pbt: None,
            image_folder: None,
        }
    }
}

/// The planned trials: each configuration `repeats` times with seeds seed, seed + 1, ...; the
/// same configuration twice is one trial.
struct Plan {
    repeats: u32,
    trials: Vec<PlannedTrial>,
    seen: HashMap<sweep_proto::ids::TrialId, usize>,
}

impl Plan {
    fn new(repeats: u32) -> Plan {
        Plan {
            repeats,
            trials: Vec::new(),
            seen: HashMap::new(),
        }
    }

    fn push(&mut self, spec: TrialSpec, label: Option<String>, reported: Option<f64>) {
        for r in 0..self.repeats {
            let spec = TrialSpec {
                seed: spec.seed + r as u64,
                ..spec.clone()
            };
            let id = trial_id(&spec);
            match self.seen.get(&id) {
                // An include that repeats a grid combination lends it its label and reported
                // value.
                Some(&i) => {
                    let t = &mut self.trials[i];
                    t.label = t.label.take().or_else(|| label.clone());
                    t.reported = t.reported.or(reported);
                }
                None => {
                    self.seen.insert(id.clone(), self.trials.len());
                    self.trials.push(PlannedTrial {
                        id,
                        spec,
                        label: label.clone(),
                        reported,
                    });
                }
            }
        }
    }
}

fn inc_start(inc: &Entries) -> usize {
    inc.keys().map(|k| k.span().start).min().unwrap_or(0)
}

/// Deserialises a trial holding only `key = value`, so serde names the key or the type error.
fn check_entry(key: &str, value: &toml::Value) -> Result<(), String> {
    let mut table = toml::Table::new();
    table.insert(key.to_string(), value.clone());
    toml::Value::Table(table)
        .try_into::<TrialSpec>()
        .map(|_| ())
        .map_err(|e| e.message().to_string())
}

/// True when every key of `exclude` has the same value in `spec`.
fn matches(spec: &TrialSpec, exclude: &toml::Table) -> bool {
    let Ok(resolved) = toml::Table::try_from(spec) else {
        return false;
    };
    exclude.iter().all(|(k, v)| {
        // Compare through TrialSpec so that e.g. 1 and 1.0, or enum spellings, agree.
        let mut t = toml::Table::new();
        t.insert(k.clone(), v.clone());
        match toml::Value::Table(t)
            .try_into::<TrialSpec>()
            .ok()
            .and_then(|s| toml::Table::try_from(&s).ok())
        {
            Some(one) => one.get(k) == resolved.get(k),
            None => false,
        }
    })
}

fn grid_combinations(
    defaults: &toml::Table,
    axes: &[&Spanned<String>],
    grid: &Entries,
) -> Vec<toml::Table> {
    let mut combos = vec![defaults.clone()];
    for key in axes {
        let Some(toml::Value::Array(values)) = grid.get(*key).map(|v| v.get_ref()) else {
            continue;
        };
        combos = combos
            .into_iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.insert(key.get_ref().clone(), v.clone());
                    c
                })
            })
            .collect();
    }
    combos
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Range {
    min: toml::Value,
    max: toml::Value,
    #[serde(default)]
    log: bool,
}

fn random_samples(
    defaults: &toml::Table,
    axes: &[&Spanned<String>],
    grid: &Entries,
    samples: u32,
    seed: u64,
) -> Result<Vec<toml::Table>, (std::ops::Range<usize>, String)> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for _ in 0..samples {
        let mut t = defaults.clone();
        for key in axes {
            let value = &grid[*key];
            let v = match value.get_ref() {
                toml::Value::Array(items) => items[rng.random_range(0..items.len())].clone(),
                toml::Value::Table(range) => {
                    let r: Range = toml::Value::Table(range.clone()).try_into().map_err(
                        |e: toml::de::Error| {
                            (
                                value.span(),
                                format!("`grid.{}`: {}", key.get_ref(), e.message()),
                            )
                        },
                    )?;
                    sample_range(&r, &mut rng)
                        .map_err(|m| (value.span(), format!("`grid.{}`: {m}", key.get_ref())))?
                }
                _ => unreachable!("checked in parse"),
            };
            t.insert(key.get_ref().clone(), v);
        }
        out.push(t);
    }
    Ok(out)
}

/// A TOML number (integer or float) as a float.
fn number(v: &toml::Value) -> Option<f64> {
    match v {
        toml::Value::Integer(i) => Some(*i as f64),
        toml::Value::Float(f) => Some(*f),
        _ => None,
    }
}

fn sample_range(r: &Range, rng: &mut impl Rng) -> Result<toml::Value, String> {
    let (Some(lo), Some(hi)) = (number(&r.min), number(&r.max)) else {
        return Err("min and max must be numbers".into());
    };
    if lo.is_nan() || hi.is_nan() || lo > hi || (r.log && lo <= 0.0) {
        return Err(format!(
            "needs min <= max{}",
            if r.log { " and min > 0 for log" } else { "" }
        ));
    }
    // Integer ranges are sampled as integers: through f64, bounds near i64::MAX came back as
    // numbers the file never wrote.
    if let (toml::Value::Integer(a), toml::Value::Integer(b), false) = (&r.min, &r.max, r.log) {
        return Ok(toml::Value::Integer(rng.random_range(*a..=*b)));
    }
    let integers = matches!(
        (&r.min, &r.max),
        (toml::Value::Integer(_), toml::Value::Integer(_))
    );
    let x = if r.log {
        (rng.random_range(lo.ln()..=hi.ln())).exp()
    } else {
        rng.random_range(lo..=hi)
    };
    Ok(if integers {
        toml::Value::Integer(x.round().clamp(lo, hi) as i64)
    } else {
        toml::Value::Float(x)
    })
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

mod pbt;
mod space;
pub use pbt::describe as describe_pbt;
pub use space::{describe as describe_search, longest_epochs};

#[cfg(test)]
mod tests;
