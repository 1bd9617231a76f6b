//! The browser playground (`/ui/playground`): a page that lists the served versions,
//! loads one version's Kiln bundle into the browser package (`edge-worker/browser`), checks
//! its SHA-256, and predicts in the browser next to the server's answer.
//!
//! Routes:
//! - `GET /ui/playground`: the page (embedded in the binary).
//! - `GET /ui/playground/models`: the served versions with their bundle digests.
//! - `GET /ui/pkg/{file}`: the browser package, read from the directory that
//!   `edge-worker/browser/build.sh` writes (see [`package_dir`]).
//! - `GET /v1/models/{name}/versions/{version}/bundle`: the Kiln bundle a version's
//!   component carries, its SHA-256 in `x-kiln-bundle-sha256`.

use crate::access::Caller;
use crate::http::HttpError;
use crate::state::State;
use axum::Router;
use axum::extract::{Extension, Path, State as Shared};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use kiln_api::{ApiError, Naming};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// The page, embedded so the binary serves it wherever it runs.
const PLAYGROUND_HTML: &str = include_str!("ui/playground.html");

/// The header that carries a bundle's SHA-256 (lowercase hex).
pub const BUNDLE_SHA256_HEADER: &str = "x-kiln-bundle-sha256";

/// Files of the browser package the server hands out, with their content types.
const PACKAGE_FILES: [(&str, &str); 3] = [
    ("kiln_web.js", "text/javascript; charset=utf-8"),
    ("kiln_web_bg.wasm", "application/wasm"),
    ("kiln_web.d.ts", "text/plain; charset=utf-8"),
];

/// The playground's routes.
pub(crate) fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/ui/playground", get(playground))
        .route("/ui/playground/models", get(models))
        .route("/ui/pkg/{file}", get(package_file))
        .route("/v1/models/{name}/versions/{version}/bundle", get(bundle))
}

async fn playground() -> Html<&'static str> {
    Html(PLAYGROUND_HTML)
}

/// Where the browser package is: `$KILN_WEB_PKG`, else `kiln-web/` next to the binary,
/// else `target/wasm-js/kiln-web` of the tree the binary was built in (found from the
/// binary in `target/{debug,release}` or from this crate's source path).
pub fn package_dir() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("KILN_WEB_PKG") {
        candidates.push(PathBuf::from(dir));
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(PathBuf::from))
    {
        candidates.push(exe_dir.join("kiln-web"));
        if let Some(target) = exe_dir.parent() {
            candidates.push(target.join("wasm-js").join("kiln-web"));
        }
    }
    if let Some(root) = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent() {
        candidates.push(root.join("target").join("wasm-js").join("kiln-web"));
    }
    candidates
        .into_iter()
        .find(|d| d.join("kiln_web.js").is_file() && d.join("kiln_web_bg.wasm").is_file())
}

async fn package_file(Path(file): Path<String>) -> Result<Response, HttpError> {
    let Some((name, content_type)) = PACKAGE_FILES.iter().find(|(n, _)| *n == file) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND.as_u16(),
            format!("no file `{file}` in the browser package"),
        )
        .into());
    };
    let dir = package_dir().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND.as_u16(),
            "the browser package is not built: run edge-worker/browser/build.sh in the Kiln repository \
             (or point KILN_WEB_PKG at a built package)",
        )
    })?;
    let path = dir.join(name);
    let shown = path.display().to_string();
    let bytes = tokio::task::spawn_blocking(move || std::fs::read(&path))
        .await
        .map_err(|e| ApiError::internal(format!("reading {shown}: {e}")))?
        .map_err(|e| ApiError::internal(format!("reading {shown}: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        bytes,
    )
        .into_response())
}

/// A version's bundle, as stored in its component, and the bundle's SHA-256.
struct ServedBundle {
    bytes: Vec<u8>,
    sha256: String,
}

/// Bundles by component digest. Both are content-addressed, so entries never go stale;
/// the map is cleared when it grows past a bound rather than tracking use.
fn bundle_cache() -> &'static Mutex<HashMap<String, Arc<ServedBundle>>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<ServedBundle>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The bundle of the component with `digest`, read from the catalog and checked against
/// the digest first.
async fn bundle_of(state: &Arc<State>, digest: &str) -> Result<Arc<ServedBundle>, ApiError> {
    let cached = bundle_cache()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(digest)
        .cloned();
    if let Some(b) = cached {
        return Ok(b);
    }
    let path = state.catalog.component_path(digest);
    let want = digest.to_string();
    let bundle = tokio::task::spawn_blocking(move || -> Result<ServedBundle, ApiError> {
        let component =
            std::fs::read(&path).map_err(|e| ApiError::internal(format!("reading component {want}: {e}")))?;
        let actual = kiln_types::digest(&component);
        if actual != want {
            return Err(ApiError::internal(format!(
                "component {want} on disk has SHA-256 {actual}: refusing to serve its bundle"
            )));
        }
        let bytes = kiln_types::bundle::encoded_from_component(&component)
            .map_err(|e| ApiError::new(StatusCode::NOT_FOUND.as_u16(), e.to_string()))?
            .to_vec();
        let sha256 = kiln_types::digest(&bytes);
        Ok(ServedBundle { bytes, sha256 })
    })
    .await
    .map_err(|e| ApiError::internal(format!("reading the bundle: {e}")))??;
    let bundle = Arc::new(bundle);
    let mut cache = bundle_cache().lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= 256 {
        cache.clear();
    }
    cache.insert(digest.to_string(), bundle.clone());
    Ok(bundle)
}

/// `GET /v1/models/{name}/versions/{version}/bundle`: `{version}` is a number, stage,
/// alias or `latest`, as everywhere else.
/// A restricted version's bundle needs a viewer token (`kiln_api::access`).
async fn bundle(
    Shared(state): Shared<Arc<State>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, HttpError> {
    let served = state.table().resolve(&name, &version)?;
    let headers: Vec<(String, String)> = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| ("authorization".to_string(), v.to_string()))
        .into_iter()
        .collect();
    kiln_api::Caller::of(&headers, caller.reader.as_deref()).may_name(
        &name,
        served.as_ref(),
        Naming::Bundle,
    )?;
    let bundle = bundle_of(&state, &served.digest).await?;
    let header_value = |v: &str| HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static(""));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        [
            (BUNDLE_SHA256_HEADER, header_value(&bundle.sha256)),
            ("x-kiln-model-version", header_value(&served.version_label)),
            ("x-kiln-component-digest", header_value(&served.digest)),
        ],
        bundle.bytes.clone(),
    )
        .into_response())
}

/// `GET /ui/playground/models`: every served version with what the page needs to load
/// it (bundle URL and SHA-256) and to build requests (inputs and outputs).
async fn models(Shared(state): Shared<Arc<State>>) -> Result<Response, HttpError> {
    let table = state.table();
    let mut models = Vec::new();
    for (name, routes) in &table.models {
        let mut versions = Vec::new();
        for served in routes.versions.values() {
            let (bundle_sha256, bundle_error) = match bundle_of(&state, &served.digest).await {
                Ok(b) => (Some(b.sha256.clone()), None),
                Err(e) => (None, Some(e.message)),
            };
            let specs = |specs: &[kiln_types::TensorSpec]| -> Vec<Value> {
                specs
                    .iter()
                    .map(|s| json!({"name": s.name, "datatype": s.element_type.oip_name(), "shape": s.shape}))
                    .collect()
            };
            versions.push(json!({
                "version": served.version,
                "stage": served.stage,
                "aliases": served.aliases,
                "weight": served.weight,
                // Restricted versions need a viewer token to load or to select.
                "open": kiln_api::access::is_open(served.as_ref()),
                "digest": served.digest,
                "bundle_url": format!("/v1/models/{name}/versions/{}/bundle", served.version),
                "bundle_sha256": bundle_sha256,
                "bundle_error": bundle_error,
                "inputs": specs(&served.model.info.inputs),
                "outputs": specs(&served.model.info.outputs),
                "labels": served.model.info.labels,
            }));
        }
        models.push(json!({ "name": name, "versions": versions }));
    }
    Ok(axum::Json(json!({
        "models": models,
        "package": package_dir().is_some(),
    }))
    .into_response())
}
