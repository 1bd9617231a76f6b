//! The part of a Spin manifest (`spin_manifest_version = 2`) that `kiln spin up` runs: the
//! application variables, the HTTP trigger's component, its source, its variables and its
//! component dependencies (local paths only, as `kiln spin build` and `kiln export spin`
//! write them).

use anyhow::{Context, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A parsed `spin.toml`.
#[derive(Debug, Deserialize)]
pub struct Manifest {
    /// Must be 2.
    pub spin_manifest_version: u32,
    /// `[application]`.
    pub application: Application,
    /// `[variables]`: the application variables.
    #[serde(default)]
    pub variables: BTreeMap<String, Variable>,
    /// `[[trigger.http]]` and other triggers.
    #[serde(default)]
    pub trigger: BTreeMap<String, Vec<Trigger>>,
    /// `[component.<id>]`.
    #[serde(default)]
    pub component: BTreeMap<String, Component>,
}

/// `[application]`.
#[derive(Debug, Deserialize)]
pub struct Application {
    /// The app's name.
    pub name: String,
    /// The app's version.
    #[serde(default)]
    pub version: Option<String>,
}

/// An application variable.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Variable {
    /// Value when no provider has one.
    #[serde(default)]
    pub default: Option<String>,
    /// Refuse to start without a value.
    #[serde(default)]
    pub required: bool,
    /// Never logged.
    #[serde(default)]
    pub secret: bool,
}

/// One trigger entry (`[[trigger.http]]`).
#[derive(Debug, Deserialize)]
pub struct Trigger {
    /// The route (`/...` for everything).
    #[serde(default)]
    pub route: Option<String>,
    /// The component that handles it.
    pub component: String,
}

/// `[component.<id>]`.
#[derive(Debug, Deserialize)]
pub struct Component {
    /// Path of the component's Wasm, relative to the manifest.
    pub source: String,
    /// Component variables: templates over application variables (`"{{ name }}"`).
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Component dependencies.
    #[serde(default)]
    pub dependencies: BTreeMap<String, Dependency>,
}

/// A component dependency.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Dependency {
    /// `{ path = "...", export = "..." }`.
    Local {
        /// Path of the dependency's Wasm, relative to the manifest.
        path: String,
        /// Which export of it fills the import.
        #[serde(default)]
        export: Option<String>,
    },
    /// A registry package; Kiln does not fetch those.
    Other(toml::Value),
}

/// The HTTP component of a manifest, with paths resolved against the manifest's folder.
#[derive(Debug)]
pub struct HttpApp {
    /// The app's name.
    pub name: String,
    /// The component id.
    pub component_id: String,
    /// The route it serves.
    pub route: String,
    /// The component's Wasm.
    pub source: PathBuf,
    /// Its variables (templates).
    pub component_variables: BTreeMap<String, String>,
    /// The application variables.
    pub variables: BTreeMap<String, Variable>,
    /// Import name → dependency Wasm and the export that fills the import.
    pub dependencies: Vec<(String, PathBuf, Option<String>)>,
}

impl Manifest {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> anyhow::Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the Spin manifest {}", path.display()))?;
        let manifest: Manifest =
            toml::from_str(&text).with_context(|| format!("parsing the Spin manifest {}", path.display()))?;
        if manifest.spin_manifest_version != 2 {
            bail!(
                "{}: spin_manifest_version is {}, Kiln reads version 2",
                path.display(),
                manifest.spin_manifest_version
            );
        }
        Ok(manifest)
    }

    /// The component behind the (single) HTTP trigger, paths resolved against `base`.
    pub fn http_app(&self, base: &Path) -> anyhow::Result<HttpApp> {
        let triggers = self.trigger.get("http").map(Vec::as_slice).unwrap_or_default();
        let trigger = match triggers {
            [t] => t,
            [] => bail!("the manifest has no [[trigger.http]]"),
            _ => bail!(
                "the manifest has {} HTTP triggers; `kiln spin up` serves one component (the Kiln router)",
                triggers.len()
            ),
        };
        let component = self.component.get(&trigger.component).with_context(|| {
            format!(
                "[[trigger.http]] names component {:?}, which has no [component.{}]",
                trigger.component, trigger.component
            )
        })?;
        let mut dependencies = Vec::new();
        for (name, dep) in &component.dependencies {
            match dep {
                Dependency::Local { path, export } => {
                    dependencies.push((name.clone(), base.join(path), export.clone()))
                }
                Dependency::Other(_) => bail!(
                    "dependency {name:?} of component {:?} is not a local `path`: `kiln spin up` binds local components only",
                    trigger.component
                ),
            }
        }
        Ok(HttpApp {
            name: self.application.name.clone(),
            component_id: trigger.component.clone(),
            route: trigger.route.clone().unwrap_or_else(|| "/...".into()),
            source: base.join(&component.source),
            component_variables: component.variables.clone(),
            variables: self.variables.clone(),
            dependencies,
        })
    }
}
