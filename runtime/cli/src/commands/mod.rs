//! One module per `kiln` subcommand: its flags and what it does.

pub mod audit;
pub mod compile;
pub mod export;
pub mod inspect;
pub mod models;
pub mod monitor;
pub mod predict;
pub mod registry;
pub mod rollout;
pub mod serve;
pub mod slo;
pub mod spin;
pub mod sync;
pub mod tokens;
pub mod up;
