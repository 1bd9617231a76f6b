//! A version's reference profile: the statistics of the data it was trained or validated
//! on, which drift is measured against. The registry stores it opaque (the profile's JSON,
//! made by `kiln-monitor`), with the feature names and the row count it summarises, so that
//! the store needs nothing of the statistics.

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit;
use crate::error::RegistryError;
use crate::registry::{Registry, ensure_version};
use kiln_types::format::now_rfc3339;

/// The largest profile the registry keeps (its JSON): a profile is bounded by design
/// (exact values up to a cap per column, then a sketch), so anything past this is a mistake.
pub const MAX_PROFILE_BYTES: usize = 64 << 20;

/// A version's reference profile as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReferenceProfile {
    /// Input feature names, in feature-position order.
    pub features: Vec<String>,
    /// Rows the profile summarises.
    pub rows: u64,
    /// Where it came from (a file name, an MLflow dataset), for people.
    pub source: String,
    /// The profile itself: `kiln_monitor::profile::TableProfile` as JSON.
    pub profile: String,
    /// When it was set, and by whom (filled in by the registry).
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub created_by: String,
}

impl Registry {
    /// Sets (or replaces) the reference profile of `name`/`version`, with its audit entry.
    pub fn set_reference(
        &self,
        name: &str,
        version: u64,
        reference: &ReferenceProfile,
        actor: &str,
    ) -> Result<ReferenceProfile, RegistryError> {
        if reference.profile.len() > MAX_PROFILE_BYTES {
            return Err(RegistryError::Invalid(format!(
                "the reference profile is {} bytes, above the registry's limit of {MAX_PROFILE_BYTES}",
                reference.profile.len()
            )));
        }
        if reference.features.is_empty() {
            return Err(RegistryError::Invalid(
                "a reference profile needs at least one feature".to_string(),
            ));
        }
        let features = serde_json::to_string(&reference.features)
            .map_err(|e| RegistryError::Invalid(format!("feature names: {e}")))?;
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        ensure_version(&tx, name, version)?;
        let before: Option<(u64, String)> = tx
            .query_row(
                "SELECT rows, source FROM reference_profiles WHERE name = ?1 AND version = ?2",
                params![name, version],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let now = now_rfc3339();
        tx.execute(
            "INSERT INTO reference_profiles (name, version, features, rows, source, profile, created_at, created_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (name, version) DO UPDATE SET features = excluded.features, rows = excluded.rows,
                 source = excluded.source, profile = excluded.profile, created_at = excluded.created_at,
                 created_by = excluded.created_by",
            params![name, version, features, reference.rows, reference.source, reference.profile, now, actor],
        )?;
        audit::append(
            &tx,
            actor,
            "set_reference",
            name,
            Some(version),
            before.map_or(
                serde_json::Value::Null,
                |(rows, source)| json!({ "rows": rows, "source": source }),
            ),
            json!({
                "rows": reference.rows,
                "features": reference.features.len(),
                "source": reference.source,
                "profile_sha256": kiln_types::digest(reference.profile.as_bytes()),
            }),
        )?;
        tx.commit()?;
        Ok(ReferenceProfile {
            created_at: now,
            created_by: actor.to_string(),
            ..reference.clone()
        })
    }

    /// The reference profile of `name`/`version`, if one was set.
    pub fn reference(&self, name: &str, version: u64) -> Result<Option<ReferenceProfile>, RegistryError> {
        let conn = self.lock();
        ensure_version(&conn, name, version)?;
        let row: Option<(String, u64, String, String, String, String)> = conn
            .query_row(
                "SELECT features, rows, source, profile, created_at, created_by
                 FROM reference_profiles WHERE name = ?1 AND version = ?2",
                params![name, version],
                |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                    ))
                },
            )
            .optional()?;
        let Some((features, rows, source, profile, created_at, created_by)) = row else {
            return Ok(None);
        };
        let features = serde_json::from_str(&features).map_err(|e| {
            RegistryError::Corrupt(format!(
                "the feature names of {name}/{version}'s reference profile: {e}"
            ))
        })?;
        Ok(Some(ReferenceProfile {
            features,
            rows,
            source,
            profile,
            created_at,
            created_by,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    #[test]
    fn a_reference_is_set_replaced_audited_and_refused_for_unknown_versions() {
        let (_home, registry) = testing::open();
        let v = testing::register(&registry, "iris", b"component one");
        assert_eq!(registry.reference("iris", v).unwrap(), None);
        let mut reference = ReferenceProfile {
            features: vec!["a".into(), "b".into()],
            rows: 10,
            source: "train.csv".into(),
            profile: "{}".into(),
            created_at: String::new(),
            created_by: String::new(),
        };
        let stored = registry.set_reference("iris", v, &reference, "alice").unwrap();
        assert_eq!(stored.created_by, "alice");
        assert_eq!(registry.reference("iris", v).unwrap(), Some(stored));
        reference.rows = 20;
        registry.set_reference("iris", v, &reference, "bob").unwrap();
        let got = registry.reference("iris", v).unwrap().unwrap();
        assert_eq!((got.rows, got.created_by.as_str()), (20, "bob"));
        let entries: Vec<_> = registry
            .audit_log(Some("iris"))
            .unwrap()
            .into_iter()
            .filter(|e| e.action == "set_reference")
            .collect();
        assert_eq!(entries.len(), 2);
        assert!(matches!(
            registry.reference("iris", v + 1),
            Err(RegistryError::NotFound(_))
        ));
        assert!(matches!(
            registry.set_reference("nope", 1, &reference, "bob"),
            Err(RegistryError::NotFound(_))
        ));
        reference.features.clear();
        assert!(matches!(
            registry.set_reference("iris", v, &reference, "bob"),
            Err(RegistryError::Invalid(_))
        ));
    }
}
