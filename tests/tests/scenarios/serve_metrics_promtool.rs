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
