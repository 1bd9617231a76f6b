//! The sync service's lifecycle: [`SyncService::start`] wires the API, the control loop
//! and the sources to one shared state, and [`SyncHandle`] stops them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use kiln_registry::Registry;

use crate::api;
use crate::controller::Controller;
use crate::sources::Source;
use crate::state::{Shared, SyncConfig};

/// The sync service, before it starts.
pub struct SyncService {
    registry: Arc<Registry>,
    config: SyncConfig,
    sources: Vec<Box<dyn Source>>,
}

/// A running sync service.
pub struct SyncHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    control: Option<std::thread::JoinHandle<()>>,
    api: Option<std::thread::JoinHandle<()>>,
    api_stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl SyncService {
    /// A service over `registry`.
    pub fn new(registry: Arc<Registry>, config: SyncConfig) -> SyncService {
        SyncService {
            registry,
            config,
            sources: Vec::new(),
        }
    }

    /// Adds a source polled on its own thread.
    pub fn with_source(mut self, source: Box<dyn Source>) -> SyncService {
        self.sources.push(source);
        self
    }

    /// Binds the API, starts the control loop (which starts the node workers) and sources.
    pub fn start(self) -> anyhow::Result<SyncHandle> {
        let mut shared = Shared::new(self.registry, self.config).context("creating the metrics")?;
        if !shared.config.alertmanager.is_empty() {
            let mut alerts = kiln_node_api::alerts::AlerterConfig::new(shared.config.alertmanager.clone());
            alerts.tls = shared.config.client_tls.clone();
            alerts.resend_interval = shared.config.alert_resend;
            shared.alerter = Some(Arc::new(
                kiln_node_api::alerts::Alerter::start(alerts).context("starting the Alertmanager client")?,
            ));
        }
        let shared = Arc::new(shared);
        let listener = std::net::TcpListener::bind(shared.config.listen)
            .with_context(|| format!("listening on {}", shared.config.listen))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (api_stop, api_stopped) = tokio::sync::oneshot::channel();
        let api_shared = shared.clone();
        let api = std::thread::Builder::new()
            .name("sync-api".into())
            .spawn(move || {
                if let Err(e) = api::serve(api_shared, listener, api_stopped) {
                    tracing::error!(error = %format!("{e:#}"), "the sync API stopped");
                }
            })?;
        // The first desired state before anything else, so workers start with a target.
        if shared.config.alert_webhook.is_some() {
            // In the status and metrics from the start, with zero retries.
            crate::alert::target(&shared);
        }
        for source in &self.sources {
            if let Some(target) = source.target() {
                shared.add_target(target);
            }
        }
        let watcher = shared.clone();
        std::thread::Builder::new()
            .name("sync-monitor".into())
            .spawn(move || crate::monitor::run(watcher))?;
        let mut control = Controller::new(shared.clone());
        control.tick();
        let control = std::thread::Builder::new()
            .name("sync-control".into())
            .spawn(move || control.run())?;
        for source in self.sources {
            let s = shared.clone();
            std::thread::Builder::new()
                .name(format!("sync-source-{}", source.name()))
                .spawn(move || poll_source(&s, source))?;
        }
        Ok(SyncHandle {
            shared,
            addr,
            control: Some(control),
            api: Some(api),
            api_stop: Some(api_stop),
        })
    }
}

/// Polls a source until the service stops, logging failures once per outage.
fn poll_source(shared: &Shared, mut source: Box<dyn Source>) {
    let mut failing = false;
    while !shared.stopping() {
        let result = source.poll(&shared.registry);
        for failure in source.take_failures() {
            crate::monitor::event(
                shared,
                kiln_node_api::alerts::Alert::new(
                    &failure.alertname,
                    kiln_node_api::alerts::Severity::Ticket,
                )
                .label("model", &failure.model)
                .label("version", &failure.version)
                .annotation("summary", &failure.message),
            );
        }
        match result {
            Ok(()) => failing = false,
            Err(e) => {
                if !failing {
                    tracing::warn!(source = %source.name(), error = %format!("{e:#}"), "source poll failed; retrying");
                }
                failing = true;
            }
        }
        let until = Instant::now() + source.interval();
        while Instant::now() < until && !shared.stopping() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl SyncHandle {
    /// The address the join/status API listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The current desired routing generation.
    pub fn generation(&self) -> u64 {
        self.shared.desired_generation()
    }

    /// Stops everything and waits for the control loop and API.
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.control_wake.notify();
        if let Some(tx) = self.api_stop.take() {
            let _ = tx.send(());
        }
        for w in self
            .shared
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            w.stop.store(true, Ordering::Release);
            w.wake.notify();
        }
        if let Some(c) = self.control.take() {
            let _ = c.join();
        }
        if let Some(a) = self.api.take() {
            let _ = a.join();
        }
    }

    /// Blocks until the service stops (it stops only through [`SyncHandle::shutdown`] or
    /// the process ending).
    pub fn wait(mut self) {
        if let Some(c) = self.control.take() {
            let _ = c.join();
        }
    }
}

impl Drop for SyncHandle {
    fn drop(&mut self) {
        self.stop_all();
    }
}
