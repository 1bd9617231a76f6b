//! The fleet in the registry database: edge nodes and their sync status, what each model
//! serves between rollouts, rollout policies, and the routing generation the sync service
//! hands out. Kept here so `kiln sync status` and `kiln sync apply` in another process see
//! what the running sync service sees, and so the service survives its own restart.

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

use crate::audit;
use crate::error::RegistryError;
use crate::plan::RolloutPlan;
use crate::registry::Registry;
use kiln_types::format::now_rfc3339;

/// Audit `model` of fleet-wide entries (nodes), which belong to no model.
pub const FLEET: &str = "_fleet";

/// Where a node came from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NodeSource {
    /// A config or GitOps file.
    Config,
    /// `kiln serve --join`.
    Join,
}

impl NodeSource {
    fn as_str(self) -> &'static str {
        match self {
            NodeSource::Config => "config",
            NodeSource::Join => "join",
        }
    }
}

/// A managed node and its last known sync status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct NodeRecord {
    pub name: String,
    pub url: String,
    pub source: NodeSource,
    pub added_at: String,
    /// Last heartbeat or successful contact.
    pub last_seen: Option<String>,
    pub instance_id: Option<String>,
    /// `converged`, `pending` or `failing`.
    pub status: String,
    /// The routing generation the node acknowledged last.
    pub applied_generation: u64,
    pub last_error: Option<String>,
    /// When the current run of failures started.
    pub failing_since: Option<String>,
    /// Consecutive failures.
    pub failures: u32,
    /// `closed`, `open` or `half-open`.
    pub breaker: String,
    pub updated_at: String,
}

/// A node's sync status as the service last saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeStatusUpdate {
    pub status: String,
    pub applied_generation: u64,
    pub last_error: Option<String>,
    pub failing_since: Option<String>,
    pub failures: u32,
    pub breaker: String,
    pub contacted: bool,
    pub instance_id: Option<String>,
}

/// What a model serves between rollouts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct FleetModel {
    /// The version that takes the traffic.
    pub stable: Option<u64>,
    /// The version before it, kept warm at weight 0 for an instant rollback.
    pub previous: Option<u64>,
    /// Static weights by version (GitOps); when set they replace stable/previous.
    pub weights: Option<BTreeMap<u64, u32>>,
    /// A version that gets a copy of the traffic.
    pub shadow: Option<u64>,
    /// The nodes that serve the model (None = every node).
    pub nodes: Option<Vec<String>>,
    /// Its bulkhead and fallback on the nodes (None = the nodes' own settings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<kiln_node_api::ServingPolicy>,
}

fn node_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<NodeRecord> {
    let source: String = row.get(2)?;
    Ok(NodeRecord {
        name: row.get(0)?,
        url: row.get(1)?,
        source: if source == "join" {
            NodeSource::Join
        } else {
            NodeSource::Config
        },
        added_at: row.get(3)?,
        last_seen: row.get(4)?,
        instance_id: row.get(5)?,
        status: row.get(6)?,
        applied_generation: row.get(7)?,
        last_error: row.get(8)?,
        failing_since: row.get(9)?,
        failures: row.get(10)?,
        breaker: row.get(11)?,
        updated_at: row.get(12)?,
    })
}

const NODE_COLUMNS: &str = "name, url, source, added_at, last_seen, instance_id, status, applied_generation, last_error, failing_since, failures, breaker, updated_at";

/// Checks a node name: the same rule as model names.
pub fn validate_node_name(name: &str) -> Result<(), RegistryError> {
    crate::validate_name(name).map_err(|_| {
        RegistryError::Invalid(format!(
            "invalid node name '{name}': use 1-128 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"
        ))
    })
}

fn validate_url(url: &str) -> Result<(), RegistryError> {
    kiln_node_api::check_http_url(url).map_err(|e| RegistryError::Invalid(format!("node URL {e}")))
}

impl Registry {
    /// Adds a node or changes its URL (audited); returns whether anything changed.
    pub fn upsert_node(
        &self,
        name: &str,
        url: &str,
        source: NodeSource,
        actor: &str,
    ) -> Result<bool, RegistryError> {
        validate_node_name(name)?;
        validate_url(url)?;
        let url = url.trim_end_matches('/');
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let old: Option<(String, String)> = tx
            .query_row("SELECT url, source FROM nodes WHERE name = ?1", [name], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let now = now_rfc3339();
        match &old {
            Some((u, s)) if u == url && s == source.as_str() => return Ok(false),
            Some(_) => {
                tx.execute(
                    "UPDATE nodes SET url = ?2, source = ?3, status = 'pending', updated_at = ?4 WHERE name = ?1",
                    params![name, url, source.as_str(), now],
                )?;
            }
            None => {
                tx.execute(
                    "INSERT INTO nodes (name, url, source, added_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)",
                    params![name, url, source.as_str(), now],
                )?;
            }
        }
        audit::append(
            &tx,
            actor,
            "node.upsert",
            FLEET,
            None,
            old.map_or(Value::Null, |(u, s)| json!({"node": name, "url": u, "source": s})),
            json!({"node": name, "url": url, "source": source.as_str()}),
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Removes a node (audited); returns whether it existed.
    pub fn remove_node(&self, name: &str, actor: &str) -> Result<bool, RegistryError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let old: Option<String> = tx
            .query_row("SELECT url FROM nodes WHERE name = ?1", [name], |r| r.get(0))
            .optional()?;
        let Some(url) = old else {
            return Ok(false);
        };
        tx.execute("DELETE FROM nodes WHERE name = ?1", [name])?;
        // Its credential goes with it: the name can be joined again only with a join token.
        tx.execute(
            "UPDATE tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
            params![crate::auth::node_token_name(name), now_rfc3339()],
        )?;
        audit::append(
            &tx,
            actor,
            "node.remove",
            FLEET,
            None,
            json!({"node": name, "url": url}),
            Value::Null,
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Records a heartbeat from a joined node: adds it (audited) the first time or when its
    /// URL changed, otherwise only refreshes `last_seen`. Returns whether it is new or moved.
    pub fn node_heartbeat(
        &self,
        name: &str,
        url: &str,
        instance_id: &str,
        actor: &str,
    ) -> Result<bool, RegistryError> {
        let existing = self.node(name)?;
        let changed = match &existing {
            Some(n) if n.url == url.trim_end_matches('/') => false,
            // Only the configuration moves a node it names.
            Some(n) if n.source == NodeSource::Config => {
                return Err(RegistryError::Conflict(format!(
                    "node {name} is configured at {}; a heartbeat cannot move it to {url} (change it with `kiln sync add-node` or the GitOps file)",
                    n.url
                )));
            }
            Some(n) => self.upsert_node(name, url, n.source, actor)?,
            None => self.upsert_node(name, url, NodeSource::Join, actor)?,
        };
        let conn = self.lock();
        conn.execute(
            "UPDATE nodes SET last_seen = ?2, instance_id = ?3 WHERE name = ?1",
            params![name, now_rfc3339(), instance_id],
        )?;
        Ok(changed)
    }

    /// One node.
    pub fn node(&self, name: &str) -> Result<Option<NodeRecord>, RegistryError> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE name = ?1"),
                [name],
                node_from_row,
            )
            .optional()?)
    }

    /// Every node, by name.
    pub fn nodes(&self) -> Result<Vec<NodeRecord>, RegistryError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY name"))?;
        let rows = stmt.query_map([], node_from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Stores a node's sync status (not audited: it changes on every attempt).
    pub fn set_node_status(&self, name: &str, s: &NodeStatusUpdate) -> Result<(), RegistryError> {
        let conn = self.lock();
        let now = now_rfc3339();
        conn.execute(
            "UPDATE nodes SET status = ?2, applied_generation = ?3, last_error = ?4, failing_since = ?5,
                 failures = ?6, breaker = ?7, updated_at = ?8,
                 last_seen = CASE WHEN ?9 THEN ?8 ELSE last_seen END,
                 instance_id = COALESCE(?10, instance_id)
             WHERE name = ?1",
            params![
                name,
                s.status,
                s.applied_generation,
                s.last_error,
                s.failing_since,
                s.failures,
                s.breaker,
                now,
                s.contacted,
                s.instance_id
            ],
        )?;
        Ok(())
    }

    /// What every model serves between rollouts.
    pub fn fleet_models(&self) -> Result<BTreeMap<String, FleetModel>, RegistryError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT model, stable, previous, weights, shadow, nodes, serving FROM fleet_models")?;
        let rows = stmt.query_map([], |r| {
            let weights: Option<String> = r.get(3)?;
            let nodes: Option<String> = r.get(5)?;
            let serving: Option<String> = r.get(6)?;
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<u64>>(1)?,
                r.get::<_, Option<u64>>(2)?,
                weights,
                r.get::<_, Option<u64>>(4)?,
                nodes,
                serving,
            ))
        })?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (model, stable, previous, weights, shadow, nodes, serving) = row?;
            let parse = |text: Option<String>, what: &str| -> Result<Option<Value>, RegistryError> {
                text.map(|t| {
                    serde_json::from_str(&t)
                        .map_err(|e| RegistryError::Corrupt(format!("fleet {what} of `{model}`: {e}")))
                })
                .transpose()
            };
            let weights = parse(weights, "weights")?
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| RegistryError::Corrupt(format!("fleet weights of `{model}`: {e}")))?;
            let nodes = parse(nodes, "nodes")?
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| RegistryError::Corrupt(format!("fleet nodes of `{model}`: {e}")))?;
            let serving = parse(serving, "serving policy")?
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| RegistryError::Corrupt(format!("fleet serving policy of `{model}`: {e}")))?;
            out.insert(
                model.clone(),
                FleetModel {
                    stable,
                    previous,
                    weights,
                    shadow,
                    nodes,
                    serving,
                },
            );
        }
        Ok(out)
    }

    /// Sets what a model serves between rollouts (audited when it changes); returns whether
    /// it changed.
    pub fn set_fleet_model(
        &self,
        model: &str,
        fm: &FleetModel,
        actor: &str,
        reason: &str,
    ) -> Result<bool, RegistryError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = write_fleet_model(&tx, model, fm, actor, reason)?;
        tx.commit()?;
        Ok(changed)
    }

    /// The rollout policy registry changes start for `model` (None: the default).
    pub fn rollout_policy(&self, model: &str) -> Result<Option<RolloutPlan>, RegistryError> {
        let conn = self.lock();
        let text: Option<String> = conn
            .query_row(
                "SELECT policy FROM rollout_policies WHERE model = ?1",
                [model],
                |r| r.get(0),
            )
            .optional()?;
        text.map(|t| {
            serde_json::from_str(&t)
                .map_err(|e| RegistryError::Corrupt(format!("rollout policy of `{model}`: {e}")))
        })
        .transpose()
    }

    /// Every stored rollout policy.
    pub fn rollout_policies(&self) -> Result<BTreeMap<String, RolloutPlan>, RegistryError> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT model, policy FROM rollout_policies ORDER BY model")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (model, text) = row?;
            let plan = serde_json::from_str(&text)
                .map_err(|e| RegistryError::Corrupt(format!("rollout policy of `{model}`: {e}")))?;
            out.insert(model, plan);
        }
        Ok(out)
    }

    /// Sets (or with `None` clears) a model's rollout policy (audited when it changes).
    pub fn set_rollout_policy(
        &self,
        model: &str,
        plan: Option<&RolloutPlan>,
        actor: &str,
    ) -> Result<bool, RegistryError> {
        crate::validate_name(model)?;
        let plan = plan.map(|p| p.clone().validated()).transpose()?;
        let old = self.rollout_policy(model)?;
        if old == plan {
            return Ok(false);
        }
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        match &plan {
            Some(p) => {
                tx.execute(
                    "INSERT INTO rollout_policies (model, policy) VALUES (?1, ?2)
                     ON CONFLICT (model) DO UPDATE SET policy = excluded.policy",
                    params![
                        model,
                        serde_json::to_string(p).map_err(|e| RegistryError::Invalid(e.to_string()))?
                    ],
                )?;
            }
            None => {
                tx.execute("DELETE FROM rollout_policies WHERE model = ?1", [model])?;
            }
        }
        audit::append(&tx, actor, "rollout.policy", model, None, json!(old), json!(plan))?;
        tx.commit()?;
        Ok(true)
    }

    /// The routing generation the sync service last handed out (0 before any).
    pub fn routing_generation(&self) -> Result<u64, RegistryError> {
        let conn = self.lock();
        let g: Option<String> = conn
            .query_row(
                "SELECT value FROM sync_state WHERE key = 'routing_generation'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok(g.and_then(|g| g.parse().ok()).unwrap_or(0))
    }

    /// The routing generation for a fleet state whose content hashes to `state_hash`: the
    /// stored one when the state is unchanged, else the next one (stored).
    pub fn routing_generation_for(&self, state_hash: &str) -> Result<u64, RegistryError> {
        let mut conn = self.lock();
        // The common case, an unchanged state, is a read: no write lock on the database.
        let read = |key: &str| -> Result<Option<String>, RegistryError> {
            Ok(conn
                .query_row("SELECT value FROM sync_state WHERE key = ?1", [key], |r| r.get(0))
                .optional()?)
        };
        if read("routing_hash")?.as_deref() == Some(state_hash)
            && let Some(g) = read("routing_generation")?.and_then(|g| g.parse::<u64>().ok())
            && g > 0
        {
            return Ok(g);
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let get = |key: &str| -> Result<Option<String>, RegistryError> {
            Ok(tx
                .query_row("SELECT value FROM sync_state WHERE key = ?1", [key], |r| r.get(0))
                .optional()?)
        };
        let generation: u64 = get("routing_generation")?
            .and_then(|g| g.parse().ok())
            .unwrap_or(0);
        if get("routing_hash")?.as_deref() == Some(state_hash) && generation > 0 {
            return Ok(generation);
        }
        let next = generation + 1;
        for (key, value) in [
            ("routing_generation", next.to_string()),
            ("routing_hash", state_hash.to_string()),
        ] {
            tx.execute(
                "INSERT INTO sync_state (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
        }
        tx.commit()?;
        Ok(next)
    }
}

/// A stored fleet row: stable, previous, weights JSON, shadow, nodes JSON, serving JSON.
type FleetRow = (
    Option<u64>,
    Option<u64>,
    Option<String>,
    Option<u64>,
    Option<String>,
    Option<String>,
);

/// Writes a fleet model row inside a transaction (audited when it changes).
pub(crate) fn write_fleet_model(
    tx: &rusqlite::Transaction<'_>,
    model: &str,
    fm: &FleetModel,
    actor: &str,
    reason: &str,
) -> Result<bool, RegistryError> {
    let old: Option<FleetRow> = tx
        .query_row(
            "SELECT stable, previous, weights, shadow, nodes, serving FROM fleet_models WHERE model = ?1",
            [model],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
        )
        .optional()?;
    let weights = fm
        .weights
        .as_ref()
        .map(|w| serde_json::to_string(w).unwrap_or_default());
    let nodes = fm
        .nodes
        .as_ref()
        .map(|n| serde_json::to_string(n).unwrap_or_default());
    let serving = fm
        .serving
        .as_ref()
        .map(|p| serde_json::to_string(p).unwrap_or_default());
    let new = (
        fm.stable,
        fm.previous,
        weights.clone(),
        fm.shadow,
        nodes.clone(),
        serving.clone(),
    );
    if old.as_ref() == Some(&new) {
        return Ok(false);
    }
    tx.execute(
        "INSERT INTO fleet_models (model, stable, previous, weights, shadow, nodes, serving, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (model) DO UPDATE SET stable = excluded.stable, previous = excluded.previous,
             weights = excluded.weights, shadow = excluded.shadow, nodes = excluded.nodes,
             serving = excluded.serving, updated_at = excluded.updated_at",
        params![
            model,
            fm.stable,
            fm.previous,
            weights,
            fm.shadow,
            nodes,
            serving,
            now_rfc3339()
        ],
    )?;
    let describe = |stable: Option<u64>,
                    previous: Option<u64>,
                    weights: &Option<String>,
                    shadow: Option<u64>,
                    nodes: &Option<String>,
                    serving: &Option<String>| {
        let json_of = |t: &Option<String>| t.as_deref().and_then(|t| serde_json::from_str::<Value>(t).ok());
        let mut row = json!({
            "stable": stable,
            "previous": previous,
            "weights": json_of(weights),
            "shadow": shadow,
            "nodes": json_of(nodes),
        });
        // Only rows with a policy say so: audit entries of the others keep their shape.
        if let Some(policy) = json_of(serving) {
            row["serving"] = policy;
        }
        row
    };
    let before = old.as_ref().map_or(Value::Null, |(s, p, w, sh, n, sv)| {
        describe(*s, *p, w, *sh, n, sv)
    });
    let mut after = describe(fm.stable, fm.previous, &weights, fm.shadow, &nodes, &serving);
    after["reason"] = json!(reason);
    audit::append(tx, actor, "fleet.set", model, fm.stable, before, after)?;
    Ok(true)
}
