//! The user's TorchScript modules as trial and sweep files name them: `model =
//! "torchscript:PATH"` is resolved to `torchscript:<hash>` by whoever reads the file (the
//! coordinator for sweeps, `worker train` for trial files), with the same rules on both sides.

use crate::trial::{ModuleHash, TORCHSCRIPT_PREFIX};
use std::path::Path;

/// Largest TorchScript module file accepted, from a path or over the wire.
pub const MAX_MODULE_BYTES: u64 = 512 << 20;

/// Reads a module file: its hash and bytes. The error names the path, or the size over the
/// limit.
pub fn read_module(path: &Path) -> Result<(ModuleHash, Vec<u8>), String> {
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let size = std::fs::metadata(path).map_err(cannot)?.len();
    if size > MAX_MODULE_BYTES {
        return Err(format!(
            "{}: {size} bytes, above the {} MiB limit for TorchScript modules",
            path.display(),
            MAX_MODULE_BYTES >> 20
        ));
    }
    let bytes = std::fs::read(path).map_err(cannot)?;
    Ok((ModuleHash::of(&bytes), bytes))
}

/// The `torchscript:PATH` values under `model` keys anywhere in a TOML text that are paths
/// (not yet hashes), each once, in the order met. A text that does not parse has none (its
/// parser reports the syntax error, with its place).
pub fn module_paths(text: &str) -> Vec<String> {
    fn collect(v: &toml::Value, under_model: bool, out: &mut Vec<String>) {
        match v {
            toml::Value::String(s) if under_model => {
                let rest = s.strip_prefix(TORCHSCRIPT_PREFIX);
                if rest.is_some_and(|r| ModuleHash::from_hex(r).is_none()) && !out.contains(s) {
                    out.push(s.clone());
                }
            }
            toml::Value::Array(items) => {
                for item in items {
                    collect(item, under_model, out);
                }
            }
            toml::Value::Table(t) => {
                for (k, item) in t {
                    collect(item, k == "model", out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(table) = text.parse::<toml::Table>() {
        collect(&toml::Value::Table(table), false, &mut out);
    }
    out
}

/// `text` with every quoted occurrence of each written value replaced by
/// `torchscript:<hash>`, in the text itself so that later errors keep their lines. `Err`
/// names a value still unresolved afterwards (written with escapes, or across lines).
pub fn substitute_modules(text: &str, resolved: &[(String, ModuleHash)]) -> Result<String, String> {
    let mut out = text.to_string();
    for (written, hash) in resolved {
        let literal = format!("\"{TORCHSCRIPT_PREFIX}{hash}\"");
        for q in ['"', '\''] {
            out = out.replace(&format!("{q}{written}{q}"), &literal);
        }
    }
    match module_paths(&out).into_iter().next() {
        Some(left) => Err(left),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_found_under_model_keys_and_replaced_by_their_hash() {
        let text = "# model = \"torchscript:a.pt\"\n[defaults]\nmodel = \"torchscript:a.pt\"\n\
                    [grid]\nmodel = ['torchscript:b.pt', \"dense\", \"torchscript:a.pt\"]\n\
                    label = \"torchscript:c.pt\"\n";
        assert_eq!(module_paths(text), ["torchscript:a.pt", "torchscript:b.pt"]);
        let (a, b) = (ModuleHash::of(b"a"), ModuleHash::of(b"b"));
        let out = substitute_modules(
            text,
            &[
                ("torchscript:a.pt".into(), a),
                ("torchscript:b.pt".into(), b),
            ],
        )
        .unwrap();
        assert!(module_paths(&out).is_empty());
        assert!(
            out.contains(&format!("model = \"torchscript:{a}\"")),
            "{out}"
        );
        assert!(
            out.contains(&format!("[\"torchscript:{b}\", \"dense\"")),
            "{out}"
        );
        assert!(
            out.contains("label = \"torchscript:c.pt\""),
            "not a model: {out}"
        );
        // Escaped: not found verbatim, so named as left over.
        let escaped = "model = \"torchscript:dir\\\\a.pt\"\n";
        let left = substitute_modules(escaped, &[(module_paths(escaped)[0].clone(), a)]);
        assert_eq!(left, Err("torchscript:dir\\a.pt".to_string()));
    }
}
