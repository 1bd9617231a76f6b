//! `kiln serve`: every version the registry serves (or, managed, what the sync service
//! pushed), over HTTP until Ctrl-C or SIGTERM, finishing in-flight requests.

use anyhow::Context;
use kiln_host::Host;
use kiln_node_api::tls::ClientTls;
use kiln_registry::Registry;
use kiln_serve::prediction_cache::{CacheConfig, PredictionCache};
use kiln_serve::{JoinConfig, NodeStore, ServeConfig, Server};
use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::catalog::RegistryCatalog;
use crate::tls_args::{ClientTlsArgs, ServerTlsArgs};

/// Flags of `kiln serve` and `kiln up`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "KILN_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Also serve liveness, readiness and /metrics on this address, from a thread of
    /// their own: probes there answer while the main port is overloaded (on --listen a
    /// probe waits its turn behind every connection's request). Point health checks and
    /// Prometheus here. Same TLS as --listen. Off by default.
    #[arg(long, env = "KILN_HEALTH_LISTEN", value_name = "ADDR")]
    pub health_listen: Option<SocketAddr>,
    /// Prediction cache: `memory` (in-process), `off`, or a Redis URL (`redis://HOST:PORT/DB`,
    /// or `rediss://` for Redis over TLS, verified like --ca-file says).
    #[arg(long, env = "KILN_CACHE", default_value = "memory")]
    pub cache: String,
    /// How long a cached prediction lives, in seconds.
    #[arg(long, env = "KILN_CACHE_TTL_SECS", default_value_t = 300)]
    pub cache_ttl_secs: u64,
    /// Size bound of the in-process cache, in MiB.
    #[arg(long, env = "KILN_CACHE_MAX_MIB", default_value_t = 256)]
    pub cache_max_mib: usize,
    /// Longest wait on Redis per call, in milliseconds, before serving uncached.
    #[arg(long, env = "KILN_CACHE_TIMEOUT_MS", default_value_t = 25)]
    pub cache_timeout_ms: u64,
    /// How often the registry is checked for changes, in milliseconds.
    #[arg(long, env = "KILN_POLL_MS", default_value_t = 100)]
    pub poll_ms: u64,
    /// Serve what a sync service pushes (stored in $KILN_HOME/node/) instead of the local
    /// registry; the node restarts on the routing it last served.
    #[arg(long, env = "KILN_MANAGED")]
    pub managed: bool,
    /// Join the sync service at this URL (implies --managed): announce the node and send
    /// heartbeats to SYNC_URL/sync/v1/nodes.
    #[arg(long, env = "KILN_JOIN", value_name = "SYNC_URL")]
    pub join: Option<String>,
    /// The URL the sync service reaches this node at (default: http://<bound address>).
    #[arg(long, env = "KILN_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// A file holding the join token (`kiln tokens create --role node`) for --join; the
    /// environment variable KILN_JOIN_TOKEN works too. Needed for the first join only:
    /// the sync service then gives the node a credential of its own (kept in
    /// $KILN_HOME/node/credentials.json).
    #[arg(long, env = "KILN_JOIN_TOKEN_FILE", value_name = "FILE")]
    pub join_token_file: Option<PathBuf>,
    /// A file holding a fixed admin token for the node admin API (/admin/v1), for a node
    /// the sync service manages without a join (it then needs the same token).
    #[arg(long, env = "KILN_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// The fixed admin token itself (visible in `ps` when given as a flag: use
    /// --admin-token-file or KILN_ADMIN_TOKEN).
    #[arg(long, env = "KILN_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The node's name in its state and heartbeats (default: its listen address).
    #[arg(long, env = "KILN_NODE_NAME")]
    pub node_name: Option<String>,
    /// Largest component upload to the admin API, in MiB.
    #[arg(long, env = "KILN_MAX_UPLOAD_MIB", default_value_t = 512)]
    pub max_upload_mib: usize,
    /// HTTPS: --tls-cert, --tls-key, --client-ca.
    #[command(flatten)]
    pub tls: ServerTlsArgs,
    /// What the node's calls (the sync service, rediss://) trust and present: --ca-file,
    /// --client-cert, --client-key.
    #[command(flatten)]
    pub client_tls: ClientTlsArgs,
    /// Rate limits of the inference port: --rate-limit, --rate-limit-burst, --rate-limit-key.
    #[command(flatten)]
    pub access: crate::access_args::AccessArgs,
    /// Connection and request limits: --max-connections, --header-timeout, --idle-timeout,
    /// --request-timeout, --upload-timeout, --max-concurrent-uploads.
    #[command(flatten)]
    pub limits: crate::limits_args::LimitsArgs,
    /// Backpressure and fallbacks: --max-json-mib, --max-body-mib-in-flight,
    /// --max-concurrent-calls, --bulkhead, --fallback.
    #[command(flatten)]
    pub load: crate::load_args::LoadArgs,
    /// An Alertmanager (http://127.0.0.1:9093) to alert when a version fails to load and
    /// when a served version's inputs drift from its reference. Repeat for an HA pair.
    #[arg(
        long = "alertmanager",
        env = "KILN_ALERTMANAGER",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub alertmanager: Vec<String>,
    /// Do not profile traffic for drift (no `/monitor/v1/drift` answers, no drift gauges
    /// or alerts from this server; a sync service sees no profiles from it).
    #[arg(long, env = "KILN_NO_DRIFT_PROFILES")]
    pub no_drift_profiles: bool,
    /// A GitOps file (kiln.toml) whose `[models.NAME.slo]` objectives this server checks
    /// over its own counters, alerting `KilnErrorBudgetBurn` through --alertmanager.
    #[arg(long, env = "KILN_SLO_FILE", value_name = "FILE")]
    pub slo_file: Option<std::path::PathBuf>,
    /// How often drift gauges, drift and SLO alerts are evaluated: 60s.
    #[arg(long, env = "KILN_MONITOR_INTERVAL", default_value = "60s")]
    pub monitor_interval: String,
}

impl ServeArgs {
    /// The prediction cache these flags describe; `rediss://` trusts what `tls` trusts.
    pub fn cache_config(&self, tls: &ClientTls) -> anyhow::Result<CacheConfig> {
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
                tls: tls.clone(),
            },
            other => anyhow::bail!("--cache {other}: use `memory`, `off` or a redis:// or rediss:// URL"),
        })
    }

    /// Whether the node serves pushed routing rather than its registry.
    fn is_managed(&self) -> bool {
        self.managed || self.join.is_some()
    }

    /// The fixed admin token, from its file, its environment variable or its flag.
    fn admin_token(&self) -> anyhow::Result<Option<SecretString>> {
        crate::secrets::secret(
            self.admin_token_file.as_deref(),
            "--admin-token-file",
            self.admin_token.as_deref(),
            "--admin-token",
        )
    }

    /// Where to join, checked.
    fn join_config(&self) -> anyhow::Result<Option<JoinConfig>> {
        let Some(sync_url) = self.join.clone() else {
            return Ok(None);
        };
        kiln_node_api::check_http_url(&sync_url).map_err(|e| anyhow::anyhow!("--join {e}"))?;
        if let Some(url) = &self.advertise_url {
            kiln_node_api::check_http_url(url).map_err(|e| anyhow::anyhow!("--advertise-url {e}"))?;
        }
        Ok(Some(JoinConfig {
            sync_url,
            advertise_url: self.advertise_url.clone(),
            join_token: crate::secrets::secret_from(
                self.join_token_file.as_deref(),
                "--join-token-file",
                "KILN_JOIN_TOKEN",
            )?,
        }))
    }
}

/// Loads everything the registry serves (or, managed, what the node store holds), then
/// answers HTTP until Ctrl-C or SIGTERM; `banner` prints ready-to-paste examples.
pub fn run(host: Arc<Host>, registry: Arc<Registry>, args: &ServeArgs, banner: bool) -> anyhow::Result<()> {
    kiln_host::memory::return_large_blocks_to_the_os();
    let admin_token = args.admin_token()?;
    let join = args.join_config()?;
    let tls = args.tls.load()?;
    let client_tls = args.client_tls.load()?;
    let cache_config = args.cache_config(&client_tls)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kiln-http")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let cache = PredictionCache::new(cache_config).await?;
        let mut config = ServeConfig {
            listen: args.listen,
            poll_interval: Duration::from_millis(args.poll_ms.max(10)),
            max_body_bytes: host.config().max_request_bytes + (1 << 20),
            cache: Some(Arc::new(cache)),
            admin_token,
            max_upload_bytes: args.max_upload_mib.max(1) << 20,
            node_name: args.node_name.clone(),
            join,
            tls,
            client_tls,
            access: args.access.config()?,
            limits: args.limits.limits(),
            alertmanager: args.alertmanager.clone(),
            drift_profiles: !args.no_drift_profiles,
            slos: match &args.slo_file {
                Some(path) => kiln_fleet::gitops::load(path)?
                    .models
                    .into_values()
                    .filter_map(|m| m.slo)
                    .collect(),
                None => Vec::new(),
            },
            monitor_interval: Duration::from_millis(
                kiln_registry::duration::parse_ms(&args.monitor_interval)
                    .map_err(|e| anyhow::anyhow!("--monitor-interval {e}"))?
                    .max(100),
            ),
            ..ServeConfig::default()
        };
        args.load.apply(&mut config)?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener.local_addr()?;
        let server = if args.is_managed() {
            let dir = registry.home().join("node");
            let store = NodeStore::open(&dir)
                .with_context(|| format!("opening the node store in {}", dir.display()))?;
            Server::managed(host, Arc::new(store), config)?
        } else {
            Server::new(host, Arc::new(RegistryCatalog::new(registry)), config)?
        };
        // Bound and answering (not ready) before the models load.
        let health = match args.health_listen {
            Some(addr) => {
                let listener = std::net::TcpListener::bind(addr)
                    .with_context(|| format!("listening on {addr} (--health-listen)"))?;
                Some(server.serve_health(listener)?)
            }
            None => None,
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
            "kiln ready on {}://{addr} ({mode}): serving {} model version(s){}{}",
            args.tls.scheme(),
            served.len(),
            if served.is_empty() { "" } else { ": " },
            served.join(", ")
        );
        if banner {
            println!("{}", crate::bootstrap::usage(&addr.to_string()));
        }
        if let Some(health) = &health {
            println!(
                "health and metrics on {}://{}/v2/health/ready",
                args.tls.scheme(),
                health.addr()
            );
        }
        let result = server.run(listener, crate::shutdown::shutdown_signal()).await;
        drop(health);
        result
    })
}
