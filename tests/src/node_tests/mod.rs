//! The ONNX backend node tests (one small model per operator variant, with inputs and
//! reference outputs computed by the `onnx` package) run two ways: natively with Kiln's
//! engine (tract) and inside the sandboxed guest component. The sandbox must not lose a
//! case that native tract passes: both run the same engine, so any difference is a bug
//! in the guest, the host or the tensor plumbing between them.

mod compare;
mod data;
mod summary;

pub use compare::*;
pub use data::*;
pub use summary::*;

use kiln_engine::{Bundle, BundleConfig, ElementType, LoadOptions, Model, Tensor};
use kiln_host::{Host, HostConfig, HostError, Isolation};
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
        host.compile_component(kiln_host::guest::GUEST_WASM)
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
        .and_then(kiln_engine::convert::element_type)
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
    kiln_engine::convert::from_tract(name, &tensor).map_err(|e| format!("tensor `{name}`: {e}"))
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
    use super::compare::close;
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
