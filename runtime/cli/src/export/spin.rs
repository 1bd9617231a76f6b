//! `kiln export spin`: a Spin app for what the registry serves (`edge_table`: the fleet's
//! weights and active rollouts, else the Production/champion version). Every version in
//! it (an active canary, a version kept warm at weight 0 for rollback) gets a router
//! slot: its component is copied from the registry's blobs (digest checked) to
//! `models/<name>-<version>.wasm` and bound as a component dependency; the router and
//! `vacant.wasm` are copied beside them; `spin.toml` carries `kiln_models` (slot → name,
//! version, digest) and `kiln_routes` (the registry's routing table: weights, stages,
//! aliases). `spin up` in that directory (or `kiln spin up --from DIR/spin.toml`) then
//! serves the registry's versions, and a re-export after a rollout step moves the weights.

use anyhow::{Context, bail};
use kiln_registry::Registry;
use kiln_spin_host::app::{MODEL_EXPORT, TYPES_INTERFACE};
use std::fmt::Write as _;
use std::path::PathBuf;
use toml_edit::{DocumentMut, Item, Table, value};

/// Slots the router imports (`model-a` … `model-h`, edge-worker/spin/wit/router.wit).
pub const SLOTS: usize = 8;

/// Flags of `kiln export spin`.
#[derive(clap::Args, Debug, Clone)]
pub struct SpinExportArgs {
    /// Directory to write the Spin app into (created if missing).
    #[arg(long, default_value = "spin-app")]
    pub out: PathBuf,
    /// The router component (built by `spin build` or `sh edge-worker/spin/build.sh`).
    #[arg(long, default_value = "target/edge-spin/kiln_spin.wasm")]
    pub router: PathBuf,
    /// The empty model for unused slots (built beside the router).
    #[arg(long, default_value = "target/edge-spin/vacant.wasm")]
    pub vacant: PathBuf,
}

/// One exported version.
#[derive(Debug, Clone)]
pub struct ExportedVersion {
    pub slot: usize,
    pub name: String,
    pub version: u64,
    pub digest: String,
    pub weight: u32,
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    pub versions: Vec<ExportedVersion>,
    pub manifest: PathBuf,
    /// `kiln_models`.
    pub models_var: String,
    /// `kiln_routes`.
    pub routes_var: String,
}

impl Exported {
    /// A short report for the terminal.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        if self.versions.is_empty() {
            s.push_str("the registry serves no model versions: the Spin app will hold no models\n");
        }
        for v in &self.versions {
            let _ = writeln!(
                s,
                "model-{} {:<24} v{:<4} weight {:<4} sha256 {}",
                slot_name(v.slot),
                v.name,
                v.version,
                v.weight,
                v.digest
            );
        }
        let _ = writeln!(
            s,
            "wrote {} (serve it: `spin up --from {0}`, or `kiln spin up --from {0}`)",
            self.manifest.display()
        );
        s
    }
}

/// Writes the Spin app for what `registry` serves into `args.out`.
pub fn export(registry: &Registry, args: &SpinExportArgs) -> anyhow::Result<Exported> {
    // The same table the fleet's nodes get (weights, active rollouts), or the registry's
    // Production/champion target before any sync ran.
    let table =
        kiln_fleet::edge_table(registry).context("computing what the edge should serve from the registry")?;
    let mut versions = Vec::new();
    for (name, routing) in &table.models {
        for r in &routing.versions {
            versions.push(ExportedVersion {
                slot: versions.len(),
                name: name.clone(),
                version: r.version,
                digest: r.digest.clone(),
                weight: r.weight,
            });
        }
    }
    if versions.len() > SLOTS {
        bail!(
            "the registry serves {} versions ({}), but the Spin router has {SLOTS} model slots: archive versions that need not be served",
            versions.len(),
            versions
                .iter()
                .map(|v| format!("{}/{}", v.name, v.version))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let out = &args.out;
    std::fs::create_dir_all(out.join("models")).with_context(|| format!("creating {}", out.display()))?;
    for (from, to) in [(&args.router, "kiln_spin.wasm"), (&args.vacant, "vacant.wasm")] {
        let bytes = std::fs::read(from).with_context(|| {
            format!(
                "reading {}: build the router first (`spin build` or `sh edge-worker/spin/build.sh` in the Kiln repository), or point --router/--vacant at it",
                from.display()
            )
        })?;
        kiln_types::durable::write(&out.join(to), &bytes)?;
    }
    for v in &versions {
        let bytes = registry
            .read_blob(&v.digest)
            .with_context(|| format!("reading the component of {}/{}", v.name, v.version))?;
        let got = kiln_types::digest(&bytes);
        if got != v.digest {
            bail!(
                "the registry's blob for {}/{} has SHA-256 {got}, not {}: refusing to export it",
                v.name,
                v.version,
                v.digest
            );
        }
        kiln_types::durable::write(&out.join(component_path(&v.name, v.version)), &bytes)?;
    }
    let models_var = versions
        .iter()
        .map(|v| {
            format!(
                "model-{}={}@{}#{}",
                slot_name(v.slot),
                v.name,
                v.version,
                v.digest
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let routes_var = serde_json::to_string(&table).context("encoding the routing table")?;
    let manifest = out.join("spin.toml");
    kiln_types::durable::write(
        &manifest,
        manifest_text(&versions, &models_var, &routes_var).as_bytes(),
    )?;
    Ok(Exported {
        versions,
        manifest,
        models_var,
        routes_var,
    })
}

/// The letter of slot `index` (`model-a` is 0): Spin's dependency names are kebab words
/// that must start with a letter.
pub fn slot_name(index: usize) -> char {
    (b'a' + index.min(25) as u8) as char
}

fn component_path(name: &str, version: u64) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("models/{safe}-{version}.wasm")
}

fn manifest_text(versions: &[ExportedVersion], models_var: &str, routes_var: &str) -> String {
    let mut doc = DocumentMut::new();
    doc.decor_mut().set_prefix(
        "# Written by `kiln export spin` from the Kiln registry; export again after a registry\n\
         # change. Serve with `spin up` (Spin 4.x) or `kiln spin up --from this-file`.\n",
    );
    doc["spin_manifest_version"] = value(2);
    let mut application = Table::new();
    application["name"] = value("kiln");
    application["version"] = value("0.1.0");
    doc["application"] = Item::Table(application);

    let default = |v: &str| {
        let mut t = toml_edit::InlineTable::new();
        t.insert("default", v.into());
        value(t)
    };
    let mut variables = Table::new();
    variables["kiln_models"] = default(models_var);
    variables["kiln_routes"] = default(routes_var);
    if let Some(mut key) = variables.key_mut("kiln_routes") {
        key.leaf_decor_mut().set_prefix(
            "# The registry's routing table; override the weights without re-exporting, e.g.\n\
             # SPIN_VARIABLE_KILN_ROUTES='name=1:90,2:10' spin up\n",
        );
    }
    doc["variables"] = Item::Table(variables);

    let mut http = Table::new();
    http["route"] = value("/...");
    http["component"] = value("kiln");
    let mut triggers = toml_edit::ArrayOfTables::new();
    triggers.push(http);
    let mut trigger = Table::new();
    trigger.set_implicit(true);
    trigger["http"] = Item::ArrayOfTables(triggers);
    doc["trigger"] = Item::Table(trigger);

    let mut kiln = Table::new();
    kiln["source"] = value("kiln_spin.wasm");
    let mut component_vars = Table::new();
    component_vars["kiln_models"] = value("{{ kiln_models }}");
    component_vars["kiln_routes"] = value("{{ kiln_routes }}");
    kiln["variables"] = Item::Table(component_vars);
    let mut dependencies = Table::new();
    let mut types = toml_edit::InlineTable::new();
    types.insert("path", "vacant.wasm".into());
    dependencies[TYPES_INTERFACE] = value(types);
    for slot in 0..SLOTS {
        let path = versions
            .iter()
            .find(|v| v.slot == slot)
            .map(|v| component_path(&v.name, v.version))
            .unwrap_or_else(|| "vacant.wasm".to_string());
        let mut dep = toml_edit::InlineTable::new();
        dep.insert("path", path.into());
        dep.insert("export", MODEL_EXPORT.into());
        dependencies[&format!("model-{}", slot_name(slot))] = value(dep);
    }
    kiln["dependencies"] = Item::Table(dependencies);
    let mut component = Table::new();
    component.set_implicit(true);
    component["kiln"] = Item::Table(kiln);
    doc["component"] = Item::Table(component);
    doc.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_manifest_binds_every_slot_and_parses_back() {
        let versions = vec![
            ExportedVersion {
                slot: 0,
                name: "echo".into(),
                version: 1,
                digest: "a".repeat(64),
                weight: 100,
            },
            ExportedVersion {
                slot: 1,
                name: "echo".into(),
                version: 2,
                digest: "b".repeat(64),
                weight: 0,
            },
        ];
        let text = manifest_text(&versions, "model-a=echo@1#x", r#"{"generation":3,"models":{}}"#);
        let m: kiln_spin_host::manifest::Manifest = toml::from_str(&text).unwrap();
        let app = m.http_app(Path::new("/srv")).unwrap();
        assert_eq!(
            app.dependencies.len(),
            SLOTS + 1,
            "eight slots and kiln:model/types"
        );
        let path = |name: &str| app.dependencies.iter().find(|d| d.0 == name).map(|d| d.1.clone());
        assert_eq!(
            path("model-b").as_deref(),
            Some(Path::new("/srv/models/echo-2.wasm"))
        );
        assert_eq!(path("model-h").as_deref(), Some(Path::new("/srv/vacant.wasm")));
        assert_eq!(
            path("kiln:model/types@0.1.0").as_deref(),
            Some(Path::new("/srv/vacant.wasm"))
        );
        assert_eq!(
            m.variables["kiln_routes"].default.as_deref(),
            Some(r#"{"generation":3,"models":{}}"#)
        );
    }
}
