#![no_main]
//! `cargo +nightly fuzz run onnx_external`: see [`kiln_fuzz::onnx_external`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kiln_fuzz::onnx_external(data);
});
