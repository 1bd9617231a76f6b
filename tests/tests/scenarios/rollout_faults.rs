//! Faults during rollouts, with real processes: a node killed mid-rollout and restarted
//! converges; `kiln sync` killed mid-rollout and restarted continues where it was; a
//! blue-green switch under steady load fails no request.

use kiln_tests::fleet::{Fleet, Load, echo_body, echo_component, wait_for};
use serde_json::Value;
use std::time::Duration;

fn step(fleet: &Fleet) -> u64 {
    fleet
        .rollout("echo")
        .map_or(0, |r| r["step"].as_u64().unwrap_or(0))
}

#[test]
fn a_node_and_the_sync_service_killed_mid_rollout_come_back_and_the_rollout_completes() {
    let mut fleet = Fleet::start(3, &[]);
    let v1 = fleet.deploy_echo_v1();
    let v2 = fleet.register("echo", "echo-v2.wasm", &echo_component("v2"));
    fleet.kiln(&[
        "rollout",
        "policy",
        "echo",
        "--steps",
        "20,40,60,80,100",
        "--interval",
        "1500ms",
        "--min-requests",
        "5",
    ]);
    let load = Load::start(
        fleet.addrs(),
        "/v2/models/echo/infer".into(),
        vec![echo_body(1.0)],
        3,
    );
    fleet.promote("echo", v2);
    wait_for(
        Duration::from_secs(30),
        "the rollout's second step",
        || (step(&fleet) >= 1).then_some(()),
        || format!("{:#?}", fleet.rollout("echo")),
    );

    // A node dies: the service marks it failing (with the error and since when).
    fleet.kill_node(2);
    wait_for(
        Duration::from_secs(20),
        "edge-3 to be reported failing",
        || {
            let status = fleet.status();
            status["nodes"]
                .as_array()?
                .iter()
                .find(|n| {
                    n["name"] == "edge-3"
                        && n["status"] == "failing"
                        && !n["last_error"].is_null()
                        && !n["failing_since"].is_null()
                })
                .map(|_| ())
        },
        || format!("{:#}", fleet.status()),
    );

    // The service dies too, mid-rollout; it comes back and continues from the same step.
    let before = fleet.rollout("echo").expect("a rollout");
    fleet.kill_sync();
    std::thread::sleep(Duration::from_millis(800));
    let frozen = fleet.rollout("echo").expect("a rollout");
    assert_eq!(frozen["id"], before["id"]);
    assert!(frozen["step"].as_u64() >= before["step"].as_u64());
    fleet.start_sync();
    // The node returns and converges on whatever the rollout says now.
    fleet.start_node(2);
    let done = fleet.wait_rollout("echo", "succeeded", Duration::from_secs(90));
    assert_eq!(done["id"], before["id"], "the same rollout continued");
    let report = load.stop();
    fleet.wait_all_serving("echo", &echo_body(1.0), v2, Duration::from_secs(20));
    let status = fleet.status();
    for n in status["nodes"].as_array().expect("nodes") {
        assert_eq!(n["status"], "converged", "{status:#}");
    }
    // Only the killed node's in-flight or refused connections may have failed.
    assert!(
        report.versions.contains_key(&v1.to_string()) && report.versions.contains_key(&v2.to_string()),
        "{report:?}"
    );
    let audit = fleet.kiln(&["audit", "log", "--model", "echo"]);
    assert_eq!(
        audit.matches("rollout.start").count(),
        1,
        "one rollout, continued: {audit}"
    );
}

#[test]
fn a_blue_green_switch_under_steady_load_fails_no_request() {
    let fleet = Fleet::start(3, &[]);
    let v1 = fleet.deploy_echo_v1();
    let v2 = fleet.register("echo", "echo-v2.wasm", &echo_component("v2"));
    fleet.kiln(&[
        "rollout",
        "policy",
        "echo",
        "--strategy",
        "blue-green",
        "--interval",
        "1s",
        "--min-requests",
        "5",
    ]);
    let load = Load::start(
        fleet.addrs(),
        "/v2/models/echo/infer".into(),
        vec![echo_body(1.0), echo_body(5.0)],
        4,
    );
    std::thread::sleep(Duration::from_millis(500));
    fleet.promote("echo", v2);
    let done = fleet.wait_rollout("echo", "succeeded", Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(300));
    let report = load.stop();
    assert_eq!(report.failed(), 0, "{report:?}");
    assert!(report.total() > 200, "{report:?}");
    assert_eq!(done["plan"]["strategy"], Value::from("blue-green"));
    fleet.wait_all_serving("echo", &echo_body(1.0), v2, Duration::from_secs(10));
    // The old version stays warm: an instant rollback switches back with no compile.
    let out = fleet.kiln(&["rollout", "rollback", "echo"]);
    assert!(out.contains(&format!("version {v1} serves again")), "{out}");
    fleet.wait_all_serving("echo", &echo_body(1.0), v1, Duration::from_secs(10));
}

#[test]
fn a_corrupted_upload_is_refused_and_the_node_keeps_serving_its_version() {
    let fleet = Fleet::start(1, &[]);
    let v1 = fleet.deploy_echo_v1();
    let mut bytes = echo_component("v2");
    let digest = kiln_types::digest(&bytes);
    // One flipped byte in transit: the digest no longer matches.
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .put(fleet.node(0).url(&format!("/admin/v1/components/{digest}")))
        .header("authorization", &format!("Bearer {}", fleet.node_admin_token(0)))
        .send(&bytes[..])
        .expect("PUT");
    assert_eq!(r.status().as_u16(), 422);
    let body: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default()).unwrap();
    assert!(
        body["error"].as_str().unwrap_or_default().contains(&digest),
        "{body}"
    );
    // Nothing stored; version 1 keeps serving.
    let mut r = agent
        .head(fleet.node(0).url(&format!("/admin/v1/components/{digest}")))
        .header("authorization", &format!("Bearer {}", fleet.node_admin_token(0)))
        .call()
        .expect("HEAD");
    assert_eq!(r.status().as_u16(), 404);
    let _ = r.body_mut().read_to_string();
    assert_eq!(
        fleet.served_version(0, "echo", &echo_body(1.0)),
        Some(v1.to_string())
    );
}
