//! Embeds the run-time search path of the shared libpackkv (DEP_PACKKV_LIB_DIR, passed on by
//! packkv-sys, a direct dependency for this reason) in the example binary, so that
//! `cargo run` works without LD_LIBRARY_PATH. Copy this into your own binary crate if it links
//! the shared library from outside a standard library directory.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_PACKKV_LIB_DIR");
    if let Ok(dir) = std::env::var("DEP_PACKKV_LIB_DIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
