//! Loading, optimising and running an ONNX model with tract.

use crate::convert::{chain, element_type, from_tract, to_tract};
use kiln_types::{EngineError, LoadOptions, ModelInfo, Tensor, TensorSpec, format_shape};
use std::sync::Arc;
use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::GenericFactoid;

/// Version of tract-onnx the engine is built with.
pub const TRACT_VERSION: &str = "0.23.9";

/// A loaded, optimised model ready to run. `Send + Sync`: share it across threads.
pub struct Model {
    plan: Arc<TypedRunnableModel>,
    info: ModelInfo,
    /// Input dims as tract sees them, to check requests: `None` for symbolic dims.
    input_dims: Vec<Vec<Option<u64>>>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("info", &self.info).finish()
    }
}

/// The tract-onnx framework with Kiln's extra `ai.onnx.ml` operators.
pub fn onnx_framework() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    crate::ml::register_ops(&mut onnx.op_register);
    onnx
}

impl Model {
    /// Parses, checks, fixes input facts, optimises and plans an ONNX model.
    pub fn load(onnx_bytes: &[u8], options: &LoadOptions) -> Result<Model, EngineError> {
        let onnx = onnx_framework();
        let proto = onnx
            .proto_model_for_read(&mut &onnx_bytes[..])
            .map_err(|e| EngineError::InvalidInput(format!("not an ONNX model: {}", chain(&e))))?;
        let graph = proto
            .graph
            .as_ref()
            .filter(|g| !g.node.is_empty() && !g.output.is_empty());
        let Some(graph) = graph else {
            return Err(EngineError::InvalidInput(
                "not an ONNX model: no graph with nodes and outputs".into(),
            ));
        };
        check_operators(graph, &onnx.op_register)?;
        let labels = class_labels(graph);

        let mut model = onnx
            .model_for_proto_model(&proto)
            .map_err(|e| EngineError::Unsupported(format!("cannot import model: {}", chain(&e))))?;
        apply_input_facts(&mut model, options)?;
        // Names as the ONNX graph declares them: the optimiser may relabel outlets (an
        // input feeding an Identity takes the Identity's output name).
        let input_names = outlet_names(&model, model.input_outlets().map_err(internal)?, true);
        let output_names = outlet_names(&model, model.output_outlets().map_err(internal)?, false);
        let mut typed = model
            .into_typed()
            .map_err(|e| EngineError::Unsupported(format!("cannot import model: {}", chain(&e))))?;
        // tract types ONNX `Cast(to=INT64)` as TDim; label outputs must leave as i64.
        crate::ml::tdim_outputs_to_i64(&mut typed).map_err(internal)?;
        let typed = typed
            .into_optimized()
            .map_err(|e| EngineError::Unsupported(format!("cannot optimise model: {}", chain(&e))))?;

        let inputs = specs(&typed, typed.input_outlets().map_err(internal)?, &input_names)?;
        let outputs = specs(&typed, typed.output_outlets().map_err(internal)?, &output_names)?;
        let input_dims = typed
            .input_outlets()
            .map_err(internal)?
            .iter()
            .map(|o| {
                let fact = typed.outlet_fact(*o).map_err(internal)?;
                Ok(fact
                    .shape
                    .iter()
                    .map(|d| d.to_i64().ok().map(|v| v as u64))
                    .collect())
            })
            .collect::<Result<Vec<_>, EngineError>>()?;

        let mut metadata = vec![
            ("kiln.version".to_string(), kiln_types::KILN_VERSION.to_string()),
            ("tract.version".to_string(), TRACT_VERSION.to_string()),
        ];
        if !proto.producer_name.is_empty() {
            metadata.push((
                "onnx.producer".into(),
                format!("{} {}", proto.producer_name, proto.producer_version)
                    .trim()
                    .to_string(),
            ));
        }
        let opsets: Vec<String> = proto
            .opset_import
            .iter()
            .map(|o| {
                format!(
                    "{}={}",
                    if o.domain.is_empty() { "ai.onnx" } else { &o.domain },
                    o.version
                )
            })
            .collect();
        metadata.push(("onnx.opsets".into(), opsets.join(",")));
        for p in &proto.metadata_props {
            metadata.push((format!("onnx.meta.{}", p.key), p.value.clone()));
        }

        let name = if !options.name.is_empty() {
            options.name.clone()
        } else if !graph.name.is_empty() {
            graph.name.clone()
        } else {
            "model".to_string()
        };
        let info = ModelInfo {
            name,
            version: options.version.clone(),
            source_digest: kiln_types::digest(onnx_bytes),
            inputs,
            outputs,
            labels,
            metadata,
        };
        let plan = typed
            .into_runnable()
            .map_err(|e| EngineError::Unsupported(format!("cannot plan model: {}", chain(&e))))?;
        Ok(Model {
            plan,
            info,
            input_dims,
        })
    }

    /// The model's description.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Zero-filled inputs of batch size 1 (symbolic dims set to 1): a smoke test.
    pub fn sample_inputs(&self) -> Vec<Tensor> {
        self.info
            .inputs
            .iter()
            .map(|s| {
                let shape: Vec<u64> = s
                    .shape
                    .iter()
                    .map(|d| if *d < 0 { 1 } else { *d as u64 })
                    .collect();
                let n = Tensor::element_count(&shape).unwrap_or(0);
                Tensor {
                    name: s.name.clone(),
                    element_type: s.element_type,
                    shape,
                    data: vec![0; n * s.element_type.size()],
                }
            })
            .collect()
    }

    /// Checks inputs against the model's specs and orders them as the model wants.
    pub fn check_inputs<'a>(&self, inputs: &'a [Tensor]) -> Result<Vec<&'a Tensor>, EngineError> {
        let specs = &self.info.inputs;
        let names = || {
            specs
                .iter()
                .map(|s| format!("`{}`", s.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if inputs.len() != specs.len() {
            return Err(EngineError::InvalidInput(format!(
                "the model takes {} input(s) ({}), got {}",
                specs.len(),
                names(),
                inputs.len()
            )));
        }
        let by_position = inputs.iter().all(|t| t.name.is_empty());
        let mut ordered = Vec::with_capacity(specs.len());
        for (ix, spec) in specs.iter().enumerate() {
            let t = if by_position {
                &inputs[ix]
            } else {
                let mut found = inputs.iter().filter(|t| t.name == spec.name);
                match (found.next(), found.next()) {
                    (Some(t), None) => t,
                    (Some(_), Some(_)) => {
                        return Err(EngineError::InvalidInput(format!(
                            "input `{}` given twice",
                            spec.name
                        )));
                    }
                    (None, _) => {
                        let unknown: Vec<_> = inputs
                            .iter()
                            .filter(|t| !specs.iter().any(|s| s.name == t.name))
                            .map(|t| format!("`{}`", t.name))
                            .collect();
                        return Err(EngineError::InvalidInput(format!(
                            "missing input `{}`; unknown input(s) {}; the model's inputs are {}",
                            spec.name,
                            unknown.join(", "),
                            names()
                        )));
                    }
                }
            };
            if t.element_type != spec.element_type {
                return Err(EngineError::InvalidInput(format!(
                    "input `{}` must be {}, got {}",
                    spec.name, spec.element_type, t.element_type
                )));
            }
            let dims = &self.input_dims[ix];
            let shape_ok = t.shape.len() == dims.len()
                && t.shape
                    .iter()
                    .zip(dims)
                    .all(|(got, want)| want.is_none_or(|w| w == *got));
            if !shape_ok {
                return Err(EngineError::InvalidInput(format!(
                    "input `{}` must have shape {} (-1: any size), got {:?}",
                    spec.name,
                    format_shape(&spec.shape),
                    t.shape
                )));
            }
            if t.shape.contains(&0) {
                return Err(EngineError::InvalidInput(format!(
                    "input `{}` is empty (shape {:?})",
                    spec.name, t.shape
                )));
            }
            t.check_len()?;
            ordered.push(t);
        }
        Ok(ordered)
    }

    /// Runs the model on a fresh state.
    pub fn predict(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, EngineError> {
        let mut state = self.plan.spawn().map_err(internal)?;
        self.predict_with(&mut state, inputs)
    }

    /// A reusable run state: keeps buffers between calls on one thread.
    pub fn new_state(&self) -> Result<TypedSimpleState, EngineError> {
        self.plan.spawn().map_err(internal)
    }

    /// Runs the model reusing `state` (from [`Model::new_state`]).
    pub fn predict_with(
        &self,
        state: &mut TypedSimpleState,
        inputs: &[Tensor],
    ) -> Result<Vec<Tensor>, EngineError> {
        let ordered = self.check_inputs(inputs)?;
        let values: TVec<TValue> = ordered
            .into_iter()
            .map(|t| to_tract(t).map(|t| t.into_tvalue()))
            .collect::<Result<_, _>>()?;
        let outputs = state
            .run(values)
            .map_err(|e| EngineError::Internal(format!("model run failed: {}", chain(&e))))?;
        outputs
            .iter()
            .zip(&self.info.outputs)
            .map(|(t, spec)| from_tract(&spec.name, t))
            .collect()
    }
}

fn internal(e: TractError) -> EngineError {
    EngineError::Internal(chain(&e))
}

/// Refuses models with operators the engine does not know, naming the op and node.
fn check_operators(
    graph: &pb::GraphProto,
    reg: &tract_onnx::model::OnnxOpRegister,
) -> Result<(), EngineError> {
    let missing: Vec<String> = graph
        .node
        .iter()
        .filter(|n| !reg.0.contains_key(&n.op_type))
        .map(|n| {
            let domain = if n.domain.is_empty() { "ai.onnx" } else { &n.domain };
            let node = if n.name.is_empty() {
                n.output.first().cloned().unwrap_or_default()
            } else {
                n.name.clone()
            };
            format!("operator `{}` (domain {domain}) at node `{node}`", n.op_type)
        })
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(EngineError::Unsupported(format!(
            "the model uses {} Kiln's engine does not implement: {}",
            if missing.len() == 1 {
                "an operator"
            } else {
                "operators"
            },
            missing.join("; ")
        )))
    }
}

/// Class labels from the first classifier node that declares them.
fn class_labels(graph: &pb::GraphProto) -> Vec<String> {
    for node in &graph.node {
        for attr in &node.attribute {
            if (attr.name == "classlabels_int64s" || attr.name == "classlabels_ints") && !attr.ints.is_empty()
            {
                return attr.ints.iter().map(|i| i.to_string()).collect();
            }
            if attr.name == "classlabels_strings" && !attr.strings.is_empty() {
                return attr
                    .strings
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect();
            }
        }
    }
    Vec::new()
}

/// Sets every input's type and shape: given shapes first, else the ONNX declaration
/// with an unknown first dimension made the batch symbol `N`.
fn apply_input_facts(model: &mut InferenceModel, options: &LoadOptions) -> Result<(), EngineError> {
    let batch = model.sym("N");
    let outlets = model.input_outlets().map_err(internal)?.to_vec();
    let input_names: Vec<String> = outlets.iter().map(|o| model.node(o.node).name.clone()).collect();
    if let Some(unknown) = options.input_shapes.keys().find(|k| !input_names.contains(k)) {
        return Err(EngineError::InvalidInput(format!(
            "--input-shape names `{unknown}`, but the model's inputs are: {}",
            input_names.join(", ")
        )));
    }
    for (ix, name) in input_names.iter().enumerate() {
        let fact = model.input_fact(ix).map_err(internal)?.clone();
        let dt = match fact.datum_type {
            GenericFactoid::Only(dt) => dt,
            GenericFactoid::Any => {
                return Err(EngineError::Unsupported(format!(
                    "input `{name}` has no element type"
                )));
            }
        };
        if element_type(dt).is_none() {
            return Err(EngineError::Unsupported(format!(
                "input `{name}` has element type {dt:?}, which Kiln cannot carry"
            )));
        }
        let shape: Vec<TDim> = if let Some(given) = options.input_shapes.get(name) {
            given
                .iter()
                .map(|d| match *d {
                    -1 => Ok(TDim::Sym(batch.clone())),
                    d if d > 0 => Ok(TDim::Val(d)),
                    d => Err(EngineError::InvalidInput(format!(
                        "input `{name}`: dimension {d} is not valid (use -1 or > 0)"
                    ))),
                })
                .collect::<Result<_, _>>()?
        } else {
            if fact.shape.is_open() {
                return Err(EngineError::InvalidInput(format!(
                    "input `{name}` has no declared rank; give its shape with --input-shape {name}=1,..."
                )));
            }
            fact.shape
                .dims()
                .enumerate()
                .map(|(axis, d)| match d {
                    GenericFactoid::Only(d) => Ok(d.clone()),
                    GenericFactoid::Any if axis == 0 => Ok(TDim::Sym(batch.clone())),
                    GenericFactoid::Any => Err(EngineError::InvalidInput(format!(
                        "input `{name}` has an unknown dimension {axis}; give its shape with --input-shape {name}=..."
                    ))),
                })
                .collect::<Result<_, _>>()?
        };
        model
            .set_input_fact(ix, InferenceFact::dt_shape(dt, shape))
            .map_err(internal)?;
    }
    Ok(())
}

/// ONNX names of a model's inputs (source node names) or outputs (outlet labels).
fn outlet_names(model: &InferenceModel, outlets: &[OutletId], inputs: bool) -> Vec<String> {
    outlets
        .iter()
        .map(|o| match (inputs, model.outlet_label(*o)) {
            (false, Some(label)) => label.to_string(),
            _ => model.node(o.node).name.clone(),
        })
        .collect()
}

/// Specs of the given outlets, named by `names` (same order).
fn specs(model: &TypedModel, outlets: &[OutletId], names: &[String]) -> Result<Vec<TensorSpec>, EngineError> {
    if outlets.len() != names.len() {
        return Err(EngineError::Internal(format!(
            "the optimised model has {} inputs or outputs where the ONNX graph has {}",
            outlets.len(),
            names.len()
        )));
    }
    outlets
        .iter()
        .zip(names)
        .map(|(o, name)| {
            let fact = model.outlet_fact(*o).map_err(internal)?;
            let name = name.clone();
            let element_type = element_type(fact.datum_type).ok_or_else(|| {
                EngineError::Unsupported(format!(
                    "`{name}` has element type {:?}, which Kiln cannot carry (string labels: convert classes to integers)",
                    fact.datum_type
                ))
            })?;
            let shape = fact.shape.iter().map(|d| d.to_i64().unwrap_or(-1)).collect();
            Ok(TensorSpec { name, element_type, shape })
        })
        .collect()
}
