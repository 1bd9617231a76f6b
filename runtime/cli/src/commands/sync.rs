//! `kiln sync ...`: the registry-sync service (`kiln sync run`: its flags, a GitOps file's
//! `[sync]` settings under them, the MLflow source), the fleet's status and node list,
//! and GitOps plan/apply.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use comfy_table::{Table, presets};
use kiln_fleet::gitops;
use kiln_registry::auth::Identity;
use kiln_registry::duration::parse_ms;
use kiln_registry::fleet::NodeRecord;
use kiln_registry::{Registry, RolloutPlan};
use kiln_registry_server::RegistryApi;
use kiln_registry_server::api::ChangeView;
use kiln_sync::{MlflowPoller, SyncConfig, SyncService};

use super::rollout::PlanArgs;
use crate::lazy_host::LazyHost;
use crate::render::{trim_lines, truncate};

/// The default of `--check-interval`.
const CHECK_INTERVAL_DEFAULT: &str = "1s";

/// Flags of `kiln sync run`.
#[derive(Debug, Args, Clone)]
pub struct SyncRunArgs {
    /// Address of the join/status API nodes talk to.
    #[arg(long, env = "KILN_SYNC_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// A file holding the fixed admin token of nodes that never join (started with the
    /// same --admin-token-file); joined nodes get a credential of their own.
    #[arg(long, env = "KILN_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// The fixed admin token itself (visible in `ps` as a flag: use --admin-token-file or
    /// KILN_ADMIN_TOKEN).
    #[arg(long = "token", env = "KILN_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Let nodes join and read the status without a token. Only on a loopback address,
    /// and said in the log and the status: for trying Kiln on one machine.
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Allow plain HTTP on a non-loopback address (tokens would cross the network in clear
    /// text).
    #[arg(long)]
    pub insecure_plaintext: bool,
    /// A GitOps file (kiln.toml) to apply at start.
    #[arg(long, env = "KILN_SYNC_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// How often a converged node is re-checked and its counters read: 1s.
    #[arg(long, env = "KILN_SYNC_CHECK", default_value = CHECK_INTERVAL_DEFAULT)]
    pub check_interval: String,
    /// Most node operations at once.
    #[arg(long, env = "KILN_SYNC_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// Longest retry delay for a failing node: 10s.
    #[arg(long, env = "KILN_SYNC_BACKOFF_MAX", default_value = "10s")]
    pub backoff_max: String,
    /// POSTed a JSON alert when a rollout is rolled back automatically.
    #[arg(long, env = "KILN_ALERT_WEBHOOK")]
    pub alert_webhook: Option<String>,
    /// An Alertmanager (http://127.0.0.1:9093) to send alerts to: data drift, SLO burn
    /// (with --config's SLOs), rollbacks, failing nodes, failed loads and MLflow imports.
    /// Repeat for an HA pair.
    #[arg(
        long = "alertmanager",
        env = "KILN_ALERTMANAGER",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub alertmanager: Vec<String>,
    /// How often drift, SLOs and node health are evaluated: 60s.
    #[arg(long, env = "KILN_MONITOR_INTERVAL", default_value = "60s")]
    pub monitor_interval: String,
    /// How often active alerts are re-sent to Alertmanager (each says it ends after four
    /// of these unless re-sent): 60s.
    #[arg(long, env = "KILN_ALERT_RESEND", default_value = "60s")]
    pub alert_resend: String,
    /// Default rollout policy for models without their own.
    #[command(flatten)]
    pub policy: PlanArgs,
    /// Watch an MLflow tracking server (http://127.0.0.1:5000) for new versions.
    #[arg(long, env = "KILN_MLFLOW_URI")]
    pub mlflow: Option<String>,
    /// What to watch in MLflow: `alias:champion` or `stage:Production`.
    #[arg(long, env = "KILN_MLFLOW_WATCH", default_value = "alias:champion")]
    pub mlflow_watch: String,
    /// MLflow models to watch (default: all).
    #[arg(long, value_delimiter = ',')]
    pub mlflow_models: Option<Vec<String>>,
    /// How often MLflow is polled: 2s.
    #[arg(long, env = "KILN_MLFLOW_POLL", default_value = "2s")]
    pub mlflow_poll: String,
    /// A directory whose files a run's logged dataset (`local` source) may name, for the
    /// imported version's drift reference; repeatable. Run artifacts are always read.
    #[arg(long = "mlflow-dataset-dir", value_name = "DIR")]
    pub mlflow_dataset_dirs: Vec<PathBuf>,
    /// HTTPS for the join/status API: --tls-cert, --tls-key, --client-ca.
    #[command(flatten)]
    pub tls: crate::tls_args::ServerTlsArgs,
    /// What the service's calls (nodes, MLflow, the alert webhook) trust and present:
    /// --ca-file, --client-cert, --client-key.
    #[command(flatten)]
    pub client_tls: crate::tls_args::ClientTlsArgs,
    /// Connection and request limits of its API: --max-connections, --header-timeout,
    /// --idle-timeout, --request-timeout, --upload-timeout, --max-concurrent-uploads.
    #[command(flatten)]
    pub limits: crate::limits_args::LimitsArgs,
}

impl SyncRunArgs {
    /// The service settings these flags describe.
    pub fn config(&self) -> anyhow::Result<SyncConfig> {
        if let Some(url) = &self.alert_webhook {
            kiln_node_api::check_http_url(url).map_err(|e| anyhow::anyhow!("--alert-webhook {e}"))?;
        }
        for url in &self.alertmanager {
            kiln_node_api::alerts::alerts_url(url).map_err(|e| anyhow::anyhow!("--alertmanager {e}"))?;
        }
        Ok(SyncConfig {
            listen: self.listen,
            token: crate::secrets::secret(
                self.admin_token_file.as_deref(),
                "--admin-token-file",
                self.token.as_deref(),
                "--token",
            )?,
            insecure_no_auth: self.insecure_no_auth,
            check_interval: Duration::from_millis(parse_ms(&self.check_interval)?.max(50)),
            concurrency: self.concurrency.max(1),
            backoff_max: Duration::from_millis(parse_ms(&self.backoff_max)?.max(100)),
            alert_webhook: self.alert_webhook.clone(),
            alertmanager: self.alertmanager.clone(),
            monitor_interval: Duration::from_millis(parse_ms(&self.monitor_interval)?.max(100)),
            alert_resend: Duration::from_millis(parse_ms(&self.alert_resend)?.max(1000)),
            default_policy: self.policy.plan(RolloutPlan::default())?,
            limits: self.limits.limits(),
            ..SyncConfig::default()
        })
    }
}

/// The registry-sync service and the fleet it manages.
#[derive(Debug, Subcommand)]
// `Run`'s flags make it large; the enum is parsed once per process.
#[allow(clippy::large_enum_variant)]
pub enum SyncCommand {
    /// Run the sync service: converge nodes, drive rollouts, accept `kiln serve --join`.
    Run(SyncRunArgs),
    /// The fleet: each node's sync status, and the active rollouts (from the registry); with
    /// `--url`, the running sync service's own view: each node's breaker and retries, its
    /// other clients (MLflow, webhook) and the alerts it sent.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Ask the running sync service (`GET /sync/v1/status`, a viewer token) instead of
        /// the registry.
        #[arg(long, env = "KILN_SYNC_URL")]
        url: Option<String>,
        /// A file holding a registry token for --url (role viewer or above).
        #[arg(
            long = "url-token-file",
            env = "KILN_URL_TOKEN_FILE",
            value_name = "FILE",
            requires = "url"
        )]
        token_file: Option<PathBuf>,
        #[command(flatten)]
        tls: crate::tls_args::ClientTlsArgs,
    },
    /// Add a node the service should manage.
    AddNode {
        name: String,
        /// Its base URL: http://127.0.0.1:8081.
        url: String,
    },
    /// Stop managing a node.
    RemoveNode { name: String },
    /// Let the sync service replace the table of a node that serves a higher routing
    /// generation than its own (pushed by something else, or a registry restored from a
    /// backup): audited; the node takes the service's next push.
    ResetNode { name: String },
    /// Show what applying a GitOps file (kiln.toml) would change, without changing it.
    Plan {
        /// The GitOps file: kiln.toml.
        file: PathBuf,
    },
    /// Make the live state match a GitOps file (kiln.toml); a second apply changes nothing.
    Apply {
        /// The GitOps file: kiln.toml.
        file: PathBuf,
    },
}

fn ago(rfc3339: &Option<String>) -> String {
    let Some(t) = rfc3339
        .as_deref()
        .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
    else {
        return "-".to_string();
    };
    let secs = (time::OffsetDateTime::now_utc() - t).as_seconds_f64().max(0.0);
    if secs < 120.0 {
        format!("{secs:.0}s ago")
    } else if secs < 7200.0 {
        format!("{:.0}m ago", secs / 60.0)
    } else {
        format!("{:.0}h ago", secs / 3600.0)
    }
}

fn nodes_table(nodes: &[NodeRecord], generation: u64) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header([
        "NODE",
        "URL",
        "SOURCE",
        "STATUS",
        "GENERATION",
        "LAST SEEN",
        "FAILING SINCE",
        "LAST ERROR",
    ]);
    for n in nodes {
        let status = if n.status == "converged" && n.applied_generation < generation {
            "pending".to_string()
        } else if n.breaker == "open" {
            format!("{} (breaker open)", n.status)
        } else {
            n.status.clone()
        };
        t.add_row([
            n.name.clone(),
            n.url.clone(),
            format!("{:?}", n.source).to_lowercase(),
            status,
            format!("{}/{generation}", n.applied_generation),
            ago(&n.last_seen),
            n.failing_since.clone().unwrap_or_else(|| "-".into()),
            truncate(n.last_error.as_deref().unwrap_or("-"), 80),
        ]);
    }
    trim_lines(&t.to_string())
}

/// `kiln sync status --url`: the running sync service's view of its nodes, clients and
/// alerts (`GET /sync/v1/status`); `json` prints its answer as is.
pub fn service_status(
    url: &str,
    token_file: Option<&Path>,
    tls: &crate::tls_args::ClientTlsArgs,
    json: bool,
) -> anyhow::Result<String> {
    let text = crate::service_get::get(url, "/sync/v1/status", token_file, tls, "--url")?;
    if json {
        return Ok(text);
    }
    let status: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{url} answered something that is not the sync service's status"))?;
    Ok(render_service_status(url, &status))
}

fn render_service_status(url: &str, status: &serde_json::Value) -> String {
    let count = |v: &serde_json::Value| v.as_u64().unwrap_or_default();
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    let mut out = format!(
        "sync service {url}: generation {}\n",
        count(&status["generation"])
    );
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header([
        "NODE",
        "STATUS",
        "GENERATION",
        "BREAKER",
        "RETRIES",
        "FAILURES",
        "SEEN",
        "LAST ERROR",
    ]);
    for n in status["nodes"].as_array().into_iter().flatten() {
        t.add_row([
            text(&n["node"]),
            text(&n["status"]),
            count(&n["applied_generation"]).to_string(),
            text(&n["breaker"]),
            count(&n["retries"]).to_string(),
            count(&n["failures"]).to_string(),
            n["seen_seconds_ago"]
                .as_f64()
                .map_or("-".into(), |s| format!("{s:.0}s ago")),
            truncate(n["last_error"].as_str().unwrap_or("-"), 80),
        ]);
    }
    out.push_str(&trim_lines(&t.to_string()));
    for c in status["clients"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\nclient {} ({}): breaker {}, {} retries, {} failed calls, {} refused by the breaker",
            text(&c["target"]),
            text(&c["kind"]),
            text(&c["breaker"]),
            count(&c["retries"]),
            count(&c["failed_calls"]),
            count(&c["rejected_calls"])
        ));
    }
    let alerts = &status["alerts"];
    if alerts.is_null() {
        out.push_str("\nalerts: off (no --alertmanager)");
    } else {
        out.push_str(&format!(
            "\nalerts: {} active, {} sent, {} failed posts, {} invalid",
            count(&alerts["active"]),
            count(&alerts["sent"]),
            count(&alerts["failed_posts"]),
            count(&alerts["invalid"])
        ));
        for am in alerts["alertmanagers"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "\n  {}: {} sent, {} failed posts, breaker {}, {} retries{}",
                text(&am["url"]),
                count(&am["sent"]),
                count(&am["failed_posts"]),
                text(&am["target"]["breaker"]),
                count(&am["target"]["retries"]),
                am["last_error"]
                    .as_str()
                    .map_or(String::new(), |e| format!(", last error: {}", truncate(e, 80)))
            ));
        }
    }
    if status["insecure_no_auth"].as_bool() == Some(true) {
        out.push_str("\nwarning: the service runs with --insecure-no-auth");
    }
    out
}

/// Runs a `kiln sync` command other than `run`; returns what to print.
pub fn run(registry: &dyn RegistryApi, cmd: SyncCommand) -> anyhow::Result<String> {
    Ok(match cmd {
        SyncCommand::Run(_) => anyhow::bail!("`kiln sync run` runs through `commands::sync::serve`"),
        SyncCommand::Status { url: Some(_), .. } => {
            anyhow::bail!("`kiln sync status --url` runs through `commands::sync::service_status`")
        }
        SyncCommand::Status { json, .. } => {
            let status = registry.fleet_status()?;
            let (nodes, generation, rollouts) = (&status.nodes, status.generation, &status.rollouts);
            if json {
                serde_json::to_string_pretty(&status)?
            } else {
                let mut out = if nodes.is_empty() {
                    "no nodes: add one with `kiln sync add-node NAME URL` or start `kiln serve --join`"
                        .to_string()
                } else {
                    nodes_table(nodes, generation)
                };
                for r in rollouts {
                    let (w, shadow) = r.current_weight();
                    out.push_str(&format!(
                        "\nrollout {} of {}: {} → {}, {}, {}, {}",
                        r.id,
                        r.model,
                        r.from_version.map_or("-".into(), |v| v.to_string()),
                        r.to_version,
                        r.state,
                        if shadow {
                            "shadow".to_string()
                        } else {
                            format!("{w}%")
                        },
                        r.message
                    ));
                }
                out
            }
        }
        SyncCommand::AddNode { name, url } => {
            if registry.add_node(&name, &url)? {
                format!("node {name} at {url} added; `kiln sync run` converges it")
            } else {
                format!("node {name} at {url} was already there")
            }
        }
        SyncCommand::RemoveNode { name } => {
            if registry.remove_node(&name)? {
                format!("node {name} removed (it keeps serving its last routing table)")
            } else {
                anyhow::bail!("no node named {name}")
            }
        }
        SyncCommand::ResetNode { name } => {
            let reset = registry.reset_node(&name)?;
            format!(
                "node {name}: reset requested by {}; `kiln sync run` replaces its routing table at its next push (`kiln audit log --model _fleet` shows node.reset_done)",
                reset.requested_by
            )
        }
        SyncCommand::Plan { file } => {
            let changes = registry.gitops(&read_gitops(&file)?, false)?;
            if changes.is_empty() {
                format!("no changes: the live state matches {}", file.display())
            } else {
                format!(
                    "{}\n{} change(s); `kiln sync apply {}` makes them",
                    change_lines(&changes),
                    changes.len(),
                    file.display()
                )
            }
        }
        SyncCommand::Apply { file } => {
            let changes = registry.gitops(&read_gitops(&file)?, true)?;
            if changes.is_empty() {
                format!("no changes: the live state matches {}", file.display())
            } else {
                let mut out = format!("applied {} change(s):\n{}", changes.len(), change_lines(&changes));
                for next in changes.iter().filter_map(|c| c.next.as_deref()) {
                    out.push('\n');
                    out.push_str(next);
                }
                out
            }
        }
    })
}

/// A GitOps file's text, checked locally first so a typo is reported with the file's name.
fn read_gitops(file: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the GitOps file {}", file.display()))?;
    gitops::parse(&text).with_context(|| format!("in {}", file.display()))?;
    Ok(text)
}

fn change_lines(changes: &[ChangeView]) -> String {
    changes
        .iter()
        .map(|c| c.text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `kiln sync run`: the registry-sync service until Ctrl-C or SIGTERM. A GitOps file given
/// with `--config` is applied first, and its `[sync]` settings apply where the command
/// line left the defaults.
pub fn serve(host: Arc<LazyHost>, registry: Arc<Registry>, args: &SyncRunArgs) -> anyhow::Result<()> {
    kiln_host::memory::return_large_blocks_to_the_os();
    let mut config = args.config()?;
    config.tls = args.tls.load()?;
    config.client_tls = args.client_tls.load()?;
    if let Some(path) = &args.config {
        let file = gitops::load(path)?;
        let changes = gitops::apply(&registry, &file, &Identity::local().name)?;
        for c in &changes {
            eprintln!("applied {c}");
        }
        apply_file_settings(&mut config, &file.sync, args)?;
        config.slos = file.models.values().filter_map(|m| m.slo.clone()).collect();
    }
    let client_tls = config.client_tls.clone();
    check_listener(&config, args)?;
    if config.insecure_no_auth {
        tracing::warn!(listen = %config.listen, "--insecure-no-auth: nodes join and read the status without a token");
        eprintln!("warning: --insecure-no-auth: nodes join without a token (loopback only)");
    } else if !registry.has_tokens()? {
        eprintln!(
            "no tokens yet: nodes cannot join and the API answers 401. Create a join token with `kiln tokens create --name fleet-join --role node`, and an admin one with `--role admin`"
        );
    }
    let mut service = SyncService::new(registry.clone(), config);
    if let Some(uri) = &args.mlflow {
        let watch = args
            .mlflow_watch
            .parse()
            .map_err(|e| anyhow::anyhow!("--mlflow-watch {e}"))?;
        let source = kiln_mlflow::MlflowSource::new_with_tls(
            kiln_mlflow::MlflowSourceConfig {
                tracking_uri: uri.clone(),
                watch,
                models: args.mlflow_models.clone(),
            },
            &client_tls,
        )?;
        let compiler = host.clone();
        let prepare = move |file: &Path, name: &str, golden: &[serde_json::Value]| {
            crate::register::prepare(&compiler.get()?, file, name, golden)
        };
        let reference = move |component: &[u8], data: &Path, names: Option<&str>| {
            crate::reference::build(&host.get()?, component, data, names)
        };
        let interval = Duration::from_millis(parse_ms(&args.mlflow_poll)?.max(100));
        service = service.with_source(Box::new(
            MlflowPoller::new(source, Box::new(prepare), interval, "mlflow-sync")
                .with_reference(Box::new(reference), args.mlflow_dataset_dirs.clone()),
        ));
    }
    let handle = service.start()?;
    let nodes = registry.nodes()?.len();
    println!(
        "kiln sync ready on {}://{}: managing {nodes} node(s){}",
        args.tls.scheme(),
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
    runtime.block_on(crate::shutdown::shutdown_signal());
    handle.shutdown();
    Ok(())
}

/// Refuses listeners that would let the fleet be steered from the network: joins without
/// authentication anywhere but loopback, and plain HTTP (tokens in clear text) anywhere
/// but loopback unless asked for.
fn check_listener(config: &SyncConfig, args: &SyncRunArgs) -> anyhow::Result<()> {
    if config.insecure_no_auth && !config.listen.ip().is_loopback() {
        anyhow::bail!(
            "refusing --insecure-no-auth on {}: unauthenticated joins are allowed only on a loopback address (127.0.0.1); create a join token with `kiln tokens create --name NAME --role node` instead",
            config.listen
        );
    }
    super::registry::check_plaintext(
        config.listen,
        config.tls.is_some(),
        args.insecure_plaintext,
        "--insecure-plaintext",
    )
}

/// A GitOps file's `[sync]` settings, where the command line left the defaults.
fn apply_file_settings(
    config: &mut SyncConfig,
    file: &gitops::SyncSettings,
    args: &SyncRunArgs,
) -> anyhow::Result<()> {
    if let Some(listen) = file.listen
        && config.listen == SyncConfig::default().listen
    {
        config.listen = listen;
    }
    if config.alert_webhook.is_none() {
        config.alert_webhook = file.alert_webhook.clone();
    }
    if config.alertmanager.is_empty() {
        config.alertmanager = file.alertmanager.clone().unwrap_or_default();
    }
    if let Some(check) = &file.check_interval
        && args.check_interval == CHECK_INTERVAL_DEFAULT
    {
        config.check_interval = Duration::from_millis(parse_ms(check)?.max(50));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_services_status_shows_nodes_clients_and_alert_counters() {
        let status = serde_json::json!({
            "generation": 7,
            "nodes": [{"node": "edge-1", "status": "failing", "applied_generation": 6,
                       "last_error": "connection refused", "failures": 3, "breaker": "open",
                       "retries": 12, "seen_seconds_ago": 4.2}],
            "clients": [{"target": "mlflow", "kind": "mlflow", "breaker": "closed",
                         "consecutive_failures": 0, "retries": 2, "failed_calls": 1,
                         "rejected_calls": 0, "retry_in_ms": 0}],
            "alerts": {"active": 2, "sent": 9, "failed_posts": 1, "invalid": 0,
                       "alertmanagers": [{"url": "http://am:9093/api/v2/alerts", "sent": 9,
                                          "failed_posts": 1, "last_error": "HTTP 503",
                                          "target": {"breaker": "closed", "retries": 4}}]},
            "insecure_no_auth": false
        });
        let shown = render_service_status("http://sync:8090", &status);
        assert!(
            shown.starts_with("sync service http://sync:8090: generation 7"),
            "{shown}"
        );
        let node = shown
            .lines()
            .find(|l| l.starts_with("edge-1"))
            .expect("the node's row");
        for cell in ["failing", "6", "open", "12", "3", "4s ago", "connection refused"] {
            assert!(node.contains(cell), "{cell} in {node}");
        }
        assert!(
            shown.contains("client mlflow (mlflow): breaker closed, 2 retries, 1 failed calls"),
            "{shown}"
        );
        assert!(
            shown.contains("alerts: 2 active, 9 sent, 1 failed posts, 0 invalid"),
            "{shown}"
        );
        assert!(
            shown.contains("  http://am:9093/api/v2/alerts: 9 sent, 1 failed posts, breaker closed, 4 retries, last error: HTTP 503"),
            "{shown}"
        );
        let off = render_service_status(
            "http://s",
            &serde_json::json!({"generation": 1, "nodes": [], "alerts": null}),
        );
        assert!(off.contains("alerts: off (no --alertmanager)"), "{off}");
    }
}
