//! `kiln spin up`: a Spin app (the Kiln router and its model dependencies) served without
//! the Spin CLI.

use anyhow::Context;
use kiln_host::Host;
use kiln_spin_host::SpinApp;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// `kiln spin ...`.
#[derive(clap::Subcommand)]
pub enum SpinCommand {
    /// Serve a Spin app (the Kiln router and its model dependencies) like `spin up`,
    /// without the Spin CLI: variables from the manifest and SPIN_VARIABLE_* env vars.
    Up {
        /// The Spin manifest.
        #[arg(long = "from", short = 'f', default_value = "spin.toml")]
        from: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: SocketAddr,
    },
}

/// Runs a `kiln spin` command until Ctrl-C or SIGTERM.
pub fn run(host: Arc<Host>, command: SpinCommand) -> anyhow::Result<()> {
    match command {
        SpinCommand::Up { from, listen } => {
            let app = Arc::new(SpinApp::load(&host, &from, |k| std::env::var(k).ok())?);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("kiln-spin")
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("listening on {listen}"))?;
                let addr = listener.local_addr()?;
                let slots: Vec<String> = app
                    .models
                    .iter()
                    .map(|m| {
                        let name = if m.model.info.name.is_empty() {
                            "(vacant)"
                        } else {
                            m.model.info.name.as_str()
                        };
                        format!("{}={name}", m.slot)
                    })
                    .collect();
                println!(
                    "kiln spin ready on http://{addr}: app {} (component {}, {} model slot(s): {})",
                    app.name,
                    app.component_id,
                    slots.len(),
                    slots.join(", ")
                );
                kiln_spin_host::serve::run(app, listener, crate::shutdown::shutdown_signal()).await
            })
        }
    }
}
