//! A misbehaving model is contained: a loop is stopped by the epoch deadline, unbounded
//! allocation by the memory cap, a panic becomes a trap error; the host keeps serving.

use crate::strict_host;
use kiln_engine::Tensor;
use kiln_host::guest::TEST_GUEST_WASM;
use kiln_host::{Host, HostConfig, HostError, Isolation};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn call(name: &str) -> Vec<Tensor> {
    vec![Tensor::from_f32(name, &[1, 4], &[1.0, 2.0, 3.0, 4.0])]
}

fn contained_in(isolation: Isolation) {
    let host = strict_host(isolation);
    let model = host.load(TEST_GUEST_WASM).expect("load the misbehaving guest");
    assert_eq!(model.info.name, "misbehaving");

    let started = Instant::now();
    match model.predict(call("spin")) {
        Err(HostError::Timeout(d)) => assert_eq!(d, Duration::from_millis(200)),
        other => panic!("an endless loop must time out, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_secs(3),
        "stopped after {took:?}"
    );

    match model.predict(call("hog")) {
        Err(HostError::MemoryLimit(mib)) => assert_eq!(mib, 64),
        other => panic!("unbounded allocation must hit the memory cap, got {other:?}"),
    }

    match model.predict(call("trap")) {
        Err(HostError::Trap(m)) => assert!(!m.is_empty()),
        other => panic!("a panic must be a trap error, got {other:?}"),
    }

    // The host goes on serving, on the same model and others.
    let echoed = model
        .predict(call("x"))
        .expect("a normal call after the failures");
    assert_eq!(echoed, call("x"));
}

#[test]
fn loops_hogs_and_panics_are_contained_per_request() {
    contained_in(Isolation::PerRequest);
}

#[test]
fn loops_hogs_and_panics_are_contained_pooled() {
    contained_in(Isolation::Pooled);
}

#[test]
fn concurrent_calls_are_isolated_from_a_spinning_neighbour() {
    let host = strict_host(Isolation::PerRequest);
    let model = std::sync::Arc::new(host.load(TEST_GUEST_WASM).unwrap());
    let spinner = {
        let m = model.clone();
        std::thread::spawn(move || m.predict(call("spin")))
    };
    for _ in 0..20 {
        assert_eq!(model.predict(call("ok")).unwrap(), call("ok"));
    }
    assert!(matches!(spinner.join().unwrap(), Err(HostError::Timeout(_))));
}

#[test]
fn pooled_mode_reuses_instances_and_drops_trapped_ones() {
    let host = strict_host(Isolation::Pooled);
    let model = host.load(TEST_GUEST_WASM).unwrap();
    model.predict(call("x")).unwrap();
    assert_eq!(model.idle_instances(), 1, "the instance went back to the pool");
    let _ = model.predict(call("trap"));
    assert_eq!(model.idle_instances(), 0, "a trapped instance is not reused");
}

/// Resident KiB of the mapping of this process that holds `address` (/proc/self/smaps).
#[cfg(target_os = "linux")]
fn resident_kib(address: usize) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16))
        {
            inside = (start..end).contains(&address);
        } else if inside && let Some(kib) = line.strip_prefix("Rss:") {
            return kib.trim().trim_end_matches("kB").trim().parse().unwrap();
        }
    }
    panic!("no mapping holds {address:#x}")
}

#[test]
#[cfg(target_os = "linux")]
fn a_version_standing_by_drops_its_idle_instances_and_pages_out_its_code() {
    let host = strict_host(Isolation::Pooled);
    // Loaded twice: the second load maps the AOT cache's file, as a node's versions are.
    drop(host.load(TEST_GUEST_WASM).unwrap());
    let model = host.load(TEST_GUEST_WASM).unwrap();
    for _ in 0..3 {
        assert_eq!(model.predict(call("x")).unwrap(), call("x"));
    }
    assert_eq!(model.idle_instances(), 1);
    let code = model.code_range().start as usize + 4096;
    let before = resident_kib(code);
    assert!(before > 0, "the code ran: some of it is resident");
    // The same file mapped a second time, every page touched: as other nodes on the
    // machine map the shared AOT cache's file. MADV_PAGEOUT leaves such pages alone.
    let shared = SharedMapping::of(&mapped_file(code));
    assert_eq!(model.stand_by(), 1);
    assert_eq!(model.idle_instances(), 0);
    let after = resident_kib(code);
    assert!(
        after < before / 2,
        "resident {before} KiB before, {after} KiB after"
    );
    // It still serves: a new instance, the code faulted back in.
    assert_eq!(model.predict(call("y")).unwrap(), call("y"));
    assert_eq!(model.idle_instances(), 1);
    assert!(resident_kib(code) > after);
    drop(shared);
}

/// The file mapped at `address` in this process (/proc/self/maps).
#[cfg(target_os = "linux")]
fn mapped_file(address: usize) -> std::path::PathBuf {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    for line in maps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let Some((start, end)) = fields[0].split_once('-')
            && let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16))
            && (start..end).contains(&address)
        {
            assert!(fields.len() > 5, "the mapping at {address:#x} is not a file's");
            return fields[5].into();
        }
    }
    panic!("no mapping holds {address:#x}")
}

/// A whole file mapped read-only, every page read once.
#[cfg(target_os = "linux")]
struct SharedMapping(*mut libc::c_void, usize);

#[cfg(target_os = "linux")]
impl SharedMapping {
    fn of(path: &std::path::Path) -> SharedMapping {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(path).unwrap();
        let len = usize::try_from(file.metadata().unwrap().len()).unwrap();
        // SAFETY: a fresh read-only private mapping of a file we opened; nothing else
        // refers to it.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(at, libc::MAP_FAILED);
        let mut sum = 0u8;
        for offset in (0..len).step_by(4096) {
            // SAFETY: `offset` is inside the mapping.
            sum = sum.wrapping_add(unsafe { std::ptr::read_volatile(at.cast::<u8>().add(offset)) });
        }
        std::hint::black_box(sum);
        SharedMapping(at, len)
    }
}

#[cfg(target_os = "linux")]
impl Drop for SharedMapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `of`, unmapped once.
        unsafe { libc::munmap(self.0, self.1) };
    }
}

#[test]
fn a_pooled_instance_is_recycled_after_its_reuse_budget() {
    let host = std::sync::Arc::new(
        kiln_host::Host::new(kiln_host::HostConfig {
            isolation: Isolation::Pooled,
            max_instance_reuse: 3,
            cache_dir: Some(crate::cache_dir()),
            ..Default::default()
        })
        .unwrap(),
    );
    let model = host.load(TEST_GUEST_WASM).unwrap();
    // Loading read the info on one instance (use 1); two calls make 3 uses.
    model.predict(call("x")).unwrap();
    assert_eq!(model.idle_instances(), 1);
    model.predict(call("x")).unwrap();
    assert_eq!(
        model.idle_instances(),
        0,
        "the instance reached its budget and was dropped"
    );
    model.predict(call("x")).unwrap();
    assert_eq!(model.idle_instances(), 1, "a fresh instance took its place");
}

#[test]
fn a_pooled_instance_that_fills_its_stderr_is_retired_not_broken() {
    let host = strict_host(Isolation::Pooled);
    let model = host.load(TEST_GUEST_WASM).unwrap();
    assert_eq!(model.predict(call("chatty")).unwrap(), call("chatty"));
    assert_eq!(
        model.idle_instances(),
        0,
        "an instance with half its stderr used is retired"
    );
    for _ in 0..3 {
        assert_eq!(
            model.predict(call("chatty")).unwrap(),
            call("chatty"),
            "never a failed call"
        );
    }
}

/// wasmtime-wasi's synchronous streams enter the ambient tokio runtime for a blocking
/// write, which panics on a tokio worker; the host's own streams do not need one, so a
/// model may write to stderr (or panic with a message) from an async worker.
#[test]
fn a_model_writing_to_stderr_runs_on_a_tokio_worker() {
    let host = strict_host(Isolation::Pooled);
    let model = std::sync::Arc::new(host.load(TEST_GUEST_WASM).unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let on_worker = model.clone();
    let (chatty, trapped) = runtime.block_on(async move {
        tokio::spawn(async move {
            let chatty = on_worker.predict(call("chatty"));
            let trapped = on_worker.predict(call("trap"));
            (chatty, trapped)
        })
        .await
        .expect("the model call panicked on the tokio worker")
    });
    assert_eq!(chatty.unwrap(), call("chatty"));
    let err = trapped.unwrap_err();
    assert!(matches!(err, HostError::Trap(_)), "{err:?}");
    assert!(
        err.to_string().contains("model stderr"),
        "the panic message reached stderr: {err}"
    );
}

/// With every instance slot in use, a call is refused as `Overloaded` (the server sheds
/// it with a 503), not a host failure (a 500 that a canary analysis would blame on the
/// version).
#[test]
fn a_call_past_the_instance_slots_is_overloaded_not_a_host_error() {
    let host = Arc::new(
        Host::new(HostConfig {
            deadline: Duration::from_millis(600),
            memory_limit: 64 << 20,
            isolation: Isolation::Pooled,
            instance_slots: 4,
            cache_dir: Some(crate::cache_dir()),
            ..HostConfig::default()
        })
        .expect("host"),
    );
    let model = Arc::new(host.load(TEST_GUEST_WASM).unwrap());
    // Four looping calls hold the four slots until their deadline.
    let spinning: Vec<_> = (0..4)
        .map(|_| {
            let model = model.clone();
            std::thread::spawn(move || model.predict(call("spin")))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let refused = model.predict(call("x")).unwrap_err();
    assert!(matches!(refused, HostError::Overloaded(_)), "{refused:?}");
    assert_eq!(refused.kind(), "overloaded");
    assert!(refused.to_string().contains("instance slots"), "{refused}");
    for s in spinning {
        assert!(matches!(s.join().unwrap(), Err(HostError::Timeout(_))));
    }
    assert_eq!(model.predict(call("x")).unwrap(), call("x"), "slots free again");
}
