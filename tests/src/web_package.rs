//! The browser package (`guest-models/web`), built once per test run by
//! `guest-models/web/build.sh` into `target/wasm-js/kiln-web`, where `kiln serve` finds it.
//! A file lock keeps concurrent test processes from building it twice at once; cargo's
//! own freshness check makes later builds in the same run cheap.

use std::fs::File;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The directory holding `kiln_web.js` and `kiln_web_bg.wasm`, built if needed.
pub fn package_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(build).clone()
}

fn build() -> PathBuf {
    let root = crate::root();
    let target = root.join("target").join("wasm-js");
    std::fs::create_dir_all(&target).expect("creating target/wasm-js");
    let lock = File::create(target.join(".kiln-web.lock")).expect("creating the build lock");
    lock.lock().expect("locking the browser package build");
    let out = Command::new("bash")
        .arg(root.join("guest-models/web/build.sh"))
        .current_dir(&root)
        // The test harness runs under cargo: do not leak its variables into the nested
        // build (a different RUSTFLAGS would rebuild tract for wasm from scratch).
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .expect("running guest-models/web/build.sh");
    let _ = lock.unlock();
    assert!(
        out.status.success(),
        "building the browser package failed (needs `rustup target add wasm32-unknown-unknown` and \
         `cargo install wasm-bindgen-cli --version 0.2.130`):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = target.join("kiln-web");
    assert!(
        dir.join("kiln_web_bg.wasm").is_file(),
        "no package in {}",
        dir.display()
    );
    dir
}
