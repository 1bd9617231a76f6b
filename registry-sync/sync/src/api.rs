//! The sync service's HTTP API: nodes join and heartbeat (`POST /sync/v1/nodes`, with a
//! join token once, then with the credential the service gave them), the fleet status can
//! be read (`GET /sync/v1/status`, a viewer token), and the registry server's API is
//! mounted beside them. `/metrics` exposes the service's own counters for Prometheus.

use std::sync::Arc;

use anyhow::Context;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kiln_node_api::{JoinReply, JoinRequest, NodeCredentials, SYNC_PREFIX};
use kiln_registry::auth::{Action, Identity, NewToken, Role, node_token_name};
use serde_json::json;

use crate::state::Shared;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// A refusal: status and message.
type Refusal = (StatusCode, String);

fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    (status, message.into())
}

fn registry_refusal(e: kiln_registry::RegistryError) -> Refusal {
    use kiln_registry::RegistryError as E;
    match e {
        E::Invalid(m) => refuse(StatusCode::UNPROCESSABLE_ENTITY, m),
        E::Conflict(m) => refuse(StatusCode::FORBIDDEN, m),
        E::NotFound(m) => refuse(StatusCode::NOT_FOUND, m),
        other => {
            tracing::error!(error = %other, "join request failed");
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the sync service failed to record the node (see its log)",
            )
        }
    }
}

fn respond(refusal: Refusal) -> Response {
    let mut r = error(refusal.0, refusal.1);
    if refusal.0 == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    r
}

/// The identity behind a request's bearer token, or why there is none.
fn identity(shared: &Shared, headers: &HeaderMap) -> Result<Option<Identity>, Refusal> {
    if kiln_registry_server::bearer(headers).is_none() {
        return Ok(None);
    }
    kiln_registry_server::authenticate(&shared.registry, headers)
        .map(Some)
        .map_err(|e| match e {
            kiln_registry_server::ApiError::Unauthenticated(m) => refuse(StatusCode::UNAUTHORIZED, m),
            other => {
                tracing::error!(error = %other, "checking a token");
                refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the sync service failed to check the token (see its log)",
                )
            }
        })
}

/// Admits a join or heartbeat: with a join token (a `node`-role token) a node joins once
/// and gets credentials of its own; with its own credential (`node:<name>`) it reports
/// for itself only. Moving a configured node is refused; so is a second machine joining
/// under a name that already has a credential.
fn admit(shared: &Shared, headers: &HeaderMap, request: &JoinRequest) -> Result<JoinReply, Refusal> {
    let caller = match identity(shared, headers)? {
        Some(id) if id.role == Role::Node => id.name,
        Some(id) => {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "'{}' has the {} role; joining needs a node token (`kiln tokens create --name NAME --role node`)",
                    id.name, id.role
                ),
            ));
        }
        None if shared.config.insecure_no_auth => "anonymous (--insecure-no-auth)".to_string(),
        None => {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "joining needs a node token: start the node with --join-token-file (a token made with `kiln tokens create --role node`)",
            ));
        }
    };
    kiln_registry::fleet::validate_node_name(&request.name).map_err(registry_refusal)?;
    let own = node_token_name(&request.name);
    let first_join = caller != own;
    if first_join {
        if let Some(holder) = caller.strip_prefix("node:") {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "a node can only report for itself: this credential belongs to node {holder}, not {}",
                    request.name
                ),
            ));
        }
        if shared.registry.live_token(&own).map_err(registry_refusal)? {
            return Err(refuse(
                StatusCode::CONFLICT,
                format!(
                    "node {} joined before and holds its own credential; to let another machine take the name, remove it first (`kiln sync remove-node {}`)",
                    request.name, request.name
                ),
            ));
        }
    }
    // Recorded before credentials are issued, so a refused move issues nothing. A node
    // the service already manages at this URL only updates memory: fifty nodes
    // heartbeating every second do not mean fifty database writes a second.
    if first_join || !shared.manages(&request.name, &request.url) {
        shared
            .registry
            .node_heartbeat(&request.name, &request.url, &request.instance_id, &own)
            .map_err(registry_refusal)?;
    }
    let credentials = if first_join {
        let issued = shared
            .registry
            .create_token(
                &NewToken {
                    name: own,
                    role: Role::Node,
                    models: Vec::new(),
                    expires_in_secs: None,
                },
                &caller,
            )
            .map_err(registry_refusal)?;
        tracing::info!(node = %request.name, by = %caller, "node joined; credentials issued");
        Some(NodeCredentials {
            node_token: Some(issued.secret),
            admin_token: new_credential(shared, &request.name)?,
        })
    } else if !shared.has_credential(&request.name) {
        // The service restarted and forgot what it presents to the node: a new one.
        Some(NodeCredentials {
            node_token: None,
            admin_token: new_credential(shared, &request.name)?,
        })
    } else {
        None
    };
    shared.heartbeat(&request.name, &request.instance_id, request.generation);
    Ok(JoinReply {
        heartbeat_ms: shared.config.heartbeat.as_millis() as u64,
        credentials,
    })
}

fn new_credential(shared: &Shared, node: &str) -> Result<String, Refusal> {
    shared.new_credential(node).map_err(|e| {
        tracing::error!(error = %e, "issuing a node credential");
        refuse(StatusCode::INTERNAL_SERVER_ERROR, "could not issue a credential")
    })
}

async fn join(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let request: JoinRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed join request: {e}")),
    };
    shared.metrics.heartbeats.inc();
    let s = shared.clone();
    let result = tokio::task::spawn_blocking(move || admit(&s, &headers, &request)).await;
    match result {
        Ok(Ok(reply)) => Json(reply).into_response(),
        Ok(Err(refusal)) => respond(refusal),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("join task failed: {e}"),
        ),
    }
}

/// The fleet status needs a viewer (or higher) token, unless joins are unauthenticated
/// too (`--insecure-no-auth`, loopback only).
fn may_read_status(shared: &Shared, headers: &HeaderMap) -> Result<(), Refusal> {
    match identity(shared, headers)? {
        Some(id) => id
            .check(Action::Read, None)
            .map_err(|d| refuse(StatusCode::FORBIDDEN, d.0)),
        None if shared.config.insecure_no_auth => Ok(()),
        None => Err(refuse(
            StatusCode::UNAUTHORIZED,
            "the fleet status needs a viewer token (`Authorization: Bearer <token>`)",
        )),
    }
}

async fn status(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let s = shared.clone();
    match tokio::task::spawn_blocking(move || may_read_status(&s, &headers)).await {
        Ok(Ok(())) => {}
        Ok(Err(refusal)) => return respond(refusal),
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("status task failed: {e}"),
            );
        }
    }
    let desired = shared.desired();
    let runtimes = shared.node_runtimes();
    let nodes: Vec<_> = desired
        .tables
        .keys()
        .map(|n| {
            let rt = runtimes.get(n).cloned().unwrap_or_default();
            let client = shared.node_target_status(n).unwrap_or_default();
            json!({
                "node": n,
                "status": rt.status,
                "applied_generation": rt.applied_generation,
                "last_error": rt.last_error,
                "failing_since": rt.failing_since,
                "failures": rt.failures,
                "breaker": rt.breaker,
                "retries": client.retries,
                "breaker_retry_in_ms": client.retry_in_ms,
                "seen_seconds_ago": rt.last_seen.map(|t| t.elapsed().as_secs_f64()),
            })
        })
        .collect();
    Json(json!({
        "generation": desired.generation,
        "nodes": nodes,
        "clients": shared.other_target_statuses(),
        "alerts": shared.alerter.as_ref().map(|a| a.status()),
        "insecure_no_auth": shared.config.insecure_no_auth,
    }))
    .into_response()
}

/// `GET /monitor/v1/drift/{model}?version=V&since=15m`: the fleet's drift of a version
/// (a token that may read the model).
async fn drift(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(model): axum::extract::Path<String>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let s = shared.clone();
    let work = move || -> Result<kiln_monitor::model::DriftAnswer, Refusal> {
        match identity(&s, &headers)? {
            Some(id) => id
                .check(Action::Read, Some(&model))
                .map_err(|d| refuse(StatusCode::FORBIDDEN, d.0))?,
            None if s.config.insecure_no_auth => {}
            None => {
                return Err(refuse(
                    StatusCode::UNAUTHORIZED,
                    "drift needs a token that may read the model (`Authorization: Bearer <token>`)",
                ));
            }
        }
        let version = match query.get("version") {
            Some(v) => Some(v.parse::<u64>().map_err(|_| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    format!("version={v} is not a version number"),
                )
            })?),
            None => None,
        };
        let since = query
            .get("since")
            .map_or(crate::drift::DEFAULT_SINCE, String::as_str);
        crate::drift::answer(&s, &model, version, since).map_err(|r| {
            (
                StatusCode::from_u16(r.status).unwrap_or(StatusCode::CONFLICT),
                r.message,
            )
        })
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(answer)) => Json(answer).into_response(),
        Ok(Err(refusal)) => respond(refusal),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("drift task failed: {e}"),
        ),
    }
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
            .route("/monitor/v1/drift/{model}", get(drift))
            .route("/metrics", get(metrics))
            .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") });
        let tls = shared.config.tls.clone();
        // The registry server's API on the same listener: one process for a small fleet.
        let limits = shared.config.limits.clone();
        let registry_api = kiln_registry_server::RegistryServer::new(shared.registry.clone())
            .limits(&limits)
            .router();
        let app = kiln_node_api::tls::request_timeout(app, limits.request_timeout, "--request-timeout");
        let app = app.with_state(shared).merge(registry_api);
        kiln_node_api::tls::serve(listener, app, tls, &limits, async move {
            let _ = stop.await;
        })
        .await
        .context("serving the sync API")
    })
}
