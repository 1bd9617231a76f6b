//! Kiln in the browser: the tract engine compiled to wasm32-unknown-unknown behind a
//! wasm-bindgen ES module (`edge-worker/browser/build.sh` builds it with `--target web`).
//!
//! ```js
//! import init, { KilnModel } from "./kiln_web.js";
//! await init();
//! const model = await KilnModel.load("/v1/models/mlp/versions/1/bundle", { sha256 });
//! model.info();                                        // name, inputs, outputs, labels, digest
//! model.predict({ input: new Float32Array(10) });      // [{name, datatype, shape, data}]
//! model.infer({ inputs: [...] });                      // the same JSON as `kiln serve`
//! ```
//!
//! The crate is empty on other targets, so `cargo test --workspace` on the host skips it.
#![cfg(target_arch = "wasm32")]

mod edge;
mod source;
mod tensors;

use edge::Runner;
use kiln_api::EdgeApp;
use kiln_engine::{Model, ModelInfo};
use std::rc::Rc;
use wasm_bindgen::prelude::*;

unsafe extern "C" {
    /// The static constructors wasm-ld collects (tract registers its kernels and ops
    /// through `inventory`, which uses them).
    fn __wasm_call_ctors();
}

/// Runs the static constructors once, when the module is instantiated. Without an
/// explicit call, wasm-ld wraps *every* export in a call to them (its "command" heuristic),
/// which re-registered tract's inventory on each `predict` and cost ~200 µs per call.
#[wasm_bindgen(start)]
fn start() {
    // SAFETY: called once, by wasm-bindgen's start hook, before any other export runs.
    unsafe { __wasm_call_ctors() }
}

/// A loaded model version, ready to predict.
#[wasm_bindgen]
pub struct KilnModel {
    runner: Rc<Runner>,
    /// The server's protocol code over this one version (`predictJson`, `infer`).
    app: EdgeApp,
    /// SHA-256 of the bytes the model was loaded from.
    digest: String,
    /// Registry name and version (defaults: the model's name, version 1).
    name: String,
    version: u64,
}

/// Options of [`KilnModel::load`], read from a JS object.
struct LoadArgs {
    sha256: String,
    name: Option<String>,
    version: Option<u64>,
    /// The version's registry stage and aliases, so selectors and error texts are the
    /// server's (`model_version: "Production"`).
    stage: String,
    aliases: Vec<String>,
}

impl LoadArgs {
    fn from_js(options: &JsValue) -> Result<LoadArgs, String> {
        let get =
            |k: &str| js_sys::Reflect::get(options, &JsValue::from_str(k)).unwrap_or(JsValue::UNDEFINED);
        let sha256 = get("sha256").as_string().ok_or(
            "KilnModel.load needs { sha256: \"<64 hex digits>\" }: the SHA-256 of the model bytes, checked before they are used",
        )?;
        let name = get("name").as_string();
        let version = get("version");
        let version = if version.is_undefined() || version.is_null() {
            None
        } else {
            let v = version
                .as_f64()
                .or_else(|| version.as_string().and_then(|s| s.parse().ok()))
                .filter(|v| *v >= 0.0 && v.fract() == 0.0)
                .ok_or("version must be a registry version number")?;
            Some(v as u64)
        };
        let stage = get("stage").as_string().unwrap_or_default();
        let aliases_js = get("aliases");
        let aliases = if js_sys::Array::is_array(&aliases_js) {
            js_sys::Array::from(&aliases_js)
                .iter()
                .map(|a| a.as_string().ok_or("aliases must be strings"))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        Ok(LoadArgs {
            sha256,
            name,
            version,
            stage,
            aliases,
        })
    }
}

#[wasm_bindgen]
impl KilnModel {
    /// Loads a Kiln bundle (or a plain `.onnx`) from a URL or from bytes, after checking
    /// that its SHA-256 is `options.sha256`. `options.name` / `options.version` name the
    /// registry version (defaults: the bundle's); `options.stage` / `options.aliases` give
    /// its registry stage and aliases, for version selectors as on the server.
    pub async fn load(source: JsValue, options: JsValue) -> Result<KilnModel, JsError> {
        let args = LoadArgs::from_js(&options).map_err(|e| JsError::new(&e))?;
        let bytes = source::read(&source).await.map_err(|e| JsError::new(&e))?;
        Self::from_verified(bytes, args).map_err(|e| JsError::new(&e))
    }

    /// [`KilnModel::load`] for bytes already in memory (synchronous).
    #[wasm_bindgen(js_name = fromBytes)]
    pub fn from_bytes(bytes: &[u8], options: JsValue) -> Result<KilnModel, JsError> {
        let args = LoadArgs::from_js(&options).map_err(|e| JsError::new(&e))?;
        Self::from_verified(bytes.to_vec(), args).map_err(|e| JsError::new(&e))
    }

    fn from_verified(bytes: Vec<u8>, args: LoadArgs) -> Result<KilnModel, String> {
        let digest = source::verify(&bytes, &args.sha256)?;
        let bundle = source::bundle(bytes)?;
        let model = Model::load(&bundle.onnx, &bundle.config.options).map_err(|e| e.to_string())?;
        let name = args.name.unwrap_or_else(|| model.info().name.clone());
        let version = args
            .version
            .or_else(|| bundle.config.options.version.parse().ok())
            .unwrap_or(1);
        let runner = Rc::new(Runner::new(model).map_err(|e| e.to_string())?);
        let app = edge::app(
            runner.clone(),
            &name,
            version,
            &digest,
            &args.stage,
            &args.aliases,
        )?;
        Ok(KilnModel {
            runner,
            app,
            digest,
            name,
            version,
        })
    }

    /// `{name, version, digest, inputs, outputs, labels, metadata}`; tensors as
    /// `{name, datatype, shape}` with `-1` for dynamic dimensions.
    pub fn info(&self) -> Result<JsValue, JsError> {
        let info: &ModelInfo = self.runner.model.info();
        let specs = |specs: &[kiln_engine::TensorSpec]| {
            specs
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "name": s.name,
                        "datatype": s.element_type.oip_name(),
                        "shape": s.shape,
                    })
                })
                .collect::<Vec<_>>()
        };
        let value = serde_json::json!({
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "source_digest": info.source_digest,
            "inputs": specs(&info.inputs),
            "outputs": specs(&info.outputs),
            "labels": info.labels,
            "metadata": info
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect::<serde_json::Map<_, _>>(),
        });
        js_sys::JSON::parse(&value.to_string()).map_err(|e| JsError::new(&source::describe(&e)))
    }

    /// Runs the model on typed arrays: `{ input: Float32Array }` or
    /// `[{name, datatype, shape, data}]`; returns `[{name, datatype, shape, data}]`.
    pub fn predict(&self, inputs: JsValue) -> Result<js_sys::Array, JsError> {
        let tensors = tensors::inputs_from_js(&inputs, &self.runner.model.info().inputs)
            .map_err(|e| JsError::new(&e))?;
        let outputs = self
            .runner
            .predict(&tensors)
            .map_err(|e| JsError::new(&e.to_string()))?;
        let out = js_sys::Array::new();
        for t in &outputs {
            out.push(&tensors::output_to_js(t).map_err(|e| JsError::new(&e))?);
        }
        Ok(out)
    }

    /// The seed API in the browser: `body` as for `POST /v1/models/{name}/predict`
    /// (`{"features": [...]}`, JSON text or object). Returns the server's answer JSON;
    /// throws an `Error` with `status` and `body` (the server's error JSON) otherwise.
    #[wasm_bindgen(js_name = predictJson)]
    pub fn predict_json(&self, body: JsValue, headers: JsValue) -> Result<JsValue, JsValue> {
        let path = format!("/v1/models/{}/predict", self.name);
        self.request("POST", &path, &headers, &body)
            .and_then(|r| edge::json_or_throw(&r))
    }

    /// The Open Inference Protocol in the browser: `body` as for
    /// `POST /v2/models/{name}/versions/{version}/infer` (JSON text or object, or bytes
    /// with an `inference-header-content-length` header for binary tensors). Returns the
    /// answer JSON; throws like [`KilnModel::predict_json`].
    pub fn infer(&self, body: JsValue, headers: JsValue) -> Result<JsValue, JsValue> {
        let path = format!("/v2/models/{}/versions/{}/infer", self.name, self.version);
        self.request("POST", &path, &headers, &body)
            .and_then(|r| edge::json_or_throw(&r))
    }

    /// Any request `kiln serve` answers for this version (`GET /v2/models/{name}`...):
    /// returns `{status, headers, body: Uint8Array}` without throwing on 4xx/5xx.
    pub fn handle(
        &self,
        method: &str,
        path: &str,
        headers: JsValue,
        body: JsValue,
    ) -> Result<JsValue, JsValue> {
        let r = self.request(method, path, &headers, &body)?;
        edge::response_to_js(&r)
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &JsValue,
        body: &JsValue,
    ) -> Result<kiln_api::Response, JsValue> {
        let bytes = if body.is_undefined() || body.is_null() {
            Vec::new()
        } else {
            edge::body_bytes(body)?
        };
        let mut headers = edge::headers(headers);
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            && !bytes.is_empty()
        {
            headers.push(("content-type".into(), "application/json".into()));
        }
        Ok(edge::handle(&self.app, method, path, &headers, &bytes))
    }
}
