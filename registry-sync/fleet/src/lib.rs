//! Kiln's desired state, computed from the registry: which version of each model serves
//! ([`serving`], the one rule every host follows), the routing table every fleet node
//! should serve ([`desired`]), what the edges serve ([`serving::edge_table`]), and GitOps
//! ([`gitops`]: a `kiln.toml` planned against and applied to the registry). Pure
//! computation over the registry: no network, no async runtime.

pub mod desired;
pub mod gitops;
pub mod serving;

pub use desired::{Desired, compute, is_open, model_routing};
pub use serving::{SERVED_ALIAS, edge_table, local_table, serving_version, targets};
