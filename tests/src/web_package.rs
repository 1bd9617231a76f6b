//! The browser package (`edge-worker/browser`), built once per test run by
//! `edge-worker/browser/build.sh` into `target/wasm-js/kiln-web`, where `kiln serve` finds it.
//! A file lock keeps concurrent test processes from building it twice at once; cargo's
//! own freshness check makes later builds in the same run cheap.

use std::path::PathBuf;
use std::sync::OnceLock;

/// The directory holding `kiln_web.js` and `kiln_web_bg.wasm`, built if needed.
pub fn package_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(build).clone()
}

fn build() -> PathBuf {
    let target = crate::build_wasm_js(
        &crate::root().join("edge-worker/browser/build.sh"),
        ".kiln-web.lock",
        &[],
        "`rustup target add wasm32-unknown-unknown` and `cargo install wasm-bindgen-cli --version 0.2.130`",
    );
    let dir = target.join("kiln-web");
    assert!(
        dir.join("kiln_web_bg.wasm").is_file(),
        "no package in {}",
        dir.display()
    );
    dir
}
