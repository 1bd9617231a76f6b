//! What the sync service watches besides rollouts, and the alerts it sends to Alertmanager
//! (`--alertmanager`, `kiln_node_api::alerts`): every `--monitor-interval` it
//! - measures the drift of each model's serving version over the fleet's last 15 minutes
//!   (when the version has a reference profile): `KilnDataDrift` while the dataset drifts;
//! - sums the fleet's request counters per model and evaluates the SLOs of the GitOps file
//!   (`kiln_monitor::burn`): `KilnErrorBudgetBurn` (page or ticket) while a tier burns;
//! - looks at the nodes: `KilnNodeFailing` while a node fails to converge, and
//!   `KilnVersionLoadFailed` while a node reports that its last routing change (loading a
//!   version) failed.
//!
//! Each of those is a state: the alert is re-sent while it holds and resolved when it
//! stops. Events (a rollout rolled back, an MLflow import that failed) fire once and
//! resolve by themselves after [`EVENT_LASTS`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kiln_monitor::burn::BurnHistory;
use kiln_monitor::slo::ModelCounters;
use kiln_node_api::VersionStats;
use kiln_node_api::alerts::{Alert, Severity};

use crate::state::Shared;

/// How long an event's alert stays active in Alertmanager.
pub const EVENT_LASTS: Duration = Duration::from_secs(3600);

/// The monitor's memory between rounds: each node's last counters (to add only what is
/// new, across node restarts) and the fleet's cumulative counters per model.
#[derive(Default)]
pub struct Monitor {
    last: HashMap<(String, String, u64), VersionStats>,
    fleet: HashMap<String, ModelCounters>,
    history: HashMap<String, BurnHistory>,
    started: Option<Instant>,
}

impl Monitor {
    /// One round: drift, SLOs and nodes, each reconciled with the alerts it holds.
    pub fn round(&mut self, shared: &Shared) {
        let started = *self.started.get_or_insert_with(Instant::now);
        self.count(shared);
        let now = started.elapsed().as_secs_f64();
        for (model, counters) in &self.fleet {
            self.history
                .entry(model.clone())
                .or_default()
                .push(now, counters.clone());
        }
        let Some(alerter) = shared.alerter.as_ref() else {
            // Without Alertmanager the drift gauges are still kept current.
            drift_alerts(shared);
            return;
        };
        alerter.reconcile("drift", drift_alerts(shared));
        alerter.reconcile("slo", self.slo_alerts(shared));
        alerter.reconcile("nodes", node_alerts(shared));
    }

    /// Adds each node's new requests since the last round to the fleet's counters.
    fn count(&mut self, shared: &Shared) {
        let runtimes = shared.node_runtimes();
        for (node, rt) in runtimes {
            let Some(state) = rt.last_state else { continue };
            for stats in state.versions {
                let key = (node.clone(), stats.model.clone(), stats.version);
                let new = match self.last.get(&key) {
                    Some(earlier) => stats.since(earlier),
                    None => stats.clone(),
                };
                let fleet = self
                    .fleet
                    .entry(stats.model.clone())
                    .or_insert_with(|| ModelCounters {
                        model: stats.model.clone(),
                        ..ModelCounters::default()
                    });
                fleet.add(&counters(&new));
                self.last.insert(key, stats);
            }
        }
    }

    fn slo_alerts(&self, shared: &Shared) -> Vec<Alert> {
        let mut alerts = Vec::new();
        for slo in &shared.config.slos {
            let Some(history) = self.history.get(&slo.model) else {
                continue;
            };
            for burn in history.burning(slo) {
                let mut alert = Alert::new(kiln_monitor::slo::ALERT_NAME, Severity::Page);
                for (name, value) in burn.labels() {
                    alert = alert.label(name, value);
                }
                alerts.push(alert.annotation("summary", burn.summary()));
            }
        }
        alerts
    }
}

/// A node's counters of one version as the SLO library counts them: a 503 shed is bad
/// (the client got no answer), a 4xx is not.
fn counters(stats: &VersionStats) -> ModelCounters {
    ModelCounters {
        model: stats.model.clone(),
        requests: stats.requests,
        server_errors: stats.server_errors + stats.overloaded,
        latency_count: stats.latency.count,
        latency_buckets: stats
            .latency
            .bounds
            .iter()
            .copied()
            .zip(stats.latency.counts.iter().copied())
            .collect(),
    }
}

/// `KilnDataDrift` for every serving version whose fleet traffic drifts from its reference
/// (the drift gauges are set on the way).
fn drift_alerts(shared: &Shared) -> Vec<Alert> {
    let models = match shared.registry.served() {
        Ok(served) => served,
        Err(e) => {
            tracing::warn!(error = %e, "reading the registry for drift failed");
            return Vec::new();
        }
    };
    let mut names: Vec<String> = models.iter().map(|v| v.name.clone()).collect();
    names.sort();
    names.dedup();
    let since = crate::drift::DEFAULT_SINCE;
    let profiles = std::cell::OnceCell::new();
    let mut alerts = Vec::new();
    for model in names {
        let Ok(answer) = crate::drift::answer_from(shared, &profiles, &model, None, since) else {
            continue;
        };
        let report = &answer.report;
        if !report.dataset_drift {
            continue;
        }
        let version = report.version.clone().unwrap_or_default();
        alerts.push(
            Alert::new("KilnDataDrift", Severity::Ticket)
                .label("model", &model)
                .label("version", &version)
                .annotation(
                    "summary",
                    kiln_monitor::model::drift_summary(&model, &version, report, &answer.since),
                ),
        );
    }
    alerts
}

/// `KilnNodeFailing` and `KilnVersionLoadFailed`, per node.
fn node_alerts(shared: &Shared) -> Vec<Alert> {
    let mut alerts = Vec::new();
    let mut runtimes: Vec<_> = shared.node_runtimes().into_iter().collect();
    runtimes.sort_by(|a, b| a.0.cmp(&b.0));
    for (node, rt) in runtimes {
        if rt.status == "failing" {
            alerts.push(
                Alert::new("KilnNodeFailing", Severity::Page)
                    .label("node", &node)
                    .annotation(
                        "summary",
                        format!(
                            "node {node} fails to converge{}: {}",
                            rt.failing_since
                                .as_deref()
                                .map(|s| format!(" since {s}"))
                                .unwrap_or_default(),
                            rt.last_error.as_deref().unwrap_or("no error recorded")
                        ),
                    ),
            );
        }
        if let Some(error) = rt.last_state.as_ref().and_then(|s| s.last_error.as_deref()) {
            alerts.push(
                Alert::new("KilnVersionLoadFailed", Severity::Page)
                    .label("node", &node)
                    .annotation(
                        "summary",
                        format!("node {node} could not apply its routing table: {error}"),
                    ),
            );
        }
    }
    alerts
}

/// An event alert: fired now, resolved by itself after [`EVENT_LASTS`].
pub fn event(shared: &Shared, alert: Alert) {
    if let Some(alerter) = shared.alerter.as_ref() {
        alerter.fire_for(alert, EVENT_LASTS);
    }
}

/// Runs [`Monitor::round`] every `--monitor-interval` until the service stops.
pub fn run(shared: std::sync::Arc<Shared>) {
    let mut monitor = Monitor::default();
    while !shared.stopping() {
        monitor.round(&shared);
        let until = Instant::now() + shared.config.monitor_interval;
        while Instant::now() < until && !shared.stopping() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
