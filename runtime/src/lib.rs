//! Kiln's host: runs `kiln:model` components in wasmtime with a sandbox (no filesystem,
//! network, environment or clock; a memory cap and an epoch deadline per call), an AOT
//! cache of compiled components, two isolation modes, and the `kiln compile` pipeline
//! that pre-initializes models with Wizer.

pub mod aot_cache;
pub mod bindings;
pub mod bootstrap;
pub mod commands;
pub mod compile;
pub mod config;
pub mod error;
pub mod export;
pub mod function_cache;
pub mod guest;
pub mod host;
pub mod instance;
pub mod node_store;
/// The Open Inference Protocol v2 bodies (moved to `kiln_edge`, shared with the edges).
pub use kiln_edge::oip;
pub mod prediction_cache;
pub mod register;
pub mod registry_catalog;
pub mod sandbox;
pub mod serve;
pub mod spin;

pub use config::{HostConfig, Isolation};
pub use error::HostError;
pub use host::{Host, LoadedModel};
