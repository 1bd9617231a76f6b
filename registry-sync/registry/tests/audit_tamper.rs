//! The audit chain names the entry that was edited, deleted or inserted behind the
//! registry's back (raw SQL on the database file, as an attacker with file access would).

mod common;

use common::{open, raw, register};
use kiln_registry::{AuditEntry, Registry, Stage, canonical_json, entry_hash};
use rusqlite::params;

/// A registry with exactly 9 audit entries.
fn registry_with_nine_entries() -> (tempfile::TempDir, Registry) {
    let (dir, reg) = open();
    register(&reg, "m", b"1"); // 1
    register(&reg, "m", b"2"); // 2
    reg.transition_stage("m", 1, Stage::Staging, true, "t").unwrap(); // 3
    reg.transition_stage("m", 1, Stage::Production, true, "t")
        .unwrap(); // 4
    reg.set_alias("m", "champion", 1, "t").unwrap(); // 5
    reg.set_tag("m", 2, "k", "v", "t").unwrap(); // 6
    reg.transition_stage("m", 2, Stage::Production, true, "t")
        .unwrap(); // 7
    reg.set_description("m", 2, "d", "t").unwrap(); // 8
    reg.delete_alias("m", "champion", "t").unwrap(); // 9
    let report = reg.verify_audit().unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.entries, 9);
    (dir, reg)
}

fn problems(reg: &Registry) -> Vec<String> {
    reg.verify_audit().unwrap().problems
}

fn entry(reg: &Registry, seq: u64) -> AuditEntry {
    reg.audit_log(None)
        .unwrap()
        .into_iter()
        .find(|e| e.seq == seq)
        .unwrap()
}

/// Moves entries with seq >= `from` up by one, leaving `from` free.
fn shift_up(conn: &rusqlite::Connection, from: u64) {
    conn.execute("UPDATE audit SET seq = -seq WHERE seq >= ?1", [from])
        .unwrap();
    conn.execute("UPDATE audit SET seq = 1 - seq WHERE seq < 0", [])
        .unwrap();
}

fn insert(conn: &rusqlite::Connection, e: &AuditEntry) {
    conn.execute(
        "INSERT INTO audit (seq, time, actor, action, model, version, before, after, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            e.seq,
            e.time,
            e.actor,
            e.action,
            e.model,
            e.version,
            canonical_json(&e.before),
            canonical_json(&e.after),
            e.prev_hash,
            e.hash
        ],
    )
    .unwrap();
}

#[test]
fn an_edited_entry_is_named() {
    let (_dir, reg) = registry_with_nine_entries();
    raw(&reg)
        .execute(
            "UPDATE audit SET after = '{\"stage\":\"Archived\"}' WHERE seq = 7",
            [],
        )
        .unwrap();
    assert_eq!(
        problems(&reg),
        ["entry 7 was edited (its hash does not match its content)"]
    );
}

#[test]
fn several_edits_are_all_named_and_an_unparseable_edit_too() {
    let (_dir, reg) = registry_with_nine_entries();
    let conn = raw(&reg);
    conn.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 2", [])
        .unwrap();
    conn.execute("UPDATE audit SET before = 'not json' WHERE seq = 6", [])
        .unwrap();
    assert_eq!(
        problems(&reg),
        [
            "entry 2 was edited (its hash does not match its content)",
            "entry 6 was edited (its hash does not match its content)"
        ]
    );
}

#[test]
fn a_deleted_middle_entry_is_named() {
    let (_dir, reg) = registry_with_nine_entries();
    raw(&reg).execute("DELETE FROM audit WHERE seq = 5", []).unwrap();
    assert_eq!(problems(&reg), ["entry 5 is missing (deleted)"]);
    raw(&reg)
        .execute("DELETE FROM audit WHERE seq IN (1, 2)", [])
        .unwrap();
    assert_eq!(problems(&reg), ["entries 1-2 are missing (deleted)"]);
}

#[test]
fn an_inserted_entry_is_named_even_when_forged_with_a_valid_hash() {
    let (_dir, reg) = registry_with_nine_entries();
    let conn = raw(&reg);
    let fourth = entry(&reg, 4);
    shift_up(&conn, 5);
    let mut forged = AuditEntry {
        seq: 5,
        time: fourth.time.clone(),
        actor: "mallory".into(),
        action: "set_alias".into(),
        model: "m".into(),
        version: Some(2),
        before: serde_json::Value::Null,
        after: serde_json::json!({"alias": "backdoor", "version": 2}),
        prev_hash: fourth.hash.clone(),
        hash: String::new(),
    };
    forged.hash = entry_hash(&forged);
    insert(&conn, &forged);
    assert_eq!(problems(&reg), ["entry 5 was inserted (entry 6 follows entry 4)"]);
}

#[test]
fn an_inserted_entry_with_a_wrong_link_is_named() {
    let (_dir, reg) = registry_with_nine_entries();
    let conn = raw(&reg);
    shift_up(&conn, 3);
    let mut forged = entry(&reg, 2);
    forged.seq = 3;
    forged.prev_hash = "ab".repeat(32);
    forged.hash = entry_hash(&forged);
    insert(&conn, &forged);
    assert_eq!(
        problems(&reg),
        ["entry 3 does not follow entry 2 (inserted or reordered)"]
    );
}

#[test]
fn an_entry_appended_outside_the_registry_is_named() {
    let (_dir, reg) = registry_with_nine_entries();
    let mut forged = entry(&reg, 9);
    forged.prev_hash = forged.hash.clone();
    forged.seq = 10;
    forged.hash = entry_hash(&forged);
    insert(&raw(&reg), &forged);
    assert_eq!(
        problems(&reg),
        ["entry 10 was added outside the registry (the audit head records 9 entries)"]
    );
}

#[test]
fn a_deleted_tail_is_detected_through_the_audit_head() {
    let (_dir, reg) = registry_with_nine_entries();
    raw(&reg).execute("DELETE FROM audit WHERE seq >= 8", []).unwrap();
    assert_eq!(
        problems(&reg),
        ["entries 8-9 are missing (deleted from the end of the log, which held 9 entries)"]
    );
}

#[test]
fn a_deleted_last_entry_and_a_deleted_head_are_detected() {
    let (_dir, reg) = registry_with_nine_entries();
    raw(&reg).execute("DELETE FROM audit WHERE seq = 9", []).unwrap();
    assert_eq!(
        problems(&reg),
        ["entry 9 is missing (deleted from the end of the log, which held 9 entries)"]
    );
    raw(&reg).execute("DELETE FROM audit_head", []).unwrap();
    assert_eq!(problems(&reg), ["the audit head row is missing (deleted)"]);
}

#[test]
fn reordered_entries_are_detected() {
    let (_dir, reg) = registry_with_nine_entries();
    let conn = raw(&reg);
    conn.execute("UPDATE audit SET seq = 100 WHERE seq = 3", [])
        .unwrap();
    conn.execute("UPDATE audit SET seq = 3 WHERE seq = 4", [])
        .unwrap();
    conn.execute("UPDATE audit SET seq = 4 WHERE seq = 100", [])
        .unwrap();
    assert_eq!(
        problems(&reg),
        ["entry 3 does not follow entry 2 (inserted or reordered)"]
    );
}

#[test]
fn the_chain_keeps_growing_correctly_after_reopening() {
    let (_dir, reg) = registry_with_nine_entries();
    let home = reg.home().to_path_buf();
    drop(reg);
    let reg = Registry::open(&home).unwrap();
    reg.set_tag("m", 1, "after", "reopen", "t").unwrap();
    let log = reg.audit_log(None).unwrap();
    assert_eq!(log.len(), 10);
    assert_eq!(log[0].prev_hash, kiln_registry::GENESIS_HASH);
    for pair in log.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    assert!(reg.verify_audit().unwrap().ok());
}
