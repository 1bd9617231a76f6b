//! Host bindings for the `kiln:model` world, generated from `guest-models/wit`, and the
//! conversions between its types and `kiln-types`' (both directions: the host calls
//! models, and `kiln spin up` also serves models to a router component).

wasmtime::component::bindgen!({
    path: "../../guest-models/wit",
    world: "model",
});

pub use kiln::model::types::{ElementType, Error as GuestError, ModelInfo, Tensor, TensorSpec};

use kiln_types::ElementType as K;

/// A Kiln element type as the WIT one.
pub fn to_wit_type(t: K) -> ElementType {
    use ElementType as W;
    match t {
        K::F16 => W::Fp16,
        K::F32 => W::Fp32,
        K::F64 => W::Fp64,
        K::I8 => W::Int8,
        K::I16 => W::Int16,
        K::I32 => W::Int32,
        K::I64 => W::Int64,
        K::U8 => W::Uint8,
        K::U16 => W::Uint16,
        K::U32 => W::Uint32,
        K::U64 => W::Uint64,
        K::Bool => W::Boolean,
    }
}

/// A WIT element type as Kiln's.
pub fn from_wit_type(t: ElementType) -> K {
    use ElementType as W;
    match t {
        W::Fp16 => K::F16,
        W::Fp32 => K::F32,
        W::Fp64 => K::F64,
        W::Int8 => K::I8,
        W::Int16 => K::I16,
        W::Int32 => K::I32,
        W::Int64 => K::I64,
        W::Uint8 => K::U8,
        W::Uint16 => K::U16,
        W::Uint32 => K::U32,
        W::Uint64 => K::U64,
        W::Boolean => K::Bool,
    }
}

/// A Kiln tensor as the WIT one.
pub fn to_wit_tensor(t: kiln_types::Tensor) -> Tensor {
    Tensor {
        name: t.name,
        element_type: to_wit_type(t.element_type),
        shape: t.shape,
        data: t.data,
    }
}

/// A WIT tensor as Kiln's.
pub fn from_wit_tensor(t: Tensor) -> kiln_types::Tensor {
    kiln_types::Tensor {
        name: t.name,
        element_type: from_wit_type(t.element_type),
        shape: t.shape,
        data: t.data,
    }
}

/// Kiln's model info as the WIT record.
pub fn to_wit_info(i: &kiln_types::ModelInfo) -> ModelInfo {
    let spec = |s: &kiln_types::TensorSpec| TensorSpec {
        name: s.name.clone(),
        element_type: to_wit_type(s.element_type),
        shape: s.shape.clone(),
    };
    ModelInfo {
        name: i.name.clone(),
        version: i.version.clone(),
        source_digest: i.source_digest.clone(),
        inputs: i.inputs.iter().map(spec).collect(),
        outputs: i.outputs.iter().map(spec).collect(),
        labels: i.labels.clone(),
        metadata: i.metadata.clone(),
    }
}

/// The WIT model info as Kiln's.
pub fn from_wit_info(i: ModelInfo) -> kiln_types::ModelInfo {
    let spec = |s: TensorSpec| kiln_types::TensorSpec {
        name: s.name,
        element_type: from_wit_type(s.element_type),
        shape: s.shape,
    };
    kiln_types::ModelInfo {
        name: i.name,
        version: i.version,
        source_digest: i.source_digest,
        inputs: i.inputs.into_iter().map(spec).collect(),
        outputs: i.outputs.into_iter().map(spec).collect(),
        labels: i.labels,
        metadata: i.metadata,
    }
}
