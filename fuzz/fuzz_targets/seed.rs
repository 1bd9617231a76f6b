#![no_main]
//! `cargo +nightly fuzz run seed`: see [`kiln_fuzz::seed`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kiln_fuzz::seed(data);
});
