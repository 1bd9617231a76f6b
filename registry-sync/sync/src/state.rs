//! The sync service's state, shared by the control loop, the node workers and the API:
//! settings, the desired state, what is known of each node, and the service's metrics.
//! Everything above it (controller, workers, API) reads and writes through it; it calls
//! nothing above it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use kiln_fleet::Desired;
use kiln_node_api::breaker::{BreakerPolicy, BreakerState};
use kiln_node_api::retry::{Target, TargetStatus};
use kiln_node_api::tls::{ClientTls, ServerTls};
use kiln_node_api::{NodeState, RoutingTable};
use kiln_registry::{Registry, RegistryError, RolloutPlan};
use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, TextEncoder};
use secrecy::SecretString;

/// Settings of the sync service.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// Address of the join/status API.
    pub listen: SocketAddr,
    /// The admin token of nodes that never joined (config nodes started with
    /// `--admin-token-file`); joined nodes get a credential of their own.
    pub token: Option<SecretString>,
    /// Let nodes join without a token: only for a service listening on loopback, and
    /// then said in its log and its status.
    pub insecure_no_auth: bool,
    /// Control loop period.
    pub tick: Duration,
    /// How often a converged node is re-checked (and its counters read).
    pub check_interval: Duration,
    /// Most node operations at once.
    pub concurrency: usize,
    /// First retry delay after a failure; doubles per failure, with jitter.
    pub backoff_base: Duration,
    /// Longest retry delay, and the first cool-down of a node's open circuit breaker.
    pub backoff_max: Duration,
    /// Consecutive failures that open a node's circuit breaker: the service then stops
    /// calling the node until a cool-down has passed (or the node sends a heartbeat) and
    /// one probe call succeeds.
    pub breaker_threshold: u32,
    /// Heartbeat period asked of joined nodes.
    pub heartbeat: Duration,
    /// Called (POST, JSON) when a rollout is rolled back automatically.
    pub alert_webhook: Option<String>,
    /// Rollout plan for models without their own policy.
    pub default_policy: RolloutPlan,
    /// Audit actor of the service's own changes.
    pub actor: String,
    /// Serve the join/status API over HTTPS with this certificate (and, with a client CA,
    /// require client certificates from nodes); `None` serves plain HTTP.
    pub tls: Option<ServerTls>,
    /// What the service's calls (nodes, the alert webhook) trust and present: the client
    /// certificate is what nodes started with `--client-ca` require.
    pub client_tls: ClientTls,
    /// Connections, header/idle/request/upload timeouts and concurrent uploads of the API
    /// (and of the registry server mounted on it).
    pub limits: kiln_node_api::tls::ServeLimits,
    /// Alertmanagers the service sends its alerts to (`--alertmanager`): none, no alerts.
    pub alertmanager: Vec<String>,
    /// How often alerts are re-sent to Alertmanager while they hold.
    pub alert_resend: Duration,
    /// How often drift, SLOs and node health are evaluated (`--monitor-interval`).
    pub monitor_interval: Duration,
    /// The SLOs of the GitOps file, evaluated over the fleet's counters.
    pub slos: Vec<kiln_monitor::slo::Slo>,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            token: None,
            insecure_no_auth: false,
            tick: Duration::from_millis(100),
            check_interval: Duration::from_secs(1),
            concurrency: 16,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            breaker_threshold: 5,
            heartbeat: Duration::from_secs(1),
            alert_webhook: None,
            default_policy: RolloutPlan::default(),
            actor: "kiln-sync".to_string(),
            tls: None,
            client_tls: ClientTls::default(),
            limits: kiln_node_api::tls::ServeLimits::default(),
            alertmanager: Vec::new(),
            alert_resend: kiln_node_api::alerts::DEFAULT_RESEND_INTERVAL,
            monitor_interval: Duration::from_secs(60),
            slos: Vec::new(),
        }
    }
}

impl SyncConfig {
    /// The circuit breaker policy of each node: open after `breaker_threshold` failures;
    /// then probe after `backoff_max`, doubling after each failed probe up to six times
    /// `backoff_max`, so a node that stays down is called at most once a minute (at the
    /// defaults) rather than every `backoff_max`.
    pub fn breaker_policy(&self) -> BreakerPolicy {
        BreakerPolicy {
            failure_threshold: self.breaker_threshold.max(1),
            initial_cooldown: self.backoff_max,
            max_cooldown: self.backoff_max.saturating_mul(6),
        }
    }
}

/// What the service knows of one node right now.
#[derive(Clone, Debug, Default)]
pub struct NodeRuntime {
    /// `converged`, `pending` or `failing`.
    pub status: String,
    /// Generation the node acknowledged.
    pub applied_generation: u64,
    /// The node's latest state (with its counters).
    pub last_state: Option<NodeState>,
    /// When `last_state` was read.
    pub state_at: Option<Instant>,
    pub last_error: Option<String>,
    pub failing_since: Option<String>,
    pub failures: u32,
    /// The node's circuit breaker: `closed`, `open` or `half-open`.
    pub breaker: String,
    /// Last heartbeat or successful call.
    pub last_seen: Option<Instant>,
    pub instance_id: Option<String>,
}

impl NodeRuntime {
    /// A node not contacted yet.
    pub fn pending() -> NodeRuntime {
        NodeRuntime {
            status: "pending".into(),
            breaker: BreakerState::Closed.as_str().into(),
            ..NodeRuntime::default()
        }
    }
}

/// A wake-up signal for a thread that waits (new desired state, heartbeat, shutdown).
#[derive(Default)]
pub struct Wake {
    flag: Mutex<bool>,
    cv: Condvar,
}

impl Wake {
    /// Wakes the waiting thread.
    pub fn notify(&self) {
        let mut f = self.flag.lock().unwrap_or_else(|p| p.into_inner());
        *f = true;
        self.cv.notify_one();
    }

    /// Waits for a wake-up or the timeout.
    pub fn wait(&self, timeout: Duration) {
        let f = self.flag.lock().unwrap_or_else(|p| p.into_inner());
        let (mut f, _) = self
            .cv
            .wait_timeout_while(f, timeout, |woken| !*woken)
            .unwrap_or_else(|p| p.into_inner());
        *f = false;
    }
}

/// A running node worker, as the service sees it.
pub struct WorkerHandle {
    pub wake: Arc<Wake>,
    pub stop: Arc<AtomicBool>,
    pub url: String,
    /// The node as a client target: its circuit breaker (the worker records its calls in
    /// it) and its retry counters.
    pub target: Arc<Target>,
}

/// A counting semaphore bounding concurrent node operations.
pub struct Permits {
    free: Mutex<usize>,
    cv: Condvar,
}

/// A held permit, released on drop.
pub struct Permit<'a>(&'a Permits);

impl Permits {
    /// `n` permits.
    pub fn new(n: usize) -> Permits {
        Permits {
            free: Mutex::new(n.max(1)),
            cv: Condvar::new(),
        }
    }

    /// Waits for a permit.
    pub fn acquire(&self) -> Permit<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.cv.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut free = self.0.free.lock().unwrap_or_else(|p| p.into_inner());
        *free += 1;
        self.0.cv.notify_one();
    }
}

/// The service's own metrics (`GET /metrics`), in their own Prometheus registry.
pub struct SyncMetrics {
    registry: prometheus::Registry,
    nodes: IntGaugeVec,
    generation: IntGauge,
    pushes: IntCounterVec,
    pub uploads: IntCounter,
    pub heartbeats: IntCounter,
    client_retries: IntCounterVec,
    client_breaker: IntGaugeVec,
    rollout_weight: IntGaugeVec,
    rollout_info: IntGaugeVec,
    rollouts: IntGaugeVec,
    /// `kiln_feature_drift_score`, `kiln_dataset_drift` of the fleet's traffic.
    pub drift: kiln_monitor::gauges::DriftGauges,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(
    registry: &prometheus::Registry,
    metric: prometheus::Result<T>,
) -> prometheus::Result<T> {
    let metric = metric?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

impl SyncMetrics {
    /// Creates and registers every metric.
    pub fn new() -> prometheus::Result<SyncMetrics> {
        let r = prometheus::Registry::new();
        let nodes = register(
            &r,
            IntGaugeVec::new(
                Opts::new("kiln_sync_nodes", "Managed nodes by sync status"),
                &["status"],
            ),
        )?;
        let generation = register(
            &r,
            IntGauge::new("kiln_sync_routing_generation", "Desired routing generation"),
        )?;
        let pushes = register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "kiln_sync_pushes_total",
                    "Node convergence attempts that pushed or failed",
                ),
                &["result"],
            ),
        )?;
        let uploads = register(
            &r,
            IntCounter::new("kiln_sync_uploads_total", "Components uploaded to nodes"),
        )?;
        let heartbeats = register(
            &r,
            IntCounter::new("kiln_sync_heartbeats_total", "Node heartbeats received"),
        )?;
        let client_retries = register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "kiln_client_retries_total",
                    "Retried attempts of the service's calls, by target (a node's name, mlflow, webhook) and kind (node, mlflow, webhook)",
                ),
                &["target", "kind"],
            ),
        )?;
        let client_breaker = register(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "kiln_client_breaker_state",
                    "Circuit breaker of each target the service calls: 0 closed, 1 half-open, 2 open",
                ),
                &["target", "kind"],
            ),
        )?;
        let rollout_weight = register(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "kiln_rollout_canary_weight",
                    "Percent of a model's traffic its latest rollout gives the new version now (100 once it succeeded, 0 once rolled back or aborted)",
                ),
                &["model"],
            ),
        )?;
        let rollout_info = register(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "kiln_rollout_info",
                    "1 for each model's latest rollout, labelled with its id, versions, state, phase, step and strategy",
                ),
                &[
                    "model",
                    "rollout",
                    "from_version",
                    "to_version",
                    "state",
                    "phase",
                    "step",
                    "strategy",
                ],
            ),
        )?;
        let rollouts = register(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "kiln_rollouts",
                    "Rollouts in the registry by model and state (progressing, paused, succeeded, rolled_back, aborted); finished ones only ever grow",
                ),
                &["model", "state"],
            ),
        )?;
        let drift = kiln_monitor::gauges::DriftGauges::register(&r, "the fleet's")?;
        // Every label value from the start, so a scrape sees zeros rather than nothing.
        for result in ["ok", "error"] {
            pushes.with_label_values(&[result]);
        }
        Ok(SyncMetrics {
            registry: r,
            nodes,
            generation,
            pushes,
            uploads,
            heartbeats,
            client_retries,
            client_breaker,
            rollout_weight,
            rollout_info,
            rollouts,
            drift,
        })
    }

    /// Counts a convergence attempt that pushed (`ok`) or failed.
    pub fn push(&self, ok: bool) {
        self.pushes
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    /// The metrics as Prometheus text, with the gauges read from `shared` now.
    pub fn render(&self, shared: &Shared) -> prometheus::Result<String> {
        let desired = shared.desired_generation_and_nodes();
        let (converged, failing) = shared.with_runtimes(|runtimes| {
            let count = |s: &str| runtimes.values().filter(|rt| rt.status == s).count();
            (count("converged"), count("failing"))
        });
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.nodes.with_label_values(&["converged"]).set(gauge(converged));
        self.nodes.with_label_values(&["failing"]).set(gauge(failing));
        self.nodes
            .with_label_values(&["pending"])
            .set(gauge(desired.1.saturating_sub(converged + failing)));
        self.generation.set(i64::try_from(desired.0).unwrap_or(i64::MAX));
        for target in shared.targets() {
            let labels = [target.name(), target.kind()];
            self.client_breaker
                .with_label_values(&labels)
                .set(target.breaker_gauge());
            // Targets live as long as the service, so their counts only grow.
            let counter = self.client_retries.with_label_values(&labels);
            counter.inc_by(target.retries().saturating_sub(counter.get()));
        }
        self.set_rollouts(shared);
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

impl SyncMetrics {
    /// The rollout gauges, read from the registry now (so they survive restarts and count
    /// operators' actions too); a registry error leaves them as they were.
    fn set_rollouts(&self, shared: &Shared) {
        let (latest, counts) = match (
            shared.registry.latest_rollouts(),
            shared.registry.rollout_counts(),
        ) {
            (Ok(l), Ok(c)) => (l, c),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "reading rollouts for the metrics");
                return;
            }
        };
        self.rollout_weight.reset();
        self.rollout_info.reset();
        self.rollouts.reset();
        for r in &latest {
            let (weight, _) = r.current_weight();
            self.rollout_weight
                .with_label_values(&[&r.model])
                .set(i64::from(weight));
            let from = r.from_version.map(|v| v.to_string()).unwrap_or_default();
            self.rollout_info
                .with_label_values(&[
                    r.model.as_str(),
                    &r.id.to_string(),
                    &from,
                    &r.to_version.to_string(),
                    r.state.as_str(),
                    r.phase.as_str(),
                    &r.step.to_string(),
                    r.plan.strategy.as_str(),
                ])
                .set(1);
        }
        for (model, state, count) in counts {
            self.rollouts
                .with_label_values(&[&model, &state])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }
}

/// State shared by the control loop, node workers and the API.
pub struct Shared {
    /// The admin credential the service presents to each joined node (memory only: after
    /// a restart, each node gets a new one with its next heartbeat).
    pub credentials: Mutex<HashMap<String, SecretString>>,
    pub registry: Arc<Registry>,
    pub config: SyncConfig,
    desired: Mutex<Desired>,
    runtimes: Mutex<HashMap<String, NodeRuntime>>,
    restart_hints: Mutex<HashSet<String>>,
    retry_hints: Mutex<HashSet<String>>,
    /// Nodes an admin asked to re-adopt (`kiln sync reset-node`), from the registry.
    resets: Mutex<HashSet<String>>,
    pub permits: Permits,
    pub metrics: SyncMetrics,
    /// Wakes the control loop early (a node converged or failed): rollouts move on as soon
    /// as the fleet is ready instead of at the next tick.
    pub control_wake: Wake,
    pub workers: Mutex<BTreeMap<String, WorkerHandle>>,
    /// Every peer the service calls, as a client target: nodes by name (kept when a
    /// node's worker restarts, so its counters only grow), then MLflow and the webhook.
    node_targets: Mutex<BTreeMap<String, Arc<Target>>>,
    other_targets: Mutex<BTreeMap<String, Arc<Target>>>,
    pub stop: AtomicBool,
    /// The Alertmanager client, when `alertmanager` names any.
    pub alerter: Option<Arc<kiln_node_api::alerts::Alerter>>,
}

impl Shared {
    /// The state of a service that has not started anything yet.
    pub fn new(registry: Arc<Registry>, config: SyncConfig) -> prometheus::Result<Shared> {
        Ok(Shared {
            registry,
            permits: Permits::new(config.concurrency),
            config,
            desired: Mutex::new(Desired::default()),
            runtimes: Mutex::new(HashMap::new()),
            credentials: Mutex::new(HashMap::new()),
            restart_hints: Mutex::new(HashSet::new()),
            retry_hints: Mutex::new(HashSet::new()),
            resets: Mutex::new(HashSet::new()),
            metrics: SyncMetrics::new()?,
            control_wake: Wake::default(),
            workers: Mutex::new(BTreeMap::new()),
            node_targets: Mutex::new(BTreeMap::new()),
            other_targets: Mutex::new(BTreeMap::new()),
            alerter: None,
            stop: AtomicBool::new(false),
        })
    }

    /// The table `node` should serve, if the node is known.
    pub fn desired_table(&self, node: &str) -> Option<RoutingTable> {
        self.desired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tables
            .get(node)
            .cloned()
    }

    /// Components to upload to `node` ahead of use.
    pub fn prefetch(&self, node: &str) -> Vec<String> {
        self.desired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .prefetch
            .get(node)
            .cloned()
            .unwrap_or_default()
    }

    /// The current desired state.
    pub fn desired(&self) -> Desired {
        self.desired.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The desired routing generation.
    pub fn desired_generation(&self) -> u64 {
        self.desired.lock().unwrap_or_else(|p| p.into_inner()).generation
    }

    /// The desired generation and how many nodes it has tables for.
    fn desired_generation_and_nodes(&self) -> (u64, usize) {
        let d = self.desired.lock().unwrap_or_else(|p| p.into_inner());
        (d.generation, d.tables.len())
    }

    /// The nodes that should serve `model`.
    pub fn serving_nodes(&self, model: &str) -> Vec<String> {
        self.desired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .model_nodes
            .get(model)
            .cloned()
            .unwrap_or_default()
    }

    /// Installs a new desired state and wakes every worker when it changed.
    pub fn set_desired(&self, d: Desired) {
        let mut slot = self.desired.lock().unwrap_or_else(|p| p.into_inner());
        if *slot == d {
            return;
        }
        tracing::debug!(
            generation = d.generation,
            nodes = d.tables.len(),
            "desired state changed"
        );
        *slot = d;
        drop(slot);
        for w in self.workers.lock().unwrap_or_else(|p| p.into_inner()).values() {
            w.wake.notify();
        }
    }

    /// What the service knows of `node`.
    pub fn node_runtime(&self, node: &str) -> NodeRuntime {
        self.runtimes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .cloned()
            .unwrap_or_else(NodeRuntime::pending)
    }

    /// Runs `f` on every node's runtime state without copying it.
    pub fn with_runtimes<R>(&self, f: impl FnOnce(&HashMap<String, NodeRuntime>) -> R) -> R {
        f(&self.runtimes.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Every node's runtime state.
    pub fn node_runtimes(&self) -> HashMap<String, NodeRuntime> {
        self.runtimes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records what is known of `node`.
    pub fn set_node_runtime(&self, node: &str, rt: NodeRuntime) {
        self.runtimes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.to_string(), rt);
    }

    /// A component's file, checked against its digest by the registry in one streaming
    /// pass and positioned at its start: a worker streams it to its node, so pushing a
    /// version never holds its bytes in this process (the OS page cache shares them).
    pub fn component_file(&self, digest: &str) -> Result<std::fs::File, RegistryError> {
        self.registry.open_blob(digest)
    }

    /// A node's status changed: the controller re-evaluates at once.
    pub fn changed(&self) {
        self.control_wake.notify();
    }

    /// A joined node's heartbeat: remembers it, and wakes its worker when the node
    /// restarted or serves another generation, or is failing (it is reachable again, so its
    /// open circuit breaker may probe it at once).
    pub fn heartbeat(&self, node: &str, instance_id: &str, generation: u64) {
        let mut runtimes = self.runtimes.lock().unwrap_or_else(|p| p.into_inner());
        let rt = runtimes
            .entry(node.to_string())
            .or_insert_with(NodeRuntime::pending);
        rt.last_seen = Some(Instant::now());
        let restarted = rt.instance_id.as_deref().is_some_and(|i| i != instance_id);
        let stale = rt.status == "converged" && generation != rt.applied_generation;
        let failing = rt.status == "failing";
        drop(runtimes);
        if restarted || stale {
            self.restart_hints
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(node.to_string());
        }
        if failing || restarted || stale {
            self.retry_hints
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(node.to_string());
            if let Some(w) = self.workers.lock().unwrap_or_else(|p| p.into_inner()).get(node) {
                w.target.breaker.probe_now();
                w.wake.notify();
            }
        }
    }

    /// Whether a worker manages `node` at `url`.
    pub fn manages(&self, node: &str, url: &str) -> bool {
        self.workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .is_some_and(|w| w.url == url.trim_end_matches('/'))
    }

    /// The token to present to `node`'s admin API: its own credential once it joined,
    /// else the configured admin token of config nodes.
    pub fn node_auth(&self, node: &str) -> Option<SecretString> {
        self.credentials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .cloned()
            .or_else(|| self.config.token.clone())
    }

    /// Whether the service holds an admin credential for `node`.
    pub fn has_credential(&self, node: &str) -> bool {
        self.credentials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(node)
    }

    /// Makes a new admin credential for `node`, remembers it and returns it (to send once).
    pub fn new_credential(&self, node: &str) -> anyhow::Result<String> {
        let token = kiln_registry::auth::random_secret("kiln_adm_")?;
        self.credentials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.to_string(), SecretString::from(token.clone()));
        Ok(token)
    }

    /// Forgets `node`'s credential (it left the fleet).
    pub fn forget_credential(&self, node: &str) {
        self.credentials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(node);
    }

    /// Whether `node` restarted or drifted since its worker last looked (and forgets it).
    pub fn take_restart_hint(&self, node: &str) -> bool {
        self.restart_hints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(node)
    }

    /// Whether `node` was heard from while failing, so its worker should retry now (and
    /// forgets it).
    pub fn take_retry_hint(&self, node: &str) -> bool {
        self.retry_hints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(node)
    }

    /// The nodes with a pending reset request (read from the registry each control tick);
    /// the worker of a newly named node retries at once.
    pub fn set_resets(&self, nodes: HashSet<String>) {
        let mut resets = self.resets.lock().unwrap_or_else(|p| p.into_inner());
        let new: Vec<String> = nodes.difference(&resets).cloned().collect();
        *resets = nodes;
        drop(resets);
        for node in new {
            self.retry_hints
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(node.clone());
            if let Some(w) = self.workers.lock().unwrap_or_else(|p| p.into_inner()).get(&node) {
                w.wake.notify();
            }
        }
    }

    /// Whether an admin asked to re-adopt `node` and it has not been done yet.
    pub fn reset_requested(&self, node: &str) -> bool {
        self.resets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(node)
    }

    /// `node` was re-adopted (or needed nothing): records it in the registry (audited) and
    /// forgets the request.
    pub fn reset_done(&self, node: &str, from: u64, to: u64) {
        match self
            .registry
            .complete_node_reset(node, from, to, &self.config.actor)
        {
            Ok(_) => {
                self.resets.lock().unwrap_or_else(|p| p.into_inner()).remove(node);
                tracing::info!(node, from, to, "node re-adopted after a reset");
            }
            Err(e) => tracing::warn!(node, error = %e, "could not record a node reset; retrying"),
        }
    }

    /// Node `node` as a client target (made on first use, with the node breaker policy).
    pub fn node_target(&self, node: &str, probe_stale_after: Duration) -> Arc<Target> {
        self.node_targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(node.to_string())
            .or_insert_with(|| {
                Arc::new(Target::new(
                    node,
                    "node",
                    self.config.breaker_policy(),
                    probe_stale_after,
                ))
            })
            .clone()
    }

    /// The target `name` other than a node (`webhook`), made by `make` on first use.
    pub fn other_target(&self, name: &str, make: impl FnOnce() -> Target) -> Arc<Target> {
        self.other_targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(make()))
            .clone()
    }

    /// Shows `target` (one a source made: MLflow's) in the status and metrics.
    pub fn add_target(&self, target: Arc<Target>) {
        self.other_targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(target.name().to_string(), target);
    }

    /// Every target: nodes by name, then the others by name.
    pub fn targets(&self) -> Vec<Arc<Target>> {
        let nodes = self.node_targets.lock().unwrap_or_else(|p| p.into_inner());
        let others = self.other_targets.lock().unwrap_or_else(|p| p.into_inner());
        nodes.values().chain(others.values()).cloned().collect()
    }

    /// The status of node `node`'s target, if the service has called it.
    pub fn node_target_status(&self, node: &str) -> Option<TargetStatus> {
        self.node_targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .map(|t| t.status())
    }

    /// The status of every target other than a node (MLflow, the webhook).
    pub fn other_target_statuses(&self) -> Vec<TargetStatus> {
        self.other_targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|t| t.status())
            .collect()
    }

    /// Whether the service is stopping.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}
