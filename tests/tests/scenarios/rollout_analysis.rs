//! Rollout analysis on a real fleet: a shadow step compares the new version's answers
//! with the stable one's on a copy of the traffic and rolls back when they disagree (the
//! clients only ever get the stable answers); a step with too little traffic to judge
//! pauses the rollout and says so.

use kiln_tests::fleet::{Fleet, Load, echo_body};
use std::time::Duration;

#[test]
fn a_shadow_step_that_disagrees_rolls_back_and_clients_never_see_the_shadow() {
    let fleet = Fleet::start(2, &[]);
    let v1 = fleet.deploy_echo_v1();
    let v2 = fleet.register("echo", "double.wasm", &kiln_tests::component("echo4_double"));
    fleet.kiln(&[
        "rollout",
        "policy",
        "echo",
        "--steps",
        "50,100",
        "--interval",
        "2s",
        "--min-requests",
        "10",
        "--max-disagreement",
        "0.05",
    ]);
    let load = Load::start(
        fleet.addrs(),
        "/v2/models/echo/infer".into(),
        vec![echo_body(1.0)],
        3,
    );
    // The golden request of v2 was recorded from v2 itself, so the smoke test passes; the
    // shadow comparison with v1 is what catches it.
    fleet.promote("echo", v2);
    let done = fleet.wait_rollout("echo", "rolled_back", Duration::from_secs(60));
    let report = load.stop();
    let message = done["message"].as_str().unwrap_or_default();
    assert!(message.contains("shadow disagreement"), "{done:#}");
    assert_eq!(done["step"], 0, "rolled back at the shadow step: {done:#}");
    assert_eq!(report.failed(), 0, "{report:?}");
    assert_eq!(
        report.versions.keys().cloned().collect::<Vec<_>>(),
        vec![v1.to_string()],
        "clients only ever got the stable version's answers: {report:?}"
    );
}

#[test]
fn a_step_with_too_little_traffic_pauses_and_says_so_and_resume_restarts_it() {
    let fleet = Fleet::start(1, &[]);
    fleet.deploy_echo_v1();
    let v2 = fleet.register("echo", "echo-v2.wasm", &kiln_tests::fleet::echo_component("v2"));
    fleet.kiln(&[
        "rollout",
        "policy",
        "echo",
        "--steps",
        "50,100",
        "--interval",
        "1s",
        "--min-requests",
        "50",
    ]);
    fleet.promote("echo", v2);
    let paused = fleet.wait_rollout("echo", "paused", Duration::from_secs(30));
    let message = paused["message"].as_str().unwrap_or_default();
    assert!(message.contains("too little traffic"), "{paused:#}");
    assert!(message.contains("need 50"), "{paused:#}");
    // Paused holds the weights: traffic now does not move it.
    let load = Load::start(
        fleet.addrs(),
        "/v2/models/echo/infer".into(),
        vec![echo_body(1.0)],
        3,
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(fleet.rollout("echo").expect("rollout")["state"], "paused");
    fleet.kiln(&["rollout", "resume", "echo"]);
    fleet.wait_rollout("echo", "succeeded", Duration::from_secs(60));
    let report = load.stop();
    assert_eq!(report.failed(), 0, "{report:?}");
    let audit = fleet.kiln(&["audit", "log", "--model", "echo"]);
    assert!(
        audit.contains("rollout.pause") && audit.contains("rollout.resume"),
        "{audit}"
    );
}
