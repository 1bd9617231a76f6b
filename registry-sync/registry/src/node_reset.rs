//! Re-adopting a node that serves a routing generation above the sync service's (someone
//! pushed it a higher one, or the registry was restored from an older backup): a node
//! never goes back to an older generation by itself, so an admin asks for it
//! (`kiln sync reset-node`), and the sync service's next push to that node replaces what
//! it serves whatever its generation. The request and its completion are both audited.

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;

use crate::audit;
use crate::error::RegistryError;
use crate::fleet::FLEET;
use crate::registry::Registry;
use kiln_types::format::now_rfc3339;

/// Where a pending request is kept (`sync_state`, the sync service's key/value state).
const PREFIX: &str = "node_reset/";

/// A pending request to re-adopt a node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct NodeReset {
    /// The node's name.
    pub node: String,
    /// Who asked.
    pub requested_by: String,
    /// When.
    pub requested_at: String,
}

impl Registry {
    /// Asks the sync service to re-adopt `node` (audited `node.reset`): its next push
    /// replaces the node's table even if the node serves a higher generation.
    pub fn request_node_reset(&self, node: &str, actor: &str) -> Result<NodeReset, RegistryError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let known: Option<(u64, String)> = tx
            .query_row(
                "SELECT applied_generation, status FROM nodes WHERE name = ?1",
                [node],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((generation, status)) = known else {
            return Err(RegistryError::NotFound(format!(
                "no node named {node}: `kiln sync status` lists the fleet"
            )));
        };
        let reset = NodeReset {
            node: node.to_string(),
            requested_by: actor.to_string(),
            requested_at: now_rfc3339(),
        };
        let value = serde_json::to_string(&reset).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        tx.execute(
            "INSERT INTO sync_state (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![format!("{PREFIX}{node}"), value],
        )?;
        audit::append(
            &tx,
            actor,
            "node.reset",
            FLEET,
            None,
            json!({ "node": node, "applied_generation": generation, "status": status }),
            json!({ "node": node, "reset": "requested" }),
        )?;
        tx.commit()?;
        Ok(reset)
    }

    /// Pending reset requests, by node.
    pub fn node_resets(&self) -> Result<BTreeMap<String, NodeReset>, RegistryError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT value FROM sync_state WHERE key LIKE 'node\\_reset/%' ESCAPE '\\'")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = BTreeMap::new();
        for value in rows {
            let reset: NodeReset = serde_json::from_str(&value?)
                .map_err(|e| RegistryError::Corrupt(format!("a node reset request: {e}")))?;
            out.insert(reset.node.clone(), reset);
        }
        Ok(out)
    }

    /// The sync service re-adopted `node`: it served generation `from` and now serves `to`
    /// (audited `node.reset_done`). Returns false when no request was pending.
    pub fn complete_node_reset(
        &self,
        node: &str,
        from: u64,
        to: u64,
        actor: &str,
    ) -> Result<bool, RegistryError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let removed = tx.execute(
            "DELETE FROM sync_state WHERE key = ?1",
            [format!("{PREFIX}{node}")],
        )?;
        if removed == 0 {
            return Ok(false);
        }
        audit::append(
            &tx,
            actor,
            "node.reset_done",
            FLEET,
            None,
            json!({ "node": node, "generation": from }),
            json!({ "node": node, "generation": to }),
        )?;
        tx.commit()?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::NodeSource;

    #[test]
    fn a_reset_is_requested_and_completed_with_audit_entries() {
        let (_dir, reg) = crate::testing::open();
        assert!(matches!(
            reg.request_node_reset("edge-1", "alice"),
            Err(RegistryError::NotFound(_))
        ));
        reg.upsert_node("edge-1", "http://127.0.0.1:9", NodeSource::Config, "alice")
            .unwrap();
        reg.request_node_reset("edge-1", "alice").unwrap();
        let pending = reg.node_resets().unwrap();
        assert_eq!(pending["edge-1"].requested_by, "alice");
        assert!(
            reg.complete_node_reset("edge-1", u64::MAX >> 11, 7, "kiln-sync")
                .unwrap()
        );
        assert!(reg.node_resets().unwrap().is_empty());
        assert!(!reg.complete_node_reset("edge-1", 7, 7, "kiln-sync").unwrap());
        let actions: Vec<String> = reg
            .audit_log(Some(FLEET))
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert!(actions.contains(&"node.reset".to_string()), "{actions:?}");
        assert!(actions.contains(&"node.reset_done".to_string()), "{actions:?}");
    }
}
