//! The `kiln` command line's shape: global flags, and one subcommand per file under
//! `commands/`.

use crate::commands::{
    audit::AuditCommand, compile::CompileArgs, export::ExportCommand, inspect::InspectArgs,
    models::ModelsCommand, monitor::MonitorCommand, predict::PredictArgs, registry::RegistryCommand,
    rollout::RolloutCommand, serve::ServeArgs, slo::SloCommand, spin::SpinCommand, sync::SyncCommand,
    tokens::TokensCommand,
};
use clap::{Parser, Subcommand};
use kiln_host::{HostConfig, Isolation};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Compile ONNX models into sandboxed Wasm components and run them"
)]
pub struct Cli {
    #[command(flatten)]
    pub host: HostArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the registry commands (`models`, `audit`, `rollout`, `sync` but `run`, `tokens`)
/// send their calls: a registry server, or the local `$KILN_HOME` when none is given.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct RegistryArgs {
    /// A registry server to use instead of $KILN_HOME: https://registry.example:7080.
    #[arg(long = "registry", global = true, env = "KILN_REGISTRY", value_name = "URL")]
    pub registry_url: Option<String>,
    /// A file holding the token for --registry (else the KILN_TOKEN environment variable).
    #[arg(
        long = "token-file",
        global = true,
        env = "KILN_TOKEN_FILE",
        value_name = "FILE"
    )]
    pub registry_token_file: Option<PathBuf>,
    /// Also trust this PEM CA (besides the system's roots) for the --registry server.
    #[arg(long, global = true, env = "KILN_REGISTRY_CA", value_name = "FILE")]
    pub registry_ca: Option<PathBuf>,
}

/// Flags every subcommand takes: where Kiln keeps its state, and the sandbox's limits.
#[derive(clap::Args)]
pub struct HostArgs {
    /// Kiln's state directory: the registry, its blobs and the AOT cache.
    #[arg(long, global = true, env = "KILN_HOME", default_value = ".kiln")]
    pub home: PathBuf,
    /// Directory of compiled components (default: $KILN_HOME/cache/aot).
    #[arg(long, global = true, env = "KILN_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Do not read or write the AOT cache.
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// Time budget of one call into a model, in milliseconds.
    #[arg(long, global = true, env = "KILN_DEADLINE_MS", default_value_t = 1000)]
    pub deadline_ms: u64,
    /// Memory cap of one model instance, in MiB.
    #[arg(long, global = true, env = "KILN_MEMORY_LIMIT_MIB", default_value_t = 512)]
    pub memory_limit_mib: usize,
    /// Instance reuse: a fresh instance per request, or a pool of reused ones.
    #[arg(
        long,
        global = true,
        env = "KILN_ISOLATION",
        default_value = "pooled",
        value_parser = ["per-request", "pooled"]
    )]
    pub isolation: String,
    /// Calls a pooled instance serves before a fresh one replaces it.
    #[arg(long, global = true, env = "KILN_MAX_INSTANCE_REUSE", default_value_t = 1000)]
    pub max_instance_reuse: u32,
    /// Largest request accepted, in MiB of tensor data.
    #[arg(long, global = true, env = "KILN_MAX_REQUEST_MIB", default_value_t = 64)]
    pub max_request_mib: usize,
    /// Warm instances kept per model version for reuse (pooled isolation).
    #[arg(long, global = true, env = "KILN_IDLE_INSTANCES", default_value_t = 4)]
    pub idle_instances: usize,
    /// Instance slots of the whole server (every model's running and idle instances);
    /// a call that finds none free is shed with 503 `overloaded`.
    #[arg(long, global = true, env = "KILN_INSTANCE_SLOTS", default_value_t = 128)]
    pub instance_slots: u32,
}

impl HostArgs {
    /// The host settings these flags describe.
    pub fn host_config(&self) -> anyhow::Result<HostConfig> {
        let isolation: Isolation = self.isolation.parse().map_err(anyhow::Error::msg)?;
        Ok(HostConfig {
            deadline: Duration::from_millis(self.deadline_ms),
            memory_limit: self.memory_limit_mib << 20,
            isolation,
            max_instance_reuse: self.max_instance_reuse.max(1),
            max_request_bytes: self.max_request_mib << 20,
            pool_size: self.idle_instances,
            instance_slots: self.instance_slots.max(4),
            cache_dir: if self.no_cache {
                None
            } else {
                Some(
                    self.cache_dir
                        .clone()
                        .unwrap_or_else(|| self.home.join("cache").join("aot")),
                )
            },
        })
    }
}

// `Sync`'s flags make it large; the enum is parsed once per process.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum Command {
    /// Compile an ONNX model into a pre-initialized model component.
    Compile(CompileArgs),
    /// Run a component (or an .onnx, compiled in memory) on an Open Inference Protocol v2 request.
    Predict(PredictArgs),
    /// Describe a model component.
    Inspect(InspectArgs),
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
    /// The registry server: every registry operation over HTTP/JSON with tokens and roles.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// API tokens of the registry server: create (printed once), list, revoke.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// Progressive rollouts: start, status, pause, resume, promote, abort, rollback, policy.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Spin: serve a Spin app's router and model components without the Spin CLI.
    Spin {
        #[command(subcommand)]
        command: SpinCommand,
    },
    /// Drift: reference profiles, and the drift of live traffic against them.
    Monitor {
        #[command(subcommand)]
        command: MonitorCommand,
    },
    /// Service level objectives (kiln.toml): Prometheus burn-rate rules, error-budget report.
    Slo {
        #[command(subcommand)]
        command: SloCommand,
    },
    /// Write an edge's desired state from the registry (the versions it serves, weights).
    Export {
        #[command(subcommand)]
        command: ExportCommand,
    },
}
