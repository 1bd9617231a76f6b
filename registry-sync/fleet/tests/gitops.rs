//! GitOps files against real SQLite registries: a plan lists what an apply then does, a
//! second apply does nothing (not even an audit entry), edits show up as exactly those
//! changes, a bad file changes nothing, and joined nodes survive a file that omits them.

use std::collections::BTreeMap;

use kiln_fleet::gitops::{self, Change, GitopsFile};
use kiln_registry::fleet::{FleetModel, NodeSource};
use kiln_registry::testing::{open, register};
use kiln_registry::{Registry, RolloutPlan, Stage, Strategy};

const ACTOR: &str = "gitops-tester";

const FILE: &str = r#"
[sync]
listen = "127.0.0.1:7070"

[[nodes]]
name = "edge-1"
url = "http://127.0.0.1:8081"

[[nodes]]
name = "edge-2"
url = "http://127.0.0.1:8082"

[models.house-price]
version = 3
rollout = { strategy = "canary", steps = [5, 25, 50, 100], interval = "30s", max_error_rate = 0.01, max_p99 = "50ms" }
"#;

fn file(text: &str) -> GitopsFile {
    gitops::parse(text).expect("the test file parses")
}

/// A registry with house-price versions 1..=4 (none in Production).
fn registry_with_versions() -> (tempfile::TempDir, Registry) {
    let (dir, reg) = open();
    for v in 1..=4u8 {
        register(&reg, "house-price", &[b'v', v]);
    }
    (dir, reg)
}

fn lines(changes: &[Change]) -> Vec<String> {
    changes.iter().map(Change::to_string).collect()
}

fn audit_len(reg: &Registry) -> usize {
    reg.audit_log(None).unwrap().len()
}

#[test]
fn a_plan_on_a_fresh_registry_lists_nodes_policy_and_production_and_apply_makes_them() {
    let (_dir, reg) = registry_with_versions();
    // A model the file does not name keeps its policy and fleet entry.
    register(&reg, "other", b"o1");
    let other_policy = RolloutPlan {
        strategy: Strategy::BlueGreen,
        ..RolloutPlan::default()
    }
    .validated()
    .unwrap();
    reg.set_rollout_policy("other", Some(&other_policy), "tester")
        .unwrap();
    let f = file(FILE);

    let before = audit_len(&reg);
    let planned = gitops::plan(&reg, &f).unwrap();
    let text = lines(&planned);
    assert_eq!(text.len(), 4, "{text:#?}");
    assert_eq!(text[0], "+ node edge-1 http://127.0.0.1:8081");
    assert_eq!(text[1], "+ node edge-2 http://127.0.0.1:8082");
    assert!(
        text[2].starts_with("~ house-price: rollout policy service default → canary 5,25,50,100 every 30s"),
        "{}",
        text[2]
    );
    assert!(text[2].contains("max_p99 50ms"), "{}", text[2]);
    assert_eq!(
        text[3],
        "~ house-price: Production none → 3 (first deployment: served at once)"
    );
    assert!(text.iter().all(|l| !l.contains("other")), "{text:#?}");
    assert_eq!(audit_len(&reg), before, "a plan writes nothing");

    let applied = gitops::apply(&reg, &f, ACTOR).unwrap();
    assert_eq!(applied, planned);

    let nodes = reg.nodes().unwrap();
    assert_eq!(nodes.len(), 2);
    assert!(nodes.iter().all(|n| n.source == NodeSource::Config));
    assert_eq!(nodes[0].url, "http://127.0.0.1:8081");
    let policy = reg.rollout_policy("house-price").unwrap().unwrap();
    assert_eq!(policy.steps, vec![5, 25, 50, 100]);
    assert_eq!(policy.max_p99_ms, Some(50.0));
    assert_eq!(reg.get("house-price", 3).unwrap().stage, Stage::Production);
    assert_eq!(reg.rollout_policy("other").unwrap(), Some(other_policy));

    let log = reg.audit_log(None).unwrap();
    let mine: Vec<(&str, &str, Option<u64>)> = log[before..]
        .iter()
        .map(|e| {
            assert_eq!(e.actor, ACTOR);
            (e.action.as_str(), e.model.as_str(), e.version)
        })
        .collect();
    assert_eq!(
        mine,
        vec![
            ("node.upsert", "_fleet", None),
            ("node.upsert", "_fleet", None),
            ("rollout.policy", "house-price", None),
            ("transition_stage", "house-price", Some(3)),
        ]
    );
    assert!(reg.verify_audit().unwrap().ok());
}

#[test]
fn applying_the_same_file_twice_changes_nothing_the_second_time() {
    let (_dir, reg) = registry_with_versions();
    let f = file(FILE);
    assert!(!gitops::apply(&reg, &f, ACTOR).unwrap().is_empty());
    let before = audit_len(&reg);
    let generation = reg.generation().unwrap();

    assert_eq!(gitops::apply(&reg, &f, ACTOR).unwrap(), vec![]);
    assert_eq!(gitops::plan(&reg, &f).unwrap(), vec![]);
    assert_eq!(audit_len(&reg), before);
    assert_eq!(reg.generation().unwrap(), generation);
}

#[test]
fn editing_the_version_weights_and_a_url_plans_exactly_those_changes() {
    let (_dir, reg) = registry_with_versions();
    gitops::apply(&reg, &file(FILE), ACTOR).unwrap();
    // What the sync service does for a first deployment.
    reg.set_fleet_model(
        "house-price",
        &FleetModel {
            stable: Some(3),
            ..FleetModel::default()
        },
        "kiln-sync",
        "first deployment",
    )
    .unwrap();

    let moved = FILE
        .replace("version = 3", "version = 4")
        .replace("127.0.0.1:8081", "127.0.0.1:9081");
    let text = lines(&gitops::plan(&reg, &file(&moved)).unwrap());
    assert_eq!(
        text,
        vec![
            "~ node edge-1 url http://127.0.0.1:8081 → http://127.0.0.1:9081".to_string(),
            "~ house-price: Production 3 → 4 (starts canary 5,25,50,100 every 30s)".to_string(),
        ]
    );

    let weighted = format!("{FILE}weights = {{ \"3\" = 90, \"4\" = 10 }}\n");
    let changes = gitops::plan(&reg, &file(&weighted)).unwrap();
    assert_eq!(
        lines(&changes),
        vec!["~ house-price: weights none → {3: 90, 4: 10}".to_string()]
    );
    gitops::apply(&reg, &file(&weighted), ACTOR).unwrap();
    let fm = reg.fleet_models().unwrap()["house-price"].clone();
    assert_eq!(fm.weights, Some(BTreeMap::from([(3, 90), (4, 10)])));
    assert_eq!(fm.stable, Some(3), "the service's stable version is kept");

    // With static weights a version change is a registry change only.
    let both = weighted.replace("version = 3", "version = 4");
    let text = lines(&gitops::plan(&reg, &file(&both)).unwrap());
    assert_eq!(
        text,
        vec!["~ house-price: Production 3 → 4 (static weights: only the registry changes)".to_string()]
    );
    gitops::apply(&reg, &file(&both), ACTOR).unwrap();
    assert_eq!(reg.get("house-price", 4).unwrap().stage, Stage::Production);
    assert_eq!(reg.get("house-price", 3).unwrap().stage, Stage::Archived);
    assert_eq!(reg.fleet_models().unwrap()["house-price"], fm);
    assert_eq!(gitops::plan(&reg, &file(&both)).unwrap(), vec![]);

    // Dropping the keys from the file returns the model to the defaults.
    let bare = "[models.house-price]\nversion = 4\n";
    let text = lines(&gitops::plan(&reg, &file(bare)).unwrap());
    assert!(
        text.contains(&"- node edge-1 http://127.0.0.1:8081".to_string()),
        "{text:#?}"
    );
    assert!(text.iter().any(|l| l.ends_with("→ service default")), "{text:#?}");
    assert!(
        text.contains(&"~ house-price: weights {3: 90, 4: 10} → none".to_string()),
        "{text:#?}"
    );
}

#[test]
fn a_file_naming_a_missing_version_fails_naming_it_and_changes_nothing() {
    let (_dir, reg) = registry_with_versions();
    let before = audit_len(&reg);
    let bad = format!("{}shadow = 9\n", FILE.replace("version = 3", "version = 7"));
    let err = format!("{:#}", gitops::apply(&reg, &file(&bad), ACTOR).unwrap_err());
    assert!(
        err.contains("models.house-price.version: version 7 of house-price"),
        "{err}"
    );
    assert!(err.contains("it has 1, 2, 3, 4"), "{err}");
    assert!(err.contains("models.house-price.shadow: version 9"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(audit_len(&reg), before);
    assert!(
        reg.nodes().unwrap().is_empty(),
        "the file's nodes were not added either"
    );

    let unknown = "[models.ghost]\nversion = 1\n";
    let err = format!("{:#}", gitops::plan(&reg, &file(unknown)).unwrap_err());
    assert!(err.contains("no model by that name"), "{err}");

    let stray = format!("{FILE}nodes = [\"edge-9\"]\n");
    let err = format!("{:#}", gitops::plan(&reg, &file(&stray)).unwrap_err());
    assert!(err.contains("no node named `edge-9`"), "{err}");
}

#[test]
fn unknown_keys_are_rejected_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kiln.toml");
    std::fs::write(&path, FILE.replace("version = 3", "version = 3\nreplicas = 2")).unwrap();
    let err = format!("{:#}", gitops::load(&path).unwrap_err());
    assert!(err.contains("replicas"), "{err}");
    assert!(err.contains("kiln.toml"), "{err}");
    assert!(err.contains("line"), "{err}");
}

#[test]
fn a_joined_node_is_not_removed_by_a_file_that_omits_it() {
    let (_dir, reg) = registry_with_versions();
    reg.node_heartbeat("edge-9", "http://127.0.0.1:8089", "instance-1", "edge-9")
        .unwrap();
    reg.upsert_node("edge-4", "http://127.0.0.1:8084", NodeSource::Config, "tester")
        .unwrap();
    let f = file(FILE);
    let text = lines(&gitops::plan(&reg, &f).unwrap());
    assert!(
        text.contains(&"- node edge-4 http://127.0.0.1:8084".to_string()),
        "{text:#?}"
    );
    assert!(text.iter().all(|l| !l.contains("edge-9")), "{text:#?}");
    gitops::apply(&reg, &f, ACTOR).unwrap();
    let names: Vec<String> = reg.nodes().unwrap().into_iter().map(|n| n.name).collect();
    assert_eq!(names, ["edge-1", "edge-2", "edge-9"]);
    assert_eq!(reg.node("edge-9").unwrap().unwrap().source, NodeSource::Join);

    // A model may name the joined node; listing it under [[nodes]] makes it a config node.
    let pinned = format!("{FILE}nodes = [\"edge-9\"]\n");
    assert_eq!(
        lines(&gitops::plan(&reg, &file(&pinned)).unwrap()),
        vec!["~ house-price: nodes all → [edge-9]".to_string()]
    );
    let adopted = FILE.replace(
        "name = \"edge-2\"\nurl = \"http://127.0.0.1:8082\"",
        "name = \"edge-9\"\nurl = \"http://127.0.0.1:8089\"",
    );
    let text = lines(&gitops::plan(&reg, &file(&adopted)).unwrap());
    assert!(
        text.contains(&"~ node edge-9 source join → config".to_string()),
        "{text:#?}"
    );
}

#[test]
fn the_example_kiln_toml_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/kiln.toml");
    let f = gitops::load(&path).unwrap();
    let nodes: Vec<(&str, &str)> = f
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.url.as_str()))
        .collect();
    assert_eq!(
        nodes,
        [
            ("edge-1", "http://127.0.0.1:8081"),
            ("edge-2", "http://127.0.0.1:8082"),
            ("edge-3", "http://127.0.0.1:8083"),
        ]
    );
    assert_eq!(
        f.models.keys().map(String::as_str).collect::<Vec<_>>(),
        ["house-price", "iris", "mlp"]
    );
    assert_eq!(
        f.models["iris"].rollout.as_ref().map(|p| p.strategy),
        Some(Strategy::BlueGreen)
    );
    assert!(f.models["mlp"].weights.is_some());
    assert_eq!(f.sync.listen, Some("127.0.0.1:7070".parse().unwrap()));
}

#[test]
fn a_serving_policy_is_planned_applied_once_and_kept() {
    let (_dir, reg) = registry_with_versions();
    let with_policy = format!(
        "{FILE}serving = {{ max_concurrency = 2, max_queue = 8, fallback = {{ outputs = {{ variable = [0.5] }} }} }}\n"
    );
    let f = file(&with_policy);
    assert!(!gitops::apply(&reg, &file(FILE), ACTOR).unwrap().is_empty());
    let plan = lines(&gitops::plan(&reg, &f).unwrap());
    assert_eq!(
        plan,
        vec![
            "~ house-price: serving none → { max_concurrency = 2, max_queue = 8, fallback = { outputs = { variable = [0.5] } } }"
                .to_string()
        ]
    );
    gitops::apply(&reg, &f, ACTOR).unwrap();
    let stored = reg.fleet_models().unwrap()["house-price"]
        .serving
        .clone()
        .expect("stored");
    assert_eq!(stored.max_concurrency, Some(2));
    assert_eq!(stored.max_queue, Some(8));
    let before = audit_len(&reg);
    assert_eq!(gitops::apply(&reg, &f, ACTOR).unwrap(), vec![], "idempotent");
    assert_eq!(audit_len(&reg), before);
    let last = reg
        .audit_log(None)
        .unwrap()
        .into_iter()
        .rev()
        .find(|e| e.action == "fleet.set")
        .expect("the fleet write is audited");
    assert_eq!(last.after["serving"]["max_concurrency"], 2, "{last:?}");
    // Leaving it out again goes back to the nodes' own settings.
    assert_eq!(
        lines(&gitops::apply(&reg, &file(FILE), ACTOR).unwrap()),
        vec!["~ house-price: serving { max_concurrency = 2, max_queue = 8, fallback = { outputs = { variable = [0.5] } } } → none".to_string()]
    );
    assert_eq!(reg.fleet_models().unwrap()["house-price"].serving, None);
}

#[test]
fn a_bad_serving_policy_is_refused_naming_the_key() {
    for (policy, expected) in [
        ("{ fallback = \"latest\" }", "fallback `latest`"),
        ("{ max_concurrency = 0 }", "serving.max_concurrency"),
        ("{ fallback = { outputs = {} } }", "at least one output"),
        ("{ max_calls = 3 }", "max_calls"),
    ] {
        let text = format!("{FILE}serving = {policy}\n");
        let err = format!("{:#}", gitops::parse(&text).unwrap_err());
        assert!(err.contains(expected), "{policy}: {err}");
    }
}
