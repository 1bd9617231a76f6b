//! Schema migrations, applied in order at open and recorded in `schema_migrations`, so an
//! older registry file upgrades in place and two processes opening a fresh home at the
//! same moment agree (each migration runs inside an IMMEDIATE transaction that re-checks).

use rusqlite::{Connection, TransactionBehavior};

use crate::error::RegistryError;

/// Ordered migrations; append, never edit a released one.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "initial schema",
        r#"
    -- next_version survives deletes so a version number is never reused.
    CREATE TABLE models (
        name         TEXT PRIMARY KEY,
        next_version INTEGER NOT NULL,
        created_at   TEXT NOT NULL
    );
    CREATE TABLE versions (
        name          TEXT NOT NULL REFERENCES models(name),
        version       INTEGER NOT NULL,
        digest        TEXT NOT NULL,
        source_digest TEXT,
        created_at    TEXT NOT NULL,
        description   TEXT NOT NULL,
        stage         TEXT NOT NULL CHECK (stage IN ('None','Staging','Production','Archived')),
        lineage       TEXT NOT NULL,
        signature     TEXT NOT NULL,
        size          INTEGER NOT NULL,
        PRIMARY KEY (name, version)
    );
    CREATE INDEX versions_by_digest ON versions(digest);
    CREATE INDEX versions_by_stage ON versions(name, stage);
    CREATE TABLE tags (
        name    TEXT NOT NULL,
        version INTEGER NOT NULL,
        key     TEXT NOT NULL,
        value   TEXT NOT NULL,
        PRIMARY KEY (name, version, key),
        FOREIGN KEY (name, version) REFERENCES versions(name, version) ON DELETE CASCADE
    );
    CREATE TABLE aliases (
        name    TEXT NOT NULL,
        alias   TEXT NOT NULL,
        version INTEGER NOT NULL,
        PRIMARY KEY (name, alias),
        FOREIGN KEY (name, version) REFERENCES versions(name, version) ON DELETE CASCADE
    );
    CREATE TABLE golden (
        name     TEXT NOT NULL,
        version  INTEGER NOT NULL,
        idx      INTEGER NOT NULL,
        request  TEXT NOT NULL,
        response TEXT NOT NULL,
        PRIMARY KEY (name, version, idx),
        FOREIGN KEY (name, version) REFERENCES versions(name, version) ON DELETE CASCADE
    );
    CREATE TABLE audit (
        seq       INTEGER PRIMARY KEY,
        time      TEXT NOT NULL,
        actor     TEXT NOT NULL,
        action    TEXT NOT NULL,
        model     TEXT NOT NULL,
        version   INTEGER,
        before    TEXT NOT NULL,
        after     TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash      TEXT NOT NULL
    );
    CREATE INDEX audit_by_model ON audit(model, seq);
    -- The chain alone cannot show that its last entries were deleted; this row can.
    CREATE TABLE audit_head (
        id    INTEGER PRIMARY KEY CHECK (id = 1),
        seq   INTEGER NOT NULL,
        hash  TEXT NOT NULL
    );
    "#,
    ),
    (
        "fleet, rollouts and rollout policies",
        r#"
    -- Edge nodes the sync service manages (from config, GitOps files or `--join`), with
    -- their last known sync status (operational state: not audited, rewritten often).
    CREATE TABLE nodes (
        name               TEXT PRIMARY KEY,
        url                TEXT NOT NULL,
        source             TEXT NOT NULL CHECK (source IN ('config','join')),
        added_at           TEXT NOT NULL,
        last_seen          TEXT,
        instance_id        TEXT,
        status             TEXT NOT NULL DEFAULT 'pending',
        applied_generation INTEGER NOT NULL DEFAULT 0,
        last_error         TEXT,
        failing_since      TEXT,
        failures           INTEGER NOT NULL DEFAULT 0,
        breaker            TEXT NOT NULL DEFAULT 'closed',
        updated_at         TEXT NOT NULL
    );
    -- What the fleet serves per model when no rollout is running: the stable version and
    -- the previous one (kept warm at weight 0 for an instant rollback), optional static
    -- weights and shadow (GitOps), and which nodes (NULL = all).
    CREATE TABLE fleet_models (
        model      TEXT PRIMARY KEY,
        stable     INTEGER,
        previous   INTEGER,
        weights    TEXT,
        shadow     INTEGER,
        nodes      TEXT,
        updated_at TEXT NOT NULL
    );
    -- The rollout policy started when a model's Production version (or champion alias)
    -- changes in the registry.
    CREATE TABLE rollout_policies (
        model  TEXT PRIMARY KEY,
        policy TEXT NOT NULL
    );
    CREATE TABLE rollouts (
        id              INTEGER PRIMARY KEY,
        model           TEXT NOT NULL,
        from_version    INTEGER,
        to_version      INTEGER NOT NULL,
        strategy        TEXT NOT NULL,
        plan            TEXT NOT NULL,
        state           TEXT NOT NULL,
        step            INTEGER NOT NULL,
        phase           TEXT NOT NULL,
        step_started_at TEXT,
        baseline        TEXT,
        restore         TEXT NOT NULL,
        trigger         TEXT NOT NULL,
        message         TEXT NOT NULL,
        created_at      TEXT NOT NULL,
        updated_at      TEXT NOT NULL
    );
    CREATE UNIQUE INDEX one_active_rollout ON rollouts(model) WHERE state IN ('progressing','paused');
    -- Key/value state of the sync service (the routing generation it hands out).
    CREATE TABLE sync_state (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    "#,
    ),
    (
        "API tokens",
        r#"
    -- Identities of the registry server's callers. Only the SHA-256 of a token is kept;
    -- revoked tokens keep their row (the audit log names them), so a name is unique only
    -- among live tokens.
    CREATE TABLE tokens (
        id             INTEGER PRIMARY KEY,
        name           TEXT NOT NULL,
        hash           TEXT NOT NULL UNIQUE,
        role           TEXT NOT NULL CHECK (role IN ('viewer','deployer','maintainer','admin','node')),
        models         TEXT NOT NULL,
        prefix         TEXT NOT NULL,
        created_at     TEXT NOT NULL,
        created_by     TEXT NOT NULL,
        expires_at     TEXT,
        expires_unix   INTEGER,
        revoked_at     TEXT,
        last_used_at   TEXT,
        last_used_unix INTEGER
    );
    CREATE UNIQUE INDEX one_live_token_per_name ON tokens(name) WHERE revoked_at IS NULL;
    "#,
    ),
    (
        "rollout pause times",
        r#"
    -- When a paused rollout was paused: past its plan's max pause it is rolled back.
    -- Rollouts paused before this column existed count from their last update (a paused
    -- rollout is not updated until it is resumed or ended).
    ALTER TABLE rollouts ADD COLUMN paused_at TEXT;
    UPDATE rollouts SET paused_at = updated_at WHERE state = 'paused';
    "#,
    ),
    (
        "fleet serving policies",
        r#"
    -- A model's bulkhead and fallback on the nodes (kiln.toml's `serving`), as JSON.
    ALTER TABLE fleet_models ADD COLUMN serving TEXT;
    "#,
    ),
    (
        "reference profiles",
        r#"
    -- A version's reference data for drift (kiln-monitor's profile, as JSON), gone with it.
    CREATE TABLE reference_profiles (
        name       TEXT NOT NULL,
        version    INTEGER NOT NULL,
        features   TEXT NOT NULL,
        rows       INTEGER NOT NULL,
        source     TEXT NOT NULL,
        profile    TEXT NOT NULL,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        PRIMARY KEY (name, version),
        FOREIGN KEY (name, version) REFERENCES versions(name, version) ON DELETE CASCADE
    );
    "#,
    ),
];

/// Brings the schema up to date.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), RegistryError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TEXT NOT NULL
         )",
    )?;
    for (index, (name, sql)) in MIGRATIONS.iter().enumerate() {
        let version = index as i64 + 1;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let applied: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)",
            [version],
            |row| row.get(0),
        )?;
        if !applied {
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                rusqlite::params![version, name, kiln_types::format::now_rfc3339()],
            )?;
            tracing::info!(version, name, "applied registry schema migration");
        }
        tx.commit()?;
    }
    Ok(())
}

/// Number of migrations this build knows.
pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}
