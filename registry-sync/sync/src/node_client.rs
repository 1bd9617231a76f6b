//! HTTP calls from the sync service to one node's admin API and inference endpoints, each
//! retried under the node's [`RetryPolicy`] when it fails in a way worth repeating
//! (`kiln_node_api::retry`). Every call here is safe to repeat: reading the state is a
//! GET; a component upload is keyed by its digest (a second upload of the same bytes
//! changes nothing); a routing push carries its generation (the same table again is a
//! no-op); a smoke request is an inference, which changes nothing on the node.

use std::sync::Arc;

use kiln_node_api::breaker::BreakerPolicy;
use kiln_node_api::retry::{Event, Failure, RetryPolicy, Target, ThreadPause};
use kiln_node_api::tls::{ClientTls, describe_ureq_error};
use kiln_node_api::{ADMIN_PREFIX, AdminReply, NodeState, RoutingTable};
use secrecy::{ExposeSecret, SecretString};
use std::time::{Duration, SystemTime};

/// Retries of one call to a node: three attempts, 100 ms then up to 200 ms apart (full
/// jitter). Short: the node worker's own backoff and the node's circuit breaker handle a
/// node that stays down.
pub const NODE_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    base_delay: Duration::from_millis(100),
    max_delay: Duration::from_secs(1),
};

/// A node's admin API, with the node's admin credential.
#[derive(Clone)]
pub struct NodeClient {
    agent: ureq::Agent,
    upload_agent: ureq::Agent,
    base: String,
    auth: Option<SecretString>,
    retry: RetryPolicy,
    /// Where retries are counted (the node's target in the service's status and metrics).
    target: Arc<Target>,
}

fn agent(tls: &ClientTls, total: Duration) -> ureq::Agent {
    tls.agent_config()
        .timeout_connect(Some(Duration::from_secs(2)))
        .timeout_global(Some(total))
        .http_status_as_error(false)
        .build()
        .into()
}

/// A failed attempt: no answer, or an answer with an unexpected status.
enum CallError {
    Transport(String),
    Status {
        code: u16,
        retry_after: Option<String>,
        message: String,
    },
}

impl CallError {
    fn failure(&self) -> Failure {
        match self {
            CallError::Transport(_) => Failure::Transport,
            CallError::Status {
                code, retry_after, ..
            } => Failure::status(*code, retry_after.as_deref(), SystemTime::now()),
        }
    }
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
            retry: NODE_RETRY,
            // Counted nowhere visible unless the caller gives the node's own target.
            target: Arc::new(Target::new(
                base,
                "node",
                BreakerPolicy::default(),
                Duration::ZERO,
            )),
        }
    }

    /// The same client retrying under `retry` and counting its retries in `target`.
    pub fn with_retries(&self, retry: RetryPolicy, target: Arc<Target>) -> NodeClient {
        NodeClient {
            retry,
            target,
            ..self.clone()
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

    /// The JSON answer of a call made by `send` (once per attempt), or an error naming
    /// `what`, the status and the node's `{"error": ...}` message.
    fn answer<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        send: impl Fn() -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        ok: impl Fn(u16) -> bool,
    ) -> anyhow::Result<T> {
        let attempt = || -> Result<String, CallError> {
            let mut resp = send().map_err(|e| CallError::Transport(describe_ureq_error(&self.base, &e)))?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = resp.body_mut().read_to_string().unwrap_or_default();
            if !ok(status) {
                let message = kiln_node_api::error_message(&body);
                return Err(CallError::Status {
                    code: status,
                    retry_after,
                    message,
                });
            }
            Ok(body)
        };
        let on_event = |event: Event<'_, CallError>| {
            if let Event::Retry { attempt, delay, .. } = event {
                tracing::debug!(node = %self.target.name(), what, attempt, delay_ms = delay.as_millis() as u64, "node call failed; retrying");
            }
        };
        let body = self
            .target
            .retry(
                &self.retry,
                &mut ThreadPause,
                CallError::failure,
                on_event,
                attempt,
            )
            .map_err(|(error, attempts)| {
                let tries = if attempts > 1 {
                    format!(" (after {attempts} attempts)")
                } else {
                    String::new()
                };
                match error {
                    CallError::Transport(e) => anyhow::anyhow!("{what}: {e}{tries}"),
                    CallError::Status { code, message, .. } => {
                        anyhow::anyhow!("{what}: HTTP {code}: {message}{tries}")
                    }
                }
            })?;
        serde_json::from_str(&body).map_err(|e| anyhow::anyhow!("{what}: bad reply: {e}"))
    }

    /// `GET /admin/v1/state`.
    pub fn state(&self) -> anyhow::Result<NodeState> {
        let url = format!("{}{ADMIN_PREFIX}/state", self.base);
        self.answer(
            "reading the node state",
            || self.authed(self.agent.get(&url)).call(),
            |s| s == 200,
        )
    }

    /// `GET /admin/v1/profiles?since=…`: the node's per-version profiles (drift).
    pub fn profiles(&self, since: &str) -> anyhow::Result<Vec<kiln_monitor::model::VersionProfile>> {
        let url = format!("{}{ADMIN_PREFIX}/profiles?since={since}", self.base);
        self.answer(
            "reading the node's traffic profiles",
            || self.authed(self.agent.get(&url)).call(),
            |s| s == 200,
        )
    }

    /// `PUT /admin/v1/components/{digest}`, streamed from `file` (with its length as the
    /// content length; each attempt starts again from its first byte).
    pub fn put_component(&self, digest: &str, file: &std::fs::File) -> anyhow::Result<AdminReply> {
        use std::io::{Seek, SeekFrom};
        let what = format!("uploading component {}", &digest[..12.min(digest.len())]);
        let url = format!("{}{ADMIN_PREFIX}/components/{digest}", self.base);
        let send = || {
            let mut file = file;
            file.seek(SeekFrom::Start(0)).map_err(ureq::Error::Io)?;
            self.authed(
                self.upload_agent
                    .put(&url)
                    .header("content-type", "application/wasm"),
            )
            .send(file)
        };
        self.answer(&what, send, |s| (200..300).contains(&s))
    }

    /// `PUT /admin/v1/routing`.
    pub fn put_routing(&self, table: &RoutingTable) -> anyhow::Result<AdminReply> {
        let what = format!("pushing routing generation {}", table.generation);
        let body = serde_json::to_vec(table)?;
        let url = format!("{}{ADMIN_PREFIX}/routing", self.base);
        let send = || {
            self.authed(
                self.upload_agent
                    .put(&url)
                    .header("content-type", "application/json"),
            )
            .send(&body[..])
        };
        self.answer(&what, send, |s| s == 200)
    }

    /// `PUT /admin/v1/routing?reset_from=FROM`: the push a node accepts even with a lower
    /// generation, provided it serves exactly generation `from` (an admin asked to re-adopt
    /// the node: `kiln sync reset-node`). One attempt: the worker's next round retries.
    pub fn reset_routing(&self, table: &RoutingTable, from: u64) -> anyhow::Result<()> {
        let what = format!(
            "resetting the node from routing generation {from} to {}",
            table.generation
        );
        let body = serde_json::to_vec(table)?;
        let url = format!("{}{ADMIN_PREFIX}/routing?reset_from={from}", self.base);
        let mut resp = self
            .authed(
                self.upload_agent
                    .put(&url)
                    .header("content-type", "application/json"),
            )
            .send(&body[..])
            .map_err(|e| anyhow::anyhow!("{what}: {}", describe_ureq_error(&self.base, &e)))?;
        let status = resp.status().as_u16();
        if status != 200 {
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            anyhow::bail!("{what}: HTTP {status}: {}", kiln_node_api::error_message(&text));
        }
        Ok(())
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
        let url = format!("{}/v2/models/{model}/versions/{version}/infer", self.base);
        let send = || {
            self.authed(self.agent.post(&url).header("content-type", "application/json"))
                .send(&body[..])
        };
        self.answer(&what, send, |s| s == 200)
    }
}
