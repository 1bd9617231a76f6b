//! HTTP server tests: the real server on 127.0.0.1, real model components, a real HTTP
//! client over TCP, and answers compared with onnxruntime's reference outputs. One
//! module per feature.

mod admin;
mod binary;
mod cache;
mod catalog;
mod errors;
mod join;
mod load;
mod managed;
mod metrics;
mod misbehaving;
mod oip_api;
mod overload;
mod reload;
mod routing;
mod seed_api;
mod shadow;

pub use catalog::{DirCatalog, ServedVersion};

use kiln_host::{Host, HostConfig};
use kiln_serve::{Catalog, NodeStore, ServeConfig, Server};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn test_cache() -> PathBuf {
    root().join("target").join("kiln-test-cache")
}

/// One host for the test process, sharing the AOT cache with the other test suites.
pub fn host() -> Arc<Host> {
    static HOST: OnceLock<Arc<Host>> = OnceLock::new();
    HOST.get_or_init(|| {
        Arc::new(
            Host::new(HostConfig {
                cache_dir: Some(test_cache().join("aot")),
                ..HostConfig::default()
            })
            .expect("creating the test host"),
        )
    })
    .clone()
}

/// An example model's component bytes, compiled at most once per checkout.
pub fn component(name: &str) -> Vec<u8> {
    let onnx_path = root().join("examples/models").join(format!("{name}.onnx"));
    let onnx = std::fs::read(&onnx_path).unwrap_or_else(|e| panic!("{}: {e}", onnx_path.display()));
    kiln_host::compile::compile_cached(
        &host(),
        &onnx,
        &Default::default(),
        &test_cache().join("components"),
    )
    .unwrap_or_else(|e| panic!("compiling {name}: {e}"))
}

/// An example model compiled with a different recorded version: the same predictions
/// from a component with another digest (a retrained model stand-in).
pub fn component_variant(name: &str, label: &str) -> Vec<u8> {
    let onnx_path = root().join("examples/models").join(format!("{name}.onnx"));
    let onnx = std::fs::read(&onnx_path).unwrap_or_else(|e| panic!("{}: {e}", onnx_path.display()));
    let options = kiln_engine::LoadOptions {
        version: label.to_string(),
        ..Default::default()
    };
    kiln_host::compile::compile_cached(&host(), &onnx, &options, &test_cache().join("components"))
        .unwrap_or_else(|e| panic!("compiling {name} ({label}): {e}"))
}

/// An example file (`{name}.request.json`, `{name}.expected.json`) as JSON.
pub fn example_json(file: &str) -> Value {
    let path = root().join("examples/models").join(file);
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The reference output `output` of an example, as (shape, values).
pub fn reference(name: &str, output: &str) -> (Vec<u64>, Vec<f64>) {
    let expected = example_json(&format!("{name}.expected.json"));
    let out = expected["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == output)
        .unwrap_or_else(|| panic!("{name} has no reference output {output}"));
    let shape = serde_json::from_value(out["shape"].clone()).unwrap();
    let data = out["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap_or(f64::NAN))
        .collect();
    (shape, data)
}

/// The rows of an example request's single input.
pub fn request_rows(name: &str) -> Vec<Vec<f64>> {
    let request = example_json(&format!("{name}.request.json"));
    let input = &request["inputs"][0];
    let width = input["shape"][1].as_u64().unwrap() as usize;
    let data: Vec<f64> = input["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    data.chunks(width).map(<[f64]>::to_vec).collect()
}

/// Whether `got` is within onnxruntime's `want` (relative 1e-4 or absolute 1e-5).
pub fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-5 || (got - want).abs() <= 1e-4 * want.abs()
}

/// Asserts element-wise closeness.
pub fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: number of values");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(close(*g, *w), "{what}[{i}] = {g}, onnxruntime says {w}");
    }
}

/// A served version of an example model in `catalog`'s directory.
pub fn version(
    catalog: &DirCatalog,
    model: &str,
    example: &str,
    number: u64,
    stage: &str,
    aliases: &[&str],
) -> ServedVersion {
    version_of(catalog, model, &component(example), number, stage, aliases)
}

/// A served version of any component.
pub fn version_of(
    catalog: &DirCatalog,
    model: &str,
    wasm: &[u8],
    number: u64,
    stage: &str,
    aliases: &[&str],
) -> ServedVersion {
    let (digest, _) = catalog.store(wasm);
    ServedVersion {
        name: model.to_string(),
        version: number,
        digest,
        stage: stage.to_string(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
    }
}

/// The admin token of test servers that enable the admin API.
pub const TOKEN: &str = "test-admin-token";

/// A config with the admin API on (token [`TOKEN`]).
pub fn admin_config() -> ServeConfig {
    ServeConfig {
        admin_token: Some(TOKEN.to_string().into()),
        ..ServeConfig::default()
    }
}

/// A server running in-process on its own tokio runtime, on 127.0.0.1.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts a server over `catalog` and waits for its first load.
    pub fn start(catalog: Arc<DirCatalog>) -> TestServer {
        Self::start_with(catalog, ServeConfig::default())
    }

    /// Starts with a config (its `listen` is ignored: the port is picked by the OS).
    pub fn start_with(catalog: Arc<DirCatalog>, config: ServeConfig) -> TestServer {
        let catalog: Arc<dyn Catalog> = catalog;
        Self::spawn(move || Server::new(host(), catalog, config))
    }

    /// Starts a managed node over the store in `dir` and waits for its first load.
    pub fn start_managed(dir: &Path, config: ServeConfig) -> TestServer {
        let store = Arc::new(NodeStore::open(dir).expect("opening the node store"));
        Self::spawn(move || Server::managed(host(), store, config))
    }

    fn spawn(build: impl FnOnce() -> anyhow::Result<Server> + Send + 'static) -> TestServer {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let addr = listener.local_addr()?;
                let server = build()?;
                let report = server.load().await?;
                assert!(
                    report.failed.is_empty(),
                    "initial load failures: {:?}",
                    report.failed
                );
                assert!(server.is_ready());
                let _ = addr_tx.send(addr);
                server
                    .run(listener, async move {
                        let _ = stop_rx.await;
                    })
                    .await
            })
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(600))
            .expect("the server did not start");
        TestServer {
            base: format!("http://{addr}"),
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && let Ok(result) = thread.join()
            && !std::thread::panicking()
        {
            result.expect("the server failed");
        }
    }
}

/// An HTTP client that returns 4xx/5xx responses instead of erroring.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// A response: status, headers we care about, body.
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub header_length: Option<usize>,
    /// `x-kiln-model-version`: the version that answered.
    pub served_version: Option<String>,
    /// `www-authenticate`.
    pub authenticate: Option<String>,
    /// `retry-after`.
    pub retry_after: Option<String>,
    /// `x-kiln-fallback`.
    pub fallback: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

fn reply(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
    let mut response = result.expect("HTTP request");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header("content-type").unwrap_or_default();
    let header_length = header("inference-header-content-length").and_then(|v| v.parse().ok());
    let served_version = header(kiln_node_api::SERVED_VERSION_HEADER);
    let authenticate = header("www-authenticate");
    let retry_after = header("retry-after");
    let fallback = header(kiln_serve::fallback::FALLBACK_HEADER);
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_vec()
        .expect("reading the body");
    Reply {
        status,
        content_type,
        header_length,
        served_version,
        authenticate,
        retry_after,
        fallback,
        body,
    }
}

/// GET.
pub fn get(url: &str) -> Reply {
    reply(agent().get(url).call())
}

/// POST raw bytes (no Content-Type, as tritonclient sends).
pub fn post(url: &str, body: &[u8], headers: &[(&str, String)]) -> Reply {
    let mut request = agent().post(url);
    for (k, v) in headers {
        request = request.header(*k, v.as_str());
    }
    reply(request.send(body))
}

/// POST JSON.
pub fn post_json(url: &str, body: &Value) -> Reply {
    post(url, body.to_string().as_bytes(), &[])
}

/// A request with any method, body and headers.
pub fn send(method: &str, url: &str, body: &[u8], headers: &[(&str, String)]) -> Reply {
    let agent = agent();
    macro_rules! with_headers {
        ($request:expr) => {{
            let mut request = $request;
            for (k, v) in headers {
                request = request.header(*k, v.as_str());
            }
            request
        }};
    }
    reply(match method {
        "GET" => with_headers!(agent.get(url)).call(),
        "HEAD" => with_headers!(agent.head(url)).call(),
        "DELETE" => with_headers!(agent.delete(url)).call(),
        "PUT" => with_headers!(agent.put(url)).send(body),
        "POST" => with_headers!(agent.post(url)).send(body),
        other => panic!("no test helper for {other}"),
    })
}

/// The bearer header of the test admin token.
pub fn bearer() -> (&'static str, String) {
    ("authorization", format!("Bearer {TOKEN}"))
}

/// An admin request with the right token.
pub fn admin(method: &str, url: &str, body: &[u8]) -> Reply {
    send(method, url, body, &[bearer()])
}
