//! HTTP calls from the sync service to one node's admin API and inference endpoints.

use kiln_node_api::{ADMIN_PREFIX, AdminReply, NodeState, RoutingTable};
use std::time::Duration;

/// A node's admin API, with the fleet token.
#[derive(Clone)]
pub struct NodeClient {
    agent: ureq::Agent,
    upload_agent: ureq::Agent,
    base: String,
    auth: Option<String>,
}

fn agent(total: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(2)))
        .timeout_global(Some(total))
        .http_status_as_error(false)
        .build()
        .into()
}

impl NodeClient {
    /// A client for the node at `base` (`http://host:port`).
    pub fn new(base: &str, token: Option<&str>) -> NodeClient {
        NodeClient {
            agent: agent(Duration::from_secs(5)),
            // A push waits for the node to load and warm every new version.
            upload_agent: agent(Duration::from_secs(120)),
            base: base.trim_end_matches('/').to_string(),
            auth: token.map(|t| format!("Bearer {t}")),
        }
    }

    fn failure(what: &str, status: u16, body: &str) -> anyhow::Error {
        let message = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| body.chars().take(300).collect());
        anyhow::anyhow!("{what}: HTTP {status}: {message}")
    }

    /// `GET /admin/v1/state`.
    pub fn state(&self) -> anyhow::Result<NodeState> {
        let mut req = self.agent.get(format!("{}{ADMIN_PREFIX}/state", self.base));
        if let Some(a) = &self.auth {
            req = req.header("authorization", a);
        }
        let mut resp = req
            .call()
            .map_err(|e| anyhow::anyhow!("reading the node state: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| anyhow::anyhow!("reading the node state: {e}"))?;
        if status != 200 {
            return Err(Self::failure("reading the node state", status, &body));
        }
        serde_json::from_str(&body).map_err(|e| anyhow::anyhow!("the node state is not valid JSON: {e}"))
    }

    /// `PUT /admin/v1/components/{digest}`.
    pub fn put_component(&self, digest: &str, bytes: &[u8]) -> anyhow::Result<AdminReply> {
        let what = format!("uploading component {}", &digest[..12.min(digest.len())]);
        let mut req = self
            .upload_agent
            .put(format!("{}{ADMIN_PREFIX}/components/{digest}", self.base))
            .header("content-type", "application/wasm");
        if let Some(a) = &self.auth {
            req = req.header("authorization", a);
        }
        let mut resp = req.send(bytes).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        if !(200..300).contains(&status) {
            return Err(Self::failure(&what, status, &body));
        }
        serde_json::from_str(&body).map_err(|e| anyhow::anyhow!("{what}: bad reply: {e}"))
    }

    /// `PUT /admin/v1/routing`.
    pub fn put_routing(&self, table: &RoutingTable) -> anyhow::Result<AdminReply> {
        let what = format!("pushing routing generation {}", table.generation);
        let body = serde_json::to_vec(table)?;
        let mut req = self
            .upload_agent
            .put(format!("{}{ADMIN_PREFIX}/routing", self.base))
            .header("content-type", "application/json");
        if let Some(a) = &self.auth {
            req = req.header("authorization", a);
        }
        let mut resp = req.send(&body[..]).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        if status != 200 {
            return Err(Self::failure(&what, status, &text));
        }
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{what}: bad reply: {e}"))
    }

    /// `POST /v2/models/{model}/versions/{version}/infer` with an OIP request; the answer.
    pub fn infer(
        &self,
        model: &str,
        version: u64,
        request: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let what = format!("smoke request to {model}/{version}");
        let body = serde_json::to_vec(request)?;
        let mut resp = self
            .agent
            .post(format!(
                "{}/v2/models/{model}/versions/{version}/infer",
                self.base
            ))
            .header("content-type", "application/json")
            .send(&body[..])
            .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        if status != 200 {
            return Err(Self::failure(&what, status, &text));
        }
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{what}: bad reply: {e}"))
    }
}
