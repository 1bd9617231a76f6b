//! `kiln registry serve`: the registry server. Every registry operation over HTTP/JSON
//! (`kiln_registry_server`), each call authenticated by a token (`kiln tokens`) and allowed
//! by its role; the OpenAPI document is at `/openapi.json`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use kiln_registry::Registry;
use kiln_registry_server::RegistryServer;

use crate::tls_args::ServerTlsArgs;

/// The registry server (`kiln registry ...`).
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Serve the registry in $KILN_HOME over HTTP/JSON until Ctrl-C or SIGTERM.
    Serve(RegistryServeArgs),
}

/// Flags of `kiln registry serve`.
#[derive(Debug, Args, Clone)]
pub struct RegistryServeArgs {
    /// Address to listen on.
    #[arg(long, env = "KILN_REGISTRY_LISTEN", default_value = "127.0.0.1:7080")]
    pub listen: SocketAddr,
    /// --tls-cert, --tls-key, --client-ca.
    #[command(flatten)]
    pub tls: ServerTlsArgs,
    /// Allow plain HTTP on a non-loopback address (tokens would cross the network in clear text).
    #[arg(long)]
    pub insecure_plaintext: bool,
    /// Largest component upload taken, in MiB.
    #[arg(long, env = "KILN_REGISTRY_MAX_UPLOAD_MIB", default_value_t = 512)]
    pub max_upload_mib: usize,
    /// Connection and request limits: --max-connections, --header-timeout, --idle-timeout,
    /// --request-timeout, --upload-timeout, --max-concurrent-uploads.
    #[command(flatten)]
    pub limits: crate::limits_args::LimitsArgs,
}

/// Refuses plain HTTP where tokens would cross a network, unless asked for explicitly.
pub fn check_plaintext(listen: SocketAddr, tls: bool, insecure: bool, flag: &str) -> anyhow::Result<()> {
    if tls || listen.ip().is_loopback() {
        return Ok(());
    }
    if insecure {
        tracing::warn!(%listen, "serving plain HTTP on a non-loopback address: tokens cross the network in clear text");
        return Ok(());
    }
    anyhow::bail!(
        "refusing to serve plain HTTP on {listen}: tokens would cross the network in clear text. Give --tls-cert and --tls-key, listen on 127.0.0.1, or pass {flag} if the network is trusted"
    )
}

/// Runs `kiln registry serve`.
pub fn serve(registry: Arc<Registry>, args: &RegistryServeArgs) -> anyhow::Result<()> {
    let tls = args.tls.load()?;
    check_plaintext(
        args.listen,
        tls.is_some(),
        args.insecure_plaintext,
        "--insecure-plaintext",
    )?;
    if !registry.has_tokens()? {
        eprintln!(
            "no tokens yet: every call will get 401. Create the first admin token on this machine with `kiln tokens create --name admin --role admin`"
        );
    }
    let limits = args.limits.limits();
    let app = RegistryServer::new(registry.clone())
        .max_upload(args.max_upload_mib.max(1) << 20)
        .limits(&limits)
        .router();
    let scheme = args.tls.scheme();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kiln-registry")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener.local_addr()?;
        println!(
            "kiln registry ready on {scheme}://{addr} (registry {}; OpenAPI at {scheme}://{addr}/openapi.json)",
            registry.home().display()
        );
        kiln_node_api::tls::serve(listener, app, tls, &limits, crate::shutdown::shutdown_signal()).await
    })
}
