//! `kiln compile`: ONNX → a pre-initialized model component.
//!
//! 1. load and run the model natively (fails fast, naming an unsupported op and node);
//! 2. instrument the generic guest with Wizer (cached: the same for every model),
//!    instantiate it with the model bundle on stdin, run `wizer-initialize` (parse +
//!    optimise + plan inside the sandbox) and snapshot the memory into a new component;
//! 3. compile the result (stored in the AOT cache) and check that a fresh instance gives
//!    the native answers on a sample input.

use crate::error::HostError;
use crate::guest::GUEST_WASM;
use crate::host::{Host, LoadedModel};
use crate::sandbox::Sandbox;
use anyhow::Context;
use kiln_engine::{Bundle, BundleConfig, LoadOptions, Model, Tensor};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::Store;
use wasmtime_wizer::{WasmtimeWizerComponent, Wizer};

/// Steps of the pipeline, reported to a progress callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Validate,
    PreInitialize,
    Compile,
    Verify,
}

impl Step {
    /// All steps in order.
    pub const ALL: [Step; 4] = [Step::Validate, Step::PreInitialize, Step::Compile, Step::Verify];

    /// What the step does, for progress bars.
    pub fn label(self) -> &'static str {
        match self {
            Step::Validate => "loading and running the model natively (tract)",
            Step::PreInitialize => "pre-initializing the component (Wizer snapshot)",
            Step::Compile => "compiling to native code (Cranelift, AOT cache)",
            Step::Verify => "checking a fresh instance against the native result",
        }
    }
}

/// A compiled model component.
pub struct CompiledModel {
    /// The component bytes.
    pub wasm: Vec<u8>,
    /// SHA-256 of `wasm`.
    pub digest: String,
    /// The component loaded on the compiling host (already verified): use it rather
    /// than loading `wasm` again.
    pub model: LoadedModel,
    /// Time per step.
    pub timings: Vec<(Step, Duration)>,
}

/// Memory cap while the model is parsed and optimised inside the guest.
const INIT_MEMORY_LIMIT: usize = 4 << 30;

/// Runs the whole pipeline; `progress` is called as each step starts.
pub fn compile(
    host: &Arc<Host>,
    onnx: &[u8],
    options: &LoadOptions,
    progress: &mut dyn FnMut(Step),
) -> Result<CompiledModel, HostError> {
    let mut timings = Vec::new();

    progress(Step::Validate);
    let t = Instant::now();
    let native = Model::load(onnx, options)?;
    let sample = native.sample_inputs();
    let expected = native.predict(&sample).map_err(|e| {
        HostError::Unsupported(format!("the model loads but does not run on a zero input: {e}"))
    })?;
    timings.push((Step::Validate, t.elapsed()));

    progress(Step::PreInitialize);
    let t = Instant::now();
    let bundle = Bundle {
        config: BundleConfig {
            options: options.clone(),
        },
        onnx: onnx.to_vec(),
    };
    let mut wasm = pre_initialize(host, GUEST_WASM, bundle.encode())?;
    // The bundle rides along as a custom section (wasmtime ignores it), so the Worker
    // and browser engines can load exactly this model from the registry's component.
    kiln_types::bundle::append_to_component(&mut wasm, &bundle);
    timings.push((Step::PreInitialize, t.elapsed()));

    progress(Step::Compile);
    let t = Instant::now();
    let (component, digest, outcome) = host.compile_component(&wasm)?;
    timings.push((Step::Compile, t.elapsed()));

    progress(Step::Verify);
    let t = Instant::now();
    let loaded = host.load_compiled(component, digest.clone(), outcome, wasm.len())?;
    let got = loaded.predict(sample)?;
    check_close(&expected, &got).map_err(|why| {
        HostError::Host(anyhow::anyhow!(
            "the component disagrees with native tract on a sample input: {why}"
        ))
    })?;
    timings.push((Step::Verify, t.elapsed()));

    Ok(CompiledModel {
        wasm,
        digest,
        model: loaded,
        timings,
    })
}

/// [`compile`] with the resulting component kept in `dir`, keyed by the ONNX bytes, the
/// load options and the embedded guest: an unchanged model is compiled once, an edited
/// model or a new Kiln compiles again. Tests and benchmarks share compiled examples this
/// way. Callers in one process asking for the same key wait for one compile.
pub fn compile_cached(
    host: &Arc<Host>,
    onnx: &[u8],
    options: &LoadOptions,
    dir: &std::path::Path,
) -> Result<Vec<u8>, HostError> {
    let options_json = serde_json::to_vec(options).unwrap_or_default();
    // The tag changes when `compile`'s output changes for the same inputs (v2: the bundle
    // custom section).
    let key = kiln_types::digest(&[b"v2".as_slice(), onnx, &options_json, GUEST_WASM].concat());
    let path = dir.join(format!("{key}.wasm"));
    static IN_PROGRESS: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, Arc<std::sync::Mutex<()>>>>,
    > = std::sync::OnceLock::new();
    let lock = IN_PROGRESS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_default()
        .clone();
    let _one_compile = lock.lock().unwrap_or_else(|p| p.into_inner());
    if let Ok(wasm) = std::fs::read(&path) {
        return Ok(wasm);
    }
    let compiled = compile(host, onnx, options, &mut |_| {})?;
    kiln_types::durable::write(&path, &compiled.wasm).map_err(anyhow::Error::from)?;
    Ok(compiled.wasm)
}

/// Snapshots `guest` after running its `wizer-initialize` export with `stdin`.
pub fn pre_initialize(host: &Arc<Host>, guest: &[u8], stdin: Vec<u8>) -> Result<Vec<u8>, HostError> {
    let mut wizer = Wizer::new();
    wizer.keep_init_func(true);
    let (cx, instrumented) = wizer
        .instrument_component(guest)
        .map_err(|e| anyhow::anyhow!("instrumenting the guest for Wizer: {e:#}"))?;
    // The instrumented guest is the same for every model: the AOT cache makes this free
    // after the first compile.
    let (component, _, _) = host.compile_component(&instrumented)?;
    let mut store = Store::new(host.engine(), Sandbox::with_stdin(INIT_MEMORY_LIMIT, stdin));
    store.limiter(|s| s as &mut dyn wasmtime::ResourceLimiter);
    store.set_epoch_deadline(host.epoch().ticks(Duration::from_secs(600)));
    let result: anyhow::Result<Vec<u8>> = pollster::block_on(async {
        let instance = host
            .linker()
            .instantiate_async(&mut store, &component)
            .await
            .map_err(|e| anyhow::anyhow!("instantiating the guest: {e:#}"))?;
        let init = instance
            .get_typed_func::<(), ()>(&mut store, "wizer-initialize")
            .map_err(|e| anyhow::anyhow!("the guest has no wizer-initialize export: {e:#}"))?;
        if let Err(e) = init.call_async(&mut store, ()).await {
            let stderr = store.data().stderr_text();
            let reason = stderr
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("kiln-guest: "))
                .map(str::to_string)
                .unwrap_or_else(|| format!("{e:#}"));
            anyhow::bail!(InitFailed(reason));
        }
        let snapshot = wizer
            .snapshot_component(
                &cx,
                &mut WasmtimeWizerComponent {
                    store: &mut store,
                    instance,
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("snapshotting the initialized guest: {e:#}"))?;
        Ok(snapshot)
    });
    result.map_err(|e| match e.downcast::<InitFailed>() {
        Ok(InitFailed(reason)) => {
            HostError::Unsupported(format!("the model failed to load inside the sandbox: {reason}"))
        }
        Err(e) => HostError::Host(e.context("pre-initializing the model component")),
    })
}

#[derive(Debug)]
struct InitFailed(String);

impl std::fmt::Display for InitFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InitFailed {}

/// Compares outputs: names, types and shapes exactly, values within rel 1e-4 or abs 1e-5.
pub fn check_close(expected: &[Tensor], got: &[Tensor]) -> Result<(), String> {
    if expected.len() != got.len() {
        return Err(format!("{} outputs instead of {}", got.len(), expected.len()));
    }
    for (e, g) in expected.iter().zip(got) {
        if e.element_type != g.element_type || e.shape != g.shape {
            return Err(format!(
                "output `{}`: {} {:?} instead of {} {:?}",
                e.name, g.element_type, g.shape, e.element_type, e.shape
            ));
        }
        let (ev, gv) = (
            e.to_f64_vec().map_err(|e| e.to_string())?,
            g.to_f64_vec().map_err(|e| e.to_string())?,
        );
        for (i, (a, b)) in ev.iter().zip(&gv).enumerate() {
            let close = (a.is_nan() && b.is_nan())
                || (a - b).abs() <= 1e-5
                || (a - b).abs() <= 1e-4 * a.abs().max(b.abs());
            if !close {
                return Err(format!("output `{}` element {i}: {b} instead of {a}", e.name));
            }
        }
    }
    Ok(())
}

/// Whether bytes look like a Wasm binary (module or component).
pub fn is_wasm(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\0asm")
}

/// Reads a file with a message that says which file.
pub fn read_file(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}
