//! `kiln sync`: the registry-sync service. It turns registry state (stages, aliases, what
//! each model serves, rollouts) into each node's desired routing table, converges every
//! node on it (components first, then the table), drives rollouts from the nodes' own
//! counters, and accepts nodes that join with `kiln serve --join`.
//!
//! Everything it must remember lives in the registry database, so a restarted service
//! continues where it was: node list and status, rollouts with their step, phase and
//! baseline counters, and the routing generation.

mod api;
mod controller;
pub mod desired;
pub mod node_client;
mod service;
pub mod smoke;
pub mod sources;
mod worker;

pub use service::{Source, SyncConfig, SyncHandle, SyncService};
pub use worker::backoff;
