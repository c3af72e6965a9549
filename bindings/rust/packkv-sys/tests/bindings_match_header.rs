//! Drift check: regenerating the bindings from include/packkv/packkv.h with the pinned
//! bindgen must reproduce src/bindings.rs byte for byte. On failure, run
//! `scripts/gen-rust-bindings.sh` and commit the result (and review the safe crate).
use std::path::PathBuf;
use std::process::Command;

#[test]
fn bindings_match_header() {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.join("../../..");
    let script = root.join("scripts/gen-rust-bindings.sh");
    let header = root.join("include/packkv/packkv.h");
    if !script.exists() || !header.exists() {
        // A packaged crate (outside the libpackkv checkout) has nothing to regenerate from.
        eprintln!("bindings_match_header: not inside a libpackkv checkout; nothing to check");
        return;
    }
    let tmp = std::env::temp_dir();
    let out = tmp.join(format!("packkv-bindings-{}.rs", std::process::id()));
    let out_x = tmp.join(format!("packkv-experimental-{}.rs", std::process::id()));
    let status = Command::new("bash")
        .arg(&script)
        .arg(&out)
        .arg(&out_x)
        .status()
        .expect("cannot run bash scripts/gen-rust-bindings.sh");
    assert!(status.success(), "scripts/gen-rust-bindings.sh failed (is bindgen 0.60.1 installed?)");
    for (fresh_path, committed_name, header) in
        [(&out, "bindings.rs", "packkv.h"), (&out_x, "experimental.rs", "packkv_experimental.h")]
    {
        let fresh = std::fs::read_to_string(fresh_path).expect("read regenerated bindings");
        let _ = std::fs::remove_file(fresh_path);
        let committed = std::fs::read_to_string(manifest.join("src").join(committed_name))
            .expect("read the committed bindings");
        if fresh != committed {
            let line = fresh
                .lines()
                .zip(committed.lines())
                .position(|(a, b)| a != b)
                .map(|i| i + 1)
                .unwrap_or_else(|| fresh.lines().count().min(committed.lines().count()) + 1);
            panic!(
                "packkv-sys/src/{committed_name} is out of date with include/packkv/{header} (first \
                 difference at line {line}); run scripts/gen-rust-bindings.sh and commit the result"
            );
        }
    }
}
