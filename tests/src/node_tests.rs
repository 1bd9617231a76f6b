//! The ONNX backend node tests (one small model per operator variant, with inputs and
//! reference outputs computed by the `onnx` package) run two ways: natively with Kiln's
//! engine (tract) and inside the sandboxed guest component. The sandbox must not lose a
//! case that native tract passes: both run the same engine, so any difference is a bug
//! in the guest, the host or the tensor plumbing between them.

use kiln_engine::{Bundle, BundleConfig, ElementType, LoadOptions, Model, Tensor};
use kiln_runtime::{Host, HostConfig, HostError, Isolation};
use prost::Message;
use serde::Serialize;
use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};
use tract_onnx::data_resolver::FopenDataResolver;
use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::prelude::DatumType;

/// Wall-clock budget of one case on each side: the component's deadline per call, and
/// the native watchdog (native tract has no deadline of its own).
pub const CASE_DEADLINE: Duration = Duration::from_secs(10);

/// Prefix of the threads this runner starts; their panics are reported as outcomes, not
/// printed.
const THREAD_PREFIX: &str = "onnx-node-";

/// Writes the node cases with the `onnx` package's own generator. `cmd_tools
/// generate-data` only writes the model cases (`real`, `simple`) in onnx 1.23, so this
/// hands it the node cases instead. Writes into `argv[1]`, prints the onnx version.
const GENERATE_SCRIPT: &str = r#"
import argparse, sys, warnings
warnings.simplefilter("ignore")
import onnx
import onnx.backend.test.cmd_tools as tools
import onnx.backend.test.case.model as model_cases
import onnx.backend.test.case.node as node_cases
cases = node_cases.collect_testcases()
model_cases.collect_testcases = lambda: cases
tools.generate_data(argparse.Namespace(output=sys.argv[1]))
print(onnx.__version__)
"#;

/// Float tolerances, compared as numpy's `assert_allclose` does:
/// `|got - expected| <= atol + rtol * |expected|`, NaN equal to NaN.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tolerance {
    pub rtol: f64,
    pub atol: f64,
}

impl Default for Tolerance {
    /// `rtol=1e-3, atol=1e-5`. The onnx backend runner uses `atol=1e-7`, tighter than
    /// float32 rounding of outputs near zero: the DFT cases then pass or fail on 2e-6 of
    /// noise depending on the SIMD kernels (native AVX vs wasm simd128).
    fn default() -> Self {
        Tolerance {
            rtol: 1e-3,
            atol: 1e-5,
        }
    }
}

/// `$KILN_ONNX_NODE_TESTS`, else `<workspace>/target/onnx-node-tests`.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("KILN_ONNX_NODE_TESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::root().join("target").join("onnx-node-tests"))
}

/// Makes sure `dir/node` holds the node cases, generating them (a few seconds, ~56 MB)
/// with `python3` (or `$KILN_PYTHON`) and the `onnx` package when missing.
pub fn ensure_data(dir: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let node = dir.join("node");
    if node.is_dir() {
        return Ok(());
    }
    let python = std::env::var("KILN_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python).args(["-c", "import onnx"]).output().with_context(|| {
        format!("running `{python}` to generate the ONNX node test data (set KILN_PYTHON to another interpreter)")
    })?;
    if !probe.status.success() {
        anyhow::bail!(
            "`{python}` cannot import the `onnx` package, which generates the ONNX node test data: \
             pip install onnx (or point KILN_PYTHON at an interpreter that has it); {}",
            last_line(&String::from_utf8_lossy(&probe.stderr))
        );
    }
    // Generate next to the final place and rename, so a run that is interrupted (or
    // races another) never leaves a half-written `node` directory behind.
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let partial = dir.join(format!(".generating-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    let out = Command::new(&python)
        .args(["-c", GENERATE_SCRIPT])
        .arg(&partial)
        .output()
        .with_context(|| format!("running `{python}` to generate the ONNX node test data"))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&partial);
        anyhow::bail!(
            "generating the ONNX node test data into {} failed: {}",
            dir.display(),
            last_line(&String::from_utf8_lossy(&out.stderr))
        );
    }
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let _ = std::fs::write(partial.join("onnx-version.txt"), format!("{version}\n"));
    let renamed = std::fs::rename(partial.join("node"), &node);
    if let Err(e) = renamed
        && !node.is_dir()
    {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e).with_context(|| format!("moving the generated cases into {}", node.display()));
    }
    let _ = std::fs::rename(partial.join("onnx-version.txt"), dir.join("onnx-version.txt"));
    let _ = std::fs::remove_dir_all(&partial);
    Ok(())
}

/// The onnx version that generated the data, if recorded.
pub fn data_onnx_version(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join("onnx-version.txt"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Directories of the node cases under `dir/node` whose name contains `filter`, sorted.
pub fn case_dirs(dir: &Path, filter: Option<&str>) -> anyhow::Result<Vec<PathBuf>> {
    use anyhow::Context;
    let node = dir.join("node");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&node)
        .with_context(|| format!("listing {}", node.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("model.onnx").is_file())
        .filter(|p| filter.is_none_or(|f| case_name(p).contains(f)))
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// A case's name: its directory's name.
pub fn case_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// How one case went on one side.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "lowercase")]
pub enum Outcome {
    /// Every output has the reference's type and shape and is close enough.
    Pass,
    /// Ran, but an output differs (count, type, shape or values).
    Mismatch(String),
    /// Did not run: a type Kiln cannot carry, or a load or run error.
    Unsupported(String),
}

impl Outcome {
    /// Whether this is a pass.
    pub fn is_pass(&self) -> bool {
        matches!(self, Outcome::Pass)
    }

    /// The mismatch or error message (empty for a pass).
    pub fn detail(&self) -> &str {
        match self {
            Outcome::Pass => "",
            Outcome::Mismatch(d) | Outcome::Unsupported(d) => d,
        }
    }
}

/// Both outcomes of one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub name: String,
    pub native: Outcome,
    pub component: Outcome,
    /// Whether the outcomes come from the retry with every input but the first made a
    /// constant (the first try could not run on either side).
    pub constant_inputs: bool,
    /// Seconds spent loading and running natively, and in the sandbox (both tries).
    pub native_seconds: f64,
    pub component_seconds: f64,
}

/// A case's model and data, read from its directory.
struct Case {
    model: pb::ModelProto,
    onnx: Vec<u8>,
    /// Graph input names and their data, in graph order.
    inputs: Vec<(String, pb::TensorProto)>,
    expected: Vec<Tensor>,
}

/// Runs cases natively and in the sandbox.
pub struct Runner {
    host: Arc<Host>,
    tolerance: Tolerance,
}

impl Runner {
    /// A runner with its own host (deadline [`CASE_DEADLINE`], 1 GiB per instance, the
    /// instance that loaded the model reused for the prediction) and the guest compiled
    /// (or loaded from the AOT cache under `target/`) up front.
    pub fn new(tolerance: Tolerance) -> anyhow::Result<Runner> {
        use anyhow::Context;
        let config = HostConfig {
            deadline: CASE_DEADLINE,
            memory_limit: 1 << 30,
            // The lazy guest loads its model in the instance that answers `info`; pooling
            // keeps that instance for the prediction instead of loading the model twice.
            isolation: Isolation::Pooled,
            pool_size: 1,
            instance_slots: 16,
            ..crate::test_config()
        };
        let host = Arc::new(Host::new(config).context("creating the host")?);
        host.compile_component(kiln_runtime::guest::GUEST_WASM)
            .context("compiling the guest component")?;
        install_quiet_panic_hook();
        Ok(Runner { host, tolerance })
    }

    /// Runs one case both ways. Cases that neither side can run as given are retried with
    /// every input but the first turned into a constant (tract needs shapes, axes and
    /// sizes given as inputs to be constants), the same way for both sides.
    pub fn run_case(&self, dir: &Path) -> CaseResult {
        let name = case_name(dir);
        let case = match Case::read(dir) {
            Ok(case) => case,
            Err(why) => {
                return CaseResult {
                    name,
                    native: Outcome::Unsupported(why.clone()),
                    component: Outcome::Unsupported(why),
                    constant_inputs: false,
                    native_seconds: 0.0,
                    component_seconds: 0.0,
                };
            }
        };
        let mut seconds = (0.0, 0.0);
        let as_given = self.run_both(&case, case.onnx.clone(), &case.inputs, &mut seconds);
        let neither_ran = matches!(as_given, (Outcome::Unsupported(_), Outcome::Unsupported(_)));
        if neither_ran
            && case.inputs.len() > 1
            && let Ok(onnx) = case.with_constant_inputs(1)
        {
            let retried = self.run_both(&case, onnx, &case.inputs[..1], &mut seconds);
            if !matches!(retried, (Outcome::Unsupported(_), Outcome::Unsupported(_))) {
                return CaseResult {
                    name,
                    native: retried.0,
                    component: retried.1,
                    constant_inputs: true,
                    native_seconds: seconds.0,
                    component_seconds: seconds.1,
                };
            }
        }
        CaseResult {
            name,
            native: as_given.0,
            component: as_given.1,
            constant_inputs: false,
            native_seconds: seconds.0,
            component_seconds: seconds.1,
        }
    }

    fn run_both(
        &self,
        case: &Case,
        onnx: Vec<u8>,
        inputs: &[(String, pb::TensorProto)],
        seconds: &mut (f64, f64),
    ) -> (Outcome, Outcome) {
        let tensors = match kiln_tensors(inputs) {
            Ok(t) => t,
            Err(why) => return (Outcome::Unsupported(why.clone()), Outcome::Unsupported(why)),
        };
        let onnx = Arc::new(onnx);
        let started = Instant::now();
        let native = run_native(onnx.clone(), tensors.clone());
        seconds.0 += started.elapsed().as_secs_f64();
        let started = Instant::now();
        let component = self.run_component(&onnx, tensors);
        seconds.1 += started.elapsed().as_secs_f64();
        (
            self.judge(native, &case.expected),
            self.judge(component, &case.expected),
        )
    }

    fn run_component(&self, onnx: &[u8], inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        let bundle = Bundle {
            config: BundleConfig {
                options: LoadOptions::default(),
            },
            onnx: onnx.to_vec(),
        }
        .encode();
        let run = || -> Result<Vec<Tensor>, HostError> {
            let loaded = self.host.load_lazy(bundle)?;
            loaded.predict(inputs)
        };
        match std::panic::catch_unwind(AssertUnwindSafe(run)) {
            Ok(Ok(outputs)) => Ok(outputs),
            Ok(Err(e)) => Err(e.to_string()),
            Err(panic) => Err(format!("host panicked: {}", panic_message(&*panic))),
        }
    }

    fn judge(&self, got: Result<Vec<Tensor>, String>, expected: &[Tensor]) -> Outcome {
        match got {
            Ok(outputs) => match compare(&outputs, expected, self.tolerance) {
                Ok(()) => Outcome::Pass,
                Err(why) => Outcome::Mismatch(why),
            },
            Err(why) => Outcome::Unsupported(why),
        }
    }

    /// Runs every case on `jobs` threads, calling `progress` after each; results in the
    /// order of `dirs`.
    pub fn run_all(
        &self,
        dirs: &[PathBuf],
        jobs: usize,
        progress: &(dyn Fn(&CaseResult) + Sync),
    ) -> Vec<CaseResult> {
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<CaseResult>>> = Mutex::new(vec![None; dirs.len()]);
        std::thread::scope(|scope| {
            for worker in 0..jobs.max(1) {
                let (next, results) = (&next, &results);
                let spawned = std::thread::Builder::new()
                    .name(format!("{THREAD_PREFIX}worker-{worker}"))
                    .stack_size(16 << 20)
                    .spawn_scoped(scope, move || {
                        loop {
                            let ix = next.fetch_add(1, Ordering::Relaxed);
                            let Some(dir) = dirs.get(ix) else { break };
                            let result = self.run_case(dir);
                            progress(&result);
                            results.lock().unwrap_or_else(|p| p.into_inner())[ix] = Some(result);
                        }
                    });
                if spawned.is_err() {
                    // No thread to spare: the other workers (or the loop below) take its share.
                    break;
                }
            }
        });
        // Anything no worker took (none could be started) runs here.
        let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
        for (slot, dir) in results.iter_mut().zip(dirs) {
            if slot.is_none() {
                let result = self.run_case(dir);
                progress(&result);
                *slot = Some(result);
            }
        }
        results.into_iter().flatten().collect()
    }
}

impl Case {
    /// Reads the model and `test_data_set_0`; a case with types Kiln cannot carry is
    /// refused here (the reason), without running it.
    fn read(dir: &Path) -> Result<Case, String> {
        let onnx = std::fs::read(dir.join("model.onnx")).map_err(|e| format!("reading model.onnx: {e}"))?;
        let model = pb::ModelProto::decode(&onnx[..]).map_err(|e| format!("not an ONNX model: {e}"))?;
        let graph = model.graph.as_ref().ok_or("the model has no graph")?;
        let data = dir.join("test_data_set_0");
        let initializers: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let mut inputs = Vec::new();
        // input_N.pb is the data of graph.input[N] (the generator numbers them so).
        for (ix, info) in graph.input.iter().enumerate() {
            if initializers.contains(&info.name.as_str()) {
                continue;
            }
            carried_type("input", info)?;
            let proto = read_tensor_proto(&data.join(format!("input_{ix}.pb")))?;
            inputs.push((info.name.clone(), proto));
        }
        let mut expected = Vec::new();
        for (ix, info) in graph.output.iter().enumerate() {
            carried_type("output", info)?;
            let proto = read_tensor_proto(&data.join(format!("output_{ix}.pb")))?;
            expected.push(kiln_tensor(&info.name, &proto)?);
        }
        Ok(Case {
            model,
            onnx,
            inputs,
            expected,
        })
    }

    /// The model with every graph input from `keep` on turned into an initializer holding
    /// the case's data.
    fn with_constant_inputs(&self, keep: usize) -> Result<Vec<u8>, String> {
        let mut model = self.model.clone();
        let graph = model.graph.as_mut().ok_or("the model has no graph")?;
        for (name, proto) in &self.inputs[keep..] {
            let mut constant = proto.clone();
            constant.name = name.clone();
            graph.initializer.push(constant);
            graph.input.retain(|i| &i.name != name);
        }
        Ok(model.encode_to_vec())
    }
}

/// Refuses inputs and outputs that are not tensors of a type Kiln carries (sequences,
/// maps, optionals, strings, bfloat16, float8, int4, complex...).
fn carried_type(what: &str, info: &pb::ValueInfoProto) -> Result<ElementType, String> {
    let tensor = match info.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(t)) => t,
        None => {
            return Err(format!(
                "{what} `{}` is not a tensor (a sequence, map or optional)",
                info.name
            ));
        }
    };
    element_type(tensor.elem_type).map_err(|why| format!("{what} `{}` {why}", info.name))
}

fn element_type(elem_type: i32) -> Result<ElementType, String> {
    let onnx =
        DataType::try_from(elem_type).map_err(|_| format!("has unknown ONNX element type {elem_type}"))?;
    DatumType::try_from(onnx)
        .ok()
        .and_then(ElementType::from_datum_type)
        .ok_or_else(|| format!("has element type {onnx:?}, which Kiln cannot carry"))
}

fn read_tensor_proto(path: &Path) -> Result<pb::TensorProto, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    pb::TensorProto::decode(&bytes[..]).map_err(|e| format!("{} is not a TensorProto: {e}", path.display()))
}

/// A Kiln tensor named `name` from a TensorProto of a carried type.
fn kiln_tensor(name: &str, proto: &pb::TensorProto) -> Result<Tensor, String> {
    element_type(proto.data_type).map_err(|why| format!("tensor `{name}` {why}"))?;
    let tensor = tract_onnx::tensor::load_tensor(&FopenDataResolver, proto, None)
        .map_err(|e| format!("tensor `{name}`: {e:#}"))?;
    Tensor::from_tract(name, &tensor).map_err(|e| format!("tensor `{name}`: {e}"))
}

fn kiln_tensors(inputs: &[(String, pb::TensorProto)]) -> Result<Vec<Tensor>, String> {
    inputs
        .iter()
        .map(|(name, proto)| kiln_tensor(name, proto))
        .collect()
}

/// Loads and runs the model natively on its own thread, giving up after
/// [`CASE_DEADLINE`] (the thread is then left to finish in the background).
fn run_native(onnx: Arc<Vec<u8>>, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("{THREAD_PREFIX}native"))
        .stack_size(16 << 20)
        .spawn(move || {
            let run = || Model::load(&onnx, &LoadOptions::default())?.predict(&inputs);
            let _ = tx.send(std::panic::catch_unwind(AssertUnwindSafe(run)));
        });
    if let Err(e) = spawned {
        return Err(format!("starting the native run: {e}"));
    }
    match rx.recv_timeout(CASE_DEADLINE) {
        Ok(Ok(Ok(outputs))) => Ok(outputs),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Err(panic)) => Err(format!("tract panicked: {}", panic_message(&*panic))),
        Err(RecvTimeoutError::Timeout) => Err(format!("timeout: native run took over {CASE_DEADLINE:?}")),
        Err(RecvTimeoutError::Disconnected) => Err("the native run ended without a result".into()),
    }
}

/// Compares outputs with the references by position: count, element type, shape, then
/// values (floats within `tol`, everything else exactly).
pub fn compare(got: &[Tensor], expected: &[Tensor], tol: Tolerance) -> Result<(), String> {
    if got.len() != expected.len() {
        return Err(format!("{} output(s), expected {}", got.len(), expected.len()));
    }
    for (ix, (g, e)) in got.iter().zip(expected).enumerate() {
        let what = format!("output #{ix} `{}`", e.name);
        if g.element_type != e.element_type {
            return Err(format!(
                "{what} is {}, expected {}",
                g.element_type, e.element_type
            ));
        }
        if g.shape != e.shape {
            return Err(format!("{what} has shape {:?}, expected {:?}", g.shape, e.shape));
        }
        let float = matches!(
            e.element_type,
            ElementType::F16 | ElementType::F32 | ElementType::F64
        );
        if !float {
            if g.data != e.data {
                let n = e.element_type.size();
                let at = g
                    .data
                    .chunks(n)
                    .zip(e.data.chunks(n))
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                return Err(format!("{what} differs at element {at}"));
            }
            continue;
        }
        let (a, b) = match (g.to_f64_vec(), e.to_f64_vec()) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(err), _) | (_, Err(err)) => return Err(format!("{what}: {err}")),
        };
        let bad = a
            .iter()
            .zip(&b)
            .enumerate()
            .filter(|(_, (x, y))| !close(**x, **y, tol));
        let (count, first) = bad.fold((0usize, None), |(n, first), item| (n + 1, first.or(Some(item))));
        if let Some((at, (x, y))) = first {
            return Err(format!(
                "{what}: {count} of {} values differ beyond rtol {} / atol {}; first at {at}: {x} vs {y}",
                b.len(),
                tol.rtol,
                tol.atol
            ));
        }
    }
    Ok(())
}

/// numpy's `isclose` with `equal_nan`: infinities must match exactly.
fn close(got: f64, expected: f64, tol: Tolerance) -> bool {
    if got.is_nan() || expected.is_nan() {
        return got.is_nan() && expected.is_nan();
    }
    if got.is_infinite() || expected.is_infinite() {
        return got == expected;
    }
    (got - expected).abs() <= tol.atol + tol.rtol * expected.abs()
}

/// Pass / mismatch / unsupported counts of one side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Counts {
    pub pass: usize,
    pub mismatch: usize,
    pub unsupported: usize,
    /// Time spent on this side, summed over the worker threads.
    pub seconds: f64,
}

impl Counts {
    fn add(&mut self, o: &Outcome) {
        match o {
            Outcome::Pass => self.pass += 1,
            Outcome::Mismatch(_) => self.mismatch += 1,
            Outcome::Unsupported(_) => self.unsupported += 1,
        }
    }

    /// Cases counted.
    pub fn total(&self) -> usize {
        self.pass + self.mismatch + self.unsupported
    }
}

/// The counts of a run and the cases where the two sides disagree.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub native: Counts,
    pub component: Counts,
    /// Passes that needed the constant-input retry (native, component).
    pub passed_with_constant_inputs: (usize, usize),
    /// Cases native tract passes but the component does not, with the component's outcome.
    pub lost: Vec<(String, Outcome)>,
    /// Cases the component passes but native tract does not, with native's outcome.
    pub gained: Vec<(String, Outcome)>,
}

impl Summary {
    /// Counts `results`.
    pub fn of(results: &[CaseResult]) -> Summary {
        let mut s = Summary::default();
        for r in results {
            s.native.add(&r.native);
            s.component.add(&r.component);
            s.native.seconds += r.native_seconds;
            s.component.seconds += r.component_seconds;
            if r.constant_inputs {
                s.passed_with_constant_inputs.0 += usize::from(r.native.is_pass());
                s.passed_with_constant_inputs.1 += usize::from(r.component.is_pass());
            }
            if r.native.is_pass() && !r.component.is_pass() {
                s.lost.push((r.name.clone(), r.component.clone()));
            }
            if r.component.is_pass() && !r.native.is_pass() {
                s.gained.push((r.name.clone(), r.native.clone()));
            }
        }
        s
    }

    /// The counts as a text table, plus the number of lost cases.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<10} {:>6} {:>9} {:>12} {:>6} {:>9}\n",
            "", "pass", "mismatch", "unsupported", "total", "seconds"
        );
        for (label, c) in [("native", self.native), ("component", self.component)] {
            out += &format!(
                "{label:<10} {:>6} {:>9} {:>12} {:>6} {:>9.1}\n",
                c.pass,
                c.mismatch,
                c.unsupported,
                c.total(),
                c.seconds
            );
        }
        out += &format!(
            "passes needing constant inputs: native {}, component {}\n",
            self.passed_with_constant_inputs.0, self.passed_with_constant_inputs.1
        );
        out += &format!("lost (native passes, component does not): {}\n", self.lost.len());
        if !self.gained.is_empty() {
            out += &format!(
                "gained (component passes, native does not): {}\n",
                self.gained.len()
            );
        }
        out
    }
}

/// The first line of a message, shortened to `max` characters, for one-line listings.
pub fn one_line(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or("");
    if line.chars().count() <= max {
        line.to_string()
    } else {
        format!("{}…", line.chars().take(max).collect::<String>())
    }
}

fn last_line(s: &str) -> &str {
    s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("")
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Keeps panics of this runner's threads (tract on a hostile case) out of the output:
/// they are caught and reported as outcomes. Other threads' panics print as before.
fn install_quiet_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let ours = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with(THREAD_PREFIX));
            if !ours {
                previous(info);
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_compare_like_numpy_allclose_and_everything_else_exactly() {
        let tol = Tolerance::default();
        assert!(close(1000.0, 1000.9, tol));
        assert!(!close(1000.0, 1001.1, tol));
        assert!(close(f64::NAN, f64::NAN, tol));
        assert!(!close(0.0, f64::NAN, tol));
        assert!(close(f64::INFINITY, f64::INFINITY, tol));
        assert!(!close(f64::INFINITY, f64::NEG_INFINITY, tol));
        let f = |v: &[f32]| Tensor::from_f32("y", &[v.len() as u64], v);
        assert!(compare(&[f(&[1.0, 2.0])], &[f(&[1.0, 2.0005])], tol).is_ok());
        assert!(
            compare(&[f(&[1.0, 2.0])], &[f(&[1.0, 2.1])], tol)
                .unwrap_err()
                .contains("1 of 2")
        );
        assert!(
            compare(&[f(&[1.0])], &[f(&[1.0, 2.0])], tol)
                .unwrap_err()
                .contains("shape")
        );
        assert!(compare(&[], &[f(&[1.0])], tol).is_err());
        let i = |v: i64| Tensor {
            name: "i".into(),
            element_type: ElementType::I64,
            shape: vec![1],
            data: v.to_le_bytes().to_vec(),
        };
        assert!(compare(&[i(1 << 60)], &[i((1 << 60) + 1)], tol).is_err());
        assert!(compare(&[i(7)], &[f(&[7.0])], tol).unwrap_err().contains("INT64"));
    }

    #[test]
    fn only_tensors_of_carried_types_are_accepted() {
        let info = |value| pb::ValueInfoProto {
            name: "x".into(),
            r#type: Some(pb::TypeProto {
                denotation: String::new(),
                value,
            }),
            doc_string: String::new(),
        };
        let tensor = |t: DataType| {
            Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: t as i32,
                shape: None,
            }))
        };
        assert_eq!(
            carried_type("input", &info(tensor(DataType::Float))),
            Ok(ElementType::F32)
        );
        assert!(
            carried_type("input", &info(tensor(DataType::String)))
                .unwrap_err()
                .contains("String")
        );
        assert!(carried_type("input", &info(tensor(DataType::Bfloat16))).is_err());
        assert!(
            carried_type("input", &info(None))
                .unwrap_err()
                .contains("sequence")
        );
    }
}
