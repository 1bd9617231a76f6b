//! The README's tour (compile → register → promote → curl → tritonclient → hot reload →
//! metrics → audit), run exactly as written in a shell.

use kiln_tests::kiln_process::kiln_bin;
use kiln_tests::root;
use std::process::Command;

fn tour() -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let block = readme
        .split("<!-- tour:begin -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- tour:end -->").next())
        .expect("the README has a tour between tour:begin and tour:end");
    block
        .trim()
        .strip_prefix("```sh")
        .and_then(|b| b.strip_suffix("```"))
        .expect("the tour is one ```sh block")
        .to_string()
}

#[test]
fn the_readme_tour_runs_as_written() {
    kiln_bin(); // the tour runs target/debug/kiln, which the first README command builds
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &tour()])
        .current_dir(root())
        .env("KILN_CACHE_DIR", kiln_tests::test_cache_dir().join("aot"))
        .env("PATH", kiln_tests::kiln_process::path_with_kiln())
        .env_remove("KILN_HOME")
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the tour failed:\n{stdout}\n{stderr}");
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
