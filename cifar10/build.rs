//! With the `libjpeg` feature (the worker's), JPEGs are decoded by the system's libjpeg-turbo
//! through `csrc/jpeg.c`, as PIL decodes them; linked statically where `libjpeg.a` exists, so
//! the binary needs nothing at run time. Where the headers are missing, the build says so and
//! falls back to the pure-Rust decoder (cfg `sweep_libjpeg` unset).

fn main() {
    println!("cargo:rustc-check-cfg=cfg(sweep_libjpeg)");
    println!("cargo:rerun-if-changed=csrc/jpeg.c");
    if std::env::var_os("CARGO_FEATURE_LIBJPEG").is_none() {
        return;
    }
    // Are libjpeg's headers here? (A probe, so that a mistake in csrc/jpeg.c itself fails
    // the build instead of quietly falling back.)
    let out = std::env::var("OUT_DIR").unwrap_or_default();
    let probe = std::path::Path::new(&out).join("probe.c");
    let _ = std::fs::write(
        &probe,
        "#include <stdio.h>\n#include <jpeglib.h>\nint sweep_probe(void) { return JPEG_LIB_VERSION; }\n",
    );
    let found = cc::Build::new()
        .file(&probe)
        .warnings(false)
        .cargo_metadata(false)
        .try_compile("sweepjpegprobe");
    if let Err(e) = found {
        println!(
            "cargo:warning=libjpeg headers not found ({e}); JPEGs will decode with the pure-Rust decoder, whose pixels differ slightly from PIL's. Install libjpeg62-turbo-dev (Debian) or libjpeg-turbo-devel and rebuild."
        );
        return;
    }
    cc::Build::new()
        .file("csrc/jpeg.c")
        .cargo_metadata(false)
        .compile("sweepjpeg");
    println!("cargo:rustc-link-search=native={out}");
    println!("cargo:rustc-link-lib=static=sweepjpeg");
    let static_lib = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
    ]
    .iter()
    .find(|d| std::path::Path::new(d).join("libjpeg.a").is_file());
    match static_lib {
        Some(dir) => {
            println!("cargo:rustc-link-search=native={dir}");
            println!("cargo:rustc-link-lib=static=jpeg");
        }
        None => println!("cargo:rustc-link-lib=jpeg"),
    }
    println!("cargo:rustc-cfg=sweep_libjpeg");
}
