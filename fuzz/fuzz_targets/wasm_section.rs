#![no_main]
//! `cargo +nightly fuzz run wasm_section`: see [`kiln_fuzz::wasm_section`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kiln_fuzz::wasm_section(data);
});
