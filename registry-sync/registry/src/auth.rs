//! Identities and roles: who may do what to the registry and the fleet.
//!
//! Callers of the registry server present an API token. Tokens are 256 random bits, so
//! only their SHA-256 is stored (`tokens` table): a copy of `registry.db` gives no usable
//! token. A token names an identity (its `name`, which is the audit log's actor), a
//! [`Role`], optional model-name patterns that limit it to some models, and an optional
//! expiry. Everything is denied unless the role allows it ([`Identity::check`]); the rules
//! for which role an operation needs live here, in one place ([`Action`],
//! [`stage_action`], [`alias_action`]).
//!
//! Direct access to the registry files (no server) stays possible for the machine's owner:
//! it acts as [`Identity::local`], audited as `local:<os user>`.

use std::fmt;
use std::str::FromStr;

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit;
use crate::error::RegistryError;
use crate::model::Stage;
use crate::registry::Registry;
use kiln_types::format::{now_rfc3339, rfc3339, unix_now};

/// The prefix of every token Kiln issues, so secret scanners and people can tell one.
pub const TOKEN_PREFIX: &str = "kiln_";

/// The audit log's `model` column for entries about tokens rather than a model.
const TOKENS_SUBJECT: &str = "(tokens)";

/// The name of the credential the sync service gives the node `node` when it joins: a
/// `node`-role token only that node holds.
pub fn node_token_name(node: &str) -> String {
    format!("node:{node}")
}

/// What an identity may do. `viewer` ⊂ `deployer` ⊂ `maintainer` ⊂ `admin`; `node` is
/// apart: a fleet node's join credential, good for nothing but joining and reporting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything: models, lineage, audit log, rollouts, fleet status.
    Viewer,
    /// Viewer, and: register versions, tags, descriptions, Staging, aliases other than
    /// `champion`, start, pause and resume canary rollouts.
    Deployer,
    /// Deployer, and: Production, `champion`, promote/abort/rollback rollouts, rollout
    /// policies, delete, GitOps apply.
    Maintainer,
    /// Maintainer, and: tokens, nodes, keys.
    Admin,
    /// A fleet node joining the sync service; no registry access.
    Node,
}

impl Role {
    /// Every role, in the order of the hierarchy (`node` last).
    pub const ALL: [Role; 5] = [
        Role::Viewer,
        Role::Deployer,
        Role::Maintainer,
        Role::Admin,
        Role::Node,
    ];

    /// The lowercase name used on the command line, in JSON and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
            Role::Maintainer => "maintainer",
            Role::Admin => "admin",
            Role::Node => "node",
        }
    }

    /// Whether this role includes everything `needed` allows.
    pub fn includes(self, needed: Role) -> bool {
        match (self, needed) {
            (Role::Node, Role::Node) => true,
            (Role::Node, _) | (_, Role::Node) => false,
            (have, needed) => have >= needed,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown role '{s}': use viewer, deployer, maintainer, admin or node"))
    }
}

/// The kinds of operation, each needing one role. The registry server maps every route to
/// one of these before it does anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Reading anything (viewer).
    Read,
    /// Registering versions, tags, descriptions, Staging, non-champion aliases, starting,
    /// pausing and resuming rollouts (deployer).
    Deploy,
    /// Changing what Production traffic gets: Production, `champion`, promoting, aborting
    /// and rolling back rollouts, rollout policies, deleting, GitOps apply (maintainer).
    Release,
    /// Tokens, fleet nodes and signing keys (admin).
    Administer,
    /// Joining the fleet and reporting as a node (node).
    Join,
}

impl Action {
    /// The least role that may do this.
    pub fn role(self) -> Role {
        match self {
            Action::Read => Role::Viewer,
            Action::Deploy => Role::Deployer,
            Action::Release => Role::Maintainer,
            Action::Administer => Role::Admin,
            Action::Join => Role::Node,
        }
    }
}

/// What moving a version from `current` to `target` needs: touching Production (to or
/// from it) is a release; any other move is a deploy.
pub fn stage_action(current: Stage, target: Stage) -> Action {
    if target == Stage::Production || current == Stage::Production {
        Action::Release
    } else {
        Action::Deploy
    }
}

/// The alias whose version takes a model's unnamed traffic when it has no Production
/// version (`kiln_fleet::serving`): setting or moving it is a release.
pub const CHAMPION: &str = "champion";

/// What setting or deleting `alias` needs.
pub fn alias_action(alias: &str) -> Action {
    if alias == CHAMPION {
        Action::Release
    } else {
        Action::Deploy
    }
}

/// Who is calling: a token's identity, or the machine's owner working on the files.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    /// The audit log's actor: the token's name, or `local:<os user>`.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Model-name patterns (`*` and `?` wildcards) it is limited to; empty = every model.
    pub models: Vec<String>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.role)
    }
}

/// Why an identity was refused: the server answers 403 with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

impl Identity {
    /// The machine's owner working on the registry files directly: every permission,
    /// audited as `local:<os user>`.
    pub fn local() -> Identity {
        Identity {
            name: format!("local:{}", os_user()),
            role: Role::Admin,
            models: Vec::new(),
        }
    }

    /// Whether this identity may see or act on `model` at all.
    pub fn covers(&self, model: &str) -> bool {
        kiln_node_api::patterns_cover(&self.models, model)
    }

    /// Allows `action` on `model` (`None`: an operation not about one model, such as
    /// listing nodes or applying a GitOps file), or says why not. A token limited to some
    /// models may read fleet-wide state but change only its own models.
    pub fn check(&self, action: Action, model: Option<&str>) -> Result<(), Denied> {
        let needed = action.role();
        if !self.role.includes(needed) {
            return Err(Denied(format!(
                "'{}' has the {} role; this needs the {} role",
                self.name, self.role, needed
            )));
        }
        match model {
            Some(model) if !self.covers(model) => Err(Denied(format!(
                "'{}' is limited to models matching {}; '{model}' is not one of them",
                self.name,
                self.models.join(", ")
            ))),
            None if action != Action::Read && !self.models.is_empty() => Err(Denied(format!(
                "'{}' is limited to models matching {}; this changes more than one model and needs an unlimited token",
                self.name,
                self.models.join(", ")
            ))),
            _ => Ok(()),
        }
    }
}

/// The OS user running this process, for `local:<user>` audit entries.
pub fn os_user() -> String {
    ["USER", "USERNAME", "LOGNAME"]
        .iter()
        .filter_map(|var| std::env::var(var).ok())
        .find(|value| !value.trim().is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

pub use kiln_node_api::glob_match;

/// A token as listed: everything but the secret, which is never stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The identity's name: unique among live tokens, the audit actor.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Model patterns it is limited to; empty = all.
    pub models: Vec<String>,
    /// The first characters of the token (`kiln_AbCd`), to tell tokens apart.
    pub prefix: String,
    /// When it was created (RFC 3339) and by whom.
    pub created_at: String,
    /// Who created it.
    pub created_by: String,
    /// When it stops working, if ever (RFC 3339).
    pub expires_at: Option<String>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<String>,
    /// When it last authenticated a call (updated at most once a minute).
    pub last_used_at: Option<String>,
}

impl TokenInfo {
    /// `active`, `expired` or `revoked`.
    pub fn state(&self, now_unix: u64, expires_unix: Option<u64>) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if expires_unix.is_some_and(|e| e <= now_unix) {
            "expired"
        } else {
            "active"
        }
    }
}

/// A token just created: its record and the secret, shown once.
pub struct IssuedToken {
    /// The record kept.
    pub info: TokenInfo,
    /// The secret to hand to its user; only its SHA-256 is stored.
    pub secret: String,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("info", &self.info)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// What `kiln tokens create` asks for.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewToken {
    /// Its name: letters, digits, '.', '_', '-', '@', ':' (e.g. `ci-deploy`, `node:edge-1`).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Model patterns to limit it to; empty = all.
    #[serde(default)]
    pub models: Vec<String>,
    /// Lifetime in seconds from now; `None` = until revoked.
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
}

/// The SHA-256 (hex) a token is stored and looked up by.
pub fn token_hash(secret: &str) -> String {
    kiln_types::digest(secret.as_bytes())
}

/// A new secret: `prefix` and 256 bits from the OS random source, as hex. Registry tokens
/// use [`TOKEN_PREFIX`]; the sync service's per-node admin credentials use their own.
pub fn random_secret(prefix: &str) -> Result<String, RegistryError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| RegistryError::Storage(anyhow::anyhow!("the system's random source failed: {e}")))?;
    Ok(format!("{prefix}{}", hex::encode(bytes)))
}

fn validate_token_name(name: &str) -> Result<(), RegistryError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | ':'));
    if ok && !name.starts_with("local:") {
        Ok(())
    } else {
        Err(RegistryError::Invalid(format!(
            "invalid token name '{name}': 1-64 letters, digits, '.', '_', '-', '@', ':', not starting with 'local:'"
        )))
    }
}

fn validate_pattern(pattern: &str) -> Result<(), RegistryError> {
    let ok = !pattern.is_empty()
        && pattern
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*' | '?'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::Invalid(format!(
            "invalid model pattern '{pattern}': a model name with '*' and '?' wildcards"
        )))
    }
}

/// The live (not revoked, not expired at `?1`) tokens of a role that may read.
const LIVE_READERS: &str = "revoked_at IS NULL AND (expires_unix IS NULL OR expires_unix > ?1) \
     AND role IN ('viewer','deployer','maintainer','admin')";

const TOKEN_COLUMNS: &str =
    "name, role, models, prefix, created_at, created_by, expires_at, revoked_at, last_used_at, expires_unix";

fn token_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(TokenInfo, Option<u64>)> {
    let role: String = row.get(1)?;
    let models: String = row.get(2)?;
    Ok((
        TokenInfo {
            name: row.get(0)?,
            role: role.parse().unwrap_or(Role::Viewer),
            models: serde_json::from_str(&models).unwrap_or_default(),
            prefix: row.get(3)?,
            created_at: row.get(4)?,
            created_by: row.get(5)?,
            expires_at: row.get(6)?,
            revoked_at: row.get(7)?,
            last_used_at: row.get(8)?,
        },
        row.get::<_, Option<i64>>(9)?.map(|v| v.max(0) as u64),
    ))
}

impl Registry {
    /// Creates a token; the secret is in the answer and nowhere else. Audited as
    /// `token.create` by `actor`.
    pub fn create_token(&self, new: &NewToken, actor: &str) -> Result<IssuedToken, RegistryError> {
        validate_token_name(&new.name)?;
        for p in &new.models {
            validate_pattern(p)?;
        }
        let secret = random_secret(TOKEN_PREFIX)?;
        let now = unix_now() as u64;
        let expires_unix = new.expires_in_secs.map(|s| now.saturating_add(s));
        let info = TokenInfo {
            name: new.name.clone(),
            role: new.role,
            models: new.models.clone(),
            prefix: secret.chars().take(TOKEN_PREFIX.len() + 4).collect(),
            created_at: now_rfc3339(),
            created_by: actor.to_string(),
            expires_at: expires_unix.map(|e| rfc3339(e as f64)),
            revoked_at: None,
            last_used_at: None,
        };
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let taken: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM tokens WHERE name = ?1 AND revoked_at IS NULL)",
            [&new.name],
            |row| row.get(0),
        )?;
        if taken {
            return Err(RegistryError::Conflict(format!(
                "a token named '{}' exists; revoke it first (`kiln tokens revoke {}`) or pick another name",
                new.name, new.name
            )));
        }
        tx.execute(
            "INSERT INTO tokens (name, hash, role, models, prefix, created_at, created_by, expires_at, expires_unix)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                info.name,
                token_hash(&secret),
                info.role.as_str(),
                serde_json::to_string(&info.models).unwrap_or_else(|_| "[]".into()),
                info.prefix,
                info.created_at,
                info.created_by,
                info.expires_at,
                expires_unix.map(|e| e as i64),
            ],
        )?;
        audit::append(
            &tx,
            actor,
            "token.create",
            TOKENS_SUBJECT,
            None,
            serde_json::Value::Null,
            json!({ "name": info.name, "role": info.role, "models": info.models, "expires_at": info.expires_at }),
        )?;
        tx.commit()?;
        Ok(IssuedToken { info, secret })
    }

    /// Every token, newest first, revoked ones included (their rows stay for the record).
    pub fn tokens(&self) -> Result<Vec<(TokenInfo, Option<u64>)>, RegistryError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY id DESC"))?;
        let rows = stmt.query_map([], token_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Revokes the live token named `name`; it stops working at once.
    pub fn revoke_token(&self, name: &str, actor: &str) -> Result<TokenInfo, RegistryError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = now_rfc3339();
        let changed = tx.execute(
            "UPDATE tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
            params![name, now],
        )?;
        if changed == 0 {
            return Err(RegistryError::NotFound(format!("no live token named '{name}'")));
        }
        let (info, _) = tx.query_row(
            &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE name = ?1 AND revoked_at = ?2"),
            params![name, now],
            token_row,
        )?;
        audit::append(
            &tx,
            actor,
            "token.revoke",
            TOKENS_SUBJECT,
            None,
            json!({ "name": name, "role": info.role }),
            serde_json::Value::Null,
        )?;
        tx.commit()?;
        Ok(info)
    }

    /// The identity a presented token stands for: `None` for an unknown, revoked or
    /// expired token (the caller answers 401 without saying which).
    pub fn authenticate(&self, secret: &str) -> Result<Option<Identity>, RegistryError> {
        let secret = secret.trim();
        if !secret.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let hash = token_hash(secret);
        let conn = self.lock();
        let found = conn
            .query_row(
                &format!("SELECT {TOKEN_COLUMNS}, id FROM tokens WHERE hash = ?1 AND revoked_at IS NULL"),
                [&hash],
                |row| Ok((token_row(row)?, row.get::<_, i64>(10)?)),
            )
            .optional()?;
        let Some(((info, expires_unix), id)) = found else {
            return Ok(None);
        };
        let now = unix_now() as u64;
        if expires_unix.is_some_and(|e| e <= now) {
            return Ok(None);
        }
        // Operational, not audited; at most once a minute so reads stay reads.
        let _ = conn.execute(
            "UPDATE tokens SET last_used_at = ?2, last_used_unix = ?3
             WHERE id = ?1 AND (last_used_unix IS NULL OR last_used_unix < ?3 - 60)",
            params![id, now_rfc3339(), now as i64],
        );
        Ok(Some(Identity {
            name: info.name,
            role: info.role,
            models: info.models,
        }))
    }

    /// Whether a live (not revoked, not expired) token has this name.
    pub fn live_token(&self, name: &str) -> Result<bool, RegistryError> {
        let conn = self.lock();
        Ok(conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM tokens WHERE name = ?1 AND revoked_at IS NULL
                            AND (expires_unix IS NULL OR expires_unix > ?2))",
            params![name, unix_now() as i64],
            |row| row.get(0),
        )?)
    }

    /// The live tokens that may read (viewer or higher), by hash, for fleet nodes.
    pub fn reader_grants(&self) -> Result<Vec<kiln_node_api::ReaderGrant>, RegistryError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT name, hash, models FROM tokens WHERE {LIVE_READERS} ORDER BY name"
        ))?;
        let rows = stmt.query_map([unix_now() as i64], |row| {
            let models: String = row.get(2)?;
            Ok(kiln_node_api::ReaderGrant {
                name: row.get(0)?,
                token_sha256: row.get(1)?,
                models: serde_json::from_str(&models).unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// How many live reader tokens there are now: it drops when one expires, which no
    /// audit entry records, so the sync service watches it to push the shorter list.
    pub fn live_reader_count(&self) -> Result<u64, RegistryError> {
        let conn = self.lock();
        Ok(conn.query_row(
            &format!("SELECT COUNT(*) FROM tokens WHERE {LIVE_READERS}"),
            [unix_now() as i64],
            |row| row.get(0),
        )?)
    }

    /// Whether any live token exists (a server with none cannot be used: it says how to
    /// create the first one).
    pub fn has_tokens(&self) -> Result<bool, RegistryError> {
        let conn = self.lock();
        Ok(conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM tokens WHERE revoked_at IS NULL)",
            [],
            |row| row.get(0),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(role: Role, models: &[&str]) -> Identity {
        Identity {
            name: "t".into(),
            role,
            models: models.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn roles_nest_and_node_is_apart() {
        assert!(Role::Admin.includes(Role::Viewer));
        assert!(Role::Maintainer.includes(Role::Deployer));
        assert!(!Role::Deployer.includes(Role::Maintainer));
        assert!(!Role::Viewer.includes(Role::Deployer));
        assert!(!Role::Admin.includes(Role::Node));
        assert!(!Role::Node.includes(Role::Viewer));
        assert!(Role::Node.includes(Role::Node));
        assert_eq!("Maintainer".parse::<Role>().unwrap(), Role::Maintainer);
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn the_issue_matrix() {
        use Stage::{Archived, Production, Staging};
        let viewer = id(Role::Viewer, &[]);
        let deployer = id(Role::Deployer, &[]);
        let maintainer = id(Role::Maintainer, &[]);
        assert!(viewer.check(Action::Read, Some("m")).is_ok());
        assert!(
            viewer
                .check(stage_action(Stage::None, Staging), Some("m"))
                .is_err()
        );
        assert!(
            deployer
                .check(stage_action(Stage::None, Staging), Some("m"))
                .is_ok()
        );
        assert!(
            deployer
                .check(stage_action(Staging, Production), Some("m"))
                .is_err()
        );
        assert!(
            deployer
                .check(stage_action(Production, Archived), Some("m"))
                .is_err()
        );
        assert!(deployer.check(alias_action("challenger"), Some("m")).is_ok());
        assert!(deployer.check(alias_action("champion"), Some("m")).is_err());
        assert!(
            maintainer
                .check(stage_action(Staging, Production), Some("m"))
                .is_ok()
        );
        assert!(maintainer.check(Action::Administer, None).is_err());
        assert!(id(Role::Admin, &[]).check(Action::Administer, None).is_ok());
        assert!(id(Role::Node, &[]).check(Action::Read, None).is_err());
        let denied = deployer.check(Action::Release, Some("m")).unwrap_err();
        assert!(denied.0.contains("maintainer"), "{denied}");
    }

    #[test]
    fn model_scopes() {
        let scoped = id(Role::Maintainer, &["fraud-*"]);
        assert!(scoped.check(Action::Release, Some("fraud-v2")).is_ok());
        assert!(scoped.check(Action::Release, Some("iris")).is_err());
        assert!(scoped.check(Action::Read, None).is_ok());
        assert!(scoped.check(Action::Release, None).is_err());
        assert!(glob_match("a?c*", "abcdef"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a*b", "acbx"));
        assert!(glob_match("*b*", "xxbyy"));
    }

    #[test]
    fn tokens_round_trip_and_revoke() {
        let (_dir, registry) = crate::testing::open();
        let issued = registry
            .create_token(
                &NewToken {
                    name: "ci".into(),
                    role: Role::Deployer,
                    models: vec!["iris*".into()],
                    expires_in_secs: None,
                },
                "local:me",
            )
            .unwrap();
        assert!(issued.secret.starts_with(TOKEN_PREFIX));
        assert!(!format!("{issued:?}").contains(&issued.secret));
        let who = registry.authenticate(&issued.secret).unwrap().unwrap();
        assert_eq!((who.name.as_str(), who.role), ("ci", Role::Deployer));
        assert!(registry.authenticate("kiln_0000").unwrap().is_none());
        assert!(registry.authenticate(&issued.secret[1..]).unwrap().is_none());
        // The database holds the hash, never the secret.
        let db = std::fs::read(registry.home().join("registry.db")).unwrap();
        assert!(
            !db.windows(issued.secret.len())
                .any(|w| w == issued.secret.as_bytes())
        );
        let dup = registry.create_token(
            &NewToken {
                name: "ci".into(),
                role: Role::Viewer,
                models: vec![],
                expires_in_secs: None,
            },
            "local:me",
        );
        assert!(matches!(dup, Err(RegistryError::Conflict(_))));
        registry.revoke_token("ci", "local:me").unwrap();
        assert!(registry.authenticate(&issued.secret).unwrap().is_none());
        let log = registry.audit_log(Some(TOKENS_SUBJECT)).unwrap();
        let actions: Vec<_> = log.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["token.create", "token.revoke"]);
        assert!(!serde_json::to_string(&log).unwrap().contains(&issued.secret));
    }

    #[test]
    fn expired_tokens_fail() {
        let (_dir, registry) = crate::testing::open();
        let issued = registry
            .create_token(
                &NewToken {
                    name: "short".into(),
                    role: Role::Viewer,
                    models: vec![],
                    expires_in_secs: Some(0),
                },
                "local:me",
            )
            .unwrap();
        assert!(registry.authenticate(&issued.secret).unwrap().is_none());
    }

    #[test]
    fn configured_nodes_do_not_move_and_removed_nodes_lose_their_credential() {
        use crate::fleet::NodeSource;
        let (_dir, registry) = crate::testing::open();
        registry
            .upsert_node("edge-1", "http://10.0.0.1:8080", NodeSource::Config, "local:me")
            .unwrap();
        let moved = registry.node_heartbeat("edge-1", "http://10.9.9.9:8080", "i", "node:edge-1");
        assert!(matches!(moved, Err(RegistryError::Conflict(_))), "{moved:?}");
        assert_eq!(
            registry.node("edge-1").unwrap().unwrap().url,
            "http://10.0.0.1:8080"
        );
        // The same URL is a heartbeat like any other.
        registry
            .node_heartbeat("edge-1", "http://10.0.0.1:8080", "i", "node:edge-1")
            .unwrap();
        let issued = registry
            .create_token(
                &NewToken {
                    name: node_token_name("edge-1"),
                    role: Role::Node,
                    models: vec![],
                    expires_in_secs: None,
                },
                "join",
            )
            .unwrap();
        assert!(registry.live_token("node:edge-1").unwrap());
        assert!(registry.remove_node("edge-1", "local:me").unwrap());
        assert!(!registry.live_token("node:edge-1").unwrap());
        assert!(registry.authenticate(&issued.secret).unwrap().is_none());
    }

    #[test]
    fn reader_grants_hold_live_readers_only() {
        let (_dir, registry) = crate::testing::open();
        let new = |name: &str, role, expires_in_secs| NewToken {
            name: name.into(),
            role,
            models: vec![],
            expires_in_secs,
        };
        let viewer = registry.create_token(&new("v", Role::Viewer, None), "t").unwrap();
        registry.create_token(&new("n", Role::Node, None), "t").unwrap();
        registry
            .create_token(&new("gone", Role::Admin, Some(0)), "t")
            .unwrap();
        let grants = registry.reader_grants().unwrap();
        assert_eq!(grants.len(), 1, "{grants:?}");
        assert_eq!(grants[0].token_sha256, token_hash(&viewer.secret));
        assert_eq!(registry.live_reader_count().unwrap(), 1);
        registry.revoke_token("v", "t").unwrap();
        assert_eq!(registry.live_reader_count().unwrap(), 0);
    }
}
