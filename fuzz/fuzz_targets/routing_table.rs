#![no_main]
//! `cargo +nightly fuzz run routing_table`: see [`kiln_fuzz::routing_table`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kiln_fuzz::routing_table(data);
});
