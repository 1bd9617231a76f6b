//! Rollout analysis on a real fleet: a shadow step compares the new version's answers
//! with the stable one's on a copy of the traffic and rolls back when they disagree (the
//! clients only ever get the stable answers); a step with too little traffic to judge
//! pauses the rollout and says so; a canary step with `--max-prediction-drift` compares
//! the new version's outputs with the stable one's over the step and rolls back when they
//! moved.

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

/// Rolls echo v1 → a version registered from `component` under a 50,100 canary with
/// `--max-prediction-drift 0.1`, with traffic spread over 12 values (so each version's
/// outputs have a distribution); returns the fleet and the rollout once it is `outcome`.
fn prediction_drift_rollout(file: &str, component: &[u8], outcome: &str) -> (Fleet, serde_json::Value) {
    let fleet = Fleet::start(2, &[]);
    fleet.deploy_echo_v1();
    let v2 = fleet.register("echo", file, component);
    fleet.kiln(&[
        "rollout",
        "policy",
        "echo",
        "--steps",
        "50,100",
        "--interval",
        "2s",
        "--min-requests",
        "20",
        "--max-prediction-drift",
        "0.1",
    ]);
    let bodies = (0..12).map(|i| echo_body(i as f32 * 0.5)).collect();
    let load = Load::start(fleet.addrs(), "/v2/models/echo/infer".into(), bodies, 3);
    fleet.promote("echo", v2);
    let done = fleet.wait_rollout("echo", outcome, Duration::from_secs(60));
    let report = load.stop();
    assert_eq!(report.failed(), 0, "{report:?}");
    (fleet, done)
}

#[test]
fn a_canary_whose_answers_drift_from_stable_is_rolled_back_by_prediction_drift() {
    // v2 doubles what v1 echoes: no error, no latency change, so only the comparison of
    // its outputs with v1's over the same traffic (the nodes' profiles, merged by the sync
    // service) can catch it.
    let (_fleet, done) = prediction_drift_rollout(
        "double.wasm",
        &kiln_tests::component("echo4_double"),
        "rolled_back",
    );
    let message = done["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("canary prediction drift: y[") && message.contains("Wasserstein distance (normed)"),
        "{done:#}"
    );
    assert!(message.contains("(max 0.1)"), "{done:#}");
    assert_eq!(done["step"], 0, "rolled back at the 50% step: {done:#}");
}

#[test]
fn a_canary_that_answers_like_stable_passes_prediction_drift_and_says_its_score() {
    let (fleet, _) = prediction_drift_rollout(
        "echo-v2.wasm",
        &kiln_tests::fleet::echo_component("v2"),
        "succeeded",
    );
    // The 50% step's healthy message carries the score it passed with.
    let audit: serde_json::Value =
        serde_json::from_str(&fleet.kiln(&["audit", "log", "--model", "echo", "--json"]))
            .expect("audit JSON");
    let step = audit
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["action"] == "rollout.step")
        .unwrap_or_else(|| panic!("no rollout.step entry: {audit:#}"));
    let message = step["after"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("step 1 (50%) healthy") && message.contains("; prediction drift: y["),
        "{step:#}"
    );
}
