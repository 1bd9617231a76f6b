//! The SLO rules `kiln_monitor::slo::rules` generates, run by promtool (Prometheus 2.42,
//! Debian package `prometheus`): `promtool check rules` accepts them, and `promtool test
//! rules` shows which alerts fire for generated traffic. The expected annotation texts are
//! written out here on purpose: they are what on-call reads.
//!
//! Two SLOs: iris (availability 99.9%, latency 99% within 50ms, over 30d) and fraud
//! (availability 99%, latency 90% within 1s, over 7d, so the burn factors scale).
//! Series are 1m apart and as short as each case allows: promtool evaluates every rule at
//! every minute, and a long series costs seconds of CPU.

use kiln_monitor::slo::{LatencyObjective, Slo, rules};
use std::io::ErrorKind;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// kiln-serve's `kiln_request_duration_seconds` buckets (runtime/serve/src/metrics.rs).
const BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0,
];

fn slos() -> Vec<Slo> {
    let day = 24 * 3600;
    let iris = Slo::new(
        "iris",
        Some(0.999),
        Some(LatencyObjective {
            threshold_seconds: 0.05,
            objective: 0.99,
        }),
        Duration::from_secs(30 * day),
    );
    let fraud = Slo::new(
        "fraud",
        Some(0.99),
        Some(LatencyObjective {
            threshold_seconds: 1.0,
            objective: 0.9,
        }),
        Duration::from_secs(7 * day),
    );
    match (iris, fraud) {
        (Ok(iris), Ok(fraud)) => vec![iris, fraud],
        other => panic!("test SLOs are invalid: {other:?}"),
    }
}

/// A temporary directory with the generated rules, removed on drop.
struct Workspace {
    dir: PathBuf,
}

impl Workspace {
    fn new(name: &str) -> Workspace {
        let dir = std::env::temp_dir().join(format!("kiln-slo-promtool-{}-{name}", std::process::id()));
        // A leftover of a killed run of the same pid would only hold stale files.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let yaml = rules(&slos(), BUCKETS).unwrap_or_else(|e| panic!("generating rules: {e}"));
        std::fs::write(dir.join("kiln-slo.rules.yml"), yaml).unwrap_or_else(|e| panic!("writing rules: {e}"));
        Workspace { dir }
    }

    /// Runs promtool in the workspace: (exit success, stdout + stderr).
    fn promtool(&self, args: &[&str]) -> (bool, String) {
        let started = Instant::now();
        let output = match Command::new("promtool")
            .args(args)
            .current_dir(&self.dir)
            .output()
        {
            Ok(output) => output,
            Err(e) if e.kind() == ErrorKind::NotFound => panic!(
                "promtool is not installed, and these tests need it: install the Debian package \
                 `prometheus` (apt-get install prometheus; .ci/run does) and rerun"
            ),
            Err(e) => panic!("running promtool: {e}"),
        };
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        eprintln!("promtool {} took {:.2?}", args.join(" "), started.elapsed());
        (output.status.success(), text)
    }

    /// Writes a `promtool test rules` file around `tests`, with rules evaluated every
    /// `every` (rules without their own interval), and runs it.
    fn test_rules(&self, every: &str, tests: &str) -> (bool, String) {
        let file =
            format!("rule_files:\n  - kiln-slo.rules.yml\nevaluation_interval: {every}\ntests:\n{tests}");
        std::fs::write(self.dir.join("kiln-slo.test.yml"), file)
            .unwrap_or_else(|e| panic!("writing test: {e}"));
        self.promtool(&["test", "rules", "kiln-slo.test.yml"])
    }

    /// Runs `tests`, rules evaluated every minute, and asserts promtool passes them.
    fn assert_passes(&self, tests: &str) {
        self.assert_passes_every("1m", tests);
    }

    /// Runs `tests`, rules evaluated every `every`, and asserts promtool passes them.
    fn assert_passes_every(&self, every: &str, tests: &str) {
        let (ok, output) = self.test_rules(every, tests);
        assert!(
            ok && output.contains("SUCCESS"),
            "promtool test rules failed:\n{output}"
        );
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The texts of an SLI's alerts: its window, budget, objective and what a bad request is,
/// then per tier (long, short, severity, factor, budget %, threshold %, budget lasts).
struct Texts {
    window: &'static str,
    budget: &'static str,
    objective: &'static str,
    bad: &'static str,
    tiers: [(
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    ); 4],
}

fn texts(model: &str, slo: &str) -> Texts {
    let thirty = |thresholds: [&'static str; 4]| {
        [
            ("1h", "5m", "page", "14.4", "2", thresholds[0], "50h"),
            ("6h", "30m", "page", "6", "5", thresholds[1], "5d"),
            ("1d", "2h", "ticket", "3", "10", thresholds[2], "10d"),
            ("3d", "6h", "ticket", "1", "10", thresholds[3], "30d"),
        ]
    };
    // 7d: factor = budget% × 168h / 100 / long hours.
    let seven = |thresholds: [&'static str; 4]| {
        [
            ("1h", "5m", "page", "3.36", "2", thresholds[0], "50h"),
            ("6h", "30m", "page", "1.4", "5", thresholds[1], "5d"),
            ("1d", "2h", "ticket", "0.7", "10", thresholds[2], "10d"),
            ("3d", "6h", "ticket", "0.2333", "10", thresholds[3], "30d"),
        ]
    };
    match (model, slo) {
        ("iris", "availability") => Texts {
            window: "30d",
            budget: "0.1",
            objective: "99.9% of requests without a 5xx",
            bad: "failed with a 5xx",
            tiers: thirty(["1.44", "0.6", "0.3", "0.1"]),
        },
        ("iris", "latency") => Texts {
            window: "30d",
            budget: "1",
            objective: "99% of requests within 50ms",
            bad: "took longer than 50ms",
            tiers: thirty(["14.4", "6", "3", "1"]),
        },
        ("fraud", "availability") => Texts {
            window: "7d",
            budget: "1",
            objective: "99% of requests without a 5xx",
            bad: "failed with a 5xx",
            tiers: seven(["3.36", "1.4", "0.7", "0.2333"]),
        },
        ("fraud", "latency") => Texts {
            window: "7d",
            budget: "10",
            objective: "90% of requests within 1s",
            bad: "took longer than 1s",
            tiers: seven(["33.6", "14", "7", "2.333"]),
        },
        other => panic!("no texts for {other:?}"),
    }
}

/// An `alert_rule_test` entry: at `at`, exactly `fired` = (model, slo, long window, the
/// long window's error ratio as humanizePercentage writes it) are firing.
fn expect(at: &str, fired: &[(&str, &str, &str, &str)]) -> String {
    let mut out = format!("      - eval_time: {at}\n        alertname: KilnErrorBudgetBurn\n");
    if fired.is_empty() {
        out.push_str("        exp_alerts: []\n");
        return out;
    }
    out.push_str("        exp_alerts:\n");
    for &(model, slo, long, value) in fired {
        let t = texts(model, slo);
        let Some(&(_, short, severity, factor, percent, threshold, lasts)) =
            t.tiers.iter().find(|tier| tier.0 == long)
        else {
            panic!("no tier {long}");
        };
        out.push_str(&format!(
            "          - exp_labels: {{model: {model}, slo: {slo}, severity: {severity}, long: {long}, short: {short}}}\n\
             \x20           exp_annotations:\n\
             \x20             summary: \"{model} {slo} SLO: error budget burning {factor}x ({percent}% of the {window} budget in {long})\"\n\
             \x20             description: \"{value} of {model} requests {bad} over the last {long}, and more than {threshold}% over the last {short}; the objective is {objective} over {window} (error budget {budget}%). At this burn rate the whole budget is gone in {lasts}.\"\n",
            window = t.window,
            bad = t.bad,
            objective = t.objective,
            budget = t.budget,
        ));
    }
    out
}

/// All four tiers of one SLI, each with the same long-window ratio.
fn all_tiers<'a>(model: &'a str, slo: &'a str, value: &'a str) -> Vec<(&'a str, &'a str, &'a str, &'a str)> {
    ["1h", "6h", "1d", "3d"]
        .iter()
        .map(|&long| (model, slo, long, value))
        .collect()
}

/// fraud's steady healthy traffic: 100 requests a minute, all 200 and all within 1s.
fn fraud_healthy(minutes: u32) -> String {
    format!(
        "      - series: 'kiln_requests_total{{model=\"fraud\",version=\"1\",endpoint=\"infer\",code=\"200\"}}'\n        values: '0+100x{minutes}'\n\
         \x20     - series: 'kiln_request_duration_seconds_bucket{{model=\"fraud\",version=\"1\",endpoint=\"infer\",le=\"1\"}}'\n        values: '0+100x{minutes}'\n\
         \x20     - series: 'kiln_request_duration_seconds_count{{model=\"fraud\",version=\"1\",endpoint=\"infer\"}}'\n        values: '0+100x{minutes}'\n"
    )
}

/// iris's histogram with every request within 50ms, `per_step` per sample, `steps` samples.
fn iris_fast(per_step: u32, steps: u32) -> String {
    format!(
        "      - series: 'kiln_request_duration_seconds_bucket{{model=\"iris\",version=\"1\",endpoint=\"infer\",le=\"0.05\"}}'\n        values: '0+{per_step}x{steps}'\n\
         \x20     - series: 'kiln_request_duration_seconds_count{{model=\"iris\",version=\"1\",endpoint=\"infer\"}}'\n        values: '0+{per_step}x{steps}'\n"
    )
}

#[test]
fn generated_rules_pass_promtool_check() {
    let ws = Workspace::new("check");
    let (ok, output) = ws.promtool(&["check", "rules", "kiln-slo.rules.yml"]);
    // Per SLI: 7 window ratios, 3 metadata, 1 current burn rate, 4 alerts, 2 period rules.
    assert!(ok, "promtool check rules failed:\n{output}");
    assert!(output.contains("SUCCESS: 68 rules found"), "{output}");
}

#[test]
fn fast_burn_fires_both_pages_and_both_tickets() {
    // iris: 1000 requests a minute over two versions and endpoints, 2% shed with 503 (by
    // version 2, on seed) = 20x the 0.1% budget, above every tier's factor. Summed by
    // model, the alerts carry no version label. fraud stays healthy next to it. The sums
    // run over three series in an order Prometheus does not fix, so the last bit of a
    // ratio can differ between runs: the values are compared to 6 decimal places.
    let ws = Workspace::new("fast");
    let fired = all_tiers("iris", "availability", "2%");
    ws.assert_passes(&format!(
        "  - interval: 1m\n    input_series:\n\
         \x20     - series: 'kiln_requests_total{{model=\"iris\",version=\"1\",endpoint=\"infer\",code=\"200\"}}'\n        values: '0+490x15'\n\
         \x20     - series: 'kiln_requests_total{{model=\"iris\",version=\"2\",endpoint=\"infer\",code=\"200\"}}'\n        values: '0+490x15'\n\
         \x20     - series: 'kiln_requests_total{{model=\"iris\",version=\"2\",endpoint=\"seed\",code=\"503\"}}'\n        values: '0+20x15'\n\
         {}{}\
         \x20   promql_expr_test:\n\
         \x20     - expr: round(slo:sli_error:ratio_rate5m{{slo=\"availability\"}} * 1e6) / 1e6\n        eval_time: 10m\n        exp_samples:\n\
         \x20         - labels: '{{model=\"fraud\",slo=\"availability\"}}'\n            value: 0\n\
         \x20         - labels: '{{model=\"iris\",slo=\"availability\"}}'\n            value: 0.02\n\
         \x20     - expr: round(slo:current_burn_rate:ratio{{model=\"iris\",slo=\"availability\"}} * 1e6) / 1e6\n        eval_time: 10m\n        exp_samples:\n\
         \x20         - labels: '{{model=\"iris\",slo=\"availability\"}}'\n            value: 20\n\
         \x20   alert_rule_test:\n{}",
        iris_fast(1000, 15),
        fraud_healthy(15),
        expect("10m", &fired),
    ));
}

#[test]
fn slow_burn_fires_only_the_tickets() {
    // 0.5% errors = 5x: under the 14.4x and 6x pages, over the 3x and 1x tickets. Samples
    // and evaluations 2m apart (1000 requests a minute): enough for the 5m window.
    let ws = Workspace::new("slow");
    ws.assert_passes_every("2m", &format!(
        "  - interval: 2m\n    input_series:\n\
         \x20     - series: 'kiln_requests_total{{model=\"iris\",version=\"1\",endpoint=\"infer\",code=\"200\"}}'\n        values: '0+1990x90'\n\
         \x20     - series: 'kiln_requests_total{{model=\"iris\",version=\"1\",endpoint=\"infer\",code=\"500\"}}'\n        values: '0+10x90'\n\
         {}\
         \x20   alert_rule_test:\n{}",
        iris_fast(2000, 90),
        expect(
            "3h",
            &[
                ("iris", "availability", "1d", "0.5%"),
                ("iris", "availability", "3d", "0.5%")
            ]
        ),
    ));
}

#[test]
fn latency_burn_fires_latency_alerts_with_either_le_spelling() {
    // iris: 20% of requests slower than 50ms (20x its 1% budget), none failing, so only
    // its latency alerts fire. fraud: half slower than 1s, its bucket spelt le="1.0" as
    // Prometheus 3 stores it; 50% is over every 7d tier of its 10% budget (33.6% at most).
    let ws = Workspace::new("latency");
    let mut fired = all_tiers("iris", "latency", "20%");
    fired.extend(all_tiers("fraud", "latency", "50%"));
    ws.assert_passes(&format!(
        "  - interval: 1m\n    input_series:\n\
         \x20     - series: 'kiln_requests_total{{model=\"iris\",version=\"1\",endpoint=\"infer\",code=\"200\"}}'\n        values: '0+1000x15'\n\
         \x20     - series: 'kiln_request_duration_seconds_bucket{{model=\"iris\",version=\"1\",endpoint=\"infer\",le=\"0.025\"}}'\n        values: '0+500x15'\n\
         \x20     - series: 'kiln_request_duration_seconds_bucket{{model=\"iris\",version=\"1\",endpoint=\"infer\",le=\"0.05\"}}'\n        values: '0+800x15'\n\
         \x20     - series: 'kiln_request_duration_seconds_bucket{{model=\"iris\",version=\"1\",endpoint=\"infer\",le=\"+Inf\"}}'\n        values: '0+1000x15'\n\
         \x20     - series: 'kiln_request_duration_seconds_count{{model=\"iris\",version=\"1\",endpoint=\"infer\"}}'\n        values: '0+1000x15'\n\
         \x20     - series: 'kiln_requests_total{{model=\"fraud\",version=\"1\",endpoint=\"infer\",code=\"200\"}}'\n        values: '0+100x15'\n\
         \x20     - series: 'kiln_request_duration_seconds_bucket{{model=\"fraud\",version=\"1\",endpoint=\"infer\",le=\"1.0\"}}'\n        values: '0+50x15'\n\
         \x20     - series: 'kiln_request_duration_seconds_count{{model=\"fraud\",version=\"1\",endpoint=\"infer\"}}'\n        values: '0+100x15'\n\
         \x20   alert_rule_test:\n{}",
        expect("10m", &fired),
    ));
}

#[test]
fn seven_day_window_scales_the_burn_factors() {
    // fraud: 2% errors against a 1% budget = 2x. Over 30d that would fire only the 1x
    // ticket; over 7d the factors are 3.36, 1.4, 0.7 and 0.2333, so the 6h/30m page fires
    // too, and the 1h/5m page (3.36x) does not.
    let ws = Workspace::new("seven");
    ws.assert_passes(&format!(
        "  - interval: 1m\n    input_series:\n\
         \x20     - series: 'kiln_requests_total{{model=\"fraud\",version=\"1\",endpoint=\"infer\",code=\"200\"}}'\n        values: '0+98x15'\n\
         \x20     - series: 'kiln_requests_total{{model=\"fraud\",version=\"1\",endpoint=\"infer\",code=\"500\"}}'\n        values: '0+2x15'\n\
         \x20   alert_rule_test:\n{}",
        expect(
            "10m",
            &[
                ("fraud", "availability", "6h", "2%"),
                ("fraud", "availability", "1d", "2%"),
                ("fraud", "availability", "3d", "2%"),
            ]
        ),
    ));
}

#[test]
fn healthy_traffic_just_under_budget_fires_nothing() {
    // iris: 1 error per 1000 successes = 0.0999% < 0.1%, and 0.9% slower than 50ms < 1%.
    // The 1x ticket (threshold = budget) is the tightest tier and must stay quiet. Steady
    // traffic has the same ratio over every window, so 6h (the longest short window, full)
    // stands for 3 days. Samples and evaluations 2m apart still put 2 or 3 samples in the
    // 5m window, for half the cost: promtool evaluates all 68 rules at every step.
    let ws = Workspace::new("healthy");
    ws.assert_passes_every("2m", &format!(
        "  - interval: 2m\n    input_series:\n\
         \x20     - series: 'kiln_requests_total{{model=\"iris\",version=\"1\",endpoint=\"infer\",code=\"200\"}}'\n        values: '0+2000x180'\n\
         \x20     - series: 'kiln_requests_total{{model=\"iris\",version=\"1\",endpoint=\"infer\",code=\"500\"}}'\n        values: '0+2x180'\n\
         \x20     - series: 'kiln_request_duration_seconds_bucket{{model=\"iris\",version=\"1\",endpoint=\"infer\",le=\"0.05\"}}'\n        values: '0+1984x180'\n\
         \x20     - series: 'kiln_request_duration_seconds_count{{model=\"iris\",version=\"1\",endpoint=\"infer\"}}'\n        values: '0+2002x180'\n\
         \x20   promql_expr_test:\n\
         \x20     - expr: slo:sli_error:ratio_rate3d{{model=\"iris\",slo=\"availability\"}} < 0.001\n        eval_time: 6h\n        exp_samples:\n\
         \x20         - labels: 'slo:sli_error:ratio_rate3d{{model=\"iris\",slo=\"availability\"}}'\n            value: 0.000999000999000999\n\
         \x20   alert_rule_test:\n{}{}",
        expect("1h", &[]),
        expect("6h", &[]),
    ));
}

#[test]
fn a_spike_that_left_the_short_window_stops_paging() {
    // 1000 requests a minute throughout; 20% errors from 60m to 70m only.
    // 70m: all four fire (1h ratio 2000/60000, the others 2000/70000).
    // 80m: the 5m window is clean, so the 14.4x page is gone though its 1h ratio is still
    //      3.3%; the 30m window still holds the spike.
    // 105m: the 30m window is clean too; only the tickets remain, on 2000/105000.
    let ws = Workspace::new("spike");
    ws.assert_passes(&format!(
        "  - interval: 1m\n    input_series:\n\
         \x20     - series: 'kiln_requests_total{{model=\"iris\",version=\"1\",endpoint=\"infer\",code=\"200\"}}'\n        values: '0+1000x60 60800+800x9 69000+1000x40'\n\
         \x20     - series: 'kiln_requests_total{{model=\"iris\",version=\"1\",endpoint=\"infer\",code=\"500\"}}'\n        values: '0x60 200+200x9 2000x40'\n\
         {}\
         \x20   alert_rule_test:\n{}{}{}",
        iris_fast(1000, 110),
        expect(
            "70m",
            &[
                ("iris", "availability", "1h", "3.333%"),
                ("iris", "availability", "6h", "2.857%"),
                ("iris", "availability", "1d", "2.857%"),
                ("iris", "availability", "3d", "2.857%"),
            ]
        ),
        expect(
            "80m",
            &[
                ("iris", "availability", "6h", "2.5%"),
                ("iris", "availability", "1d", "2.5%"),
                ("iris", "availability", "3d", "2.5%"),
            ]
        ),
        expect(
            "105m",
            &[
                ("iris", "availability", "1d", "1.905%"),
                ("iris", "availability", "3d", "1.905%"),
            ]
        ),
    ));
}

#[test]
fn no_traffic_fires_nothing_and_records_nan() {
    // Counters that exist but do not move (a node up, nobody calling): every ratio is
    // 0/0 = NaN, and NaN > x is false. `x != x` holds only for NaN, so the count proves
    // the ratios are recorded as NaN rather than missing.
    let ws = Workspace::new("idle");
    ws.assert_passes(&format!(
        "  - interval: 1m\n    input_series:\n\
         \x20     - series: 'kiln_requests_total{{model=\"iris\",version=\"1\",endpoint=\"infer\",code=\"200\"}}'\n        values: '5000x70'\n\
         \x20     - series: 'kiln_requests_total{{model=\"iris\",version=\"1\",endpoint=\"infer\",code=\"500\"}}'\n        values: '300x70'\n\
         \x20     - series: 'kiln_request_duration_seconds_bucket{{model=\"iris\",version=\"1\",endpoint=\"infer\",le=\"0.05\"}}'\n        values: '4000x70'\n\
         \x20     - series: 'kiln_request_duration_seconds_count{{model=\"iris\",version=\"1\",endpoint=\"infer\"}}'\n        values: '5300x70'\n\
         \x20   promql_expr_test:\n\
         \x20     - expr: count(slo:sli_error:ratio_rate5m{{model=\"iris\"}} != slo:sli_error:ratio_rate5m{{model=\"iris\"}})\n        eval_time: 1h\n        exp_samples:\n\
         \x20         - labels: '{{}}'\n            value: 2\n\
         \x20   alert_rule_test:\n{}{}",
        expect("10m", &[]),
        expect("70m", &[]),
    ));
}

#[test]
fn promtool_fails_a_wrong_expectation() {
    // The harness can fail: a slow burn does not page, so expecting the 6x page must fail.
    let ws = Workspace::new("wrong");
    let (ok, output) = ws.test_rules("1m", &format!(
        "  - interval: 1m\n    input_series:\n\
         \x20     - series: 'kiln_requests_total{{model=\"iris\",version=\"1\",endpoint=\"infer\",code=\"200\"}}'\n        values: '0+995x40'\n\
         \x20     - series: 'kiln_requests_total{{model=\"iris\",version=\"1\",endpoint=\"infer\",code=\"500\"}}'\n        values: '0+5x40'\n\
         \x20   alert_rule_test:\n{}",
        expect(
            "30m",
            &[
                ("iris", "availability", "6h", "0.5%"),
                ("iris", "availability", "1d", "0.5%"),
                ("iris", "availability", "3d", "0.5%"),
            ]
        ),
    ));
    assert!(!ok, "promtool passed a wrong expectation:\n{output}");
    assert!(output.contains("FAILED"), "{output}");
    assert!(
        output.contains("long=\"6h\""),
        "the failure names the missing alert:\n{output}"
    );
}
