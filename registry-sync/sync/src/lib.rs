//! `kiln sync`: the registry-sync service. It turns registry state (stages, aliases, what
//! each model serves, rollouts) into each node's desired routing table (`kiln-fleet`),
//! converges every node on it (components first, then the table), drives rollouts from the
//! nodes' own counters, and accepts nodes that join with `kiln serve --join`.
//!
//! Everything it must remember lives in the registry database, so a restarted service
//! continues where it was: node list and status, rollouts with their step, phase and
//! baseline counters, and the routing generation.
//!
//! Layers, each using only those below it: [`state`] (settings, shared state, metrics);
//! `node_client` and `smoke` (talking to one node); `worker` (one thread per node),
//! `controller` (the control loop and rollouts) with `alert` (the alert webhook), `api`
//! (join, status, metrics) and
//! [`sources`] (MLflow); `service` starts and stops them.

mod alert;
mod api;
mod controller;
pub mod drift;
mod monitor;
pub mod node_client;
mod service;
pub mod smoke;
pub mod sources;
pub mod state;
mod worker;

pub use service::{SyncHandle, SyncService};
pub use sources::{MlflowPoller, PrepareFn, ReferenceFn, Source};
pub use state::SyncConfig;
pub use worker::backoff;
