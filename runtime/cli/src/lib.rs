//! The `kiln` binary's library: the command line ([`args`]), one module per subcommand
//! under [`commands`], the registry as `kiln serve`'s catalog ([`catalog`]), the compile
//! step of registration ([`register`]), the bundled examples of `kiln up`
//! ([`bootstrap`]) and the edge exporters ([`export`]). This is the only crate that uses
//! both the registry (`registry-sync/`) and the host (`runtime/`).

pub mod access_args;
pub mod args;
pub mod bootstrap;
pub mod catalog;
pub mod commands;
pub mod export;
pub mod lazy_host;
pub mod limits_args;
pub mod load_args;
pub mod reference;
pub mod register;
pub mod render;
pub mod secrets;
pub mod service_get;
pub mod shutdown;
pub mod tls_args;

use anyhow::Context;
use args::{Cli, Command, RegistryArgs};
use kiln_registry::Registry;
use kiln_registry_server::{Authorized, RegistryApi, RemoteRegistry};
use lazy_host::LazyHost;
use std::path::Path;
use std::sync::Arc;

/// Runs one `kiln` command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let home = cli.host.home.clone();
    let host = LazyHost::new(cli.host.host_config()?);
    match cli.command {
        Command::Compile(args) => print!("{}", commands::compile::run(&host.get()?, args)?),
        Command::Predict(args) => println!("{}", commands::predict::run(&host.get()?, args)?),
        Command::Inspect(args) => print!("{}", commands::inspect::run(&host.get()?, args)?),
        Command::Models { command } => {
            let registry = registry_api(&cli.registry, &home)?;
            let prepare = |file: &Path, name: &str, golden: &[serde_json::Value]| {
                register::prepare(&host.get()?, file, name, golden)
            };
            let reference = |component: &[u8], data: &Path, names: Option<&str>| {
                reference::build(&host.get()?, component, data, names)
            };
            print_block(&commands::models::run(&*registry, command, &prepare, &reference)?);
        }
        Command::Audit { command } => {
            print_block(&commands::audit::run(
                &*registry_api(&cli.registry, &home)?,
                command,
            )?);
        }
        Command::Serve(args) => commands::serve::run(host.get()?, open_registry(&home)?, &args, false)?,
        Command::Up(args) => commands::up::run(host.get()?, open_registry(&home)?, &args)?,
        Command::Sync { command } => match command {
            commands::sync::SyncCommand::Run(args) => {
                commands::sync::serve(Arc::new(host), open_registry(&home)?, &args)?
            }
            // The running service's view: no registry is opened.
            commands::sync::SyncCommand::Status {
                url: Some(url),
                token_file,
                tls,
                json,
            } => print_block(&commands::sync::service_status(
                &url,
                token_file.as_deref(),
                &tls,
                json,
            )?),
            other => print_block(&commands::sync::run(
                &*registry_api(&cli.registry, &home)?,
                other,
            )?),
        },
        Command::Rollout { command } => {
            print_block(&commands::rollout::run(
                &*registry_api(&cli.registry, &home)?,
                command,
            )?);
        }
        Command::Tokens { command } => {
            print_block(&commands::tokens::run(
                &*registry_api(&cli.registry, &home)?,
                command,
            )?);
        }
        Command::Registry { command } => match command {
            commands::registry::RegistryCommand::Serve(args) => {
                commands::registry::serve(open_registry(&home)?, &args)?
            }
        },
        Command::Spin { command } => commands::spin::run(host.get()?, command)?,
        Command::Monitor { command } => {
            let registry = registry_api(&cli.registry, &home)?;
            print_block(&commands::monitor::run(&*registry, command, &host)?);
        }
        Command::Slo { command } => print_block(&commands::slo::run(command)?),
        Command::Export { command } => print!("{}", commands::export::run(&*open_registry(&home)?, command)?),
    }
    Ok(())
}

/// Opens the registry in `home`, saying where when it fails.
pub fn open_registry(home: &Path) -> anyhow::Result<Arc<Registry>> {
    Ok(Arc::new(Registry::open(home).with_context(|| {
        format!("opening the registry in {}", home.display())
    })?))
}

/// The registry the registry commands use: the server `--registry`/`KILN_REGISTRY` names,
/// with the token from `--token-file` or `KILN_TOKEN`; else `$KILN_HOME` as its owner
/// (audited as `local:<os user>`).
pub fn registry_api(args: &RegistryArgs, home: &Path) -> anyhow::Result<Box<dyn RegistryApi>> {
    let Some(url) = args.registry_url.as_deref().filter(|u| !u.trim().is_empty()) else {
        return Ok(Box::new(Authorized::local(open_registry(home)?)));
    };
    kiln_node_api::check_http_url(url).map_err(|e| anyhow::anyhow!("--registry {e}"))?;
    let token = match &args.registry_token_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?,
        None => std::env::var("KILN_TOKEN").map_err(|_| {
            anyhow::anyhow!(
                "--registry {url} needs a token: put it in a file and pass --token-file FILE (or KILN_TOKEN_FILE), or set KILN_TOKEN"
            )
        })?,
    };
    let token = token.trim();
    if token.is_empty() {
        anyhow::bail!("the registry token is empty");
    }
    let tls = kiln_node_api::tls::ClientTls::from_pem_files(args.registry_ca.as_deref(), None)?;
    let agent: ureq::Agent = tls
        .agent_config()
        .http_status_as_error(false)
        .timeout_connect(Some(std::time::Duration::from_secs(5)))
        .timeout_global(Some(std::time::Duration::from_secs(600)))
        .build()
        .into();
    Ok(Box::new(RemoteRegistry::new(url, token, agent)))
}

/// Prints command output with exactly one trailing newline.
fn print_block(text: &str) {
    if !text.is_empty() {
        println!("{}", text.trim_end_matches('\n'));
    }
}
