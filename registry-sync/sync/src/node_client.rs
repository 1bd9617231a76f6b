//! HTTP calls from the sync service to one node's admin API and inference endpoints.

use kiln_node_api::tls::{ClientTls, describe_ureq_error};
use kiln_node_api::{ADMIN_PREFIX, AdminReply, NodeState, RoutingTable};
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

/// A node's admin API, with the node's admin credential.
#[derive(Clone)]
pub struct NodeClient {
    agent: ureq::Agent,
    upload_agent: ureq::Agent,
    base: String,
    auth: Option<SecretString>,
}

fn agent(tls: &ClientTls, total: Duration) -> ureq::Agent {
    tls.agent_config()
        .timeout_connect(Some(Duration::from_secs(2)))
        .timeout_global(Some(total))
        .http_status_as_error(false)
        .build()
        .into()
}

impl NodeClient {
    /// A client for the node at `base` (`http://host:port` or `https://host:port`, then
    /// verified with `tls`, which also holds the client certificate for mutual TLS).
    pub fn new(base: &str, token: Option<SecretString>, tls: &ClientTls) -> NodeClient {
        NodeClient {
            agent: agent(tls, Duration::from_secs(5)),
            // A push waits for the node to load and warm every new version.
            upload_agent: agent(tls, Duration::from_secs(120)),
            base: base.trim_end_matches('/').to_string(),
            auth: token,
        }
    }

    /// The same client presenting `token` (a node's credential changes when it re-joins).
    pub fn with_token(&self, token: Option<SecretString>) -> NodeClient {
        NodeClient {
            auth: token,
            ..self.clone()
        }
    }

    /// Adds the node's admin credential when there is one.
    fn authed<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.auth {
            Some(a) => req.header("authorization", format!("Bearer {}", a.expose_secret())),
            None => req,
        }
    }

    /// The JSON answer of a call, or an error naming `what`, the status and the node's
    /// `{"error": ...}` message.
    fn answer<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        ok: impl Fn(u16) -> bool,
    ) -> anyhow::Result<T> {
        let mut resp =
            sent.map_err(|e| anyhow::anyhow!("{what}: {}", describe_ureq_error(&self.base, &e)))?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        if !ok(status) {
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_else(|| body.chars().take(300).collect());
            anyhow::bail!("{what}: HTTP {status}: {message}");
        }
        serde_json::from_str(&body).map_err(|e| anyhow::anyhow!("{what}: bad reply: {e}"))
    }

    /// `GET /admin/v1/state`.
    pub fn state(&self) -> anyhow::Result<NodeState> {
        let req = self.authed(self.agent.get(format!("{}{ADMIN_PREFIX}/state", self.base)));
        self.answer("reading the node state", req.call(), |s| s == 200)
    }

    /// `PUT /admin/v1/components/{digest}`.
    pub fn put_component(&self, digest: &str, bytes: &[u8]) -> anyhow::Result<AdminReply> {
        let what = format!("uploading component {}", &digest[..12.min(digest.len())]);
        let req = self.authed(
            self.upload_agent
                .put(format!("{}{ADMIN_PREFIX}/components/{digest}", self.base))
                .header("content-type", "application/wasm"),
        );
        self.answer(&what, req.send(bytes), |s| (200..300).contains(&s))
    }

    /// `PUT /admin/v1/routing`.
    pub fn put_routing(&self, table: &RoutingTable) -> anyhow::Result<AdminReply> {
        let what = format!("pushing routing generation {}", table.generation);
        let body = serde_json::to_vec(table)?;
        let req = self.authed(
            self.upload_agent
                .put(format!("{}{ADMIN_PREFIX}/routing", self.base))
                .header("content-type", "application/json"),
        );
        self.answer(&what, req.send(&body[..]), |s| s == 200)
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
        // With the node's admin credential: the version under test may not take traffic
        // yet, and forcing such a version needs an identity the node trusts.
        let req = self.authed(
            self.agent
                .post(format!(
                    "{}/v2/models/{model}/versions/{version}/infer",
                    self.base
                ))
                .header("content-type", "application/json"),
        );
        self.answer(&what, req.send(&body[..]), |s| s == 200)
    }
}
