//! The registry commands (`kiln models`, `kiln audit`, `kiln sync plan|apply`) on a real
//! SQLite registry, without wasmtime: registration's compile step is a stand-in that
//! stores the file as the component.

use std::path::Path;

use clap::{CommandFactory, Parser};
use kiln_cli::commands::audit::{self, AuditCommand};
use kiln_cli::commands::models::{self, ModelsCommand};
use kiln_cli::commands::sync::{self, SyncCommand};
use kiln_registry::{GoldenPair, Prepared, Registry, Stage};
use kiln_registry_server::Authorized;
use serde_json::{Value, json};
use std::sync::Arc;

#[derive(Parser, Debug)]
struct ModelsCli {
    #[command(subcommand)]
    cmd: ModelsCommand,
}

#[derive(Parser, Debug)]
struct AuditCli {
    #[command(subcommand)]
    cmd: AuditCommand,
}

/// Stands in for the binary's compile step: the file bytes are the component, and the
/// response to each golden request echoes it.
fn fake_prepare(file: &Path, _name: &str, requests: &[Value]) -> anyhow::Result<Prepared> {
    Ok(Prepared {
        component: std::fs::read(file)?,
        source_digest: None,
        signature: json!({"inputs": [{"name": "features", "shape": [-1, 8]}]}),
        golden: requests
            .iter()
            .map(|r| GoldenPair {
                request: r.clone(),
                response: json!({"echo": r}),
            })
            .collect(),
    })
}

struct Fixture {
    dir: tempfile::TempDir,
    registry: Arc<Registry>,
    /// The registry as the CLI uses it on `$KILN_HOME`: its owner.
    api: Authorized,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let registry = Arc::new(Registry::open(&dir.path().join("home")).unwrap());
        let api = Authorized::local(registry.clone());
        Fixture { dir, registry, api }
    }

    fn file(&self, name: &str, content: &[u8]) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path.to_string_lossy().into_owned()
    }

    fn models(&self, args: &[&str]) -> anyhow::Result<String> {
        let cli = ModelsCli::try_parse_from(std::iter::once("models").chain(args.iter().copied()))?;
        // A reference built from the file alone (the real one also runs the component).
        let reference = |_: &[u8], path: &Path, names: Option<&str>| {
            let data = kiln_cli::reference::read(path, names)?;
            let profile = kiln_cli::reference::profile(&data, None)?;
            kiln_cli::reference::record(path, &data, &profile)
        };
        models::run(&self.api, cli.cmd, &fake_prepare, &reference)
    }

    fn audit(&self, args: &[&str]) -> anyhow::Result<String> {
        let cli = AuditCli::try_parse_from(std::iter::once("audit").chain(args.iter().copied()))?;
        audit::run(&self.api, cli.cmd)
    }
}

#[test]
fn register_reports_new_and_existing_versions() {
    let f = Fixture::new();
    let a = f.file("a.wasm", b"component a");
    let out = f.models(&["register", &a, "--name", "house-price"]).unwrap();
    let digest = sha256_hex_str(b"component a");
    assert_eq!(
        out,
        format!(
            "registered house-price version 1 (digest sha256:{}…, 11 B)",
            &digest[..12]
        )
    );
    let again = f
        .models(&["register", &a, "--name", "house-price", "--json"])
        .unwrap();
    let value: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(value["created"], json!(false));
    assert_eq!(value["version"], json!(1));
    assert_eq!(value["digest"], json!(digest));
    let plain = f.models(&["register", &a, "--name", "house-price"]).unwrap();
    assert!(
        plain.starts_with("house-price version 1 already holds this component"),
        "{plain}"
    );
}

#[test]
fn register_with_a_reference_stores_its_profile_and_a_bad_file_registers_nothing() {
    let f = Fixture::new();
    let a = f.file("a.wasm", b"component a");
    let bad = f.file("bad.csv", b"x,y\n1,oops\n");
    let err = format!(
        "{:#}",
        f.models(&["register", &a, "--name", "iris", "--reference", &bad])
            .unwrap_err()
    );
    assert!(err.contains("line 2, column `y`"), "{err}");
    assert!(
        f.registry.list(Some("iris")).unwrap().is_empty(),
        "nothing registered"
    );

    let csv = f.file("train.csv", b"sepal,petal\n1.5,0.2\n1.7,0.4\n,0.3\n");
    let out = f
        .models(&[
            "register",
            &a,
            "--name",
            "iris",
            "--reference",
            &csv,
            "--feature-names",
            "s,p",
        ])
        .unwrap();
    assert!(
        out.contains("reference for drift: 3 rows × 2 features from train.csv"),
        "{out}"
    );
    let stored = f.registry.reference("iris", 1).unwrap().unwrap();
    assert_eq!(stored.features, ["s", "p"]);
    let profile: kiln_monitor::model::ModelProfile = serde_json::from_str(&stored.profile).unwrap();
    let inputs = profile.inputs.unwrap();
    let f0 = inputs.column("f0").unwrap();
    assert_eq!((f0.count(), f0.missing(), f0.max()), (2, 1, Some(1.7)));
    let audit = f.registry.audit_log(Some("iris")).unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.action == "set_reference" && e.actor.starts_with("local:")),
        "{audit:?}"
    );
}

fn sha256_hex_str(bytes: &[u8]) -> String {
    kiln_types::digest(bytes)
}

#[test]
fn register_records_tags_lineage_golden_stage_and_aliases() {
    let f = Fixture::new();
    let a = f.file("a.wasm", b"component a");
    let lineage = f.file("lineage.json", br#"{"run_id": "r1", "metrics": {"rmse": 0.5}}"#);
    let request = f.file("req.json", br#"{"features": [1, 2]}"#);
    let out = f
        .models(&[
            "register",
            &a,
            "--name",
            "m",
            "--tag",
            "team=pricing",
            "--lineage",
            &lineage,
            "--golden",
            &request,
            "--stage",
            "production",
            "--alias",
            "champion",
            "--description",
            "first",
        ])
        .unwrap();
    assert!(out.contains("m version 1: None → Production"), "{out}");
    assert!(out.contains("alias champion → m version 1"), "{out}");
    let v = f.registry.resolve("m@champion").unwrap();
    assert_eq!(v.stage, Stage::Production);
    assert_eq!(v.tags["team"], "pricing");
    assert_eq!(v.description, "first");
    assert_eq!(v.lineage["metrics"]["rmse"], json!(0.5));

    let lineage_out = f.models(&["lineage", "m/1"]).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&lineage_out).unwrap()["run_id"],
        json!("r1")
    );
    let golden: Value =
        serde_json::from_str(&f.models(&["golden", "m/Production", "--json"]).unwrap()).unwrap();
    assert_eq!(golden[0]["response"]["echo"]["features"], json!([1, 2]));

    let bad_lineage = f.file("bad.json", b"[1, 2]");
    let err = f
        .models(&["register", &a, "--name", "m", "--lineage", &bad_lineage])
        .unwrap_err();
    assert!(format!("{err:#}").contains("must hold a JSON object"), "{err:#}");
}

#[test]
fn promote_to_production_archives_the_previous_one_unless_told_not_to() {
    let f = Fixture::new();
    for (i, content) in [b"one", b"two", b"thr"].iter().enumerate() {
        let path = f.file(&format!("{i}.wasm"), *content);
        f.models(&["register", &path, "--name", "m"]).unwrap();
    }
    f.models(&["promote", "m", "1", "Production"]).unwrap();
    let out = f.models(&["promote", "m", "2", "production"]).unwrap();
    assert_eq!(out, "m version 2: None → Production (archived version 1)");
    assert_eq!(f.registry.get("m", 1).unwrap().stage, Stage::Archived);

    let out = f
        .models(&["promote", "m", "3", "Production", "--no-archive-existing"])
        .unwrap();
    assert_eq!(out, "m version 3: None → Production");
    assert_eq!(f.registry.production("m").unwrap().len(), 2);

    let out = f.models(&["archive", "m", "3"]).unwrap();
    assert_eq!(out, "m version 3: Production → Archived");
    assert!(f.models(&["promote", "m", "3", "Prod"]).is_err());
}

#[test]
fn list_prints_a_table_and_json() {
    let f = Fixture::new();
    let a = f.file("a.wasm", b"aaaa");
    f.models(&[
        "register",
        &a,
        "--name",
        "m",
        "--alias",
        "champion",
        "--description",
        "line\nbreak",
    ])
    .unwrap();
    let table = f.models(&["list"]).unwrap();
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    for column in [
        "NAME",
        "VERSION",
        "STAGE",
        "ALIASES",
        "DIGEST",
        "CREATED",
        "DESCRIPTION",
    ] {
        assert!(header.contains(column), "{table}");
    }
    let row = lines.next().unwrap();
    assert!(row.starts_with("m "), "{table}");
    assert!(
        row.contains("champion") && row.contains(&sha256_hex_str(b"aaaa")[..12]),
        "{table}"
    );
    assert!(
        !row.contains(&sha256_hex_str(b"aaaa")[..13]),
        "digest should be shortened: {table}"
    );
    assert!(row.contains("line break"), "{table}");

    let json: Value = serde_json::from_str(&f.models(&["list", "m", "--json"]).unwrap()).unwrap();
    assert_eq!(json[0]["name"], json!("m"));
    assert_eq!(json[0]["version"], json!(1));
    assert_eq!(json[0]["stage"], json!("None"));
    assert_eq!(json[0]["aliases"], json!(["champion"]));
    assert!(
        f.models(&["list", "other"])
            .unwrap()
            .contains("no versions of model 'other'")
    );
}

#[test]
fn alias_tag_describe_delete_and_show() {
    let f = Fixture::new();
    let a = f.file("a.wasm", b"a");
    let b = f.file("b.wasm", b"b");
    f.models(&["register", &a, "--name", "m"]).unwrap();
    f.models(&["register", &b, "--name", "m"]).unwrap();
    assert_eq!(
        f.models(&["alias", "m", "champion", "1"]).unwrap(),
        "alias champion → m version 1"
    );
    assert_eq!(
        f.models(&["alias", "m", "champion", "2"]).unwrap(),
        "alias champion → m version 2 (was version 1)"
    );
    assert!(
        f.models(&["alias", "m", "champion"]).is_err(),
        "version or --delete required"
    );
    assert_eq!(
        f.models(&["alias", "m", "champion", "--delete"]).unwrap(),
        "deleted alias champion of m (was version 2)"
    );
    let err = f.models(&["alias", "m", "latest", "1"]).unwrap_err().to_string();
    assert!(err.contains("reserved"), "{err}");

    let out = f
        .models(&["tag", "m", "1", "a=1", "b=x=y", "--delete", "a"])
        .unwrap();
    assert_eq!(
        out,
        "m version 1: tag a=1\nm version 1: tag b=x=y\nm version 1: removed tag a"
    );
    assert_eq!(
        f.registry.get("m", 1).unwrap().tags.get("b").map(String::as_str),
        Some("x=y")
    );
    assert!(f.models(&["tag", "m", "1", "novalue"]).is_err());

    f.models(&["describe", "m", "1", "the first"]).unwrap();
    let show = f.models(&["show", "m/1"]).unwrap();
    assert!(show.starts_with("m version 1\n"), "{show}");
    assert!(show.contains("description:  the first"), "{show}");
    assert!(show.contains("tags:         b=x=y"), "{show}");

    f.models(&["promote", "m", "1", "Production"]).unwrap();
    let err = f.models(&["delete", "m", "1"]).unwrap_err().to_string();
    assert!(err.contains("in Production"), "{err}");
    assert_eq!(
        f.models(&["delete", "m", "1", "--force"]).unwrap(),
        "deleted m version 1"
    );
}

#[test]
fn audit_log_and_verify_report_through_the_cli() {
    let f = Fixture::new();
    let a = f.file("a.wasm", b"a");
    f.models(&["register", &a, "--name", "m", "--stage", "Staging"])
        .unwrap();
    assert_eq!(f.audit(&["verify"]).unwrap(), "audit log intact: 2 entries");
    let log = f.audit(&["log", "--model", "m"]).unwrap();
    assert!(
        log.contains("register") && log.contains("transition_stage"),
        "{log}"
    );
    let json: Value = serde_json::from_str(&f.audit(&["log", "--json"]).unwrap()).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);

    let conn = rusqlite::Connection::open(f.registry.home().join("registry.db")).unwrap();
    conn.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 2", [])
        .unwrap();
    let err = f.audit(&["verify"]).unwrap_err().to_string();
    assert!(err.contains("entry 2 was edited"), "{err}");
}

#[test]
fn help_explains_reference_forms_and_archive_default() {
    let mut cmd = ModelsCli::command();
    let promote = cmd
        .find_subcommand_mut("promote")
        .unwrap()
        .render_long_help()
        .to_string();
    assert!(promote.contains("--no-archive-existing"), "{promote}");
    assert!(
        promote.contains("archives the model's other Production versions"),
        "{promote}"
    );
    let show = cmd.find_subcommand_mut("show").unwrap().render_help().to_string();
    assert!(show.contains("NAME@ALIAS"), "{show}");
}

/// A GitOps file: two nodes and house-price version 3 in Production with a policy.
const GITOPS_FILE: &str = r#"
[[nodes]]
name = "edge-1"
url = "http://127.0.0.1:8081"

[[nodes]]
name = "edge-2"
url = "http://127.0.0.1:8082"

[models.house-price]
version = 3
rollout = { strategy = "canary", steps = [5, 25, 50, 100], interval = "30s" }
"#;

#[test]
fn the_cli_prints_the_plan_then_no_changes_after_apply() {
    let (dir, reg) = kiln_registry::testing::open();
    for v in 1..=4u8 {
        kiln_registry::testing::register(&reg, "house-price", &[b'v', v]);
    }
    let path = dir.path().join("kiln.toml");
    std::fs::write(&path, GITOPS_FILE).unwrap();
    let api = Authorized::local(Arc::new(reg));
    let run_sync = |cmd| sync::run(&api, cmd);
    let out = run_sync(SyncCommand::Plan { file: path.clone() }).unwrap();
    assert!(out.contains("+ node edge-1"), "{out}");
    assert!(out.contains("4 change(s); `kiln sync apply"), "{out}");
    let out = run_sync(SyncCommand::Apply { file: path.clone() }).unwrap();
    assert!(out.starts_with("applied 4 change(s):"), "{out}");
    assert!(
        out.contains("house-price 3 is now Production: `kiln sync` serves it at once"),
        "{out}"
    );
    let out = run_sync(SyncCommand::Plan { file: path.clone() }).unwrap();
    assert_eq!(
        out,
        format!("no changes: the live state matches {}", path.display())
    );
}
