//! Link fix-ups for libtorch, which tch leaves to the application:
//!
//! - tch adds no rpath, so a plain `cargo build` would produce a `worker` that only starts with
//!   LD_LIBRARY_PATH set. torch-sys (links key `tch`) exports the directory it linked against;
//!   bake it in as a RUNPATH. LD_LIBRARY_PATH still takes precedence, which is how a binary
//!   carried to another machine finds that machine's torch install.
//! - Nothing in the worker calls into libtorch_cuda directly, so the linker's default
//!   `--as-needed` drops it and CUDA would silently be unavailable. Keep it as a dependency
//!   when the libtorch linked against has it. `SWEEP_WORKER_CUDA` overrides: `0` links no CUDA
//!   library even when there is one (the CPU image, deploy/docker/worker.Dockerfile), `1` fails
//!   the build when libtorch_cuda.so is missing (the CUDA image). A worker built without CUDA
//!   is compiled with `cfg(sweep_without_cuda)`, so `--device cuda` can say why it is refused.
//! - `csrc/amp.cpp`: the bfloat16 autocast switch tch does not expose, compiled against the
//!   same libtorch headers (`<torch>/include`, next to the lib directory).

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=SWEEP_WORKER_CUDA");
    println!("cargo::rustc-check-cfg=cfg(sweep_without_cuda)");
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
    let has_cuda = Path::new(&dir).join("libtorch_cuda.so").exists();
    let link_cuda = match std::env::var("SWEEP_WORKER_CUDA").as_deref() {
        Ok("0") => false,
        Ok("1") if !has_cuda => panic!("SWEEP_WORKER_CUDA=1 but {dir} has no libtorch_cuda.so"),
        _ => has_cuda,
    };
    if link_cuda {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    } else {
        println!("cargo:rustc-cfg=sweep_without_cuda");
    }
}
