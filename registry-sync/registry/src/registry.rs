//! Opening a registry home and reading from it: lookups, reference resolution, the set of
//! versions a server should load, and the generation counter servers poll.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::blob::BlobStore;
use crate::error::RegistryError;
use crate::model::validate_name;
use crate::model::{AuditEntry, AuditReport, GoldenPair, ModelVersion, Stage};
use crate::{audit, schema};

/// How long a write waits for another process (CLI vs. running server) to finish its own.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A registry home: `registry.db` (SQLite, WAL) plus `blobs/sha256/`.
///
/// One connection behind a mutex: registry calls are short, and SQLite serialises writers
/// anyway. Several `Registry` values (in one or many processes) may share a home.
pub struct Registry {
    pub(crate) conn: Mutex<Connection>,
    pub(crate) blobs: BlobStore,
    home: PathBuf,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("home", &self.home)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Opens (creating if needed) the registry in `home` and brings its schema up to date.
    pub fn open(home: &Path) -> Result<Registry, RegistryError> {
        std::fs::create_dir_all(home).map_err(|e| {
            RegistryError::Storage(anyhow::Error::new(e).context(format!(
                "creating registry home {} (set KILN_HOME to a writable directory)",
                home.display()
            )))
        })?;
        let blobs = BlobStore::open(home)?;
        let db_path = home.join("registry.db");
        let mut conn = Connection::open(&db_path).map_err(|e| {
            RegistryError::Storage(
                anyhow::Error::new(e).context(format!("opening registry database {}", db_path.display())),
            )
        })?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL lets a server keep reading while the CLI writes; FULL sync because registry
        // writes are rare and an acknowledged promotion must survive a power cut.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(
                mode,
                "registry database is not in WAL mode; readers may block writers"
            );
        }
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
        schema::migrate(&mut conn)?;
        let newest: i64 = conn.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |row| row.get(0),
        )?;
        if newest > schema::latest_version() {
            return Err(RegistryError::Conflict(format!(
                "registry {} has schema version {newest}, newer than this kiln understands ({}); upgrade kiln",
                db_path.display(),
                schema::latest_version()
            )));
        }
        Ok(Registry {
            conn: Mutex::new(conn),
            blobs,
            home: home.to_path_buf(),
        })
    }

    /// The home directory this registry lives in.
    pub fn home(&self) -> &Path {
        &self.home
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic mid-call leaves no open transaction behind (it rolls back on drop), so
        // the connection is still usable.
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One version by number.
    pub fn get(&self, name: &str, version: u64) -> Result<ModelVersion, RegistryError> {
        let conn = self.lock();
        get_version(&conn, name, version)
    }

    /// Resolves `name/3`, `name/Production`, `name/latest` or `name@alias`.
    ///
    /// `latest` is the highest-numbered version that is not Archived, so archiving a bad
    /// release makes `latest` fall back to the one before it.
    pub fn resolve(&self, reference: &str) -> Result<ModelVersion, RegistryError> {
        let (name, selector) = split_reference(reference)?;
        self.resolve_in(name, selector)
    }

    /// Resolves a selector within one model: `3`, a stage name (any case), `latest`,
    /// `champion` or `@champion`.
    pub fn resolve_in(&self, name: &str, selector: &str) -> Result<ModelVersion, RegistryError> {
        validate_name(name)?;
        let conn = self.lock();
        let version = resolve_number(&conn, name, selector)?;
        get_version(&conn, name, version)
    }

    /// All versions, or those of one model, ordered by name then version.
    pub fn list(&self, name: Option<&str>) -> Result<Vec<ModelVersion>, RegistryError> {
        let conn = self.lock();
        load_versions(&conn, name, None)
    }

    /// The Production version(s) of a model, highest first (normally exactly one).
    pub fn production(&self, name: &str) -> Result<Vec<ModelVersion>, RegistryError> {
        let mut versions = self.list(Some(name))?;
        versions.retain(|v| v.stage == Stage::Production);
        versions.reverse();
        Ok(versions)
    }

    /// Every version a server should load: in Production or Staging, or named by an alias.
    pub fn served(&self) -> Result<Vec<ModelVersion>, RegistryError> {
        let mut versions = self.list(None)?;
        versions.retain(|v| matches!(v.stage, Stage::Production | Stage::Staging) || !v.aliases.is_empty());
        Ok(versions)
    }

    /// A number that changes with every committed mutation (the newest audit seq), cheap
    /// enough for a server in another process to poll every 100 ms.
    pub fn generation(&self) -> Result<u64, RegistryError> {
        let conn = self.lock();
        audit::head_seq(&conn)
    }

    /// The golden request/response pairs recorded at registration.
    pub fn golden(&self, name: &str, version: u64) -> Result<Vec<GoldenPair>, RegistryError> {
        let conn = self.lock();
        ensure_version(&conn, name, version)?;
        let mut stmt = conn
            .prepare("SELECT request, response FROM golden WHERE name = ?1 AND version = ?2 ORDER BY idx")?;
        let rows = stmt.query_map(params![name, version], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?;
        let mut pairs = Vec::new();
        for row in rows {
            let (request, response) = row?;
            pairs.push(GoldenPair {
                request: parse_json(&request, "golden request")?,
                response: parse_json(&response, "golden response")?,
            });
        }
        Ok(pairs)
    }

    /// Where the blob with this digest lives (whether or not it exists).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.blobs.path(digest)
    }

    /// Reads a blob, failing with `Corrupt` if it no longer hashes to `digest`.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, RegistryError> {
        self.blobs.read(digest)
    }

    /// Opens a blob for streaming, after checking in one pass (without holding its bytes)
    /// that it still hashes to `digest`; `Corrupt` if not.
    pub fn open_blob(&self, digest: &str) -> Result<std::fs::File, RegistryError> {
        self.blobs.open_verified(digest)
    }

    /// Audit entries in order, optionally only those about one model.
    pub fn audit_log(&self, model: Option<&str>) -> Result<Vec<AuditEntry>, RegistryError> {
        let conn = self.lock();
        audit::list(&conn, model)
    }

    /// Checks the audit hash chain and head; see [`AuditReport`].
    pub fn verify_audit(&self) -> Result<AuditReport, RegistryError> {
        let conn = self.lock();
        audit::verify(&conn)
    }
}

/// Splits `name/selector` or `name@alias`.
fn split_reference(reference: &str) -> Result<(&str, &str), RegistryError> {
    let parts = if let Some((name, alias)) = reference.split_once('@') {
        Some((name, reference.len() - alias.len() - 1))
    } else {
        reference.rsplit_once('/').map(|(name, _)| (name, name.len()))
    };
    match parts {
        Some((name, at)) if !name.is_empty() && at + 1 < reference.len() => {
            // Keep the '@' so resolve_in knows an alias was asked for.
            let selector = if reference.as_bytes()[at] == b'@' {
                &reference[at..]
            } else {
                &reference[at + 1..]
            };
            Ok((name, selector))
        }
        _ => Err(RegistryError::Invalid(format!(
            "invalid model reference '{reference}': use NAME/VERSION (house-price/3), NAME/STAGE \
             (house-price/Production), NAME/latest or NAME@ALIAS (house-price@champion)"
        ))),
    }
}

/// The version number a selector names.
pub(crate) fn resolve_number(conn: &Connection, name: &str, selector: &str) -> Result<u64, RegistryError> {
    if selector.is_empty() {
        return Err(RegistryError::Invalid(format!(
            "empty version selector for model '{name}': use a version number, a stage, 'latest' or an alias"
        )));
    }
    if selector.bytes().all(|b| b.is_ascii_digit()) {
        let version: u64 = selector
            .parse()
            .map_err(|_| RegistryError::Invalid(format!("version number '{selector}' is too large")))?;
        ensure_version(conn, name, version)?;
        return Ok(version);
    }
    if selector == "latest" {
        ensure_model(conn, name)?;
        let found: Option<u64> = conn.query_row(
            "SELECT MAX(version) FROM versions WHERE name = ?1 AND stage != 'Archived'",
            [name],
            |row| row.get(0),
        )?;
        return found.ok_or_else(|| {
            RegistryError::NotFound(format!(
                "model '{name}' has no 'latest' version: every version is Archived; \
                 use NAME/VERSION or move a version out of Archived"
            ))
        });
    }
    if let Ok(stage) = selector.parse::<Stage>() {
        ensure_model(conn, name)?;
        let found: Option<u64> = conn.query_row(
            "SELECT MAX(version) FROM versions WHERE name = ?1 AND stage = ?2",
            params![name, stage.as_str()],
            |row| row.get(0),
        )?;
        return found.ok_or_else(|| {
            RegistryError::NotFound(format!(
                "model '{name}' has no version in stage {stage}; promote one with \
                 `kiln models promote {name} VERSION {stage}`"
            ))
        });
    }
    let alias = selector.strip_prefix('@').unwrap_or(selector);
    crate::model::validate_alias(alias).map_err(|_| {
        RegistryError::Invalid(format!(
            "invalid version selector '{selector}' for model '{name}': use a version number, \
             a stage (None, Staging, Production, Archived), 'latest' or an alias such as champion"
        ))
    })?;
    ensure_model(conn, name)?;
    let found: Option<u64> = conn
        .query_row(
            "SELECT version FROM aliases WHERE name = ?1 AND alias = ?2",
            params![name, alias],
            |row| row.get(0),
        )
        .optional()?;
    found.ok_or_else(|| {
        let known = aliases_of_model(conn, name).unwrap_or_default();
        let known = if known.is_empty() {
            "it has no aliases".to_string()
        } else {
            format!("its aliases: {}", known.join(", "))
        };
        RegistryError::NotFound(format!(
            "model '{name}' has no alias '{alias}' ({known}); set one with \
             `kiln models alias {name} {alias} VERSION`"
        ))
    })
}

fn aliases_of_model(conn: &Connection, name: &str) -> Result<Vec<String>, RegistryError> {
    let mut stmt = conn.prepare("SELECT alias FROM aliases WHERE name = ?1 ORDER BY alias")?;
    let rows = stmt.query_map([name], |row| row.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Fails with a helpful `NotFound` unless the model has at least one version.
pub(crate) fn ensure_model(conn: &Connection, name: &str) -> Result<(), RegistryError> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM versions WHERE name = ?1)",
        [name],
        |row| row.get(0),
    )?;
    if exists {
        return Ok(());
    }
    let mut stmt = conn.prepare("SELECT DISTINCT name FROM versions ORDER BY name LIMIT 20")?;
    let names: Vec<String> = stmt.query_map([], |row| row.get(0))?.collect::<Result<_, _>>()?;
    let known = if names.is_empty() {
        "the registry is empty; register one with `kiln models register FILE --name NAME`".to_string()
    } else {
        format!("registered models: {}", names.join(", "))
    };
    Err(RegistryError::NotFound(format!(
        "model '{name}' not found ({known})"
    )))
}

/// Fails with a helpful `NotFound` unless `name` has `version`.
pub(crate) fn ensure_version(conn: &Connection, name: &str, version: u64) -> Result<(), RegistryError> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM versions WHERE name = ?1 AND version = ?2)",
        params![name, version],
        |row| row.get(0),
    )?;
    if exists {
        return Ok(());
    }
    ensure_model(conn, name)?;
    let mut stmt = conn.prepare("SELECT version FROM versions WHERE name = ?1 ORDER BY version")?;
    let versions: Vec<String> = stmt
        .query_map([name], |row| row.get::<_, u64>(0))?
        .map(|v| v.map(|v| v.to_string()))
        .collect::<Result<_, _>>()?;
    Err(RegistryError::NotFound(format!(
        "model '{name}' has no version {version} (versions: {})",
        versions.join(", ")
    )))
}

/// One version, or a helpful `NotFound`.
pub(crate) fn get_version(
    conn: &Connection,
    name: &str,
    version: u64,
) -> Result<ModelVersion, RegistryError> {
    ensure_version(conn, name, version)?;
    load_versions(conn, Some(name), Some(version))?
        .pop()
        .ok_or_else(|| RegistryError::NotFound(format!("model '{name}' has no version {version}")))
}

/// Versions matching the filters, with tags and aliases, ordered by name then version.
pub(crate) fn load_versions(
    conn: &Connection,
    name: Option<&str>,
    version: Option<u64>,
) -> Result<Vec<ModelVersion>, RegistryError> {
    const FILTER: &str = "(?1 IS NULL OR name = ?1) AND (?2 IS NULL OR version = ?2)";
    let mut tags: HashMap<(String, u64), BTreeMap<String, String>> = HashMap::new();
    let mut stmt = conn.prepare(&format!(
        "SELECT name, version, key, value FROM tags WHERE {FILTER}"
    ))?;
    let rows = stmt.query_map(params![name, version], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, u64>(1)?,
            row.get(2)?,
            row.get(3)?,
        ))
    })?;
    for row in rows {
        let (n, v, key, value) = row?;
        tags.entry((n, v)).or_default().insert(key, value);
    }
    let mut aliases: HashMap<(String, u64), Vec<String>> = HashMap::new();
    let mut stmt = conn.prepare(&format!(
        "SELECT name, version, alias FROM aliases WHERE {FILTER} ORDER BY alias"
    ))?;
    let rows = stmt.query_map(params![name, version], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, u64>(1)?, row.get(2)?))
    })?;
    for row in rows {
        let (n, v, alias) = row?;
        aliases.entry((n, v)).or_default().push(alias);
    }
    let mut stmt = conn.prepare(&format!(
        "SELECT name, version, digest, source_digest, created_at, description, stage, lineage,
                signature, size
         FROM versions WHERE {FILTER} ORDER BY name, version"
    ))?;
    let rows = stmt.query_map(params![name, version], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, u64>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, Option<String>>(3)?,
            row.get::<_, String>(4)?,
            row.get::<_, String>(5)?,
            row.get::<_, String>(6)?,
            row.get::<_, String>(7)?,
            row.get::<_, String>(8)?,
            row.get::<_, u64>(9)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (name, version, digest, source_digest, created_at, description, stage, lineage, signature, size) =
            row?;
        let key = (name, version);
        out.push(ModelVersion {
            tags: tags.remove(&key).unwrap_or_default(),
            aliases: aliases.remove(&key).unwrap_or_default(),
            name: key.0,
            version,
            digest,
            source_digest,
            created_at,
            description,
            stage: stage.parse().map_err(|_| {
                RegistryError::Corrupt(format!("unknown stage '{stage}' in the registry database"))
            })?,
            lineage: parse_json(&lineage, "lineage")?,
            signature: parse_json(&signature, "signature")?,
            size,
        });
    }
    Ok(out)
}

fn parse_json(text: &str, what: &str) -> Result<serde_json::Value, RegistryError> {
    serde_json::from_str(text).map_err(|e| {
        RegistryError::Corrupt(format!(
            "stored {what} is not valid JSON ({e}); the registry database was edited by hand"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Registry>();
    }

    #[test]
    fn references_split_into_name_and_selector() {
        assert_eq!(split_reference("house-price/3").unwrap(), ("house-price", "3"));
        assert_eq!(split_reference("m/Production").unwrap(), ("m", "Production"));
        assert_eq!(split_reference("m@champion").unwrap(), ("m", "@champion"));
        assert_eq!(split_reference("m.v2/latest").unwrap(), ("m.v2", "latest"));
        for bad in ["m", "m/", "/3", "@x", "m@"] {
            let err = split_reference(bad).unwrap_err().to_string();
            assert!(err.contains("NAME/VERSION"), "{bad}: {err}");
        }
    }
}
