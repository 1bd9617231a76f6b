//! The HTTP server: the seed API (`POST /v1/models/{name}/predict`), the Open Inference
//! Protocol v2 (`/v2/...`, with the binary tensor extension), Prometheus `/metrics`, and
//! a routing table hot-reloaded from a [`Catalog`].
//!
//! From the command line: [`Server::new`], then [`Server::load`] (every served version
//! loaded and warmed: print "ready"), then [`Server::run`] until the shutdown future
//! resolves. [`serve`] does the three in one call.

pub mod binary;
pub mod catalog;
pub mod error;
mod inference;
pub mod metrics;
mod oip_http;
mod reload;
mod seed;
pub mod table;

pub use catalog::{Catalog, ServedVersion};
pub use reload::LoadReport;

use crate::host::Host;
use crate::prediction_cache::PredictionCache;
use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use error::ApiError;
use metrics::Metrics;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
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
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            poll_interval: Duration::from_millis(100),
            max_body_bytes: 64 << 20,
            cache: None,
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
}

/// A Kiln HTTP server over a host and a catalog.
#[derive(Clone)]
pub struct Server {
    state: Arc<State>,
}

impl Server {
    /// Creates the server with an empty routing table (not ready).
    pub fn new(host: Arc<Host>, catalog: Arc<dyn Catalog>, config: ServeConfig) -> anyhow::Result<Server> {
        Ok(Server {
            state: Arc::new(State {
                host,
                catalog,
                config,
                table: RwLock::new(Arc::new(Table::default())),
                ready: AtomicBool::new(false),
                reload_lock: tokio::sync::Mutex::new(()),
                metrics: Metrics::new().context("creating the metrics")?,
            }),
        })
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
        let poller = tokio::spawn(reload::poll(self.state.clone()));
        tracing::info!(addr = ?addr, "serving HTTP");
        let result = axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving HTTP");
        poller.abort();
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
    Router::new()
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
