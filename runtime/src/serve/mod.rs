//! The HTTP server: the seed API (`POST /v1/models/{name}/predict`), the Open Inference
//! Protocol v2 (`/v2/...`, with the binary tensor extension), Prometheus `/metrics`, the
//! node admin API (`/admin/v1/...`), and a weighted routing table, hot-reloaded from a
//! [`Catalog`] (registry mode) or pushed through the admin API (managed mode).
//!
//! From the command line: [`Server::new`] (or [`Server::managed`]), then [`Server::load`]
//! (every served version loaded and warmed: print "ready"), then [`Server::run`] until the
//! shutdown future resolves. [`serve`] does the three in one call.

mod admin;
pub mod binary;
pub mod catalog;
pub mod error;
mod inference;
mod join;
pub mod metrics;
mod node_state;
mod oip_http;
mod push;
mod reload;
mod seed;
mod shadow;
pub mod table;
mod ui;

pub use catalog::{Catalog, ServedVersion, registry_routing};
pub use reload::LoadReport;

use crate::host::Host;
use crate::node_store::NodeStore;
use crate::prediction_cache::PredictionCache;
use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use error::ApiError;
use metrics::Metrics;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};
use table::Table;

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
    /// Bearer token of the node admin API (`/admin/v1`); `None` turns the API off.
    pub admin_token: Option<String>,
    /// Largest admin request body (a component upload), in bytes.
    pub max_upload_bytes: usize,
    /// The node's name in its state and heartbeats (default: the bound address).
    pub node_name: Option<String>,
    /// The sync service to announce this node to, with heartbeats.
    pub join: Option<JoinConfig>,
    /// Shadow calls in flight at most; copies of requests beyond it are dropped (counted).
    pub max_shadow_in_flight: usize,
}

/// Where a managed node announces itself.
#[derive(Clone, Debug)]
pub struct JoinConfig {
    /// Base URL of the sync service (`http://127.0.0.1:7070`).
    pub sync_url: String,
    /// The URL the sync service reaches this node at (default `http://<bound address>`).
    pub advertise_url: Option<String>,
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
    /// Unique per server start: tells the sync service the node restarted.
    pub(crate) instance_id: String,
    pub(crate) started: Instant,
    /// Set when the server binds, unless configured.
    node_name: OnceLock<String>,
}

impl State {
    /// The current routing table.
    pub(crate) fn table(&self) -> Arc<Table> {
        self.table
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Installs a new table, returning the previous one.
    pub(crate) fn swap_table(&self, table: Arc<Table>) -> Arc<Table> {
        let mut slot = self
            .table
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        std::mem::replace(&mut *slot, table)
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
            .or_else(|| self.node_name.get().cloned())
            .unwrap_or_else(|| self.config.listen.to_string())
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

/// A Kiln HTTP server over a host and a catalog.
#[derive(Clone)]
pub struct Server {
    state: Arc<State>,
}

impl Server {
    /// Creates a server over a catalog it polls (registry mode), with an empty routing
    /// table (not ready).
    pub fn new(host: Arc<Host>, catalog: Arc<dyn Catalog>, config: ServeConfig) -> anyhow::Result<Server> {
        Self::build(host, catalog, None, config)
    }

    /// Creates a managed node: it serves what `store` holds (the persisted routing on
    /// start) and changes only through the admin API.
    pub fn managed(host: Arc<Host>, store: Arc<NodeStore>, config: ServeConfig) -> anyhow::Result<Server> {
        Self::build(host, store.clone(), Some(store), config)
    }

    fn build(
        host: Arc<Host>,
        catalog: Arc<dyn Catalog>,
        store: Option<Arc<NodeStore>>,
        config: ServeConfig,
    ) -> anyhow::Result<Server> {
        let shadow_slots = Arc::new(tokio::sync::Semaphore::new(config.max_shadow_in_flight));
        Ok(Server {
            state: Arc::new(State {
                host,
                catalog,
                config,
                table: RwLock::new(Arc::new(Table::default())),
                ready: AtomicBool::new(false),
                reload_lock: tokio::sync::Mutex::new(()),
                metrics: Metrics::new().context("creating the metrics")?,
                store,
                last_error: Mutex::new(None),
                shadow_slots,
                instance_id: uuid::Uuid::new_v4().to_string(),
                started: Instant::now(),
                node_name: OnceLock::new(),
            }),
        })
    }

    /// Whether this is a managed node.
    pub fn is_managed(&self) -> bool {
        self.state.store.is_some()
    }

    /// This server's instance id (unique per start).
    pub fn instance_id(&self) -> &str {
        &self.state.instance_id
    }

    /// Loads and warms every served version, installs the routing table and marks the
    /// server ready. Versions that fail to load are in the report (and the logs and
    /// metrics); only an unreadable catalog is an error.
    pub async fn load(&self) -> anyhow::Result<LoadReport> {
        let report = reload::reload(&self.state).await?;
        self.state.ready.store(true, Ordering::Release);
        Ok(report)
    }

    /// Whether the first load finished.
    pub fn is_ready(&self) -> bool {
        self.state.ready.load(Ordering::Acquire)
    }

    /// The catalog generation being served.
    pub fn generation(&self) -> u64 {
        self.state.table().generation
    }

    /// The HTTP routes, for embedding in another server or testing without a socket.
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Serves on `listener`, reloading from the catalog every poll interval (and doing
    /// the first load if [`Server::load`] was not called), until `shutdown` resolves;
    /// then stops accepting and lets in-flight requests finish.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = listener.local_addr().ok();
        if let Some(addr) = addr {
            let _ = self.state.node_name.set(addr.to_string());
        }
        let poller = tokio::spawn(reload::poll(self.state.clone()));
        let heartbeat = match (&self.state.config.join, addr) {
            (Some(join), Some(addr)) => Some(join::Heartbeat::start(self.state.clone(), join, addr)?),
            _ => None,
        };
        tracing::info!(addr = ?addr, mode = self.state.mode(), "serving HTTP");
        let result = axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving HTTP");
        poller.abort();
        drop(heartbeat);
        tracing::info!("server stopped");
        result
    }
}

/// Builds a server and serves until `shutdown` resolves; `/v2/health/ready` turns 200
/// once the first load finished.
pub async fn serve(
    listener: tokio::net::TcpListener,
    host: Arc<Host>,
    catalog: Arc<dyn Catalog>,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    Server::new(host, catalog, config)?.run(listener, shutdown).await
}

fn router(state: Arc<State>) -> Router {
    let limit = state.config.max_body_bytes;
    let admin = match state.config.admin_token {
        Some(_) => Router::new()
            .route("/state", get(admin::node_state))
            .route(
                "/components/{digest}",
                put(admin::put_component).head(admin::has_component),
            )
            .route("/routing", put(admin::put_routing))
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                admin::authorize,
            ))
            // Components are far larger than inference requests: their own limit.
            .layer(DefaultBodyLimit::max(state.config.max_upload_bytes)),
        None => Router::new()
            .route("/", any(admin::off))
            .route("/{*rest}", any(admin::off)),
    };
    Router::new()
        .nest(kiln_node_api::ADMIN_PREFIX, admin)
        .route("/v1/models/{name}/predict", post(seed::predict))
        .route("/v2", get(oip_http::server_metadata))
        .route("/v2/health/live", get(oip_http::live))
        .route("/v2/health/ready", get(oip_http::ready))
        .route("/v2/models/{name}", get(oip_http::model_metadata))
        .route("/v2/models/{name}/ready", get(oip_http::model_ready))
        .route("/v2/models/{name}/config", get(oip_http::model_config))
        .route("/v2/models/{name}/infer", post(oip_http::infer))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(oip_http::version_metadata),
        )
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(oip_http::version_ready),
        )
        .route(
            "/v2/models/{name}/versions/{version}/config",
            get(oip_http::version_config),
        )
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(oip_http::version_infer),
        )
        .route("/metrics", get(metrics_text))
        // The browser playground and the bundles it loads.
        .merge(ui::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::map_response(json_errors))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn metrics_text(axum::extract::State(state): axum::extract::State<Arc<State>>) -> Response {
    let table = state.table();
    match state.metrics.render(&table, state.config.cache.as_deref()) {
        Ok(text) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(e) => ApiError::internal(format!("rendering the metrics: {e:#}")).into_response(),
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Turns any error response that is not already JSON (an extractor's plain-text
/// rejection, say) into `{"error": "..."}`, so clients can always parse errors.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, 64 << 10).await {
        Ok(bytes) if !bytes.is_empty() => String::from_utf8_lossy(&bytes).into_owned(),
        _ => status.canonical_reason().unwrap_or("request failed").to_string(),
    };
    let body = serde_json::json!({ "error": text }).to_string();
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}
