//! Kiln as a Spin host: `kiln spin up` runs the Spin app of a manifest (the Kiln router
//! and its model dependencies) without the Spin CLI, and `kiln export spin` writes a Spin
//! app for what a registry serves.

pub mod app;
pub mod cli;
pub mod export;
pub mod manifest;
pub mod serve;
pub mod variables;

pub use app::SpinApp;
