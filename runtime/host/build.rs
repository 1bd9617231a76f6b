//! Builds the guest components (wasm32-wasip2) once and hands their paths to the crate,
//! like wasmtime's test-programs: the generic Kiln guest is embedded in the `kiln` binary
//! so users need no Rust toolchain or wasm target to compile models.
//!
//! `KILN_GUEST_WASM` / `KILN_TEST_GUEST_WASM` may point at prebuilt components instead.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .ancestors()
        .nth(2)
        .expect("runtime/host lives two levels below the workspace root")
        .to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));

    for dir in [
        "guest-models/wit",
        "guest-models/types/src",
        "guest-models/types/Cargo.toml",
        "guest-models/engine/src",
        "guest-models/engine/Cargo.toml",
        "guest-models/guest",
        "guest-models/test-programs",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!("cargo:rerun-if-env-changed=KILN_GUEST_WASM");
    println!("cargo:rerun-if-env-changed=KILN_TEST_GUEST_WASM");

    let guest = prebuilt("KILN_GUEST_WASM").unwrap_or_else(|| build(&root, "kiln-guest", "kiln_guest"));
    let test_guest = prebuilt("KILN_TEST_GUEST_WASM")
        .unwrap_or_else(|| build(&root, "kiln-test-guests", "kiln_test_guests"));
    let copy = |from: &Path, to: &str| {
        std::fs::copy(from, out_dir.join(to)).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
    };
    copy(&guest, "kiln_guest.wasm");
    copy(&test_guest, "kiln_test_guests.wasm");
}

fn prebuilt(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).map(PathBuf::from)
}

/// Builds one guest crate for wasm32-wasip2 with SIMD, in its own target dir so the nested
/// cargo does not wait on the outer build's lock.
fn build(root: &Path, package: &str, artifact: &str) -> PathBuf {
    let target_dir = root.join("target").join("guest");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--release", "--target", "wasm32-wasip2", "-p", package])
        .arg("--target-dir")
        .arg(&target_dir)
        // Debug info would only bloat the component and slow every compile of it. Fat LTO
        // with one codegen unit made tract in wasm 15-20 % faster and halved the fresh
        // instance's first prediction (docs/benchmarks.md), for ~5 more minutes of build.
        .args(["--config", "profile.release.debug=false"])
        .args(["--config", "profile.release.strip=\"debuginfo\""])
        .args(["--config", "profile.release.lto=\"fat\""])
        .args(["--config", "profile.release.codegen-units=1"])
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+simd128");
    // Variables cargo sets for this build script must not leak into the nested build.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("CARGO_FEATURE_")
            || key.starts_with("CARGO_CFG_")
            || key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || [
                "RUSTFLAGS",
                "RUSTC_WORKSPACE_WRAPPER",
                "CARGO_TARGET_DIR",
                "CARGO_BUILD_TARGET",
                "CARGO_MAKEFLAGS",
                "TARGET",
                "HOST",
                "OPT_LEVEL",
                "PROFILE",
                "DEBUG",
                "OUT_DIR",
                "NUM_JOBS",
                "RUSTC_LINKER",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&key.as_str())
        {
            cmd.env_remove(&key);
        }
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running cargo for {package}: {e}"));
    if !status.success() {
        panic!(
            "building the {package} component failed; it needs the wasm32-wasip2 target: `rustup target add wasm32-wasip2`"
        );
    }
    target_dir
        .join("wasm32-wasip2")
        .join("release")
        .join(format!("{artifact}.wasm"))
}
