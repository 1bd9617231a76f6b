//! What every request, the reloader and the node agent share: the host, the catalog, the
//! routing table being served, metrics, and the node's identity.

use crate::catalog::Catalog;
use crate::metrics::Metrics;
use crate::node::store::NodeStore;
use crate::prediction_cache::PredictionCache;
use crate::table::Table;
use kiln_host::Host;
use kiln_node_api::tls::{ClientTls, ServerTls};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use kiln_node_api::NodeCredentials;
use secrecy::SecretString;

/// Server settings.
#[derive(Clone)]
pub struct ServeConfig {
    /// Address to listen on (the caller binds it; kept here for logs and the CLI).
    pub listen: SocketAddr,
    /// How often the catalog's generation is polled.
    pub poll_interval: Duration,
    /// Largest request body accepted, in bytes (413 above).
    pub max_body_bytes: usize,
    /// The prediction cache; `None` serves every request uncached.
    pub cache: Option<Arc<PredictionCache>>,
    /// A fixed bearer token of the node admin API (`/admin/v1`), for a node the sync
    /// service manages without a join; a joined node also accepts the credential it was
    /// given. Neither: the admin API is off.
    pub admin_token: Option<SecretString>,
    /// Largest admin request body (a component upload), in bytes.
    pub max_upload_bytes: usize,
    /// The node's name in its state and heartbeats (default: the bound address).
    pub node_name: Option<String>,
    /// The sync service to announce this node to, with heartbeats.
    pub join: Option<JoinConfig>,
    /// Shadow calls in flight at most; copies of requests beyond it are dropped (counted).
    pub max_shadow_in_flight: usize,
    /// Serve HTTPS with this certificate (and, if it has a client CA, require client
    /// certificates); `None` serves plain HTTP.
    pub tls: Option<ServerTls>,
    /// What the node's own calls (heartbeats to the sync service) trust and present.
    pub client_tls: ClientTls,
    /// Bearer tokens and rate limits of the inference port.
    pub access: crate::access::AccessConfig,
    /// Largest JSON part of an inference request, in bytes (413 above; the binary tensor
    /// extension has `max_body_bytes`).
    pub max_json_bytes: usize,
    /// Request-body bytes being read, parsed or run at once on the node (0: no limit);
    /// a request that would pass it is shed with 503 `overloaded`.
    pub max_body_bytes_in_flight: usize,
    /// Every model's bulkhead unless `bulkheads` names it; `None` derives it from the
    /// host's warm instances and the CPU count ([`crate::bulkhead::Limits::derived`]).
    pub bulkhead: Option<crate::bulkhead::Limits>,
    /// Bulkheads of named models.
    pub bulkheads: std::collections::HashMap<String, crate::bulkhead::Limits>,
    /// Fallbacks of named models (none by default).
    pub fallbacks: std::collections::HashMap<String, crate::fallback::Fallback>,
    /// Connections, header/idle/request/upload timeouts and concurrent uploads.
    pub limits: kiln_node_api::tls::ServeLimits,
    /// Alertmanagers to alert (`--alertmanager`): a version that fails to load, and the
    /// dataset drift of a served version with a reference. None: no alerts.
    pub alertmanager: Vec<String>,
    /// How often active alerts are re-sent.
    pub alert_resend: Duration,
    /// Profile each version's inputs and outputs for drift (`--no-drift-profiles`: off).
    pub drift_profiles: bool,
    /// SLOs evaluated over this server's own counters, alerted with `alertmanager`.
    pub slos: Vec<kiln_monitor::slo::Slo>,
    /// How often drift gauges, drift and SLO alerts are evaluated.
    pub monitor_interval: Duration,
}

/// Where a managed node announces itself.
#[derive(Clone, Debug)]
pub struct JoinConfig {
    /// Base URL of the sync service (`http://127.0.0.1:7070`).
    pub sync_url: String,
    /// The URL the sync service reaches this node at (default `http://<bound address>`, or
    /// `https://` when the node serves TLS).
    pub advertise_url: Option<String>,
    /// The join token (a `node`-role token) for the first join; later heartbeats use the
    /// node's own credential.
    pub join_token: Option<SecretString>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            poll_interval: Duration::from_millis(100),
            max_body_bytes: 64 << 20,
            cache: None,
            admin_token: None,
            max_upload_bytes: 512 << 20,
            node_name: None,
            join: None,
            max_shadow_in_flight: 32,
            tls: None,
            client_tls: ClientTls::default(),
            access: crate::access::AccessConfig::default(),
            max_json_bytes: 16 << 20,
            max_body_bytes_in_flight: 256 << 20,
            bulkhead: None,
            bulkheads: Default::default(),
            fallbacks: Default::default(),
            limits: kiln_node_api::tls::ServeLimits::default(),
            alertmanager: Vec::new(),
            alert_resend: kiln_node_api::alerts::DEFAULT_RESEND_INTERVAL,
            drift_profiles: true,
            slos: Vec::new(),
            monitor_interval: Duration::from_secs(60),
        }
    }
}

/// State shared by every request and the reloader.
pub(crate) struct State {
    pub(crate) host: Arc<Host>,
    pub(crate) catalog: Arc<dyn Catalog>,
    pub(crate) config: ServeConfig,
    table: RwLock<Arc<Table>>,
    /// Set once the first load finished.
    pub(crate) ready: AtomicBool,
    pub(crate) reload_lock: tokio::sync::Mutex<()>,
    pub(crate) metrics: Metrics,
    /// The node store of a managed node; `None` in registry mode.
    pub(crate) store: Option<Arc<NodeStore>>,
    /// Why the latest routing change failed, if it did.
    last_error: Mutex<Option<String>>,
    /// Permits for shadow calls in flight.
    pub(crate) shadow_slots: Arc<tokio::sync::Semaphore>,
    /// Permits for component uploads being received.
    pub(crate) upload_slots: Arc<tokio::sync::Semaphore>,
    /// Unique per server start: tells the sync service the node restarted.
    pub(crate) instance_id: String,
    pub(crate) started: Instant,
    /// Set when the server binds, unless configured.
    pub(crate) bound_name: OnceLock<String>,
    /// What the sync service gave this node when it joined (kept in the node store).
    pub(crate) credentials: RwLock<Option<NodeCredentials>>,
    /// Each model's bulkhead.
    pub(crate) bulkheads: crate::bulkhead::Bulkheads,
    /// Request-body bytes in flight.
    pub(crate) body_budget: crate::bulkhead::BodyBudget,
    /// Every model's bulkhead limits unless its serving policy or a flag says otherwise
    /// (`--max-concurrent-calls`, else derived once from the pool and the CPU count).
    default_bulkhead: crate::bulkhead::Limits,
    /// What each version saw and answered, per minute (drift).
    pub(crate) profiles: crate::profiles::Profiles,
    /// Profiles requests on its thread, off the request path.
    pub(crate) profiler: crate::profiler::Profiler,
    /// The Alertmanager client, with `--alertmanager`.
    pub(crate) alerter: Option<Arc<kiln_node_api::alerts::Alerter>>,
    /// The heartbeats' connection to the sync service, once the node joins (`--join`).
    pub(crate) sync_target: OnceLock<Arc<kiln_node_api::retry::Target>>,
}

impl State {
    /// A server's state with an empty routing table (not ready).
    pub(crate) fn new(
        host: Arc<Host>,
        catalog: Arc<dyn Catalog>,
        store: Option<Arc<NodeStore>>,
        config: ServeConfig,
    ) -> anyhow::Result<State> {
        let credentials = match &store {
            Some(store) => store.credentials()?,
            None => None,
        };
        Ok(State {
            credentials: RwLock::new(credentials),
            bulkheads: crate::bulkhead::Bulkheads::default(),
            body_budget: crate::bulkhead::BodyBudget::new(config.max_body_bytes_in_flight),
            alerter: match config.alertmanager.is_empty() {
                true => None,
                false => {
                    let mut alerts = kiln_node_api::alerts::AlerterConfig::new(config.alertmanager.clone());
                    alerts.tls = config.client_tls.clone();
                    alerts.resend_interval = config.alert_resend;
                    Some(Arc::new(kiln_node_api::alerts::Alerter::start(alerts)?))
                }
            },
            profiles: crate::profiles::Profiles::default(),
            profiler: crate::profiler::Profiler::default(),
            sync_target: OnceLock::new(),
            default_bulkhead: config
                .bulkhead
                .unwrap_or_else(|| crate::bulkhead::Limits::derived(host.config().pool_size)),
            host,
            catalog,
            shadow_slots: Arc::new(tokio::sync::Semaphore::new(config.max_shadow_in_flight)),
            upload_slots: Arc::new(tokio::sync::Semaphore::new(
                config.limits.max_concurrent_uploads.max(1),
            )),
            config,
            table: RwLock::new(Arc::new(Table::default())),
            ready: AtomicBool::new(false),
            reload_lock: tokio::sync::Mutex::new(()),
            metrics: Metrics::new()?,
            store,
            last_error: Mutex::new(None),
            instance_id: uuid::Uuid::new_v4().to_string(),
            started: Instant::now(),
            bound_name: OnceLock::new(),
        })
    }

    /// The bulkhead of `model`: this server's `--bulkhead` for it, else the model's
    /// serving policy from its routing table (kiln.toml) over the server's default, else
    /// the server's default (`--max-concurrent-calls`, else derived).
    pub(crate) fn bulkhead(
        &self,
        model: &str,
        policy: Option<&kiln_node_api::ServingPolicy>,
    ) -> std::sync::Arc<crate::bulkhead::Bulkhead> {
        use crate::bulkhead::Limits;
        let base = self.default_bulkhead;
        let from_policy = policy.map(|p| {
            let max_concurrent = p
                .max_concurrency
                .map_or(base.max_concurrent, |c| c.max(1) as usize);
            let max_queue = match (p.max_queue, p.max_concurrency) {
                (Some(q), _) => q as usize,
                (None, Some(_)) => max_concurrent * 8,
                (None, None) => base.max_queue,
            };
            Limits {
                max_concurrent,
                max_queue,
            }
        });
        let limits = self
            .config
            .bulkheads
            .get(model)
            .copied()
            .or(from_policy)
            .unwrap_or(base);
        self.bulkheads.get(model, limits)
    }

    /// The fallback of `model`: this server's `--fallback` for it, else its serving
    /// policy's.
    pub(crate) fn fallback(
        &self,
        model: &str,
        policy: Option<&kiln_node_api::ServingPolicy>,
    ) -> Option<crate::fallback::Fallback> {
        if let Some(f) = self.config.fallbacks.get(model) {
            return Some(f.clone());
        }
        policy
            .and_then(|p| p.fallback.as_ref())
            .and_then(crate::fallback::Fallback::from_policy)
    }

    /// The current routing table.
    pub(crate) fn table(&self) -> Arc<Table> {
        self.table
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Serves `table` from now on; returns the one it replaces. The memory of versions the
    /// new table no longer holds goes back to the operating system once they are dropped:
    /// at once, and again after the deadline of the calls still running on them.
    ///
    /// Versions the new table keeps but no longer weights (a rollout's previous version, a
    /// rolled-back canary) stand by: their idle instances are dropped and their compiled
    /// code paged out (`LoadedModel::stand_by`), at once and again after that deadline.
    pub(crate) fn swap_table(&self, table: Arc<Table>) -> Arc<Table> {
        let previous = {
            let mut slot = self
                .table
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            std::mem::replace(&mut *slot, table.clone())
        };
        let stood_down = table.stood_down(&previous);
        self.profiles.prune();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let in_flight = self.host.config().deadline + std::time::Duration::from_millis(500);
            let release = move || {
                for model in &stood_down {
                    let dropped = model.stand_by();
                    tracing::debug!(digest = %model.digest, idle_instances = dropped, "version stands by: no weighted traffic");
                }
                kiln_host::memory::release_free_memory();
            };
            runtime.spawn(async move {
                let release = Arc::new(release);
                let now = release.clone();
                let _ = tokio::task::spawn_blocking(move || now()).await;
                tokio::time::sleep(in_flight).await;
                let _ = tokio::task::spawn_blocking(move || release()).await;
            });
        }
        previous
    }

    /// `KilnVersionLoadFailed` for each version the latest routing change could not load
    /// (the earlier ones resolve).
    pub(crate) fn alert_load_failures(&self, failed: &[(String, u64, String)]) {
        let Some(alerter) = &self.alerter else { return };
        let node = self.bound_name.get().cloned().unwrap_or_default();
        let alerts = failed
            .iter()
            .map(|(model, version, reason)| {
                kiln_node_api::alerts::Alert::new(
                    "KilnVersionLoadFailed",
                    kiln_node_api::alerts::Severity::Page,
                )
                .label("model", model)
                .label("version", version)
                .label(
                    "node",
                    self.config.node_name.clone().unwrap_or_else(|| node.clone()),
                )
                .annotation(
                    "summary",
                    format!("{model} version {version} failed to load: {reason}"),
                )
            })
            .collect();
        alerter.reconcile("load", alerts);
    }

    /// Whether the first load finished.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Records the outcome of the latest routing change (`None`: it succeeded).
    pub(crate) fn set_last_error(&self, error: Option<String>) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = error;
    }

    /// Why the latest routing change failed, if it did.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The node's name: configured, else the bound address, else the listen address.
    pub(crate) fn node_name(&self) -> String {
        self.config
            .node_name
            .clone()
            .or_else(|| self.bound_name.get().cloned())
            .unwrap_or_else(|| self.config.listen.to_string())
    }

    /// Whether `token` may call the admin API: the fixed admin token, or the credential
    /// the sync service gave this node.
    pub(crate) fn admin_token_matches(&self, token: &str) -> bool {
        use secrecy::ExposeSecret;
        let fixed = self
            .config
            .admin_token
            .as_ref()
            .is_some_and(|t| kiln_node_api::tokens_match(token, t.expose_secret()));
        let given = self
            .credentials
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|c| kiln_node_api::tokens_match(token, &c.admin_token));
        fixed || given
    }

    /// Whether the admin API is on: a fixed token, or a join (which brings a credential).
    pub(crate) fn admin_enabled(&self) -> bool {
        self.config.admin_token.is_some() || self.config.join.is_some()
    }

    /// `managed` or `registry`.
    pub(crate) fn mode(&self) -> &'static str {
        if self.store.is_some() {
            "managed"
        } else {
            "registry"
        }
    }
}
