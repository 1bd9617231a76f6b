//! Every state change. Each runs in one IMMEDIATE transaction that also appends its audit
//! entry, so the log and the state cannot disagree. IMMEDIATE (write lock taken up front)
//! matters twice: a WAL reader upgraded to writer gets SQLITE_BUSY without waiting, and the
//! lock also orders blob writes against blob garbage collection in other processes.
//! A call that would change nothing (same stage, same alias target, same tag value) writes
//! no entry and leaves the generation alone, so servers do not reload for nothing.

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde_json::{Value, json};

use crate::audit;
use crate::error::RegistryError;
use crate::model::{ModelVersion, NewVersion, Stage};
use crate::model::{normalize_digest, validate_alias, validate_name, validate_tag_key};
use crate::registry::Registry;
use crate::registry::{ensure_model, ensure_version, get_version};
use kiln_types::format::now_rfc3339;

/// Where a registered component's bytes come from.
enum ComponentSource<'a> {
    /// In memory.
    Bytes(&'a [u8]),
    /// A file (an upload staged on disk), with its digest and size hashed beforehand.
    File {
        path: &'a std::path::Path,
        digest: String,
        size: u64,
    },
}

/// What a stage transition did, for callers that report it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StageTransition {
    /// The version after the transition.
    pub version: ModelVersion,
    /// Its stage before.
    pub previous: Stage,
    /// Other versions moved to Archived because of `archive_existing`.
    pub archived: Vec<u64>,
}

impl Registry {
    /// Registers a component; returns the version and whether it was newly created.
    ///
    /// The same component under the same name returns the existing version unchanged.
    /// A new component gets one more than the highest version number the model ever had.
    pub fn register(&self, mut req: NewVersion, actor: &str) -> Result<(ModelVersion, bool), RegistryError> {
        let component = std::mem::take(&mut req.component);
        self.register_from(req, ComponentSource::Bytes(&component), actor)
    }

    /// [`Registry::register`] of the component in the file at `path` (`req.component` is
    /// ignored): hashed and copied into the blob store in pieces, never held whole; the file
    /// is left in place. A file that changes between the hash and the copy stores nothing
    /// (`Conflict`).
    pub fn register_file(
        &self,
        req: NewVersion,
        path: &std::path::Path,
        actor: &str,
    ) -> Result<(ModelVersion, bool), RegistryError> {
        let (digest, size) = std::fs::File::open(path)
            .and_then(kiln_types::digest_reader)
            .map_err(|e| {
                RegistryError::Storage(anyhow::Error::new(e).context(format!("reading {}", path.display())))
            })?;
        self.register_from(req, ComponentSource::File { path, digest, size }, actor)
    }

    fn register_from(
        &self,
        req: NewVersion,
        component: ComponentSource<'_>,
        actor: &str,
    ) -> Result<(ModelVersion, bool), RegistryError> {
        validate_name(&req.name)?;
        let empty = match &component {
            ComponentSource::Bytes(bytes) => bytes.is_empty(),
            ComponentSource::File { size, .. } => *size == 0,
        };
        if empty {
            return Err(RegistryError::Invalid(format!(
                "cannot register an empty component as '{}'; pass a compiled .wasm or an .onnx model",
                req.name
            )));
        }
        for key in req.tags.keys() {
            validate_tag_key(key)?;
        }
        let lineage = match req.lineage {
            Value::Null => json!({}),
            Value::Object(map) => Value::Object(map),
            other => {
                return Err(RegistryError::Invalid(format!(
                    "lineage must be a JSON object (run id, params, metrics, ...), got {}",
                    json_kind(&other)
                )));
            }
        };
        let source_digest = req.source_digest.as_deref().map(normalize_digest).transpose()?;
        let (digest, size) = match &component {
            ComponentSource::Bytes(bytes) => (kiln_types::digest(bytes), bytes.len() as u64),
            ComponentSource::File { digest, size, .. } => (digest.clone(), *size),
        };

        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing: Option<u64> = tx.query_row(
            "SELECT MIN(version) FROM versions WHERE name = ?1 AND digest = ?2",
            params![req.name, digest],
            |row| row.get(0),
        )?;
        // Written (or repaired) while holding the write lock and before the row commits.
        match &component {
            ComponentSource::Bytes(bytes) => self.blobs.put(&digest, bytes)?,
            ComponentSource::File { path, .. } => self.blobs.put_file(&digest, path)?,
        }
        if let Some(version) = existing {
            let found = get_version(&tx, &req.name, version)?;
            tx.commit()?;
            return Ok((found, false));
        }
        let now = now_rfc3339();
        tx.execute(
            "INSERT INTO models (name, next_version, created_at) VALUES (?1, 1, ?2)
             ON CONFLICT (name) DO NOTHING",
            params![req.name, now],
        )?;
        let version: u64 = tx.query_row(
            "UPDATE models SET next_version = next_version + 1 WHERE name = ?1 RETURNING next_version - 1",
            [&req.name],
            |row| row.get(0),
        )?;
        tx.execute(
            "INSERT INTO versions (name, version, digest, source_digest, created_at, description,
                                   stage, lineage, signature, size)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'None', ?7, ?8, ?9)",
            params![
                req.name,
                version,
                digest,
                source_digest,
                now,
                req.description,
                lineage.to_string(),
                req.signature.to_string(),
                size
            ],
        )?;
        for (key, value) in &req.tags {
            tx.execute(
                "INSERT INTO tags (name, version, key, value) VALUES (?1, ?2, ?3, ?4)",
                params![req.name, version, key, value],
            )?;
        }
        for (idx, pair) in req.golden.iter().enumerate() {
            tx.execute(
                "INSERT INTO golden (name, version, idx, request, response) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    req.name,
                    version,
                    idx as u64,
                    pair.request.to_string(),
                    pair.response.to_string()
                ],
            )?;
        }
        audit::append(
            &tx,
            actor,
            "register",
            &req.name,
            Some(version),
            Value::Null,
            json!({
                "digest": digest,
                "size": size,
                "source_digest": source_digest,
                "description": req.description,
                "tags": req.tags,
                "stage": Stage::None,
                "golden_pairs": req.golden.len(),
            }),
        )?;
        let created = get_version(&tx, &req.name, version)?;
        tx.commit()?;
        tracing::info!(model = %req.name, version, digest = %digest, size, "registered model version");
        Ok((created, true))
    }

    /// Moves a version to `stage`. With `archive_existing`, a move to Production or Staging
    /// also archives the model's other versions in that stage (MLflow semantics).
    pub fn transition_stage(
        &self,
        name: &str,
        version: u64,
        stage: Stage,
        archive_existing: bool,
        actor: &str,
    ) -> Result<ModelVersion, RegistryError> {
        self.transition_stage_detailed(name, version, stage, archive_existing, actor)
            .map(|t| t.version)
    }

    /// [`Registry::transition_stage`], also saying what changed.
    pub fn transition_stage_detailed(
        &self,
        name: &str,
        version: u64,
        stage: Stage,
        archive_existing: bool,
        actor: &str,
    ) -> Result<StageTransition, RegistryError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current = get_version(&tx, name, version)?;
        let mut archived = Vec::new();
        if archive_existing && matches!(stage, Stage::Production | Stage::Staging) {
            let mut stmt = tx.prepare(
                "SELECT version FROM versions WHERE name = ?1 AND stage = ?2 AND version != ?3 ORDER BY version",
            )?;
            archived = stmt
                .query_map(params![name, stage.as_str(), version], |row| row.get(0))?
                .collect::<Result<Vec<u64>, _>>()?;
        }
        if current.stage == stage && archived.is_empty() {
            return Ok(StageTransition {
                previous: current.stage,
                version: current,
                archived,
            });
        }
        for other in &archived {
            tx.execute(
                "UPDATE versions SET stage = 'Archived' WHERE name = ?1 AND version = ?2",
                params![name, other],
            )?;
        }
        let extra = if archived.is_empty() {
            Value::Null
        } else {
            json!({ "archived_versions": archived })
        };
        write_stage(&tx, name, version, current.stage, stage, actor, extra)?;
        let updated = get_version(&tx, name, version)?;
        tx.commit()?;
        tracing::info!(model = %name, version, from = %current.stage, to = %stage, ?archived, "stage transition");
        Ok(StageTransition {
            version: updated,
            previous: current.stage,
            archived,
        })
    }

    /// Points `alias` at `version`, moving it if it pointed elsewhere.
    pub fn set_alias(
        &self,
        name: &str,
        alias: &str,
        version: u64,
        actor: &str,
    ) -> Result<ModelVersion, RegistryError> {
        validate_alias(alias)?;
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        ensure_version(&tx, name, version)?;
        write_alias(&tx, name, alias, Some(version), actor, Value::Null)?;
        let updated = get_version(&tx, name, version)?;
        tx.commit()?;
        Ok(updated)
    }

    /// Removes an alias.
    pub fn delete_alias(&self, name: &str, alias: &str, actor: &str) -> Result<(), RegistryError> {
        validate_alias(alias)?;
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        ensure_model(&tx, name)?;
        if write_alias(&tx, name, alias, None, actor, Value::Null)?.is_none() {
            return Err(RegistryError::NotFound(format!(
                "model '{name}' has no alias '{alias}'"
            )));
        }
        tx.commit()?;
        Ok(())
    }

    /// Sets one tag of a version.
    pub fn set_tag(
        &self,
        name: &str,
        version: u64,
        key: &str,
        value: &str,
        actor: &str,
    ) -> Result<ModelVersion, RegistryError> {
        validate_tag_key(key)?;
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        ensure_version(&tx, name, version)?;
        let old: Option<String> = tx
            .query_row(
                "SELECT value FROM tags WHERE name = ?1 AND version = ?2 AND key = ?3",
                params![name, version, key],
                |row| row.get(0),
            )
            .optional()?;
        if old.as_deref() != Some(value) {
            tx.execute(
                "INSERT INTO tags (name, version, key, value) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name, version, key) DO UPDATE SET value = excluded.value",
                params![name, version, key, value],
            )?;
            let before = old.map_or(Value::Null, |v| json!({ "key": key, "value": v }));
            audit::append(
                &tx,
                actor,
                "set_tag",
                name,
                Some(version),
                before,
                json!({ "key": key, "value": value }),
            )?;
        }
        let updated = get_version(&tx, name, version)?;
        tx.commit()?;
        Ok(updated)
    }

    /// Removes one tag of a version.
    pub fn delete_tag(
        &self,
        name: &str,
        version: u64,
        key: &str,
        actor: &str,
    ) -> Result<ModelVersion, RegistryError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        ensure_version(&tx, name, version)?;
        let old: String = tx
            .query_row(
                "SELECT value FROM tags WHERE name = ?1 AND version = ?2 AND key = ?3",
                params![name, version, key],
                |row| row.get(0),
            )
            .optional()?
            .ok_or_else(|| RegistryError::NotFound(format!("{name} version {version} has no tag '{key}'")))?;
        tx.execute(
            "DELETE FROM tags WHERE name = ?1 AND version = ?2 AND key = ?3",
            params![name, version, key],
        )?;
        audit::append(
            &tx,
            actor,
            "delete_tag",
            name,
            Some(version),
            json!({ "key": key, "value": old }),
            Value::Null,
        )?;
        let updated = get_version(&tx, name, version)?;
        tx.commit()?;
        Ok(updated)
    }

    /// Replaces the description of a version.
    pub fn set_description(
        &self,
        name: &str,
        version: u64,
        text: &str,
        actor: &str,
    ) -> Result<ModelVersion, RegistryError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current = get_version(&tx, name, version)?;
        if current.description != text {
            tx.execute(
                "UPDATE versions SET description = ?3 WHERE name = ?1 AND version = ?2",
                params![name, version, text],
            )?;
            audit::append(
                &tx,
                actor,
                "set_description",
                name,
                Some(version),
                json!({ "description": current.description }),
                json!({ "description": text }),
            )?;
        }
        let updated = get_version(&tx, name, version)?;
        tx.commit()?;
        Ok(updated)
    }

    /// Deletes a version with its tags, aliases and golden pairs; refused for a Production
    /// version unless `force`. Its number is never reused; its blob goes once unreferenced.
    pub fn delete_version(
        &self,
        name: &str,
        version: u64,
        force: bool,
        actor: &str,
    ) -> Result<(), RegistryError> {
        let digest = {
            let mut conn = self.lock();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current = get_version(&tx, name, version)?;
            if current.stage == Stage::Production && !force {
                return Err(RegistryError::Conflict(format!(
                    "{name} version {version} is in Production; promote another version first, \
                     or force the deletion (--force) if serving must stop"
                )));
            }
            for table in ["aliases", "tags", "golden", "reference_profiles", "versions"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE name = ?1 AND version = ?2"),
                    params![name, version],
                )?;
            }
            audit::append(
                &tx,
                actor,
                "delete_version",
                name,
                Some(version),
                json!({
                    "digest": current.digest,
                    "stage": current.stage,
                    "aliases": current.aliases,
                    "tags": current.tags,
                }),
                Value::Null,
            )?;
            tx.commit()?;
            tracing::info!(model = %name, version, force, "deleted model version");
            current.digest
        };
        self.collect_blob(&digest)
    }

    /// Deletes a blob no version references. Runs under the write lock so a concurrent
    /// register of the same component (which writes the blob under that lock) cannot lose it.
    fn collect_blob(&self, digest: &str) -> Result<(), RegistryError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let referenced: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM versions WHERE digest = ?1)",
            [digest],
            |row| row.get(0),
        )?;
        if !referenced {
            self.blobs.remove(digest)?;
            tracing::debug!(digest, "removed unreferenced blob");
        }
        tx.commit()?;
        Ok(())
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Moves `version` from stage `before` to `stage` inside `tx` and appends its
/// `transition_stage` entry; `extra` (an object, or null) is merged into the entry's
/// `after`. The caller has checked that something changes.
pub(crate) fn write_stage(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    version: u64,
    before: Stage,
    stage: Stage,
    actor: &str,
    extra: Value,
) -> Result<(), RegistryError> {
    tx.execute(
        "UPDATE versions SET stage = ?3 WHERE name = ?1 AND version = ?2",
        params![name, version, stage.as_str()],
    )?;
    let mut after = json!({ "stage": stage });
    if let (Some(after), Value::Object(extra)) = (after.as_object_mut(), extra) {
        after.extend(extra);
    }
    audit::append(
        tx,
        actor,
        "transition_stage",
        name,
        Some(version),
        json!({ "stage": before }),
        after,
    )?;
    Ok(())
}

/// Points `alias` at `version` (`None` deletes it) inside `tx`, appending a `set_alias` or
/// `delete_alias` entry when that changes anything; `extra` (an object, or null) is merged
/// into the entry's `after`. Returns where the alias pointed before.
pub(crate) fn write_alias(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    alias: &str,
    version: Option<u64>,
    actor: &str,
    extra: Value,
) -> Result<Option<u64>, RegistryError> {
    let old: Option<u64> = tx
        .query_row(
            "SELECT version FROM aliases WHERE name = ?1 AND alias = ?2",
            params![name, alias],
            |row| row.get(0),
        )
        .optional()?;
    if old == version {
        return Ok(old);
    }
    let mut after = match version {
        Some(v) => {
            tx.execute(
                "INSERT INTO aliases (name, alias, version) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version",
                params![name, alias, v],
            )?;
            json!({ "alias": alias, "version": v })
        }
        None => {
            tx.execute(
                "DELETE FROM aliases WHERE name = ?1 AND alias = ?2",
                params![name, alias],
            )?;
            Value::Null
        }
    };
    if let Value::Object(extra) = extra {
        match after.as_object_mut() {
            Some(a) => a.extend(extra),
            None => after = Value::Object(extra),
        }
    }
    audit::append(
        tx,
        actor,
        if version.is_some() {
            "set_alias"
        } else {
            "delete_alias"
        },
        name,
        version.or(old),
        old.map_or(Value::Null, |v| json!({ "alias": alias, "version": v })),
        after,
    )?;
    Ok(old)
}
