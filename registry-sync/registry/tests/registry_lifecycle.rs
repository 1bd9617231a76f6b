//! Versions, stages, aliases, references, deletion and blobs, against real SQLite files.

mod common;

use common::{new_version, open, raw, register};
use kiln_registry::{Registry, RegistryError, Stage};
use kiln_types::digest as sha256_hex;
use serde_json::{Value, json};

#[test]
fn versions_are_numbered_per_model_and_reregistering_returns_the_existing_version() {
    let (_dir, reg) = open();
    assert_eq!(register(&reg, "m", b"a"), 1);
    assert_eq!(register(&reg, "m", b"b"), 2);
    assert_eq!(register(&reg, "other", b"a"), 1, "numbering is per model");

    let (again, created) = reg.register(new_version("m", b"a"), "tester").unwrap();
    assert!(!created);
    assert_eq!(again.version, 1);
    assert_eq!(reg.list(Some("m")).unwrap().len(), 2);

    let v = reg.get("m", 2).unwrap();
    assert_eq!(v.digest, sha256_hex(b"b"));
    assert_eq!(v.size, 1);
    assert_eq!(v.stage, Stage::None);
    assert_eq!(v.tags["framework"], "onnx");
    assert_eq!(v.lineage["metrics"]["rmse"], json!(0.42));
    assert_eq!(v.signature["inputs"][0]["name"], json!("features"));
    assert!(
        v.created_at.ends_with('Z') && v.created_at.contains('T'),
        "{}",
        v.created_at
    );
    assert_eq!(reg.read_blob(&v.digest).unwrap(), b"b");
    assert_eq!(
        reg.golden("m", 2).unwrap()[0].response,
        json!({"prediction": 3.5})
    );

    // Numbers are never reused, even after the highest version is deleted.
    reg.delete_version("m", 2, false, "tester").unwrap();
    assert_eq!(register(&reg, "m", b"c"), 3);
    reg.delete_version("m", 3, false, "tester").unwrap();
    assert_eq!(
        register(&reg, "m", b"c"),
        4,
        "a deleted version's component gets a new number"
    );
}

#[test]
fn a_component_registered_from_a_file_is_the_same_version_as_its_bytes() {
    let (dir, reg) = open();
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let file = dir.path().join("staged-upload");
    std::fs::write(&file, &bytes).unwrap();
    let (v, created) = reg.register_file(new_version("m", b""), &file, "tester").unwrap();
    assert!(created);
    assert_eq!(
        (v.version, v.digest.as_str(), v.size),
        (1, sha256_hex(&bytes).as_str(), 200_000)
    );
    assert_eq!(reg.read_blob(&v.digest).unwrap(), bytes);
    assert!(file.exists(), "the staged file is the caller's to remove");
    // The same bytes from memory are the same version.
    let (again, created) = reg.register(new_version("m", &bytes), "tester").unwrap();
    assert!(!created);
    assert_eq!(again.version, 1);
    // An empty file is refused like empty bytes.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        reg.register_file(new_version("m", b""), &empty, "tester"),
        Err(RegistryError::Invalid(_))
    ));
}

#[test]
fn invalid_registrations_are_rejected_with_reasons() {
    let (_dir, reg) = open();
    let err = reg.register(new_version("bad/name", b"x"), "t").unwrap_err();
    assert!(
        matches!(err, RegistryError::Invalid(ref m) if m.contains("invalid model name 'bad/name'")),
        "{err}"
    );
    let err = reg.register(new_version("m", b""), "t").unwrap_err();
    assert!(
        matches!(err, RegistryError::Invalid(ref m) if m.contains("empty component")),
        "{err}"
    );
    let mut req = new_version("m", b"x");
    req.lineage = json!([1, 2]);
    let err = reg.register(req, "t").unwrap_err();
    assert!(err.to_string().contains("lineage must be a JSON object"), "{err}");
    let mut req = new_version("m", b"x");
    req.source_digest = Some("md5:abc".into());
    assert!(matches!(reg.register(req, "t"), Err(RegistryError::Invalid(_))));
    assert!(reg.list(None).unwrap().is_empty(), "nothing was written");
    assert_eq!(reg.generation().unwrap(), 0);
}

#[test]
fn stage_transitions_archive_existing_only_when_asked_and_only_in_that_stage() {
    let (_dir, reg) = open();
    for content in [b"1", b"2", b"3", b"4"] {
        register(&reg, "m", content);
    }
    reg.transition_stage("m", 1, Stage::Production, true, "t")
        .unwrap();
    reg.transition_stage("m", 2, Stage::Staging, false, "t").unwrap();

    // Without archive_existing two versions can be in Production.
    reg.transition_stage("m", 3, Stage::Production, false, "t")
        .unwrap();
    let prod: Vec<u64> = reg.production("m").unwrap().iter().map(|v| v.version).collect();
    assert_eq!(prod, vec![3, 1]);

    // With it, the other Production versions are archived and Staging is untouched.
    let t = reg
        .transition_stage_detailed("m", 4, Stage::Production, true, "t")
        .unwrap();
    assert_eq!(t.previous, Stage::None);
    assert_eq!(t.archived, vec![1, 3]);
    let stages: Vec<Stage> = reg.list(Some("m")).unwrap().iter().map(|v| v.stage).collect();
    assert_eq!(
        stages,
        vec![
            Stage::Archived,
            Stage::Staging,
            Stage::Archived,
            Stage::Production
        ]
    );

    // Staging with archive_existing archives the other Staging version.
    reg.transition_stage("m", 1, Stage::Staging, true, "t").unwrap();
    assert_eq!(reg.get("m", 2).unwrap().stage, Stage::Archived);
    assert_eq!(reg.get("m", 1).unwrap().stage, Stage::Staging);

    // A move to the current stage with nothing to archive changes nothing and logs nothing.
    let generation = reg.generation().unwrap();
    reg.transition_stage("m", 4, Stage::Production, true, "t")
        .unwrap();
    assert_eq!(reg.generation().unwrap(), generation);

    let last = reg.audit_log(Some("m")).unwrap().pop().unwrap();
    assert_eq!(last.action, "transition_stage");
    assert_eq!(last.before, json!({"stage": "Archived"}));
    assert_eq!(last.after, json!({"stage": "Staging", "archived_versions": [2]}));
}

#[test]
fn aliases_move_delete_and_refuse_reserved_names() {
    let (_dir, reg) = open();
    register(&reg, "m", b"1");
    register(&reg, "m", b"2");
    reg.set_alias("m", "champion", 1, "t").unwrap();
    reg.set_alias("m", "challenger", 2, "t").unwrap();
    assert_eq!(reg.get("m", 1).unwrap().aliases, vec!["champion"]);

    // Setting an existing alias moves it: it names exactly one version.
    let moved = reg.set_alias("m", "champion", 2, "t").unwrap();
    assert_eq!(moved.aliases, vec!["challenger", "champion"]);
    assert!(reg.get("m", 1).unwrap().aliases.is_empty());
    let entry = reg.audit_log(None).unwrap().pop().unwrap();
    assert_eq!(entry.before, json!({"alias": "champion", "version": 1}));
    assert_eq!(entry.after, json!({"alias": "champion", "version": 2}));

    reg.delete_alias("m", "champion", "t").unwrap();
    assert_eq!(reg.get("m", 2).unwrap().aliases, vec!["challenger"]);
    let err = reg.delete_alias("m", "champion", "t").unwrap_err();
    assert!(
        matches!(err, RegistryError::NotFound(ref m) if m.contains("no alias 'champion'")),
        "{err}"
    );

    for reserved in ["latest", "production", "staging", "archived", "none"] {
        let err = reg.set_alias("m", reserved, 1, "t").unwrap_err();
        assert!(
            matches!(err, RegistryError::Invalid(ref m) if m.contains("reserved")),
            "{reserved}: {err}"
        );
    }
    assert!(matches!(
        reg.set_alias("m", "Champion", 1, "t"),
        Err(RegistryError::Invalid(_))
    ));
    let err = reg.set_alias("m", "champion", 9, "t").unwrap_err();
    assert!(
        matches!(err, RegistryError::NotFound(ref m) if m.contains("no version 9 (versions: 1, 2)")),
        "{err}"
    );
}

#[test]
fn references_resolve_in_every_form_and_errors_say_what_to_do() {
    let (_dir, reg) = open();
    for content in [b"1", b"2", b"3", b"4"] {
        register(&reg, "house-price", content);
    }
    reg.transition_stage("house-price", 1, Stage::Production, true, "t")
        .unwrap();
    reg.transition_stage("house-price", 2, Stage::Production, false, "t")
        .unwrap();
    reg.transition_stage("house-price", 3, Stage::Staging, false, "t")
        .unwrap();
    reg.transition_stage("house-price", 4, Stage::Archived, false, "t")
        .unwrap();
    reg.set_alias("house-price", "champion", 1, "t").unwrap();

    let v = |r: &str| reg.resolve(r).unwrap().version;
    assert_eq!(v("house-price/3"), 3);
    assert_eq!(
        v("house-price/Production"),
        2,
        "highest-numbered version in the stage"
    );
    assert_eq!(v("house-price/production"), 2);
    assert_eq!(v("house-price/STAGING"), 3);
    assert_eq!(v("house-price@champion"), 1);
    assert_eq!(v("house-price/latest"), 3, "latest skips Archived versions");

    let s = |sel: &str| reg.resolve_in("house-price", sel).unwrap().version;
    assert_eq!(s("3"), 3);
    assert_eq!(s("Production"), 2);
    assert_eq!(s("staging"), 3);
    assert_eq!(s("champion"), 1);
    assert_eq!(s("@champion"), 1);
    assert_eq!(s("latest"), 3);
    assert_eq!(s("archived"), 4);

    let err = |r: &str| reg.resolve(r).unwrap_err();
    let e = err("house-price");
    assert!(
        matches!(e, RegistryError::Invalid(ref m) if m.contains("NAME@ALIAS")),
        "{e}"
    );
    let e = err("nope/1");
    assert!(
        matches!(e, RegistryError::NotFound(ref m) if m.contains("model 'nope' not found (registered models: house-price)")),
        "{e}"
    );
    let e = err("house-price/9");
    assert!(
        matches!(e, RegistryError::NotFound(ref m) if m.contains("no version 9 (versions: 1, 2, 3, 4)")),
        "{e}"
    );
    let e = err("house-price/None");
    assert!(
        matches!(e, RegistryError::NotFound(ref m) if m.contains("no version in stage None")),
        "{e}"
    );
    let e = err("house-price@challenger");
    assert!(
        matches!(e, RegistryError::NotFound(ref m) if m.contains("no alias 'challenger' (its aliases: champion)")),
        "{e}"
    );
    let e = err("house-price/Bad!");
    assert!(
        matches!(e, RegistryError::Invalid(ref m) if m.contains("invalid version selector")),
        "{e}"
    );

    for version in 1..=3 {
        reg.transition_stage("house-price", version, Stage::Archived, false, "t")
            .unwrap();
    }
    let e = err("house-price/latest");
    assert!(
        matches!(e, RegistryError::NotFound(ref m) if m.contains("every version is Archived")),
        "{e}"
    );
}

#[test]
fn production_versions_are_only_deleted_with_force_and_take_their_aliases_along() {
    let (_dir, reg) = open();
    register(&reg, "m", b"1");
    register(&reg, "m", b"2");
    reg.transition_stage("m", 1, Stage::Production, true, "t")
        .unwrap();
    reg.set_alias("m", "champion", 1, "t").unwrap();
    reg.set_alias("m", "challenger", 2, "t").unwrap();

    let err = reg.delete_version("m", 1, false, "t").unwrap_err();
    assert!(
        matches!(err, RegistryError::Conflict(ref m) if m.contains("m version 1 is in Production")),
        "{err}"
    );
    assert!(reg.get("m", 1).is_ok(), "refused delete changed nothing");

    reg.delete_version("m", 1, true, "t").unwrap();
    assert!(matches!(reg.get("m", 1), Err(RegistryError::NotFound(_))));
    assert!(matches!(
        reg.resolve("m@champion"),
        Err(RegistryError::NotFound(_))
    ));
    assert_eq!(reg.resolve("m@challenger").unwrap().version, 2);
    let conn = raw(&reg);
    let leftovers: i64 = conn
        .query_row(
            "SELECT (SELECT COUNT(*) FROM aliases WHERE version = 1) + (SELECT COUNT(*) FROM tags WHERE version = 1)
                  + (SELECT COUNT(*) FROM golden WHERE version = 1)",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(leftovers, 0);
    let entry = reg.audit_log(None).unwrap().pop().unwrap();
    assert_eq!(entry.action, "delete_version");
    assert_eq!(entry.before["stage"], json!("Production"));
    assert_eq!(entry.before["aliases"], json!(["champion"]));
    assert_eq!(entry.after, Value::Null);
}

#[test]
fn a_blob_is_removed_only_when_no_version_references_it() {
    let (_dir, reg) = open();
    register(&reg, "a", b"shared");
    register(&reg, "b", b"shared");
    register(&reg, "a", b"own");
    let shared = reg.blob_path(&sha256_hex(b"shared"));
    let own = reg.blob_path(&sha256_hex(b"own"));
    assert!(shared.exists() && own.exists());

    reg.delete_version("a", 1, false, "t").unwrap();
    assert!(shared.exists(), "b/1 still references the shared blob");
    reg.delete_version("b", 1, false, "t").unwrap();
    assert!(!shared.exists(), "unreferenced blob is collected");
    reg.delete_version("a", 2, false, "t").unwrap();
    assert!(!own.exists());
    assert_eq!(reg.blob_path(&format!("sha256:{}", sha256_hex(b"own"))), own);
}

#[test]
fn reading_a_corrupted_blob_fails_with_corrupt() {
    let (_dir, reg) = open();
    register(&reg, "m", b"original component");
    let digest = reg.get("m", 1).unwrap().digest;
    std::fs::write(reg.blob_path(&digest), b"bit rot").unwrap();
    let err = reg.read_blob(&digest).unwrap_err();
    assert!(
        matches!(err, RegistryError::Corrupt(ref m) if m.contains("is corrupt")),
        "{err}"
    );

    // Registering the same component again repairs the blob and returns the same version.
    let (v, created) = reg
        .register(new_version("m", b"original component"), "t")
        .unwrap();
    assert_eq!((v.version, created), (1, false));
    assert_eq!(reg.read_blob(&digest).unwrap(), b"original component");
}

#[test]
fn served_holds_production_staging_and_aliased_versions() {
    let (_dir, reg) = open();
    for content in [b"1", b"2", b"3", b"4", b"5"] {
        register(&reg, "m", content);
    }
    register(&reg, "n", b"1");
    reg.transition_stage("m", 1, Stage::Production, true, "t")
        .unwrap();
    reg.transition_stage("m", 2, Stage::Staging, true, "t").unwrap();
    reg.transition_stage("m", 3, Stage::Archived, true, "t").unwrap();
    reg.set_alias("m", "challenger", 3, "t").unwrap();
    reg.set_alias("n", "champion", 1, "t").unwrap();
    let served: Vec<String> = reg.served().unwrap().iter().map(|v| v.reference()).collect();
    assert_eq!(served, vec!["m/1", "m/2", "m/3", "n/1"]);
}

#[test]
fn tags_and_descriptions_change_with_audit_entries() {
    let (_dir, reg) = open();
    register(&reg, "m", b"1");
    let v = reg.set_tag("m", 1, "owner", "ana", "alice").unwrap();
    assert_eq!(v.tags["owner"], "ana");
    reg.set_tag("m", 1, "owner", "bo", "alice").unwrap();
    let v = reg.delete_tag("m", 1, "framework", "alice").unwrap();
    assert!(!v.tags.contains_key("framework"));
    assert!(matches!(
        reg.delete_tag("m", 1, "framework", "alice"),
        Err(RegistryError::NotFound(_))
    ));
    let v = reg.set_description("m", 1, "better", "alice").unwrap();
    assert_eq!(v.description, "better");

    let log = reg.audit_log(Some("m")).unwrap();
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["register", "set_tag", "set_tag", "delete_tag", "set_description"]
    );
    assert_eq!(log[2].before, json!({"key": "owner", "value": "ana"}));
    assert_eq!(log[2].after, json!({"key": "owner", "value": "bo"}));
    assert_eq!(log[4].before, json!({"description": "1 bytes"}));
    assert!(
        log[1..]
            .iter()
            .all(|e| e.actor == "alice" && e.version == Some(1))
    );
    assert!(reg.audit_log(Some("other")).unwrap().is_empty());
}

#[test]
fn every_kind_of_mutation_writes_exactly_one_audit_entry() {
    let (_dir, reg) = open();
    let mut expected = 0;
    let mut step = |reg: &Registry, action: &str| {
        expected += 1;
        assert_eq!(reg.generation().unwrap(), expected, "after {action}");
        let last = reg.audit_log(None).unwrap().pop().unwrap();
        assert_eq!((last.seq, last.action.as_str()), (expected, action));
    };
    register(&reg, "m", b"1");
    step(&reg, "register");
    register(&reg, "m", b"2");
    step(&reg, "register");
    reg.transition_stage("m", 1, Stage::Production, true, "t")
        .unwrap();
    step(&reg, "transition_stage");
    reg.transition_stage("m", 2, Stage::Production, true, "t")
        .unwrap();
    step(&reg, "transition_stage");
    reg.set_alias("m", "champion", 2, "t").unwrap();
    step(&reg, "set_alias");
    reg.delete_alias("m", "champion", "t").unwrap();
    step(&reg, "delete_alias");
    reg.set_tag("m", 2, "k", "v", "t").unwrap();
    step(&reg, "set_tag");
    reg.delete_tag("m", 2, "k", "t").unwrap();
    step(&reg, "delete_tag");
    reg.set_description("m", 2, "d", "t").unwrap();
    step(&reg, "set_description");
    reg.delete_version("m", 1, false, "t").unwrap();
    step(&reg, "delete_version");

    // Calls that change nothing or fail leave the log alone.
    reg.set_tag("m", 2, "framework", "onnx", "t").unwrap();
    reg.set_description("m", 2, "d", "t").unwrap();
    reg.register(new_version("m", b"2"), "t").unwrap();
    assert!(reg.delete_version("m", 2, false, "t").is_err());
    assert_eq!(reg.generation().unwrap(), 10);
    let report = reg.verify_audit().unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.entries, 10);
}

#[test]
fn state_survives_reopening_and_the_schema_is_versioned() {
    let (dir, reg) = open();
    register(&reg, "m", b"1");
    reg.set_alias("m", "champion", 1, "t").unwrap();
    let home = reg.home().to_path_buf();
    drop(reg);
    let reg = Registry::open(&home).unwrap();
    assert_eq!(reg.resolve("m@champion").unwrap().version, 1);
    assert_eq!(reg.generation().unwrap(), 2);
    let conn = raw(&reg);
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let migrations: i64 = conn
        .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        migrations, 6,
        "initial schema + fleet and rollouts + API tokens + rollout pause times + fleet serving policies + reference profiles"
    );

    // A registry written by a newer kiln is refused instead of misread.
    conn.execute("INSERT INTO schema_migrations VALUES (99, 'future', 'now')", [])
        .unwrap();
    drop(reg);
    let err = Registry::open(&home).unwrap_err();
    assert!(
        matches!(err, RegistryError::Conflict(ref m) if m.contains("upgrade kiln")),
        "{err}"
    );
    drop(dir);
}
