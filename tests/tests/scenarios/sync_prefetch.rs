//! Release candidates reach the nodes before they are promoted: a version moved to Staging
//! is uploaded to every node that serves its model and compiled there in the background,
//! so its promotion only switches routing.

use kiln_tests::fleet::{Fleet, echo_body, echo_component, wait_for};
use serde_json::Value;
use std::time::Duration;

fn node_state(fleet: &Fleet, i: usize) -> Value {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut r = agent
        .get(fleet.node(i).url("/admin/v1/state"))
        .header("authorization", &format!("Bearer {}", fleet.node_admin_token(i)))
        .call()
        .expect("GET state");
    serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default()).expect("state JSON")
}

#[test]
fn a_staging_version_is_uploaded_and_compiled_on_every_node_before_its_promotion() {
    let fleet = Fleet::start(2, &[]);
    fleet.deploy_echo_v1();
    let v2 = fleet.register("echo", "echo-v2.wasm", &echo_component("v2"));
    let digest: Value =
        serde_json::from_str(&fleet.kiln(&["models", "show", &format!("echo/{v2}"), "--json"])).unwrap();
    let digest = digest["digest"].as_str().expect("digest").to_string();
    // Registered only: not a candidate, not uploaded.
    std::thread::sleep(Duration::from_millis(800));
    for i in 0..2 {
        assert!(
            !node_state(&fleet, i)["digests"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d == digest.as_str())
        );
    }
    fleet.kiln(&["models", "promote", "echo", &v2.to_string(), "Staging"]);
    for i in 0..2 {
        wait_for(
            Duration::from_secs(20),
            "the Staging version to be on the node",
            || {
                node_state(&fleet, i)["digests"]
                    .as_array()?
                    .iter()
                    .any(|d| d == digest.as_str())
                    .then_some(())
            },
            || format!("{:#}", node_state(&fleet, i)),
        );
        wait_for(
            Duration::from_secs(60),
            "the node to compile it ahead of use",
            || {
                fleet
                    .node(i)
                    .log()
                    .contains("compiled ahead of use")
                    .then_some(())
            },
            || fleet.node(i).log(),
        );
        // Held, not served: the routing still names only version 1.
        let routing = &node_state(&fleet, i)["routing"]["models"]["echo"]["versions"];
        assert_eq!(routing.as_array().map(Vec::len), Some(1), "{routing}");
    }
    fleet.kiln(&["rollout", "policy", "echo", "--strategy", "direct"]);
    fleet.promote("echo", v2);
    fleet.wait_all_serving("echo", &echo_body(1.0), v2, Duration::from_secs(20));
}
