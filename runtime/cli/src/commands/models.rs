//! `kiln models ...`: register, list, show, promote, alias, tag, describe, archive and
//! delete versions, and read their lineage and golden pairs. Testable without wasmtime:
//! the caller passes in `prepare`, the only step that needs to compile or run a model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use comfy_table::{Table, presets};
use kiln_registry::{
    ModelVersion, NewVersion, Prepared, ReferenceProfile, Stage, StageTransition, validate_alias,
    validate_name,
};
use kiln_registry_server::RegistryApi;
use kiln_registry_server::api::Registered;
use kiln_types::format::human_size;
use serde_json::Value;

use crate::render::{compact, or_dash, short_digest, trim_lines, truncate};

/// Register, inspect and promote model versions (`kiln models ...`).
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Register an .onnx model (compiled first) or a component .wasm as a new version.
    ///
    /// Registering the same component again under the same name returns the existing version.
    Register {
        /// The .onnx model or compiled component .wasm.
        file: PathBuf,
        /// Model name: letters, digits, '.', '_', '-' (e.g. house-price).
        #[arg(long)]
        name: String,
        /// Free-text description of this version.
        #[arg(long, default_value = "")]
        description: String,
        /// A tag KEY=VALUE; repeat for more.
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
        /// JSON object with the training lineage (run id, params, metrics, dataset digest, environment).
        #[arg(long, value_name = "FILE.json")]
        lineage: Option<PathBuf>,
        /// A request JSON file to run and record as a golden request/response pair; repeat for more.
        #[arg(long = "golden", value_name = "REQUEST.json")]
        golden: Vec<PathBuf>,
        /// Move the version to this stage right away (Production archives the previous one).
        #[arg(long)]
        stage: Option<Stage>,
        /// Point this alias (e.g. champion) at the version; repeat for more.
        #[arg(long = "alias", value_name = "ALIAS")]
        aliases: Vec<String>,
        /// Reference data for drift: a CSV with a header row, a Parquet file (pandas'
        /// `to_parquet`) or .npy (rows × features) of model inputs; profiled with the
        /// version's outputs on it and stored with it.
        #[arg(long, value_name = "FILE")]
        reference: Option<PathBuf>,
        /// Feature names of --reference, comma-separated (default: its header or Parquet column
        /// names, else f0, f1, …).
        #[arg(long, requires = "reference")]
        feature_names: Option<String>,
        /// Print the version as JSON (with "created": true|false).
        #[arg(long)]
        json: bool,
    },
    /// List model versions (all models, or one).
    List {
        /// Only this model.
        name: Option<String>,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Show one version: NAME/VERSION, NAME/STAGE, NAME/latest (highest not Archived) or NAME@ALIAS.
    Show {
        /// The version to show, e.g. house-price/3, house-price/Production, house-price@champion.
        reference: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move a version to a stage; Production archives the previous Production version by default.
    ///
    /// Stages: None, Staging, Production, Archived (any case). Promoting to Production archives the model's other Production versions unless
    /// --no-archive-existing is given, so one Production version remains. Promoting to
    /// Staging keeps other Staging versions unless --archive-existing is given.
    Promote {
        /// Model name.
        name: String,
        /// Version number.
        version: u64,
        /// Target stage (any case).
        stage: Stage,
        /// Keep other versions in the target stage (default for Production: archive them).
        #[arg(long)]
        no_archive_existing: bool,
        /// Archive other versions in the target stage (default for Staging: keep them).
        #[arg(long, conflicts_with = "no_archive_existing")]
        archive_existing: bool,
    },
    /// Point an alias (e.g. champion, challenger) at a version, or delete it with --delete.
    Alias {
        /// Model name.
        name: String,
        /// Alias: lowercase letters, digits, '_', '-'; not 'latest' or a stage name.
        alias: String,
        /// The version the alias should point at.
        #[arg(required_unless_present = "delete")]
        version: Option<u64>,
        /// Delete the alias instead.
        #[arg(long, conflicts_with = "version")]
        delete: bool,
    },
    /// Set tags KEY=VALUE on a version, or remove them with --delete KEY.
    Tag {
        /// Model name.
        name: String,
        /// Version number.
        version: u64,
        /// Tags to set, KEY=VALUE.
        #[arg(value_name = "KEY=VALUE")]
        tags: Vec<String>,
        /// Tag keys to remove; repeat for more.
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
    /// Replace the description of a version.
    Describe {
        /// Model name.
        name: String,
        /// Version number.
        version: u64,
        /// The new description.
        text: String,
    },
    /// Move a version to Archived (servers stop loading it unless an alias names it).
    Archive {
        /// Model name.
        name: String,
        /// Version number.
        version: u64,
    },
    /// Delete a version (refused for a Production version without --force).
    ///
    /// Its aliases go with it; its number is never reused.
    Delete {
        /// Model name.
        name: String,
        /// Version number.
        version: u64,
        /// Delete even a Production version.
        #[arg(long)]
        force: bool,
    },
    /// Print the lineage JSON of a version.
    Lineage {
        /// The version, e.g. house-price/3 or house-price@champion.
        reference: String,
    },
    /// Print the golden request/response pairs of a version.
    Golden {
        /// The version, e.g. house-price/3 or house-price@champion.
        reference: String,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `kiln models` subcommand and returns the text to print.
#[allow(clippy::type_complexity)] // spelled out so the binary's closure needs no named type
pub fn run(
    registry: &dyn RegistryApi,
    cmd: ModelsCommand,
    prepare: &dyn Fn(&Path, &str, &[Value]) -> anyhow::Result<Prepared>,
    reference: &dyn Fn(&[u8], &Path, Option<&str>) -> anyhow::Result<ReferenceProfile>,
) -> anyhow::Result<String> {
    match cmd {
        ModelsCommand::Register {
            file,
            name,
            description,
            tags,
            lineage,
            golden,
            stage,
            aliases,
            reference: reference_file,
            feature_names,
            json,
        } => {
            validate_name(&name)?;
            for alias in &aliases {
                validate_alias(alias)?;
            }
            let tags = tags
                .iter()
                .map(|t| parse_tag(t))
                .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
            let lineage = match lineage {
                Some(path) => {
                    let value = read_json(&path, "lineage")?;
                    if !value.is_object() {
                        bail!("lineage file {} must hold a JSON object", path.display());
                    }
                    value
                }
                None => Value::Object(Default::default()),
            };
            let requests = golden
                .iter()
                .map(|path| read_json(path, "golden request"))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let prepared = prepare(&file, &name, &requests)
                .with_context(|| format!("preparing {} for registration", file.display()))?;
            // Built before anything is stored, so a bad reference file registers nothing.
            let reference_record = reference_file
                .as_deref()
                .map(|path| reference(&prepared.component, path, feature_names.as_deref()))
                .transpose()?;
            let Registered { mut version, created } = registry.register(NewVersion {
                name: name.clone(),
                component: prepared.component,
                source_digest: prepared.source_digest,
                description,
                tags,
                lineage,
                signature: prepared.signature,
                golden: prepared.golden,
            })?;
            let mut out = if created {
                format!(
                    "registered {} version {} (digest sha256:{}…, {})",
                    version.name,
                    version.version,
                    short_digest(&version.digest),
                    human_size(version.size)
                )
            } else {
                format!(
                    "{} version {} already holds this component (digest sha256:{}…)",
                    version.name,
                    version.version,
                    short_digest(&version.digest)
                )
            };
            if let Some(record) = &reference_record {
                let stored = registry.set_reference(&name, version.version, record)?;
                out.push_str(&format!(
                    "\nreference for drift: {} rows × {} features from {}",
                    stored.rows,
                    stored.features.len(),
                    stored.source
                ));
            }
            if let Some(stage) = stage {
                let t = registry.transition(&name, version.version, stage, stage == Stage::Production)?;
                out.push('\n');
                out.push_str(&describe_transition(&t));
                version = t.version;
            }
            for alias in &aliases {
                version = registry.set_alias(&name, alias, version.version)?;
                out.push_str(&format!("\nalias {alias} → {} version {}", name, version.version));
            }
            if json {
                let mut value = serde_json::to_value(&version)?;
                value["created"] = Value::Bool(created);
                return Ok(serde_json::to_string_pretty(&value)?);
            }
            Ok(out)
        }
        ModelsCommand::List { name, json } => {
            let versions = registry.list(name.as_deref())?;
            if json {
                return Ok(serde_json::to_string_pretty(&versions)?);
            }
            if versions.is_empty() {
                return Ok(match name {
                    Some(name) => format!("no versions of model '{name}'"),
                    None => "no models registered; add one with `kiln models register FILE --name NAME`"
                        .to_string(),
                });
            }
            Ok(versions_table(&versions))
        }
        ModelsCommand::Show { reference, json } => {
            let version = registry.resolve(&reference)?;
            if json {
                return Ok(serde_json::to_string_pretty(&version)?);
            }
            let golden = registry.golden(&version.name, version.version)?;
            Ok(show_version(&version, golden.len()))
        }
        ModelsCommand::Promote {
            name,
            version,
            stage,
            no_archive_existing,
            archive_existing,
        } => {
            let archive = if stage == Stage::Production {
                !no_archive_existing
            } else {
                archive_existing
            };
            let t = registry.transition(&name, version, stage, archive)?;
            Ok(describe_transition(&t))
        }
        ModelsCommand::Alias {
            name,
            alias,
            version,
            delete,
        } => {
            let previous = registry
                .resolve(&format!("{name}@{alias}"))
                .ok()
                .map(|v| v.version);
            match (delete, version) {
                (true, _) => {
                    registry.delete_alias(&name, &alias)?;
                    let was = previous
                        .map(|v| format!(" (was version {v})"))
                        .unwrap_or_default();
                    Ok(format!("deleted alias {alias} of {name}{was}"))
                }
                (false, Some(version)) => {
                    registry.set_alias(&name, &alias, version)?;
                    let was = match previous {
                        Some(v) if v != version => format!(" (was version {v})"),
                        Some(_) => " (unchanged)".to_string(),
                        None => String::new(),
                    };
                    Ok(format!("alias {alias} → {name} version {version}{was}"))
                }
                (false, None) => bail!("give the VERSION the alias should point at, or --delete"),
            }
        }
        ModelsCommand::Tag {
            name,
            version,
            tags,
            delete,
        } => {
            if tags.is_empty() && delete.is_empty() {
                bail!("nothing to do: give tags as KEY=VALUE and/or --delete KEY");
            }
            let tags = tags
                .iter()
                .map(|t| parse_tag(t))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut out = Vec::new();
            for (key, value) in tags {
                registry.set_tag(&name, version, &key, &value)?;
                out.push(format!("{name} version {version}: tag {key}={value}"));
            }
            for key in delete {
                registry.delete_tag(&name, version, &key)?;
                out.push(format!("{name} version {version}: removed tag {key}"));
            }
            Ok(out.join("\n"))
        }
        ModelsCommand::Describe { name, version, text } => {
            registry.describe(&name, version, &text)?;
            Ok(format!("{name} version {version}: description updated"))
        }
        ModelsCommand::Archive { name, version } => {
            let t = registry.transition(&name, version, Stage::Archived, false)?;
            Ok(describe_transition(&t))
        }
        ModelsCommand::Delete { name, version, force } => {
            registry.delete_version(&name, version, force)?;
            Ok(format!("deleted {name} version {version}"))
        }
        ModelsCommand::Lineage { reference } => {
            let version = registry.resolve(&reference)?;
            Ok(serde_json::to_string_pretty(&version.lineage)?)
        }
        ModelsCommand::Golden { reference, json } => {
            let version = registry.resolve(&reference)?;
            let pairs = registry.golden(&version.name, version.version)?;
            if json {
                return Ok(serde_json::to_string_pretty(&pairs)?);
            }
            if pairs.is_empty() {
                return Ok(format!(
                    "{} version {} has no golden pairs (record some with `kiln models register ... --golden REQUEST.json`)",
                    version.name, version.version
                ));
            }
            let mut out = Vec::new();
            for (i, pair) in pairs.iter().enumerate() {
                out.push(format!(
                    "#{}\n  request:  {}\n  response: {}",
                    i + 1,
                    pair.request,
                    pair.response
                ));
            }
            Ok(out.join("\n"))
        }
    }
}

fn parse_tag(text: &str) -> anyhow::Result<(String, String)> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => bail!("invalid tag '{text}': use KEY=VALUE"),
    }
}

fn read_json(path: &Path, what: &str) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {what} file {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{what} file {} is not valid JSON", path.display()))
}

fn describe_transition(t: &StageTransition) -> String {
    let v = &t.version;
    let mut out = if t.previous == v.stage {
        format!("{} version {} is already in {}", v.name, v.version, v.stage)
    } else {
        format!("{} version {}: {} → {}", v.name, v.version, t.previous, v.stage)
    };
    if !t.archived.is_empty() {
        let list: Vec<String> = t.archived.iter().map(u64::to_string).collect();
        let noun = if t.archived.len() == 1 {
            "version"
        } else {
            "versions"
        };
        out.push_str(&format!(" (archived {noun} {})", list.join(", ")));
    }
    out
}

fn versions_table(versions: &[ModelVersion]) -> String {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    table.set_header([
        "NAME",
        "VERSION",
        "STAGE",
        "ALIASES",
        "DIGEST",
        "CREATED",
        "DESCRIPTION",
    ]);
    for v in versions {
        table.add_row([
            v.name.clone(),
            v.version.to_string(),
            v.stage.to_string(),
            v.aliases.join(","),
            short_digest(&v.digest).to_string(),
            v.created_at.clone(),
            truncate(&v.description, 48),
        ]);
    }
    trim_lines(&table.to_string())
}

fn show_version(v: &ModelVersion, golden_pairs: usize) -> String {
    let tags: Vec<String> = v.tags.iter().map(|(k, val)| format!("{k}={val}")).collect();
    let mut lines = vec![
        format!("{} version {}", v.name, v.version),
        format!("  stage:        {}", v.stage),
        format!("  aliases:      {}", or_dash(&v.aliases.join(", "))),
        format!("  digest:       sha256:{}", v.digest),
        format!("  size:         {}", human_size(v.size)),
    ];
    if let Some(source) = &v.source_digest {
        lines.push(format!("  source onnx:  sha256:{source}"));
    }
    lines.extend([
        format!("  created:      {}", v.created_at),
        format!("  description:  {}", or_dash(&v.description)),
        format!("  tags:         {}", or_dash(&tags.join(", "))),
        format!("  lineage:      {}", truncate(&compact(&v.lineage), 100)),
        format!("  signature:    {}", truncate(&compact(&v.signature), 100)),
        format!("  golden pairs: {golden_pairs}"),
    ]);
    lines.join("\n")
}
