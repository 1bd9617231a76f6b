//! Hot reload: poll the catalog's generation, load new components off the async runtime,
//! then swap the routing table in one step. A version that fails to load leaves its
//! model's previous routes serving and is retried on a later generation.

use crate::catalog::Catalog;
use crate::state::State;
use crate::table::{ModelRoutes, ServedModel, Table};
use anyhow::Context;
use kiln_host::{Host, LoadedModel};
use kiln_node_api::{ModelRouting, VersionRoute};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
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

impl LoadReport {
    /// The failures in one line, or `None` when everything loaded.
    pub fn failure_summary(&self) -> Option<String> {
        if self.failed.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .failed
            .iter()
            .map(|(model, version, why)| format!("{model} version {version}: {why}"))
            .collect();
        Some(parts.join("; "))
    }
}

/// Verifies, compiles (or maps from the AOT cache), instantiates and warms one component.
/// The file is hashed as it is read, and read whole only when the AOT cache lacks it: a
/// ~20 MB buffer per load would stay in the C library's arenas (RSS steps at promotes).
/// Blocking.
fn load_component(host: &Arc<Host>, path: &Path, digest: &str) -> anyhow::Result<LoadedModel> {
    let reading = || format!("reading the component {}", path.display());
    let file = std::fs::File::open(path).with_context(reading)?;
    let (actual, size) = kiln_types::digest_reader(file).with_context(reading)?;
    let refuse = |actual: &str| {
        anyhow::anyhow!(
            "the component {} has sha256 {actual}, but the routing table says {digest}: refusing it",
            path.display(),
        )
    };
    if !actual.eq_ignore_ascii_case(digest) {
        return Err(refuse(&actual));
    }
    let (component, outcome) = match host.cached_component(&actual) {
        Some(component) => (component, kiln_host::CacheOutcome::Hit),
        None => {
            let bytes = std::fs::read(path).with_context(reading)?;
            // The file could have changed since it was hashed: what compiles is checked.
            let again = kiln_types::digest(&bytes);
            if again != actual {
                return Err(refuse(&again));
            }
            host.component_for_digest(&actual, &bytes)
                .context("compiling the component")?
        }
    };
    let model = host
        .load_compiled(
            component,
            actual,
            outcome,
            usize::try_from(size).unwrap_or(usize::MAX),
        )
        .context("instantiating the component")?;
    model.warm().context("warming the component")?;
    Ok(model)
}

/// Loads the components a routing table names, reusing every component the old table
/// holds and loading each new digest once. Blocking.
pub(crate) struct Loader<'a> {
    host: &'a Arc<Host>,
    catalog: &'a dyn Catalog,
    loaded: HashMap<String, Arc<LoadedModel>>,
    bad: HashMap<String, String>,
    /// What was loaded and what failed so far.
    pub(crate) report: LoadReport,
}

impl<'a> Loader<'a> {
    /// A loader that starts from the components of `old`.
    pub(crate) fn new(
        host: &'a Arc<Host>,
        catalog: &'a dyn Catalog,
        old: &Table,
        generation: u64,
    ) -> Loader<'a> {
        Loader {
            host,
            catalog,
            loaded: old.loaded(),
            bad: HashMap::new(),
            report: LoadReport {
                generation,
                ..LoadReport::default()
            },
        }
    }

    fn served(&mut self, name: &str, v: &VersionRoute) -> Result<Arc<ServedModel>, String> {
        let model = match self.loaded.get(&v.digest) {
            Some(m) => m.clone(),
            None => {
                if let Some(reason) = self.bad.get(&v.digest) {
                    return Err(reason.clone());
                }
                let path = self.catalog.component_path(&v.digest);
                match load_component(self.host, &path, &v.digest) {
                    Ok(m) => {
                        let m = Arc::new(m);
                        self.loaded.insert(v.digest.clone(), m.clone());
                        self.report
                            .newly_loaded
                            .push((name.to_string(), v.version, v.digest.clone()));
                        m
                    }
                    Err(e) => {
                        let reason = format!("{e:#}");
                        self.bad.insert(v.digest.clone(), reason.clone());
                        return Err(reason);
                    }
                }
            }
        };
        Ok(Arc::new(ServedModel {
            name: name.to_string(),
            version: v.version,
            version_label: v.version.to_string(),
            digest: v.digest.clone(),
            stage: v.stage.clone(),
            aliases: v.aliases.clone(),
            weight: v.weight,
            open: v.open,
            model,
        }))
    }

    /// The routes of one model, from the versions that loaded; the ones that failed are
    /// in the report and the returned count.
    pub(crate) fn routes(&mut self, name: &str, routing: &ModelRouting) -> (ModelRoutes, usize) {
        let mut failures = 0;
        let mut fail = |report: &mut LoadReport, v: &VersionRoute, reason: String| {
            tracing::warn!(
                model = %name,
                version = v.version,
                digest = %v.digest,
                error = %reason,
                "model version failed to load"
            );
            report.failed.push((name.to_string(), v.version, reason));
            failures += 1;
        };
        let mut versions = BTreeMap::new();
        for v in &routing.versions {
            match self.served(name, v) {
                Ok(served) => {
                    versions.insert(v.version, served);
                }
                Err(reason) => fail(&mut self.report, v, reason),
            }
        }
        let shadow = match &routing.shadow {
            Some(v) => match self.served(name, v) {
                Ok(served) => Some(served),
                Err(reason) => {
                    fail(&mut self.report, v, reason);
                    None
                }
            },
            None => None,
        };
        (ModelRoutes::new(versions, shadow, routing.clone()), failures)
    }
}

/// Builds the next table from the catalog, reusing every component `old` already holds.
/// A model with a version that fails to load keeps its previous routes. Blocking: reads
/// files and compiles.
pub(crate) fn rebuild(
    host: &Arc<Host>,
    catalog: &dyn Catalog,
    old: &Table,
) -> anyhow::Result<(Table, LoadReport)> {
    let routing = catalog.routing().context("reading the routing table")?;
    let mut loader = Loader::new(host, catalog, old, routing.generation);
    let mut models = BTreeMap::new();
    for (name, wanted) in &routing.models {
        let (fresh, failures) = loader.routes(name, wanted);
        let routes = if failures > 0 {
            // A broken new version must not take traffic away from what was serving:
            // keep the model's old routes whole until a later generation loads cleanly.
            match old.models.get(name) {
                Some(previous) => previous.clone(),
                None => fresh,
            }
        } else {
            fresh
        };
        if !routes.versions.is_empty() {
            models.insert(name.clone(), routes);
        }
    }
    let mut report = loader.report;
    for (name, routes) in &models {
        for number in routes.versions.keys() {
            report.served.push((name.clone(), *number));
        }
    }
    Ok((
        Table {
            generation: routing.generation,
            models,
            readers: routing.readers.clone(),
        },
        report,
    ))
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
            state.set_last_error(Some(format!("reading the routing table: {e:#}")));
            return Err(e);
        }
    };
    for (model, _, _) in &report.failed {
        state.metrics.load_failure(model);
    }
    state.metrics.reload(report.failed.is_empty());
    state.set_last_error(report.failure_summary());
    state.alert_load_failures(&report.failed);
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
/// until the first load succeeds). Runs until the task is aborted; on a managed node,
/// whose routing changes only through the admin API, it stops after the first load.
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
        if state.store.is_some() && state.ready.load(Ordering::Acquire) {
            return;
        }
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
