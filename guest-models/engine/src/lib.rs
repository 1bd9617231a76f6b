//! Kiln's model engine: loads an ONNX model with tract, fixes its input facts, optimises
//! it and runs it on [`Tensor`]s. The same code runs natively (`kiln compile` validation,
//! native baselines) and inside the wasm32 guest component, the browser and workers.
//! The data it works on ([`Tensor`], [`ModelInfo`], bundles) is `kiln-types`'.

pub mod convert;
pub mod ml;
pub mod model;

pub use kiln_types::{
    Bundle, BundleConfig, ElementType, EngineError, KILN_VERSION, LoadOptions, ModelInfo, Tensor, TensorSpec,
};
pub use model::{Model, TRACT_VERSION};

/// tract's run state, for hosts that keep one per thread (see [`Model::new_state`]).
pub mod tract_state {
    pub use tract_onnx::prelude::TypedSimpleState;
}
