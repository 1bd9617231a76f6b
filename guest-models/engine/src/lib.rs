//! Kiln's model engine: loads an ONNX model with tract, fixes its input facts, optimises
//! it and runs it on [`Tensor`]s. The same code runs natively (`kiln compile` validation,
//! native baselines) and inside the wasm32 guest component, the browser and workers.

pub mod bundle;
pub mod error;
pub mod info;
#[cfg(feature = "tract")]
pub mod ml;
#[cfg(feature = "tract")]
pub mod model;
pub mod tensor;

pub use bundle::{Bundle, BundleConfig};
pub use error::EngineError;
pub use info::{LoadOptions, ModelInfo, TensorSpec};
#[cfg(feature = "tract")]
pub use model::Model;
pub use tensor::{ElementType, Tensor};

/// Version of this engine (and of Kiln), recorded in every compiled component.
pub const KILN_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Version of tract-onnx the engine is built with.
pub const TRACT_VERSION: &str = "0.23.9";

/// tract's run state, for hosts that keep one per thread (see [`Model::new_state`]).
#[cfg(feature = "tract")]
pub mod tract_state {
    pub use tract_onnx::prelude::TypedSimpleState;
}
