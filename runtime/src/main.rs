//! The `kiln` command line: parses arguments and calls the library.

use clap::{Parser, Subcommand};
use kiln_runtime::commands;
use kiln_runtime::{Host, HostConfig, Isolation};
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
            a.cache_dir.clone().or(defaults.cache_dir.clone())
        },
        ..defaults
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let host = Arc::new(Host::new(host_config(&cli.host))?);
    match cli.command {
        Command::Compile {
            model,
            model_args,
            output,
        } => {
            let opts =
                commands::load_options(model_args.name, model_args.model_version, model_args.input_shapes);
            print!("{}", commands::compile_file(&host, &model, &opts, output)?);
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
            let loaded = commands::load_model(&host, &model, &opts)?;
            let response = commands::predict(&loaded, &body)?;
            println!("{}", serde_json::to_string(&response)?);
        }
        Command::Inspect { component, json } => {
            let loaded = commands::load_model(&host, &component, &Default::default())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&commands::inspect_json(&loaded))?
                );
            } else {
                print!("{}", commands::inspect_text(&loaded));
            }
        }
    }
    Ok(())
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
