//! The AOT cache: a cached component is memory-mapped, never recompiled; a corrupt
//! artifact is recompiled, not trusted.

use kiln_host::aot_cache::{AotCache, CacheOutcome};
use kiln_host::guest::TEST_GUEST_WASM;
use kiln_host::{Host, HostConfig};

#[test]
fn a_cached_component_is_loaded_not_recompiled_and_corruption_is_survived() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::new(HostConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..HostConfig::default()
    })
    .unwrap();
    let (_, d, first) = host.compile_component(TEST_GUEST_WASM).unwrap();
    assert_eq!(first, CacheOutcome::Compiled);
    assert_eq!(d, kiln_types::digest(TEST_GUEST_WASM));
    let (_, _, second) = host.compile_component(TEST_GUEST_WASM).unwrap();
    assert_eq!(second, CacheOutcome::Hit);

    // Another host with the same settings shares the artifact.
    let other = Host::new(HostConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..HostConfig::default()
    })
    .unwrap();
    assert_eq!(
        other.compile_component(TEST_GUEST_WASM).unwrap().2,
        CacheOutcome::Hit
    );

    let cache = AotCache::new(host.engine(), Some(dir.path().to_path_buf()));
    let path = cache.path_for(&d).unwrap();
    std::fs::write(&path, b"garbage").unwrap();
    let (_, _, third) = host.compile_component(TEST_GUEST_WASM).unwrap();
    assert_eq!(third, CacheOutcome::Compiled, "a corrupt artifact is recompiled");
    assert_eq!(
        host.compile_component(TEST_GUEST_WASM).unwrap().2,
        CacheOutcome::Hit
    );
}

#[test]
fn the_cache_key_changes_with_code_generation_settings() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = Host::new(HostConfig {
        cache_dir: Some(dir.path().into()),
        ..HostConfig::default()
    })
    .unwrap();
    let mut other = wasmtime::Config::new();
    other.cranelift_opt_level(wasmtime::OptLevel::None);
    let other = wasmtime::Engine::new(&other).unwrap();
    let a = AotCache::new(kiln.engine(), Some(dir.path().into()))
        .path_for("x")
        .unwrap();
    let b = AotCache::new(&other, Some(dir.path().into()))
        .path_for("x")
        .unwrap();
    assert_ne!(
        a, b,
        "artifacts of engines that generate different code must not be shared"
    );
}
