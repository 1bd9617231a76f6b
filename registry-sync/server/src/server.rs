//! The registry server's routes: HTTP/JSON over [`RegistryApi`], each request run as the
//! identity its bearer token names (`401` without a valid one, `403` when the role or
//! model scope does not allow it). Mounted by `kiln registry serve` and by `kiln sync run`
//! on their listeners. The OpenAPI document of these routes is at `/openapi.json`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use kiln_node_api::tls::{
    ServeLimits, UploadError, declared_too_large, overloaded, receive, request_timeout,
};
use kiln_registry::auth::{Identity, NewToken};
use kiln_registry::{GoldenPair, NewVersion, PlanOverrides, Registry, Stage, normalize_digest};
use kiln_types::durable::Staged;

use crate::api::{API_PREFIX, ApiError, ApiResult, Finish, RegistryApi};
use crate::authorized::Authorized;

/// Largest component upload the server takes by default (512 MiB).
pub const DEFAULT_MAX_UPLOAD: usize = 512 << 20;

/// What the routes share.
pub struct RegistryServer {
    registry: Arc<Registry>,
    uploads: PathBuf,
    max_upload: usize,
    limits: ServeLimits,
    /// Permits for uploads being received.
    upload_slots: Arc<tokio::sync::Semaphore>,
}

impl RegistryServer {
    /// The routes over `registry`; uploads wait in `$KILN_HOME/uploads` until registered.
    pub fn new(registry: Arc<Registry>) -> RegistryServer {
        let uploads = registry.home().join("uploads");
        let limits = ServeLimits::default();
        RegistryServer {
            registry,
            uploads,
            max_upload: DEFAULT_MAX_UPLOAD,
            upload_slots: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent_uploads)),
            limits,
        }
    }

    /// Sets the largest component upload taken.
    pub fn max_upload(mut self, bytes: usize) -> RegistryServer {
        self.max_upload = bytes;
        self
    }

    /// Sets the request and upload timeouts and the most uploads received at once.
    pub fn limits(mut self, limits: &ServeLimits) -> RegistryServer {
        self.upload_slots = Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent_uploads.max(1)));
        self.limits = limits.clone();
        self
    }

    /// The axum routes, to serve alone or merge into another server's.
    pub fn router(self) -> axum::Router {
        let limit = self.max_upload;
        let (request_limit, upload_limit) = (self.limits.request_timeout, self.limits.upload_timeout);
        let state = Arc::new(self);
        let p = |path: &str| format!("{API_PREFIX}{path}");
        // Uploads stream to a file (no body limit of axum's) and get the longer timeout.
        let uploads = request_timeout(
            axum::Router::new().route(&p("/models/{name}/components/{digest}"), put(upload)),
            upload_limit,
            "--upload-timeout",
        );
        let api = axum::Router::new()
            .route(&p("/whoami"), get(whoami))
            .route(&p("/versions"), get(list))
            .route(&p("/resolve"), get(resolve))
            .route(&p("/models/{name}/versions"), post(register))
            .route(
                &p("/models/{name}/versions/{version}"),
                axum::routing::delete(delete_version),
            )
            .route(&p("/models/{name}/versions/{version}/golden"), get(golden))
            .route(&p("/models/{name}/versions/{version}/component"), get(component))
            .route(
                &p("/models/{name}/versions/{version}/reference"),
                get(reference).put(set_reference),
            )
            .route(&p("/models/{name}/versions/{version}/stage"), put(transition))
            .route(&p("/models/{name}/versions/{version}/description"), put(describe))
            .route(
                &p("/models/{name}/versions/{version}/tags/{key}"),
                put(set_tag).delete(delete_tag),
            )
            .route(
                &p("/models/{name}/aliases/{alias}"),
                put(set_alias).delete(delete_alias),
            )
            .route(&p("/audit"), get(audit_log))
            .route(&p("/audit/verify"), get(verify_audit))
            .route(&p("/rollouts"), get(rollouts))
            .route(&p("/rollouts/{name}"), post(rollout_start))
            .route(&p("/rollouts/{name}/{action}"), post(rollout_action))
            .route(
                &p("/rollouts/{name}/policy"),
                put(set_policy).delete(clear_policy),
            )
            .route(&p("/fleet"), get(fleet_status))
            .route(&p("/fleet/nodes/{name}"), put(add_node).delete(remove_node))
            .route(&p("/fleet/nodes/{name}/reset"), post(reset_node))
            .route(&p("/gitops/{mode}"), post(gitops))
            .route(&p("/tokens"), get(tokens).post(create_token))
            .route(&p("/tokens/{name}"), axum::routing::delete(revoke_token))
            .layer(DefaultBodyLimit::max(limit));
        let api = request_timeout(api, request_limit, "--request-timeout")
            .merge(uploads)
            .route_layer(axum::middleware::from_fn_with_state(state.clone(), require_token))
            .with_state(state);
        let open = request_timeout(
            axum::Router::new().route("/openapi.json", get(openapi)),
            request_limit,
            "--request-timeout",
        );
        open.merge(api)
    }
}

type Shared = State<Arc<RegistryServer>>;

/// The JSON error body every failure answers with: `{"error": ..., "kind": ...}`.
pub fn error_response(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = match e {
        // The details (paths, SQL) go to the log, not to the caller.
        ApiError::Internal(detail) => {
            let reference = format!("{:016x}", rand_u64());
            tracing::error!(reference, error = %detail, "registry request failed");
            format!("the registry failed to do this (reference {reference} in the server's log)")
        }
        other => other.to_string(),
    };
    let mut response = (status, Json(json!({ "error": message, "kind": e.kind() }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    kiln_node_api::bearer_token(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

/// The identity a request's token names, or 401.
pub fn authenticate(registry: &Registry, headers: &HeaderMap) -> ApiResult<Identity> {
    let Some(token) = bearer(headers) else {
        return Err(ApiError::Unauthenticated(
            "this registry needs a token: send `Authorization: Bearer <token>` (the CLI reads KILN_TOKEN or --token-file)"
                .into(),
        ));
    };
    registry
        .authenticate(token)?
        .ok_or_else(|| ApiError::Unauthenticated("the token is unknown, expired or revoked".into()))
}

/// Authenticates every API request before its body is read: a request without a valid
/// token gets 401 at once; the others carry their [`Identity`] to the handler.
async fn require_token(State(s): Shared, mut request: Request, next: Next) -> Response {
    let registry = s.registry.clone();
    let headers = request.headers().clone();
    let found = tokio::task::spawn_blocking(move || authenticate(&registry, &headers))
        .await
        .unwrap_or_else(|e| Err(ApiError::Internal(format!("authentication task failed: {e}"))));
    match found {
        Ok(identity) => {
            request.extensions_mut().insert(identity);
            next.run(request).await
        }
        Err(e) => error_response(&e),
    }
}

/// Runs `f` as the request's identity on a blocking thread (registry calls are SQLite).
async fn run<T: Serialize + Send + 'static>(
    server: Arc<RegistryServer>,
    identity: Identity,
    success: StatusCode,
    f: impl FnOnce(&Authorized) -> ApiResult<T> + Send + 'static,
) -> Response {
    let result = tokio::task::spawn_blocking(move || {
        let api = Authorized::new(server.registry.clone(), identity);
        f(&api)
    })
    .await
    .unwrap_or_else(|e| Err(ApiError::Internal(format!("registry task failed: {e}"))));
    match result {
        Ok(value) => (success, Json(value)).into_response(),
        Err(e) => error_response(&e),
    }
}

/// A JSON body, or 400 saying what is wrong with it.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document().to_string(),
    )
        .into_response()
}

async fn whoami(State(s): Shared, Extension(who): Extension<Identity>) -> Response {
    run(s, who, StatusCode::OK, |api| api.whoami()).await
}

#[derive(Deserialize)]
struct ModelQuery {
    model: Option<String>,
}

async fn list(
    State(s): Shared,
    Extension(who): Extension<Identity>,
    Query(q): Query<ModelQuery>,
) -> Response {
    run(s, who, StatusCode::OK, move |api| api.list(q.model.as_deref())).await
}

#[derive(Deserialize)]
struct RefQuery {
    #[serde(rename = "ref")]
    reference: String,
}

async fn resolve(
    State(s): Shared,
    Extension(who): Extension<Identity>,
    Query(q): Query<RefQuery>,
) -> Response {
    run(s, who, StatusCode::OK, move |api| api.resolve(&q.reference)).await
}

async fn golden(
    State(s): Shared,
    Extension(who): Extension<Identity>,
    Path((name, version)): Path<(String, u64)>,
) -> Response {
    run(s, who, StatusCode::OK, move |api| api.golden(&name, version)).await
}

/// `PUT .../components/{digest}`: the component bytes of a version about to be registered,
/// streamed into a temporary file in `$KILN_HOME/uploads` and hashed on the way (never held
/// whole in memory), renamed into place if they hash to the digest in the path, and kept
/// until `POST .../versions` names them. At most `max_concurrent_uploads` at once.
async fn upload(
    State(s): Shared,
    Extension(who): Extension<Identity>,
    Path((name, digest)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match receive_upload(&s, &who, &name, &digest, &headers, body).await {
        Ok(value) => (StatusCode::CREATED, Json(value)).into_response(),
        Err(refusal) => refusal,
    }
}

async fn receive_upload(
    s: &Arc<RegistryServer>,
    who: &Identity,
    name: &str,
    digest: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Value, Response> {
    let fail = |e: ApiError| error_response(&e);
    who.check(kiln_registry::Action::Deploy, Some(name))
        .map_err(|d| fail(d.into()))?;
    let digest = normalize_digest(digest).map_err(|e| fail(e.into()))?;
    let limit = s.max_upload as u64;
    let too_large = || {
        ApiError::TooLarge(format!(
            "the upload is larger than this server's limit of {} MiB (--max-upload-mib)",
            s.max_upload >> 20
        ))
    };
    if declared_too_large(headers, limit) {
        return Err(fail(too_large()));
    }
    let Ok(_slot) = s.upload_slots.clone().try_acquire_owned() else {
        return Err(overloaded(format!(
            "the registry is receiving {} uploads already (--max-concurrent-uploads); retry in a moment",
            s.limits.max_concurrent_uploads
        )));
    };
    let path = s.uploads.join(&digest);
    let staged = Staged::create(&path).map_err(|e| {
        fail(ApiError::Internal(format!(
            "creating a temporary file for {}: {e}",
            path.display()
        )))
    })?;
    // Dropping `staged` on any failure below removes its temporary file.
    let staged = receive(body, limit, staged).await.map_err(|e| {
        fail(match e {
            UploadError::TooLarge(_) => too_large(),
            UploadError::Body(_) => ApiError::BadRequest(e.to_string()),
            UploadError::Write(e) => ApiError::Internal(format!("storing upload {}: {e}", path.display())),
        })
    })?;
    let actual = staged.digest();
    if actual != digest {
        return Err(fail(ApiError::Invalid(format!(
            "the upload's sha256 is {actual}, not {digest} as its URL says"
        ))));
    }
    let size = staged.len();
    let uploads = s.uploads.clone();
    tokio::task::spawn_blocking(move || {
        prune_uploads(&uploads);
        staged.commit()
    })
    .await
    .map_err(|e| fail(ApiError::Internal(format!("upload task failed: {e}"))))?
    .map_err(|e| {
        fail(ApiError::Internal(format!(
            "storing upload {}: {e:#}",
            path.display()
        )))
    })?;
    Ok(json!({ "digest": format!("sha256:{digest}"), "size": size }))
}

/// Removes uploads nobody registered within an hour.
fn prune_uploads(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() > 3600);
        if old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// `POST .../versions`: registers an uploaded component.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct RegisterBody {
    /// `sha256:<hex>` of a component uploaded with `PUT .../components/{digest}`.
    pub component_digest: String,
    /// SHA-256 of the source .onnx, when there was one.
    #[serde(default)]
    pub source_digest: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Training lineage (a JSON object).
    #[serde(default)]
    pub lineage: Value,
    /// The component's inputs, outputs and labels.
    #[serde(default)]
    pub signature: Value,
    /// Golden request/response pairs.
    #[serde(default)]
    pub golden: Vec<GoldenPair>,
}

async fn register(
    State(s): Shared,
    Extension(who): Extension<Identity>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Response {
    run(s.clone(), who, StatusCode::OK, move |api| {
        let req: RegisterBody = body(&bytes)?;
        api.identity()
            .check(kiln_registry::Action::Deploy, Some(&name))?;
        let digest = normalize_digest(&req.component_digest)?;
        let path = s.uploads.join(&digest);
        // Hashed in pieces: an upload is never read whole.
        let (actual, _) = std::fs::File::open(&path)
            .and_then(kiln_types::digest_reader)
            .map_err(|_| {
                ApiError::NotFound(format!(
                    "no upload sha256:{digest}: PUT it to {API_PREFIX}/models/{name}/components/sha256:{digest} first"
                ))
            })?;
        if actual != digest {
            let _ = std::fs::remove_file(&path);
            return Err(ApiError::Conflict(format!("upload sha256:{digest} was damaged; upload it again")));
        }
        let new = NewVersion {
            name: name.clone(),
            component: Vec::new(),
            source_digest: req.source_digest,
            description: req.description,
            tags: req.tags,
            lineage: if req.lineage.is_null() {
                Value::Object(Default::default())
            } else {
                req.lineage
            },
            signature: req.signature,
            golden: req.golden,
        };
        // Copied from the staged upload into the blob store in pieces.
        let registered = api.register_staged(new, &path)?;
        let _ = std::fs::remove_file(&path);
        Ok(registered)
    })
    .await
}

#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct StageBody {
    pub stage: Stage,
    #[serde(default)]
    pub archive_existing: bool,
}

async fn transition(
    State(s): Shared,
    Extension(who): Extension<Identity>,
    Path((name, version)): Path<(String, u64)>,
    bytes: Bytes,
) -> Response {
    run(s, who, StatusCode::OK, move |api| {
        let req: StageBody = body(&bytes)?;
        api.transition(&name, version, req.stage, req.archive_existing)
    })
    .await
}

#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct AliasBody {
    pub version: u64,
}

async fn set_alias(
    State(s): Shared,
    Extension(who): Extension<Identity>,
    Path((name, alias)): Path<(String, String)>,
    bytes: Bytes,
) -> Response {
    run(s, who, StatusCode::OK, move |api| {
        let req: AliasBody = body(&bytes)?;
        api.set_alias(&name, &alias, req.version)
    })
    .await
}

async fn delete_alias(
    State(s): Shared,
    Extension(who): Extension<Identity>,
    Path((name, alias)): Path<(String, String)>,
) -> Response {
    run(s, who, StatusCode::OK, move |api| {
        api.delete_alias(&name, &alias).map(|()| json!({}))
    })
    .await
}

/// A version's component, streamed from its blob file (checked against its digest first)
/// in pieces: `application/wasm`, its size as the content length, its digest in
/// `x-kiln-digest`.
async fn component(
    State(s): Shared,
    Extension(who): Extension<Identity>,
    Path((name, version)): Path<(String, u64)>,
) -> Response {
    let opened = tokio::task::spawn_blocking(move || {
        Authorized::new(s.registry.clone(), who).open_component(&name, version)
    })
    .await
    .unwrap_or_else(|e| Err(ApiError::Internal(format!("registry task failed: {e}"))));
    match opened {
        Ok((file, size, digest)) => {
            let mut response = Response::new(Body::new(crate::file_body::FileBody::new(file, size)));
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/wasm"));
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
            if let Ok(value) = HeaderValue::from_str(&format!("sha256:{digest}")) {
                headers.insert("x-kiln-digest", value);
            }
            response
        }
        Err(e) => error_response(&e),
    }
}

async fn reference(
    State(s): Shared,
    Extension(who): Extension<Identity>,
    Path((name, version)): Path<(String, u64)>,
) -> Response {
    run(s, who, StatusCode::OK, move |api| api.reference(&name, version)).await
}

async fn set_reference(
    State(s): Shared,
    Extension(who): Extension<Identity>,
    Path((name, version)): Path<(String, u64)>,
    bytes: Bytes,
) -> Response {
    run(s, who, StatusCode::OK, move |api| {
        let req: crate::api::ReferenceProfile = body(&bytes)?;
        api.set_reference(&name, version, &req)
    })
    .await
}

#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct TagBody {
    pub value: String,
}

async fn set_tag(
    State(s): Shared,
    Extension(who): Extension<Identity>,
    Path((name, version, key)): Path<(String, u64, String)>,
    bytes: Bytes,
) -> Response {
    run(s, who, StatusCode::OK, move |api| {
        let req: TagBody = body(&bytes)?;
        api.set_tag(&name, version, &key, &req.value).map(|()| json!({}))
    })
    .await
}

async fn delete_tag(
    State(s): Shared,
    Extension(who): Extension<Identity>,
    Path((name, version, key)): Path<(String, u64, String)>,
) -> Response {
    run(s, who, StatusCode::OK, move |api| {
        api.delete_tag(&name, version, &key).map(|()| json!({}))
    })
    .await
}

#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct DescriptionBody {
    pub text: String,
}

async fn describe(
    State(s): Shared,
    Extension(who): Extension<Identity>,
    Path((name, version)): Path<(String, u64)>,
    bytes: Bytes,
) -> Response {
    run(s, who, StatusCode::OK, move |api| {
        let req: DescriptionBody = body(&bytes)?;
        api.describe(&name, version, &req.text).map(|()| json!({}))
    })
    .await
}

#[derive(Deserialize)]
struct ForceQuery {
    #[serde(default)]
    force: bool,
}

async fn delete_version(
    State(s): Shared,
    Extension(who): Extension<Identity>,
    Path((name, version)): Path<(String, u64)>,
    Query(q): Query<ForceQuery>,
) -> Response {
    run(s, who, StatusCode::OK, move |api| {
        api.delete_version(&name, version, q.force).map(|()| json!({}))
    })
    .await
}

async fn audit_log(
    State(s): Shared,
    Extension(who): Extension<Identity>,
    Query(q): Query<ModelQuery>,
) -> Response {
    run(s, who, StatusCode::OK, move |api| {
        api.audit_log(q.model.as_deref())
    })
    .await
}

async fn verify_audit(State(s): Shared, Extension(who): Extension<Identity>) -> Response {
    run(s, who, StatusCode::OK, |api| api.verify_audit()).await
}

async fn rollouts(
    State(s): Shared,
    Extension(who): Extension<Identity>,
    Query(q): Query<ModelQuery>,
) -> Response {
    run(s, who, StatusCode::OK, move |api| {
        api.rollouts(q.model.as_deref())
    })
    .await
}

#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct StartBody {
    pub to: u64,
    #[serde(default)]
    pub plan: PlanOverrides,
}

async fn rollout_start(
    State(s): Shared,
    Extension(who): Extension<Identity>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Response {
    run(s, who, StatusCode::CREATED, move |api| {
        let req: StartBody = body(&bytes)?;
        api.rollout_start(&name, req.to, req.plan)
    })
    .await
}

async fn rollout_action(
    State(s): Shared,
    Extension(who): Extension<Identity>,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    fn js<T: Serialize>(value: T) -> ApiResult<Value> {
        serde_json::to_value(value).map_err(|e| ApiError::Internal(format!("encoding the answer: {e}")))
    }
    run(s, who, StatusCode::OK, move |api| -> ApiResult<Value> {
        match action.as_str() {
            "pause" => js(api.rollout_pause(&name, true)?),
            "resume" => js(api.rollout_pause(&name, false)?),
            "promote" => js(api.rollout_finish(&name, Finish::Promote)?),
            "abort" => js(api.rollout_finish(&name, Finish::Abort)?),
            "rollback" => js(api.rollout_rollback(&name)?),
            other => Err(ApiError::NotFound(format!(
                "no rollout action '{other}': use pause, resume, promote, abort or rollback"
            ))),
        }
    })
    .await
}

async fn set_policy(
    State(s): Shared,
    Extension(who): Extension<Identity>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Response {
    run(s, who, StatusCode::OK, move |api| {
        let plan: PlanOverrides = body(&bytes)?;
        api.rollout_policy(&name, Some(plan))
    })
    .await
}

async fn clear_policy(
    State(s): Shared,
    Extension(who): Extension<Identity>,
    Path(name): Path<String>,
) -> Response {
    run(s, who, StatusCode::OK, move |api| api.rollout_policy(&name, None)).await
}

async fn fleet_status(State(s): Shared, Extension(who): Extension<Identity>) -> Response {
    run(s, who, StatusCode::OK, |api| api.fleet_status()).await
}

#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct NodeBody {
    pub url: String,
}

async fn add_node(
    State(s): Shared,
    Extension(who): Extension<Identity>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Response {
    run(s, who, StatusCode::OK, move |api| {
        let req: NodeBody = body(&bytes)?;
        api.add_node(&name, &req.url)
            .map(|changed| json!({ "changed": changed }))
    })
    .await
}

async fn remove_node(
    State(s): Shared,
    Extension(who): Extension<Identity>,
    Path(name): Path<String>,
) -> Response {
    run(s, who, StatusCode::OK, move |api| {
        match api.remove_node(&name)? {
            true => Ok(json!({ "removed": true })),
            false => Err(ApiError::NotFound(format!("no node named {name}"))),
        }
    })
    .await
}

async fn reset_node(
    State(s): Shared,
    Extension(who): Extension<Identity>,
    Path(name): Path<String>,
) -> Response {
    run(s, who, StatusCode::OK, move |api| api.reset_node(&name)).await
}

#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct GitopsBody {
    pub toml: String,
}

async fn gitops(
    State(s): Shared,
    Extension(who): Extension<Identity>,
    Path(mode): Path<String>,
    bytes: Bytes,
) -> Response {
    let apply = match mode.as_str() {
        "plan" => false,
        "apply" => true,
        other => {
            return error_response(&ApiError::NotFound(format!(
                "no GitOps action '{other}': use plan or apply"
            )));
        }
    };
    run(s, who, StatusCode::OK, move |api| {
        let req: GitopsBody = body(&bytes)?;
        api.gitops(&req.toml, apply)
    })
    .await
}

async fn tokens(State(s): Shared, Extension(who): Extension<Identity>) -> Response {
    run(s, who, StatusCode::OK, |api| api.tokens()).await
}

async fn create_token(State(s): Shared, Extension(who): Extension<Identity>, bytes: Bytes) -> Response {
    run(s, who, StatusCode::CREATED, move |api| {
        let req: NewToken = body(&bytes)?;
        api.create_token(&req)
    })
    .await
}

async fn revoke_token(
    State(s): Shared,
    Extension(who): Extension<Identity>,
    Path(name): Path<String>,
) -> Response {
    run(s, who, StatusCode::OK, move |api| api.revoke_token(&name)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_name_no_path() {
        let e = ApiError::Internal("opening registry database /srv/kiln/registry.db: disk I/O error".into());
        let response = error_response(&e);
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
            .unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(
            !text.contains("/srv/kiln") && !text.contains("disk I/O"),
            "{text}"
        );
        assert!(text.contains("reference"), "{text}");
    }

    #[test]
    fn unauthenticated_answers_carry_a_bearer_challenge() {
        let response = error_response(&ApiError::Unauthenticated("no token".into()));
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer kiln_abc "),
        );
        assert_eq!(bearer(&h), Some("kiln_abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic x"));
        assert_eq!(bearer(&h), None);
    }
}
