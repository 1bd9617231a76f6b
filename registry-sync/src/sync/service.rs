//! The sync service's shared state, its control loop and its lifecycle.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use kiln_node_api::RoutingTable;

use super::desired::{self, Desired};
use super::worker::{self, NodeRuntime, Permits, WorkerHandle};
use crate::Registry;
use crate::rollout::RolloutPlan;

/// Settings of the sync service.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// Address of the join/status API.
    pub listen: SocketAddr,
    /// The fleet token: nodes' admin API and the join API both require it.
    pub token: Option<String>,
    /// Control loop period.
    pub tick: Duration,
    /// How often a converged node is re-checked (and its counters read).
    pub check_interval: Duration,
    /// Most node operations at once.
    pub concurrency: usize,
    /// First retry delay after a failure; doubles per failure, with jitter.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Heartbeat period asked of joined nodes.
    pub heartbeat: Duration,
    /// Called (POST, JSON) when a rollout is rolled back automatically.
    pub alert_webhook: Option<String>,
    /// Rollout plan for models without their own policy.
    pub default_policy: RolloutPlan,
    /// Audit actor of the service's own changes.
    pub actor: String,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            token: None,
            tick: Duration::from_millis(100),
            check_interval: Duration::from_secs(1),
            concurrency: 16,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            heartbeat: Duration::from_secs(1),
            alert_webhook: None,
            default_policy: RolloutPlan::default(),
            actor: "kiln-sync".to_string(),
        }
    }
}

/// Something else that writes to the registry on a schedule (the MLflow watcher): polled on
/// its own thread so a slow download or compile never stalls rollouts.
pub trait Source: Send + 'static {
    /// Name for logs.
    fn name(&self) -> String;
    /// How long to wait between polls.
    fn interval(&self) -> Duration;
    /// One poll: import what changed.
    fn poll(&mut self, registry: &Registry) -> anyhow::Result<()>;
}

/// Counters of the service itself.
#[derive(Default)]
pub struct SyncMetrics {
    pub pushes_ok: AtomicU64,
    pub pushes_failed: AtomicU64,
    pub uploads: AtomicU64,
    pub heartbeats: AtomicU64,
}

/// State shared by the control loop, node workers and the API.
pub struct Shared {
    pub registry: Arc<Registry>,
    pub config: SyncConfig,
    desired: Mutex<Desired>,
    runtimes: Mutex<HashMap<String, NodeRuntime>>,
    restart_hints: Mutex<HashSet<String>>,
    retry_hints: Mutex<HashSet<String>>,
    pub permits: Permits,
    pub metrics: SyncMetrics,
    /// Wakes the control loop early (a node converged or failed): rollouts move on as soon
    /// as the fleet is ready instead of at the next tick.
    control_wake: worker::Wake,
    /// Components being uploaded, shared by the node workers so that pushing one version to
    /// fifty nodes reads (and holds) its bytes once.
    blobs: Mutex<HashMap<String, std::sync::Weak<Vec<u8>>>>,
    pub(crate) workers: Mutex<BTreeMap<String, WorkerHandle>>,
    pub stop: AtomicBool,
}

impl Shared {
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

    /// What the service knows of `node`.
    pub fn node_runtime(&self, node: &str) -> NodeRuntime {
        self.runtimes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .cloned()
            .unwrap_or_else(|| NodeRuntime {
                status: "pending".into(),
                breaker: "closed".into(),
                ..NodeRuntime::default()
            })
    }

    /// The desired routing generation.
    pub fn desired_generation(&self) -> u64 {
        self.desired.lock().unwrap_or_else(|p| p.into_inner()).generation
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

    /// Runs `f` on every node's runtime state without copying it.
    pub fn with_runtimes<R>(&self, f: impl FnOnce(&HashMap<String, NodeRuntime>) -> R) -> R {
        f(&self.runtimes.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Every node's runtime state.
    pub fn node_runtimes(&self) -> HashMap<String, NodeRuntime> {
        self.runtimes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set_node_runtime(&self, node: &str, rt: NodeRuntime) {
        self.runtimes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.to_string(), rt);
    }

    /// A component's bytes (verified against its digest by the registry), shared while any
    /// worker holds them.
    pub(crate) fn blob(&self, digest: &str) -> Result<Arc<Vec<u8>>, crate::RegistryError> {
        let mut blobs = self.blobs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bytes) = blobs.get(digest).and_then(std::sync::Weak::upgrade) {
            return Ok(bytes);
        }
        blobs.retain(|_, w| w.strong_count() > 0);
        // Read under the lock: concurrent workers wait for this read instead of each
        // reading the same file.
        let bytes = Arc::new(self.registry.read_blob(digest)?);
        blobs.insert(digest.to_string(), Arc::downgrade(&bytes));
        Ok(bytes)
    }

    /// A node's status changed: the controller re-evaluates at once.
    pub(crate) fn changed(&self) {
        self.control_wake.notify();
    }

    /// A joined node's heartbeat: remembers it, and wakes its worker when the node
    /// restarted or serves another generation, or is failing (it is reachable again).
    pub(crate) fn heartbeat(&self, node: &str, instance_id: &str, generation: u64) {
        let mut runtimes = self.runtimes.lock().unwrap_or_else(|p| p.into_inner());
        let rt = runtimes.entry(node.to_string()).or_insert_with(|| NodeRuntime {
            status: "pending".into(),
            breaker: "closed".into(),
            ..NodeRuntime::default()
        });
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
                w.wake.notify();
            }
        }
    }

    /// Whether a worker manages `node` at `url`.
    pub(crate) fn manages(&self, node: &str, url: &str) -> bool {
        self.workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .is_some_and(|w| w.url == url.trim_end_matches('/'))
    }

    pub(crate) fn take_restart_hint(&self, node: &str) -> bool {
        self.restart_hints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(node)
    }

    pub(crate) fn take_retry_hint(&self, node: &str) -> bool {
        self.retry_hints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(node)
    }

    /// Installs a new desired state and wakes every worker when it changed.
    fn set_desired(&self, d: Desired) {
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

    /// Starts workers for new nodes and stops those of removed (or moved) nodes.
    fn sync_workers(self: &Arc<Self>, nodes: &[crate::fleet::NodeRecord]) {
        let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        let wanted: HashMap<&str, &str> = nodes.iter().map(|n| (n.name.as_str(), n.url.as_str())).collect();
        let gone: Vec<String> = workers
            .iter()
            .filter(|(name, w)| wanted.get(name.as_str()) != Some(&w.url.as_str()))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(w) = workers.remove(&name) {
                w.stop.store(true, Ordering::Release);
                w.wake.notify();
            }
        }
        for n in nodes {
            if !workers.contains_key(&n.name) {
                // Start from what the database remembers, so a restarted service reports
                // the nodes as they were until it has checked them.
                let mut rt = self.node_runtime(&n.name);
                if rt.instance_id.is_none() {
                    rt.applied_generation = n.applied_generation;
                    rt.instance_id = n.instance_id.clone();
                    rt.status = if n.status == "converged" {
                        "pending".into()
                    } else {
                        n.status.clone()
                    };
                    rt.failing_since = n.failing_since.clone();
                    rt.last_error = n.last_error.clone();
                    rt.failures = n.failures;
                    self.set_node_runtime(&n.name, rt);
                }
                workers.insert(
                    n.name.clone(),
                    worker::spawn(self.clone(), n.name.clone(), n.url.clone()),
                );
                tracing::info!(node = %n.name, url = %n.url, "managing node");
            }
        }
    }
}

/// The sync service, before it starts.
pub struct SyncService {
    registry: Arc<Registry>,
    config: SyncConfig,
    sources: Vec<Box<dyn Source>>,
}

/// A running sync service.
pub struct SyncHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    control: Option<std::thread::JoinHandle<()>>,
    api: Option<std::thread::JoinHandle<()>>,
    api_stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl SyncService {
    /// A service over `registry`.
    pub fn new(registry: Arc<Registry>, config: SyncConfig) -> SyncService {
        SyncService {
            registry,
            config,
            sources: Vec::new(),
        }
    }

    /// Adds a source polled on its own thread.
    pub fn with_source(mut self, source: Box<dyn Source>) -> SyncService {
        self.sources.push(source);
        self
    }

    /// Binds the API, starts the control loop, node workers and sources.
    pub fn start(self) -> anyhow::Result<SyncHandle> {
        let shared = Arc::new(Shared {
            registry: self.registry,
            permits: Permits::new(self.config.concurrency),
            config: self.config,
            desired: Mutex::new(Desired::default()),
            runtimes: Mutex::new(HashMap::new()),
            restart_hints: Mutex::new(HashSet::new()),
            retry_hints: Mutex::new(HashSet::new()),
            metrics: SyncMetrics::default(),
            control_wake: worker::Wake::default(),
            blobs: Mutex::new(HashMap::new()),
            workers: Mutex::new(BTreeMap::new()),
            stop: AtomicBool::new(false),
        });
        let listener = std::net::TcpListener::bind(shared.config.listen)
            .with_context(|| format!("listening on {}", shared.config.listen))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (api_stop, api_stopped) = tokio::sync::oneshot::channel();
        let api_shared = shared.clone();
        let api = std::thread::Builder::new()
            .name("sync-api".into())
            .spawn(move || {
                if let Err(e) = super::api::serve(api_shared, listener, api_stopped) {
                    tracing::error!(error = %format!("{e:#}"), "the sync API stopped");
                }
            })?;
        // The first desired state before anything else, so workers start with a target.
        if let Err(e) = control_tick(&shared, &mut ControlState::default()) {
            tracing::warn!(error = %format!("{e:#}"), "first control tick failed; retrying");
        }
        let control_shared = shared.clone();
        let control = std::thread::Builder::new()
            .name("sync-control".into())
            .spawn(move || control_loop(control_shared))?;
        for mut source in self.sources {
            let s = shared.clone();
            std::thread::Builder::new()
                .name(format!("sync-source-{}", source.name()))
                .spawn(move || {
                    let mut failing = false;
                    while !s.stop.load(Ordering::Acquire) {
                        match source.poll(&s.registry) {
                            Ok(()) => failing = false,
                            Err(e) => {
                                if !failing {
                                    tracing::warn!(source = %source.name(), error = %format!("{e:#}"), "source poll failed; retrying");
                                }
                                failing = true;
                            }
                        }
                        let until = Instant::now() + source.interval();
                        while Instant::now() < until && !s.stop.load(Ordering::Acquire) {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                })?;
        }
        Ok(SyncHandle {
            shared,
            addr,
            control: Some(control),
            api: Some(api),
            api_stop: Some(api_stop),
        })
    }
}

impl SyncHandle {
    /// The address the join/status API listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The current desired routing generation.
    pub fn generation(&self) -> u64 {
        self.shared.desired().generation
    }

    /// Stops everything and waits for the control loop and API.
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(tx) = self.api_stop.take() {
            let _ = tx.send(());
        }
        for w in self
            .shared
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            w.stop.store(true, Ordering::Release);
            w.wake.notify();
        }
        if let Some(c) = self.control.take() {
            let _ = c.join();
        }
        if let Some(a) = self.api.take() {
            let _ = a.join();
        }
    }

    /// Blocks until the service stops (it stops only through [`SyncHandle::shutdown`] or
    /// the process ending).
    pub fn wait(mut self) {
        if let Some(c) = self.control.take() {
            let _ = c.join();
        }
    }
}

impl Drop for SyncHandle {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// What the control loop carries between ticks.
#[derive(Default)]
pub(crate) struct ControlState {
    pub registry_generation: Option<u64>,
    pub last_trigger_check: Option<Instant>,
    pub last_message: HashMap<u64, Instant>,
    /// What the last desired state was computed from (registry generation, nodes, rollout
    /// progress): the same inputs give the same state, so it is not recomputed.
    pub desired_inputs: Option<String>,
}

/// A fingerprint of everything the desired state is computed from.
fn desired_inputs(
    generation: u64,
    nodes: &[crate::fleet::NodeRecord],
    rollouts: &[crate::rollout::Rollout],
) -> String {
    let mut key = generation.to_string();
    for n in nodes {
        key.push_str(&format!("|{}@{}", n.name, n.url));
    }
    for r in rollouts {
        key.push_str(&format!("|{}:{}:{}:{}", r.id, r.state, r.step, r.phase.as_str()));
    }
    key
}

/// Recomputes and publishes the desired state when its inputs changed.
fn publish_desired(
    shared: &Shared,
    state: &mut ControlState,
    nodes: &[crate::fleet::NodeRecord],
    rollouts: &[crate::rollout::Rollout],
) -> anyhow::Result<()> {
    let key = desired_inputs(shared.registry.generation()?, nodes, rollouts);
    if state.desired_inputs.as_deref() == Some(key.as_str()) {
        return Ok(());
    }
    let desired = desired::compute(&shared.registry, nodes, rollouts)?;
    shared.set_desired(desired);
    state.desired_inputs = Some(key);
    Ok(())
}

fn control_tick(shared: &Arc<Shared>, state: &mut ControlState) -> anyhow::Result<()> {
    let registry = &shared.registry;
    let nodes = registry.nodes().context("reading the node list")?;
    shared.sync_workers(&nodes);
    let generation = registry.generation()?;
    let due = state
        .last_trigger_check
        .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
    if state.registry_generation != Some(generation) || due {
        super::controller::registry_triggers(shared)?;
        state.registry_generation = Some(registry.generation()?);
        state.last_trigger_check = Some(Instant::now());
    }
    let mut rollouts = registry.active_rollouts()?;
    publish_desired(shared, state, &nodes, &rollouts)?;
    // A rollout may move several phases at once (a smoke test right after the warm-up):
    // drive again while anything moved, publishing each new weight at once.
    for _ in 0..4 {
        super::controller::drive_rollouts(shared, state, &rollouts)?;
        let after = registry.active_rollouts()?;
        publish_desired(shared, state, &nodes, &after)?;
        let moved = after.len() != rollouts.len()
            || after
                .iter()
                .zip(&rollouts)
                .any(|(a, b)| a.id != b.id || a.phase != b.phase || a.step != b.step || a.state != b.state);
        rollouts = after;
        if !moved {
            break;
        }
    }
    Ok(())
}

fn control_loop(shared: Arc<Shared>) {
    let mut state = ControlState::default();
    let mut failing = false;
    while !shared.stop.load(Ordering::Acquire) {
        let started = Instant::now();
        match control_tick(&shared, &mut state) {
            Ok(()) => {
                if failing {
                    tracing::info!("control loop recovered");
                }
                failing = false;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %format!("{e:#}"), "control tick failed; retrying");
                }
                failing = true;
            }
        }
        let spent = started.elapsed();
        shared.control_wake.wait(shared.config.tick.saturating_sub(spent));
    }
}
