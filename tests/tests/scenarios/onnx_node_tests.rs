//! The ONNX backend node tests, every case run natively (tract) and in the sandboxed
//! guest component: the sandbox runs the same engine, so it must pass every case native
//! tract passes. Generates the test data (python3 + `onnx`) on first run.

use kiln_tests::node_tests::{self, Runner, Summary, Tolerance};

#[test]
fn the_sandbox_passes_every_case_native_tract_passes() {
    let data = node_tests::default_data_dir();
    node_tests::ensure_data(&data).unwrap_or_else(|e| panic!("{e:#}"));
    let dirs = node_tests::case_dirs(&data, None).unwrap_or_else(|e| panic!("{e:#}"));
    let runner = Runner::new(Tolerance::default()).unwrap_or_else(|e| panic!("{e:#}"));
    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);

    let started = std::time::Instant::now();
    let results = runner.run_all(&dirs, jobs, &|_| {});
    let summary = Summary::of(&results);
    println!(
        "{} cases, {jobs} job(s), {:.0?}\n{}",
        dirs.len(),
        started.elapsed(),
        summary.table()
    );

    let lost: Vec<String> = summary
        .lost
        .iter()
        .map(|(name, outcome)| format!("{name}: {}", node_tests::one_line(outcome.detail(), 200)))
        .collect();
    assert!(
        lost.is_empty(),
        "the sandbox loses {} case(s) native tract passes:\n{}",
        lost.len(),
        lost.join("\n")
    );
    assert!(
        summary.native.pass > 1000,
        "native tract passes only {} of {} cases: is the data or the comparison broken?\n{}",
        summary.native.pass,
        dirs.len(),
        summary.table()
    );
}
