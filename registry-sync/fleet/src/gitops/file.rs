//! The `kiln.toml` format: parsed with serde (unknown keys are errors that name the key and
//! line), then checked on its own, before any registry is involved, so that a typo fails
//! in `kiln sync plan` on a laptop and not halfway through an apply.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

use kiln_node_api::check_http_url;
use kiln_registry::fleet::validate_node_name;
use kiln_registry::{PlanOverrides, RolloutPlan, validate_name};

/// A parsed and checked GitOps file: the desired nodes and models.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GitopsFile {
    /// Settings of `kiln sync run` (the binary applies them; plan/apply ignore them).
    pub sync: SyncSettings,
    /// The nodes the file manages, in file order.
    pub nodes: Vec<NodeSpec>,
    /// The models the file manages, by name. Models not named here are left alone.
    pub models: BTreeMap<String, ModelSpec>,
}

/// The `[sync]` table: settings of `kiln sync run`, all optional.
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SyncSettings {
    /// Address of the join/status API: `127.0.0.1:7070`.
    pub listen: Option<SocketAddr>,
    /// POSTed a JSON alert when a rollout is rolled back automatically.
    pub alert_webhook: Option<String>,
    /// Alertmanagers to send alerts to: `["http://127.0.0.1:9093"]`.
    pub alertmanager: Option<Vec<String>>,
    /// How often a converged node is re-checked: `1s` (checked to parse as a duration).
    pub check_interval: Option<String>,
}

/// One `[[nodes]]` entry.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    /// Base URL without a trailing slash, as the registry stores it.
    pub url: String,
}

/// One `[models.NAME]` table, checked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelSpec {
    /// The Production version (None: the file does not set it).
    pub version: Option<u64>,
    /// The rollout policy a Production change starts (None: the service default).
    pub rollout: Option<RolloutPlan>,
    /// Static weights by version; they replace rollouts for the model.
    pub weights: Option<BTreeMap<u64, u32>>,
    /// A version that gets a copy of the traffic.
    pub shadow: Option<u64>,
    /// The nodes that serve the model, sorted (None: every node).
    pub nodes: Option<Vec<String>>,
    /// Its bulkhead and fallback on the nodes (None: the nodes' own settings).
    pub serving: Option<kiln_node_api::ServingPolicy>,
    /// Its service level objectives (`kiln slo rules`, `kiln slo report`), with `model` set.
    pub slo: Option<kiln_monitor::slo::Slo>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    sync: SyncSettings,
    #[serde(default)]
    nodes: Vec<NodeSpec>,
    #[serde(default)]
    models: BTreeMap<String, RawModel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    version: Option<u64>,
    /// The same knobs as the `kiln rollout start` flags, spelled with underscores.
    rollout: Option<PlanOverrides>,
    /// TOML keys are strings: `{ "3" = 90, "4" = 10 }`.
    weights: Option<BTreeMap<String, u32>>,
    shadow: Option<u64>,
    nodes: Option<Vec<String>>,
    /// `{ max_concurrency = 4, max_queue = 32, fallback = "previous" }`.
    serving: Option<kiln_node_api::ServingPolicy>,
    /// `[models.NAME.slo]`: `availability = 0.999`, `latency = { threshold = "50ms",
    /// objective = 0.99 }`, `window = "30d"` (values checked while parsing).
    slo: Option<kiln_monitor::slo::Slo>,
}

/// Reads and checks a GitOps file; errors name the file and the offending key.
pub fn load(path: &Path) -> anyhow::Result<GitopsFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the GitOps file {}", path.display()))?;
    parse(&text).with_context(|| format!("in {}", path.display()))
}

/// Parses and checks the text of a GitOps file.
pub fn parse(text: &str) -> anyhow::Result<GitopsFile> {
    let raw: RawFile = toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
    let mut problems = Vec::new();

    if let Some(url) = &raw.sync.alert_webhook
        && let Err(e) = check_http_url(url)
    {
        problems.push(format!("sync.alert_webhook: {e}"));
    }
    for url in raw.sync.alertmanager.iter().flatten() {
        if let Err(e) = check_http_url(url) {
            problems.push(format!("sync.alertmanager: {e}"));
        }
    }
    if let Some(interval) = &raw.sync.check_interval
        && let Err(e) = kiln_registry::duration::parse_ms(interval)
    {
        problems.push(format!("sync.check_interval: {e}"));
    }

    let mut nodes = Vec::with_capacity(raw.nodes.len());
    for (i, node) in raw.nodes.into_iter().enumerate() {
        let at = format!("nodes[{i}] ({})", node.name);
        if let Err(e) = validate_node_name(&node.name) {
            problems.push(format!("{at}.name: {e}"));
        }
        if let Err(e) = check_http_url(&node.url) {
            problems.push(format!("{at}.url: {e}"));
        }
        if nodes.iter().any(|n: &NodeSpec| n.name == node.name) {
            problems.push(format!("{at}: node `{}` is listed twice", node.name));
        }
        nodes.push(NodeSpec {
            url: node.url.trim_end_matches('/').to_string(),
            name: node.name,
        });
    }

    let mut models = BTreeMap::new();
    for (name, raw) in raw.models {
        let at = format!("models.{name}");
        if let Err(e) = validate_name(&name) {
            problems.push(format!("{at}: {e}"));
        }
        let rollout = match raw.rollout.map(|o| o.apply(RolloutPlan::default())).transpose() {
            Ok(plan) => plan,
            Err(e) => {
                problems.push(format!("{at}.rollout: {e:#}"));
                None
            }
        };
        let weights = raw.weights.map(|w| {
            let mut parsed = BTreeMap::new();
            for (version, weight) in w {
                match version.trim().parse::<u64>() {
                    Ok(v) if v > 0 => {
                        parsed.insert(v, weight);
                    }
                    _ => problems.push(format!(
                        "{at}.weights: `{version}` is not a version number; write {{ \"3\" = 90, \"4\" = 10 }}"
                    )),
                }
            }
            if parsed.values().map(|w| u64::from(*w)).sum::<u64>() == 0 {
                problems.push(format!(
                    "{at}.weights: the weights add up to 0, so nothing would answer the model's traffic"
                ));
            }
            parsed
        });
        let nodes = raw.nodes.map(|mut list| {
            for node in &list {
                if let Err(e) = validate_node_name(node) {
                    problems.push(format!("{at}.nodes: {e}"));
                }
            }
            if list.is_empty() {
                problems.push(format!(
                    "{at}.nodes: an empty list would serve the model nowhere; leave `nodes` out to serve it on every node"
                ));
            }
            list.sort();
            list.dedup();
            list
        });
        if let Some(serving) = &raw.serving {
            if serving.max_concurrency == Some(0) {
                problems.push(format!(
                    "{at}.serving.max_concurrency: 0 would shed every request; it must be at least 1"
                ));
            }
            if let Some(Err(e)) = serving
                .fallback
                .as_ref()
                .map(kiln_node_api::FallbackPolicy::check)
            {
                problems.push(format!("{at}.serving.{e}"));
            }
        }
        let slo = raw.slo.map(|mut slo| {
            if !slo.model.is_empty() && slo.model != name {
                problems.push(format!(
                    "{at}.slo.model: `{}` is not the table's model; leave `model` out",
                    slo.model
                ));
            }
            slo.model = name.clone();
            slo
        });
        models.insert(
            name,
            ModelSpec {
                slo,
                version: raw.version,
                rollout,
                weights,
                shadow: raw.shadow,
                serving: raw.serving,
                nodes,
            },
        );
    }

    if !problems.is_empty() {
        anyhow::bail!("the GitOps file is not valid:\n  - {}", problems.join("\n  - "));
    }
    Ok(GitopsFile {
        sync: raw.sync,
        nodes,
        models,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_registry::Strategy;

    #[test]
    fn the_documented_example_parses_with_its_rollout_table() {
        let file = parse(
            r#"
[sync]
listen = "127.0.0.1:7070"
alert_webhook = "http://127.0.0.1:9000/alerts"
check_interval = "1s"

[[nodes]]
name = "edge-1"
url = "http://127.0.0.1:8081/"

[models.house-price]
version = 3
rollout = { strategy = "canary", steps = [5, 25, 50], interval = "30s", max_error_rate = 0.01, max_error_rate_increase = 0.005, max_p99 = "50ms", max_disagreement = 0.02, min_requests = 20 }
weights = { "3" = 90, "4" = 10 }
shadow = 4
nodes = ["edge-1"]
"#,
        )
        .unwrap();
        assert_eq!(file.sync.listen, Some("127.0.0.1:7070".parse().unwrap()));
        assert_eq!(file.nodes[0].url, "http://127.0.0.1:8081");
        let m = &file.models["house-price"];
        assert_eq!(m.version, Some(3));
        let plan = m.rollout.as_ref().unwrap();
        assert_eq!(plan.strategy, Strategy::Canary);
        assert_eq!(plan.steps, vec![5, 25, 50, 100]);
        assert_eq!(plan.interval_ms, 30_000);
        assert_eq!(plan.max_p99_ms, Some(50.0));
        assert_eq!(m.weights, Some(BTreeMap::from([(3, 90), (4, 10)])));
        assert_eq!(m.shadow, Some(4));
    }

    #[test]
    fn a_model_slo_parses_with_its_model_name_and_bad_values_are_placed() {
        let file = parse(
            "[models.iris.slo]\navailability = 0.999\nlatency = { threshold = \"50ms\", objective = 0.99 }\nwindow = \"7d\"\n",
        )
        .unwrap();
        let slo = file.models["iris"].slo.as_ref().unwrap();
        assert_eq!(slo.model, "iris");
        assert_eq!(slo.availability, Some(0.999));
        assert_eq!(slo.latency.map(|l| l.threshold_seconds), Some(0.05));
        assert_eq!(slo.window, std::time::Duration::from_secs(7 * 86_400));
        let err = parse("[models.iris.slo]\navailability = 1.5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line") && err.contains("1.5"), "{err}");
        let err = parse("[models.iris.slo]\navailability = 0.9\nobjective = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("objective"), "{err}");
    }

    #[test]
    fn an_empty_file_manages_nothing() {
        assert_eq!(parse("").unwrap(), GitopsFile::default());
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let err = parse("[models.m]\nversion = 1\nreplicas = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("replicas") && err.contains("line 3"), "{err}");
        let err = parse("[models.m]\nrollout = { stratgy = \"canary\" }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("stratgy") && err.contains("line 2"), "{err}");
        let err = parse("[sync]\ntoken = \"x\"\n").unwrap_err().to_string();
        assert!(err.contains("token"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = parse(
            r#"
[[nodes]]
name = "a"
url = "ftp://x"
[[nodes]]
name = "a"
url = "http://x"
[models.m]
weights = { "three" = 1, "4" = 0 }
rollout = { steps = [50, 10] }
nodes = []
"#,
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "nodes[0] (a).url",
            "listed twice",
            "`three` is not a version number",
            "add up to 0",
            "models.m.rollout",
            "ascending",
            "models.m.nodes",
        ] {
            assert!(err.contains(needle), "{needle} missing from: {err}");
        }
    }
}
