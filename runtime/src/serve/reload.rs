//! Hot reload: poll the catalog's generation, load new components off the async runtime,
//! then swap the routing table in one step. A version that fails to load leaves its
//! model's previous routes serving and is retried on a later generation.

use super::State;
use super::catalog::{Catalog, ServedVersion};
use super::table::{ModelRoutes, ServedModel, Table};
use crate::host::{Host, LoadedModel};
use anyhow::Context;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// What one reload did.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// The catalog generation the new table reflects.
    pub generation: u64,
    /// Versions now served, as (model, version).
    pub served: Vec<(String, u64)>,
    /// Components loaded by this reload (not already loaded), as (model, version, digest).
    pub newly_loaded: Vec<(String, u64, String)>,
    /// Versions that failed to load, as (model, version, reason).
    pub failed: Vec<(String, u64, String)>,
}

/// Reads, verifies, compiles (or maps from the AOT cache), instantiates and warms one
/// component. Blocking.
fn load_version(host: &Arc<Host>, v: &ServedVersion) -> anyhow::Result<LoadedModel> {
    let bytes = std::fs::read(&v.component)
        .with_context(|| format!("reading the component {}", v.component.display()))?;
    let actual = crate::aot_cache::digest(&bytes);
    if !actual.eq_ignore_ascii_case(&v.digest) {
        anyhow::bail!(
            "the component {} has sha256 {actual}, but the registry says {}: refusing it",
            v.component.display(),
            v.digest
        );
    }
    let (component, outcome) = host
        .component_for_digest(&actual, &bytes)
        .context("compiling the component")?;
    let model = host
        .load_compiled(component, actual, outcome, bytes.len())
        .context("instantiating the component")?;
    model.warm().context("warming the component")?;
    Ok(model)
}

/// Builds the next table from the catalog, reusing every component `old` already holds.
/// Blocking: reads files and compiles.
pub(crate) fn rebuild(
    host: &Arc<Host>,
    catalog: &dyn Catalog,
    old: &Table,
) -> anyhow::Result<(Table, LoadReport)> {
    let generation = catalog.generation().context("reading the catalog generation")?;
    let wanted = catalog.served().context("reading the served versions")?;
    let mut loaded: HashMap<String, Arc<LoadedModel>> = old.loaded();
    let mut bad_digests: HashMap<String, String> = HashMap::new();
    let mut report = LoadReport {
        generation,
        ..LoadReport::default()
    };
    let mut versions: BTreeMap<String, BTreeMap<u64, Arc<ServedModel>>> = BTreeMap::new();
    let mut failed_models: HashSet<String> = HashSet::new();
    for v in &wanted {
        let model = match loaded.get(&v.digest) {
            Some(m) => Ok(m.clone()),
            None => match bad_digests.get(&v.digest) {
                Some(reason) => Err(reason.clone()),
                None => match load_version(host, v) {
                    Ok(m) => {
                        let m = Arc::new(m);
                        loaded.insert(v.digest.clone(), m.clone());
                        report
                            .newly_loaded
                            .push((v.name.clone(), v.version, v.digest.clone()));
                        Ok(m)
                    }
                    Err(e) => {
                        let reason = format!("{e:#}");
                        bad_digests.insert(v.digest.clone(), reason.clone());
                        Err(reason)
                    }
                },
            },
        };
        match model {
            Ok(model) => {
                versions.entry(v.name.clone()).or_default().insert(
                    v.version,
                    Arc::new(ServedModel {
                        name: v.name.clone(),
                        version: v.version,
                        version_label: v.version.to_string(),
                        digest: v.digest.clone(),
                        stage: v.stage.clone(),
                        aliases: v.aliases.clone(),
                        model,
                    }),
                );
            }
            Err(reason) => {
                tracing::warn!(
                    model = %v.name,
                    version = v.version,
                    digest = %v.digest,
                    error = %reason,
                    "model version failed to load; its model keeps its previous routes"
                );
                failed_models.insert(v.name.clone());
                report.failed.push((v.name.clone(), v.version, reason));
            }
        }
    }
    // Every model with a wanted version, also one whose versions all failed.
    let names: HashSet<&String> = wanted.iter().map(|v| &v.name).collect();
    let mut models = BTreeMap::new();
    for name in names {
        let fresh = versions.remove(name).unwrap_or_default();
        let routes = if failed_models.contains(name) {
            // A broken new version must not take traffic away from what was serving:
            // keep the model's old routes whole until a later generation loads cleanly.
            match old.models.get(name) {
                Some(previous) => previous.clone(),
                None => ModelRoutes::from_versions(fresh),
            }
        } else {
            ModelRoutes::from_versions(fresh)
        };
        if !routes.versions.is_empty() {
            models.insert(name.clone(), routes);
        }
    }
    for (name, routes) in &models {
        for number in routes.versions.keys() {
            report.served.push((name.clone(), *number));
        }
    }
    Ok((Table { generation, models }, report))
}

/// Runs one reload (serialised with any other) and swaps the table in.
pub(crate) async fn reload(state: &Arc<State>) -> anyhow::Result<LoadReport> {
    let _one_at_a_time = state.reload_lock.lock().await;
    let old = state.table();
    let (host, catalog) = (state.host.clone(), state.catalog.clone());
    let result = tokio::task::spawn_blocking(move || rebuild(&host, catalog.as_ref(), &old))
        .await
        .context("the reload task panicked")?;
    let (table, report) = match result {
        Ok(r) => r,
        Err(e) => {
            state.metrics.reload(false);
            return Err(e);
        }
    };
    for (model, _, _) in &report.failed {
        state.metrics.load_failure(model);
    }
    state.metrics.reload(report.failed.is_empty());
    let previous = state.swap_table(Arc::new(table));
    tracing::info!(
        generation = report.generation,
        previous_generation = previous.generation,
        served = report.served.len(),
        loaded = report.newly_loaded.len(),
        failed = report.failed.len(),
        "routing table swapped"
    );
    Ok(report)
}

/// Polls the catalog every `poll_interval` and reloads when its generation changes (or
/// until the first load succeeds). Runs until the task is aborted.
pub(crate) async fn poll(state: Arc<State>) {
    let mut ticker = tokio::time::interval(state.config.poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut attempted: Option<u64> = state
        .ready
        .load(Ordering::Acquire)
        .then(|| state.table().generation);
    let mut catalog_down = false;
    let mut reload_failing = false;
    loop {
        ticker.tick().await;
        let catalog = state.catalog.clone();
        let generation = match tokio::task::spawn_blocking(move || catalog.generation()).await {
            Ok(Ok(g)) => {
                catalog_down = false;
                g
            }
            Ok(Err(e)) => {
                if !catalog_down {
                    tracing::warn!(error = %format!("{e:#}"), "cannot read the catalog generation; serving the current table");
                    catalog_down = true;
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the catalog poll panicked");
                continue;
            }
        };
        if attempted == Some(generation) && state.ready.load(Ordering::Acquire) {
            continue;
        }
        match reload(&state).await {
            Ok(report) => {
                attempted = Some(report.generation);
                reload_failing = false;
                state.ready.store(true, Ordering::Release);
            }
            Err(e) => {
                // The catalog could not be read: try again on the next tick.
                if !reload_failing {
                    tracing::warn!(error = %format!("{e:#}"), "reload failed; serving the current table");
                    reload_failing = true;
                }
            }
        }
    }
}
