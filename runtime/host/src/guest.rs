//! The guest components built by `build.rs` and embedded in the binary.

/// The generic Kiln model component (tract for wasm32-wasip2 with simd128), before
/// pre-initialization: `kiln compile` snapshots a model into it.
pub const GUEST_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kiln_guest.wasm"));

/// A misbehaving component for tests and sandbox checks (spins, hogs memory, traps).
pub const TEST_GUEST_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kiln_test_guests.wasm"));
