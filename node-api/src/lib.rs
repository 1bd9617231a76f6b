//! The contract between `kiln sync` and the nodes it manages (`kiln serve --managed`), and
//! the traffic-routing rules every Kiln host applies the same way (so a routing key lands
//! on the same version on every node, and on the edge workers too).
//!
//! Nothing here does I/O: these are the JSON shapes of the node admin API and the sync
//! service's join API, plus the pure functions both sides need, the circuit breaker
//! both use in front of the peers they call ([`breaker`]) and the retry policy of every
//! Kiln client ([`retry`]). The one exception is behind the
//! `tls` cargo feature (off by default, so the wasm32 edges never link it): `tls`, the
//! rustls setup every Kiln server and client shares.

#[cfg(feature = "tls")]
pub mod alerts;
pub mod breaker;
pub mod histogram;
pub mod retry;
pub mod routing;
#[cfg(feature = "tls")]
pub mod tls;

pub use histogram::Histogram;
pub use routing::{choose_weighted, routing_point};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Prefix of the node admin API on `kiln serve`.
pub const ADMIN_PREFIX: &str = "/admin/v1";
/// Request header: route by this key (hashed) so the same key always gets the same version
/// while weights do not change (A/B tests, sticky sessions).
pub const ROUTING_KEY_HEADER: &str = "x-kiln-routing-key";
/// Request header: force a version selector (number, stage, alias, `latest`), for debugging
/// and for smoke tests of a version that takes no traffic yet.
pub const FORCE_VERSION_HEADER: &str = "x-kiln-version";
/// Response header: the version that answered.
pub const SERVED_VERSION_HEADER: &str = "x-kiln-model-version";
/// Prefix of the sync service's own API (node registration and heartbeats, status).
pub const SYNC_PREFIX: &str = "/sync/v1";

/// Everything a node serves: per model, its versions with weights and an optional shadow.
/// Replaced as a whole (`PUT /admin/v1/routing`); a node switches to it atomically once
/// every version in it is loaded and warm.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutingTable {
    /// Set by the sender; a node reports the generation it serves. Higher is newer.
    pub generation: u64,
    /// Routes by model name.
    pub models: BTreeMap<String, ModelRouting>,
    /// The registry tokens that may name restricted versions on this node (viewer or
    /// higher): what the sync service sends its nodes, which have no registry. Empty
    /// everywhere else (edges get none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readers: Vec<ReaderGrant>,
}

/// A token allowed to read some models, as a node without a registry checks it: by the
/// SHA-256 of the token (the registry keeps no more than that either).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ReaderGrant {
    /// The token's name (the identity).
    pub name: String,
    /// SHA-256 (hex) of the token.
    pub token_sha256: String,
    /// Model-name patterns it is limited to; empty = every model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
}

impl ReaderGrant {
    /// Whether the grant covers `model`.
    pub fn covers(&self, model: &str) -> bool {
        patterns_cover(&self.models, model)
    }
}

/// Whether a token's model patterns cover `model`: no pattern means every model.
pub fn patterns_cover(patterns: &[String], model: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| glob_match(p, model))
}

/// `*` matches any run of characters, `?` one; everything else itself (model-name
/// patterns of tokens).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// How one model's traffic is split.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelRouting {
    /// Served versions. Weight 0 keeps a version loaded and warm (for instant rollback, or
    /// for smoke tests through the forced-version header) without giving it traffic.
    pub versions: Vec<VersionRoute>,
    /// A version that gets a copy of the traffic; its answers are compared with the served
    /// version's and counted, never returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<VersionRoute>,
    /// The model's bulkhead and fallback on the nodes (kiln.toml's `serving`); `None`:
    /// each node's own flags and defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<ServingPolicy>,
}

/// How nodes serve one model under load and failure: its bulkhead (calls at once, calls
/// waiting) and its fallback. Unset fields take the node's flags and defaults; a node's
/// flag naming the model (`--bulkhead`, `--fallback`) wins over this.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServingPolicy {
    /// Calls of the model running at once on a node (all its versions together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Calls waiting for a slot on a node; one more is shed with 503 `overloaded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue: Option<u32>,
    /// What answers when a version fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackPolicy>,
}

/// A model's fallback: `"previous"` (another version the node serves), or fixed outputs
/// (`{ outputs = { NAME = [one row] } }`, repeated for every row of a request).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum FallbackPolicy {
    /// `"previous"` (the only name; checked by [`FallbackPolicy::check`]).
    Named(String),
    /// Fixed outputs: one row of values per output name.
    Fixed {
        /// Output name → the values of one row.
        outputs: BTreeMap<String, Vec<serde_json::Number>>,
    },
}

impl FallbackPolicy {
    /// Whether it is well-formed: the name `previous`, or at least one output with values.
    pub fn check(&self) -> Result<(), String> {
        match self {
            FallbackPolicy::Named(n) if n == "previous" => Ok(()),
            FallbackPolicy::Named(n) => Err(format!(
                "fallback `{n}`: use \"previous\" or {{ outputs = {{ NAME = [values of one row] }} }}"
            )),
            FallbackPolicy::Fixed { outputs }
                if outputs.is_empty() || outputs.values().any(Vec::is_empty) =>
            {
                Err("a fixed fallback needs at least one output, each with the values of one row".into())
            }
            FallbackPolicy::Fixed { .. } => Ok(()),
        }
    }
}

/// One version in a routing table.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionRoute {
    /// Registry version number.
    pub version: u64,
    /// SHA-256 of the component (lowercase hex).
    pub digest: String,
    /// Relative share of the model's traffic (any scale; 0 = none).
    pub weight: u32,
    /// Registry stage, for selectors (`Production`) and metadata.
    #[serde(default)]
    pub stage: String,
    /// Registry aliases, for selectors (`champion`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Whether any client may name this version (`x-kiln-version`, a version selector, a
    /// bundle download) without a viewer token: set by whoever builds the table for a
    /// Production or aliased version and for the target of a rollout. Absent (an older
    /// table) means restricted; a version with weight > 0 is open either way
    /// ([`VersionRoute::is_open`]).
    #[serde(default)]
    pub open: bool,
}

impl VersionRoute {
    /// Whether any client may name this version: it is marked open, or it takes traffic
    /// already (weight > 0).
    pub fn is_open(&self) -> bool {
        self.open || self.weight > 0
    }
}

impl RoutingTable {
    /// Every digest the table needs, each once, sorted.
    pub fn digests(&self) -> Vec<String> {
        let mut d: Vec<String> = self
            .models
            .values()
            .flat_map(|m| m.versions.iter().chain(m.shadow.iter()))
            .map(|v| v.digest.clone())
            .collect();
        d.sort();
        d.dedup();
        d
    }

    /// Checks the table is servable: names, digests, no duplicate versions, and every model
    /// with versions has a positive total weight. Returns what is wrong, for a 422.
    pub fn validate(&self) -> Result<(), String> {
        for (name, m) in &self.models {
            if name.is_empty() {
                return Err("a model name is empty".into());
            }
            let mut seen = std::collections::BTreeSet::new();
            for v in m.versions.iter().chain(m.shadow.iter()) {
                if !is_sha256_hex(&v.digest) {
                    return Err(format!(
                        "model `{name}` version {}: digest `{}` is not 64 lowercase hex characters",
                        v.version, v.digest
                    ));
                }
            }
            for v in &m.versions {
                if !seen.insert(v.version) {
                    return Err(format!("model `{name}` lists version {} twice", v.version));
                }
            }
            if m.versions.is_empty() {
                return Err(format!("model `{name}` has no versions"));
            }
            if m.versions.iter().map(|v| u64::from(v.weight)).sum::<u64>() == 0 {
                return Err(format!(
                    "model `{name}`: every version has weight 0, so nothing would answer its traffic"
                ));
            }
        }
        Ok(())
    }
}

/// The token of an `Authorization: Bearer <token>` header value, if it is one.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    // The scheme is case-insensitive (RFC 9110, 11.1).
    let (scheme, token) = authorization.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether a presented fleet token equals the expected one, in time that depends on
/// neither the tokens' contents nor their lengths (both are hashed first).
pub fn tokens_match(given: &str, expected: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(expected.as_bytes()),
    );
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What an error answer of a Kiln API says: its JSON `error` (`{"error": "…"}`), else the
/// first 300 characters of its text.
pub fn error_message(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| text.chars().take(300).collect())
}

/// Checks a URL Kiln will call (a node, the sync service, a webhook, MLflow): it must be
/// `http://host[:port][/path]` or `https://host[:port][/path]` (verified against the
/// system's roots plus `--ca-file`).
pub fn check_http_url(url: &str) -> Result<(), String> {
    match url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        Some(_) => Err(format!("`{url}` has no host")),
        None => Err(format!("`{url}` must start with http:// or https://")),
    }
}

/// Whether `s` is a SHA-256 digest in lowercase hex.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `GET /admin/v1/state`: what a node holds and serves, and its counters.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct NodeState {
    /// The node's name (`--node-name`, default its listen address).
    pub node: String,
    /// Kiln version of the node.
    pub kiln_version: String,
    /// Unique per process start: a change tells the sync service the node restarted.
    pub instance_id: String,
    /// Seconds since the process started.
    pub uptime_seconds: f64,
    /// True once the first routing table is loaded.
    pub ready: bool,
    /// `registry` (serves its local registry) or `managed` (routing pushed by `kiln sync`).
    pub mode: String,
    /// The routing table being served.
    pub routing: RoutingTable,
    /// Component digests stored on the node (uploaded or in its registry).
    pub digests: Vec<String>,
    /// Digests loaded in memory (compiled and instantiated).
    pub loaded: Vec<String>,
    /// Request counters per served version since the process started.
    pub versions: Vec<VersionStats>,
    /// Shadow comparisons per (model, shadow version) since the process started.
    pub shadows: Vec<ShadowStats>,
    /// The last routing change that failed, if the latest attempt failed.
    #[serde(default)]
    pub last_error: Option<String>,
    /// The node's own connection to the sync service it joined (`--join`): the breaker and
    /// retry counters of its heartbeats. Absent on a node that did not join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<retry::TargetStatus>,
}

/// Counters of one served version, cumulative since the node started.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct VersionStats {
    /// Model name.
    pub model: String,
    /// Version number.
    pub version: u64,
    /// Inference requests answered by this version (any status).
    pub requests: u64,
    /// Requests answered with a 5xx (the model or host failed).
    pub server_errors: u64,
    /// Requests refused with a 4xx (bad input; not the version's fault).
    pub client_errors: u64,
    /// Requests shed with a 503 `overloaded` because the node or the model's bulkhead
    /// was full: counted in `requests`, in neither error count (capacity, not the
    /// version's fault).
    #[serde(default)]
    pub overloaded: u64,
    /// Latency of the requests, in seconds.
    pub latency: Histogram,
}

impl VersionStats {
    /// What happened between `earlier` and `self` (counters are cumulative; a node restart
    /// resets them, in which case `self` is taken whole).
    pub fn since(&self, earlier: &VersionStats) -> VersionStats {
        if self.requests < earlier.requests {
            return self.clone();
        }
        VersionStats {
            model: self.model.clone(),
            version: self.version,
            requests: self.requests - earlier.requests,
            server_errors: self.server_errors.saturating_sub(earlier.server_errors),
            client_errors: self.client_errors.saturating_sub(earlier.client_errors),
            overloaded: self.overloaded.saturating_sub(earlier.overloaded),
            latency: self.latency.since(&earlier.latency),
        }
    }

    /// Adds another node's counters for the same version.
    pub fn add(&mut self, other: &VersionStats) {
        self.requests += other.requests;
        self.server_errors += other.server_errors;
        self.client_errors += other.client_errors;
        self.overloaded += other.overloaded;
        self.latency.add(&other.latency);
    }
}

/// Shadow traffic of one (model, shadow version), cumulative since the node started.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ShadowStats {
    /// Model name.
    pub model: String,
    /// The shadow version.
    pub version: u64,
    /// Requests whose answers were compared.
    pub compared: u64,
    /// Compared requests whose answers differed (beyond 1e-5 relative, or another label).
    pub disagreements: u64,
    /// Shadow calls that failed.
    pub errors: u64,
    /// Copies dropped because too many shadow calls were in flight.
    pub dropped: u64,
}

impl ShadowStats {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &ShadowStats) -> ShadowStats {
        if self.compared < earlier.compared {
            return self.clone();
        }
        ShadowStats {
            model: self.model.clone(),
            version: self.version,
            compared: self.compared - earlier.compared,
            disagreements: self.disagreements.saturating_sub(earlier.disagreements),
            errors: self.errors.saturating_sub(earlier.errors),
            dropped: self.dropped.saturating_sub(earlier.dropped),
        }
    }
}

/// `PUT /admin/v1/components/{digest}` answer, and `PUT /admin/v1/routing` answer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct AdminReply {
    /// True when the request changed something (false when it was already so).
    pub changed: bool,
    /// The routing generation served after the request.
    pub generation: u64,
    /// Human-readable summary.
    pub message: String,
}

/// `POST /sync/v1/nodes` body: a node announcing itself (and, repeated, its heartbeat).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct JoinRequest {
    /// The node's name, unique in the fleet.
    pub name: String,
    /// Base URL the sync service reaches the node at (`http://127.0.0.1:8081`).
    pub url: String,
    /// The node's process instance id (a change means it restarted).
    pub instance_id: String,
    /// The routing generation the node serves.
    pub generation: u64,
}

/// `POST /sync/v1/nodes` answer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct JoinReply {
    /// How often the node should repeat its heartbeat, in milliseconds.
    pub heartbeat_ms: u64,
    /// New credentials for this node: on its first join (with a join token), and whenever
    /// the service has no admin credential for it (after the service restarted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<NodeCredentials>,
}

/// The two secrets of one node: its own credential towards the sync service, and the one
/// the sync service presents to its admin API. Both are random per node, so no node can
/// act as another or call another's admin API.
#[derive(Serialize, Deserialize, Clone, Default, PartialEq, Eq)]
pub struct NodeCredentials {
    /// The node's credential for its next heartbeats (given once, on the first join).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_token: Option<String>,
    /// What the sync service sends to this node's admin API from now on.
    pub admin_token: String,
}

impl std::fmt::Debug for NodeCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCredentials")
            .field("node_token", &self.node_token.as_ref().map(|_| "[redacted]"))
            .field("admin_token", &"[redacted]")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(tokens_match("s3cret", "s3cret"));
        assert!(!tokens_match("s3cre", "s3cret"));
        assert!(!tokens_match("", "s3cret"));
        assert!(!tokens_match("s3creT", "s3cret"));
        assert_eq!(bearer_token("Bearer abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
    }

    #[test]
    fn only_http_and_https_urls_are_accepted() {
        assert!(check_http_url("http://127.0.0.1:7070").is_ok());
        assert!(check_http_url("http://node-a/base").is_ok());
        assert!(check_http_url("https://node-a:8443").is_ok());
        let ftp = check_http_url("ftp://x").unwrap_err();
        assert!(ftp.contains("http:// or https://"), "{ftp}");
        assert!(check_http_url("http://").is_err());
        assert!(check_http_url("https:///path").is_err());
    }
}
