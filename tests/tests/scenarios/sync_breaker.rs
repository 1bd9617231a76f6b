//! The sync service's per-node circuit breaker is a real one: after five failed calls to a
//! node it opens and the service stops calling the node for a cool-down (`--backoff-max`,
//! 1 s in test fleets); then one probe goes out (half-open); a failed probe doubles the
//! cool-down (the backoff alone would retry every second); when the node is back its
//! heartbeat ends the cool-down at once and a successful probe closes the breaker.
//!
//! The broken node is a listener on the node's own port that accepts each connection and
//! closes it at once (a node that crashes on every request), counting the connections.

use kiln_tests::fleet::{Fleet, echo_body, wait_for};
use serde_json::Value;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// `GET /sync/v1/status`: the service's view of node `edge-1`.
fn node_status(fleet: &Fleet) -> Value {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let url = format!("http://{}/sync/v1/status", fleet.sync_addr);
    let mut r = agent
        .get(&url)
        .header("authorization", &format!("Bearer {}", fleet.admin))
        .call()
        .expect("GET /sync/v1/status");
    let status: Value =
        serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default()).expect("status JSON");
    status["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["node"] == "edge-1").cloned())
        .unwrap_or(Value::Null)
}

/// A listener that accepts and drops every connection, counting them, until stopped.
struct BrokenNode {
    connections: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl BrokenNode {
    fn start(addr: &str) -> BrokenNode {
        let listener = TcpListener::bind(addr).expect("binding the dead node's port");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let connections = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (connections.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        count.fetch_add(1, Ordering::AcqRel);
                        drop(stream);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        BrokenNode { connections, stop }
    }

    fn count(&self) -> u64 {
        self.connections.load(Ordering::Acquire)
    }
}

impl Drop for BrokenNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Let the accept loop see the flag and drop the listener (frees the port).
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_open_breaker_stops_calls_to_a_broken_node_until_a_probe_succeeds() {
    let mut fleet = Fleet::start(1, &[]);
    let v1 = fleet.deploy_echo_v1();
    assert_eq!(node_status(&fleet)["breaker"], "closed");

    let addr = fleet.nodes[0].addr.clone();
    fleet.kill_node(0);
    let broken = BrokenNode::start(&addr);
    wait_for(
        Duration::from_secs(30),
        "the node's breaker to open",
        || (node_status(&fleet)["breaker"] == "open").then_some(()),
        || format!("{:#}\n{}", node_status(&fleet), fleet.sync_log_tail()),
    );
    let failures = node_status(&fleet)["failures"].as_u64().unwrap_or(0);
    assert!(failures >= 5, "opened after {failures} failures");

    // Open: the service does not call the node during the cool-down (1 s: the fleet runs
    // `kiln sync run --backoff-max 1s`).
    let at_open = broken.count();
    assert!(at_open >= 5, "{at_open} connections before the breaker opened");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        broken.count(),
        at_open,
        "a call went out while the breaker was open"
    );

    // After the cool-down a probe goes out; it fails and the breaker stays open, now for
    // 2 s: without the breaker the backoff (capped at 1 s) would have called again.
    wait_for(
        Duration::from_secs(10),
        "a probe after the cool-down",
        || (broken.count() > at_open).then_some(()),
        || fleet.sync_log_tail(),
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        node_status(&fleet)["breaker"],
        "open",
        "{:#}",
        node_status(&fleet)
    );
    let after_probe = broken.count();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        broken.count(),
        after_probe,
        "a call went out during the doubled cool-down"
    );
    assert!(
        fleet
            .sync_log_tail()
            .contains("probing a node whose circuit breaker is open"),
        "{}",
        fleet.sync_log_tail()
    );

    // The node comes back: its heartbeat ends the cool-down, the probe succeeds and the
    // breaker closes.
    drop(broken);
    fleet.start_node(0);
    wait_for(
        Duration::from_secs(30),
        "the breaker to close",
        || {
            let s = node_status(&fleet);
            (s["breaker"] == "closed" && s["status"] == "converged").then_some(())
        },
        || format!("{:#}\n{}", node_status(&fleet), fleet.sync_log_tail()),
    );
    fleet.wait_all_serving("echo", &echo_body(1.0), v1, Duration::from_secs(30));
}
