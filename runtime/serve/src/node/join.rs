//! Joining a sync service: a managed node announces itself (`POST /sync/v1/nodes`) and
//! repeats it as a heartbeat at the interval the service answers with. The service being
//! down never stops the node serving: failures are logged once per outage and retried,
//! a heartbeat a few times at once ([`HEARTBEAT_RETRY`]), and behind a circuit breaker
//! ([`SYNC_BREAKER`]) while the service stays down; both show in the node's metrics
//! (`kiln_client_retries_total`, `kiln_client_breaker_state` with `target="sync"`).
//! The first join presents the join token; the reply carries the node's own credential
//! (kept in the node store) and the one the service will present to its admin API.

use crate::state::{JoinConfig, State};
use kiln_node_api::breaker::BreakerPolicy;
use kiln_node_api::retry::{Event, Failure, Refused, RetryPolicy, Target, ThreadPause};
use kiln_node_api::{JoinReply, JoinRequest, NodeCredentials, SYNC_PREFIX};
use secrecy::{ExposeSecret, SecretString};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

/// The interval before the first reply says otherwise.
const DEFAULT_INTERVAL: Duration = Duration::from_millis(1000);
/// Bounds on the interval a reply may ask for.
const MIN_INTERVAL: Duration = Duration::from_millis(50);
const MAX_INTERVAL: Duration = Duration::from_secs(60);
/// Longest wait on one heartbeat.
const TIMEOUT: Duration = Duration::from_secs(2);
/// The sync service's name in this node's metrics.
const SYNC_TARGET: &str = "sync";
/// Retries of one heartbeat: three attempts, 100 ms then up to 200 ms apart (full
/// jitter), so a blip does not make the node miss a beat.
const HEARTBEAT_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    base_delay: Duration::from_millis(100),
    max_delay: Duration::from_secs(1),
};
/// The sync service's breaker as the node sees it: after three heartbeats that failed
/// (each after its retries) it opens and the node sends one heartbeat per cool-down,
/// 1 s doubling up to 5 s, instead of one per interval: a fleet does not hammer a sync
/// service that is restarting, and finds it again within 5 s.
const SYNC_BREAKER: BreakerPolicy = BreakerPolicy {
    failure_threshold: 3,
    initial_cooldown: Duration::from_secs(1),
    max_cooldown: Duration::from_secs(5),
};

/// The heartbeat thread; stops when dropped.
pub(crate) struct Heartbeat {
    stop: Arc<AtomicBool>,
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

impl Heartbeat {
    /// Starts heartbeats for a node bound at `addr`. Blocking HTTP on its own thread:
    /// one small request a second does not deserve an async client.
    pub(crate) fn start(state: Arc<State>, join: &JoinConfig, addr: SocketAddr) -> anyhow::Result<Heartbeat> {
        if !uses_own_credential(&state) && join.join_token.is_none() && state.store.is_some() {
            tracing::warn!(
                "joining without a join token (--join-token-file): only a sync service started with --insecure-no-auth lets this node in"
            );
        }
        let join_token = join.join_token.clone();
        let endpoint = format!("{}{SYNC_PREFIX}/nodes", join.sync_url.trim_end_matches('/'));
        let scheme = if state.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let url = join
            .advertise_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{addr}"));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("kiln-heartbeat".into())
            .spawn(move || beat(&state, &endpoint, &url, join_token.as_ref(), &flag))?;
        Ok(Heartbeat { stop })
    }
}

/// The bearer token of the next heartbeat: the node's own credential once it has one, the
/// join token before.
fn authorization(state: &State, join_token: Option<&SecretString>) -> Option<String> {
    let own = state
        .credentials
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|c| c.node_token.clone());
    own.or_else(|| join_token.map(|t| t.expose_secret().to_string()))
        .map(|t| format!("Bearer {}", t.trim()))
}

fn uses_own_credential(state: &State) -> bool {
    state
        .credentials
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .is_some_and(|c| c.node_token.is_some())
}

fn forget_own_credential(state: &State) {
    let mut held = state.credentials.write().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = held.as_mut() {
        c.node_token = None;
    }
    tracing::warn!("the sync service refused this node's credential; joining again with the join token");
}

/// Takes the credentials a reply brings: kept in memory and in the node store.
fn accept(state: &State, given: NodeCredentials) {
    let mut held = state.credentials.write().unwrap_or_else(|p| p.into_inner());
    let merged = NodeCredentials {
        node_token: given
            .node_token
            .or_else(|| held.as_ref().and_then(|c| c.node_token.clone())),
        admin_token: given.admin_token,
    };
    if let Some(store) = &state.store
        && let Err(e) = store.set_credentials(&merged)
    {
        tracing::error!(error = %e, "could not keep the node credentials; a restart will need the join token again");
    }
    *held = Some(merged);
    tracing::info!("the sync service gave this node new credentials");
}

/// A failed heartbeat attempt.
enum BeatError {
    /// No answer.
    Transport(String),
    /// An answer with an error status.
    Status {
        code: u16,
        retry_after: Option<String>,
        body: String,
    },
    /// A 2xx answer that could not be read.
    Reply(String),
}

impl BeatError {
    fn failure(&self) -> Failure {
        match self {
            BeatError::Transport(_) => Failure::Transport,
            BeatError::Status {
                code, retry_after, ..
            } => Failure::status(*code, retry_after.as_deref(), SystemTime::now()),
            BeatError::Reply(_) => Failure::Permanent,
        }
    }

    fn describe(&self) -> String {
        match self {
            BeatError::Transport(e) | BeatError::Reply(e) => e.clone(),
            BeatError::Status { code, body, .. } => format!("HTTP {code}: {}", body.trim()),
        }
    }
}

fn beat(state: &State, endpoint: &str, url: &str, join_token: Option<&SecretString>, stop: &AtomicBool) {
    let agent: ureq::Agent = state
        .config
        .client_tls
        .agent_config()
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    // A probe is one heartbeat, which takes at most TIMEOUT.
    let target = state
        .sync_target
        .get_or_init(|| Arc::new(Target::new(SYNC_TARGET, SYNC_TARGET, SYNC_BREAKER, TIMEOUT * 2)))
        .clone();
    state
        .metrics
        .client_breaker(SYNC_TARGET, SYNC_TARGET, target.breaker_gauge());
    let mut interval = DEFAULT_INTERVAL;
    let mut failing = false;
    let mut last_error = String::new();
    tracing::info!(sync = endpoint, url, "joining the sync service");
    while !stop.load(Ordering::Acquire) {
        let request = JoinRequest {
            name: state.node_name(),
            url: url.to_string(),
            instance_id: state.instance_id.clone(),
            generation: state.table().generation,
        };
        let bearer = authorization(state, join_token);
        let used_own = bearer.is_some() && uses_own_credential(state);
        // A heartbeat with the node's own credential only says "alive, serving generation
        // N": safe to repeat. A first join with the join token issues credentials once (a
        // repeat after a lost answer is refused as a second join): not retried here, the
        // next beat tries again.
        let policy = if used_own {
            HEARTBEAT_RETRY
        } else {
            RetryPolicy::ONCE
        };
        let attempt = || -> Result<JoinReply, BeatError> {
            let mut post = agent.post(endpoint);
            if let Some(bearer) = &bearer {
                post = post.header("authorization", bearer);
            }
            let mut response = post
                .send_json(&request)
                .map_err(|e| BeatError::Transport(kiln_node_api::tls::describe_ureq_error(endpoint, &e)))?;
            let status = response.status();
            if !status.is_success() {
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let body = response.body_mut().read_to_string().unwrap_or_default();
                return Err(BeatError::Status {
                    code: status.as_u16(),
                    retry_after,
                    body,
                });
            }
            response
                .body_mut()
                .read_json::<JoinReply>()
                .map_err(|e| BeatError::Reply(format!("reading the reply: {e}")))
        };
        let on_event = |event: Event<'_, BeatError>| match event {
            Event::Retry { attempt, delay, .. } => {
                state.metrics.client_retry(SYNC_TARGET, SYNC_TARGET);
                tracing::debug!(
                    sync = endpoint,
                    attempt,
                    delay_ms = delay.as_millis() as u64,
                    "heartbeat failed; retrying"
                );
            }
            Event::Opened(opened) => tracing::warn!(
                sync = endpoint,
                ?opened,
                "circuit breaker to the sync service open: heartbeats pause for its cool-down"
            ),
            Event::Closed => tracing::info!(sync = endpoint, "circuit breaker to the sync service closed"),
        };
        let outcome = target.call(&policy, &mut ThreadPause, BeatError::failure, on_event, attempt);
        state
            .metrics
            .client_breaker(SYNC_TARGET, SYNC_TARGET, target.breaker_gauge());
        match outcome {
            Ok(reply) => {
                if failing {
                    tracing::warn!(sync = endpoint, "the sync service answers again");
                }
                failing = false;
                if let Some(credentials) = reply.credentials {
                    accept(state, credentials);
                }
                if reply.heartbeat_ms > 0 {
                    interval = Duration::from_millis(reply.heartbeat_ms).clamp(MIN_INTERVAL, MAX_INTERVAL);
                }
            }
            Err(Refused::Failed { error, .. }) => {
                let refused = matches!(error, BeatError::Status { code: 401, .. });
                let error = error.describe();
                // Once per outage, and again when the reason changes (refused, then a
                // TLS error once the service is up).
                if !failing || error != last_error {
                    tracing::warn!(sync = endpoint, error = %error, "heartbeat to the sync service failed; serving on and retrying");
                }
                failing = true;
                last_error = error;
                if refused && used_own {
                    // The service revoked this node's credential (`kiln sync remove-node`):
                    // join again with the join token, if the node has one.
                    forget_own_credential(state);
                }
            }
            // Open: no heartbeat until the cool-down ends (the wait below).
            Err(Refused::Open { .. }) => {}
        }
        let wait = if target.breaker.is_closed() {
            interval
        } else {
            target.breaker.retry_in().max(MIN_INTERVAL)
        };
        sleep_unless_stopped(wait, stop);
    }
}

/// Sleeps `total` in short steps so a stopping server does not wait a whole interval.
fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) {
    let step = Duration::from_millis(50);
    let mut left = total;
    while !left.is_zero() && !stop.load(Ordering::Acquire) {
        let now = left.min(step);
        std::thread::sleep(now);
        left -= now;
    }
}
