//! One thread per node: it converges the node on its desired routing table (uploading the
//! components it lacks first), re-checks it periodically (a restarted node is noticed and
//! re-pushed), and backs off with jitter behind a circuit breaker while the node fails.

use kiln_node_api::{NodeState, RoutingTable};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::node_client::NodeClient;
use super::service::Shared;
use crate::fleet::NodeStatusUpdate;

/// Consecutive failures that open a node's breaker.
const BREAKER_THRESHOLD: u32 = 5;

/// What the service knows of one node right now.
#[derive(Clone, Debug, Default)]
pub struct NodeRuntime {
    /// `converged`, `pending` or `failing`.
    pub status: String,
    /// Generation the node acknowledged.
    pub applied_generation: u64,
    /// The node's latest state (with its counters).
    pub last_state: Option<NodeState>,
    /// When `last_state` was read.
    pub state_at: Option<Instant>,
    pub last_error: Option<String>,
    pub failing_since: Option<String>,
    pub failures: u32,
    /// `closed`, `open`, `half-open`.
    pub breaker: String,
    /// Last heartbeat or successful call.
    pub last_seen: Option<Instant>,
    pub instance_id: Option<String>,
}

/// A wake-up signal for a node's worker (new desired state, heartbeat, shutdown).
#[derive(Default)]
pub struct Wake {
    flag: Mutex<bool>,
    cv: Condvar,
}

impl Wake {
    /// Wakes the worker.
    pub fn notify(&self) {
        let mut f = self.flag.lock().unwrap_or_else(|p| p.into_inner());
        *f = true;
        self.cv.notify_one();
    }

    /// Waits for a wake-up or the timeout.
    pub fn wait(&self, timeout: Duration) {
        let f = self.flag.lock().unwrap_or_else(|p| p.into_inner());
        let (mut f, _) = self
            .cv
            .wait_timeout_while(f, timeout, |woken| !*woken)
            .unwrap_or_else(|p| p.into_inner());
        *f = false;
    }
}

/// A running worker's handle.
pub struct WorkerHandle {
    pub wake: Arc<Wake>,
    pub stop: Arc<AtomicBool>,
    pub url: String,
}

/// Backoff before attempt `failures + 1`: base·2^(failures−1), capped, with ±50 % jitter.
pub fn backoff(failures: u32, base: Duration, max: Duration) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let exp = base.saturating_mul(1u32 << (failures - 1).min(16)).min(max);
    let jitter = 0.5 + (uuid::Uuid::new_v4().as_u64_pair().0 % 1000) as f64 / 1000.0;
    exp.mul_f64(jitter).min(max)
}

/// Starts the worker thread of `node`.
pub fn spawn(shared: Arc<Shared>, node: String, url: String) -> WorkerHandle {
    let wake = Arc::new(Wake::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (w, s) = (wake.clone(), stop.clone());
    let thread_url = url.clone();
    // Detached: a worker stops at its next wake-up; it may be inside a node call that
    // takes up to its timeout.
    let spawned = std::thread::Builder::new()
        .name(format!("sync-{node}"))
        .spawn(move || run(shared, node, thread_url, w, s));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start a node worker thread");
    }
    WorkerHandle { wake, stop, url }
}

/// Uploads one component from the registry (one shared copy of its bytes) to the node.
fn upload(shared: &Shared, client: &NodeClient, digest: &str) -> anyhow::Result<()> {
    let bytes = shared
        .blob(digest)
        .map_err(|e| anyhow::anyhow!("reading component {digest} from the registry: {e}"))?;
    client.put_component(digest, &bytes)?;
    shared.metrics.uploads.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

fn converge(
    shared: &Shared,
    client: &NodeClient,
    desired: &RoutingTable,
) -> anyhow::Result<(NodeState, bool)> {
    let state = client.state()?;
    if state.routing == *desired {
        return Ok((state, false));
    }
    let held: std::collections::HashSet<&String> = state.digests.iter().collect();
    for digest in desired.digests() {
        if held.contains(&digest) {
            continue;
        }
        upload(shared, client, &digest)?;
    }
    client.put_routing(desired)?;
    // Read back: the counters and the generation the node now serves.
    let state = client.state()?;
    if state.routing.generation != desired.generation {
        anyhow::bail!(
            "the node accepted generation {} but serves {}",
            desired.generation,
            state.routing.generation
        );
    }
    Ok((state, true))
}

/// Uploads the release candidates `node` lacks (after its routing converged). A failure
/// is logged and retried at the next check; it never marks the node failing.
fn prefetch(shared: &Shared, client: &NodeClient, node: &str, state: &NodeState) {
    for digest in shared.prefetch(node) {
        if state.digests.contains(&digest) {
            continue;
        }
        let permit = shared.permits.acquire();
        let result = upload(shared, client, &digest);
        drop(permit);
        match result {
            Ok(()) => {
                tracing::debug!(node, digest = %digest, "release candidate uploaded ahead of use");
            }
            Err(e) => {
                tracing::debug!(node, digest = %digest, error = %format!("{e:#}"), "prefetch failed; retrying at the next check");
                return;
            }
        }
    }
}

fn run(shared: Arc<Shared>, node: String, url: String, wake: Arc<Wake>, stop: Arc<AtomicBool>) {
    let client = NodeClient::new(&url, shared.config.token.as_deref());
    let mut next_attempt = Instant::now();
    let mut last_check = None::<Instant>;
    let mut persisted: Option<(String, u64, Option<String>, String)> = None;
    let mut last_persist = Instant::now();
    while !stop.load(Ordering::Acquire) {
        let desired = shared.desired_table(&node);
        let now = Instant::now();
        let runtime = shared.node_runtime(&node);
        let needs_push = desired
            .as_ref()
            .is_some_and(|d| runtime.applied_generation != d.generation || runtime.status != "converged");
        let check_due = last_check.is_none_or(|t| now.duration_since(t) >= shared.config.check_interval);
        let restarted = shared.take_restart_hint(&node);
        if (needs_push || check_due || restarted) && now >= next_attempt && desired.is_some() {
            let desired = desired.unwrap_or_default();
            let permit = shared.permits.acquire();
            let result = converge(&shared, &client, &desired);
            drop(permit);
            last_check = Some(Instant::now());
            let mut rt = shared.node_runtime(&node);
            let before = (rt.status.clone(), rt.applied_generation);
            match result {
                Ok((state, pushed)) => {
                    if pushed {
                        shared.metrics.pushes_ok.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(node = %node, generation = desired.generation, "node converged");
                    }
                    if rt.status == "failing" {
                        tracing::info!(node = %node, after_failures = rt.failures, "node reachable again");
                    }
                    rt.status = "converged".into();
                    rt.applied_generation = state.routing.generation;
                    rt.instance_id = Some(state.instance_id.clone());
                    rt.last_state = Some(state);
                    rt.state_at = Some(Instant::now());
                    rt.last_error = None;
                    rt.failing_since = None;
                    rt.failures = 0;
                    rt.breaker = "closed".into();
                    rt.last_seen = Some(Instant::now());
                    next_attempt = Instant::now();
                }
                Err(e) => {
                    shared.metrics.pushes_failed.fetch_add(1, Ordering::Relaxed);
                    let message = format!("{e:#}");
                    if rt.failures == 0 {
                        tracing::warn!(node = %node, error = %message, "node sync failing; backing off");
                    }
                    rt.failures += 1;
                    rt.status = "failing".into();
                    rt.last_error = Some(message);
                    rt.failing_since.get_or_insert_with(crate::now_rfc3339);
                    rt.breaker = if rt.failures >= BREAKER_THRESHOLD {
                        "open".into()
                    } else {
                        "closed".into()
                    };
                    next_attempt = Instant::now()
                        + backoff(rt.failures, shared.config.backoff_base, shared.config.backoff_max);
                }
            }
            shared.set_node_runtime(&node, rt.clone());
            let key = (
                rt.status.clone(),
                rt.applied_generation,
                rt.last_error.clone(),
                rt.breaker.clone(),
            );
            if persisted.as_ref() != Some(&key) || last_persist.elapsed() > Duration::from_secs(10) {
                let update = NodeStatusUpdate {
                    status: rt.status.clone(),
                    applied_generation: rt.applied_generation,
                    last_error: rt.last_error.clone(),
                    failing_since: rt.failing_since.clone(),
                    failures: rt.failures,
                    breaker: rt.breaker.clone(),
                    contacted: rt.status == "converged",
                    instance_id: rt.instance_id.clone(),
                };
                match shared.registry.set_node_status(&node, &update) {
                    Ok(()) => {
                        persisted = Some(key);
                        last_persist = Instant::now();
                    }
                    Err(e) => tracing::warn!(node = %node, error = %e, "could not record the node status"),
                }
            }
            if before != (rt.status.clone(), rt.applied_generation) {
                shared.changed();
            }
            // Release candidates after the routing and its status: never in their way.
            if rt.status == "converged"
                && let Some(state) = rt.last_state.as_ref()
            {
                prefetch(&shared, &client, &node, state);
            }
        }
        // Sleep until something can change: the next check, the backoff's end, or a wake.
        let until_check = shared
            .config
            .check_interval
            .saturating_sub(last_check.map_or(Duration::ZERO, |t| t.elapsed()));
        let until_retry = next_attempt.saturating_duration_since(Instant::now());
        let nap = if shared.node_runtime(&node).status == "failing" {
            until_retry.max(Duration::from_millis(10))
        } else {
            until_check
                .min(Duration::from_secs(1))
                .max(Duration::from_millis(10))
        };
        wake.wait(nap);
        // A heartbeat from a failing node means it is back: retry now.
        if shared.take_retry_hint(&node) {
            next_attempt = Instant::now();
        }
    }
}

/// A counting semaphore bounding concurrent node operations.
pub struct Permits {
    free: Mutex<usize>,
    cv: Condvar,
}

/// A held permit, released on drop.
pub struct Permit<'a>(&'a Permits);

impl Permits {
    /// `n` permits.
    pub fn new(n: usize) -> Permits {
        Permits {
            free: Mutex::new(n.max(1)),
            cv: Condvar::new(),
        }
    }

    /// Waits for a permit.
    pub fn acquire(&self) -> Permit<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.cv.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut free = self.0.free.lock().unwrap_or_else(|p| p.into_inner());
        *free += 1;
        self.0.cv.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        assert_eq!(backoff(0, base, max), Duration::ZERO);
        for _ in 0..50 {
            let b1 = backoff(1, base, max);
            assert!(
                b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(150),
                "{b1:?}"
            );
            let b3 = backoff(3, base, max);
            assert!(
                b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(600),
                "{b3:?}"
            );
            assert!(backoff(30, base, max) <= max);
        }
    }
}
