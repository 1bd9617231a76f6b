//! A canary rollout across three `kiln serve --join` nodes driven by a real `kiln sync`:
//! promoting a version in the registry starts it; it runs to 100 % under steady load with
//! no failed request; a version that fails on part of its inputs is rolled back by itself
//! within two analysis intervals while the stable share serves without failures, the
//! registry is restored, and the alert webhook is called.

use kiln_tests::fleet::{Fleet, Load, echo_body, echo_component};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::time::Duration;

#[test]
fn a_promoted_version_is_canaried_to_100_percent_with_no_failed_request() {
    let fleet = Fleet::start(3, &[]);
    let v1 = fleet.deploy_echo_v1();
    let v2 = fleet.register("echo", "echo-v2.wasm", &echo_component("v2"));
    fleet.kiln(&[
        "rollout",
        "policy",
        "echo",
        "--steps",
        "25,50,100",
        "--interval",
        "1s",
        "--min-requests",
        "10",
    ]);
    let load = Load::start(
        fleet.addrs(),
        "/v2/models/echo/infer".into(),
        vec![echo_body(1.0), echo_body(7.0)],
        4,
    );
    std::thread::sleep(Duration::from_millis(500));
    fleet.promote("echo", v2);
    let done = fleet.wait_rollout("echo", "succeeded", Duration::from_secs(90));
    let report = load.stop();
    assert_eq!(
        report.failed(),
        0,
        "failed requests during the rollout: {report:?}"
    );
    assert!(
        report.versions.get(&v1.to_string()).copied().unwrap_or(0) > 0,
        "{report:?}"
    );
    assert!(
        report.versions.get(&v2.to_string()).copied().unwrap_or(0) > 0,
        "{report:?}"
    );
    assert_eq!(done["from_version"], v1);
    assert_eq!(done["to_version"], v2);
    fleet.wait_all_serving("echo", &echo_body(1.0), v2, Duration::from_secs(10));
    // The registry: v2 Production, v1 archived; every step audited.
    let show: Value = serde_json::from_str(&fleet.kiln(&["models", "list", "echo", "--json"])).unwrap();
    let stage = |v: u64| {
        show.as_array()
            .and_then(|a| a.iter().find(|x| x["version"] == v))
            .map(|x| x["stage"].clone())
    };
    assert_eq!(stage(v2), Some(Value::from("Production")));
    assert_eq!(stage(v1), Some(Value::from("Archived")));
    let audit = fleet.kiln(&["audit", "log", "--model", "echo"]);
    assert_eq!(audit.matches("rollout.step").count(), 2, "{audit}");
    assert!(
        audit.contains("rollout.start") && audit.contains("rollout.succeed"),
        "{audit}"
    );
    // v1 stays loaded (weight 0) on every node for an instant rollback: it resolves (an
    // unloaded version would be a 404), but it is restricted now (Archived, no traffic),
    // and a managed node takes no viewer tokens, so forcing it is refused.
    for i in 0..3 {
        let (reply, _) = fleet.node(i).post_with(
            "/v2/models/echo/infer",
            &echo_body(1.0),
            &[("x-kiln-version", &v1.to_string())],
        );
        assert_eq!(reply.status, 403, "{}", reply.body);
        assert!(reply.body.contains("restricted_version"), "{}", reply.body);
    }
}

/// A one-shot HTTP listener that records the first request body it gets.
fn webhook() -> (String, std::sync::mpsc::Receiver<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let mut s = stream;
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n");
            let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
        }
    });
    (format!("http://{addr}/alerts"), rx)
}

#[test]
fn a_canary_that_fails_on_part_of_its_inputs_is_rolled_back_automatically() {
    let (hook, alerts) = webhook();
    let fleet = Fleet::start(3, &["--alert-webhook", &hook]);
    let v1 = fleet.deploy_echo_v1();
    // The bad release: same signature and answers, but fails on rows whose first value is
    // negative (examples/models/echo4_faulty.onnx); its golden request (first value 1) passes.
    let v2 = fleet.register("echo", "faulty.wasm", &kiln_tests::component("echo4_faulty"));
    let interval_ms = 2000u64;
    fleet.kiln(&[
        "rollout",
        "policy",
        "echo",
        "--steps",
        "50,100",
        "--interval",
        &format!("{interval_ms}ms"),
        "--min-requests",
        "10",
        "--max-error-rate",
        "0.05",
    ]);
    fleet.kiln(&["models", "alias", "echo", "champion", &v1.to_string()]);
    let load = Load::start(
        fleet.addrs(),
        "/v2/models/echo/infer".into(),
        vec![echo_body(1.0), echo_body(-3.0)],
        4,
    );
    std::thread::sleep(Duration::from_millis(500));
    fleet.promote("echo", v2);
    fleet.kiln(&["models", "alias", "echo", "champion", &v2.to_string()]);
    let done = fleet.wait_rollout("echo", "rolled_back", Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let report = load.stop();
    let message = done["message"].as_str().unwrap_or_default();
    assert!(message.contains("error rate"), "{done:#}");
    // Rolled back within two analysis intervals of the canary taking traffic.
    let parse = |v: &Value| {
        time::OffsetDateTime::parse(
            v.as_str().unwrap_or_default(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap_or_else(|e| panic!("{e}: {v}"))
    };
    let took = parse(&done["updated_at"]) - parse(&done["step_started_at"]);
    assert!(
        took.whole_milliseconds() <= 2 * interval_ms as i128,
        "rollback took {took} after the canary got traffic"
    );
    // Every failure came from the canary; the stable share never failed.
    assert!(
        report.failed() > 0,
        "the bad canary should have failed some requests: {report:?}"
    );
    assert!(
        report
            .failures
            .iter()
            .all(|(status, version, _)| *status == 500 && version == &v2.to_string()),
        "{:?}",
        report.failures
    );
    // The registry is back: v1 Production with the champion alias, v2 out of Production.
    assert_eq!(
        serde_json::from_str::<Value>(&fleet.kiln(&["models", "show", "echo@champion", "--json"])).unwrap()["version"],
        v1
    );
    let v2_row: Value =
        serde_json::from_str(&fleet.kiln(&["models", "show", &format!("echo/{v2}"), "--json"])).unwrap();
    assert_eq!(v2_row["stage"], "None");
    fleet.wait_all_serving("echo", &echo_body(-3.0), v1, Duration::from_secs(10));
    // The webhook was told.
    let alert: Value =
        serde_json::from_str(&alerts.recv_timeout(Duration::from_secs(10)).expect("an alert")).unwrap();
    assert_eq!(alert["event"], "rollout.rolled_back");
    assert_eq!(alert["to_version"], v2);
    let audit = fleet.kiln(&["audit", "log", "--model", "echo"]);
    assert!(audit.contains("rollout.rollback"), "{audit}");
}
