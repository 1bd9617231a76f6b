//! The managed-node agent (`kiln serve --managed` / `--join`): the node's store of pushed
//! components and routing, the admin API the sync service calls, the all-or-nothing
//! routing push, the node's reported state, and the heartbeats that join a sync service.

pub(crate) mod admin;
pub(crate) mod join;
pub(crate) mod push;
pub(crate) mod state;
pub mod store;
