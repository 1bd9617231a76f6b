//! The README's fleet tour (three joined nodes, a canary rollout to 100 %, then a faulty
//! release rolled back automatically), run exactly as written in a shell.

use kiln_tests::kiln_process::kiln_bin;
use kiln_tests::root;
use std::process::Command;

fn tour() -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let block = readme
        .split("<!-- fleet-tour:begin -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- fleet-tour:end -->").next())
        .expect("the README has a fleet tour between fleet-tour:begin and fleet-tour:end");
    block
        .trim()
        .strip_prefix("```sh")
        .and_then(|b| b.strip_suffix("```"))
        .expect("the fleet tour is one ```sh block")
        .to_string()
}

#[test]
fn the_readme_fleet_tour_runs_as_written() {
    kiln_bin();
    let out = Command::new("timeout")
        .args(["300", "bash", "-euo", "pipefail", "-c", &tour()])
        .current_dir(root())
        .env("KILN_CACHE_DIR", kiln_tests::test_cache_dir().join("aot"))
        .env("PATH", kiln_tests::kiln_process::path_with_kiln())
        .env_remove("KILN_HOME")
        .env_remove("KILN_LOG")
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the fleet tour failed:\n{stdout}\n{stderr}");
    // Step 1-2: three joined nodes, converged.
    assert!(stdout.matches("converged").count() >= 3, "{stdout}");
    // Step 4: the canary of version 2 succeeded; step 5: version 3 was rolled back for its
    // error rate, and version 2 is Production again.
    assert!(stdout.contains("succeeded"), "{stdout}");
    assert!(
        stdout.contains("rolled_back") && stdout.contains("error rate"),
        "{stdout}"
    );
    let listing: Vec<&str> = stdout.lines().filter(|l| l.starts_with("echo ")).collect();
    assert!(
        listing
            .iter()
            .any(|l| l.split_whitespace().nth(1) == Some("2") && l.contains("Production")),
        "{stdout}"
    );
    assert!(
        listing
            .iter()
            .any(|l| l.split_whitespace().nth(1) == Some("3") && l.contains("None")),
        "{stdout}"
    );
    // Step 4: the deployer token was refused Production; the audit log names the tokens.
    assert!(stdout.contains("refused: ci is a deployer"), "{stdout}");
    assert!(stderr.contains("maintainer"), "{stderr}");
    let audit: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("register") || l.contains("transition_stage"))
        .collect();
    assert!(
        audit.iter().any(|l| l.contains(" ci ") && l.contains("register")),
        "{stdout}"
    );
    assert!(
        audit
            .iter()
            .any(|l| l.contains(" release ") && l.contains("transition_stage")),
        "{stdout}"
    );
    for action in [
        "rollout.start",
        "rollout.step",
        "rollout.succeed",
        "rollout.rollback",
    ] {
        assert!(
            stdout.contains(action),
            "{action} missing from the audit log: {stdout}"
        );
    }
}
