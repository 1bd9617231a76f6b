#![no_main]
//! `cargo +nightly fuzz run kiln_toml`: see [`kiln_fuzz::kiln_toml`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kiln_fuzz::kiln_toml(data);
});
