//! The README's tours, run exactly as written in a shell: the main one (compile → register
//! → promote → curl → tritonclient → hot reload → metrics → audit) and the monitoring one
//! (a reference, drifted traffic, the drift report, gauges and the alert at a real
//! Alertmanager).

use kiln_tests::kiln_process::kiln_bin;
use kiln_tests::root;
use std::process::Command;

/// The README's ```sh block between `<!-- NAME:begin -->` and `<!-- NAME:end -->`.
fn block(name: &str) -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let block = readme
        .split(&format!("<!-- {name}:begin -->"))
        .nth(1)
        .and_then(|rest| rest.split(&format!("<!-- {name}:end -->")).next())
        .unwrap_or_else(|| panic!("the README has a block between {name}:begin and {name}:end"));
    block
        .trim()
        .strip_prefix("```sh")
        .and_then(|b| b.strip_suffix("```"))
        .unwrap_or_else(|| panic!("{name} is one ```sh block"))
        .to_string()
}

/// Runs a README block in bash from the repository root: (success, stdout, stderr).
fn run(name: &str) -> (bool, String, String) {
    kiln_bin(); // the tours run target/debug/kiln, which the first README command builds
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &block(name)])
        .current_dir(root())
        .env("KILN_CACHE_DIR", kiln_tests::test_cache_dir().join("aot"))
        .env("PATH", kiln_tests::kiln_process::path_with_kiln())
        .env_remove("KILN_HOME")
        .output()
        .expect("bash");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_readme_tour_runs_as_written() {
    let (ok, stdout, stderr) = run("tour");
    assert!(ok, "the tour failed:\n{stdout}\n{stderr}");
    // Step 4: the seed API answers with onnxruntime's label for this row (2).
    assert!(stdout.contains(r#""prediction":2"#), "{stdout}");
    // Step 5: tritonclient got labels [2 0] from version 1.
    assert!(stdout.contains("labels [2 0] model version 1"), "{stdout}");
    // Step 6: Production moved to version 2 while the champion alias stayed on 1.
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(r#""model_version""#))
        .collect();
    assert!(
        lines.iter().any(|l| l.contains(r#""model_version":"2""#)),
        "{stdout}"
    );
    assert!(
        lines.last().is_some_and(|l| l.contains(r#""model_version":"1""#)),
        "champion should still be version 1: {stdout}"
    );
    // Step 7: metrics, lineage, audit.
    assert!(stdout.contains("kiln_requests_total{"), "{stdout}");
    assert!(stdout.contains("make_examples-iris_logreg"), "lineage: {stdout}");
    assert!(stdout.contains("audit log intact"), "{stdout}");
}

#[test]
fn the_readme_monitoring_tour_runs_as_written() {
    let (ok, stdout, stderr) = run("monitor-tour");
    assert!(ok, "the monitoring tour failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("served 300 rows"), "{stdout}");
    // The drift table (not `reference show`'s): the petal columns drifted by KS (500 reference rows), the sepals did not,
    // so half the features drifted: dataset drift.
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(name) && l.contains("numerical"))
            .unwrap_or_else(|| panic!("no row for {name}:\n{stdout}"))
            .to_string()
    };
    for drifted in ["petal_length", "petal_width"] {
        let line = row(drifted);
        assert!(line.contains("ks") && line.contains("DRIFT"), "{line}\n{stdout}");
    }
    for stable in ["sepal_length", "sepal_width"] {
        let line = row(stable);
        assert!(line.contains("ks") && !line.contains("DRIFT"), "{line}\n{stdout}");
    }
    assert!(
        stdout.contains("kiln_dataset_drift{model=\"iris\",version=\"1\"} 1"),
        "{stdout}"
    );
    // The alert arrived at Alertmanager with Kiln's labels.
    let alert = stdout
        .lines()
        .find(|l| l.contains("KilnDataDrift"))
        .unwrap_or_else(|| panic!("no KilnDataDrift alert:\n{stdout}"));
    assert!(
        alert.contains("model=\"iris\"") && alert.contains("version=\"1\""),
        "{alert}"
    );
}
