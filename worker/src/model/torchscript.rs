//! The user's own models: TorchScript modules (`torch.jit.script` or `torch.jit.trace`, then
//! `.save()`), trained by this worker like a built-in model.
//!
//! Module files are content-addressed: a trial names one by [`ModuleHash`] (the first 16
//! bytes of the file's SHA-256), and workers keep the files they have in a cache directory
//! (`$SWEEP_MODULE_CACHE`, else `$XDG_CACHE_HOME/sweep-worker/modules`, else
//! `~/.cache/sweep-worker/modules`), filled from the coordinator (`FetchModule`) or, for
//! `worker train`, from the path the trial file names.
//!
//! Training: the module's parameters join the trial's `VarStore` (so the optimisers, the
//! schedule and weight decay treat them like any model's), its own initial weights are kept,
//! and its `train()`/`eval()` mode follows the trainer. Its buffers (batch-norm statistics)
//! live in the module, not in the `VarStore`: checkpoints and kept models carry the whole
//! module as TorchScript ([`Scripted::to_bytes`]), and a resumed trial loads it from there
//! ([`load_bytes`]).

use crate::model::Io;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use sweep_proto::module::{module_paths, read_module, substitute_modules};
use sweep_proto::ModuleHash;
use tch::nn::{self, ModuleT};
use tch::{CModule, Device, Kind, TchError, Tensor, TrainableCModule};

pub use sweep_proto::module::MAX_MODULE_BYTES;

/// Overrides where module files are cached.
pub const CACHE_ENV: &str = "SWEEP_MODULE_CACHE";

/// The directory module files are cached in.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    crate::data::user_cache_dir().join("modules")
}

/// Where the module with `hash` is (or would be) cached.
pub fn path_for(hash: ModuleHash) -> PathBuf {
    cache_dir().join(format!("{hash}.pt"))
}

/// Whether the module is in the cache (a file there is trusted: only [`store`] writes it,
/// after checking its hash, and it is renamed into place whole).
pub fn have(hash: ModuleHash) -> bool {
    path_for(hash).is_file()
}

/// Puts a module file's bytes in the cache; returns their hash. `expect`: the hash they must
/// have (a transfer from the coordinator).
pub fn store(bytes: &[u8], expect: Option<ModuleHash>) -> Result<ModuleHash, String> {
    let hash = ModuleHash::of(bytes);
    if let Some(want) = expect.filter(|&w| w != hash) {
        return Err(format!(
            "the module received has hash {hash}, not the trial's {want}: not used"
        ));
    }
    let path = path_for(hash);
    if path.is_file() {
        return Ok(hash);
    }
    let dir = cache_dir();
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot create the module cache {}: {e}", dir.display()))?;
    // Own name per writer (several local workers share the cache), created exclusively.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{hash}.{}.{n}.tmp", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| std::io::Write::write_all(&mut f, bytes))
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("cannot write {}: {e}", path.display())
        })?;
    Ok(hash)
}

/// Reads a module file the user named (`torchscript:PATH`) into the cache.
pub fn store_file(path: &Path) -> Result<ModuleHash, String> {
    let (_, bytes) = read_module(path).map_err(|e| format!("TorchScript module: {e}"))?;
    store(&bytes, None)
}

/// A loaded module whose `train`/`eval` mode follows `forward_t`'s flag. Clones share the
/// module (the trainer keeps one to save it).
#[derive(Debug, Clone)]
pub struct Scripted {
    module: Arc<Mutex<(TrainableCModule, Option<bool>)>>,
}

impl Scripted {
    /// The module as a TorchScript file, with its current parameters and buffers (what
    /// `torch.jit.load` and [`load_bytes`] read). It is saved in the mode it was last run in.
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        let guard = self
            .module
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        saved(|path| guard.0.save(path))
    }
}

/// What `save` writes, read back: libtorch saves modules to a path only, here a private
/// temporary file, removed afterwards.
fn saved(save: impl FnOnce(&Path) -> Result<(), TchError>) -> Result<Vec<u8>, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("cannot save the module: {e}"))?;
    let path = dir.path().join("module.pt");
    save(&path).map_err(|e| format!("cannot save the module: {}", first_line(&e)))?;
    std::fs::read(&path).map_err(|e| format!("cannot read the saved module: {e}"))
}

/// A module file made portable for a kept model: its tensors on the CPU (`torch.jit.load`
/// puts them on the device they were saved from, so a module trained on a GPU would not load
/// on a machine without one) and in eval mode.
pub fn portable(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut module = CModule::load_data_on_device(&mut Cursor::new(bytes), Device::Cpu)
        .map_err(|e| format!("cannot load the trained module: {}", first_line(&e)))?;
    module
        .f_set_eval()
        .map_err(|e| format!("the trained module: {}", first_line(&e)))?;
    saved(|path| module.save(path))
}

/// libtorch's messages run to a C++ backtrace: the first line says what failed.
fn first_line(e: &TchError) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

impl ModuleT for Scripted {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut guard = self
            .module
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (module, mode) = &mut *guard;
        if *mode != Some(train) {
            if train {
                module.set_train();
            } else {
                module.set_eval();
            }
            *mode = Some(train);
        }
        // A module that fails is a libtorch error like any other: the trial fails with it
        // (crate::train::trial_panic turns the panic into the reason).
        match module.forward_ts(&[xs]) {
            Ok(t) => t,
            Err(e) => panic!("the TorchScript module failed: {e}"),
        }
    }
}

/// Loads the cached module `hash` with its parameters under `vs`, and checks that it maps a
/// batch of `io` images to `[batch, io.classes]` before anything trains.
pub fn load(vs: &nn::Path, hash: ModuleHash, io: Io) -> Result<Scripted, String> {
    let path = path_for(hash);
    if !path.is_file() {
        return Err(format!(
            "TorchScript module {hash} is not in this worker's module cache ({}); workers fetch it from the coordinator, `worker train` reads the file the trial names",
            cache_dir().display()
        ));
    }
    let module = TrainableCModule::load(&path, vs.clone()).map_err(|e| {
        // A cached file that does not load is not kept: the next trial fetches it again.
        let _ = std::fs::remove_file(&path);
        format!("cannot load TorchScript module {hash}: {}", first_line(&e))
    })?;
    checked(
        module,
        vs.device(),
        io,
        &format!("TorchScript module {hash}"),
    )
}

/// Like [`load`], from a module's bytes ([`Scripted::to_bytes`] in a checkpoint).
pub fn load_bytes(vs: &nn::Path, bytes: &[u8], io: Io) -> Result<Scripted, String> {
    let module = TrainableCModule::load_data(&mut Cursor::new(bytes), vs.clone()).map_err(|e| {
        format!(
            "cannot load the saved TorchScript module: {}",
            first_line(&e)
        )
    })?;
    checked(module, vs.device(), io, "the saved TorchScript module")
}

/// A kept model's module in eval mode, for inference only (`worker eval`, `worker predict`).
#[derive(Debug)]
pub struct Frozen(CModule);

impl ModuleT for Frozen {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        match self.0.forward_ts(&[xs]) {
            Ok(t) => t,
            Err(e) => panic!("the TorchScript module failed: {}", first_line(&e)),
        }
    }
}

/// Loads a kept model's module onto `device`, once it maps a probe batch of `io` images to
/// `[2, io.classes]` logits.
pub fn load_frozen(bytes: &[u8], device: Device, io: Io) -> Result<Frozen, String> {
    let mut module =
        CModule::load_data_on_device(&mut Cursor::new(bytes), device).map_err(|e| {
            format!(
                "cannot load the model's TorchScript module: {}",
                first_line(&e)
            )
        })?;
    module
        .f_set_eval()
        .map_err(|e| format!("the model's TorchScript module: {}", first_line(&e)))?;
    probe(
        |x| module.forward_ts(&[x]).map_err(|e| first_line(&e)),
        device,
        io,
        "the model's TorchScript module",
    )?;
    Ok(Frozen(module))
}

/// The module wrapped for the trainer, once it maps a probe batch of `io` images to
/// `[2, io.classes]` logits.
fn checked(
    module: TrainableCModule,
    device: Device,
    io: Io,
    what: &str,
) -> Result<Scripted, String> {
    let scripted = Scripted {
        module: Arc::new(Mutex::new((module, None))),
    };
    probe(
        |x| crate::train::trial_panic::catch(|| scripted.forward_t(x, false)),
        device,
        io,
        what,
    )?;
    Ok(scripted)
}

/// Checks that `forward` maps a `[2, C, S, S]` batch of `io` images to `[2, io.classes]`
/// logits; the error names `what` and both shapes.
fn probe(
    forward: impl FnOnce(&Tensor) -> Result<Tensor, String>,
    device: Device,
    io: Io,
    what: &str,
) -> Result<(), String> {
    let batch = Tensor::zeros([2, io.channels, io.size, io.size], (Kind::Float, device));
    let shape = {
        let _guard = tch::no_grad_guard();
        forward(&batch).map(|t| t.size())
    }
    .map_err(|e| {
        format!(
            "{what} cannot take a [2, {}, {}, {}] batch of images: {e}",
            io.channels, io.size, io.size
        )
    })?;
    if shape != [2, io.classes] {
        return Err(format!(
            "{what} maps a [2, {c}, {s}, {s}] batch to {shape:?}, but the dataset has {classes} classes: it must return [batch, {classes}] logits",
            c = io.channels,
            s = io.size,
            classes = io.classes
        ));
    }
    Ok(())
}

/// A trial file's text with `model = "torchscript:PATH"` resolved: the file (PATH relative to
/// `base`) is put in the module cache and the value becomes `torchscript:<hash>`. Other
/// texts come back unchanged; syntax errors are left for the trial's own parser to report.
pub fn resolve_trial_text(text: &str, base: &Path) -> Result<String, String> {
    let mut resolved = Vec::new();
    for value in module_paths(text) {
        let hash = store_file(&base.join(&value[sweep_proto::TORCHSCRIPT_PREFIX.len()..]))?;
        resolved.push((value, hash));
    }
    if resolved.is_empty() {
        return Ok(text.to_string());
    }
    // Replaced in the text, so errors keep their lines; where the value is written otherwise
    // (escapes), the table is written out again instead.
    substitute_modules(text, &resolved).or_else(|_| {
        let mut table: toml::Table = text.parse().map_err(|e| format!("{e}"))?;
        if let Some(toml::Value::String(model)) = table.get("model") {
            if let Some((_, hash)) = resolved.iter().find(|(w, _)| w == model) {
                let value = format!("{}{hash}", sweep_proto::TORCHSCRIPT_PREFIX);
                table.insert("model".into(), toml::Value::String(value));
            }
        }
        Ok(table.to_string())
    })
}

/// Points this test binary's module cache at one private directory, once (tests run on
/// several threads: each setting its own would race).
#[cfg(test)]
pub(crate) fn test_cache() {
    static CACHE: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| {
        let cache = tempfile::tempdir().unwrap();
        std::env::set_var(CACHE_ENV, cache.path());
        cache
    });
}

/// `examples/own-model`'s SmallResNet exported by its export.py (with the workspace's .venv,
/// which libtorch comes from) into `dir`, with [`test_cache`] set up.
#[cfg(test)]
pub(crate) fn test_module(dir: &Path, classes: u32) -> PathBuf {
    test_cache();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = dir.join("small_resnet.pt");
    let o = std::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join("examples/own-model/export.py"))
        .arg(&out)
        .args(["--classes", &classes.to_string()])
        .output()
        .expect("run .venv/bin/python (scripts/setup-libtorch.sh makes it)");
    assert!(
        o.status.success(),
        "export.py: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kept module whose output does not fit the model's classes is an error naming both
    /// shapes, before `worker eval` or `worker predict` runs it; one that fits loads in eval
    /// mode.
    #[test]
    fn a_kept_module_is_probed_before_use() {
        let dir = tempfile::tempdir().unwrap();
        let seven = std::fs::read(test_module(dir.path(), 7)).unwrap();
        let io = |classes| Io {
            channels: 3,
            size: 32,
            classes,
        };
        let err = load_frozen(&seven, Device::Cpu, io(10)).unwrap_err();
        assert!(
            err.contains("[2, 7]") && err.contains("10 classes"),
            "{err}"
        );
        let err = load_frozen(b"not a module", Device::Cpu, io(7)).unwrap_err();
        assert!(err.contains("cannot load"), "{err}");
        let frozen = load_frozen(&seven, Device::Cpu, io(7)).unwrap();
        let x = Tensor::zeros([3, 3, 32, 32], (Kind::Float, Device::Cpu));
        assert_eq!(frozen.forward_t(&x, true).size(), [3, 7]);
    }

    #[test]
    fn trial_files_name_modules_by_path_and_get_their_hash() {
        test_cache();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("net.pt"), b"pretend module").unwrap();
        let text = "epochs = 1\nmodel = \"torchscript:net.pt\"\n";
        let out = resolve_trial_text(text, dir.path()).unwrap();
        let hash = ModuleHash::of(b"pretend module");
        assert_eq!(out, format!("epochs = 1\nmodel = \"torchscript:{hash}\"\n"));
        assert!(have(hash));
        let spec = sweep_proto::TrialSpec::from_toml(&out).unwrap();
        assert_eq!(spec.model, sweep_proto::Model::TorchScript(hash));
        // A commented-out line with the same value is not the one resolved.
        let commented = "# model = \"torchscript:net.pt\"\nmodel = \"torchscript:net.pt\"\n";
        let out2 = resolve_trial_text(commented, dir.path()).unwrap();
        let spec = sweep_proto::TrialSpec::from_toml(&out2).unwrap();
        assert_eq!(spec.model, sweep_proto::Model::TorchScript(hash));
        // Unchanged: built-in models, resolved hashes.
        assert_eq!(
            resolve_trial_text("model = \"dense\"", dir.path()).unwrap(),
            "model = \"dense\""
        );
        assert_eq!(resolve_trial_text(&out, dir.path()).unwrap(), out);
        let err = resolve_trial_text("model = \"torchscript:missing.pt\"", dir.path()).unwrap_err();
        assert!(err.contains("missing.pt"), "{err}");
        // A transfer with the wrong content is refused.
        let err = store(b"other bytes", Some(hash)).unwrap_err();
        assert!(err.contains(&hash.to_string()), "{err}");
    }
}
