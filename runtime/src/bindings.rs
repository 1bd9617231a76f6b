//! Host bindings for the `kiln:model` world, generated from `guest-models/wit`.

wasmtime::component::bindgen!({
    path: "../guest-models/wit",
    world: "model",
});

pub use kiln::model::types::{ElementType, Error as GuestError, ModelInfo, Tensor, TensorSpec};
