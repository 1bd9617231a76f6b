//! Drift from Kiln's profiles against Evidently 0.7.23 itself.
//!
//! `evidently_compare.py` generates datasets with fixed seeds (every column kind the
//! default method selection distinguishes, references of 500, 1100 and 2500 rows, current
//! windows of 500 to 12000 rows, stable and drifted), writes them as CSV and runs
//! `Report([DataDriftPreset()], include_tests=True)` plus a PSI `ValueDrift` per column on
//! them. These tests read the same CSVs, profile them, and compare column by column:
//!
//! - through exact profiles (every value kept; current windows merged from three parts,
//!   profiles sent through JSON): same type, method and verdict for every column, and
//!   scores and PSI equal to Evidently's to 1e-9 relative;
//! - through sketched profiles (exact capacity 64, so every column of more than 64 values
//!   goes through the KLL sketch): same method everywhere, same verdict wherever
//!   Evidently's score is not within ±10% of its threshold, scores within 5% relative or
//!   0.01 absolute.
//!
//! Evidently needs its own virtualenv (the system Python's pandas 3 breaks its import):
//! `$KILN_EVIDENTLY_PYTHON`, else `<workspace>/target/evidently-venv/bin/python`.

use kiln_monitor::drift::{self, ColumnDrift, ColumnKind, DriftReport, Method};
use kiln_monitor::profile::{ColumnProfile, DEFAULT_KLL_K, ProfileConfig, QUANTILE_GRID, TableProfile};
use kiln_monitor::stats;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const CREATE_VENV: &str = "python3 -m venv target/evidently-venv && \
     target/evidently-venv/bin/pip install evidently==0.7.23 'pandas>=2.2,<3'";

#[derive(Debug, Deserialize)]
struct Expected {
    evidently: String,
    datasets: Vec<Dataset>,
}

#[derive(Debug, Deserialize)]
struct Dataset {
    name: String,
    reference_csv: String,
    current_csv: String,
    columns: Vec<ExpectedColumn>,
    feature_drift_share: f64,
    feature_dataset_drift: bool,
}

#[derive(Debug, Deserialize)]
struct ExpectedColumn {
    name: String,
    dtype: String,
    role: String,
    kind: String,
    method: String,
    threshold: f64,
    score: f64,
    drift: bool,
    psi: f64,
    /// scipy's KS statistic, for columns Evidently tests with KS.
    statistic: Option<f64>,
    reference_count: u64,
    current_count: u64,
}

struct Fixture {
    dir: tempfile::TempDir,
    expected: Expected,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Runs the Python side once per test binary.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root = workspace_root();
        let python = std::env::var_os("KILN_EVIDENTLY_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/evidently-venv/bin/python"));
        assert!(
            python.exists(),
            "no Python with Evidently at {}: these tests compare against Evidently 0.7.23 itself. \
             Create its virtualenv from the workspace root with\n    {CREATE_VENV}\n\
             (about 1 GB, wheels only) or point KILN_EVIDENTLY_PYTHON at an interpreter that has \
             evidently==0.7.23 and pandas<3.",
            python.display()
        );
        let dir = tempfile::tempdir().expect("temporary directory");
        let script = root.join("monitor/tests/evidently_compare.py");
        let out = Command::new(&python)
            .arg(&script)
            .arg(dir.path())
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "{} {} failed ({}):\n{}",
            python.display(),
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let json = std::fs::read_to_string(dir.path().join("evidently.json")).expect("evidently.json");
        let expected: Expected = serde_json::from_str(&json).expect("parse evidently.json");
        assert_eq!(
            expected.evidently, "0.7.23",
            "the reference numbers must come from Evidently 0.7.23"
        );
        Fixture { dir, expected }
    })
}

/// A numeric CSV as written by pandas: header, then rows; empty fields are NaN.
fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).expect("read csv");
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .expect("header")
        .split(',')
        .map(str::to_string)
        .collect();
    let rows = lines
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    (header, rows)
}

/// Feature and output profiles of `rows`, fed as `parts` separately profiled pieces that
/// are then merged, and sent through JSON as the registry would store them.
fn profile(
    ds: &Dataset,
    header: &[String],
    rows: &[Vec<String>],
    config: ProfileConfig,
    parts: usize,
) -> (TableProfile, TableProfile) {
    let names = |role: &str| -> Vec<String> {
        ds.columns
            .iter()
            .filter(|c| c.role == role)
            .map(|c| c.name.clone())
            .collect()
    };
    let empty = |role: &str| TableProfile::new(names(role), config).expect("profile");
    let (mut features, mut outputs) = (empty("feature"), empty("output"));
    let chunk = rows.len().div_ceil(parts);
    for piece in rows.chunks(chunk) {
        let (mut f, mut o) = (empty("feature"), empty("output"));
        for row in piece {
            for (name, field) in header.iter().zip(row) {
                let column = ds
                    .columns
                    .iter()
                    .find(|c| &c.name == name)
                    .expect("column in json");
                let table = if column.role == "output" { &mut o } else { &mut f };
                let profile = table.column_mut(name).expect("column in profile");
                if column.dtype == "int" {
                    profile.observe_int(field.parse().expect("int field"));
                } else if field.is_empty() {
                    profile.observe_float(f64::NAN);
                } else {
                    profile.observe_float(field.parse().expect("float field"));
                }
            }
        }
        features.merge(&f).expect("merge features");
        outputs.merge(&o).expect("merge outputs");
    }
    let through_json = |t: &TableProfile| -> TableProfile {
        serde_json::from_str(&serde_json::to_string(t).expect("serialize")).expect("deserialize")
    };
    (through_json(&features), through_json(&outputs))
}

/// One dataset's profiles ([features, outputs]) and drift report.
struct Run {
    ds: &'static Dataset,
    report: DriftReport,
    reference: [TableProfile; 2],
    current: [TableProfile; 2],
}

impl Run {
    /// Reference and current profile of a column.
    fn profiles(&self, name: &str) -> (&ColumnProfile, &ColumnProfile) {
        let r = self
            .reference
            .iter()
            .find_map(|t| t.column(name))
            .expect("reference column");
        let c = self
            .current
            .iter()
            .find_map(|t| t.column(name))
            .expect("current column");
        (r, c)
    }
}

/// Profiles and drift reports for every dataset with profiles of `config`.
fn runs(config: ProfileConfig) -> Vec<Run> {
    let fx = fixture();
    fx.expected
        .datasets
        .iter()
        .map(|ds| {
            let (rh, rr) = read_csv(&fx.dir.path().join(&ds.reference_csv));
            let (ch, cr) = read_csv(&fx.dir.path().join(&ds.current_csv));
            let (rf, ro) = profile(ds, &rh, &rr, config, 1);
            let (cf, co) = profile(ds, &ch, &cr, config, 3);
            let report = drift::report(&rf, &cf, &ro, &co).expect("drift report");
            Run {
                ds,
                report,
                reference: [rf, ro],
                current: [cf, co],
            }
        })
        .collect()
}

fn column<'a>(report: &'a DriftReport, name: &str) -> &'a ColumnDrift {
    report
        .features
        .iter()
        .chain(&report.outputs)
        .find(|c| c.name == name)
        .expect("column in report")
}

fn relative(ours: f64, theirs: f64) -> f64 {
    if ours == theirs {
        0.0
    } else {
        (ours - theirs).abs() / theirs.abs().max(f64::MIN_POSITIVE)
    }
}

fn table(rows: &[(String, String, String, f64, f64, f64, f64)]) -> String {
    let mut s = format!(
        "{:<22} {:<14} {:<30} {:>12} {:>12} {:>9} {:>9}\n",
        "dataset", "column", "method", "evidently", "kiln", "psi ev", "psi kiln"
    );
    for (ds, col, method, theirs, ours, psi_theirs, psi_ours) in rows {
        s += &format!(
            "{ds:<22} {col:<14} {method:<30} {theirs:>12.6e} {ours:>12.6e} {psi_theirs:>9.5} {psi_ours:>9.5}\n"
        );
    }
    s
}

#[test]
fn exact_profiles_reproduce_evidently_data_drift_preset() {
    // Large enough that the 12000-row window stays exact after merging its three parts.
    let config = ProfileConfig {
        exact_capacity: 16384,
        kll_k: DEFAULT_KLL_K,
    };
    let mut failures = Vec::new();
    let mut rows = Vec::new();
    let mut compared = 0;
    for run in runs(config) {
        let (ds, report) = (run.ds, &run.report);
        for e in &ds.columns {
            let ours = column(report, &e.name);
            let (rp, cp) = run.profiles(&e.name);
            compared += 1;
            rows.push((
                ds.name.clone(),
                e.name.clone(),
                e.method.clone(),
                e.score,
                ours.score,
                e.psi,
                ours.psi,
            ));
            let at = format!("{} / {}", ds.name, e.name);
            if (rp.count(), cp.count()) != (e.reference_count, e.current_count) {
                failures.push(format!(
                    "{at}: {} and {} finite values, Evidently {} and {}",
                    rp.count(),
                    cp.count(),
                    e.reference_count,
                    e.current_count
                ));
            }
            let kind = format!("{:?}", ours.kind).to_lowercase();
            if !kind.starts_with(&e.kind) {
                failures.push(format!("{at}: type {kind}, Evidently {}", e.kind));
            }
            if ours.method.display_name() != e.method || ours.threshold != e.threshold {
                failures.push(format!(
                    "{at}: method {:?} at {}, Evidently {} at {}",
                    ours.method, ours.threshold, e.method, e.threshold
                ));
            }
            // Exact scores: the verdict must agree even right at the threshold.
            if ours.drift != e.drift {
                failures.push(format!(
                    "{at}: drift {}, Evidently {} (score {} vs {})",
                    ours.drift, e.drift, ours.score, e.score
                ));
            }
            for (what, o, t) in [("score", ours.score, e.score), ("psi", ours.psi, e.psi)] {
                if relative(o, t) > 1e-9 && (o - t).abs() > 1e-15 {
                    failures.push(format!("{at}: {what} {o:e}, Evidently {t:e}"));
                }
            }
            if !ours.exact {
                failures.push(format!("{at}: computed from sketches, but every value was kept"));
            }
        }
        if report.dataset_drift != ds.feature_dataset_drift
            || (report.drift_share - ds.feature_drift_share).abs() > 1e-12
        {
            failures.push(format!(
                "{}: dataset drift {} (share {}), Evidently {} (share {})",
                ds.name,
                report.dataset_drift,
                report.drift_share,
                ds.feature_dataset_drift,
                ds.feature_drift_share
            ));
        }
    }
    println!("{}", table(&rows));
    assert!(compared >= 80, "only {compared} columns compared");
    assert!(
        failures.is_empty(),
        "{} of {compared} columns differ from Evidently:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Tolerances for sketched profiles (KLL compaction is randomised, so every run differs):
///
/// - chi-square, Z, Jensen–Shannon and Wasserstein: the verdict wherever Evidently's score
///   is not within ±10% of the threshold, and the score within 5% relative or 0.01
///   absolute (worst seen over 25 runs: Wasserstein 0.0057 absolute);
/// - KS: its p-value turns the sketch's ~0.1% error in the statistic into 10–25% near
///   0.05, so the p-value must be that of a statistic within δ = ε_ref + ε_cur +
///   1/QUANTILE_GRID of scipy's (ε: each sketch's a-priori rank error bound), and the
///   verdict must agree wherever 0.05 lies outside the p-values of that band;
/// - PSI over Sturges bins: within 0.05 absolute (worst seen over 25 runs: 0.031, at a
///   PSI of 0.25), since its sparse tail bins amplify the sketch's per-bin error of up to
///   2ε; PSI over one bin per value is exact.
#[test]
fn sketched_profiles_match_evidently_within_tolerance() {
    // Every column of more than 64 values goes through the KLL sketch (default k).
    let config = ProfileConfig {
        exact_capacity: 64,
        kll_k: DEFAULT_KLL_K,
    };
    let mut failures = Vec::new();
    let mut rows = Vec::new();
    let (mut compared, mut sketched) = (0, 0);
    let mut worst = (0.0f64, String::new());
    for run in runs(config) {
        let (ds, report) = (run.ds, &run.report);
        for e in &ds.columns {
            let ours = column(report, &e.name);
            let (rp, cp) = run.profiles(&e.name);
            compared += 1;
            sketched += usize::from(!ours.exact);
            rows.push((
                ds.name.clone(),
                e.name.clone(),
                e.method.clone(),
                e.score,
                ours.score,
                e.psi,
                ours.psi,
            ));
            let at = format!("{} / {}", ds.name, e.name);
            if ours.method.display_name() != e.method {
                failures.push(format!("{at}: method {:?}, Evidently {}", ours.method, e.method));
            }
            // Distribution tests must really have gone through the sketches.
            if ours.exact && matches!(ours.method, Method::Ks | Method::Wasserstein) {
                failures.push(format!(
                    "{at}: {:?} computed exactly with an exact capacity of 64",
                    ours.method
                ));
            }
            // One bin per value (categorical, or <= 20 reference values) needs only the exact
            // value counts; Sturges bins need the distributions.
            let value_bins =
                ours.kind == ColumnKind::Categorical || rp.distinct_count().is_some_and(|n| n <= 20);
            let psi_exact = value_bins || (rp.is_exact() && cp.is_exact());
            if (ours.psi - e.psi).abs() > if psi_exact { 1e-9 } else { 0.05 } {
                failures.push(format!(
                    "{at}: psi {:e}, Evidently {:e} (exact: {psi_exact})",
                    ours.psi, e.psi
                ));
            }
            if ours.method == Method::Ks {
                let d = e.statistic.expect("scipy's KS statistic");
                let delta = rp.rank_error() + cp.rank_error() + 1.0 / QUANTILE_GRID as f64;
                let (n1, n2) = (e.reference_count, e.current_count);
                let p_low = stats::ks_2samp_pvalue(d + delta, n1, n2);
                let p_high = stats::ks_2samp_pvalue((d - delta).max(0.0), n1, n2);
                if ours.score < p_low * (1.0 - 1e-9) || ours.score > p_high * (1.0 + 1e-9) {
                    failures.push(format!(
                        "{at}: p {:e} is not the p-value of a D within {delta:.4} of scipy's {d} ([{p_low:e}, {p_high:e}])",
                        ours.score
                    ));
                }
                let ambiguous = p_low <= e.threshold && e.threshold <= p_high;
                if !ambiguous && ours.drift != e.drift {
                    failures.push(format!(
                        "{at}: drift {}, Evidently {} (p {} vs {})",
                        ours.drift, e.drift, ours.score, e.score
                    ));
                }
            } else {
                let near_threshold = (e.score - e.threshold).abs() <= 0.1 * e.threshold;
                if !near_threshold && ours.drift != e.drift {
                    failures.push(format!(
                        "{at}: drift {}, Evidently {} (score {} vs {})",
                        ours.drift, e.drift, ours.score, e.score
                    ));
                }
                let (rel, abs) = (relative(ours.score, e.score), (ours.score - e.score).abs());
                if rel > 0.05 && abs > 0.01 {
                    failures.push(format!("{at}: score {:e}, Evidently {:e}", ours.score, e.score));
                }
                if abs > worst.0 {
                    worst = (
                        abs,
                        format!("{at}: {:e} vs {:e} ({:.2}%)", ours.score, e.score, rel * 100.0),
                    );
                }
            }
        }
        if report.dataset_drift != ds.feature_dataset_drift {
            failures.push(format!(
                "{}: dataset drift {} (share {}), Evidently {} (share {})",
                ds.name,
                report.dataset_drift,
                report.drift_share,
                ds.feature_dataset_drift,
                ds.feature_drift_share
            ));
        }
    }
    println!(
        "{}\nworst absolute deviation of a non-KS score: {}",
        table(&rows),
        worst.1
    );
    assert!(
        sketched >= 40,
        "only {sketched} of {compared} columns went through the sketches"
    );
    assert!(
        failures.is_empty(),
        "{} of {compared} columns out of tolerance:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
