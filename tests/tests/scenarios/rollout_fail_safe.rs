//! Rollouts fail safe, with a real `kiln sync` and real `kiln serve --join` nodes: a canary
//! that fails every request is rolled back below `--min-requests`; a rollout paused longer
//! than `--max-pause` is rolled back (the canary's weight goes to 0); a node that dies
//! mid-rollout holds the rollout and then rolls it back instead of dropping out of the
//! analysis; a node refuses a routing generation of `u64::MAX`, and one locked out by a
//! generation above the sync service's is re-adopted by `kiln sync reset-node` (audited).

use kiln_tests::fleet::{Fleet, Load, echo_body, echo_component, wait_for};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

fn phase(fleet: &Fleet, model: &str) -> Option<(String, u64, String)> {
    let r = fleet.rollout(model)?;
    Some((
        r["state"].as_str()?.to_string(),
        r["step"].as_u64()?,
        r["phase"].as_str()?.to_string(),
    ))
}

/// Waits until the rollout of `echo` analyses its first step.
fn wait_analysing(fleet: &Fleet) {
    wait_for(
        Duration::from_secs(60),
        "the rollout's first step to be analysed",
        || {
            phase(fleet, "echo")
                .filter(|(state, step, phase)| state == "progressing" && *step == 0 && phase == "analysing")
                .map(|_| ())
        },
        || format!("{:#?}\n{}", fleet.rollout("echo"), fleet.sync_log_tail()),
    );
}

#[test]
fn a_canary_failing_every_request_is_rolled_back_below_min_requests() {
    let fleet = Fleet::start(2, &[]);
    let v1 = fleet.deploy_echo_v1();
    // Fails every row whose first value is negative; its golden request (first value 1)
    // passes the smoke test.
    let v2 = fleet.register("echo", "faulty.wasm", &kiln_tests::component("echo4_faulty"));
    // A quiet model: 1000 requests would take far longer than the test waits.
    fleet.kiln(&[
        "rollout",
        "policy",
        "echo",
        "--steps",
        "50,100",
        "--interval",
        "60s",
        "--min-requests",
        "1000",
    ]);
    // Five requests a second, alternating between the nodes.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, failed, addrs) = (stop.clone(), failed.clone(), fleet.addrs());
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            for i in 0usize.. {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let url = format!("http://{}/v2/models/echo/infer", addrs[i % addrs.len()]);
                let ok = agent
                    .post(&url)
                    .send(echo_body(-3.0).as_str())
                    .is_ok_and(|r| r.status().as_u16() == 200);
                if !ok {
                    failed.fetch_add(1, Ordering::AcqRel);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    fleet.promote("echo", v2);
    // Rolled back by the default --max-consecutive-errors (5), long before the interval ends
    // (the code before this rule paused the rollout after 60 s and kept the canary's traffic).
    let done = fleet.wait_rollout("echo", "rolled_back", Duration::from_secs(40));
    stop.store(true, Ordering::Release);
    let _ = load.join();
    let message = done["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("none successful") && message.contains("max consecutive errors 5"),
        "{done:#}"
    );
    assert!(failed.load(Ordering::Acquire) >= 5, "{done:#}");
    // Judged on far fewer canary requests than --min-requests: "(canary N req, ...".
    let canary_requests: u64 = message
        .split("(canary ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no canary figures in {message}"));
    assert!(canary_requests < 1000, "{message}");
    fleet.wait_all_serving("echo", &echo_body(-3.0), v1, Duration::from_secs(20));
}

#[test]
fn a_rollout_paused_beyond_its_max_pause_is_rolled_back_and_the_canary_gets_no_traffic() {
    let fleet = Fleet::start(2, &[]);
    let v1 = fleet.deploy_echo_v1();
    let v2 = fleet.register("echo", "echo-v2.wasm", &echo_component("v2"));
    fleet.kiln(&[
        "rollout",
        "policy",
        "echo",
        "--steps",
        "50,100",
        "--interval",
        "60s",
        "--max-pause",
        "3s",
    ]);
    fleet.promote("echo", v2);
    wait_analysing(&fleet);
    fleet.kiln(&["rollout", "pause", "echo"]);
    // The status says when the pause ends.
    let status = fleet.kiln(&["rollout", "status", "echo"]);
    assert!(status.contains("rolled back at"), "{status}");
    let paused = fleet.rollout("echo").expect("a rollout");
    assert_eq!(paused["state"], "paused");
    assert!(paused["paused_at"].is_string(), "{paused:#}");
    // Paused at 50 %: the canary keeps its share until the max pause is over.
    let seen: Vec<String> = (0..40)
        .filter_map(|i| fleet.served_version(i % 2, "echo", &echo_body(1.0)))
        .collect();
    assert!(seen.contains(&v2.to_string()), "{seen:?}");

    let done = fleet.wait_rollout("echo", "rolled_back", Duration::from_secs(30));
    let message = done["message"].as_str().unwrap_or_default();
    assert!(message.contains("max pause (3s)"), "{done:#}");
    fleet.wait_all_serving("echo", &echo_body(1.0), v1, Duration::from_secs(20));
    let audit = fleet.kiln(&["audit", "log", "--model", "echo"]);
    assert!(
        audit.contains("rollout.pause") && audit.contains("rollout.rollback"),
        "{audit}"
    );
}

#[test]
fn a_node_that_dies_mid_rollout_holds_it_and_then_counts_against_the_canary() {
    let mut fleet = Fleet::start(2, &[]);
    let v1 = fleet.deploy_echo_v1();
    let v2 = fleet.register("echo", "echo-v2.wasm", &echo_component("v2"));
    fleet.kiln(&[
        "rollout",
        "policy",
        "echo",
        "--steps",
        "50,100",
        "--interval",
        "3s",
        "--min-requests",
        "5",
        "--max-node-downtime",
        "5s",
    ]);
    // Traffic on the node that stays up: the canary is healthy there, and the code before
    // this rule let the dead node drop out and took the rollout to 100 %.
    let load = Load::start(
        vec![fleet.nodes[0].addr.clone()],
        "/v2/models/echo/infer".into(),
        vec![echo_body(1.0)],
        2,
    );
    fleet.promote("echo", v2);
    wait_analysing(&fleet);
    fleet.kill_node(1);

    // The rollout holds while the node is down, and says so.
    let held = wait_for(
        Duration::from_secs(20),
        "the rollout to hold for the dead node",
        || {
            fleet.rollout("echo").filter(|r| {
                r["state"] == "progressing" && r["message"].as_str().unwrap_or_default().contains("holding")
            })
        },
        || format!("{:#?}\n{}", fleet.rollout("echo"), fleet.sync_log_tail()),
    );
    assert!(
        held["message"].as_str().unwrap_or_default().contains("edge-2"),
        "{held:#}"
    );

    let done = fleet.wait_rollout("echo", "rolled_back", Duration::from_secs(30));
    let _ = load.stop();
    let message = done["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("node edge-2 failed during the rollout") && message.contains("max node downtime"),
        "{done:#}"
    );
    fleet.wait_all_serving("echo", &echo_body(1.0), v1, Duration::from_secs(20));
}

#[test]
fn a_node_refuses_generation_u64_max_and_a_locked_out_node_is_reset_and_readopted() {
    let fleet = Fleet::start(1, &[]);
    let v1 = fleet.deploy_echo_v1();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let token = format!("Bearer {}", fleet.node_admin_token(0));
    let state = || -> Value {
        let mut r = agent
            .get(fleet.node(0).url("/admin/v1/state"))
            .header("authorization", &token)
            .call()
            .expect("GET state");
        serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default()).expect("state JSON")
    };
    let push = |generation: u64| -> (u16, String) {
        let mut table = state()["routing"].clone();
        table["generation"] = json!(generation);
        let mut r = agent
            .put(fleet.node(0).url("/admin/v1/routing"))
            .header("authorization", &token)
            .send_json(&table)
            .expect("PUT routing");
        (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        )
    };
    let served = state()["routing"]["generation"].as_u64().expect("a generation");

    // u64::MAX would lock the node out of every later push from the sync service.
    let (status, body) = push(u64::MAX);
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("above the highest"), "{body}");
    assert_eq!(state()["routing"]["generation"].as_u64(), Some(served));

    // The highest accepted generation still locks it out: the sync service says so.
    let top = (1u64 << 53) - 1;
    let (status, body) = push(top);
    assert_eq!(status, 200, "{body}");
    let node_status = || {
        fleet.status()["nodes"]
            .as_array()
            .and_then(|n| n.first().cloned())
            .unwrap_or_default()
    };
    let locked = wait_for(
        Duration::from_secs(20),
        "the sync service to report the node locked out",
        || {
            Some(node_status()).filter(|n| {
                n["status"] == "failing"
                    && n["last_error"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("kiln sync reset-node edge-1")
            })
        },
        || format!("{:#}\n{}", fleet.status(), fleet.sync_log_tail()),
    );
    assert!(
        locked["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains(&top.to_string())
    );

    // An admin resets it: the service's next push replaces the table, audited.
    let out = fleet.kiln(&["sync", "reset-node", "edge-1"]);
    assert!(out.contains("reset requested"), "{out}");
    wait_for(
        Duration::from_secs(30),
        "the node to be re-adopted",
        || {
            let status = fleet.status();
            let n = status["nodes"].as_array()?.first()?.clone();
            (n["status"] == "converged" && n["applied_generation"] == status["generation"]).then_some(())
        },
        || format!("{:#}\n{}", fleet.status(), fleet.sync_log_tail()),
    );
    assert!(state()["routing"]["generation"].as_u64() < Some(top));
    assert_eq!(
        fleet.served_version(0, "echo", &echo_body(1.0)),
        Some(v1.to_string())
    );
    let audit = fleet.kiln(&["audit", "log", "--model", "_fleet"]);
    assert!(
        audit.contains("node.reset") && audit.contains("node.reset_done"),
        "{audit}"
    );
    // Later changes reach it again: a new version is deployed to it.
    let v2 = fleet.register("echo", "echo-v2.wasm", &echo_component("v2"));
    fleet.kiln(&["rollout", "policy", "echo", "--strategy", "direct"]);
    fleet.promote("echo", v2);
    fleet.wait_all_serving("echo", &echo_body(1.0), v2, Duration::from_secs(60));
}
