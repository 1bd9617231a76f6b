//! `kiln slo ...`: the service level objectives of kiln.toml's `[models.NAME.slo]` tables,
//! as Prometheus rules (`rules`) and as attainment and error budget from the nodes'
//! counters (`report`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use comfy_table::{Table, presets};
use kiln_monitor::slo::{self, ModelCounters, Slo, SloReport};

use crate::tls_args::ClientTlsArgs;

/// Service level objectives: Prometheus burn-rate rules and an error-budget report.
#[derive(Debug, Subcommand)]
pub enum SloCommand {
    /// Write Prometheus recording and multi-window multi-burn-rate alerting rules for every
    /// SLO in the GitOps file (check them with `promtool check rules`).
    Rules {
        /// The GitOps file whose `[models.NAME.slo]` tables declare the SLOs.
        #[arg(long, default_value = "kiln.toml", env = "KILN_GITOPS_FILE")]
        file: PathBuf,
        /// Write the rules to this file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Each SLO's attainment and error budget remaining, from the nodes' `/metrics`
    /// counters summed over the fleet (counted since each node started).
    Report {
        /// The GitOps file whose `[models.NAME.slo]` tables declare the SLOs.
        #[arg(long, default_value = "kiln.toml", env = "KILN_GITOPS_FILE")]
        file: PathBuf,
        /// A node's metrics URL (repeatable); default: `/metrics` of every `[[nodes]]` entry
        /// of the file, else http://127.0.0.1:8080/metrics.
        #[arg(long = "metrics", value_name = "URL")]
        metrics: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        tls: ClientTlsArgs,
    },
}

/// Runs a `kiln slo` subcommand; returns what to print.
pub fn run(cmd: SloCommand) -> anyhow::Result<String> {
    match cmd {
        SloCommand::Rules { file, out } => {
            let slos = slos(&file)?;
            let text = slo::rules(&slos, kiln_serve::metrics::BUCKETS)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("in {}", file.display()))?;
            match out {
                Some(path) => {
                    kiln_types::durable::write(&path, text.as_bytes())
                        .with_context(|| format!("writing {}", path.display()))?;
                    Ok(format!(
                        "wrote the rules of {} SLO(s) to {} (check them with `promtool check rules {}`)",
                        slos.len(),
                        path.display(),
                        path.display()
                    ))
                }
                None => Ok(text),
            }
        }
        SloCommand::Report {
            file,
            metrics,
            json,
            tls,
        } => {
            let gitops = kiln_fleet::gitops::load(&file)?;
            let slos = declared(&gitops);
            if slos.is_empty() {
                anyhow::bail!(
                    "{} declares no SLO: add a [models.NAME.slo] table",
                    file.display()
                );
            }
            let urls = if metrics.is_empty() {
                let from_nodes: Vec<String> = gitops
                    .nodes
                    .iter()
                    .map(|n| format!("{}/metrics", n.url))
                    .collect();
                if from_nodes.is_empty() {
                    vec!["http://127.0.0.1:8080/metrics".to_string()]
                } else {
                    from_nodes
                }
            } else {
                metrics
            };
            let agent: ureq::Agent = tls
                .load()?
                .agent_config()
                .http_status_as_error(false)
                .timeout_global(Some(std::time::Duration::from_secs(10)))
                .build()
                .into();
            let mut fleet: Vec<ModelCounters> = Vec::new();
            for url in &urls {
                kiln_node_api::check_http_url(url).map_err(|e| anyhow::anyhow!("--metrics {e}"))?;
                let mut resp = agent.get(url).call().with_context(|| format!("reading {url}"))?;
                let text = resp
                    .body_mut()
                    .with_config()
                    .limit(64 << 20)
                    .read_to_string()
                    .with_context(|| format!("reading {url}"))?;
                if resp.status() != 200 {
                    anyhow::bail!(
                        "{url} answered HTTP {}: {}",
                        resp.status(),
                        text.chars().take(300).collect::<String>()
                    );
                }
                let counters =
                    slo::counters_from_exposition(&text).map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
                for c in counters {
                    match fleet.iter_mut().find(|f| f.model == c.model) {
                        Some(sum) => sum.add(&c),
                        None => fleet.push(c),
                    }
                }
            }
            let reports = slo::report(&slos, &fleet).map_err(|e| anyhow::anyhow!("{e}"))?;
            if json {
                return Ok(serde_json::to_string_pretty(&reports)?);
            }
            Ok(format!(
                "{}\nfrom the counters of {} (since each process started)",
                report_table(&reports),
                urls.join(", ")
            ))
        }
    }
}

/// The SLOs a GitOps file declares, in model order.
fn slos(file: &Path) -> anyhow::Result<Vec<Slo>> {
    let gitops = kiln_fleet::gitops::load(file)?;
    let slos = declared(&gitops);
    if slos.is_empty() {
        anyhow::bail!(
            "{} declares no SLO: add a table such as\n\n[models.iris.slo]\navailability = 0.999\nlatency = {{ threshold = \"50ms\", objective = 0.99 }}\nwindow = \"30d\"",
            file.display()
        );
    }
    Ok(slos)
}

fn declared(gitops: &kiln_fleet::gitops::GitopsFile) -> Vec<Slo> {
    gitops.models.values().filter_map(|m| m.slo.clone()).collect()
}

fn report_table(reports: &[SloReport]) -> String {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    table.set_header(vec![
        "MODEL",
        "SLO",
        "OBJECTIVE",
        "WINDOW",
        "REQUESTS",
        "BAD",
        "ATTAINMENT",
        "BUDGET LEFT",
        "STATUS",
    ]);
    for r in reports {
        let slo = match r.threshold_seconds {
            Some(t) => format!(
                "{} ≤ {}",
                r.slo.as_str(),
                slo::format_duration(std::time::Duration::from_secs_f64(t))
            ),
            None => r.slo.as_str().to_string(),
        };
        table.add_row(vec![
            r.model.clone(),
            slo,
            format!("{}%", trim_percent(r.objective * 100.0)),
            r.window.clone(),
            r.total.to_string(),
            r.bad.to_string(),
            r.attainment
                .map_or("-".into(), |a| format!("{}%", trim_percent(a * 100.0))),
            r.budget_remaining
                .map_or("-".into(), |b| format!("{:.1}%", b * 100.0)),
            r.status.as_str().to_string(),
        ]);
    }
    table.to_string()
}

/// A percentage with as many decimals as it needs, up to four: `99.9`, `99.95`, `100`.
fn trim_percent(p: f64) -> String {
    let text = format!("{p:.4}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}
