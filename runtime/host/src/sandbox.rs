//! The sandbox a model runs in: WASI with nothing behind it (no preopened directories, no
//! environment, no arguments, no sockets, a clock frozen at the epoch) and a memory cap.

use std::time::Duration;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{
    Deterministic, HostMonotonicClock, HostWallClock, ResourceTable, WasiCtx, WasiCtxView, WasiView,
};

/// Per-store state of a model instance.
pub struct Sandbox {
    wasi: WasiCtx,
    table: ResourceTable,
    memory_limit: usize,
    /// Set when the model asked for more memory than its cap.
    pub memory_denied: bool,
    /// The model's stderr (kept small), for diagnostics after a trap.
    pub stderr: Option<MemoryOutputPipe>,
}

/// Bytes of a model's stderr kept (for trap diagnostics). Writing past it fails, so a
/// pooled instance is retired once half of it is used (see `instance.rs`).
pub const STDERR_CAPACITY: usize = 64 << 10;

/// A clock that always says 1970: models get no time source.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

impl Sandbox {
    /// A serving sandbox: nothing but a memory cap.
    pub fn new(memory_limit: usize) -> Sandbox {
        Sandbox::build(memory_limit, None)
    }

    /// A sandbox whose stdin holds `stdin` (the model bundle at pre-initialization).
    pub fn with_stdin(memory_limit: usize, stdin: Vec<u8>) -> Sandbox {
        Sandbox::build(memory_limit, Some(stdin))
    }

    fn build(memory_limit: usize, stdin: Option<Vec<u8>>) -> Sandbox {
        let mut b = WasiCtx::builder();
        // Frozen clocks and fixed randomness: a model cannot tell time, and compiling the
        // same model twice gives the same snapshot (hash seeds drawn at init are frozen
        // into it), so the component digest is reproducible.
        b.wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .secure_random(Deterministic::new(b"kiln: deterministic model sandbox".to_vec()))
            .insecure_random(Deterministic::new(b"kiln: insecure random".to_vec()))
            .insecure_random_seed(0x6b696c6e);
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        b.stderr(stderr.clone());
        if let Some(bytes) = stdin {
            b.stdin(MemoryInputPipe::new(bytes));
        }
        Sandbox {
            wasi: b.build(),
            table: ResourceTable::new(),
            memory_limit,
            memory_denied: false,
            stderr: Some(stderr),
        }
    }

    /// Bytes the model wrote to stderr so far.
    pub fn stderr_len(&self) -> usize {
        self.stderr.as_ref().map(|p| p.contents().len()).unwrap_or(0)
    }

    /// What the model wrote to stderr, lossily decoded.
    pub fn stderr_text(&self) -> String {
        self.stderr
            .as_ref()
            .map(|p| String::from_utf8_lossy(&p.contents()).trim().to_string())
            .unwrap_or_default()
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ResourceLimiter for Sandbox {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}
