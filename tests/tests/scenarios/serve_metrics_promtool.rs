//! `GET /metrics` is valid Prometheus text format (checked by Prometheus' own `promtool`)
//! and counts requests, latencies and errors per model, version and endpoint.

use kiln_tests::kiln_process::KilnHome;
use std::io::Write;
use std::process::{Command, Stdio};

fn metric_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_pass_promtool_and_count_requests_errors_and_latency_per_model() {
    let home = KilnHome::new();
    let v = home.register_example("iris_logreg", "iris");
    home.run(&["models", "promote", "iris", &v.to_string(), "Production"]);
    let server = home.serve("serve", &[]);
    let features = r#"{"features": [6.3, 3.4, 5.6, 2.4]}"#;
    for _ in 0..3 {
        assert_eq!(server.post("/v1/models/iris/predict", features).status, 200);
    }
    let oip =
        r#"{"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}"#;
    assert_eq!(server.post("/v2/models/iris/infer", oip).status, 200);
    let wrong = server.post("/v1/models/iris/predict", r#"{"features": [1, 2]}"#);
    assert_eq!(wrong.status, 422, "{}", wrong.body);
    assert_eq!(server.post("/v1/models/nope/predict", features).status, 404);

    let text = server.get("/metrics").body;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("writing to promtool");
    let out = promtool.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let ok_requests: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("kiln_requests_total{")
                && l.contains(r#"model="iris""#)
                && l.contains(r#"code="200""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    // 3 seed requests + 1 OIP infer (identical seed requests may be cache hits: still requests).
    assert_eq!(ok_requests, 4.0, "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("kiln_requests_total{")
            && l.contains(r#"code="422""#)
            && l.contains(r#"model="iris""#)),
        "{text}"
    );
    let count = metric_value(&text, "kiln_request_duration_seconds_count{").expect("latency histogram");
    assert!(count >= 1.0, "{text}");
    assert!(text.contains("kiln_request_duration_seconds_bucket{"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("kiln_prediction_cache_total{") && l.contains(r#"result="hit""#)),
        "identical seed requests should hit the in-process cache:\n{text}"
    );
    assert_eq!(metric_value(&text, "kiln_models_loaded"), Some(1.0), "{text}");
    // An unknown model name must not become a label value.
    assert!(!text.contains(r#"model="nope""#), "{text}");
}

/// `kiln slo rules` writes rules promtool accepts for kiln.toml's SLOs, and `kiln slo
/// report` reads a live server's counters: the requests sent, the 5xx among them (the
/// faulty echo fails rows whose first value is negative) and the budget they used.
#[test]
fn slo_rules_pass_promtool_and_the_report_counts_a_live_servers_requests() {
    let home = KilnHome::new();
    let v = home.register_example("echo4_faulty", "echo");
    home.run(&["models", "promote", "echo", &v.to_string(), "Production"]);
    let gitops = home.path().join("kiln.toml");
    std::fs::write(
        &gitops,
        "[models.echo.slo]\navailability = 0.9\nlatency = { threshold = \"5s\", objective = 0.99 }\nwindow = \"7d\"\n",
    )
    .expect("kiln.toml");
    let file = gitops.to_str().unwrap_or_default();
    let rules = home.path().join("kiln-slo.rules.yml");
    let out = home.run(&[
        "slo",
        "rules",
        "--file",
        file,
        "--out",
        rules.to_str().unwrap_or_default(),
    ]);
    assert!(out.contains("wrote the rules of 1 SLO(s)"), "{out}");
    let check = Command::new("promtool")
        .args(["check", "rules", rules.to_str().unwrap_or_default()])
        .output()
        .expect("promtool (Debian package prometheus) must be installed");
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && said.contains("SUCCESS"),
        "{said}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // A threshold that is no bucket bound is refused, naming the bounds around it.
    std::fs::write(
        &gitops,
        "[models.echo.slo]\nlatency = { threshold = \"40ms\", objective = 0.99 }\n",
    )
    .expect("kiln.toml");
    let refused = home.run_raw(&["slo", "rules", "--file", file]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("25ms") && err.contains("50ms"),
        "{err}"
    );
    std::fs::write(
        &gitops,
        "[models.echo.slo]\navailability = 0.9\nwindow = \"7d\"\n",
    )
    .expect("kiln.toml");

    let server = home.serve("serve", &["--cache", "off"]);
    let row = |first: f32| {
        format!(
            r#"{{"inputs": [{{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [{first}, 2, 3, 4]}}]}}"#
        )
    };
    for i in 0..20 {
        let reply = server.post("/v2/models/echo/infer", &row(if i % 4 == 0 { -1.0 } else { 1.0 }));
        assert_eq!(reply.status, if i % 4 == 0 { 500 } else { 200 }, "{}", reply.body);
    }
    let report: serde_json::Value = serde_json::from_str(&home.run(&[
        "slo",
        "report",
        "--file",
        file,
        "--metrics",
        &server.url("/metrics"),
        "--json",
    ]))
    .expect("report JSON");
    let availability = &report[0];
    assert_eq!(availability["model"], "echo", "{report:#}");
    assert_eq!(availability["total"], 20, "{report:#}");
    assert_eq!(availability["bad"], 5, "{report:#}");
    // 25 % bad against a 10 % budget: breached, 150 % of the budget overspent.
    assert_eq!(availability["status"], "breached", "{report:#}");
    let left = availability["budget_remaining"].as_f64().unwrap_or(f64::NAN);
    assert!((left - (-1.5)).abs() < 1e-9, "{report:#}");
}
