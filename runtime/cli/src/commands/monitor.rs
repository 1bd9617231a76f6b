//! `kiln monitor ...`: reference profiles for drift (`reference set|show`) and the drift of
//! a model's live traffic against its reference (`drift`), as `kiln serve` or the sync
//! service measures it (`GET /monitor/v1/drift/{model}`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use comfy_table::{Table, presets};
use kiln_monitor::drift::ColumnDrift;
use kiln_registry_server::RegistryApi;
use kiln_serve::drift::DriftAnswer;

use crate::lazy_host::LazyHost;
use crate::tls_args::ClientTlsArgs;

/// Drift: reference profiles and the drift of live traffic against them.
#[derive(Debug, Subcommand)]
pub enum MonitorCommand {
    /// A version's reference profile: the data drift is measured against.
    Reference {
        #[command(subcommand)]
        command: ReferenceCommand,
    },
    /// The drift of a model's recent traffic against its reference, by Evidently's default
    /// method per column (a table; `--json` prints the server's answer).
    Drift {
        /// The model.
        model: String,
        /// The version (default: the one taking most of the model's traffic).
        #[arg(long)]
        version: Option<String>,
        /// How far back: 1s to 60m.
        #[arg(long, default_value = "15m")]
        since: String,
        /// `kiln serve` or the sync service.
        #[arg(long, env = "KILN_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// A file holding a bearer token for --url (a reader token of kiln serve, or a
        /// registry token for the sync service).
        #[arg(long = "url-token-file", env = "KILN_URL_TOKEN_FILE", value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        tls: ClientTlsArgs,
    },
}

/// `kiln monitor reference ...`.
#[derive(Debug, Subcommand)]
pub enum ReferenceCommand {
    /// Profile a CSV (with a header), Parquet or .npy file of model inputs as the reference of a
    /// version, with the version's outputs on it (prediction drift): its component is read
    /// from the registry, local or remote (`--registry`), and run here.
    Set {
        /// The version, e.g. iris/2 or iris@champion.
        reference: String,
        /// The reference data: CSV with a header row, Parquet, or .npy (rows × features).
        file: PathBuf,
        /// Feature names, comma-separated (default: the CSV header or Parquet column names,
        /// else f0, f1, …).
        #[arg(long)]
        feature_names: Option<String>,
    },
    /// Show a version's reference profile summary.
    Show {
        /// The version, e.g. iris/2.
        reference: String,
        /// Print the stored record as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `kiln monitor` subcommand; a reference is profiled with the version's outputs
/// on it (its component read from the registry, local or remote, and run here).
pub fn run(registry: &dyn RegistryApi, cmd: MonitorCommand, host: &LazyHost) -> anyhow::Result<String> {
    match cmd {
        MonitorCommand::Reference {
            command:
                ReferenceCommand::Set {
                    reference,
                    file,
                    feature_names,
                },
        } => {
            let version = registry.resolve(&reference)?;
            // Checked against its digest by the registry (a local blob or the download).
            let bytes = registry
                .component(&version.name, version.version)
                .with_context(|| format!("reading the component of {}/{}", version.name, version.version))?;
            let record = crate::reference::build(&host.get()?, &bytes, &file, feature_names.as_deref())?;
            let stored = registry.set_reference(&version.name, version.version, &record)?;
            Ok(format!(
                "reference of {}/{} set: {} rows × {} features from {}, with the version's outputs on them (prediction drift)",
                version.name,
                version.version,
                stored.rows,
                stored.features.len(),
                stored.source
            ))
        }
        MonitorCommand::Reference {
            command: ReferenceCommand::Show { reference, json },
        } => {
            let version = registry.resolve(&reference)?;
            let Some(stored) = registry.reference(&version.name, version.version)? else {
                anyhow::bail!(
                    "{}/{} has no reference profile; set one with `kiln monitor reference set {}/{} data.csv`",
                    version.name,
                    version.version,
                    version.name,
                    version.version
                );
            };
            if json {
                return Ok(serde_json::to_string_pretty(&stored)?);
            }
            let profile: kiln_monitor::model::ModelProfile = serde_json::from_str(&stored.profile)
                .context("the stored reference profile does not parse")?;
            let mut table = Table::new();
            table.load_preset(presets::NOTHING);
            table.set_header(vec!["COLUMN", "ROWS", "MISSING", "MIN", "MEAN", "MAX", "STD"]);
            let inputs = profile
                .inputs
                .iter()
                .flat_map(|t| t.columns().map(|(n, c)| (n.to_string(), c.clone())));
            let named: Vec<_> = inputs
                .enumerate()
                .map(|(i, (n, c))| (stored.features.get(i).cloned().unwrap_or(n), c))
                .chain(
                    profile
                        .outputs
                        .iter()
                        .flat_map(|t| t.columns().map(|(n, c)| (format!("output:{n}"), c.clone()))),
                )
                .collect();
            for (name, c) in named {
                let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
                table.add_row(vec![
                    name,
                    c.count().to_string(),
                    c.missing().to_string(),
                    num(c.min()),
                    num(Some(c.mean())),
                    num(c.max()),
                    num(Some(c.std())),
                ]);
            }
            Ok(format!(
                "{}/{}: {} rows from {}, set {} by {}\n{table}",
                version.name,
                version.version,
                stored.rows,
                stored.source,
                stored.created_at,
                stored.created_by
            ))
        }
        MonitorCommand::Drift {
            model,
            version,
            since,
            url,
            token_file,
            json,
            tls,
        } => {
            let mut path = format!("/monitor/v1/drift/{model}?since={since}");
            if let Some(v) = &version {
                path.push_str(&format!("&version={v}"));
            }
            let text = crate::service_get::get(&url, &path, token_file.as_deref(), &tls, "--url")?;
            if json {
                return Ok(text);
            }
            let answer: DriftAnswer = serde_json::from_str(&text)
                .with_context(|| format!("{url}{path} answered something that is not a drift report"))?;
            Ok(drift_table(&answer))
        }
    }
}

fn drift_table(answer: &DriftAnswer) -> String {
    let r = &answer.report;
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    table.set_header(vec![
        "COLUMN",
        "KIND",
        "METHOD",
        "SCORE",
        "THRESHOLD",
        "DRIFT",
        "PSI",
    ]);
    let row = |c: &ColumnDrift, name: String| {
        vec![
            name,
            format!("{:?}", c.kind).to_lowercase(),
            c.method.id().to_string(),
            format!("{:.4}", c.score),
            format!("{}", c.threshold),
            if c.drift { "DRIFT".into() } else { "no".into() },
            format!("{:.4}", c.psi),
        ]
    };
    for c in &r.features {
        table.add_row(row(c, c.name.clone()));
    }
    for c in &r.outputs {
        table.add_row(row(c, format!("output:{}", c.name)));
    }
    format!(
        "{} version {}: {} rows in the last {} (from {}) against {} reference rows\ndataset drift: {} ({:.0}% of {} features drifted; threshold {:.0}%)\n{table}",
        r.model.as_deref().unwrap_or("?"),
        r.version.as_deref().unwrap_or("?"),
        r.rows,
        answer.since,
        answer.window_start,
        r.reference_rows,
        if r.dataset_drift { "YES" } else { "no" },
        r.drift_share * 100.0,
        r.features.len(),
        r.drift_share_threshold * 100.0
    )
}
