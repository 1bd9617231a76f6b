//! `kiln export ...`: an edge's desired state written from the registry.

use crate::export::cloudflare::CloudflareArgs;
use crate::export::spin::SpinExportArgs;
use clap::Subcommand;
use kiln_registry::Registry;

/// The edges `kiln export` writes for.
#[derive(Subcommand)]
pub enum ExportCommand {
    /// A Spin app: the served versions' components, the router, and spin.toml's variables.
    Spin(SpinExportArgs),
    /// The Cloudflare Worker: model bundles, their SHA-256 and vars into wrangler.toml.
    Cloudflare(CloudflareArgs),
}

/// Runs an export; returns its summary.
pub fn run(registry: &Registry, command: ExportCommand) -> anyhow::Result<String> {
    Ok(match command {
        ExportCommand::Spin(args) => crate::export::spin::export(registry, &args)?.summary(),
        ExportCommand::Cloudflare(args) => crate::export::cloudflare::export(registry, &args.out)?.summary(),
    })
}
