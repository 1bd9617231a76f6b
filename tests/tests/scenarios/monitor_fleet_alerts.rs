//! The sync service watches the fleet and tells a real Alertmanager: a version whose
//! traffic on two nodes drifts from its reference (`KilnDataDrift`, from the nodes'
//! profiles merged: `kiln monitor drift` against the sync service counts both nodes'
//! rows), an SLO of kiln.toml burning its error budget (`KilnErrorBudgetBurn`, from the
//! nodes' counters), and a node that stops answering (`KilnNodeFailing`, resolved once it
//! is back).

use crate::drift_serve::{Normal, csv};
use kiln_tests::alertmanager::Alertmanager;
use kiln_tests::fleet::{Fleet, Load, echo_body, wait_for};
use serde_json::Value;
use std::time::Duration;

#[test]
fn drift_slo_burn_and_a_failing_node_reach_alertmanager() {
    let am = Alertmanager::start();
    let config_dir = tempfile::tempdir().expect("a directory");
    let gitops = config_dir.path().join("kiln.toml");
    // 99 % of requests must not fail; the faulty echo fails every row whose first value
    // is negative, so half the load below burns the budget at 50x.
    std::fs::write(
        &gitops,
        "[models.echo.slo]\navailability = 0.99\nwindow = \"30d\"\n",
    )
    .expect("kiln.toml");
    let mut fleet = Fleet::start(
        2,
        &[
            "--alertmanager",
            &am.url,
            "--monitor-interval",
            "1s",
            "--alert-resend",
            "2s",
            "--config",
            gitops.to_str().unwrap_or_default(),
        ],
    );
    let v1 = fleet.register("echo", "faulty.wasm", &kiln_tests::component("echo4_faulty"));
    // The reference: positive first values (the faulty model answers them), the rest
    // standard normal; the live rows below are constants far from it.
    let reference: Vec<[f64; 4]> = Normal::new(7)
        .rows(400, [0.0; 4])
        .into_iter()
        .map(|r| [r[0].abs() + 0.5, r[1], r[2], r[3]])
        .collect();
    let file = fleet.registry.path().join("reference.csv");
    std::fs::write(&file, csv(&reference)).expect("writing the reference");
    let set = fleet.kiln(&[
        "monitor",
        "reference",
        "set",
        "echo/1",
        file.to_str().unwrap_or_default(),
    ]);
    assert!(set.contains("with the version's outputs on them"), "{set}");
    fleet.promote("echo", v1);
    fleet.wait_all_serving("echo", &echo_body(1.0), v1, Duration::from_secs(60));

    let load = Load::start(
        fleet.addrs(),
        "/v2/models/echo/infer".into(),
        vec![echo_body(1.0), echo_body(-3.0)],
        2,
    );
    let burn = wait_for(
        Duration::from_secs(60),
        "KilnErrorBudgetBurn for echo's availability",
        || {
            am.find(
                "KilnErrorBudgetBurn",
                &[("model", "echo"), ("slo", "availability"), ("long", "1h")],
            )
        },
        || format!("{:#?}\n{}", am.active(), fleet.sync_log_tail()),
    );
    assert_eq!(burn["labels"]["severity"], "page", "{burn:#}");
    let drift = wait_for(
        Duration::from_secs(60),
        "KilnDataDrift for echo 1",
        || am.find("KilnDataDrift", &[("model", "echo"), ("version", "1")]),
        || format!("{:#?}\n{}", am.active(), fleet.sync_log_tail()),
    );
    assert_eq!(drift["labels"]["severity"], "ticket");
    let summary = drift["annotations"]["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("4 of 4 input features drifted"), "{summary}");
    let report = load.stop();
    assert!(report.total() > 0, "{report:?}");

    // The fleet's drift merges both nodes' profiles: every row either node took.
    let token = fleet.registry.path().join("admin.token");
    std::fs::write(&token, &fleet.admin).expect("writing the token");
    let answer: Value = serde_json::from_str(&fleet.kiln(&[
        "monitor",
        "drift",
        "echo",
        "--url",
        &format!("http://{}", fleet.sync_addr),
        "--url-token-file",
        token.to_str().unwrap_or_default(),
        "--json",
    ]))
    .expect("drift JSON");
    assert_eq!(
        answer["nodes"]["answered"],
        serde_json::json!(["edge-1", "edge-2"]),
        "{answer:#}"
    );
    assert_eq!(answer["dataset_drift"], true, "{answer:#}");
    let rows = answer["rows"].as_u64().unwrap_or_default();
    // Every request carries one row, and each load thread spreads its requests over both
    // nodes: only the two nodes' profiles merged hold a row for every answered request
    // (failed ones included: inputs are profiled before the call; the readiness probes
    // add a few more).
    assert!(
        rows >= report.total(),
        "{rows} rows for {} requests",
        report.total()
    );
    let unauthenticated = ureq::get(format!("http://{}/monitor/v1/drift/echo", fleet.sync_addr))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .expect("an answer");
    assert_eq!(unauthenticated.status().as_u16(), 401);

    // A node that stops answering is failing; back, the alert resolves.
    fleet.kill_node(1);
    wait_for(
        Duration::from_secs(60),
        "KilnNodeFailing for edge-2",
        || am.find("KilnNodeFailing", &[("node", "edge-2")]),
        || format!("{:#?}\n{}", am.active(), fleet.sync_log_tail()),
    );
    fleet.start_node(1);
    wait_for(
        Duration::from_secs(60),
        "KilnNodeFailing for edge-2 to resolve",
        || {
            am.find("KilnNodeFailing", &[("node", "edge-2")])
                .is_none()
                .then_some(())
        },
        || format!("{:#?}\n{}", am.active(), fleet.sync_log_tail()),
    );
    let status: Value = serde_json::from_str(
        &ureq::get(format!("http://{}/sync/v1/status", fleet.sync_addr))
            .header("authorization", format!("Bearer {}", fleet.admin))
            .call()
            .expect("the sync status")
            .body_mut()
            .read_to_string()
            .unwrap_or_default(),
    )
    .expect("status JSON");
    assert!(
        status["alerts"]["sent"].as_u64().unwrap_or_default() > 0,
        "{status:#}"
    );
    assert_eq!(status["alerts"]["failed_posts"], 0, "{status:#}");

    // The same counters through the CLI, from the running service (not the registry).
    let token = fleet.registry.path().join("viewer-admin.token");
    std::fs::write(&token, &fleet.admin).expect("writing the token");
    let shown = fleet.kiln(&[
        "sync",
        "status",
        "--url",
        &format!("http://{}", fleet.sync_addr),
        "--url-token-file",
        token.to_str().unwrap_or_default(),
    ]);
    let sent = status["alerts"]["sent"].as_u64().unwrap_or_default();
    let line = shown
        .lines()
        .find(|l| l.starts_with("alerts: "))
        .unwrap_or_else(|| panic!("no alerts line:\n{shown}"));
    let shown_sent: u64 = line
        .split(", ")
        .find_map(|p| p.strip_suffix(" sent"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no sent count in `{line}`"));
    // Alerts are re-sent while active, so the count may only have grown since.
    assert!(shown_sent >= sent && line.contains(" 0 failed posts"), "{shown}");
    assert!(shown.contains(&format!("  {}/", am.url)), "{shown}");
    for node in ["edge-1", "edge-2"] {
        assert!(shown.lines().any(|l| l.starts_with(node)), "{shown}");
    }
    // Without a token the service refuses, and the CLI says what it answered.
    let refused =
        fleet
            .registry
            .run_raw(&["sync", "status", "--url", &format!("http://{}", fleet.sync_addr)]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("answered HTTP 401"),
        "{stderr}"
    );
}

/// A single `kiln serve --alertmanager`: its own SLO burning (`--slo-file`) and a version
/// whose component is damaged on disk (`KilnVersionLoadFailed`, resolved once a good
/// version serves again).
#[test]
fn kiln_serve_alone_alerts_its_slo_burn_and_a_version_that_fails_to_load() {
    let am = Alertmanager::start();
    let home = kiln_tests::kiln_process::KilnHome::new();
    let v1 = home.register_example("echo4_faulty", "echo");
    home.run(&["models", "promote", "echo", &v1.to_string(), "Production"]);
    let gitops = home.path().join("kiln.toml");
    std::fs::write(&gitops, "[models.echo.slo]\navailability = 0.99\n").expect("kiln.toml");
    let server = home.serve(
        "serve",
        &[
            "--cache",
            "off",
            "--alertmanager",
            &am.url,
            "--slo-file",
            gitops.to_str().unwrap_or_default(),
            "--monitor-interval",
            "1s",
        ],
    );
    let row = |first: f32| {
        format!(
            r#"{{"inputs": [{{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [{first}, 2, 3, 4]}}]}}"#
        )
    };
    let burn = wait_for(
        Duration::from_secs(60),
        "KilnErrorBudgetBurn from kiln serve",
        || {
            for first in [1.0, -1.0] {
                server.post("/v2/models/echo/infer", &row(first));
            }
            am.find(
                "KilnErrorBudgetBurn",
                &[("model", "echo"), ("slo", "availability"), ("long", "1h")],
            )
        },
        || format!("{:#?}\n{}", am.active(), server.log()),
    );
    assert_eq!(burn["labels"]["severity"], "page", "{burn:#}");

    // Version 2's blob is damaged after registration: promoting it fails to load it.
    let v2 = home.register_example("echo4", "echo");
    let shown: Value =
        serde_json::from_str(&home.run(&["models", "show", &format!("echo/{v2}"), "--json"])).expect("JSON");
    let digest = shown["digest"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("sha256:")
        .to_string();
    std::fs::write(home.path().join("blobs").join("sha256").join(&digest), b"damaged")
        .expect("damaging the blob");
    home.run(&["models", "promote", "echo", &v2.to_string(), "Production"]);
    let failed = wait_for(
        Duration::from_secs(60),
        "KilnVersionLoadFailed for echo 2",
        || {
            am.find(
                "KilnVersionLoadFailed",
                &[("model", "echo"), ("version", &v2.to_string())],
            )
        },
        || format!("{:#?}\n{}", am.active(), server.log()),
    );
    let summary = failed["annotations"]["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("failed to load"), "{summary}");
    // Back to version 1: the next reload loads everything, and the alert resolves.
    home.run(&["models", "promote", "echo", &v1.to_string(), "Production"]);
    wait_for(
        Duration::from_secs(60),
        "KilnVersionLoadFailed to resolve",
        || {
            am.find("KilnVersionLoadFailed", &[("model", "echo")])
                .is_none()
                .then_some(())
        },
        || format!("{:#?}\n{}", am.active(), server.log()),
    );
}
