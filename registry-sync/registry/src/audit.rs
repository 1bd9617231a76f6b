//! The hash-chained audit log.
//!
//! Each entry's hash covers its content and the previous entry's hash, so editing,
//! inserting, deleting or reordering entries breaks the chain at a place `verify` can name.
//! A chain cannot show that its newest entries were cut off, so the head (count and last
//! hash) is also kept in the one-row `audit_head` table, updated in the same transaction.
//! Hashes are over a canonical JSON form (sorted keys, no spaces) built here rather than
//! by serde_json's map ordering, which changes with its `preserve_order` feature.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::Value;

use crate::error::RegistryError;
use crate::model::{AuditEntry, AuditReport};
use kiln_types::format::now_rfc3339;

/// `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Appends one entry inside the caller's transaction and moves the head; returns its seq.
#[allow(clippy::too_many_arguments)]
pub(crate) fn append(
    tx: &Transaction<'_>,
    actor: &str,
    action: &str,
    model: &str,
    version: Option<u64>,
    before: Value,
    after: Value,
) -> Result<u64, RegistryError> {
    let head: Option<(u64, String)> = tx
        .query_row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    let (seq, prev_hash) = match head {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, GENESIS_HASH.to_string()),
    };
    let mut entry = AuditEntry {
        seq,
        time: now_rfc3339(),
        actor: actor.to_string(),
        action: action.to_string(),
        model: model.to_string(),
        version,
        before,
        after,
        prev_hash,
        hash: String::new(),
    };
    entry.hash = entry_hash(&entry);
    tx.execute(
        "INSERT INTO audit (seq, time, actor, action, model, version, before, after, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            entry.seq,
            entry.time,
            entry.actor,
            entry.action,
            entry.model,
            entry.version,
            canonical_json(&entry.before),
            canonical_json(&entry.after),
            entry.prev_hash,
            entry.hash,
        ],
    )?;
    tx.execute(
        "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        params![entry.seq, entry.hash],
    )?;
    Ok(seq)
}

/// Hex SHA-256 over the canonical serialisation of everything but the hash itself.
pub fn entry_hash(entry: &AuditEntry) -> String {
    let content = Value::Array(vec![
        Value::from(entry.seq),
        Value::from(entry.time.as_str()),
        Value::from(entry.actor.as_str()),
        Value::from(entry.action.as_str()),
        Value::from(entry.model.as_str()),
        entry.version.map_or(Value::Null, Value::from),
        entry.before.clone(),
        entry.after.clone(),
        Value::from(entry.prev_hash.as_str()),
    ]);
    kiln_types::digest(canonical_json(&content).as_bytes())
}

/// JSON with object keys sorted at every level and no insignificant whitespace.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Entries in seq order, optionally only those about one model.
pub(crate) fn list(conn: &Connection, model: Option<&str>) -> Result<Vec<AuditEntry>, RegistryError> {
    let mut stmt = conn.prepare(
        "SELECT seq, time, actor, action, model, version, before, after, prev_hash, hash
         FROM audit WHERE ?1 IS NULL OR model = ?1 ORDER BY seq",
    )?;
    let rows = stmt.query_map([model], |row| {
        Ok((
            row.get::<_, u64>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, String>(4)?,
            row.get::<_, Option<u64>>(5)?,
            row.get::<_, String>(6)?,
            row.get::<_, String>(7)?,
            row.get::<_, String>(8)?,
            row.get::<_, String>(9)?,
        ))
    })?;
    let mut entries = Vec::new();
    for row in rows {
        let (seq, time, actor, action, model, version, before, after, prev_hash, hash) = row?;
        // A row whose JSON no longer parses is kept visible (as a string) so that
        // verification can report it as edited instead of failing outright.
        let parse = |text: String| serde_json::from_str(&text).unwrap_or(Value::String(text));
        entries.push(AuditEntry {
            seq,
            time,
            actor,
            action,
            model,
            version,
            before: parse(before),
            after: parse(after),
            prev_hash,
            hash,
        });
    }
    Ok(entries)
}

/// Walks the chain and the head; reports every edited entry and the first break in order.
///
/// After a break (missing, inserted or reordered entries) the walk stops, because every
/// later entry would be reported again for the same cause.
pub(crate) fn verify(conn: &Connection) -> Result<AuditReport, RegistryError> {
    let entries = list(conn, None)?;
    let head: Option<(u64, String)> = conn
        .query_row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    let mut problems = Vec::new();
    let mut broken = false;
    let mut prev: Option<&AuditEntry> = None;
    let mut prev_prev_hash: Option<&str> = None;
    for entry in &entries {
        let expected_seq = prev.map_or(1, |p| p.seq + 1);
        let expected_prev_hash = prev.map_or(GENESIS_HASH, |p| p.hash.as_str());
        if entry.seq > expected_seq {
            problems.push(missing(expected_seq, entry.seq - 1, ""));
            broken = true;
            break;
        }
        if entry.prev_hash != expected_prev_hash {
            let after = prev.map_or("the start of the log".to_string(), |p| format!("entry {}", p.seq));
            if let (Some(p), Some(pp)) = (prev, prev_prev_hash)
                && entry.prev_hash == pp
            {
                let follows = match p.seq - 1 {
                    0 => "the start of the log".to_string(),
                    n => format!("entry {n}"),
                };
                problems.push(format!(
                    "entry {} was inserted (entry {} follows {follows})",
                    p.seq, entry.seq
                ));
            } else {
                problems.push(format!(
                    "entry {} does not follow {after} (inserted or reordered)",
                    entry.seq
                ));
            }
            broken = true;
            break;
        }
        if entry_hash(entry) != entry.hash {
            problems.push(format!(
                "entry {} was edited (its hash does not match its content)",
                entry.seq
            ));
        }
        prev_prev_hash = Some(expected_prev_hash);
        prev = Some(entry);
    }
    if !broken {
        let last_seq = prev.map_or(0, |p| p.seq);
        match &head {
            Some((head_seq, head_hash)) => {
                if *head_seq > last_seq {
                    problems.push(missing(
                        last_seq + 1,
                        *head_seq,
                        &format!(" from the end of the log, which held {head_seq} entries"),
                    ));
                } else if *head_seq < last_seq {
                    problems.push(format!(
                        "entry {} was added outside the registry (the audit head records {head_seq} entries)",
                        head_seq + 1
                    ));
                } else if prev.is_some_and(|p| &p.hash != head_hash) {
                    problems.push(format!(
                        "entry {last_seq} was replaced (its hash differs from the one recorded in the audit head)"
                    ));
                }
            }
            None if last_seq > 0 => {
                problems.push("the audit head row is missing (deleted)".to_string());
            }
            None => {}
        }
    }
    Ok(AuditReport {
        entries: entries.len() as u64,
        problems,
    })
}

fn missing(first: u64, last: u64, where_: &str) -> String {
    if first == last {
        format!("entry {first} is missing (deleted{where_})")
    } else {
        format!("entries {first}-{last} are missing (deleted{where_})")
    }
}

/// Seq of the newest entry, 0 for an empty log; cheap enough to poll.
pub(crate) fn head_seq(conn: &Connection) -> Result<u64, RegistryError> {
    Ok(conn
        .query_row("SELECT seq FROM audit_head WHERE id = 1", [], |row| row.get(0))
        .optional()?
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"d":[1,{"z":1,"y":2}],"c":"x"}}"#).unwrap();
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"c":"x","d":[1,{"y":2,"z":1}]},"b":1}"#
        );
        assert_eq!(canonical_json(&json!("é\"")), "\"é\\\"\"");
    }

    #[test]
    fn entry_hash_changes_with_every_field() {
        let base = AuditEntry {
            seq: 1,
            time: "t".into(),
            actor: "a".into(),
            action: "register".into(),
            model: "m".into(),
            version: Some(1),
            before: Value::Null,
            after: json!({"x": 1}),
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
        };
        let h = entry_hash(&base);
        let variants = [
            AuditEntry {
                seq: 2,
                ..base.clone()
            },
            AuditEntry {
                time: "u".into(),
                ..base.clone()
            },
            AuditEntry {
                actor: "b".into(),
                ..base.clone()
            },
            AuditEntry {
                action: "set_tag".into(),
                ..base.clone()
            },
            AuditEntry {
                model: "n".into(),
                ..base.clone()
            },
            AuditEntry {
                version: None,
                ..base.clone()
            },
            AuditEntry {
                before: json!({}),
                ..base.clone()
            },
            AuditEntry {
                after: json!({"x": 2}),
                ..base.clone()
            },
            AuditEntry {
                prev_hash: "1".repeat(64),
                ..base.clone()
            },
        ];
        for v in variants {
            assert_ne!(entry_hash(&v), h, "{v:?}");
        }
    }
}
