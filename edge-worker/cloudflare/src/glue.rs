//! The Worker itself: bundles checked and loaded once per isolate, then every request
//! answered by `kiln_api::EdgeApp`, the same code `kiln serve` answers with.

use crate::manifest::{self, ModelEntry};
use kiln_api::{ApiError, Backend, EdgeApp, EdgeModel, Routes};
use kiln_engine::tract_state::TypedSimpleState;
use kiln_engine::{Bundle, EngineError, Model, Tensor};
use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;
use worker::{Context, Env, Headers, Request, Response, event};

/// A loaded model with one reusable run state (an isolate runs one request at a time on
/// its single thread, so one state per model is enough).
struct Tract {
    model: Model,
    state: RefCell<Option<TypedSimpleState>>,
}

impl Backend for Tract {
    fn predict(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError> {
        let mut slot = self
            .state
            .try_borrow_mut()
            .map_err(|_| EngineError::Internal("model state already in use".into()))?;
        if slot.is_none() {
            *slot = Some(self.model.new_state()?);
        }
        match slot.as_mut() {
            Some(state) => self.model.predict_with(state, &inputs),
            None => self.model.predict(&inputs),
        }
    }
}

thread_local! {
    // A Worker isolate runs one wasm instance on one thread: the models are loaded by the
    // first request and kept for every later one. Variables and bundles change only with a
    // new deployment, which starts new isolates.
    static APP: OnceCell<Rc<Result<EdgeApp, String>>> = const { OnceCell::new() };
    // The wasm memory size last reported, in 64 KiB pages.
    static REPORTED_PAGES: Cell<usize> = const { Cell::new(0) };
}

fn var(env: &Env, name: &str) -> String {
    env.var(name).map(|v| v.to_string()).unwrap_or_default()
}

/// The bytes of one deployed bundle, from the table the entry module put on the global.
fn bundle_bytes(entry: &ModelEntry) -> Result<Vec<u8>, String> {
    let table = js_sys::Reflect::get(&js_sys::global(), &"__KILN_BUNDLES".into())
        .map_err(|_| "the Worker's entry module did not install the bundle table".to_string())?;
    let value = if table.is_object() {
        js_sys::Reflect::get(&table, &entry.file_name().into()).unwrap_or_default()
    } else {
        wasm_bindgen::JsValue::UNDEFINED
    };
    if value.is_undefined() {
        return Err(format!(
            "{} names {entry}, but the data module {} is not deployed with this Worker; \
             refusing to start (deploy the bundles `kiln export cloudflare` wrote with their variables)",
            manifest::MODELS_VAR,
            entry.module_name()
        ));
    }
    Ok(js_sys::Uint8Array::new(&value).to_vec())
}

fn load_model(entry: ModelEntry) -> Result<EdgeModel, String> {
    let bytes = bundle_bytes(&entry)?;
    // Checked before anything parses the bytes.
    entry.verify(&bytes)?;
    let bundle = Bundle::decode(&bytes).map_err(|e| format!("{}: {e}", entry.module_name()))?;
    drop(bytes);
    let model = Model::load(&bundle.onnx, &bundle.config.options)
        .map_err(|e| format!("loading {}: {e}", entry.module_name()))?;
    Ok(EdgeModel {
        name: entry.name,
        version: entry.version,
        digest: entry.sha256,
        info: model.info().clone(),
        backend: Box::new(Tract {
            model,
            state: RefCell::new(None),
        }),
    })
}

fn load(env: &Env) -> Result<EdgeApp, String> {
    let entries = manifest::parse(&var(env, manifest::MODELS_VAR))?;
    let routes = Routes::parse(&var(env, manifest::ROUTES_VAR))
        .map_err(|e| format!("{}: {e}", manifest::ROUTES_VAR))?;
    let models = entries
        .into_iter()
        .map(load_model)
        .collect::<Result<Vec<_>, _>>()?;
    EdgeApp::new(models, routes)
}

fn app(env: &Env) -> Rc<Result<EdgeApp, String>> {
    APP.with(|cell| {
        cell.get_or_init(|| {
            let loaded = load(env);
            match &loaded {
                Ok(app) => worker::console_log!(
                    // (No load time: the Workers clock stands still while code runs.)
                    "kiln: loaded {} model version(s); wasm memory {:.1} MiB",
                    app.versions().count(),
                    wasm_memory_mib()
                ),
                Err(e) => worker::console_error!("kiln: {e}"),
            }
            Rc::new(loaded)
        })
        .clone()
    })
}

/// The isolate's wasm linear memory (what counts, with the JavaScript heap, against the
/// 128 MB limit; it never shrinks, so this is the peak so far).
fn wasm_memory_mib() -> f64 {
    let pages = core::arch::wasm32::memory_size(0);
    REPORTED_PAGES.with(|r| r.set(pages));
    (pages * 65536) as f64 / (1024.0 * 1024.0)
}

/// Logs the wasm memory when a request made it grow (requests larger than any before).
fn report_growth() {
    let pages = core::arch::wasm32::memory_size(0);
    if pages > REPORTED_PAGES.with(Cell::get) {
        worker::console_log!("kiln: wasm memory grew to {:.1} MiB", wasm_memory_mib());
    }
}

/// Clock and randomness of the Workers runtime.
struct WorkersEnv;

impl kiln_api::Env for WorkersEnv {
    fn now_unix_seconds(&self) -> f64 {
        js_sys::Date::now() / 1000.0
    }

    fn random_u128(&self) -> u128 {
        let mut bytes = [0u8; 16];
        // crypto.getRandomValues; Math.random only if that is unavailable.
        if getrandom::fill(&mut bytes).is_err() {
            for chunk in bytes.chunks_mut(4) {
                let v = (js_sys::Math::random() * 4294967296.0) as u32;
                chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
            }
        }
        u128::from_le_bytes(bytes)
    }
}

fn respond(r: kiln_api::Response) -> worker::Result<Response> {
    let headers = Headers::new();
    for (k, v) in &r.headers {
        headers.append(k, v)?;
    }
    Ok(Response::from_bytes(r.body)?
        .with_status(r.status)
        .with_headers(headers))
}

unsafe extern "C" {
    /// The static constructors wasm-ld collects (tract registers its kernels and ops
    /// through `inventory`, which uses them).
    fn __wasm_call_ctors();
}

/// Runs the static constructors once, when the module is instantiated. Without an explicit
/// call, wasm-ld wraps every export in a call to them (its "command" heuristic): tract's
/// inventory was registered again on each request (the browser package measured ~200 µs
/// per call from it).
#[event(start)]
fn start() {
    // SAFETY: called once, by wasm-bindgen's start hook, before any other export runs.
    unsafe { __wasm_call_ctors() }
}

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    let app = app(&env);
    let app = match app.as_ref() {
        Ok(app) => app,
        Err(e) => {
            // A deployment whose bundles or variables are wrong serves nothing at all,
            // and says why on every route.
            let refused = ApiError {
                status: 503,
                message: e.clone(),
                kind: Some("unavailable"),
            };
            return respond(refused.into());
        }
    };
    let url = req.url()?;
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let headers: Vec<(String, String)> = req.headers().entries().collect();
    let method = req.method().to_string();
    let body = req.bytes().await?;
    let response = app.handle(
        &kiln_api::Request {
            method: &method,
            path: &path,
            headers: &headers,
            body: &body,
            // No token store here: restricted versions are not nameable on this edge.
            reader: None,
        },
        &WorkersEnv,
    );
    report_growth();
    respond(response)
}
