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
pub mod register;
pub mod render;
pub mod shutdown;
pub mod tls_args;

use anyhow::Context;
use args::{Cli, Command};
use kiln_registry::Registry;
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
            let registry = open_registry(&home)?;
            let prepare = |file: &Path, name: &str, golden: &[serde_json::Value]| {
                register::prepare(&host.get()?, file, name, golden)
            };
            print_block(&commands::models::run(&registry, command, &prepare)?);
        }
        Command::Audit { command } => {
            print_block(&commands::audit::run(&*open_registry(&home)?, command)?);
        }
        Command::Serve(args) => commands::serve::run(host.get()?, open_registry(&home)?, &args, false)?,
        Command::Up(args) => commands::up::run(host.get()?, open_registry(&home)?, &args)?,
        Command::Sync { command } => {
            let registry = open_registry(&home)?;
            match command {
                commands::sync::SyncCommand::Run(args) => {
                    commands::sync::serve(Arc::new(host), registry, &args)?
                }
                other => print_block(&commands::sync::run(&registry, other)?),
            }
        }
        Command::Rollout { command } => {
            print_block(&commands::rollout::run(
                &*open_registry(&home)?,
                command,
                &kiln_registry::RolloutPlan::default(),
            )?);
        }
        Command::Spin { command } => commands::spin::run(host.get()?, command)?,
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

/// Prints command output with exactly one trailing newline.
fn print_block(text: &str) {
    if !text.is_empty() {
        println!("{}", text.trim_end_matches('\n'));
    }
}
