#![no_main]
//! `cargo +nightly fuzz run oip`: see [`kiln_fuzz::oip`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kiln_fuzz::oip(data);
});
