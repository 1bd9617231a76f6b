//! Cumulative request counters of each model, read from a node's Prometheus text
//! exposition (`/metrics`) and summed over versions, endpoints and nodes.

use super::common::{DURATION, REQUESTS};
use super::error::SloError;
use super::objective::bucket_bound;
use serde::Serialize;
use std::collections::BTreeMap;

/// Cumulative counters of one model, summed over versions and endpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ModelCounters {
    /// The model.
    pub model: String,
    /// Requests answered (`kiln_requests_total`).
    pub requests: u64,
    /// Of those, answered with a 5xx.
    pub server_errors: u64,
    /// Requests timed (`kiln_request_duration_seconds_count`).
    pub latency_count: u64,
    /// Cumulative buckets: (upper bound in seconds, requests at most that long), ascending,
    /// without `+Inf` (that is `latency_count`).
    pub latency_buckets: Vec<(f64, u64)>,
}

impl ModelCounters {
    /// Requests at most `seconds` long, if `seconds` is a bucket bound.
    pub fn within(&self, seconds: f64) -> Option<u64> {
        let bounds: Vec<f64> = self.latency_buckets.iter().map(|&(b, _)| b).collect();
        let bound = bucket_bound(&self.model, seconds, &bounds).ok()?;
        self.latency_buckets
            .iter()
            .find(|&&(b, _)| b == bound)
            .map(|&(_, n)| n)
    }

    /// Adds another snapshot of the same model (e.g. another node's).
    pub fn add(&mut self, other: &ModelCounters) {
        self.requests += other.requests;
        self.server_errors += other.server_errors;
        self.latency_count += other.latency_count;
        for &(bound, n) in &other.latency_buckets {
            self.add_bucket(bound, n);
        }
    }

    fn add_bucket(&mut self, bound: f64, n: u64) {
        match self.latency_buckets.iter_mut().find(|(b, _)| *b == bound) {
            Some((_, count)) => *count += n,
            None => {
                self.latency_buckets.push((bound, n));
                self.latency_buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        }
    }
}

/// Reads `kiln_requests_total` and `kiln_request_duration_seconds_{bucket,count}` from a
/// Prometheus text exposition (a node's `/metrics`) and sums them per model. Other lines
/// are skipped unread.
pub fn counters_from_exposition(text: &str) -> Result<Vec<ModelCounters>, SloError> {
    let mut by_model: BTreeMap<String, ModelCounters> = BTreeMap::new();
    let bucket_name = format!("{DURATION}_bucket");
    let count_name = format!("{DURATION}_count");
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
        let name = &line[..name_end];
        if name != REQUESTS && name != bucket_name && name != count_name {
            continue;
        }
        let error = |reason: String| SloError::Exposition {
            line: index + 1,
            reason,
        };
        let (labels, value) = parse_sample(&line[name_end..]).map_err(error)?;
        let label = |key: &str| labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        let Some(model) = label("model") else {
            continue;
        };
        let count = count_value(value).map_err(|reason| error(format!("{name}: {reason}")))?;
        let entry = by_model
            .entry(model.to_string())
            .or_insert_with(|| ModelCounters {
                model: model.to_string(),
                ..ModelCounters::default()
            });
        if name == REQUESTS {
            entry.requests += count;
            if label("code").is_some_and(|c| c.len() == 3 && c.starts_with('5')) {
                entry.server_errors += count;
            }
        } else if name == count_name {
            entry.latency_count += count;
        } else {
            let Some(le) = label("le") else {
                return Err(error(format!("{name} without an le label")));
            };
            let bound: f64 = le
                .parse()
                .map_err(|_| error(format!("le={le:?} is not a number")))?;
            if bound.is_finite() {
                entry.add_bucket(bound, count);
            }
        }
    }
    Ok(by_model.into_values().collect())
}

/// A counter's value as a whole count (Go clients write counters as floats).
fn count_value(value: f64) -> Result<u64, String> {
    if value.is_finite() && value >= 0.0 {
        Ok(value.round() as u64)
    } else {
        Err(format!("{value} is not a count"))
    }
}

/// The labels and value after a sample's name: `{k="v",...} 12 [timestamp]`.
fn parse_sample(rest: &str) -> Result<(Vec<(String, String)>, f64), String> {
    let mut labels = Vec::new();
    let mut chars = rest.char_indices().peekable();
    let mut value_start = 0;
    if rest.starts_with('{') {
        chars.next();
        loop {
            while chars.next_if(|(_, c)| c.is_whitespace() || *c == ',').is_some() {}
            match chars.peek() {
                Some((i, '}')) => {
                    value_start = i + 1;
                    break;
                }
                None => return Err("unterminated label set".to_string()),
                _ => {}
            }
            let mut key = String::new();
            while let Some((_, c)) = chars.next_if(|(_, c)| c.is_ascii_alphanumeric() || *c == '_') {
                key.push(c);
            }
            while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
            if key.is_empty() || chars.next().map(|(_, c)| c) != Some('=') {
                return Err("expected label=\"value\"".to_string());
            }
            while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label {key}: value is not quoted"));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => return Err(format!("label {key}: unterminated value")),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err(format!("label {key}: unterminated value")),
                }
            }
            labels.push((key, value));
        }
    }
    let mut fields = rest[value_start..].split_whitespace();
    let value = fields.next().ok_or("no value")?;
    let value = value
        .parse::<f64>()
        .map_err(|_| format!("value {value:?} is not a number"))?;
    Ok((labels, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slo::duration::parse_duration;

    /// A `/metrics` page as kiln-serve's prometheus 0.14 TextEncoder writes it (labels in
    /// name order, `le` last), with two versions, two endpoints and metrics around it.
    const EXPOSITION: &str = r#"# HELP kiln_build_info Kiln build information (always 1)
# TYPE kiln_build_info gauge
kiln_build_info{version="0.1.0"} 1
# HELP kiln_request_duration_seconds Time from receiving an inference request to its response, in seconds
# TYPE kiln_request_duration_seconds histogram
kiln_request_duration_seconds_bucket{endpoint="infer",model="iris",version="1",le="0.00005"} 0
kiln_request_duration_seconds_bucket{endpoint="infer",model="iris",version="1",le="0.025"} 900
kiln_request_duration_seconds_bucket{endpoint="infer",model="iris",version="1",le="0.05"} 980
kiln_request_duration_seconds_bucket{endpoint="infer",model="iris",version="1",le="1"} 1000
kiln_request_duration_seconds_bucket{endpoint="infer",model="iris",version="1",le="+Inf"} 1000
kiln_request_duration_seconds_sum{endpoint="infer",model="iris",version="1"} 21.5
kiln_request_duration_seconds_count{endpoint="infer",model="iris",version="1"} 1000
kiln_request_duration_seconds_bucket{endpoint="seed",model="iris",version="2",le="0.00005"} 0
kiln_request_duration_seconds_bucket{endpoint="seed",model="iris",version="2",le="0.025"} 50
kiln_request_duration_seconds_bucket{endpoint="seed",model="iris",version="2",le="0.05"} 90
kiln_request_duration_seconds_bucket{endpoint="seed",model="iris",version="2",le="1"} 99
kiln_request_duration_seconds_bucket{endpoint="seed",model="iris",version="2",le="+Inf"} 100
kiln_request_duration_seconds_sum{endpoint="seed",model="iris",version="2"} 7.25
kiln_request_duration_seconds_count{endpoint="seed",model="iris",version="2"} 100
kiln_request_duration_seconds_bucket{endpoint="infer",model="_unknown",version="",le="0.05"} 3
kiln_request_duration_seconds_bucket{endpoint="infer",model="_unknown",version="",le="+Inf"} 3
kiln_request_duration_seconds_count{endpoint="infer",model="_unknown",version=""} 3
# HELP kiln_requests_total Inference requests answered, by model, served version, endpoint (seed, infer) and HTTP status code
# TYPE kiln_requests_total counter
kiln_requests_total{code="200",endpoint="infer",model="iris",version="1"} 990
kiln_requests_total{code="500",endpoint="infer",model="iris",version="1"} 4
kiln_requests_total{code="503",endpoint="infer",model="iris",version="1"} 6
kiln_requests_total{code="200",endpoint="seed",model="iris",version="2"} 95
kiln_requests_total{code="400",endpoint="seed",model="iris",version="2"} 3
kiln_requests_total{code="504",endpoint="seed",model="iris",version="2"} 2
kiln_requests_total{code="404",endpoint="infer",model="_unknown",version=""} 3
# HELP kiln_shadow_requests_total Copies of requests run on a model's shadow version; never counted in kiln_requests_total
# TYPE kiln_shadow_requests_total counter
kiln_shadow_requests_total{model="iris",result="agree",version="3"} 40
kiln_fallback_total{fallback="fixed",kind="trap",model="we\"ird {x}",version="1"} 1
"#;

    #[test]
    fn exposition_counters_sum_over_versions_and_endpoints_per_model() -> Result<(), SloError> {
        let counters = counters_from_exposition(EXPOSITION)?;
        let models: Vec<&str> = counters.iter().map(|c| c.model.as_str()).collect();
        assert_eq!(models, ["_unknown", "iris"]);
        let iris = &counters[1];
        assert_eq!(iris.requests, 1100);
        // 500, 503 (shed) and 504 are server errors; 400 and 404 are not.
        assert_eq!(iris.server_errors, 12);
        assert_eq!(iris.latency_count, 1100);
        assert_eq!(
            iris.latency_buckets,
            [(0.00005, 0), (0.025, 950), (0.05, 1070), (1.0, 1099)]
        );
        assert_eq!(iris.within(0.05), Some(1070));
        assert_eq!(iris.within(parse_duration("50ms")?.as_secs_f64()), Some(1070));
        assert_eq!(iris.within(0.1), None);
        assert_eq!(counters[0].server_errors, 0);
        assert_eq!(counters[0].requests, 3);
        Ok(())
    }

    #[test]
    fn exposition_errors_give_the_line() {
        for (text, line, reason) in [
            (
                "# c\nkiln_requests_total{model=\"iris\",code=\"200\" 5\n",
                2,
                "expected label=\"value\"",
            ),
            (
                "kiln_requests_total{model=\"iris\"\n",
                1,
                "unterminated label set",
            ),
            (
                "kiln_requests_total{model=\"iris} 5\n",
                1,
                "label model: unterminated value",
            ),
            ("kiln_requests_total{model=iris} 5\n", 1, "value is not quoted"),
            (
                "kiln_requests_total{model=\"iris\"} five\n",
                1,
                "value \"five\" is not a number",
            ),
            ("kiln_requests_total{model=\"iris\"}\n", 1, "no value"),
            ("kiln_requests_total{model=\"iris\"} -3\n", 1, "-3 is not a count"),
            (
                "kiln_request_duration_seconds_bucket{model=\"iris\"} 3\n",
                1,
                "without an le label",
            ),
            (
                "kiln_request_duration_seconds_bucket{model=\"iris\",le=\"x\"} 3\n",
                1,
                "is not a number",
            ),
        ] {
            match counters_from_exposition(text) {
                Err(SloError::Exposition {
                    line: got,
                    reason: why,
                }) => {
                    assert_eq!(got, line, "{text}");
                    assert!(why.contains(reason), "{text}: {why}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn counters_of_several_nodes_add_up() -> Result<(), SloError> {
        let mut total = counters_from_exposition(EXPOSITION)?.remove(1);
        let other = ModelCounters {
            model: "iris".to_string(),
            requests: 10,
            server_errors: 1,
            latency_count: 10,
            latency_buckets: vec![(0.05, 9), (0.1, 10)],
        };
        total.add(&other);
        assert_eq!(
            (total.requests, total.server_errors, total.latency_count),
            (1110, 13, 1110)
        );
        assert_eq!(total.within(0.05), Some(1079));
        assert_eq!(total.within(0.1), Some(10));
        assert_eq!(total.latency_buckets.last(), Some(&(1.0, 1099)));
        Ok(())
    }
}
