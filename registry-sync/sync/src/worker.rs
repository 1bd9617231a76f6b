//! One thread per node: it converges the node on its desired routing table (uploading the
//! components it lacks first), re-checks it periodically (a restarted node is noticed and
//! re-pushed), and backs off with jitter while the node fails. After
//! [`SyncConfig::breaker_threshold`](crate::SyncConfig) consecutive failures the node's
//! circuit breaker opens: the worker stops calling the node for a cool-down (`backoff_max`,
//! doubling after each failed probe up to six times that), then makes one probe call
//! (half-open) whose success closes the
//! breaker. A heartbeat from the node ends the cool-down at once.
//!
//! Inside one attempt each call to the node is retried under
//! [`NODE_RETRY`](crate::node_client::NODE_RETRY) when it fails in a way worth repeating;
//! a probe makes one call of each kind, without retries. The breaker and the retry count
//! are the node's [`Target`], shown in the status and the metrics.

use kiln_node_api::breaker::{Admit, Opened};
use kiln_node_api::retry::{RetryPolicy, Target};
use kiln_node_api::{NodeState, RoutingTable};
use kiln_registry::fleet::{NodeRecord, NodeStatusUpdate};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::node_client::{NODE_RETRY, NodeClient};
use crate::state::{Shared, Wake, WorkerHandle};

/// Backoff before attempt `failures + 1`: the retry policy's exponential backoff with
/// full jitter, uniform in `[0, min(max, base·2^(failures−1))]`.
pub fn backoff(failures: u32, base: Duration, max: Duration) -> Duration {
    let policy = RetryPolicy {
        max_attempts: u32::MAX,
        base_delay: base,
        max_delay: max,
    };
    policy.backoff(failures, kiln_node_api::retry::random_unit())
}

/// Longest a probe call can take (a push waits for the node to load new versions).
const PROBE_STALE_AFTER: Duration = Duration::from_secs(300);

/// Starts workers for new nodes and stops those of removed (or moved) nodes.
pub fn reconcile(shared: &Arc<Shared>, nodes: &[NodeRecord]) {
    let mut workers = shared.workers.lock().unwrap_or_else(|p| p.into_inner());
    let wanted: HashMap<&str, &str> = nodes.iter().map(|n| (n.name.as_str(), n.url.as_str())).collect();
    let gone: Vec<String> = workers
        .iter()
        .filter(|(name, w)| wanted.get(name.as_str()) != Some(&w.url.as_str()))
        .map(|(name, _)| name.clone())
        .collect();
    for name in gone {
        if let Some(w) = workers.remove(&name) {
            w.stop.store(true, Ordering::Release);
            w.wake.notify();
        }
    }
    for n in nodes {
        if !workers.contains_key(&n.name) {
            // Start from what the database remembers, so a restarted service reports
            // the nodes as they were until it has checked them.
            let mut rt = shared.node_runtime(&n.name);
            if rt.instance_id.is_none() {
                rt.applied_generation = n.applied_generation;
                rt.instance_id = n.instance_id.clone();
                rt.status = if n.status == "converged" {
                    "pending".into()
                } else {
                    n.status.clone()
                };
                rt.failing_since = n.failing_since.clone();
                rt.last_error = n.last_error.clone();
                rt.failures = n.failures;
                shared.set_node_runtime(&n.name, rt);
            }
            workers.insert(
                n.name.clone(),
                spawn(shared.clone(), n.name.clone(), n.url.clone()),
            );
            tracing::info!(node = %n.name, url = %n.url, "managing node");
        }
    }
}

/// Starts the worker thread of `node`.
fn spawn(shared: Arc<Shared>, node: String, url: String) -> WorkerHandle {
    let wake = Arc::new(Wake::default());
    let stop = Arc::new(AtomicBool::new(false));
    let target = shared.node_target(&node, PROBE_STALE_AFTER);
    let worker = Worker {
        wake: wake.clone(),
        stop: stop.clone(),
        target: target.clone(),
        client: NodeClient::new(&url, None, &shared.config.client_tls)
            .with_retries(NODE_RETRY, target.clone()),
        shared,
        node: node.clone(),
    };
    // Detached: a worker stops at its next wake-up; it may be inside a node call that
    // takes up to its timeout.
    let spawned = std::thread::Builder::new()
        .name(format!("sync-{node}"))
        .spawn(move || worker.run());
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start a node worker thread");
    }
    WorkerHandle {
        wake,
        stop,
        url,
        target,
    }
}

/// Streams one component from the registry's blob file to the node.
fn upload(shared: &Shared, client: &NodeClient, digest: &str) -> anyhow::Result<()> {
    let file = shared
        .component_file(digest)
        .map_err(|e| anyhow::anyhow!("reading component {digest} from the registry: {e}"))?;
    client.put_component(digest, &file)?;
    shared.metrics.uploads.inc();
    Ok(())
}

fn converge(
    shared: &Shared,
    client: &NodeClient,
    node: &str,
    desired: &RoutingTable,
) -> anyhow::Result<(NodeState, bool)> {
    let state = client.state()?;
    // A node never goes back to an older generation by itself: one that serves a higher
    // generation than this service's is locked out until an admin resets it.
    let reset_from = if state.routing.generation > desired.generation {
        if !shared.reset_requested(node) {
            anyhow::bail!(
                "the node serves routing generation {}, above this service's {} (something else pushed it, or the registry was restored from an older backup), and refuses older ones; `kiln sync reset-node {node}` lets this service replace its table",
                state.routing.generation,
                desired.generation
            );
        }
        Some(state.routing.generation)
    } else {
        None
    };
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
    match reset_from {
        Some(from) => client.reset_routing(desired, from)?,
        None => {
            client.put_routing(desired)?;
        }
    }
    // Read back: the counters and the generation the node now serves.
    let state = client.state()?;
    if state.routing.generation != desired.generation {
        anyhow::bail!(
            "the node accepted generation {} but serves {}",
            desired.generation,
            state.routing.generation
        );
    }
    if let Some(from) = reset_from {
        shared.reset_done(node, from, desired.generation);
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

/// One node's worker thread.
struct Worker {
    shared: Arc<Shared>,
    node: String,
    client: NodeClient,
    wake: Arc<Wake>,
    stop: Arc<AtomicBool>,
    target: Arc<Target>,
}

/// The node status last written to the registry.
type Persisted = (String, u64, Option<String>, String);

impl Worker {
    fn run(self) {
        let (shared, node, breaker) = (&self.shared, self.node.as_str(), &self.target.breaker);
        let mut next_attempt = Instant::now();
        let mut last_check = None::<Instant>;
        let mut persisted: Option<Persisted> = None;
        let mut last_persist = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            let desired = shared.desired_table(node);
            let now = Instant::now();
            let runtime = shared.node_runtime(node);
            let needs_push = desired
                .as_ref()
                .is_some_and(|d| runtime.applied_generation != d.generation || runtime.status != "converged");
            let check_due = last_check.is_none_or(|t| now.duration_since(t) >= shared.config.check_interval);
            let restarted = shared.take_restart_hint(node);
            // A heartbeat from a failing node means it is back: retry now.
            if shared.take_retry_hint(node) {
                next_attempt = now;
            }
            let admit = match desired {
                Some(_) if needs_push || check_due || restarted => {
                    if breaker.is_closed() {
                        (now >= next_attempt).then_some(Admit::Call)
                    } else {
                        // Open: no calls to the node until its cool-down is over; then one
                        // probe.
                        Some(breaker.admit()).filter(|a| *a != Admit::Reject)
                    }
                }
                _ => None,
            };
            if let (Some(admit), Some(desired)) = (admit, desired) {
                let mut rt = shared.node_runtime(node);
                if admit == Admit::Probe {
                    rt.breaker = breaker.state().as_str().into();
                    shared.set_node_runtime(node, rt.clone());
                    tracing::info!(node, "probing a node whose circuit breaker is open");
                }
                let permit = shared.permits.acquire();
                let mut client = self.client.with_token(shared.node_auth(&self.node));
                if admit == Admit::Probe {
                    // A probe is one call: its failure must not turn into more calls.
                    client = client.with_retries(RetryPolicy::ONCE, self.target.clone());
                }
                let result = converge(shared, &client, node, &desired);
                drop(permit);
                last_check = Some(Instant::now());
                let before = (rt.status.clone(), rt.applied_generation);
                match result {
                    Ok((state, pushed)) => {
                        if pushed {
                            shared.metrics.push(true);
                            tracing::info!(node, generation = desired.generation, "node converged");
                        }
                        if breaker.record_success() {
                            tracing::info!(
                                node,
                                after_failures = rt.failures,
                                "node reachable again; circuit breaker closed"
                            );
                        } else if rt.status == "failing" {
                            tracing::info!(node, after_failures = rt.failures, "node reachable again");
                        }
                        rt.status = "converged".into();
                        rt.applied_generation = state.routing.generation;
                        rt.instance_id = Some(state.instance_id.clone());
                        rt.last_state = Some(state);
                        rt.state_at = Some(Instant::now());
                        rt.last_error = None;
                        rt.failing_since = None;
                        rt.failures = 0;
                        rt.last_seen = Some(Instant::now());
                        next_attempt = Instant::now();
                    }
                    Err(e) => {
                        shared.metrics.push(false);
                        let message = format!("{e:#}");
                        if rt.failures == 0 {
                            tracing::warn!(node, error = %message, "node sync failing; backing off");
                        }
                        match breaker.record_failure(admit == Admit::Probe) {
                            Some(Opened::Now { failures, cooldown }) => tracing::warn!(
                                node,
                                failures,
                                cooldown_ms = cooldown.as_millis() as u64,
                                "circuit breaker open: no calls to the node until the cool-down ends or it sends a heartbeat"
                            ),
                            Some(Opened::Again { cooldown }) => tracing::debug!(
                                node,
                                cooldown_ms = cooldown.as_millis() as u64,
                                error = %message,
                                "probe failed; circuit breaker stays open"
                            ),
                            None => {}
                        }
                        rt.failures += 1;
                        rt.status = "failing".into();
                        rt.last_error = Some(message);
                        rt.failing_since
                            .get_or_insert_with(kiln_types::format::now_rfc3339);
                        next_attempt = Instant::now()
                            + backoff(rt.failures, shared.config.backoff_base, shared.config.backoff_max);
                    }
                }
                rt.breaker = breaker.state().as_str().into();
                shared.set_node_runtime(node, rt.clone());
                self.persist(&rt, &mut persisted, &mut last_persist);
                if before != (rt.status.clone(), rt.applied_generation) {
                    shared.changed();
                }
                // Release candidates after the routing and its status: never in their way.
                if rt.status == "converged"
                    && let Some(state) = rt.last_state.as_ref()
                {
                    let client = self.client.with_token(shared.node_auth(node));
                    prefetch(shared, &client, node, state);
                }
            }
            // Sleep until something can change: the next check, the backoff's or the
            // breaker's end, or a wake.
            let until_check = shared
                .config
                .check_interval
                .saturating_sub(last_check.map_or(Duration::ZERO, |t| t.elapsed()));
            let nap = if !breaker.is_closed() {
                breaker.retry_in().max(Duration::from_millis(10))
            } else if shared.node_runtime(node).status == "failing" {
                next_attempt
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(10))
            } else {
                until_check
                    .min(Duration::from_secs(1))
                    .max(Duration::from_millis(10))
            };
            self.wake.wait(nap);
        }
    }

    /// Records the node's status in the registry when it changed (and every 10 s).
    fn persist(&self, rt: &crate::state::NodeRuntime, persisted: &mut Option<Persisted>, last: &mut Instant) {
        let key = (
            rt.status.clone(),
            rt.applied_generation,
            rt.last_error.clone(),
            rt.breaker.clone(),
        );
        if persisted.as_ref() == Some(&key) && last.elapsed() <= Duration::from_secs(10) {
            return;
        }
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
        match self.shared.registry.set_node_status(&self.node, &update) {
            Ok(()) => {
                *persisted = Some(key);
                *last = Instant::now();
            }
            Err(e) => tracing::warn!(node = %self.node, error = %e, "could not record the node status"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_full_jitter_and_caps() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        assert_eq!(backoff(0, base, max), Duration::ZERO);
        for _ in 0..50 {
            assert!(backoff(1, base, max) <= Duration::from_millis(100));
            assert!(backoff(3, base, max) <= Duration::from_millis(400));
            assert!(backoff(30, base, max) <= max);
        }
    }
}
