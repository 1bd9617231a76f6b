//! The server's request shapes in the browser: requests go through `kiln_api::EdgeApp`,
//! the same protocol code `kiln serve` answers with, so answers and error JSON match.

use kiln_api::{Backend, EdgeApp, EdgeModel, Env, Request, Response, Routes};
use kiln_engine::tract_state::TypedSimpleState;
use kiln_engine::{EngineError, Model, Tensor};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

/// A model and its run state, shared by `predict` and the app's backend.
pub struct Runner {
    pub model: Model,
    /// Reused across calls: tract keeps its buffers in it.
    state: RefCell<TypedSimpleState>,
}

impl Runner {
    pub fn new(model: Model) -> Result<Runner, EngineError> {
        let state = model.new_state()?;
        Ok(Runner {
            model,
            state: RefCell::new(state),
        })
    }

    pub fn predict(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, EngineError> {
        let mut state = self
            .state
            .try_borrow_mut()
            .map_err(|_| EngineError::Internal("predict called while another predict runs".into()))?;
        self.model.predict_with(&mut state, inputs)
    }
}

struct RunnerBackend(Rc<Runner>);

impl Backend for RunnerBackend {
    fn predict(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError> {
        self.0.predict(&inputs)
    }
}

/// The browser's clock and randomness.
struct BrowserEnv;

impl Env for BrowserEnv {
    fn now_unix_seconds(&self) -> f64 {
        js_sys::Date::now() / 1000.0
    }

    fn random_u128(&self) -> u128 {
        // Request ids only need to be unique, not secret.
        (0..4).fold(0u128, |acc, _| {
            (acc << 32) | (js_sys::Math::random() * 4_294_967_296.0) as u128
        })
    }
}

/// An app holding one version, answering as `kiln serve` would for it.
pub fn app(
    runner: Rc<Runner>,
    name: &str,
    version: u64,
    digest: &str,
    stage: &str,
    aliases: &[String],
) -> Result<EdgeApp, String> {
    let model = EdgeModel {
        name: name.to_string(),
        version,
        digest: digest.to_string(),
        info: runner.model.info().clone(),
        backend: Box::new(RunnerBackend(runner)),
    };
    let mut routes = Routes::default();
    routes.models.insert(
        name.to_string(),
        kiln_api::ModelRouting {
            versions: vec![kiln_api::VersionRoute {
                version,
                digest: digest.to_string(),
                weight: 100,
                stage: stage.to_string(),
                aliases: aliases.to_vec(),
                open: true,
            }],
            shadow: None,
            serving: None,
        },
    );
    EdgeApp::new(vec![model], routes)
}

/// A request body from JS: a string (JSON text), bytes (`Uint8Array`, `ArrayBuffer`, for
/// the binary tensor extension) or an object (sent as its JSON).
pub fn body_bytes(body: &JsValue) -> Result<Vec<u8>, JsValue> {
    if let Some(text) = body.as_string() {
        return Ok(text.into_bytes());
    }
    if let Some(bytes) = body.dyn_ref::<js_sys::Uint8Array>() {
        return Ok(bytes.to_vec());
    }
    if let Some(buffer) = body.dyn_ref::<js_sys::ArrayBuffer>() {
        return Ok(js_sys::Uint8Array::new(buffer).to_vec());
    }
    let text = js_sys::JSON::stringify(body)?;
    Ok(String::from(text).into_bytes())
}

/// Headers from a JS object `{name: value}` (or nothing).
pub fn headers(value: &JsValue) -> Vec<(String, String)> {
    if !value.is_object() {
        return Vec::new();
    }
    js_sys::Object::entries(value.unchecked_ref())
        .iter()
        .filter_map(|e| {
            let e: js_sys::Array = e.unchecked_into();
            Some((e.get(0).as_string()?, e.get(1).as_string()?))
        })
        .collect()
}

/// Runs one request through the app.
pub fn handle(
    app: &EdgeApp,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Response {
    app.handle(
        &Request {
            method,
            path,
            headers,
            body,
            // No token store here: restricted versions are not nameable on this edge.
            reader: None,
        },
        &BrowserEnv,
    )
}

/// `{status, headers, body}` with `body` a `Uint8Array`.
pub fn response_to_js(r: &Response) -> Result<JsValue, JsValue> {
    let out = js_sys::Object::new();
    let headers = js_sys::Object::new();
    for (k, v) in &r.headers {
        js_sys::Reflect::set(&headers, &k.to_ascii_lowercase().into(), &v.into())?;
    }
    let body = js_sys::Uint8Array::new_with_length(r.body.len() as u32);
    body.copy_from(&r.body);
    js_sys::Reflect::set(&out, &"status".into(), &r.status.into())?;
    js_sys::Reflect::set(&out, &"headers".into(), &headers)?;
    js_sys::Reflect::set(&out, &"body".into(), &body)?;
    Ok(out.into())
}

/// The answer's JSON on success; otherwise throws an `Error` whose message is the
/// server's `error` text, with `status` and `body` (the error JSON, as `kiln serve`
/// answers it) attached.
pub fn json_or_throw(r: &Response) -> Result<JsValue, JsValue> {
    let text = String::from_utf8_lossy(&r.body);
    let json = js_sys::JSON::parse(&text).unwrap_or_else(|_| JsValue::from_str(&text));
    if (200..300).contains(&r.status) {
        return Ok(json);
    }
    let message = js_sys::Reflect::get(&json, &"error".into())
        .ok()
        .and_then(|m| m.as_string())
        .unwrap_or_else(|| format!("HTTP {}", r.status));
    let error = js_sys::Error::new(&message);
    js_sys::Reflect::set(&error, &"status".into(), &r.status.into())?;
    js_sys::Reflect::set(&error, &"body".into(), &json)?;
    Err(error.into())
}
