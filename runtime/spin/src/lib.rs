//! `kiln spin up`: runs the Spin app of a manifest (the Kiln router and its model
//! dependencies) the way Spin 4 does, without the Spin CLI: a wasi:http p3 handler host
//! for the router, `spin:variables` from the manifest and `SPIN_VARIABLE_*`, and each
//! model dependency loaded into the Kiln host.

pub mod app;
pub mod manifest;
pub mod serve;
pub mod variables;

pub use app::SpinApp;
