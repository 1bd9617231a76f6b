//! The one HTTP API of Kiln: the seed predict API and the Open Inference Protocol v2,
//! dispatched, parsed, routed and encoded here for every host.
//!
//! A host hands [`begin`] the request and the routes of the models it serves. Requests
//! that need no model run (metadata, health, errors) come back answered as
//! [`Step::Done`]; an inference request comes back as [`Step::Run`]: a [`Call`] naming
//! the version to run, the checked input tensors and the outputs wanted. The host runs
//! them however it runs models (`kiln serve`: prediction cache, then the wasmtime
//! sandbox on a worker thread; an edge: its engine in-process) and gives the outcome to
//! [`Call::finish`], which encodes the answer. Statuses, headers and error texts all come
//! from this crate, so `kiln serve`, the Spin component, the Cloudflare Worker and the
//! browser package answer the same request with the same bytes.

use crate::access::{Caller, Naming, Reader};
use crate::error::{ApiError, Failure, Protocol};
use crate::oip::InferRequest;
use crate::routing::{ModelRoutes, Route, RouteError, Selection, Served};
use crate::{binary, infer, seed};
use kiln_node_api::{FORCE_VERSION_HEADER, ROUTING_KEY_HEADER, SERVED_VERSION_HEADER};
use kiln_types::{ModelInfo, Tensor};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// An HTTP request as the host received it.
pub struct Request<'a> {
    pub method: &'a str,
    /// The path, possibly with `?query`.
    pub path: &'a str,
    /// Header names in any case.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
    /// The identity the host authenticated from the request's bearer token, allowed to
    /// name restricted versions of the models it may read ([`crate::access`]); `None` for
    /// anonymous requests and on hosts without tokens.
    pub reader: Option<&'a dyn Reader>,
}

/// What to answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Set on answers to inference requests (success or not), for hosts that count them.
    pub inference: Option<Inference>,
}

/// The inference endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/models/{name}/predict`.
    Seed,
    /// `POST /v2/models/{name}[/versions/{v}]/infer`.
    Infer,
}

impl Endpoint {
    /// `seed` or `infer` (the `endpoint` label of Kiln's metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Seed => "seed",
            Endpoint::Infer => "infer",
        }
    }

    /// The protocol whose conventions the endpoint follows.
    pub fn protocol(self) -> Protocol {
        match self {
            Endpoint::Seed => Protocol::Seed,
            Endpoint::Infer => Protocol::Oip,
        }
    }
}

/// What an inference request resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inference {
    pub endpoint: Endpoint,
    /// The model, when the host serves one by the requested name.
    pub model: Option<String>,
    /// The version that answered (or failed), once one was chosen.
    pub version: Option<String>,
}

impl Response {
    /// A JSON answer.
    pub fn json(status: u16, body: &Value) -> Response {
        Response {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(body).unwrap_or_default(),
            inference: None,
        }
    }

    /// The body as JSON (for tests and the browser package).
    pub fn json_body(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

impl From<ApiError> for Response {
    fn from(e: ApiError) -> Self {
        let mut response = Response::json(e.status, &e.body());
        if e.is_overloaded() {
            response.headers.push((
                "retry-after".to_string(),
                crate::error::RETRY_AFTER_SECONDS.to_string(),
            ));
        }
        response
    }
}

impl From<Result<Response, ApiError>> for Response {
    fn from(r: Result<Response, ApiError>) -> Self {
        r.unwrap_or_else(Response::from)
    }
}

/// What differs per host.
pub trait Env {
    /// Wall-clock time, for `timestamp` and `processing_time`.
    fn now_unix_seconds(&self) -> f64;
    /// Randomness for request ids and the traffic split of requests without a key.
    fn random_u128(&self) -> u128;
    /// Whether the host has loaded what it serves (`GET /v2/health/ready`). Edges load
    /// their models before they answer anything.
    fn ready(&self) -> bool {
        true
    }
    /// Largest JSON part of an inference request (the whole seed body; an OIP body
    /// without its binary tensors), in bytes: large tensors belong in the binary
    /// extension, which parses at the cost of a copy.
    fn max_json_bytes(&self) -> usize {
        usize::MAX
    }
}

/// 413 when the JSON part of a request is over the host's JSON limit, saying what to
/// send instead.
fn check_json_size(json_bytes: usize, limit: usize) -> Result<(), ApiError> {
    if json_bytes <= limit {
        return Ok(());
    }
    Err(ApiError::new(
        413,
        format!(
            "the JSON part of the request is {json_bytes} bytes, over the limit of {limit} bytes for JSON; \
             send large tensors with the binary tensor extension (`Inference-Header-Content-Length` \
             and `parameters.binary_data_size`), which has a higher limit"
        ),
    ))
}

/// A served version, as the API routes to it and describes it.
pub trait Version: Served {
    /// The version as responses and metrics name it (`3`).
    fn label(&self) -> &str;
    /// What the model is.
    fn info(&self) -> &ModelInfo;
    /// SHA-256 of what was loaded (component or bundle).
    fn digest(&self) -> &str;
}

/// Every model a host serves, by name, with its routes.
pub type Models<T> = BTreeMap<String, ModelRoutes<T>>;

/// What [`begin`] made of a request.
pub enum Step<T> {
    /// Answered: nothing to run.
    Done(Response),
    /// Run the call's inputs on its version, then [`Call::finish`].
    Run(Call<T>),
}

/// An inference request ready to run.
pub struct Call<T> {
    /// The model name.
    pub model: String,
    /// The version that answers, and the one that shadows it (if any).
    pub route: Route<T>,
    /// The inputs, checked against the version's info and in its order.
    pub inputs: Vec<Tensor>,
    /// The outputs the request names (empty: all).
    pub requested: Vec<String>,
    pub endpoint: Endpoint,
    answer: Answer,
}

/// What the answer needs besides the outputs.
enum Answer {
    Seed {
        batch: bool,
        rows: usize,
        request_id: Option<String>,
        started: f64,
    },
    Infer {
        request: InferRequest,
    },
}

impl<T: Version> Call<T> {
    /// The answer for the outputs of the run (or why it failed).
    pub fn finish(self, result: Result<Vec<Tensor>, Failure>, env: &dyn Env) -> Response {
        let served = self.route.served.clone();
        let label = served.label().to_string();
        let protocol = self.endpoint.protocol();
        let answer = result
            .map_err(|f| ApiError::from_failure(protocol, &f))
            .and_then(|outputs| self.encode(&outputs, env));
        let inference = Inference {
            endpoint: self.endpoint,
            model: Some(self.model),
            version: Some(label.clone()),
        };
        with_version(answer, Some(label), inference)
    }

    fn encode(&self, outputs: &[Tensor], env: &dyn Env) -> Result<Response, ApiError> {
        let served = &self.route.served;
        match &self.answer {
            Answer::Seed {
                batch,
                rows,
                request_id,
                started,
            } => {
                let answer = seed::Answer {
                    batch: *batch,
                    version_label: served.label(),
                    request_id: request_id.clone().unwrap_or_else(|| uuid_v4(env.random_u128())),
                    timestamp: kiln_types::format::rfc3339(env.now_unix_seconds()),
                    processing_time: (env.now_unix_seconds() - started).max(0.0),
                };
                let body = seed::response_body(served.info(), outputs, *rows, answer)?;
                Ok(Response::json(200, &body))
            }
            Answer::Infer { request } => {
                let encoded =
                    infer::response(&self.model, served.label(), request, &self.requested, outputs)?;
                let mut headers = vec![("content-type".to_string(), encoded.content_type.to_string())];
                if let Some(len) = encoded.header_length {
                    headers.push((binary::HEADER_LENGTH.to_string(), len.to_string()));
                }
                Ok(Response {
                    status: 200,
                    headers,
                    body: encoded.body,
                    inference: None,
                })
            }
        }
    }
}

/// Reads, routes and checks one request against the models a host serves.
pub fn begin<T: Version>(models: &Models<T>, req: &Request<'_>, env: &dyn Env) -> Step<T> {
    let started = env.now_unix_seconds();
    let path = req.path.split(['?', '#']).next().unwrap_or("");
    let segments: Vec<String> = path.split('/').skip(1).map(percent_decode).collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let forced = header(req.headers, FORCE_VERSION_HEADER);
    let routing_key = header(req.headers, ROUTING_KEY_HEADER);
    let caller = Caller::of(req.headers, req.reader);
    let selection = |selector| Selection {
        forced,
        selector,
        routing_key,
    };
    let point = || (env.random_u128() >> 64) as u64;
    // HEAD is GET without the body, which the host's HTTP layer drops.
    let (get, post) = (
        req.method.eq_ignore_ascii_case("GET") || req.method.eq_ignore_ascii_case("HEAD"),
        req.method.eq_ignore_ascii_case("POST"),
    );
    let done = |r: Result<Response, ApiError>| Step::Done(Response::from(r));
    let wrong_method = || done(Err(ApiError::method_not_allowed(req.method, path)));
    match segs.as_slice() {
        ["v1", "models", name, "predict"] if post => {
            let json = check_json_size(req.body.len(), env.max_json_bytes());
            started_seed(
                models,
                name,
                req.body,
                selection(None),
                caller,
                point,
                started,
                json,
            )
        }
        ["v2"] if get => done(Ok(Response::json(200, &infer::server_metadata()))),
        ["v2", "health", "live"] if get => done(Ok(Response::json(200, &json!({ "live": true })))),
        ["v2", "health", "ready"] if get => done(if env.ready() {
            Ok(Response::json(200, &json!({ "ready": true })))
        } else {
            Err(ApiError::new(503, "the server is still loading its models"))
        }),
        ["v2", "models", name] if get => done(metadata(models, name, None)),
        ["v2", "models", name, "versions", v] if get => done(metadata(models, name, Some(v))),
        ["v2", "models", name, "ready"] if get => done(ready(models, name, None)),
        ["v2", "models", name, "versions", v, "ready"] if get => done(ready(models, name, Some(v))),
        ["v2", "models", name, "config"] if get => done(config(models, name, None)),
        ["v2", "models", name, "versions", v, "config"] if get => done(config(models, name, Some(v))),
        ["v2", "models", name, "infer"] if post => started_infer(
            models,
            name,
            selection(None),
            caller,
            point,
            req,
            env.max_json_bytes(),
        ),
        ["v2", "models", name, "versions", v, "infer"] if post => started_infer(
            models,
            name,
            selection(Some(v)),
            caller,
            point,
            req,
            env.max_json_bytes(),
        ),
        ["v1", "models", _, "predict"]
        | ["v2", "models", _, "infer"]
        | ["v2", "models", _, "versions", _, "infer"] => wrong_method(),
        ["v2"]
        | ["v2", "health", "live" | "ready"]
        | ["v2", "models", _]
        | ["v2", "models", _, "ready" | "config"]
        | ["v2", "models", _, "versions", _]
        | ["v2", "models", _, "versions", _, "ready" | "config"] => wrong_method(),
        _ => done(Err(ApiError::no_route(req.method, path))),
    }
}

fn routes<'m, T>(models: &'m Models<T>, name: &str) -> Result<&'m ModelRoutes<T>, ApiError> {
    models
        .get(name)
        .ok_or_else(|| RouteError::UnknownModel(name.to_string()).into())
}

/// An inference request answered before anything ran (it failed to parse or route).
fn refused(endpoint: Endpoint, model: Option<&str>, version: Option<String>, e: ApiError) -> Response {
    let inference = Inference {
        endpoint,
        model: model.map(str::to_string),
        version: version.clone(),
    };
    with_version(Err(e), version, inference)
}

/// Routes a request and lets its caller name the version it got, when it named one.
fn routed<T: Version>(
    routes: &ModelRoutes<T>,
    name: &str,
    selection: Selection<'_>,
    caller: Caller<'_>,
    point: impl FnOnce() -> u64,
) -> Result<Route<T>, ApiError> {
    let route = routes.route(name, selection, point)?;
    let naming = match (selection.forced, selection.selector) {
        (Some(_), _) => Some(Naming::Header),
        (None, Some(_)) => Some(Naming::Selector),
        (None, None) => None,
    };
    if let Some(how) = naming {
        caller.may_name(name, route.served.as_ref(), how)?;
    }
    Ok(route)
}

#[allow(clippy::too_many_arguments)]
fn started_seed<T: Version>(
    models: &Models<T>,
    name: &str,
    body: &[u8],
    selection: Selection<'_>,
    caller: Caller<'_>,
    point: impl FnOnce() -> u64,
    started: f64,
    json_size: Result<(), ApiError>,
) -> Step<T> {
    let known = models.contains_key(name).then_some(name);
    if let Err(e) = json_size {
        return Step::Done(refused(Endpoint::Seed, known, None, e));
    }
    let mut chosen = None;
    match seed_call(models, name, body, selection, caller, point, started, &mut chosen) {
        Ok(call) => Step::Run(call),
        Err(e) => Step::Done(refused(Endpoint::Seed, known, chosen, e)),
    }
}

#[allow(clippy::too_many_arguments)]
fn seed_call<T: Version>(
    models: &Models<T>,
    name: &str,
    body: &[u8],
    selection: Selection<'_>,
    caller: Caller<'_>,
    point: impl FnOnce() -> u64,
    started: f64,
    chosen: &mut Option<String>,
) -> Result<Call<T>, ApiError> {
    let request = seed::parse(body)?;
    let routes = routes(models, name)?;
    let version = request.version.clone();
    // The selection borrows the request's selector only for the routing call.
    let route = routed(
        routes,
        name,
        Selection {
            selector: version.as_deref(),
            ..selection
        },
        caller,
        point,
    )?;
    *chosen = Some(route.served.label().to_string());
    let batch = request.batch;
    let request_id = request.request_id.clone();
    let (input, rows) = seed::input_tensor(name, route.served.info(), request)?;
    Ok(Call {
        model: name.to_string(),
        route,
        inputs: vec![input],
        requested: Vec::new(),
        endpoint: Endpoint::Seed,
        answer: Answer::Seed {
            batch,
            rows,
            request_id,
            started,
        },
    })
}

fn started_infer<T: Version>(
    models: &Models<T>,
    name: &str,
    selection: Selection<'_>,
    caller: Caller<'_>,
    point: impl FnOnce() -> u64,
    req: &Request<'_>,
    json_limit: usize,
) -> Step<T> {
    let known = models.contains_key(name).then_some(name);
    // The JSON part: all of it, or what precedes the binary tensors.
    let json_bytes = header(req.headers, binary::HEADER_LENGTH)
        .and_then(|h| h.trim().parse::<usize>().ok())
        .map_or(req.body.len(), |n| n.min(req.body.len()));
    if let Err(e) = check_json_size(json_bytes, json_limit) {
        return Step::Done(refused(Endpoint::Infer, known, None, e));
    }
    let route = match routes(models, name).and_then(|r| routed(r, name, selection, caller, point)) {
        Ok(route) => route,
        Err(e) => return Step::Done(refused(Endpoint::Infer, known, None, e)),
    };
    let label = route.served.label().to_string();
    let prepared = infer::prepare(
        route.served.info(),
        header(req.headers, "content-encoding"),
        header(req.headers, binary::HEADER_LENGTH),
        req.body,
    );
    match prepared {
        Ok(infer::Prepared {
            request,
            inputs,
            requested,
        }) => Step::Run(Call {
            model: name.to_string(),
            route,
            inputs,
            requested,
            endpoint: Endpoint::Infer,
            answer: Answer::Infer { request },
        }),
        Err(e) => Step::Done(refused(Endpoint::Infer, known, Some(label), e)),
    }
}

fn resolve<'m, T: Version>(
    models: &'m Models<T>,
    name: &str,
    version: Option<&str>,
) -> Result<(Arc<T>, &'m ModelRoutes<T>), ApiError> {
    let routes = routes(models, name)?;
    let served = match version {
        Some(selector) => routes.resolve_in(name, selector)?,
        None => routes.primary_in(name)?,
    };
    Ok((served, routes))
}

fn described<'a, T: Version>(name: &'a str, v: &'a T) -> infer::Described<'a> {
    infer::Described {
        name,
        info: v.info(),
        digest: v.digest(),
        stage: v.stage(),
        aliases: v.aliases(),
    }
}

fn metadata<T: Version>(models: &Models<T>, name: &str, version: Option<&str>) -> Result<Response, ApiError> {
    let (served, routes) = resolve(models, name, version)?;
    let versions = match version {
        Some(_) => vec![served.label().to_string()],
        None => routes.versions.keys().map(u64::to_string).collect(),
    };
    Ok(Response::json(
        200,
        &infer::model_metadata(&described(name, served.as_ref()), versions),
    ))
}

fn config<T: Version>(models: &Models<T>, name: &str, version: Option<&str>) -> Result<Response, ApiError> {
    let (served, _) = resolve(models, name, version)?;
    Ok(Response::json(
        200,
        &infer::model_config(&described(name, served.as_ref())),
    ))
}

fn ready<T: Version>(models: &Models<T>, name: &str, version: Option<&str>) -> Result<Response, ApiError> {
    let (served, _) = resolve(models, name, version)?;
    Ok(Response::json(200, &infer::model_ready(name, served.label())))
}

/// A header's trimmed value, if present and not blank.
pub fn header<'r>(headers: &'r [(String, String)], name: &str) -> Option<&'r str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// The answer, with the served-version header once a version was chosen (success or
/// not), and the inference labels.
fn with_version(result: Result<Response, ApiError>, label: Option<String>, inference: Inference) -> Response {
    let mut response = Response::from(result);
    if let Some(label) = label {
        response.headers.push((SERVED_VERSION_HEADER.to_string(), label));
    }
    response.inference = Some(inference);
    response
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A version-4 UUID from 128 random bits.
pub fn uuid_v4(random: u128) -> String {
    let b = ((random & !(0xF << 76)) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let h = format!("{b:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_well_formed_and_paths_decoded() {
        let id = uuid_v4(u128::MAX);
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_eq!(percent_decode("a%20b%zz"), "a b%zz");
    }
}
