//! The sync service's HTTP API: nodes join and heartbeat (`POST /sync/v1/nodes`), and the
//! fleet status can be read (`GET /sync/v1/status`); both need the fleet token. `/metrics`
//! exposes the service's own counters for Prometheus.

use std::sync::Arc;

use anyhow::Context;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kiln_node_api::{JoinReply, JoinRequest, SYNC_PREFIX, bearer_token, tokens_match};
use serde_json::json;

use crate::state::Shared;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(token) = shared.config.token.as_deref() else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .unwrap_or("");
    if tokens_match(given, token) {
        Ok(())
    } else {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (the fleet token, KILN_ADMIN_TOKEN)",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        Err(Box::new(r))
    }
}

async fn join(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(r) = authorized(&shared, &headers) {
        return *r;
    }
    let request: JoinRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed join request: {e}")),
    };
    shared.metrics.heartbeats.inc();
    // A node the service already manages at this URL: its heartbeat only updates memory
    // (the worker records `last_seen` with its status), so fifty nodes heartbeating every
    // second do not mean fifty database writes a second.
    if shared.manages(&request.name, &request.url) {
        shared.heartbeat(&request.name, &request.instance_id, request.generation);
        return Json(JoinReply {
            heartbeat_ms: shared.config.heartbeat.as_millis() as u64,
        })
        .into_response();
    }
    let s = shared.clone();
    let req = request.clone();
    let result = tokio::task::spawn_blocking(move || {
        s.registry.node_heartbeat(
            &req.name,
            &req.url,
            &req.instance_id,
            &format!("node:{}", req.name),
        )
    })
    .await;
    match result {
        Ok(Ok(_)) => {
            shared.heartbeat(&request.name, &request.instance_id, request.generation);
            Json(JoinReply {
                heartbeat_ms: shared.config.heartbeat.as_millis() as u64,
            })
            .into_response()
        }
        Ok(Err(kiln_registry::RegistryError::Invalid(m))) => error(StatusCode::UNPROCESSABLE_ENTITY, m),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn status(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&shared, &headers) {
        return *r;
    }
    let desired = shared.desired();
    let runtimes = shared.node_runtimes();
    let nodes: Vec<_> = desired
        .tables
        .keys()
        .map(|n| {
            let rt = runtimes.get(n).cloned().unwrap_or_default();
            json!({
                "node": n,
                "status": rt.status,
                "applied_generation": rt.applied_generation,
                "last_error": rt.last_error,
                "failing_since": rt.failing_since,
                "failures": rt.failures,
                "breaker": rt.breaker,
                "seen_seconds_ago": rt.last_seen.map(|t| t.elapsed().as_secs_f64()),
            })
        })
        .collect();
    Json(json!({ "generation": desired.generation, "nodes": nodes })).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    match shared.metrics.render(&shared) {
        Ok(text) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering the metrics: {e}"),
        ),
    }
}

/// Serves the API until `stop` fires.
pub fn serve(
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("sync-http")
        .build()
        .context("starting the sync API runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).context("adopting the listener")?;
        let app = axum::Router::new()
            .route(&format!("{SYNC_PREFIX}/nodes"), post(join))
            .route(&format!("{SYNC_PREFIX}/status"), get(status))
            .route("/metrics", get(metrics))
            .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") });
        let tls = shared.config.tls.clone();
        let app = app.with_state(shared);
        kiln_node_api::tls::serve(listener, app, tls, async move {
            let _ = stop.await;
        })
        .await
        .context("serving the sync API")
    })
}
