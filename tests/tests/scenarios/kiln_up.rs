//! `kiln up` on an empty `$KILN_HOME`: compiles, registers and promotes the bundled
//! models, serves them, prints examples that work when pasted; a restart reuses it all.

use kiln_tests::kiln_process::KilnHome;
use std::process::Command;

#[test]
fn kiln_up_bootstraps_serves_pasteable_examples_and_restarts_without_compiling() {
    let home = KilnHome::new();
    let server = home.serve("up", &[]);
    let listed: serde_json::Value =
        serde_json::from_str(&home.run(&["models", "list", "--json"])).expect("json");
    let listed = listed.as_array().expect("array");
    for name in ["house-price", "iris", "mlp"] {
        let v = listed
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("{name} not registered: {listed:?}"));
        assert_eq!(v["stage"], "Production");
        assert_eq!(v["aliases"], serde_json::json!(["champion"]));
    }

    // Every curl line the banner prints, pasted into a shell as printed.
    let started = std::time::Instant::now();
    while !server.stdout().contains("metrics") && started.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let log = server.stdout();
    let commands: Vec<String> = log
        .split("\n\n")
        .filter(|block| block.trim_start().starts_with("# ") && block.contains("curl "))
        .map(|block| {
            block
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    assert!(commands.len() >= 4, "expected curl examples in:\n{log}");
    for cmd in &commands {
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &format!("{cmd}\n")])
            .output()
            .expect("bash");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "`{cmd}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !stdout.contains("\"error\""),
            "`{cmd}` answered an error: {stdout}"
        );
        assert!(!stdout.trim().is_empty(), "`{cmd}` printed nothing");
    }
    // The Python example, as printed (its heredoc lines are indented by two spaces only
    // where the banner indents commands).
    let python = log
        .split("\n\n")
        .find(|block| block.contains("python3 - <<'PY'"))
        .expect("a tritonclient example in the banner");
    let script: String = python
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &format!("{script}\n")])
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the tritonclient example failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // onnxruntime: label 2, probabilities [3.46e-05, 0.0349, 0.9651].
    assert_eq!(stdout.trim(), "label 2 probabilities [0.0, 0.0349, 0.9651]");
    let pred = server.post(
        "/v1/models/iris/predict",
        r#"{"features": [6.3, 3.4, 5.6, 2.4], "model_version": "champion"}"#,
    );
    assert_eq!(pred.status, 200, "{}", pred.body);
    // onnxruntime labels this row 2 with p = 0.965 (examples/models/iris_logreg.expected.json).
    let p = pred.json();
    assert_eq!(p["prediction"], 2, "{p}");
    assert!(
        (p["confidence"].as_f64().unwrap_or(0.0) - 0.965_078).abs() < 1e-4,
        "{p}"
    );
    drop(server);

    let again = home.serve("up", &[]);
    let log = again.log();
    assert!(
        !log.contains("compiling example model"),
        "a restart compiled again:\n{log}"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&home.run(&["models", "list", "--json"])).expect("json");
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(3),
        "a restart registered new versions: {listed}"
    );
    assert_eq!(
        again.post("/v1/models/mlp/predict", "{\"features\": [1]}").status,
        422
    );
}
