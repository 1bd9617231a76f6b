//! The router's eight model slots (`model-a` … `model-h`, see `wit/router.wit`; Spin's
//! dependency names are kebab words that start with a letter): each is
//! a `kiln:model/inference` export of a model component, bound by Spin's component
//! dependencies (or by `kiln spin up`). Converts between the slots' WIT types and
//! `kiln-engine`'s.

use kiln_types::{ElementType, EngineError, ModelInfo, Tensor, TensorSpec};

spin_sdk::wit_bindgen::generate!({
    runtime_path: "spin_sdk::wit_bindgen::rt",
    path: "wit",
    world: "router",
    generate_all,
});

use kiln::model::types;

/// Number of slots the router imports.
pub const SLOTS: usize = 8;

macro_rules! slot_calls {
    ($($index:literal => $module:ident),* $(,)?) => {
        /// Calls `info()` on slot `index`.
        pub fn info(index: usize) -> Option<ModelInfo> {
            match index {
                $($index => {
                    use $module as m;
                    let i = m::info();
                    let spec = |s: types::TensorSpec| TensorSpec {
                        name: s.name,
                        element_type: elem!(types, s.element_type),
                        shape: s.shape,
                    };
                    Some(ModelInfo {
                        name: i.name,
                        version: i.version,
                        source_digest: i.source_digest,
                        inputs: i.inputs.into_iter().map(spec).collect(),
                        outputs: i.outputs.into_iter().map(spec).collect(),
                        labels: i.labels,
                        metadata: i.metadata,
                    })
                })*
                _ => None,
            }
        }

        /// Calls `predict()` on slot `index`.
        pub fn predict(index: usize, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError> {
            match index {
                $($index => {
                    use $module as m;
                    let inputs: Vec<types::Tensor> = inputs
                        .into_iter()
                        .map(|t| types::Tensor {
                            name: t.name,
                            element_type: to_slot!(types, t.element_type),
                            shape: t.shape,
                            data: t.data,
                        })
                        .collect();
                    match m::predict(&inputs) {
                        Ok(outputs) => Ok(outputs
                            .into_iter()
                            .map(|t| Tensor {
                                name: t.name,
                                element_type: elem!(types, t.element_type),
                                shape: t.shape,
                                data: t.data,
                            })
                            .collect()),
                        Err(types::Error::InvalidInput(e)) => Err(EngineError::InvalidInput(e)),
                        Err(types::Error::Unsupported(e)) => Err(EngineError::Unsupported(e)),
                        Err(types::Error::Internal(e)) => Err(EngineError::Internal(e)),
                    }
                })*
                _ => Err(EngineError::Internal(format!("no model slot {index}"))),
            }
        }
    };
}

macro_rules! elem {
    ($m:ident, $t:expr) => {
        match $t {
            $m::ElementType::Fp16 => ElementType::F16,
            $m::ElementType::Fp32 => ElementType::F32,
            $m::ElementType::Fp64 => ElementType::F64,
            $m::ElementType::Int8 => ElementType::I8,
            $m::ElementType::Int16 => ElementType::I16,
            $m::ElementType::Int32 => ElementType::I32,
            $m::ElementType::Int64 => ElementType::I64,
            $m::ElementType::Uint8 => ElementType::U8,
            $m::ElementType::Uint16 => ElementType::U16,
            $m::ElementType::Uint32 => ElementType::U32,
            $m::ElementType::Uint64 => ElementType::U64,
            $m::ElementType::Boolean => ElementType::Bool,
        }
    };
}

macro_rules! to_slot {
    ($m:ident, $t:expr) => {
        match $t {
            ElementType::F16 => $m::ElementType::Fp16,
            ElementType::F32 => $m::ElementType::Fp32,
            ElementType::F64 => $m::ElementType::Fp64,
            ElementType::I8 => $m::ElementType::Int8,
            ElementType::I16 => $m::ElementType::Int16,
            ElementType::I32 => $m::ElementType::Int32,
            ElementType::I64 => $m::ElementType::Int64,
            ElementType::U8 => $m::ElementType::Uint8,
            ElementType::U16 => $m::ElementType::Uint16,
            ElementType::U32 => $m::ElementType::Uint32,
            ElementType::U64 => $m::ElementType::Uint64,
            ElementType::Bool => $m::ElementType::Boolean,
        }
    };
}

slot_calls! {
    0 => model_a,
    1 => model_b,
    2 => model_c,
    3 => model_d,
    4 => model_e,
    5 => model_f,
    6 => model_g,
    7 => model_h,
}
