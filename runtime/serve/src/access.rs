//! Who may use the inference port, and how much: bearer tokens authenticated through the
//! [`Catalog`] (a registry token of the viewer role or above may name restricted versions,
//! see `kiln_api::access`), cached for [`AccessConfig::token_ttl`], and per-client rate
//! limits (`tower_governor`) answering 429 with `Retry-After`.
//!
//! The playground, the bundle downloads and Kiln's HTTP API go through [`guard`]; the
//! health endpoints (`/v2/health/live`, `/v2/health/ready`), `/metrics` and the node admin
//! API do not (they are neither authenticated nor limited here).

use crate::catalog::Catalog;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State as Shared};
use axum::http::{HeaderValue, Response, header};
use axum::middleware::Next;
use kiln_api::{ApiError, Reader};
use prometheus::IntCounter;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tower_governor::GovernorError;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::KeyExtractor;

/// How long an authentication result is reused: a revoked token keeps working at most this
/// long on a running server.
pub const TOKEN_TTL: Duration = Duration::from_secs(10);

/// Token results kept at most (a flood of made-up tokens must not grow memory).
const MAX_CACHED_TOKENS: usize = 4096;

/// Access settings of the inference port.
#[derive(Clone)]
pub struct AccessConfig {
    /// Per-client rate limit of the API, the playground and bundle downloads; `None`:
    /// unlimited (the default).
    pub rate_limit: Option<RateLimit>,
    /// How long a token's authentication result is reused ([`TOKEN_TTL`]).
    pub token_ttl: Duration,
    tokens: Arc<TokenCache>,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            rate_limit: None,
            token_ttl: TOKEN_TTL,
            tokens: Arc::default(),
        }
    }
}

impl AccessConfig {
    /// The defaults with a rate limit.
    pub fn with_rate_limit(rate_limit: Option<RateLimit>) -> AccessConfig {
        AccessConfig {
            rate_limit,
            ..AccessConfig::default()
        }
    }
}

/// A per-client rate limit: `requests` per `per`, with bursts of up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per `per`, on average.
    pub requests: u32,
    /// The period of `requests`.
    pub per: Duration,
    /// Requests a client may send at once before the average applies.
    pub burst: u32,
    /// What a client is.
    pub key: RateLimitKey,
}

/// What counts as one client for the rate limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RateLimitKey {
    /// The peer IP address.
    Ip,
    /// The token, when the request presents one this server accepts as a viewer token;
    /// else the peer IP address (made-up tokens do not buy a fresh allowance).
    #[default]
    TokenOrIp,
}

impl std::str::FromStr for RateLimitKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "ip" => Ok(RateLimitKey::Ip),
            "token-or-ip" => Ok(RateLimitKey::TokenOrIp),
            other => Err(format!("`{other}`: use `ip` or `token-or-ip`")),
        }
    }
}

impl RateLimit {
    /// Parses `N/s`, `N/m` or `N/h` (also `N/sec`, `N/min`, `N/hour`); the burst is `N`
    /// unless given.
    pub fn parse(text: &str, burst: Option<u32>, key: RateLimitKey) -> Result<RateLimit, String> {
        let (n, unit) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("`{text}`: write a rate as N/s, N/m or N/h (e.g. 100/s)"))?;
        let requests: u32 = n
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("`{text}`: `{n}` is not a positive whole number of requests"))?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => return Err(format!("`{text}`: unknown unit `{other}` (use s, m or h)")),
        };
        if burst == Some(0) {
            return Err("the burst must be at least 1".into());
        }
        Ok(RateLimit {
            requests,
            per,
            burst: burst.unwrap_or(requests),
            key,
        })
    }

    /// The time one request's allowance takes to come back.
    fn period(&self) -> Duration {
        (self.per / self.requests).max(Duration::from_nanos(1))
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit} (burst {})", self.requests, self.burst)
    }
}

/// Who sent a request, as [`authenticate`] found out: set on every request of the guarded
/// routes.
#[derive(Clone, Default)]
pub(crate) struct Caller {
    /// The reader the bearer token stands for, if it is a viewer token here.
    pub(crate) reader: Option<Arc<dyn Reader>>,
    /// SHA-256 of that token (the rate limit's key for it).
    token: Option<[u8; 32]>,
}

/// When a token was looked up, and the reader it stands for (if any).
type Lookup = (Instant, Option<Arc<dyn Reader>>);

/// Authentication results by token hash, each with when it was looked up.
#[derive(Default)]
struct TokenCache {
    entries: Mutex<HashMap<[u8; 32], Lookup>>,
}

impl TokenCache {
    fn get(&self, key: &[u8; 32], ttl: Duration) -> Option<Option<Arc<dyn Reader>>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < ttl)
            .map(|(_, reader)| reader.clone())
    }

    fn put(&self, key: [u8; 32], reader: Option<Arc<dyn Reader>>, ttl: Duration) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_CACHED_TOKENS {
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= MAX_CACHED_TOKENS {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), reader));
    }
}

/// What the guard works with: where tokens are checked, the settings, and the counter of
/// rate-limited requests.
pub(crate) struct Gate {
    pub(crate) catalog: Arc<dyn Catalog>,
    pub(crate) config: AccessConfig,
    pub(crate) rejected: IntCounter,
}

/// The reader a bearer token stands for, from the cache or the catalog (on a blocking
/// thread: the registry is SQLite). A catalog error counts as "not a reader" and is not
/// cached.
async fn reader_of(gate: &Gate, token: &str) -> (Option<Arc<dyn Reader>>, [u8; 32]) {
    let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let access = &gate.config;
    if let Some(found) = access.tokens.get(&key, access.token_ttl) {
        return (found, key);
    }
    let catalog: Arc<dyn Catalog> = gate.catalog.clone();
    let secret = token.to_string();
    match tokio::task::spawn_blocking(move || catalog.authenticate(&secret)).await {
        Ok(Ok(reader)) => {
            access.tokens.put(key, reader.clone(), access.token_ttl);
            (reader, key)
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %format!("{e:#}"), "could not check a bearer token");
            (None, key)
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not check a bearer token");
            (None, key)
        }
    }
}

/// Middleware: authenticates the request's bearer token, if any, and sets [`Caller`]. A
/// token that is not a viewer token here changes nothing (the request goes on as
/// anonymous; only a restricted version refuses it).
async fn authenticate(Shared(gate): Shared<Arc<Gate>>, mut req: Request, next: Next) -> Response<Body> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(kiln_node_api::bearer_token)
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    let mut caller = Caller::default();
    if let Some(token) = token {
        let (reader, key) = reader_of(&gate, &token).await;
        caller.token = reader.as_ref().map(|_| key);
        caller.reader = reader;
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// A client for the rate limit.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Client {
    Token([u8; 32]),
    Ip(IpAddr),
    /// No peer address (a router driven without a socket): one shared allowance.
    Unknown,
}

#[derive(Clone)]
struct ClientKey(RateLimitKey);

impl KeyExtractor for ClientKey {
    type Key = Client;

    fn extract<T>(&self, req: &axum::http::Request<T>) -> Result<Client, GovernorError> {
        if self.0 == RateLimitKey::TokenOrIp
            && let Some(token) = req.extensions().get::<Caller>().and_then(|c| c.token)
        {
            return Ok(Client::Token(token));
        }
        Ok(req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(Client::Unknown, |c| Client::Ip(c.0.ip())))
    }
}

/// The 429 (or, should the limiter fail, 500) in the API's JSON shape, with `Retry-After`
/// in whole seconds rounded up.
fn refusal(error: GovernorError, rejected: &IntCounter, limit: RateLimit) -> Response<Body> {
    let json = |e: ApiError| {
        let mut response = Response::new(Body::from(e.body().to_string()));
        *response.status_mut() = axum::http::StatusCode::from_u16(e.status)
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    };
    let error = match error {
        GovernorError::TooManyRequests { wait_time, .. } => {
            rejected.inc();
            let retry = wait_time + 1;
            let error = ApiError {
                kind: Some("rate_limited"),
                ..ApiError::new(
                    429,
                    format!("too many requests from this client (the limit is {limit}); retry in {retry} s"),
                )
            };
            let mut response = json(error);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry));
            return response;
        }
        GovernorError::UnableToExtractKey => {
            ApiError::internal("the rate limiter could not tell clients apart")
        }
        GovernorError::Other { msg, .. } => {
            ApiError::internal(msg.unwrap_or_else(|| "rate limiter error".into()))
        }
    };
    json(error)
}

/// The guarded routes: authentication on every request, and the rate limit (when set) on
/// the requests that pass it.
pub(crate) fn guard<S: Clone + Send + Sync + 'static>(routes: Router<S>, gate: Gate) -> Router<S> {
    let limit = gate.config.rate_limit;
    let rejected = gate.rejected.clone();
    let authenticated = axum::middleware::from_fn_with_state(Arc::new(gate), authenticate);
    let Some(limit) = limit else {
        return routes.layer(authenticated);
    };
    let Some(config) = GovernorConfigBuilder::default()
        .period(limit.period())
        .burst_size(limit.burst.max(1))
        .key_extractor(ClientKey(limit.key))
        .finish()
    else {
        // `RateLimit::parse` refuses zeros, so this is a config built by hand.
        tracing::warn!(%limit, "the rate limit has a zero in it; serving unlimited");
        return routes.layer(authenticated);
    };
    let config = Arc::new(config);
    let weak = Arc::downgrade(&config);
    every_minute(move || match weak.upgrade() {
        // Clients whose allowance is full again need no state.
        Some(config) => {
            config.limiter().retain_recent();
            true
        }
        None => false,
    });
    routes
        .layer(
            tower_governor::GovernorLayer::new(config).error_handler(move |e| refusal(e, &rejected, limit)),
        )
        .layer(authenticated)
}

/// Runs `step` once a minute until it returns false, on the current runtime (a router
/// built outside one skips it).
fn every_minute(mut step: impl FnMut() -> bool + Send + 'static) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            if !step() {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_their_unit_and_burst() {
        let r = RateLimit::parse("100/s", None, RateLimitKey::Ip).unwrap();
        assert_eq!((r.requests, r.per, r.burst), (100, Duration::from_secs(1), 100));
        assert_eq!(r.period(), Duration::from_millis(10));
        let r = RateLimit::parse(" 6000 / m ", Some(20), RateLimitKey::TokenOrIp).unwrap();
        assert_eq!((r.requests, r.per, r.burst), (6000, Duration::from_secs(60), 20));
        assert_eq!(r.to_string(), "6000/m (burst 20)");
        for bad in ["100", "0/s", "x/s", "10/d", "-1/s"] {
            assert!(RateLimit::parse(bad, None, RateLimitKey::Ip).is_err(), "{bad}");
        }
        assert!(RateLimit::parse("1/s", Some(0), RateLimitKey::Ip).is_err());
        assert_eq!("token-or-ip".parse(), Ok(RateLimitKey::TokenOrIp));
        assert!("token".parse::<RateLimitKey>().is_err());
    }
}
