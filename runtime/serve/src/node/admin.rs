//! The node admin API under `/admin/v1`, for the sync service: the node's state, component
//! uploads and routing pushes. Off unless the node joins a sync service or has a fixed
//! admin token; every request then needs `Authorization: Bearer <token>`: the credential
//! the sync service gave this node when it joined, or the fixed token.

use super::push;
use super::store::NodeStoreError;
use crate::http::{HttpError, body_error};
use crate::state::State;
use axum::Json;
use axum::body::Body;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Request, State as Shared};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use kiln_api::ApiError;
use kiln_node_api::tls;
use kiln_node_api::{AdminReply, RoutingTable, bearer_token, is_sha256_hex};
use std::path::PathBuf;
use std::sync::Arc;

const NOT_MANAGED: &str =
    "this node serves its local registry; start it with --managed or --join to accept pushes";

/// Any admin route while the admin API is off.
pub(crate) async fn off() -> HttpError {
    HttpError(ApiError::new(
        StatusCode::NOT_FOUND.as_u16(),
        "the node admin API is off; start kiln serve with --join (the sync service gives it a credential) or --admin-token-file to enable it",
    ))
}

/// Lets a request through only with the right bearer token (compared in time independent
/// of the token: `kiln_node_api::tokens_match`).
pub(crate) async fn authorize(Shared(state): Shared<Arc<State>>, request: Request, next: Next) -> Response {
    if !state.admin_enabled() {
        return off().await.into_response();
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let message = match given {
        Some(token) if state.admin_token_matches(token) => return next.run(request).await,
        Some(_) => "the admin token is wrong",
        None => "the admin API needs an `Authorization: Bearer <token>` header",
    };
    tracing::warn!(path = %request.uri().path(), "admin request refused: bad or missing token");
    let mut response = HttpError(ApiError::new(StatusCode::UNAUTHORIZED.as_u16(), message)).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// `GET /admin/v1/state`.
pub(crate) async fn node_state(Shared(state): Shared<Arc<State>>) -> Response {
    match super::state::collect(&state).await {
        Ok(s) => Json(s).into_response(),
        Err(e) => HttpError(ApiError::internal(format!("reading the node state: {e:#}"))).into_response(),
    }
}

fn reply(status: StatusCode, changed: bool, generation: u64, message: String) -> Response {
    (
        status,
        Json(AdminReply {
            changed,
            generation,
            message,
        }),
    )
        .into_response()
}

/// `HEAD /admin/v1/components/{digest}`: 200 when stored, 404 when not.
pub(crate) async fn has_component(
    Shared(state): Shared<Arc<State>>,
    Path(digest): Path<String>,
) -> StatusCode {
    match &state.store {
        None => StatusCode::CONFLICT,
        Some(store) if store.has(&digest) => StatusCode::OK,
        Some(_) => StatusCode::NOT_FOUND,
    }
}

/// `PUT /admin/v1/components/{digest}` with the component's bytes: streamed into a
/// temporary file in the store and hashed on the way (never held whole in memory), then
/// renamed into place if it hashes to `digest`. At most `max_concurrent_uploads` at once.
/// Reads and drops a refused upload's body (up to `limit`), so a client that sends the
/// whole body before it reads the answer (most do, without `Expect: 100-continue`) gets
/// the answer rather than a reset connection. Only for refusals that cost nothing to
/// find: a full server (503) or an oversized body (413) answers at once instead.
async fn discard(body: Body, limit: usize) {
    let _ = axum::body::to_bytes(body, limit).await;
}

pub(crate) async fn put_component(
    Shared(state): Shared<Arc<State>>,
    Path(digest): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let limit = state.config.max_upload_bytes;
    let Some(store) = state.store.clone() else {
        discard(body, limit).await;
        return Err(ApiError::new(StatusCode::CONFLICT.as_u16(), NOT_MANAGED).into());
    };
    if !is_sha256_hex(&digest) {
        discard(body, limit).await;
        return Err(ApiError::bad_request(format!(
            "`{digest}` is not a SHA-256 digest (64 lowercase hex characters)"
        ))
        .into());
    }
    if tls::declared_too_large(&headers, limit as u64) {
        return Err(ApiError::too_large(limit).into());
    }
    let Ok(_slot) = state.upload_slots.clone().try_acquire_owned() else {
        return Ok(tls::overloaded(format!(
            "this node is receiving {} component uploads already (--max-concurrent-uploads); retry in a moment",
            state.config.limits.max_concurrent_uploads
        )));
    };
    let staged = store
        .stage_component(&digest)
        .map_err(|e| ApiError::internal(format!("storing component {digest}: {e}")))?;
    let staged = match tls::receive(body, limit as u64, staged).await {
        Ok(staged) => staged,
        Err(tls::UploadError::TooLarge(_)) => return Err(ApiError::too_large(limit).into()),
        Err(e @ tls::UploadError::Body(_)) => return Err(ApiError::bad_request(e.to_string()).into()),
        Err(tls::UploadError::Write(e)) => {
            return Err(ApiError::internal(format!("storing component {digest}: {e}")).into());
        }
    };
    let size = staged.len();
    let name = digest.clone();
    let committer = store.clone();
    // fsync and rename: on the blocking pool.
    let stored = tokio::task::spawn_blocking(move || committer.commit_component(&name, staged))
        .await
        .map_err(|e| ApiError::internal(format!("the upload task failed: {e}")))?;
    let generation = state.table().generation;
    if matches!(stored, Ok(true)) {
        precompile(&state, digest.clone(), store.component_path(&digest));
    }
    match stored {
        Ok(true) => Ok(reply(
            StatusCode::CREATED,
            true,
            generation,
            format!("stored component {digest} ({size} bytes)"),
        )),
        Ok(false) => Ok(reply(
            StatusCode::OK,
            false,
            generation,
            format!("component {digest} is already stored"),
        )),
        Err(e @ NodeStoreError::DigestMismatch { .. }) => {
            tracing::warn!(digest = %digest, error = %e, "component upload refused");
            Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY.as_u16(), e.to_string()).into())
        }
        Err(e @ NodeStoreError::InvalidDigest(_)) => Err(ApiError::bad_request(e.to_string()).into()),
        Err(e) => Err(ApiError::internal(format!("storing component {digest}: {e}")).into()),
    }
}

/// Compiles a just-stored component (read back from `path`) into the AOT cache in the
/// background, one at a time, so that a later routing push that serves it only maps the
/// compiled code (milliseconds) instead of running Cranelift (seconds) while the rollout
/// waits.
fn precompile(state: &Arc<State>, digest: String, path: PathBuf) {
    static ONE_AT_A_TIME: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
    let host = state.host.clone();
    tokio::spawn(async move {
        let Ok(_permit) = ONE_AT_A_TIME.acquire().await else {
            return;
        };
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            let bytes =
                std::fs::read(&path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            // A miss compiles with an engine of its own, dropped with Cranelift's memory
            // (`Host::component_for_digest`).
            host.component_for_digest(&digest, &bytes)
                .map(|(_, o)| (digest, o))
        })
        .await;
        match result {
            Ok(Ok((digest, outcome))) => {
                tracing::info!(digest = %digest, ?outcome, seconds = started.elapsed().as_secs_f64(), "uploaded component compiled ahead of use")
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %format!("{e:#}"), "compiling an uploaded component failed; a routing push that uses it will say why")
            }
            Err(e) => tracing::warn!(error = %e, "the precompile task failed"),
        }
    });
}

/// `PUT /admin/v1/routing` with a [`RoutingTable`]; `?reset_from=G` replaces generation
/// `G` even with a lower one (the sync service re-adopting the node: `kiln sync reset-node`).
pub(crate) async fn put_routing(
    Shared(state): Shared<Arc<State>>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let reset_from = query
        .get("reset_from")
        .map(|g| {
            g.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("reset_from=`{g}` is not a routing generation")))
        })
        .transpose()?;
    if state.store.is_none() {
        return Err(ApiError::new(StatusCode::CONFLICT.as_u16(), NOT_MANAGED).into());
    }
    let body = body.map_err(|e| body_error(e, state.config.max_upload_bytes))?;
    let table: RoutingTable = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a routing table: {e}")))?;
    match push::push(&state, table, reset_from).await {
        Ok(answer) => {
            state.set_last_error(None);
            Ok(reply(
                StatusCode::OK,
                answer.changed,
                answer.generation,
                answer.message,
            ))
        }
        Err(e) => {
            if e.is_failed_change() {
                state.set_last_error(Some(e.to_string()));
            }
            Err(ApiError::new(e.status().as_u16(), e.to_string()).into())
        }
    }
}
