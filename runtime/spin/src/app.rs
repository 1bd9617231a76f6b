//! `kiln spin up`: hosts a Spin HTTP component (the Kiln router built with spin-sdk 7,
//! WASI P3) the way Spin 4 does, for CI and machines without the Spin CLI.
//!
//! - The router runs in its own engine with the component-model-async proposal: a fresh
//!   instance per request (Spin may reuse WASIp3 instances; a fresh one is the strictest
//!   reading), `wasi:http/handler@0.3.0` from `wasmtime-wasi-http`'s p3 host, WASI 0.2
//!   for Rust's std, `spin:variables/variables@3.0.0` from the manifest, an epoch deadline
//!   and a memory cap.
//! - Each component dependency (`"model-N" = { path = ..., export =
//!   "kiln:model/inference@0.1.0" }`) is loaded as a Kiln model (AOT cache, sandbox,
//!   instance pool, deadline and memory cap of `kiln serve`) and linked to the router's
//!   `model-N` import: Spin composes the same exports into the same imports with
//!   wac-graph. An import the manifest leaves unbound fails the start, as under Spin.

use crate::manifest::{HttpApp, Manifest};
use crate::variables;
use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use kiln_host::aot_cache::{AotCache, CacheOutcome};
use kiln_host::bindings::{self, from_wit_tensor, to_wit_info, to_wit_tensor};
use kiln_host::epoch::Epoch;
use kiln_host::{Host, HostError, LoadedModel};
use kiln_types::Tensor;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// The export a model dependency must name (or leave implied).
pub const MODEL_EXPORT: &str = "kiln:model/inference@0.1.0";
/// The types interface the router's slots use (bound to vacant.wasm's export under Spin).
pub const TYPES_INTERFACE: &str = "kiln:model/types@0.1.0";
/// The variables interface the router imports.
const VARIABLES_INTERFACE: &str = "spin:variables/variables@3.0.0";
/// How often the router engine's epoch ticks.
const TICK: Duration = Duration::from_millis(10);
/// Linear memory cap of a router instance.
const ROUTER_MEMORY: usize = 256 << 20;

/// A bound model slot.
pub struct BoundModel {
    /// The router's import it fills (`model-a`).
    pub slot: String,
    /// The dependency's file.
    pub path: std::path::PathBuf,
    /// The loaded model.
    pub model: Arc<LoadedModel>,
}

/// A loaded Spin app: the router, its variables and its bound models.
pub struct SpinApp {
    /// The app's name.
    pub name: String,
    /// The component id of the router.
    pub component_id: String,
    /// The router's digest.
    pub router_digest: String,
    /// Whether the router came from the AOT cache.
    pub router_cache: CacheOutcome,
    /// The models, in slot order.
    pub models: Vec<BoundModel>,
    /// The resolved component variables.
    pub variables: Arc<BTreeMap<String, String>>,
    pre: ServicePre<RouterState>,
    deadline_ticks: u64,
    max_body_bytes: usize,
    /// The router engine's epoch clock (stops when the app is dropped).
    _epoch: Epoch,
}

/// Per-request state of a router instance.
struct RouterState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limits: StoreLimits,
    hooks: NoOutbound,
}

/// The router makes no outbound requests (the manifest grants no `allowed_outbound_hosts`).
struct NoOutbound;

impl WasiHttpHooks for NoOutbound {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<dyn Future<Output = OutboundResult> + Send> {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

type OutboundResult = Result<
    (
        http::Response<wasmtime_wasi_http::WasiBody>,
        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ),
    wasmtime_wasi_http::Error,
>;

impl WasiView for RouterState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RouterState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// `spin:variables/variables@3.0.0`'s `error` variant.
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lift, wasmtime::component::Lower)]
#[component(variant)]
enum VariablesError {
    #[component(name = "invalid-name")]
    InvalidName(String),
    #[component(name = "undefined")]
    Undefined(String),
    #[component(name = "provider")]
    Provider(String),
    #[component(name = "other")]
    Other(String),
}

/// The router engine: the host's settings plus the async component model.
fn router_engine() -> anyhow::Result<Engine> {
    let mut c = Config::new();
    c.wasm_component_model(true)
        .wasm_component_model_async(true)
        .epoch_interruption(true)
        .memory_init_cow(true)
        .parallel_compilation(true);
    Engine::new(&c)
        .map_err(anyhow::Error::from)
        .context("creating the router's wasmtime engine")
}

impl SpinApp {
    /// Loads the manifest at `manifest_path`: resolves variables (`env` looks up
    /// `SPIN_VARIABLE_*`), loads every model dependency into `host` and links the router.
    pub fn load(
        host: &Arc<Host>,
        manifest_path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<SpinApp> {
        let manifest = Manifest::load(manifest_path)?;
        let base = manifest_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let app = manifest.http_app(base)?;
        let variables = Arc::new(variables::resolve(&app.component_variables, &app.variables, env)?);
        SpinApp::link(host, app, variables)
    }

    fn link(
        host: &Arc<Host>,
        app: HttpApp,
        variables: Arc<BTreeMap<String, String>>,
    ) -> anyhow::Result<SpinApp> {
        let engine = router_engine()?;
        let wasm = std::fs::read(&app.source).with_context(|| {
            format!(
                "reading component {:?}'s source {} (build it first: `spin build`, or `kiln spin build`)",
                app.component_id,
                app.source.display()
            )
        })?;
        let router_digest = kiln_types::digest(&wasm);
        let cache = AotCache::new(&engine, host.config().cache_dir.clone());
        let (component, router_cache) = cache
            .load_or_compile(&engine, &router_digest, &wasm)
            .with_context(|| format!("compiling the router {}", app.source.display()))?;

        let mut linker = Linker::<RouterState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking WASI 0.2")?;
        wasmtime_wasi::p3::add_to_linker(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking WASI 0.3")?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking wasi:http 0.3")?;
        link_variables(&mut linker, variables.clone())?;

        let mut models = Vec::new();
        for (slot, path, export) in &app.dependencies {
            if slot == TYPES_INTERFACE {
                // Types only (the slots' records and enums): nothing to call, and wasmtime
                // checks no value types across an instance import, so an empty instance
                // stands for vacant.wasm's export of it.
                linker
                    .instance(TYPES_INTERFACE)
                    .map_err(anyhow::Error::from)
                    .context("defining kiln:model/types")?;
                continue;
            }
            if let Some(export) = export
                && export != MODEL_EXPORT
            {
                bail!("dependency {slot:?}: `kiln spin up` binds the export {MODEL_EXPORT}, not {export:?}");
            }
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading dependency {slot:?} at {}", path.display()))?;
            let model = host.load(&bytes).with_context(|| {
                format!("loading dependency {slot:?} ({}) as a Kiln model", path.display())
            })?;
            let model = Arc::new(model);
            link_model(&mut linker, slot, model.clone())?;
            tracing::info!(slot = %slot, model = %model.info.name, digest = %model.digest, "bound model slot");
            models.push(BoundModel {
                slot: slot.clone(),
                path: path.clone(),
                model,
            });
        }

        check_digests(
            variables.get("kiln_models").map(String::as_str).unwrap_or(""),
            &models,
        )?;

        let pre = linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!(
                    "component {:?} needs imports this app does not provide (Spin would refuse it too: every import must be bound)",
                    app.component_id
                )
            })?;
        let pre = ServicePre::new(pre)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!(
                    "component {:?} does not export wasi:http/handler@0.3.0",
                    app.component_id
                )
            })?;

        let epoch = Epoch::start(&engine, TICK).context("starting the router's epoch thread")?;
        // The router waits on models, so its budget covers a model call several times over.
        let budget = (host.config().deadline * 4).max(Duration::from_secs(5));
        Ok(SpinApp {
            name: app.name,
            component_id: app.component_id,
            router_digest,
            router_cache,
            models,
            variables,
            pre,
            deadline_ticks: epoch.ticks(budget),
            max_body_bytes: host.config().max_request_bytes + (1 << 20),
            _epoch: epoch,
        })
    }

    /// Largest request body accepted.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// Runs one request through a fresh router instance.
    pub async fn handle(&self, req: http::Request<Bytes>) -> anyhow::Result<http::Response<Bytes>> {
        let engine = self.pre.instance_pre().engine().clone();
        let mut store = Store::new(
            &engine,
            RouterState {
                wasi: WasiCtx::builder().inherit_stderr().build(),
                http: WasiHttpCtx::new(),
                table: ResourceTable::new(),
                limits: StoreLimitsBuilder::new().memory_size(ROUTER_MEMORY).build(),
                hooks: NoOutbound,
            },
        );
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(self.deadline_ticks);
        let service = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(anyhow::Error::from)
            .context("instantiating the router")?;
        let (parts, body) = req.into_parts();
        let req = http::Request::from_parts(parts, Full::new(body));
        let (req, io) = wasmtime_wasi_http::p3::Request::from_http(&mut NoOutbound, req);
        let result = store
            .run_concurrent(async |store| {
                let (res, ()) = futures::future::try_join(
                    async {
                        let res = match service.handle(store, req).await? {
                            Ok(res) => res,
                            Err(code) => wasmtime::bail!("the router answered with error code {code:?}"),
                        };
                        let res = store.with(|store| res.into_http(store, async { Ok(()) }))?;
                        let (parts, body) = res.into_parts();
                        let body = body.collect().await.map_err(|e| {
                            wasmtime::format_err!("reading the router's response body: {e:?}")
                        })?;
                        wasmtime::error::Ok(http::Response::from_parts(parts, body.to_bytes()))
                    },
                    async {
                        io.await.map_err(|e| {
                            wasmtime::format_err!("the router did not read the request body: {e:?}")
                        })
                    },
                )
                .await?;
                wasmtime::error::Ok(res)
            })
            .await;
        match result {
            Ok(Ok(res)) => Ok(res),
            Ok(Err(e)) | Err(e) => Err(anyhow::Error::from(e).context("running the router")),
        }
    }
}

/// Refuses to start when `kiln_models` names a digest that differs from the component
/// bound to that slot (the router itself cannot see the bytes; Kiln can).
fn check_digests(kiln_models: &str, models: &[BoundModel]) -> anyhow::Result<()> {
    for entry in kiln_models
        .split([';', '\n'])
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let Some((slot, rest)) = entry.split_once('=') else {
            continue;
        };
        let Some((_, want)) = rest.split_once('#') else {
            continue;
        };
        let want = want.trim().trim_start_matches("sha256:").to_ascii_lowercase();
        if let Some(bound) = models.iter().find(|m| m.slot == slot.trim())
            && bound.model.digest != want
        {
            bail!(
                "kiln_models says {} holds sha256 {want}, but {} has sha256 {}: refusing to serve it",
                bound.slot,
                bound.path.display(),
                bound.model.digest
            );
        }
    }
    Ok(())
}

fn link_variables(
    linker: &mut Linker<RouterState>,
    variables: Arc<BTreeMap<String, String>>,
) -> anyhow::Result<()> {
    let mut inst = linker
        .instance(VARIABLES_INTERFACE)
        .map_err(anyhow::Error::from)?;
    inst.func_wrap_concurrent("get", move |_, (name,): (String,)| {
        let variables = variables.clone();
        Box::pin(async move {
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            let result = if !valid {
                Err(VariablesError::InvalidName(format!(
                    "{name:?}: variable names are lower_snake_case"
                )))
            } else {
                match variables.get(&name) {
                    Some(v) => Ok(v.clone()),
                    None => Err(VariablesError::Undefined(format!(
                        "no variable {name:?} in the component's [component.*.variables]"
                    ))),
                }
            };
            wasmtime::error::Ok((result,))
        })
    })
    .map_err(anyhow::Error::from)?;
    let _ = VariablesError::Provider(String::new());
    let _ = VariablesError::Other(String::new());
    Ok(())
}

fn link_model(linker: &mut Linker<RouterState>, slot: &str, model: Arc<LoadedModel>) -> anyhow::Result<()> {
    let mut inst = linker
        .instance(slot)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("defining the import {slot:?}"))?;
    let info = to_wit_info(&model.info);
    inst.func_wrap("info", move |_, ()| Ok((info.clone(),)))
        .map_err(anyhow::Error::from)?;
    inst.func_wrap_async("predict", move |_, (inputs,): (Vec<bindings::Tensor>,)| {
        let model = model.clone();
        Box::new(async move {
            let inputs: Vec<Tensor> = inputs.into_iter().map(from_wit_tensor).collect();
            let result: Result<Vec<bindings::Tensor>, bindings::GuestError> =
                match tokio::task::spawn_blocking(move || model.predict(inputs)).await {
                    Ok(Ok(outputs)) => Ok(outputs.into_iter().map(to_wit_tensor).collect()),
                    Ok(Err(e)) => Err(guest_error(e)),
                    Err(e) => Err(bindings::GuestError::Internal(format!(
                        "the model call failed: {e}"
                    ))),
                };
            wasmtime::error::Ok((result,))
        })
    })
    .map_err(anyhow::Error::from)?;
    Ok(())
}

fn guest_error(e: HostError) -> bindings::GuestError {
    match e {
        HostError::InvalidInput(m) => bindings::GuestError::InvalidInput(m),
        HostError::Unsupported(m) => bindings::GuestError::Unsupported(m),
        e @ HostError::TooLarge(_) => bindings::GuestError::InvalidInput(e.to_string()),
        other => bindings::GuestError::Internal(other.to_string()),
    }
}
