//! The generic Kiln model component. `kiln compile` runs `wizer-initialize` under Wizer
//! with a model bundle on stdin: the ONNX model is parsed, optimised and planned once, and
//! the resulting memory is snapshotted into the output component, so a fresh instance is
//! ready to predict. A component that was not pre-initialized loads lazily from stdin.

use kiln_engine::tract_state::TypedSimpleState;
use kiln_engine::{Bundle, EngineError, Model};
use std::cell::RefCell;
use std::io::Read;

wit_bindgen::generate!({
    path: "../wit",
    world: "model",
});

use exports::kiln::model::inference::Guest as Inference;
use kiln::model::types as wit;

struct Loaded {
    model: Model,
    state: TypedSimpleState,
    info: wit::ModelInfo,
}

thread_local! {
    // wasm32-wasip2 is single-threaded: this is one static, captured by the snapshot.
    static LOADED: RefCell<Option<Result<Loaded, EngineError>>> = const { RefCell::new(None) };
}

fn load_from_stdin() -> Result<Loaded, EngineError> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .map_err(|e| EngineError::Internal(format!("reading the model bundle: {e}")))?;
    if bytes.is_empty() {
        return Err(EngineError::Internal(
            "this component holds no model: it was not pre-initialized by `kiln compile` and got no bundle on stdin".into(),
        ));
    }
    let bundle = Bundle::decode(&bytes)?;
    let model = Model::load(&bundle.onnx, &bundle.config.options)?;
    let state = model.new_state()?;
    let info = to_wit_info(model.info());
    Ok(Loaded { model, state, info })
}

fn with_loaded<R>(f: impl FnOnce(&mut Loaded) -> R) -> Result<R, EngineError> {
    LOADED.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(load_from_stdin());
        }
        match slot.as_mut() {
            Some(Ok(loaded)) => Ok(f(loaded)),
            Some(Err(e)) => Err(e.clone()),
            None => Err(EngineError::Internal("model slot empty".into())),
        }
    })
}

fn to_wit_type(t: kiln_engine::ElementType) -> wit::ElementType {
    use kiln_engine::ElementType as E;
    match t {
        E::F16 => wit::ElementType::Fp16,
        E::F32 => wit::ElementType::Fp32,
        E::F64 => wit::ElementType::Fp64,
        E::I8 => wit::ElementType::Int8,
        E::I16 => wit::ElementType::Int16,
        E::I32 => wit::ElementType::Int32,
        E::I64 => wit::ElementType::Int64,
        E::U8 => wit::ElementType::Uint8,
        E::U16 => wit::ElementType::Uint16,
        E::U32 => wit::ElementType::Uint32,
        E::U64 => wit::ElementType::Uint64,
        E::Bool => wit::ElementType::Boolean,
    }
}

fn from_wit_type(t: wit::ElementType) -> kiln_engine::ElementType {
    use kiln_engine::ElementType as E;
    match t {
        wit::ElementType::Fp16 => E::F16,
        wit::ElementType::Fp32 => E::F32,
        wit::ElementType::Fp64 => E::F64,
        wit::ElementType::Int8 => E::I8,
        wit::ElementType::Int16 => E::I16,
        wit::ElementType::Int32 => E::I32,
        wit::ElementType::Int64 => E::I64,
        wit::ElementType::Uint8 => E::U8,
        wit::ElementType::Uint16 => E::U16,
        wit::ElementType::Uint32 => E::U32,
        wit::ElementType::Uint64 => E::U64,
        wit::ElementType::Boolean => E::Bool,
    }
}

fn to_wit_spec(s: &kiln_engine::TensorSpec) -> wit::TensorSpec {
    wit::TensorSpec {
        name: s.name.clone(),
        element_type: to_wit_type(s.element_type),
        shape: s.shape.clone(),
    }
}

fn to_wit_info(i: &kiln_engine::ModelInfo) -> wit::ModelInfo {
    wit::ModelInfo {
        name: i.name.clone(),
        version: i.version.clone(),
        source_digest: i.source_digest.clone(),
        inputs: i.inputs.iter().map(to_wit_spec).collect(),
        outputs: i.outputs.iter().map(to_wit_spec).collect(),
        labels: i.labels.clone(),
        metadata: i.metadata.clone(),
    }
}

fn to_wit_error(e: EngineError) -> wit::Error {
    match e {
        EngineError::InvalidInput(m) => wit::Error::InvalidInput(m),
        EngineError::Unsupported(m) => wit::Error::Unsupported(m),
        EngineError::Internal(m) => wit::Error::Internal(m),
    }
}

struct Component;

impl Inference for Component {
    fn info() -> wit::ModelInfo {
        match with_loaded(|l| l.info.clone()) {
            Ok(info) => info,
            Err(e) => wit::ModelInfo {
                name: String::new(),
                version: String::new(),
                source_digest: String::new(),
                inputs: vec![],
                outputs: vec![],
                labels: vec![],
                metadata: vec![("kiln.error".into(), e.to_string())],
            },
        }
    }

    fn predict(inputs: Vec<wit::Tensor>) -> Result<Vec<wit::Tensor>, wit::Error> {
        let inputs: Vec<kiln_engine::Tensor> = inputs
            .into_iter()
            .map(|t| kiln_engine::Tensor {
                name: t.name,
                element_type: from_wit_type(t.element_type),
                shape: t.shape,
                data: t.data,
            })
            .collect();
        let outputs = with_loaded(|l| l.model.predict_with(&mut l.state, &inputs))
            .and_then(|r| r)
            .map_err(to_wit_error)?;
        Ok(outputs
            .into_iter()
            .map(|t| wit::Tensor {
                name: t.name,
                element_type: to_wit_type(t.element_type),
                shape: t.shape,
                data: t.data,
            })
            .collect())
    }
}

impl Guest for Component {
    fn wizer_initialize() {
        if let Err(e) = with_loaded(|_| ()) {
            // Wizer reports the trap; stderr carries the reason to `kiln compile`.
            eprintln!("kiln-guest: {e}");
            std::process::abort();
        }
    }
}

export!(Component);
