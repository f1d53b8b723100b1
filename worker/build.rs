//! Link fix-ups for libtorch, which tch leaves to the application:
//!
//! - tch adds no rpath, so a plain `cargo build` would produce a `worker` that only starts with
//!   LD_LIBRARY_PATH set. torch-sys (links key `tch`) exports the directory it linked against;
//!   bake it in as a RUNPATH. LD_LIBRARY_PATH still takes precedence, which is how a binary
//!   carried to another machine finds that machine's torch install.
//! - Nothing in the worker calls into libtorch_cuda directly, so the linker's default
//!   `--as-needed` drops it and CUDA would silently be unavailable. Keep it as a dependency.
//! - `csrc/amp.cpp`: the bfloat16 autocast switch tch does not expose, compiled against the
//!   same libtorch headers (`<torch>/include`, next to the lib directory).

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    println!("cargo:rerun-if-changed=csrc/amp.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let torch = Path::new(&dir).parent().unwrap_or(Path::new(&dir));
    cc::Build::new()
        .cpp(true)
        .file("csrc/amp.cpp")
        .include(torch.join("include"))
        .include(torch.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!(
            "-D_GLIBCXX_USE_CXX11_ABI={}",
            std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into())
        ))
        .warnings(false)
        .compile("sweep_amp");
    if Path::new(&dir).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
