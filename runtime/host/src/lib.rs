//! Kiln's host: runs `kiln:model` components in wasmtime with a sandbox (no filesystem,
//! network, environment or clock; a memory cap and an epoch deadline per call), an AOT
//! cache of compiled components, two isolation modes, and the `kiln compile` pipeline
//! that pre-initializes models with Wizer.

pub mod aot_cache;
pub mod bindings;
pub mod compile;
pub mod config;
pub mod epoch;
pub mod error;
pub mod function_cache;
pub mod guest;
pub mod host;
mod instance;
pub mod memory;
pub mod sandbox;
mod streams;

pub use aot_cache::CacheOutcome;
pub use config::{HostConfig, Isolation};
pub use error::HostError;
pub use host::{Host, LoadedModel};
