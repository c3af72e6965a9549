//! Finds libpackkv for packkv-sys, using only the standard library.
//!
//! Search order (the first that applies wins):
//! 1. Environment: `PACKKV_LIB_DIR` (directory of libpackkv.so / libpackkv.a) and optionally
//!    `PACKKV_INCLUDE_DIR`; `PACKKV_STATIC=1` links libpackkv.a. Each may be prefixed with the
//!    target triple, e.g. `X86_64_UNKNOWN_LINUX_GNU_PACKKV_LIB_DIR` (openssl-sys style).
//! 2. The CMake build trees of this checkout (`<repo>/build`, `<repo>/build-cpu`, the
//!    CMakePresets.json binary dirs), then the install prefixes `/usr/local` and `/usr`.
//! 3. Feature `vendored`: configures and builds libpackkv from this checkout with `cmake`
//!    (CPU-only unless `PACKKV_ENABLE_CUDA` says otherwise) into OUT_DIR and links it statically.
//! 4. Otherwise the build fails with a message listing these options.
//!
//! Emits `cargo:include=<dir>` and `cargo:lib_dir=<dir>` for dependent build scripts
//! (DEP_PACKKV_INCLUDE / DEP_PACKKV_LIB_DIR). Static linking also links the C++ runtime, rt,
//! dl, pthread, m and, when found (`CUDA_PATH`/`CUDA_HOME` or /usr/local/cuda), cudart_static.
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Reads `<TARGET>_<name>` then `<name>`, registering both for rerun.
fn env_var(name: &str) -> Option<String> {
    let target = env::var("TARGET").unwrap_or_default().to_uppercase().replace('-', "_");
    let prefixed = format!("{target}_{name}");
    println!("cargo:rerun-if-env-changed={prefixed}");
    println!("cargo:rerun-if-env-changed={name}");
    env::var(&prefixed).ok().or_else(|| env::var(name).ok()).filter(|v| !v.is_empty())
}

fn lib_file(dir: &Path, static_link: bool) -> PathBuf {
    dir.join(if static_link { "libpackkv.a" } else { "libpackkv.so" })
}

/// The checkout root (packkv-sys lives in <root>/bindings/rust/packkv-sys).
fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    manifest.join("../../..")
}

/// Default locations: build trees of this checkout, then install prefixes.
fn search_defaults(static_link: bool) -> Option<(PathBuf, PathBuf)> {
    let root = repo_root();
    for build in ["build", "build-cpu", "build-debug"] {
        let dir = root.join(build);
        if lib_file(&dir, static_link).exists() && root.join("include/packkv/packkv.h").exists() {
            return Some((dir, root.join("include")));
        }
    }
    for prefix in ["/usr/local", "/usr"] {
        for libdir in ["lib", "lib64", "lib/x86_64-linux-gnu", "lib/aarch64-linux-gnu"] {
            let dir = Path::new(prefix).join(libdir);
            if lib_file(&dir, static_link).exists() {
                return Some((dir, Path::new(prefix).join("include")));
            }
        }
    }
    None
}

/// Feature `vendored`: cmake configure + build of libpackkv.a into OUT_DIR.
fn build_vendored() -> (PathBuf, PathBuf) {
    let root = repo_root();
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("packkv-build");
    let cuda = env_var("PACKKV_ENABLE_CUDA").unwrap_or_else(|| "OFF".to_string());
    let run = |args: &[&str]| {
        let status = Command::new("cmake")
            .args(args)
            .status()
            .unwrap_or_else(|e| panic!("packkv-sys (vendored): cannot run cmake: {e}"));
        assert!(status.success(), "packkv-sys (vendored): cmake {args:?} failed");
    };
    let src = root.to_string_lossy().into_owned();
    let bin = out.to_string_lossy().into_owned();
    run(&[
        "-S", &src, "-B", &bin,
        "-DCMAKE_BUILD_TYPE=Release",
        "-DPACKKV_BUILD_STATIC=ON",
        "-DPACKKV_BUILD_TESTS=OFF",
        "-DPACKKV_BUILD_EXAMPLES=OFF",
        "-DPACKKV_BUILD_BENCH=OFF",
        &format!("-DPACKKV_ENABLE_CUDA={cuda}"),
    ]);
    run(&["--build", &bin, "--target", "packkv_static", "--parallel"]);
    println!("cargo:rerun-if-changed={}", root.join("src").display());
    println!("cargo:rerun-if-changed={}", root.join("include").display());
    (out, root.join("include"))
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let vendored = env::var_os("CARGO_FEATURE_VENDORED").is_some();
    let static_link = vendored
        || env::var_os("CARGO_FEATURE_STATIC").is_some()
        || env_var("PACKKV_STATIC").map(|v| v != "0").unwrap_or(false);

    let (lib_dir, include_dir) = if let Some(dir) = env_var("PACKKV_LIB_DIR") {
        let dir = PathBuf::from(dir);
        if !lib_file(&dir, static_link).exists() {
            panic!(
                "packkv-sys: PACKKV_LIB_DIR={} does not contain {}",
                dir.display(),
                lib_file(&dir, static_link).display()
            );
        }
        let inc = env_var("PACKKV_INCLUDE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.join("../include"));
        (dir, inc)
    } else if vendored {
        build_vendored()
    } else if let Some(found) = search_defaults(static_link) {
        found
    } else {
        panic!(
            "packkv-sys: libpackkv not found. Either\n  \
             1. set PACKKV_LIB_DIR=<dir with libpackkv.so> (and PACKKV_INCLUDE_DIR, PACKKV_STATIC=1 \
             for libpackkv.a), or\n  \
             2. build it in this checkout: cmake --preset cpu && cmake --build build-cpu \
             (or install it into /usr/local), or\n  \
             3. enable the `vendored` feature to build it with cmake."
        );
    };

    println!("cargo:rustc-link-search=native={}", lib_dir.display());
    if static_link {
        println!("cargo:rustc-link-lib=static=packkv");
        let cuda_dirs = ["CUDA_PATH", "CUDA_HOME"]
            .iter()
            .filter_map(|v| env_var(v))
            .map(|p| PathBuf::from(p).join("lib64"))
            .chain([PathBuf::from("/usr/local/cuda/lib64")]);
        for dir in cuda_dirs {
            if dir.join("libcudart_static.a").exists() {
                println!("cargo:rustc-link-search=native={}", dir.display());
                println!("cargo:rustc-link-lib=static=cudart_static");
                break;
            }
        }
        for lib in ["stdc++", "rt", "dl", "pthread", "m"] {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
    } else {
        println!("cargo:rustc-link-lib=dylib=packkv");
        // For this crate's own tests; dependents get lib_dir through DEP_PACKKV_LIB_DIR.
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    }
    println!("cargo:include={}", include_dir.display());
    println!("cargo:lib_dir={}", lib_dir.display());
}
