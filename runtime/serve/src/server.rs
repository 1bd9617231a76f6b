//! The server: [`Server::new`] (or [`Server::managed`]), then [`Server::load`] (every
//! served version loaded and warmed: print "ready"), then [`Server::run`] until the
//! shutdown future resolves. [`serve`] does the three in one call.
//!
//! Routes: Kiln's HTTP API (the seed API and the Open Inference Protocol v2, answered by
//! `kiln-api` through [`crate::http`]), Prometheus `/metrics`, the node admin API
//! (`/admin/v1/...`) and the browser playground (`/ui/...`).

use crate::access;
use crate::catalog::Catalog;
use crate::drift;
use crate::http::{self, HttpError};
use crate::node::store::NodeStore;
use crate::node::{admin, join};
use crate::reload::{self, LoadReport};
use crate::state::{ServeConfig, State};
use crate::ui;
use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, put};
use kiln_host::Host;
use kiln_node_api::tls::request_timeout;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// A Kiln HTTP server over a host and a catalog.
#[derive(Clone)]
pub struct Server {
    state: Arc<State>,
}

impl Server {
    /// Creates a server over a catalog it polls (registry mode), with an empty routing
    /// table (not ready).
    pub fn new(host: Arc<Host>, catalog: Arc<dyn Catalog>, config: ServeConfig) -> anyhow::Result<Server> {
        Ok(Server {
            state: Arc::new(State::new(host, catalog, None, config).context("creating the metrics")?),
        })
    }

    /// Creates a managed node: it serves what `store` holds (the persisted routing on
    /// start) and changes only through the admin API.
    pub fn managed(host: Arc<Host>, store: Arc<NodeStore>, config: ServeConfig) -> anyhow::Result<Server> {
        Ok(Server {
            state: Arc::new(
                State::new(host, store.clone(), Some(store), config).context("creating the metrics")?,
            ),
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
        self.state.is_ready()
    }

    /// The catalog generation being served.
    pub fn generation(&self) -> u64 {
        self.state.table().generation
    }

    /// The HTTP routes, for embedding in another server or testing without a socket.
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// The routes of the health listener: liveness, readiness and `/metrics`.
    pub fn health_router(&self) -> Router {
        health_router(self.state.clone())
    }

    /// Serves [`Server::health_router`] on `listener` from a thread and async runtime of
    /// its own (with the server's TLS and connection limits), until the returned handle
    /// is dropped. On the main port, a probe waits its turn behind every connection with
    /// a request ready, which under an overload of hundreds of connections is hundreds
    /// of milliseconds; here it waits only for the operating system to schedule the
    /// thread. Call it before [`Server::load`] so that probes answer (not ready) while
    /// the models load.
    pub fn serve_health(&self, listener: std::net::TcpListener) -> anyhow::Result<HealthServer> {
        listener
            .set_nonblocking(true)
            .context("setting the health listener non-blocking")?;
        let addr = listener
            .local_addr()
            .context("reading the health listener's address")?;
        let router = self.health_router();
        let tls = self.state.config.tls.clone();
        let limits = self.state.config.limits.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("kiln-health".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("starting the health listener's runtime")?;
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .context("registering the health listener")?;
                    let shutdown = async move {
                        let _ = stopped.await;
                    };
                    kiln_node_api::tls::serve(listener, router, tls, &limits, shutdown).await
                })
            })
            .context("starting the health listener's thread")?;
        tracing::info!(%addr, "serving liveness, readiness and metrics on their own listener");
        Ok(HealthServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
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
            let _ = self.state.bound_name.set(addr.to_string());
        }
        let poller = tokio::spawn(reload::poll(self.state.clone()));
        let gauges = tokio::spawn(watch(self.state.clone()));
        let heartbeat = match (&self.state.config.join, addr) {
            (Some(config), Some(addr)) => Some(join::Heartbeat::start(self.state.clone(), config, addr)?),
            _ => None,
        };
        let tls = self.state.config.tls.clone();
        tracing::info!(
            addr = ?addr,
            mode = self.state.mode(),
            tls = tls.is_some(),
            client_certificates = tls.as_ref().is_some_and(|t| t.requires_client_cert()),
            "serving {}",
            if tls.is_some() { "HTTPS" } else { "HTTP" }
        );
        let limits = self.state.config.limits.clone();
        let result = kiln_node_api::tls::serve(listener, self.router(), tls, &limits, shutdown).await;
        poller.abort();
        gauges.abort();
        drop(heartbeat);
        tracing::info!("server stopped");
        result
    }
}

/// Every `monitor_interval`: the drift gauges (and drift alerts) of the versions with a
/// reference and recent traffic, and the SLO burn alerts over this server's counters.
async fn watch(state: Arc<State>) {
    let mut tick = tokio::time::interval(state.config.monitor_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = std::time::Instant::now();
    let history = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    loop {
        tick.tick().await;
        let (state, history) = (state.clone(), history.clone());
        let _ = tokio::task::spawn_blocking(move || {
            crate::drift::refresh_gauges(&state);
            let mut history = history.lock().unwrap_or_else(|p| p.into_inner());
            slo_alerts(&state, &mut history, started.elapsed().as_secs_f64());
        })
        .await;
    }
}

/// Samples this server's request counters per model and alerts the SLOs that burn.
fn slo_alerts(
    state: &State,
    history: &mut std::collections::HashMap<String, kiln_monitor::burn::BurnHistory>,
    now: f64,
) {
    if state.config.slos.is_empty() {
        return;
    }
    let Ok(text) = state.metrics.render(&state.table(), None) else {
        return;
    };
    let Ok(counters) = kiln_monitor::slo::counters_from_exposition(&text) else {
        return;
    };
    for c in counters {
        history.entry(c.model.clone()).or_default().push(now, c);
    }
    let Some(alerter) = &state.alerter else { return };
    let alerts = state
        .config
        .slos
        .iter()
        .filter_map(|slo| history.get(&slo.model).map(|h| h.burning(slo)))
        .flatten()
        .map(|burn| {
            let mut alert = kiln_node_api::alerts::Alert::new(
                kiln_monitor::slo::ALERT_NAME,
                kiln_node_api::alerts::Severity::Page,
            );
            for (name, value) in burn.labels() {
                alert = alert.label(name, value);
            }
            alert.annotation("summary", burn.summary())
        })
        .collect();
    alerter.reconcile("slo", alerts);
}

/// The health listener of [`Server::serve_health`]; dropping it stops the listener and
/// waits for its requests in flight.
pub struct HealthServer {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl HealthServer {
    /// The address it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(Err(e))) => tracing::error!(error = %format!("{e:#}"), "the health listener failed"),
            Some(Err(_)) => tracing::error!("the health listener's thread panicked"),
            _ => {}
        }
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
    let admin = match state.admin_enabled() {
        true => Router::new()
            .route("/state", get(admin::node_state))
            .route(
                "/components/{digest}",
                put(admin::put_component).head(admin::has_component),
            )
            .route("/routing", put(admin::put_routing))
            .route("/profiles", get(drift::profiles))
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                admin::authorize,
            ))
            // Components are far larger than inference requests: their own limit.
            .layer(DefaultBodyLimit::max(state.config.max_upload_bytes)),
        false => Router::new()
            .route("/", any(admin::off))
            .route("/{*rest}", any(admin::off)),
    };
    // The browser playground and the bundles it loads, and everything else: Kiln's HTTP
    // API (seed, OIP v2) or unknown, which kiln-api answers. Bearer tokens and the rate
    // limit apply to these only.
    let guarded = Router::new()
        .merge(ui::routes())
        .route("/monitor/v1/drift/{model}", get(drift::drift))
        .fallback(http::api)
        .method_not_allowed_fallback(method_not_allowed);
    let gate = access::Gate {
        catalog: state.catalog.clone(),
        config: state.config.access.clone(),
        rejected: state.metrics.rate_limited.clone(),
    };
    let guarded = access::guard(guarded, gate).with_state(state.clone());
    let limits = &state.config.limits;
    // Every request is bounded in time, slow bodies included; uploads get longer.
    let admin = request_timeout(admin, limits.upload_timeout, "--upload-timeout");
    let timed = Router::new()
        .route("/metrics", get(metrics_text))
        // Health is never limited (kiln-api answers it, without a caller).
        .route("/v2/health/live", any(http::api))
        .route("/v2/health/ready", any(http::api))
        .fallback_service(guarded)
        .method_not_allowed_fallback(method_not_allowed);
    let timed = request_timeout(timed, limits.request_timeout, "--request-timeout");
    Router::new()
        .nest(kiln_node_api::ADMIN_PREFIX, admin)
        .merge(timed)
        .layer(axum::middleware::map_response(http::json_errors))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

fn health_router(state: Arc<State>) -> Router {
    let routes = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/v2/health/live", any(http::api))
        .route("/v2/health/ready", any(http::api))
        .fallback(health_not_found)
        .method_not_allowed_fallback(method_not_allowed);
    request_timeout(routes, state.config.limits.request_timeout, "--request-timeout")
        .layer(axum::middleware::map_response(http::json_errors))
        .layer(DefaultBodyLimit::max(64 << 10))
        .with_state(state)
}

/// Anything but health and metrics on the health listener: the API's 404, saying what
/// the listener serves.
async fn health_not_found(method: Method, uri: Uri) -> HttpError {
    let mut e = kiln_api::ApiError::no_route(method.as_str(), uri.path());
    e.message += " on the health listener (it serves /v2/health/live, /v2/health/ready and /metrics)";
    e.into()
}

async fn metrics_text(axum::extract::State(state): axum::extract::State<Arc<State>>) -> Response {
    let table = state.table();
    state
        .metrics
        .connections_open
        .set(state.config.limits.open.get() as i64);
    state
        .metrics
        .set_load(&state.bulkheads.snapshot(), state.body_budget.in_flight_bytes());
    state.metrics.set_drift_shed(state.profiler.shed_rows());
    state.metrics.set_drift_profile_bytes(state.profiles.heap_bytes());
    match state.metrics.render(&table, state.config.cache.as_deref()) {
        Ok(text) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(e) => HttpError::from(kiln_api::ApiError::internal(format!(
            "rendering the metrics: {e:#}"
        )))
        .into_response(),
    }
}

/// A known route (metrics, admin, playground) with the wrong method: the same 405 as the
/// API's own routes.
async fn method_not_allowed(method: Method, uri: Uri) -> HttpError {
    kiln_api::ApiError::method_not_allowed(method.as_str(), uri.path()).into()
}
