//! Embeds the run-time search path of the shared libpackkv in this crate's own test and
//! example binaries. packkv-sys's build script adds it only to packkv-sys's own targets
//! (cargo applies `rustc-link-arg` to the package that prints it); it passes the directory
//! on as DEP_PACKKV_LIB_DIR to direct dependents, like this crate. A binary of yours that
//! links the shared library outside a standard library directory needs the same three
//! lines in its build.rs (and packkv-sys as a direct dependency): see examples/rust.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_PACKKV_LIB_DIR");
    if let Ok(dir) = std::env::var("DEP_PACKKV_LIB_DIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
