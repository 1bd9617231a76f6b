//! A routing table pushed to a managed node (`PUT /admin/v1/routing`): all or nothing.
//! Every version is loaded, verified, compiled and warmed first; only when all of them
//! are ready is the table persisted and swapped in. Unlike a registry reload, one broken
//! version rejects the whole table and the previous one keeps serving.

use super::store::NodeStoreError;
use crate::reload::Loader;
use crate::state::State;
use crate::table::Table;
use anyhow::Context;
use axum::http::StatusCode;
use kiln_node_api::{AdminReply, RoutingTable};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The highest routing generation a node accepts: 2^53 − 1, the largest integer every JSON
/// tool reads exactly (and far below SQLite's limit). A sync service counts up by one per
/// change, so it never gets there; a hand-made push of `u64::MAX` is refused instead of
/// locking the node out of every later push.
pub(crate) const MAX_GENERATION: u64 = (1 << 53) - 1;

/// Why a pushed routing table was not installed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PushError {
    /// The node serves its local registry.
    #[error("this node serves its local registry; start it with --managed or --join to accept pushes")]
    NotManaged,
    /// `RoutingTable::validate` refused it.
    #[error("the routing table is invalid: {0}")]
    Invalid(String),
    /// Above [`MAX_GENERATION`].
    #[error(
        "routing generation {0} is above the highest this node accepts ({MAX_GENERATION}); a sync service counts its generations up from 1"
    )]
    TooHigh(u64),
    /// A reset named a generation this node does not serve (another push came first).
    #[error(
        "this node serves routing generation {served}, not {expected}: the reset is refused; read the state and reset from what it serves"
    )]
    ResetMismatch {
        /// The generation the reset replaces.
        expected: u64,
        /// The served generation.
        served: u64,
    },
    /// Older than what is served (a delayed push from a previous sync round).
    #[error(
        "routing generation {pushed} is older than the generation {served} this node serves; push a newer generation (or reset the node: `kiln sync reset-node`)"
    )]
    Stale {
        /// The pushed generation.
        pushed: u64,
        /// The served generation.
        served: u64,
    },
    /// Components the table names are not stored.
    #[error(
        "the routing table needs components this node does not have: {}; upload them first with PUT /admin/v1/components/{{digest}}",
        .0.join(", ")
    )]
    Missing(Vec<String>),
    /// A version failed to load.
    #[error("not switching to routing generation {generation}: {reason}; the previous table keeps serving")]
    LoadFailed {
        /// The pushed generation.
        generation: u64,
        /// Which versions failed and why.
        reason: String,
    },
    /// Persisting the table failed.
    #[error("storing the routing table: {0}; the previous table keeps serving")]
    Store(#[from] NodeStoreError),
    /// The server itself failed.
    #[error("{0:#}")]
    Internal(anyhow::Error),
}

impl PushError {
    /// The HTTP status of the answer.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            PushError::NotManaged
            | PushError::Stale { .. }
            | PushError::ResetMismatch { .. }
            | PushError::Missing(_) => StatusCode::CONFLICT,
            PushError::Invalid(_) | PushError::TooHigh(_) | PushError::LoadFailed { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            PushError::Store(_) | PushError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether the node reports it as its last error: an attempt to change what it serves
    /// that failed (a stale or misdirected push changes nothing and is the sender's concern).
    pub(crate) fn is_failed_change(&self) -> bool {
        !matches!(
            self,
            PushError::NotManaged
                | PushError::Stale { .. }
                | PushError::TooHigh(_)
                | PushError::ResetMismatch { .. }
        )
    }
}

/// Installs `pushed` on a managed node, serialised with any other routing change. With
/// `reset_from`, a lower generation is accepted too, provided the node serves exactly
/// that generation (the sync service re-adopting a node an admin reset).
pub(crate) async fn push(
    state: &Arc<State>,
    pushed: RoutingTable,
    reset_from: Option<u64>,
) -> Result<AdminReply, PushError> {
    let store = state.store.clone().ok_or(PushError::NotManaged)?;
    pushed.validate().map_err(PushError::Invalid)?;
    if pushed.generation > MAX_GENERATION {
        return Err(PushError::TooHigh(pushed.generation));
    }
    let _one_at_a_time = state.reload_lock.lock().await;
    let current = state.table();
    if let Some(expected) = reset_from {
        if expected != current.generation {
            return Err(PushError::ResetMismatch {
                expected,
                served: current.generation,
            });
        }
        if pushed.generation < current.generation {
            tracing::warn!(
                from = current.generation,
                to = pushed.generation,
                "routing generation reset by the admin API: accepting a lower generation"
            );
        }
    } else if pushed.generation < current.generation {
        return Err(PushError::Stale {
            pushed: pushed.generation,
            served: current.generation,
        });
    }
    if pushed == current.routing() {
        return Ok(AdminReply {
            changed: false,
            generation: current.generation,
            message: format!("already serving routing generation {}", current.generation),
        });
    }
    let missing: Vec<String> = pushed.digests().into_iter().filter(|d| !store.has(d)).collect();
    if !missing.is_empty() {
        return Err(PushError::Missing(missing));
    }

    let host = state.host.clone();
    let old = current.clone();
    let table = pushed.clone();
    let shared = state.clone();
    let built = tokio::task::spawn_blocking(move || {
        let mut loader = Loader::new(&host, store.as_ref(), &old, table.generation);
        let mut models = BTreeMap::new();
        for (name, routing) in &table.models {
            let (routes, _) = loader.routes(name, routing);
            models.insert(name.clone(), routes);
        }
        let report = loader.report;
        let refused = match report.failure_summary() {
            Some(reason) => Some(PushError::LoadFailed {
                generation: table.generation,
                reason,
            }),
            // Persisted before the swap: a crash after it restarts on the new table.
            None => store.set_routing(&table).err().map(PushError::Store),
        };
        if let Some(e) = refused {
            for (model, _, _) in &report.failed {
                shared.metrics.load_failure(model);
            }
            shared.metrics.reload(false);
            shared.alert_load_failures(&report.failed);
            return Err(e);
        }
        shared.alert_load_failures(&[]);
        Ok((
            Table {
                generation: table.generation,
                models,
                readers: table.readers.clone(),
            },
            report,
        ))
    })
    .await
    .context("the routing load task panicked")
    .map_err(PushError::Internal)?;

    let (table, report) = built.inspect_err(|e| {
        tracing::warn!(generation = pushed.generation, error = %e, "pushed routing table refused");
    })?;
    state.metrics.reload(true);
    let previous = state.swap_table(Arc::new(table));
    tracing::info!(
        generation = pushed.generation,
        previous_generation = previous.generation,
        loaded = report.newly_loaded.len(),
        "pushed routing table swapped in"
    );
    Ok(AdminReply {
        changed: true,
        generation: pushed.generation,
        message: format!(
            "serving routing generation {} ({} model(s), {} component(s) newly loaded)",
            pushed.generation,
            pushed.models.len(),
            report.newly_loaded.len()
        ),
    })
}
