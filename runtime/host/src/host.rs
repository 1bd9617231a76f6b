//! The wasmtime host: one engine (Cranelift with SIMD, pooling allocator with
//! copy-on-write memory images, epoch interruption), a linker with the sandbox's WASI, an
//! AOT cache, and loaded models.

use crate::aot_cache::{AotCache, CacheOutcome};
use crate::bindings::ModelPre;
use crate::config::{HostConfig, Isolation};
use crate::epoch::{EPOCH_TICK, Epoch};
use crate::error::HostError;
use crate::function_cache::FunctionCache;
use crate::guest::GUEST_WASM;
use crate::instance::Instances;
use crate::sandbox::Sandbox;
use anyhow::Context;
use kiln_types::{ModelInfo, Tensor};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

/// The wasmtime engine, linker and cache shared by every loaded model.
pub struct Host {
    engine: Engine,
    linker: Linker<Sandbox>,
    config: HostConfig,
    cache: AotCache,
    epoch: Arc<Epoch>,
    lazy_guest: OnceLock<(Component, String)>,
}

/// The wasmtime configuration Kiln uses (also the key of the AOT cache).
pub fn engine_config(config: &HostConfig) -> anyhow::Result<Config> {
    let mut c = Config::new();
    c.wasm_component_model(true)
        .wasm_simd(true)
        .wasm_relaxed_simd(true)
        .relaxed_simd_deterministic(true)
        .cranelift_opt_level(OptLevel::Speed)
        .epoch_interruption(true)
        .memory_init_cow(true)
        .parallel_compilation(true)
        // Models are synchronous components: no store needs the concurrency runtime that
        // the component-model-async feature (for `kiln spin up`'s router) turns on by default.
        .concurrency_support(false);
    let mut pool = PoolingAllocationConfig::default();
    let slots = config.instance_slots.max(4);
    pool.total_component_instances(slots)
        .total_core_instances(slots * 8)
        .total_memories(slots * 2)
        .total_tables(slots * 4)
        .total_stacks(slots)
        .max_core_instances_per_component(32)
        .max_memories_per_component(4)
        .max_tables_per_component(8)
        .max_memory_size(config.memory_limit)
        .table_elements(100_000)
        .max_core_instance_size(4 << 20)
        .max_component_instance_size(4 << 20)
        // Bytes of linear memory reset by copy rather than madvise between instances, and
        // so kept resident in every slot an instance has used. Per-request isolation
        // frees an instance after every call; per-request predict, measured (MLP / forest /
        // CNN): 0 B 108/95/405 µs, 2 MiB 58/125/233 µs, 8 MiB 56/300/233 µs: copying is
        // cheaper than re-faulting hot pages until the copy outgrows them. Pooled
        // instances are reused, not freed, between calls, so there it buys nothing and
        // costs memory: a promoted version's instances take slots no version used before
        // (wasmtime prefers them for a new module), each keeping up to 2 MiB after the
        // version is unloaded; `kiln serve`'s RSS grew 4–5 MiB with every promote of the
        // MLP, and stays flat without it.
        .linear_memory_keep_resident(match config.isolation {
            Isolation::PerRequest => 2 << 20,
            Isolation::Pooled => 0,
        })
        .table_keep_resident(64 << 10);
    c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    if let Some(dir) = &config.cache_dir {
        let functions = FunctionCache::new(dir.join("functions"));
        c.enable_incremental_compilation(Arc::new(functions))?;
    }
    Ok(c)
}

impl Host {
    /// Builds the engine and linker and starts the epoch ticker.
    pub fn new(config: HostConfig) -> anyhow::Result<Host> {
        let engine = Engine::new(&engine_config(&config)?)
            .map_err(anyhow::Error::from)
            .context("creating the wasmtime engine")?;
        let mut linker = Linker::<Sandbox>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking WASI")?;
        crate::streams::shadow_streams(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking WASI streams")?;
        let cache = AotCache::new(&engine, config.cache_dir.clone());
        let epoch = Arc::new(Epoch::start(&engine, EPOCH_TICK)?);
        Ok(Host {
            engine,
            linker,
            config,
            cache,
            epoch,
            lazy_guest: OnceLock::new(),
        })
    }

    /// The host's settings.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The linker with the sandbox's WASI.
    pub(crate) fn linker(&self) -> &Linker<Sandbox> {
        &self.linker
    }

    /// The epoch clock of model deadlines.
    pub(crate) fn epoch(&self) -> &Epoch {
        &self.epoch
    }

    /// Compiles (or loads from the AOT cache) a component.
    pub fn compile_component(&self, wasm: &[u8]) -> anyhow::Result<(Component, String, CacheOutcome)> {
        let digest = kiln_types::digest(wasm);
        let (component, outcome) = self.component_for_digest(&digest, wasm)?;
        Ok((component, digest, outcome))
    }

    /// Like [`Host::compile_component`] for a caller that already verified the digest
    /// (the registry stores components by digest): a cache hit reads nothing but the
    /// memory-mapped artifact.
    ///
    /// On a miss with a cache directory the component is compiled by an engine of its own
    /// (same settings, so the same artifacts), dropped once the artifact is stored, and
    /// then loaded from the cache like any hit: Cranelift's per-engine compile state and
    /// the compiled code's anonymous pages (~90 MiB after the MLP, measured) do not stay in
    /// a server for its lifetime; the served code is a file mapping, as after a restart.
    pub fn component_for_digest(
        &self,
        digest: &str,
        wasm: &[u8],
    ) -> anyhow::Result<(Component, CacheOutcome)> {
        if self.cache.path_for(digest).is_none() {
            return self.cache.load_or_compile(&self.engine, digest, wasm);
        }
        if let Some(c) = self.cache.load_cached(&self.engine, digest) {
            return Ok((c, CacheOutcome::Hit));
        }
        let compiler = Engine::new(&engine_config(&self.config)?)
            .map_err(anyhow::Error::from)
            .context("creating the compile engine")?;
        let (compiled, _) = self.cache.load_or_compile(&compiler, digest, wasm)?;
        let component = match self.cache.load_cached(&self.engine, digest) {
            Some(c) => c,
            // The artifact could not be stored (the log says why): serve it from memory.
            None => {
                let bytes = compiled
                    .serialize()
                    .map_err(anyhow::Error::from)
                    .context("serializing the compiled component")?;
                // SAFETY: `bytes` were serialized just now, in this process, by an engine
                // with this engine's settings.
                unsafe { Component::deserialize(&self.engine, &bytes) }
                    .map_err(anyhow::Error::from)
                    .context("loading the compiled component")?
            }
        };
        drop(compiled);
        drop(compiler);
        crate::memory::release_free_memory();
        Ok((component, CacheOutcome::Compiled))
    }

    /// The component with `digest` from the AOT cache, if it is there: for a caller that
    /// verified the digest from the file without holding the wasm in memory, and reads
    /// it only on a miss.
    pub fn cached_component(&self, digest: &str) -> Option<Component> {
        self.cache.load_cached(&self.engine, digest)
    }

    /// Loads a model component: compile or cache hit, pre-instantiate, read its info.
    pub fn load(&self, wasm: &[u8]) -> Result<LoadedModel, HostError> {
        let (component, digest, outcome) = self.compile_component(wasm)?;
        self.load_compiled(component, digest, outcome, wasm.len())
    }

    /// Loads the embedded generic guest so that it reads its model from stdin on first
    /// use (no pre-initialization): the baseline pre-initialization is measured against,
    /// and a way to run many models on one compiled guest (ONNX backend tests). The
    /// guest is compiled (or loaded from the cache) once per host.
    pub fn load_lazy(&self, bundle: Vec<u8>) -> Result<LoadedModel, HostError> {
        let (component, digest) = match self.lazy_guest.get() {
            Some(g) => g.clone(),
            None => {
                let (component, digest, _) = self.compile_component(GUEST_WASM)?;
                self.lazy_guest.get_or_init(|| (component, digest)).clone()
            }
        };
        self.load_with(
            component,
            digest,
            CacheOutcome::Hit,
            GUEST_WASM.len(),
            Some(bundle),
        )
    }

    /// Loads an already compiled component.
    pub fn load_compiled(
        &self,
        component: Component,
        digest: String,
        cache: CacheOutcome,
        size: usize,
    ) -> Result<LoadedModel, HostError> {
        self.load_with(component, digest, cache, size, None)
    }

    fn load_with(
        &self,
        component: Component,
        digest: String,
        cache: CacheOutcome,
        size: usize,
        stdin: Option<Vec<u8>>,
    ) -> Result<LoadedModel, HostError> {
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .context("the component needs imports the Kiln sandbox does not provide")?;
        let pre = ModelPre::new(pre)
            .map_err(anyhow::Error::from)
            .context("the component does not export kiln:model")?;
        let instances = Instances::new(
            self.engine.clone(),
            self.epoch.clone(),
            self.config.clone(),
            pre,
            stdin,
        );
        let info = instances.info()?;
        if let Some((_, err)) = info.metadata.iter().find(|(k, _)| k == "kiln.error") {
            return Err(HostError::Model(format!(
                "the component holds no usable model: {err}"
            )));
        }
        tracing::info!(model = %info.name, digest = %digest, cache = ?cache, "model loaded");
        Ok(LoadedModel {
            digest,
            info,
            instances,
            cache,
            size,
            latency_ns: AtomicU64::new(0),
        })
    }
}

/// A model ready to serve.
pub struct LoadedModel {
    /// SHA-256 of the component bytes.
    pub digest: String,
    /// What the component says about itself.
    pub info: ModelInfo,
    /// Whether it came from the AOT cache.
    pub cache: CacheOutcome,
    /// Component size in bytes.
    pub size: usize,
    instances: Instances,
    /// Moving average of the CPU time of recent calls in nanoseconds (0 until the first
    /// call).
    latency_ns: AtomicU64,
}

impl LoadedModel {
    /// Called when the version stops taking weighted traffic (kept for explicit calls and
    /// a rollback): drops its idle instances and pages out its compiled code (see
    /// `Instances::stand_by`). A call still serves it, at the cost of an instantiation
    /// and of faulting its code back in. Returns the idle instances dropped.
    pub fn stand_by(&self) -> usize {
        self.instances.stand_by()
    }

    /// Runs the model in the sandbox, under the host's deadline.
    pub fn predict(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, HostError> {
        self.predict_within(inputs, self.instances.config().deadline)
    }

    /// Runs the model in the sandbox under a shorter `deadline` than the host's (a caller
    /// that must not be held long, such as an async runtime's worker, retrying elsewhere
    /// on a timeout); the host's deadline still caps it.
    pub fn predict_within(
        &self,
        inputs: Vec<Tensor>,
        deadline: std::time::Duration,
    ) -> Result<Vec<Tensor>, HostError> {
        let deadline = deadline.min(self.instances.config().deadline);
        let limit = self.instances.config().max_request_bytes;
        let total: usize = inputs.iter().map(|t| t.data.len()).sum();
        if total > limit {
            return Err(HostError::TooLarge(format!(
                "inputs hold {total} bytes, over the limit of {limit} bytes"
            )));
        }
        // CPU time, not wall time: on a busy machine a call's wall time includes the time
        // its thread waited for a core, which says nothing about the model.
        let started = thread_cpu_time();
        let result = self.instances.predict(inputs, deadline);
        let took = u64::try_from(thread_cpu_time().saturating_sub(started).as_nanos()).unwrap_or(u64::MAX);
        // An exponential moving average (weight 1/8): one slow call lifts it at once, so
        // a server that runs fast models inline goes back to a thread pool quickly.
        let _ = self
            .latency_ns
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == 0 {
                    took.max(1)
                } else {
                    old - old / 8 + took / 8
                })
            });
        result
    }

    /// Recent typical CPU time of a call (`None` before the first call).
    pub fn typical_latency(&self) -> Option<std::time::Duration> {
        match self.latency_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(std::time::Duration::from_nanos(ns)),
        }
    }

    /// Instances currently idle in the pool (0 in per-request mode).
    /// Where the compiled code is mapped in this process (to look at its residency).
    pub fn code_range(&self) -> std::ops::Range<*const u8> {
        self.instances.code_range()
    }

    pub fn idle_instances(&self) -> usize {
        self.instances.idle()
    }

    /// Instantiates once and drops it: pages the component in before traffic.
    pub fn warm(&self) -> Result<(), HostError> {
        self.instances.warm()
    }
}

/// The CPU time the calling thread has used.
fn thread_cpu_time() -> std::time::Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    std::time::Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}
