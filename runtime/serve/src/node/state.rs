//! `GET /admin/v1/state`: what the node holds and serves, and its counters, read from the
//! server's own Prometheus metrics so the sync service and `/metrics` never disagree.

use crate::metrics::empty_stats;
use crate::state::State;
use kiln_node_api::{NodeState, ShadowStats};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The node's state now.
pub(crate) async fn collect(state: &Arc<State>) -> anyhow::Result<NodeState> {
    let table = state.table();
    let catalog = state.catalog.clone();
    // The registry answers from SQLite: off the async workers.
    let digests = tokio::task::spawn_blocking(move || catalog.stored_digests()).await??;
    let mut loaded: Vec<String> = table.loaded().into_keys().collect();
    loaded.sort();

    // Every served version and shadow appears, with zeros until it gets traffic.
    let mut versions = state.metrics.version_stats();
    let counted: BTreeSet<(String, u64)> = versions.iter().map(|v| (v.model.clone(), v.version)).collect();
    for (name, routes) in &table.models {
        for number in routes.versions.keys() {
            if !counted.contains(&(name.clone(), *number)) {
                versions.push(empty_stats(&(name.clone(), *number)));
            }
        }
    }
    versions.sort_by(|a, b| (&a.model, a.version).cmp(&(&b.model, b.version)));
    let mut shadows = state.metrics.shadow_stats();
    for (name, routes) in &table.models {
        if let Some(shadow) = &routes.shadow
            && !shadows
                .iter()
                .any(|s| &s.model == name && s.version == shadow.version)
        {
            shadows.push(ShadowStats {
                model: name.clone(),
                version: shadow.version,
                ..ShadowStats::default()
            });
        }
    }
    shadows.sort_by(|a, b| (&a.model, a.version).cmp(&(&b.model, b.version)));

    Ok(NodeState {
        node: state.node_name(),
        kiln_version: kiln_types::KILN_VERSION.to_string(),
        instance_id: state.instance_id.clone(),
        uptime_seconds: state.started.elapsed().as_secs_f64(),
        ready: state.ready.load(Ordering::Acquire),
        mode: state.mode().to_string(),
        routing: table.routing(),
        digests,
        loaded,
        versions,
        shadows,
        last_error: state.last_error(),
        sync: state.sync_target.get().map(|t| t.status()),
    })
}
