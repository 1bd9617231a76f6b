//! `kiln export cloudflare`: the Cloudflare Worker's desired state from the registry. For
//! every version the registry serves (its Production version, an active canary, a
//! version kept warm for rollback) it writes the model bundle the component carries to
//! `models/<name>.v<version>.kmdl`, the module that imports them as data modules
//! (`models/kiln-models.mjs`), and the Worker's variables into `wrangler.toml`:
//! `KILN_MODELS` (each bundle's SHA-256, which the Worker checks before loading it) and
//! `KILN_ROUTES` (the registry's weights, stages and aliases). Deploying the directory
//! (`wrangler deploy`) then makes a registry rollout reach the Worker.

use anyhow::Context;
use kiln_cloudflare::manifest::{self, ModelEntry};
use kiln_node_api::RoutingTable;
use kiln_registry::Registry;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Flags of `kiln export cloudflare`.
#[derive(clap::Args, Debug, Clone)]
pub struct CloudflareArgs {
    /// The Worker's directory (holding its wrangler.toml).
    #[arg(long, default_value = "edge-worker/cloudflare")]
    pub out: PathBuf,
}

/// One exported bundle.
#[derive(Debug, Clone)]
pub struct ExportedBundle {
    pub entry: ModelEntry,
    pub weight: u32,
    pub bytes: usize,
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    pub bundles: Vec<ExportedBundle>,
    /// `KILN_MODELS`.
    pub models_var: String,
    /// `KILN_ROUTES`.
    pub routes_var: String,
    pub wrangler_toml: PathBuf,
}

impl Exported {
    /// A short report for the terminal.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        if self.bundles.is_empty() {
            s.push_str("the registry serves no model versions: the Worker will hold no models\n");
        }
        for b in &self.bundles {
            s.push_str(&format!(
                "{:<24} v{:<4} weight {:<4} {:>10} bytes  sha256 {}\n",
                b.entry.name,
                b.entry.version,
                b.weight,
                b.bytes,
                &b.entry.sha256[..16]
            ));
        }
        s.push_str(&format!(
            "wrote {} bundle(s) to {} and KILN_MODELS / KILN_ROUTES to {}\n",
            self.bundles.len(),
            self.wrangler_toml
                .parent()
                .unwrap_or(Path::new("."))
                .join(manifest::MODULE_DIR)
                .display(),
            self.wrangler_toml.display()
        ));
        s
    }
}

/// The routing table edges should serve: the fleet's weights and active rollouts, else
/// each model's serving version (Production, else `champion`).
fn desired_table(registry: &Registry) -> anyhow::Result<RoutingTable> {
    kiln_fleet::edge_table(registry).context("computing what the registry serves")
}

/// Writes the Worker's desired state into `out` (which must hold its `wrangler.toml`).
pub fn export(registry: &Registry, out: &Path) -> anyhow::Result<Exported> {
    let wrangler_toml = out.join("wrangler.toml");
    let toml_text = std::fs::read_to_string(&wrangler_toml).with_context(|| {
        format!(
            "reading {}: --out must be the Worker's directory (edge-worker/cloudflare), which holds its wrangler.toml",
            wrangler_toml.display()
        )
    })?;
    let table = desired_table(registry)?;
    let models_dir = out.join(manifest::MODULE_DIR);
    std::fs::create_dir_all(&models_dir).with_context(|| format!("creating {}", models_dir.display()))?;

    let mut bundles = Vec::new();
    for (name, routing) in &table.models {
        for v in &routing.versions {
            let component = registry
                .read_blob(&v.digest)
                .with_context(|| format!("reading {name} version {} ({})", v.version, v.digest))?;
            let encoded = kiln_types::bundle::encoded_from_component(&component).with_context(|| {
                format!(
                    "{name} version {}: taking the model bundle out of its component",
                    v.version
                )
            })?;
            let entry = ModelEntry {
                name: name.clone(),
                version: v.version,
                sha256: kiln_types::digest(encoded),
            };
            kiln_types::durable::write(&models_dir.join(entry.file_name()), encoded)?;
            bundles.push(ExportedBundle {
                entry,
                weight: v.weight,
                bytes: encoded.len(),
            });
        }
    }
    let entries: Vec<ModelEntry> = bundles.iter().map(|b| b.entry.clone()).collect();
    remove_stale_bundles(&models_dir, &entries)?;
    kiln_types::durable::write(
        &models_dir.join("kiln-models.mjs"),
        manifest::bundles_module(&entries, "./").as_bytes(),
    )?;

    let models_var = manifest::to_text(&entries);
    // The routing table's JSON keeps stages and aliases, so `model_version: "Production"`
    // selects on the Worker as on `kiln serve`; the Worker's routes parser reads it.
    let routes_var = if table.models.is_empty() {
        String::new()
    } else {
        serde_json::to_string(&RoutingTable {
            generation: table.generation,
            models: table.models.clone(),
            readers: Vec::new(),
        })?
    };
    let new_toml = with_vars(&toml_text, &models_var, &routes_var)
        .with_context(|| format!("updating {}", wrangler_toml.display()))?;
    kiln_types::durable::write(&wrangler_toml, new_toml.as_bytes())?;
    Ok(Exported {
        bundles,
        models_var,
        routes_var,
        wrangler_toml,
    })
}

fn remove_stale_bundles(dir: &Path, keep: &[ModelEntry]) -> anyhow::Result<()> {
    let keep: BTreeSet<String> = keep.iter().map(ModelEntry::file_name).collect();
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".kmdl") && !keep.contains(&name) {
            std::fs::remove_file(e.path()).with_context(|| format!("removing {}", e.path().display()))?;
        }
    }
    Ok(())
}

/// `wrangler.toml` with `[vars]` `KILN_MODELS` and `KILN_ROUTES` set; everything else in
/// the file (other variables, comments, layout) is kept.
pub fn with_vars(text: &str, models_var: &str, routes_var: &str) -> anyhow::Result<String> {
    let mut doc: toml_edit::DocumentMut = text.parse().context("it is not valid TOML")?;
    let vars = doc
        .entry("vars")
        .or_insert_with(toml_edit::table)
        .as_table_mut()
        .context("its `vars` is not a table")?;
    vars[manifest::MODELS_VAR] = toml_edit::value(models_var);
    vars[manifest::ROUTES_VAR] = toml_edit::value(routes_var);
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vars_are_set_in_place_and_added_when_missing() {
        let base = "name = \"w\"\n\n[build]\ncommand = \"./build.sh\"\n";
        let once = with_vars(base, "a@1=ab", "").unwrap();
        assert!(once.starts_with(base), "{once}");
        let twice = with_vars(&once, "b@2=cd", "{\"x\":\"y\"}").unwrap();
        assert_eq!(twice.matches("[vars]").count(), 1, "{twice}");
        let parsed: toml::Value = toml::from_str(&twice).unwrap();
        assert_eq!(parsed["vars"]["KILN_MODELS"].as_str(), Some("b@2=cd"));
        assert_eq!(parsed["vars"]["KILN_ROUTES"].as_str(), Some("{\"x\":\"y\"}"));
        // The Worker's own wrangler.toml: its comments and other variables survive.
        let own = "[vars]\n# bundles\nKILN_MODELS = \"\"\nOTHER = \"kept\"\n";
        let updated = with_vars(own, "m@1=ff", "").unwrap();
        assert!(
            updated.contains("# bundles\nKILN_MODELS = \"m@1=ff\""),
            "{updated}"
        );
        assert!(updated.contains("OTHER = \"kept\""), "{updated}");
        assert!(with_vars("vars = 3\n", "", "").is_err());
        assert!(with_vars("[vars\n", "", "").is_err());
    }
}
