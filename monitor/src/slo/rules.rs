//! The Prometheus rule file generated from the SLOs: per model and SLI, recording rules
//! for the error ratio over every tier's windows and over the whole SLO window, metadata
//! series, and the `KilnErrorBudgetBurn` alert of each tier that can fire.

use super::common::{
    ALERT_NAME, DAY, DURATION, HOUR, REQUESTS, SliKind, WINDOWS, format_duration, format_seconds, num,
    round_sig,
};
use super::error::SloError;
use super::objective::{Slo, bucket_bound};
use super::tiers::burn_tiers;
use std::collections::BTreeSet;
use std::time::Duration;

/// How Go's `strconv.FormatFloat(x, 'g', -1, 64)` writes a positive float: shortest
/// digits, exponent form (two-digit exponent) below 1e-4 and from 1e6 up.
fn go_float(x: f64) -> String {
    let scientific = format!("{x:e}");
    let Some((mantissa, exponent)) = scientific.split_once('e') else {
        return format!("{x}");
    };
    let Ok(exponent) = exponent.parse::<i32>() else {
        return format!("{x}");
    };
    if (-4..6).contains(&exponent) {
        format!("{x}")
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    }
}

/// The `le` matcher for a bucket bound. Kiln's exposition writes bounds the way Rust
/// prints floats (`le="1"`, `le="0.00005"`); Prometheus 3 rewrites `le` on ingestion to
/// the OpenMetrics form (`"1.0"`, `"5e-05"`), as does a Go exporter or an OpenMetrics
/// scrape. A matcher for only one form would silently match nothing on the other, and
/// the latency SLI would never alert; so every form is accepted.
fn le_matcher(bound: f64) -> String {
    let go = go_float(bound);
    let openmetrics = if go.contains(['.', 'e']) {
        go.clone()
    } else {
        format!("{go}.0")
    };
    let mut forms = vec![format!("{bound}")];
    for form in [go, openmetrics] {
        if !forms.contains(&form) {
            forms.push(form);
        }
    }
    if let [only] = forms.as_slice() {
        return format!("le=\"{only}\"");
    }
    // Character classes rather than backslashes: nothing to escape in PromQL or YAML.
    let alternatives: Vec<String> = forms
        .iter()
        .map(|f| f.replace('.', "[.]").replace('+', "[+]"))
        .collect();
    format!("le=~\"{}\"", alternatives.join("|"))
}

/// A YAML double-quoted scalar (JSON string escapes are valid YAML).
fn yaml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One SLI of one model, ready to write rules for.
struct Sli<'a> {
    model: &'a str,
    kind: SliKind,
    objective: f64,
    window: Duration,
    /// The latency threshold's bucket bound.
    bound: Option<f64>,
}

impl Sli<'_> {
    fn budget(&self) -> f64 {
        round_sig(1.0 - self.objective, 12)
    }

    /// `model="iris",slo="latency"`: selects this SLI's recorded series.
    fn selector(&self) -> String {
        format!("model=\"{}\",slo=\"{}\"", self.model, self.kind.as_str())
    }

    /// PromQL lines for the error ratio over `range`.
    fn error_ratio(&self, range: &str) -> Vec<String> {
        let model = self.model;
        match self.bound {
            None => vec![
                // Without `or`, a model with no 5xx yet (no such series) would record no
                // ratio at all instead of 0.
                "(".to_string(),
                format!("  sum by (model) (rate({REQUESTS}{{model=\"{model}\",code=~\"5..\"}}[{range}]))"),
                "  or".to_string(),
                format!("  0 * sum by (model) (rate({REQUESTS}{{model=\"{model}\"}}[{range}]))"),
                ")".to_string(),
                "/".to_string(),
                format!("sum by (model) (rate({REQUESTS}{{model=\"{model}\"}}[{range}]))"),
            ],
            Some(bound) => vec![
                "1 - (".to_string(),
                format!(
                    "  sum by (model) (rate({DURATION}_bucket{{model=\"{model}\",{}}}[{range}]))",
                    le_matcher(bound)
                ),
                "  /".to_string(),
                format!("  sum by (model) (rate({DURATION}_count{{model=\"{model}\"}}[{range}]))"),
                ")".to_string(),
            ],
        }
    }

    /// What a bad request is, for alert texts.
    fn bad_requests(&self) -> String {
        match self.bound {
            None => "failed with a 5xx".to_string(),
            Some(bound) => format!("took longer than {}", format_seconds(bound)),
        }
    }

    fn objective_text(&self) -> String {
        match self.bound {
            None => format!("{}% of requests without a 5xx", num(self.objective * 100.0)),
            Some(bound) => format!(
                "{}% of requests within {}",
                num(self.objective * 100.0),
                format_seconds(bound)
            ),
        }
    }
}

/// YAML for one rule: `- record:`/`- alert:` with a PromQL block, labels, annotations.
fn write_rule(
    out: &mut String,
    kind: &str,
    name: &str,
    expr: &[String],
    labels: &[(&str, String)],
    annotations: &[(&str, String)],
) {
    out.push_str(&format!("      - {kind}: {}\n", yaml_str(name)));
    // A literal block keeps PromQL readable and needs no YAML escaping; model names are
    // checked to hold no character that could end it.
    out.push_str("        expr: |-\n");
    for line in expr {
        out.push_str(&format!("          {line}\n"));
    }
    for (key, map) in [("labels", labels), ("annotations", annotations)] {
        if map.is_empty() {
            continue;
        }
        out.push_str(&format!("        {key}:\n"));
        for (k, v) in map {
            out.push_str(&format!("          {k}: {}\n", yaml_str(v)));
        }
    }
}

/// The rule groups of one SLI: its ratios and alerts in one group, because rules in a
/// group run in order, so the alerts read ratios of the same evaluation; the ratio over
/// the whole window in a second, slower group, because it reads the window's raw samples.
fn write_sli(out: &mut String, sli: &Sli<'_>) {
    let kind = sli.kind.as_str();
    let model = sli.model;
    let window = format_duration(sli.window);
    let budget = sli.budget();
    // Static model and slo labels on every rule, equal to those of the series: promtool
    // (and Prometheus's rule linting) tells rules apart by name and static labels only, so
    // without them every model's `slo:sli_error:ratio_rate5m` reads as a duplicate.
    let labels = [("model", model.to_string()), ("slo", kind.to_string())];

    out.push_str(&format!(
        "  - name: {}\n",
        yaml_str(&format!("kiln-slo-{model}-{kind}"))
    ));
    out.push_str("    rules:\n");
    for range in WINDOWS {
        let name = format!("slo:sli_error:ratio_rate{range}");
        write_rule(out, "record", &name, &sli.error_ratio(range), &labels, &[]);
    }
    for (name, value) in [
        ("slo:objective:ratio", num(sli.objective)),
        ("slo:error_budget:ratio", num(budget)),
        ("slo:time_period:days", num(sli.window.as_secs_f64() / DAY as f64)),
    ] {
        write_rule(out, "record", name, &[format!("vector({value})")], &labels, &[]);
    }
    write_rule(
        out,
        "record",
        "slo:current_burn_rate:ratio",
        &[format!(
            "slo:sli_error:ratio_rate5m{{{}}} / {}",
            sli.selector(),
            num(budget)
        )],
        &labels,
        &[],
    );

    let mut skipped = Vec::new();
    for tier in burn_tiers(sli.window) {
        let threshold = tier.factor * budget;
        // The error ratio is at most 1: such a tier could never fire (e.g. a 90% latency
        // objective's 14.4x page needs 144% slow requests). Say so instead of pretending.
        if threshold >= 1.0 {
            skipped.push(tier);
            continue;
        }
        let factor = num(tier.factor);
        let compare = format!("> ({factor} * {})", num(budget));
        let expr = [
            format!(
                "slo:sli_error:ratio_rate{}{{{}}} {compare}",
                tier.long,
                sli.selector()
            ),
            "and".to_string(),
            format!(
                "slo:sli_error:ratio_rate{}{{{}}} {compare}",
                tier.short,
                sli.selector()
            ),
        ];
        let alert_labels = [
            labels[0].clone(),
            labels[1].clone(),
            ("severity", tier.severity.as_str().to_string()),
            ("long", tier.long.to_string()),
            ("short", tier.short.to_string()),
        ];
        let lasts_hours = sli.window.as_secs_f64() / HOUR as f64 / tier.factor;
        let annotations = [
            (
                "summary",
                format!(
                    "{model} {kind} SLO: error budget burning {factor}x ({}% of the {window} budget in {})",
                    num(tier.budget_percent),
                    tier.long
                ),
            ),
            (
                "description",
                format!(
                    "{{{{ $value | humanizePercentage }}}} of {model} requests {} over the last {}, and more than {}% over the last {}; the objective is {} over {window} (error budget {}%). At this burn rate the whole budget is gone in {}.",
                    sli.bad_requests(),
                    tier.long,
                    num(threshold * 100.0),
                    tier.short,
                    sli.objective_text(),
                    num(budget * 100.0),
                    format_hours(lasts_hours),
                ),
            ),
        ];
        write_rule(out, "alert", ALERT_NAME, &expr, &alert_labels, &annotations);
    }
    if !skipped.is_empty() {
        let names: Vec<String> = skipped
            .iter()
            .map(|t| format!("{}x {}/{}", num(t.factor), t.long, t.short))
            .collect();
        out.push_str(&format!(
            "      # Not generated: {} (factor x budget >= 1, no error ratio can exceed it); raise the objective or shorten the window to get them.\n",
            names.join(", ")
        ));
    }

    // Over the whole window from the raw counters rather than Sloth's average of the 5m
    // ratio: one idle 5m step (NaN) would poison that average for the whole window.
    // Every 5m, because a 30d range over raw samples is the costliest query here.
    let period = format!("slo:sli_error:ratio_rate{window}");
    out.push_str(&format!(
        "  - name: {}\n    interval: 5m\n    rules:\n",
        yaml_str(&format!("kiln-slo-{model}-{kind}-period"))
    ));
    write_rule(out, "record", &period, &sli.error_ratio(&window), &labels, &[]);
    write_rule(
        out,
        "record",
        "slo:period_error_budget_remaining:ratio",
        &[format!("1 - {period}{{{}}} / {}", sli.selector(), num(budget))],
        &labels,
        &[],
    );
}

/// Hours as `"50h"` under 3 days, else days: `"5d"`, `"2.5d"`.
fn format_hours(hours: f64) -> String {
    if hours < 72.0 {
        format!("{}h", num(round_sig(hours, 3)))
    } else {
        format!("{}d", num(round_sig(hours / 24.0, 3)))
    }
}

/// A Prometheus rule file (YAML) for `slos`: per model and SLI, the error ratios
/// `slo:sli_error:ratio_rate{5m,...,3d}` and over the whole window, metadata series, and
/// the `KilnErrorBudgetBurn` alerts. `buckets` are the bounds of
/// `kiln_request_duration_seconds` (seconds); each latency threshold must be one of them.
pub fn rules(slos: &[Slo], buckets: &[f64]) -> Result<String, SloError> {
    if slos.is_empty() {
        return Err(SloError::NoSlos);
    }
    let mut models = BTreeSet::new();
    let mut slis = Vec::new();
    for slo in slos {
        slo.validate()?;
        if !models.insert(slo.model.as_str()) {
            return Err(SloError::DuplicateModel {
                model: slo.model.clone(),
            });
        }
        if let Some(objective) = slo.availability {
            slis.push(Sli {
                model: &slo.model,
                kind: SliKind::Availability,
                objective,
                window: slo.window,
                bound: None,
            });
        }
        if let Some(latency) = &slo.latency {
            slis.push(Sli {
                model: &slo.model,
                kind: SliKind::Latency,
                objective: latency.objective,
                window: slo.window,
                bound: Some(bucket_bound(&slo.model, latency.threshold_seconds, buckets)?),
            });
        }
    }
    let mut out = String::from(
        "# Kiln SLO rules, generated by `kiln slo rules` from the [models.NAME.slo] tables of\n\
         # kiln.toml: edit those and regenerate rather than editing this file.\n\
         # slo:sli_error:ratio_rate<W> = share of bad requests over W, labels {model, slo}.\n\
         # KilnErrorBudgetBurn: multi-window multi-burn-rate alerts (Google SRE workbook), labels\n\
         # {model, slo, severity, long, short}. A model without traffic records NaN and never alerts.\n\
         groups:\n",
    );
    for sli in &slis {
        write_sli(&mut out, sli);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slo::duration::parse_duration;
    use crate::slo::objective::tests::{latency, slo};

    /// kiln-serve's `kiln_request_duration_seconds` buckets (runtime/serve/src/metrics.rs).
    const BUCKETS: &[f64] = &[
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
        2.5, 5.0,
    ];
    #[test]
    fn a_threshold_off_the_buckets_names_the_nearest_bounds() {
        let message = |seconds: f64| match rules(&[slo("iris", None, latency(seconds, 0.99))], BUCKETS) {
            Ok(_) => panic!("{seconds}s accepted"),
            Err(e) => {
                assert!(matches!(e, SloError::NotABucket { .. }), "{e:?}");
                e.to_string()
            }
        };
        assert!(message(0.06).contains("latency threshold 60ms is not a bucket bound"));
        assert!(message(0.06).contains("use 50ms or 100ms"));
        assert!(message(10.0).contains("use 5s (the largest bound)"));
        assert!(message(0.00001).contains("use 0.05ms (the smallest bound)"));
        let none = rules(&[slo("iris", None, latency(0.05, 0.99))], &[]).err();
        assert!(none.is_some_and(|e| e.to_string().contains("none were given")));
    }

    #[test]
    fn a_threshold_within_float_noise_of_a_bound_is_that_bound() -> Result<(), SloError> {
        let seconds = parse_duration("0.1ms")?.as_secs_f64();
        let yaml = rules(&[slo("iris", None, latency(seconds, 0.99))], BUCKETS)?;
        assert!(yaml.contains("le=\"0.0001\""), "{yaml}");
        Ok(())
    }

    #[test]
    fn rules_refuse_no_slos_and_two_slos_for_one_model() {
        assert_eq!(rules(&[], BUCKETS), Err(SloError::NoSlos));
        let twice = [slo("iris", Some(0.999), None), slo("iris", Some(0.99), None)];
        assert_eq!(
            rules(&twice, BUCKETS),
            Err(SloError::DuplicateModel {
                model: "iris".to_string()
            })
        );
        // rules() validates what it is given, even when built without Slo::new.
        let invalid = [slo("iris", Some(2.0), None)];
        assert!(matches!(
            rules(&invalid, BUCKETS),
            Err(SloError::Objective { .. })
        ));
    }

    #[test]
    fn le_matchers_accept_every_way_the_bound_is_written() {
        assert_eq!(le_matcher(0.05), r#"le="0.05""#);
        assert_eq!(le_matcher(2.5), r#"le="2.5""#);
        assert_eq!(le_matcher(0.0001), r#"le="0.0001""#);
        assert_eq!(le_matcher(1.0), r#"le=~"1|1[.]0""#);
        assert_eq!(le_matcher(5.0), r#"le=~"5|5[.]0""#);
        assert_eq!(le_matcher(0.00005), r#"le=~"0[.]00005|5e-05""#);
        assert_eq!(le_matcher(0.000025), r#"le=~"0[.]000025|2[.]5e-05""#);
        assert_eq!(le_matcher(1e6), r#"le=~"1000000|1e[+]06""#);
        assert_eq!(go_float(123456.0), "123456");
        assert_eq!(go_float(1234567.0), "1.234567e+06");
    }

    #[test]
    fn rules_hold_every_window_label_and_tier_of_each_sli() -> Result<(), SloError> {
        let yaml = rules(
            &[
                slo("iris", Some(0.999), latency(0.05, 0.99)),
                Slo {
                    window: Duration::from_secs(7 * DAY),
                    ..slo("fraud", Some(0.99), None)
                },
            ],
            BUCKETS,
        )?;
        for (model, kind) in [
            ("iris", "availability"),
            ("iris", "latency"),
            ("fraud", "availability"),
        ] {
            assert!(yaml.contains(&format!("  - name: \"kiln-slo-{model}-{kind}\"\n")));
            assert!(yaml.contains(&format!(
                "  - name: \"kiln-slo-{model}-{kind}-period\"\n    interval: 5m\n"
            )));
            let selector = format!("{{model=\"{model}\",slo=\"{kind}\"}}");
            for window in WINDOWS {
                assert!(
                    yaml.contains(&format!("slo:sli_error:ratio_rate{window}{selector}")),
                    "{window}"
                );
            }
        }
        assert_eq!(
            yaml.matches("- record: \"slo:sli_error:ratio_rate5m\"").count(),
            3
        );
        assert_eq!(yaml.matches("- alert: \"KilnErrorBudgetBurn\"").count(), 12);
        assert_eq!(
            yaml.matches("- record: \"slo:sli_error:ratio_rate30d\"").count(),
            2
        );
        assert_eq!(
            yaml.matches("- record: \"slo:sli_error:ratio_rate7d\"").count(),
            1
        );
        assert!(yaml.contains("kiln_requests_total{model=\"iris\",code=~\"5..\"}[1h]"));
        assert!(yaml.contains("kiln_request_duration_seconds_bucket{model=\"iris\",le=\"0.05\"}[1h]"));
        assert!(yaml.contains("kiln_request_duration_seconds_count{model=\"iris\"}[1h]"));
        assert!(yaml.contains(
            "slo:sli_error:ratio_rate1h{model=\"iris\",slo=\"availability\"} > (14.4 * 0.001)\n          and\n          slo:sli_error:ratio_rate5m{model=\"iris\",slo=\"availability\"} > (14.4 * 0.001)\n"
        ));
        assert!(
            yaml.contains(
                "slo:sli_error:ratio_rate3d{model=\"fraud\",slo=\"availability\"} > (0.2333 * 0.01)"
            )
        );
        assert!(yaml.contains("vector(0.001)"), "budget printed rounded");
        assert!(!yaml.contains("0.0010000000000000009"));
        assert!(yaml.contains(
            "summary: \"iris latency SLO: error budget burning 14.4x (2% of the 30d budget in 1h)\""
        ));
        assert!(yaml.contains(
            "requests took longer than 50ms over the last 1h, and more than 14.4% over the last 5m"
        ));
        assert!(yaml.contains("the objective is 99% of requests within 50ms over 30d (error budget 1%)"));
        assert!(yaml.contains("the whole budget is gone in 50h."));
        Ok(())
    }

    #[test]
    fn tiers_that_cannot_fire_are_left_out_and_said_so() -> Result<(), SloError> {
        // 90% within 50ms over 30d: the 14.4x page would need 144% slow requests.
        let yaml = rules(&[slo("iris", None, latency(0.05, 0.9))], BUCKETS)?;
        assert_eq!(yaml.matches("- alert: \"KilnErrorBudgetBurn\"").count(), 3);
        assert!(!yaml.contains("(14.4 * 0.1)"));
        assert!(yaml.contains("(6 * 0.1)"));
        assert!(yaml.contains("# Not generated: 14.4x 1h/5m (factor x budget >= 1"));
        Ok(())
    }
}
