//! Link fix-ups for libtorch, which tch leaves to the application:
//!
//! - tch adds no rpath, so a plain `cargo build` would produce a `worker` that only starts with
//!   LD_LIBRARY_PATH set. torch-sys (links key `tch`) exports the directory it linked against;
//!   bake it in as a RUNPATH. LD_LIBRARY_PATH still takes precedence, which is how a binary
//!   carried to another machine finds that machine's torch install.
//! - Nothing in the worker calls into libtorch_cuda directly, so the linker's default
//!   `--as-needed` drops it and CUDA would silently be unavailable. Keep it as a dependency.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    if Path::new(&dir).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
