//! Kiln's Spin HTTP component: the seed predict API and the Open Inference Protocol v2
//! (`kiln_api::EdgeApp`, byte-for-byte the answers of `kiln serve`) over Kiln model
//! components bound to its eight slots as Spin component dependencies.
//!
//! Targets Spin 4.x through spin-sdk 7.0.0 (WASI P3): exports `wasi:http/handler@0.3.0`,
//! imports `spin:variables/variables@3.0.0` and the slots `model-a` … `model-h` of
//! `wit/router.wit`. Variables (see README.md):
//! - `kiln_models`: slot → registry model name, version and digest;
//! - `kiln_routes`: canary weights (`house-price=1:90,2:10;mlp=1`) or a routing table's
//!   JSON; sticky by the `x-kiln-routing-key` header.

mod models;
#[cfg(target_arch = "wasm32")]
mod slots;

#[cfg(target_arch = "wasm32")]
mod component {
    use super::{models, slots};
    use kiln_api::{Backend, EdgeApp, EdgeModel, EngineError, Routes, Tensor};
    use spin_sdk::http::body::IncomingBodyExt;
    use spin_sdk::http::{IntoResponse, Request};
    use spin_sdk::http_service;
    use std::cell::RefCell;
    use std::hash::{BuildHasher, Hasher};
    use std::rc::Rc;

    /// A slot as a `kiln_api` backend.
    struct Slot(usize);

    impl Backend for Slot {
        fn predict(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError> {
            slots::predict(self.0, inputs)
        }
    }

    struct Env;

    impl kiln_api::Env for Env {
        fn now_unix_seconds(&self) -> f64 {
            kiln_types::format::unix_now()
        }

        fn random_u128(&self) -> u128 {
            // std seeds RandomState from wasi:random; two independent hashers make 128 bits.
            let half = || {
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_u8(0);
                h.finish() as u128
            };
            (half() << 64) | half()
        }
    }

    /// The app built from the variables' current text (an instance may serve several
    /// requests under Spin 4's WASIp3 instance reuse).
    struct Built {
        models_text: String,
        routes_text: String,
        app: Rc<EdgeApp>,
    }

    thread_local! {
        static BUILT: RefCell<Option<Built>> = const { RefCell::new(None) };
    }

    fn build(models_text: &str, routes_text: &str) -> Result<EdgeApp, String> {
        let mut held = Vec::new();
        for m in models::parse(models_text, slots::SLOTS)? {
            let slot = models::slot_name(m.slot);
            let info = slots::info(m.slot).ok_or_else(|| format!("no slot model-{slot}"))?;
            if info.name.is_empty() && info.inputs.is_empty() {
                return Err(format!(
                    "kiln_models binds {}@{} to slot model-{slot}, but that slot holds no model (vacant.wasm): bind the model's component in [component.kiln.dependencies]",
                    m.name, m.version
                ));
            }
            held.push(EdgeModel {
                name: m.name,
                version: m.version,
                digest: m.digest,
                info,
                backend: Box::new(Slot(m.slot)),
            });
        }
        let routes = Routes::parse(routes_text).map_err(|e| format!("kiln_routes: {e}"))?;
        EdgeApp::new(held, routes)
    }

    fn app(models_text: String, routes_text: String) -> Result<Rc<EdgeApp>, String> {
        BUILT.with(|cell| {
            let mut built = cell.borrow_mut();
            if let Some(b) = built.as_ref()
                && b.models_text == models_text
                && b.routes_text == routes_text
            {
                return Ok(b.app.clone());
            }
            let app = Rc::new(build(&models_text, &routes_text)?);
            *built = Some(Built {
                models_text,
                routes_text,
                app: app.clone(),
            });
            Ok(app)
        })
    }

    async fn variable(name: &str) -> Result<String, String> {
        match spin_sdk::variables::get(name).await {
            Ok(v) => Ok(v),
            Err(spin_sdk::variables::Error::Undefined(_)) => Ok(String::new()),
            Err(e) => Err(format!("reading the Spin variable {name}: {e}")),
        }
    }

    fn respond(
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> http::Response<http_body_util::Full<bytes::Bytes>> {
        let mut res = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
        *res.status_mut() =
            http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        for (k, v) in headers {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.as_bytes()),
                http::HeaderValue::from_str(&v),
            ) {
                res.headers_mut().append(k, v);
            }
        }
        res
    }

    fn config_error(message: String) -> http::Response<http_body_util::Full<bytes::Bytes>> {
        let body = kiln_api::ApiError::internal(message).body();
        respond(
            500,
            vec![("content-type".into(), "application/json".into())],
            serde_json::to_vec(&body).unwrap_or_default(),
        )
    }

    #[http_service]
    async fn handle(req: Request) -> impl IntoResponse {
        let models_text = match variable("kiln_models").await {
            Ok(v) => v,
            Err(e) => return config_error(e),
        };
        let routes_text = match variable("kiln_routes").await {
            Ok(v) => v,
            Err(e) => return config_error(e),
        };
        let app = match app(models_text, routes_text) {
            Ok(app) => app,
            Err(e) => return config_error(e),
        };
        let method = req.method().as_str().to_string();
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| req.uri().path().to_string());
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let body = match req.into_body().bytes().await {
            Ok(b) => b,
            Err(e) => {
                let body =
                    kiln_api::ApiError::bad_request(format!("reading the request body: {e:?}")).body();
                return respond(
                    400,
                    vec![("content-type".into(), "application/json".into())],
                    serde_json::to_vec(&body).unwrap_or_default(),
                );
            }
        };
        let res = app.handle(
            &kiln_api::Request {
                method: &method,
                path: &path,
                headers: &headers,
                body: &body,
                // No token store here: restricted versions are not nameable on this edge.
                reader: None,
            },
            &Env,
        );
        respond(res.status, res.headers, res.body)
    }
}
