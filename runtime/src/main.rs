//! The `kiln` command line: parses arguments and calls the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use kiln_registry::Registry;
use kiln_registry::cli::rollout::RolloutCommand;
use kiln_registry::cli::sync::SyncCommand;
use kiln_registry::cli::{AuditCommand, ModelsCommand};
use kiln_runtime::commands;
use kiln_runtime::prediction_cache::{CacheConfig, PredictionCache};
use kiln_runtime::registry_catalog::RegistryCatalog;
use kiln_runtime::serve::{ServeConfig, Server};
use kiln_runtime::{Host, HostConfig, Isolation};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Compile ONNX models into sandboxed Wasm components and run them"
)]
struct Cli {
    #[command(flatten)]
    host: HostArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct HostArgs {
    /// Kiln's state directory: the registry, its blobs and the AOT cache.
    #[arg(long, global = true, env = "KILN_HOME", default_value = ".kiln")]
    home: PathBuf,
    /// Directory of compiled components (default: $KILN_HOME/cache/aot).
    #[arg(long, global = true, env = "KILN_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Do not read or write the AOT cache.
    #[arg(long, global = true)]
    no_cache: bool,
    /// Time budget of one call into a model, in milliseconds.
    #[arg(long, global = true, env = "KILN_DEADLINE_MS", default_value_t = 1000)]
    deadline_ms: u64,
    /// Memory cap of one model instance, in MiB.
    #[arg(long, global = true, env = "KILN_MEMORY_LIMIT_MIB", default_value_t = 512)]
    memory_limit_mib: usize,
    /// Instance reuse: a fresh instance per request, or a pool of reused ones.
    #[arg(long, global = true, env = "KILN_ISOLATION", default_value_t = Isolation::Pooled)]
    isolation: Isolation,
    /// Calls a pooled instance serves before a fresh one replaces it.
    #[arg(long, global = true, env = "KILN_MAX_INSTANCE_REUSE", default_value_t = 1000)]
    max_instance_reuse: u32,
    /// Largest request accepted, in MiB of tensor data.
    #[arg(long, global = true, env = "KILN_MAX_REQUEST_MIB", default_value_t = 64)]
    max_request_mib: usize,
}

#[derive(clap::Args)]
struct ModelArgs {
    /// Model name recorded in the component (default: the ONNX graph name).
    #[arg(long)]
    name: Option<String>,
    /// Version label recorded in the component.
    #[arg(long = "model-version")]
    model_version: Option<String>,
    /// Fix an input's shape: NAME=1,10 (-1 for the batch dimension). Repeatable.
    #[arg(long = "input-shape", value_parser = commands::parse_input_shape)]
    input_shapes: Vec<(String, Vec<i64>)>,
}

// `Sync`'s flags make it large; the enum is parsed once per process.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Compile an ONNX model into a pre-initialized model component.
    Compile {
        /// The .onnx file.
        model: PathBuf,
        #[command(flatten)]
        model_args: ModelArgs,
        /// Output component (default: MODEL with a .wasm extension).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Run a component (or an .onnx, compiled in memory) on an Open Inference Protocol v2 request.
    Predict {
        /// A component .wasm or an .onnx file.
        model: PathBuf,
        /// The OIP v2 infer request body (JSON); `-` reads stdin.
        #[arg(long)]
        request: PathBuf,
        #[command(flatten)]
        model_args: ModelArgs,
    },
    /// Describe a model component.
    Inspect {
        /// The component .wasm.
        component: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The model registry: register, list, promote, alias, tag, archive, delete, lineage.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// The registry's hash-chained audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Serve every version the registry marks Production or Staging or gives an alias,
    /// reloading within a second when the registry changes.
    Serve(ServeArgs),
    /// The main job: on an empty $KILN_HOME compile, register and promote the bundled
    /// example models, then serve them (as `kiln serve`).
    Up(ServeArgs),
    /// The registry-sync service and its fleet: run, status, nodes, GitOps plan/apply.
    Sync {
        #[command(subcommand)]
        command: SyncCommand,
    },
    /// Progressive rollouts: start, status, pause, resume, promote, abort, rollback, policy.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Spin: serve a Spin app's router and model components without the Spin CLI.
    Spin {
        #[command(subcommand)]
        command: kiln_runtime::spin::cli::SpinCommand,
    },
    /// Write an edge's desired state from the registry (the versions it serves, weights).
    Export {
        #[command(subcommand)]
        command: ExportCommand,
    },
}

#[derive(Subcommand)]
enum ExportCommand {
    /// A Spin app: the served versions' components, the router, and spin.toml's variables.
    Spin(kiln_runtime::spin::export::SpinExportArgs),
    /// The Cloudflare Worker: model bundles, their SHA-256 and vars into wrangler.toml.
    Cloudflare(kiln_runtime::export::cloudflare::CloudflareArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "KILN_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Prediction cache: `memory` (in-process), `off`, or a Redis URL (`redis://HOST:PORT/DB`).
    #[arg(long, env = "KILN_CACHE", default_value = "memory")]
    cache: String,
    /// How long a cached prediction lives, in seconds.
    #[arg(long, env = "KILN_CACHE_TTL_SECS", default_value_t = 300)]
    cache_ttl_secs: u64,
    /// Size bound of the in-process cache, in MiB.
    #[arg(long, env = "KILN_CACHE_MAX_MIB", default_value_t = 256)]
    cache_max_mib: usize,
    /// Longest wait on Redis per call, in milliseconds, before serving uncached.
    #[arg(long, env = "KILN_CACHE_TIMEOUT_MS", default_value_t = 25)]
    cache_timeout_ms: u64,
    /// How often the registry is checked for changes, in milliseconds.
    #[arg(long, env = "KILN_POLL_MS", default_value_t = 100)]
    poll_ms: u64,
    /// Serve what a sync service pushes (stored in $KILN_HOME/node/) instead of the local
    /// registry; the node restarts on the routing it last served.
    #[arg(long, env = "KILN_MANAGED")]
    managed: bool,
    /// Join the sync service at this URL (implies --managed): announce the node and send
    /// heartbeats to SYNC_URL/sync/v1/nodes.
    #[arg(long, env = "KILN_JOIN", value_name = "SYNC_URL")]
    join: Option<String>,
    /// The URL the sync service reaches this node at (default: http://<bound address>).
    #[arg(long, env = "KILN_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// Bearer token of the node admin API (/admin/v1); unset, the admin API is off.
    #[arg(long, env = "KILN_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// The node's name in its state and heartbeats (default: its listen address).
    #[arg(long, env = "KILN_NODE_NAME")]
    node_name: Option<String>,
    /// Largest component upload to the admin API, in MiB.
    #[arg(long, env = "KILN_MAX_UPLOAD_MIB", default_value_t = 512)]
    max_upload_mib: usize,
}

impl ServeArgs {
    fn cache_config(&self) -> anyhow::Result<CacheConfig> {
        let ttl = Duration::from_secs(self.cache_ttl_secs.max(1));
        Ok(match self.cache.as_str() {
            "off" | "none" => CacheConfig::Off,
            "memory" => CacheConfig::Memory {
                max_bytes: self.cache_max_mib << 20,
                ttl,
            },
            url if url.starts_with("redis://") || url.starts_with("rediss://") => CacheConfig::Redis {
                url: url.to_string(),
                ttl,
                timeout: Duration::from_millis(self.cache_timeout_ms.max(1)),
            },
            other => anyhow::bail!("--cache {other}: use `memory`, `off` or a redis:// URL"),
        })
    }

    /// Whether the node serves pushed routing rather than its registry.
    fn is_managed(&self) -> bool {
        self.managed || self.join.is_some()
    }

    /// The admin token, refusing combinations that cannot work.
    fn admin_token(&self) -> anyhow::Result<Option<String>> {
        let token = self.admin_token.clone().filter(|t| !t.trim().is_empty());
        if self.join.is_some() && token.is_none() {
            anyhow::bail!(
                "--join needs --admin-token (or KILN_ADMIN_TOKEN): the sync service authenticates with it, both ways"
            );
        }
        Ok(token)
    }
}

fn host_config(a: &HostArgs) -> HostConfig {
    let defaults = HostConfig::default();
    HostConfig {
        deadline: Duration::from_millis(a.deadline_ms),
        memory_limit: a.memory_limit_mib << 20,
        isolation: a.isolation,
        max_instance_reuse: a.max_instance_reuse.max(1),
        max_request_bytes: a.max_request_mib << 20,
        cache_dir: if a.no_cache {
            None
        } else {
            Some(
                a.cache_dir
                    .clone()
                    .unwrap_or_else(|| a.home.join("cache").join("aot")),
            )
        },
        ..defaults
    }
}

fn open_registry(home: &std::path::Path) -> anyhow::Result<Arc<Registry>> {
    Ok(Arc::new(Registry::open(home).with_context(|| {
        format!("opening the registry in {}", home.display())
    })?))
}

/// `kiln serve` / `kiln up`: load everything the registry serves (or, managed, what the
/// node store holds), then answer HTTP until Ctrl-C or SIGTERM, finishing in-flight
/// requests.
fn serve(host: Arc<Host>, registry: Arc<Registry>, args: &ServeArgs, banner: bool) -> anyhow::Result<()> {
    let admin_token = args.admin_token()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kiln-http")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let cache = PredictionCache::new(args.cache_config()?).await?;
        let config = ServeConfig {
            listen: args.listen,
            poll_interval: Duration::from_millis(args.poll_ms.max(10)),
            max_body_bytes: host.config().max_request_bytes + (1 << 20),
            cache: Some(Arc::new(cache)),
            admin_token,
            max_upload_bytes: args.max_upload_mib.max(1) << 20,
            node_name: args.node_name.clone(),
            join: args.join.clone().map(|sync_url| kiln_runtime::serve::JoinConfig {
                sync_url,
                advertise_url: args.advertise_url.clone(),
            }),
            ..ServeConfig::default()
        };
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener.local_addr()?;
        let server = if args.is_managed() {
            let dir = registry.home().join("node");
            let store = kiln_runtime::node_store::NodeStore::open(&dir)
                .with_context(|| format!("opening the node store in {}", dir.display()))?;
            Server::managed(host, Arc::new(store), config)?
        } else {
            Server::new(host, Arc::new(RegistryCatalog::new(registry)), config)?
        };
        let report = server.load().await?;
        for (model, version, why) in &report.failed {
            eprintln!("warning: {model} version {version} is not served: {why}");
        }
        let served: Vec<String> = report.served.iter().map(|(m, v)| format!("{m}/{v}")).collect();
        let mode = match (&args.join, server.is_managed()) {
            (Some(sync), _) => format!("managed node, joining {sync}"),
            (None, true) => "managed node".to_string(),
            (None, false) => "local registry".to_string(),
        };
        println!(
            "kiln ready on http://{addr} ({mode}): serving {} model version(s){}{}",
            served.len(),
            if served.is_empty() { "" } else { ": " },
            served.join(", ")
        );
        if banner {
            println!("{}", kiln_runtime::bootstrap::usage(&addr.to_string()));
        }
        server.run(listener, shutdown_signal()).await
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    eprintln!("shutting down: finishing in-flight requests");
}

/// The wasmtime host, created on first use: registry commands other than `register` (and
/// a sync service that never imports from MLflow) need no engine.
struct LazyHost {
    config: HostConfig,
    cell: std::sync::OnceLock<Arc<Host>>,
}

impl LazyHost {
    fn get(&self) -> anyhow::Result<Arc<Host>> {
        if let Some(h) = self.cell.get() {
            return Ok(Arc::clone(h));
        }
        let h = Arc::new(Host::new(self.config.clone())?);
        Ok(Arc::clone(self.cell.get_or_init(|| h)))
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let home = cli.host.home.clone();
    let lazy = Arc::new(LazyHost {
        config: host_config(&cli.host),
        cell: std::sync::OnceLock::new(),
    });
    let host = || lazy.get();
    match cli.command {
        Command::Compile {
            model,
            model_args,
            output,
        } => {
            let opts =
                commands::load_options(model_args.name, model_args.model_version, model_args.input_shapes);
            print!("{}", commands::compile_file(&host()?, &model, &opts, output)?);
        }
        Command::Predict {
            model,
            request,
            model_args,
        } => {
            let opts =
                commands::load_options(model_args.name, model_args.model_version, model_args.input_shapes);
            let body = if request.as_os_str() == "-" {
                let mut b = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)?;
                b
            } else {
                kiln_runtime::compile::read_file(&request)?
            };
            let loaded = commands::load_model(&host()?, &model, &opts)?;
            let response = commands::predict(&loaded, &body)?;
            println!("{}", serde_json::to_string(&response)?);
        }
        Command::Inspect { component, json } => {
            let loaded = commands::load_model(&host()?, &component, &Default::default())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&commands::inspect_json(&loaded))?
                );
            } else {
                print!("{}", commands::inspect_text(&loaded));
            }
        }
        Command::Models { command } => {
            let registry = open_registry(&home)?;
            let prepare = |file: &std::path::Path, name: &str, golden: &[serde_json::Value]| {
                kiln_runtime::register::prepare(&host()?, file, name, golden)
            };
            print_block(&kiln_registry::cli::run_models(&registry, command, &prepare)?);
        }
        Command::Audit { command } => {
            let registry = open_registry(&home)?;
            print_block(&kiln_registry::cli::run_audit(&registry, command)?);
        }
        Command::Serve(args) => {
            let registry = open_registry(&home)?;
            serve(host()?, registry, &args, false)?;
        }
        Command::Up(args) => {
            let registry = open_registry(&home)?;
            let actor = kiln_registry::default_actor();
            for b in kiln_runtime::bootstrap::bootstrap(&host()?, &registry, &actor)? {
                eprintln!(
                    "{} {}/{}",
                    if b.reused {
                        "reusing"
                    } else {
                        "registered and promoted"
                    },
                    b.name,
                    b.version
                );
            }
            serve(host()?, registry, &args, true)?;
        }
        Command::Sync { command } => {
            let registry = open_registry(&home)?;
            match command {
                SyncCommand::Run(args) => sync_run(lazy.clone(), registry, &args)?,
                other => print_block(&kiln_registry::cli::sync::run_sync(&registry, other)?),
            }
        }
        Command::Rollout { command } => {
            let registry = open_registry(&home)?;
            let default_policy = kiln_registry::rollout::RolloutPlan::default();
            print_block(&kiln_registry::cli::rollout::run_rollout(
                &registry,
                command,
                &default_policy,
            )?);
        }
        Command::Spin { command } => {
            kiln_runtime::spin::cli::run(host()?, command, shutdown_signal)?;
        }
        Command::Export {
            command: ExportCommand::Spin(args),
        } => {
            let registry = open_registry(&home)?;
            print!(
                "{}",
                kiln_runtime::spin::export::export(&registry, &args)?.summary()
            );
        }
        Command::Export {
            command: ExportCommand::Cloudflare(args),
        } => {
            let registry = open_registry(&home)?;
            let exported = kiln_runtime::export::cloudflare::export(&registry, &args.out)?;
            print!("{}", exported.summary());
        }
    }
    Ok(())
}

/// `kiln sync run`: the registry-sync service until Ctrl-C or SIGTERM.
fn sync_run(
    host: Arc<LazyHost>,
    registry: Arc<Registry>,
    args: &kiln_registry::cli::sync::SyncRunArgs,
) -> anyhow::Result<()> {
    let mut config = args.config()?;
    if let Some(path) = &args.config {
        // The file is the desired state: apply it, then take its [sync] settings where the
        // command line left the defaults.
        let file = kiln_registry::gitops::load(path)?;
        let changes = kiln_registry::gitops::apply(&registry, &file, &kiln_registry::default_actor())?;
        for c in &changes {
            eprintln!("applied {c}");
        }
        if let Some(listen) = file.sync.listen
            && config.listen == kiln_registry::sync::SyncConfig::default().listen
        {
            config.listen = listen;
        }
        if config.alert_webhook.is_none() {
            config.alert_webhook = file.sync.alert_webhook.clone();
        }
        if let Some(check) = &file.sync.check_interval
            && args.check_interval == "1s"
        {
            config.check_interval =
                Duration::from_millis(kiln_registry::rollout::parse_duration_ms(check)?.max(50));
        }
    }
    let mut service = kiln_registry::sync::SyncService::new(registry.clone(), config.clone());
    if let Some(uri) = &args.mlflow {
        let watch = match args.mlflow_watch.split_once(':') {
            Some(("alias", a)) => kiln_registry::mlflow::Watch::Alias(a.to_string()),
            Some(("stage", s)) => kiln_registry::mlflow::Watch::Stage(s.to_string()),
            _ => anyhow::bail!(
                "--mlflow-watch {}: use alias:NAME or stage:NAME",
                args.mlflow_watch
            ),
        };
        let source = kiln_registry::mlflow::MlflowSource::new(kiln_registry::mlflow::MlflowSourceConfig {
            tracking_uri: uri.clone(),
            watch,
            models: args.mlflow_models.clone(),
        })?;
        let prepare = move |file: &std::path::Path, name: &str, golden: &[serde_json::Value]| {
            kiln_runtime::register::prepare(&host.get()?, file, name, golden)
        };
        let interval =
            Duration::from_millis(kiln_registry::rollout::parse_duration_ms(&args.mlflow_poll)?.max(100));
        service = service.with_source(Box::new(kiln_registry::sync::sources::MlflowPoller::new(
            source,
            Box::new(prepare),
            interval,
            "mlflow-sync",
        )));
    }
    let handle = service.start()?;
    let nodes = registry.nodes()?.len();
    println!(
        "kiln sync ready on http://{}: managing {nodes} node(s){}",
        handle.addr(),
        args.mlflow
            .as_deref()
            .map(|m| format!(", watching MLflow at {m}"))
            .unwrap_or_default()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal handler")?;
    runtime.block_on(shutdown_signal());
    handle.shutdown();
    Ok(())
}

/// Prints command output with exactly one trailing newline.
fn print_block(text: &str) {
    if !text.is_empty() {
        println!("{}", text.trim_end_matches('\n'));
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
