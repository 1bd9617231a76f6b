//! Joining a sync service: a managed node announces itself (`POST /sync/v1/nodes`) and
//! repeats it as a heartbeat at the interval the service answers with. The service being
//! down never stops the node serving: failures are logged once per outage and retried.

use crate::state::{JoinConfig, State};
use kiln_node_api::{JoinReply, JoinRequest, SYNC_PREFIX};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The interval before the first reply says otherwise.
const DEFAULT_INTERVAL: Duration = Duration::from_millis(1000);
/// Bounds on the interval a reply may ask for.
const MIN_INTERVAL: Duration = Duration::from_millis(50);
const MAX_INTERVAL: Duration = Duration::from_secs(60);
/// Longest wait on one heartbeat.
const TIMEOUT: Duration = Duration::from_secs(2);

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
        let token = state.config.admin_token.clone().ok_or_else(|| {
            anyhow::anyhow!("joining a sync service needs an admin token (--admin-token or KILN_ADMIN_TOKEN): the service pushes to the node's admin API with it")
        })?;
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
            .spawn(move || beat(&state, &endpoint, &url, &token, &flag))?;
        Ok(Heartbeat { stop })
    }
}

fn beat(state: &State, endpoint: &str, url: &str, token: &str, stop: &AtomicBool) {
    let agent: ureq::Agent = state
        .config
        .client_tls
        .agent_config()
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let authorization = format!("Bearer {token}");
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
        let outcome = agent
            .post(endpoint)
            .header("authorization", &authorization)
            .send_json(&request)
            .map_err(|e| kiln_node_api::tls::describe_ureq_error(endpoint, &e))
            .and_then(|mut response| {
                let status = response.status();
                if !status.is_success() {
                    let body = response.body_mut().read_to_string().unwrap_or_default();
                    return Err(format!("HTTP {status}: {}", body.trim()));
                }
                response
                    .body_mut()
                    .read_json::<JoinReply>()
                    .map_err(|e| format!("reading the reply: {e}"))
            });
        match outcome {
            Ok(reply) => {
                if failing {
                    tracing::warn!(sync = endpoint, "the sync service answers again");
                }
                failing = false;
                if reply.heartbeat_ms > 0 {
                    interval = Duration::from_millis(reply.heartbeat_ms).clamp(MIN_INTERVAL, MAX_INTERVAL);
                }
            }
            Err(error) => {
                // Once per outage, and again when the reason changes (refused, then a
                // TLS error once the service is up).
                if !failing || error != last_error {
                    tracing::warn!(sync = endpoint, error = %error, "heartbeat to the sync service failed; serving on and retrying");
                }
                failing = true;
                last_error = error;
            }
        }
        sleep_unless_stopped(interval, stop);
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
