//! [`RemoteRegistry`]: [`RegistryApi`] over HTTP, for the CLI when `KILN_REGISTRY` (or
//! `--registry`) names a registry server. Errors keep the server's status and message.

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use kiln_registry::auth::{NewToken, TokenInfo};
use kiln_registry::rollout::Rollout;
use kiln_registry::{
    AuditEntry, AuditReport, GoldenPair, ModelVersion, NewVersion, PlanOverrides, RolloutPlan, Stage,
    StageTransition,
};

use crate::api::API_PREFIX;
use crate::api::{
    ApiError, ApiResult, ChangeView, Finish, FleetStatus, IssuedView, ReferenceProfile, Registered,
    RegistryApi, RolledBack, TokenView, WhoAmI,
};
use crate::server::RegisterBody;

/// Largest JSON answer read (audit logs and golden pairs can be long).
const MAX_ANSWER: u64 = 256 << 20;
/// Largest component downloaded (the registry's default upload limit is 512 MiB).
const MAX_COMPONENT: u64 = 1 << 30;

/// The error of a non-2xx answer: its JSON `error`, else the start of its text.
fn refusal(status: u16, text: &str) -> ApiError {
    ApiError::from_status(status, kiln_node_api::error_message(text))
}

/// A registry server, called with one token.
pub struct RemoteRegistry {
    base: String,
    authorization: SecretString,
    agent: ureq::Agent,
}

impl std::fmt::Debug for RemoteRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteRegistry")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Percent-encodes one path segment (everything but unreserved characters).
fn seg(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl RemoteRegistry {
    /// The server at `base` (`https://host:port`), called with `token` through `agent`
    /// (which carries the TLS settings). The agent must not treat HTTP error statuses as
    /// errors (`http_status_as_error(false)`): their JSON bodies are the messages.
    pub fn new(base: &str, token: &str, agent: ureq::Agent) -> RemoteRegistry {
        RemoteRegistry {
            base: base.trim_end_matches('/').to_string(),
            authorization: SecretString::from(format!("Bearer {}", token.trim())),
            agent,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{API_PREFIX}{path}", self.base)
    }

    fn answer<T: DeserializeOwned>(
        &self,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> ApiResult<T> {
        let mut response = sent.map_err(|e| {
            ApiError::Unreachable(format!(
                "calling the registry server: {}",
                kiln_node_api::tls::describe_ureq_error(&self.base, &e)
            ))
        })?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .map_err(|e| ApiError::Unreachable(format!("reading the registry server's answer: {e}")))?;
        if !(200..300).contains(&status) {
            return Err(refusal(status, &text));
        }
        serde_json::from_str(&text).map_err(|e| {
            ApiError::Unreachable(format!(
                "the registry server at {} answered something this kiln cannot read ({e}); are both the same version?",
                self.base
            ))
        })
    }

    fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> ApiResult<T> {
        let mut req = self
            .agent
            .get(self.url(path))
            .header("authorization", self.authorization.expose_secret());
        for (k, v) in query {
            req = req.query(*k, *v);
        }
        self.answer(req.call())
    }

    fn send<T: DeserializeOwned>(&self, method: &str, path: &str, body: &impl Serialize) -> ApiResult<T> {
        let url = self.url(path);
        let req = match method {
            "PUT" => self.agent.put(url),
            _ => self.agent.post(url),
        };
        self.answer(
            req.header("authorization", self.authorization.expose_secret())
                .send_json(body),
        )
    }

    fn delete<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> ApiResult<T> {
        let mut req = self
            .agent
            .delete(self.url(path))
            .header("authorization", self.authorization.expose_secret());
        for (k, v) in query {
            req = req.query(*k, *v);
        }
        self.answer(req.call())
    }
}

impl RegistryApi for RemoteRegistry {
    fn whoami(&self) -> ApiResult<WhoAmI> {
        self.get("/whoami", &[])
    }

    fn location(&self) -> String {
        self.base.clone()
    }

    fn register(&self, new: NewVersion) -> ApiResult<Registered> {
        let digest = kiln_types::digest(&new.component);
        let name = seg(&new.name);
        let _: Value = self.answer(
            self.agent
                .put(self.url(&format!("/models/{name}/components/sha256:{digest}")))
                .header("authorization", self.authorization.expose_secret())
                .header("content-type", "application/wasm")
                .send(&new.component[..]),
        )?;
        let body = RegisterBody {
            component_digest: format!("sha256:{digest}"),
            source_digest: new.source_digest,
            description: new.description,
            tags: new.tags,
            lineage: new.lineage,
            signature: new.signature,
            golden: new.golden,
        };
        self.send("POST", &format!("/models/{name}/versions"), &body)
    }

    fn list(&self, name: Option<&str>) -> ApiResult<Vec<ModelVersion>> {
        match name {
            Some(n) => self.get("/versions", &[("model", n)]),
            None => self.get("/versions", &[]),
        }
    }

    fn resolve(&self, reference: &str) -> ApiResult<ModelVersion> {
        self.get("/resolve", &[("ref", reference)])
    }

    fn golden(&self, name: &str, version: u64) -> ApiResult<Vec<GoldenPair>> {
        self.get(&format!("/models/{}/versions/{version}/golden", seg(name)), &[])
    }

    fn transition(
        &self,
        name: &str,
        version: u64,
        stage: Stage,
        archive_existing: bool,
    ) -> ApiResult<StageTransition> {
        self.send(
            "PUT",
            &format!("/models/{}/versions/{version}/stage", seg(name)),
            &json!({ "stage": stage, "archive_existing": archive_existing }),
        )
    }

    fn set_alias(&self, name: &str, alias: &str, version: u64) -> ApiResult<ModelVersion> {
        self.send(
            "PUT",
            &format!("/models/{}/aliases/{}", seg(name), seg(alias)),
            &json!({ "version": version }),
        )
    }

    fn delete_alias(&self, name: &str, alias: &str) -> ApiResult<()> {
        let _: Value = self.delete(&format!("/models/{}/aliases/{}", seg(name), seg(alias)), &[])?;
        Ok(())
    }

    fn set_tag(&self, name: &str, version: u64, key: &str, value: &str) -> ApiResult<()> {
        let _: Value = self.send(
            "PUT",
            &format!("/models/{}/versions/{version}/tags/{}", seg(name), seg(key)),
            &json!({ "value": value }),
        )?;
        Ok(())
    }

    fn set_reference(
        &self,
        name: &str,
        version: u64,
        reference: &ReferenceProfile,
    ) -> ApiResult<ReferenceProfile> {
        self.send(
            "PUT",
            &format!("/models/{}/versions/{version}/reference", seg(name)),
            reference,
        )
    }

    fn component(&self, name: &str, version: u64) -> ApiResult<Vec<u8>> {
        let url = self.url(&format!("/models/{}/versions/{version}/component", seg(name)));
        let mut response = self
            .agent
            .get(url)
            .header("authorization", self.authorization.expose_secret())
            .call()
            .map_err(|e| {
                ApiError::Unreachable(format!(
                    "calling the registry server: {}",
                    kiln_node_api::tls::describe_ureq_error(&self.base, &e)
                ))
            })?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let text = response
                .body_mut()
                .with_config()
                .limit(MAX_ANSWER)
                .read_to_string()
                .unwrap_or_default();
            return Err(refusal(status, &text));
        }
        let digest = response
            .headers()
            .get("x-kiln-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_COMPONENT)
            .read_to_vec()
            .map_err(|e| {
                ApiError::Unreachable(format!("downloading the component of {name}/{version}: {e}"))
            })?;
        let actual = format!("sha256:{}", kiln_types::digest(&bytes));
        if digest.as_deref().is_some_and(|d| d != actual) {
            return Err(ApiError::Unreachable(format!(
                "the component of {name}/{version} arrived damaged: it hashes to {actual}, the server sent {}",
                digest.unwrap_or_default()
            )));
        }
        Ok(bytes)
    }

    fn reference(&self, name: &str, version: u64) -> ApiResult<Option<ReferenceProfile>> {
        self.get(
            &format!("/models/{}/versions/{version}/reference", seg(name)),
            &[],
        )
    }

    fn delete_tag(&self, name: &str, version: u64, key: &str) -> ApiResult<()> {
        let _: Value = self.delete(
            &format!("/models/{}/versions/{version}/tags/{}", seg(name), seg(key)),
            &[],
        )?;
        Ok(())
    }

    fn describe(&self, name: &str, version: u64, text: &str) -> ApiResult<()> {
        let _: Value = self.send(
            "PUT",
            &format!("/models/{}/versions/{version}/description", seg(name)),
            &json!({ "text": text }),
        )?;
        Ok(())
    }

    fn delete_version(&self, name: &str, version: u64, force: bool) -> ApiResult<()> {
        let force = if force { "true" } else { "false" };
        let _: Value = self.delete(
            &format!("/models/{}/versions/{version}", seg(name)),
            &[("force", force)],
        )?;
        Ok(())
    }

    fn audit_log(&self, model: Option<&str>) -> ApiResult<Vec<AuditEntry>> {
        match model {
            Some(m) => self.get("/audit", &[("model", m)]),
            None => self.get("/audit", &[]),
        }
    }

    fn verify_audit(&self) -> ApiResult<AuditReport> {
        self.get("/audit/verify", &[])
    }

    fn rollout_start(&self, name: &str, to: u64, plan: PlanOverrides) -> ApiResult<Rollout> {
        self.send(
            "POST",
            &format!("/rollouts/{}", seg(name)),
            &json!({ "to": to, "plan": plan }),
        )
    }

    fn rollouts(&self, name: Option<&str>) -> ApiResult<Vec<Rollout>> {
        match name {
            Some(m) => self.get("/rollouts", &[("model", m)]),
            None => self.get("/rollouts", &[]),
        }
    }

    fn rollout_pause(&self, name: &str, pause: bool) -> ApiResult<Rollout> {
        let action = if pause { "pause" } else { "resume" };
        self.send("POST", &format!("/rollouts/{}/{action}", seg(name)), &json!({}))
    }

    fn rollout_finish(&self, name: &str, how: Finish) -> ApiResult<Rollout> {
        let action = match how {
            Finish::Promote => "promote",
            Finish::Abort => "abort",
        };
        self.send("POST", &format!("/rollouts/{}/{action}", seg(name)), &json!({}))
    }

    fn rollout_rollback(&self, name: &str) -> ApiResult<RolledBack> {
        self.send("POST", &format!("/rollouts/{}/rollback", seg(name)), &json!({}))
    }

    fn rollout_policy(&self, name: &str, plan: Option<PlanOverrides>) -> ApiResult<Option<RolloutPlan>> {
        let path = format!("/rollouts/{}/policy", seg(name));
        match plan {
            Some(plan) => self.send("PUT", &path, &plan),
            None => self.delete(&path, &[]),
        }
    }

    fn fleet_status(&self) -> ApiResult<FleetStatus> {
        self.get("/fleet", &[])
    }

    fn add_node(&self, name: &str, url: &str) -> ApiResult<bool> {
        let answer: Value = self.send(
            "PUT",
            &format!("/fleet/nodes/{}", seg(name)),
            &json!({ "url": url }),
        )?;
        Ok(answer.get("changed").and_then(Value::as_bool).unwrap_or(true))
    }

    fn remove_node(&self, name: &str) -> ApiResult<bool> {
        match self.delete::<Value>(&format!("/fleet/nodes/{}", seg(name)), &[]) {
            Ok(_) => Ok(true),
            Err(ApiError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn reset_node(&self, name: &str) -> ApiResult<kiln_registry::node_reset::NodeReset> {
        self.send("POST", &format!("/fleet/nodes/{}/reset", seg(name)), &json!({}))
    }

    fn gitops(&self, toml: &str, apply: bool) -> ApiResult<Vec<ChangeView>> {
        let mode = if apply { "apply" } else { "plan" };
        self.send("POST", &format!("/gitops/{mode}"), &json!({ "toml": toml }))
    }

    fn create_token(&self, new: &NewToken) -> ApiResult<IssuedView> {
        self.send("POST", "/tokens", new)
    }

    fn tokens(&self) -> ApiResult<Vec<TokenView>> {
        self.get("/tokens", &[])
    }

    fn revoke_token(&self, name: &str) -> ApiResult<TokenInfo> {
        self.delete(&format!("/tokens/{}", seg(name)), &[])
    }
}
