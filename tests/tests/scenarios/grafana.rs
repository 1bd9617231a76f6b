//! The Grafana dashboard `docs/grafana/kiln.json` shows only what Kiln exports: every query
//! (panels, rows' panels and template variables) is valid PromQL by Prometheus' own
//! `promtool`, the dashboard covers traffic, errors, latency, rollouts, drift, SLOs and node
//! health, and every metric a query names is on the `/metrics` of a real fleet (a `kiln
//! serve --join` node and `kiln sync run`) after traffic, a canary rollout with a shadow
//! step, a failure answered by the fallback, a shed request and a drift query, or is a
//! recording rule `kiln slo rules` writes. A labelled metric with no sample prints nothing,
//! so each of those is driven on purpose.

use crate::drift_serve::{Normal, csv};
use kiln_tests::fleet::{Fleet, Load, Node, echo_body, wait_for};
use kiln_tests::kiln_process::{KilnHome, free_port};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write;
use std::process::Command;
use std::time::Duration;

#[test]
fn the_dashboard_queries_are_valid_promql_and_cover_every_area() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "kiln");
    assert_eq!(dashboard["title"], "Kiln");
    assert_eq!(dashboard["schemaVersion"], 39);
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("template variables");
    assert!(
        variables
            .iter()
            .any(|v| v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus"),
        "no `datasource` variable of type prometheus"
    );
    let wanted = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});
    for panel in panels(&dashboard)
        .into_iter()
        .filter(|p| p.get("targets").is_some())
    {
        let title = &panel["title"];
        assert_eq!(panel["datasource"], wanted, "panel {title}");
        for target in panel["targets"].as_array().into_iter().flatten() {
            assert_eq!(target["datasource"], wanted, "a query of panel {title}");
        }
    }

    let queries = queries(&dashboard);
    assert!(queries.len() > 40, "{} queries", queries.len());
    if let Err(e) = promtool_check(&queries) {
        panic!("{e}");
    }

    let by_panel: Vec<(String, BTreeSet<String>)> = panels(&dashboard)
        .into_iter()
        .map(|p| {
            let names = p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["expr"].as_str())
                .flat_map(|e| metric_names(&concrete(e)))
                .collect();
            (p["title"].as_str().unwrap_or_default().to_string(), names)
        })
        .collect();
    // Each area and the metrics that show it (`slo:*`: any recorded SLO series).
    let areas: [(&str, &[&str]); 8] = [
        ("traffic", &["kiln_requests_total"]),
        (
            "errors",
            &["kiln_overloaded_total", "kiln_inference_errors_total"],
        ),
        ("latency", &["kiln_request_duration_seconds_bucket"]),
        ("rollout weights", &["kiln_rollout_canary_weight"]),
        ("rollout states", &["kiln_rollout_info", "kiln_rollouts"]),
        ("drift", &["kiln_feature_drift_score"]),
        ("SLOs", &["slo:*"]),
        ("node health", &["kiln_client_breaker_state"]),
    ];
    let shows = |metric: &str, wanted: &str| match wanted.strip_suffix('*') {
        Some(prefix) => metric.starts_with(prefix),
        None => metric == wanted,
    };
    for (area, wanted) in areas {
        assert!(
            by_panel
                .iter()
                .any(|(_, names)| names.iter().any(|m| wanted.iter().any(|w| shows(m, w)))),
            "no panel shows {area} ({wanted:?}): {by_panel:#?}"
        );
    }
}

#[test]
fn every_metric_the_dashboard_queries_is_exported_by_a_real_fleet() {
    let mut fleet = Fleet::start(0, &[]);
    // One node, started here for its flags: a 1 MiB budget of request bytes in flight (a
    // slow upload then sheds the next request) and the previous version as fallback.
    let home = KilnHome::new();
    let addr = format!("127.0.0.1:{}", free_port());
    let join = format!("http://{}", fleet.sync_addr);
    let join_token = fleet.join_token.display().to_string();
    let server = home.serve_on(
        "serve",
        &addr,
        &[
            "--join",
            &join,
            "--join-token-file",
            &join_token,
            "--node-name",
            "edge-1",
            "--cache",
            "off",
            "--max-body-mib-in-flight",
            "1",
            "--fallback",
            "echo=previous",
        ],
    );
    fleet.nodes.push(Node {
        name: "edge-1".into(),
        home,
        addr: addr.clone(),
        server: Some(server),
    });
    fleet.wait_joined();

    // A canary with a shadow step from the echo model to the faulty echo (same answers,
    // but it fails rows whose first value is negative, which the load below never sends).
    let v1 = fleet.deploy_echo_v1();
    let v2 = fleet.register("echo", "faulty.wasm", &kiln_tests::component("echo4_faulty"));
    let reference: Vec<[f64; 4]> = Normal::new(7)
        .rows(400, [0.0; 4])
        .into_iter()
        .map(|r| [r[0].abs() + 0.5, r[1], r[2], r[3]])
        .collect();
    let file = fleet.registry.path().join("reference.csv");
    std::fs::write(&file, csv(&reference)).expect("writing the reference");
    fleet.kiln(&[
        "monitor",
        "reference",
        "set",
        &format!("echo/{v2}"),
        file.to_str().unwrap_or_default(),
    ]);
    fleet.kiln(&[
        "rollout",
        "policy",
        "echo",
        "--steps",
        "50,100",
        "--interval",
        "1s",
        "--min-requests",
        "10",
        "--max-disagreement",
        "0.05",
    ]);
    let load = Load::start(
        fleet.addrs(),
        "/v2/models/echo/infer".into(),
        vec![echo_body(1.0), echo_body(7.0)],
        2,
    );
    fleet.promote("echo", v2);
    fleet.wait_rollout("echo", "succeeded", Duration::from_secs(90));
    let report = load.stop();
    assert_eq!(report.failed(), 0, "{report:?}");
    assert!(
        report.versions.contains_key(&v1.to_string()) && report.versions.contains_key(&v2.to_string()),
        "{report:?}"
    );

    // v2 fails a negative row; v1 (kept loaded for a rollback) answers it.
    let node = fleet.node(0);
    let (reply, headers) = node.post_with("/v2/models/echo/infer", &echo_body(-1.0), &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("x-kiln-fallback") && v.starts_with("previous")),
        "{headers:?}"
    );
    // A client that declares 2 MiB and sends one byte holds the node's whole body budget:
    // the next request is shed with 503 overloaded. The node's gauge must show the budget
    // held before the next request is sent: sent at once, that request could reach the
    // budget first (on a loaded machine) and have the slow one shed instead.
    let mut slow = std::net::TcpStream::connect(&addr).expect("connecting to the node");
    let head = format!(
        "POST /v2/models/echo/infer HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{{",
        2 << 20
    );
    slow.write_all(head.as_bytes())
        .expect("sending the slow request's head");
    wait_for(
        Duration::from_secs(10),
        "the node's gauge to show the slow upload holding its 1 MiB body budget",
        || {
            let metrics = node.get("/metrics").body;
            metrics
                .lines()
                .any(|l| l == "kiln_request_body_bytes_in_flight 1048576")
                .then_some(())
        },
        || {
            let metrics = node.get("/metrics").body;
            let gauge: Vec<&str> = metrics
                .lines()
                .filter(|l| l.starts_with("kiln_request_body_bytes_in_flight"))
                .collect();
            format!("gauge: {gauge:?}\n{}", node.log())
        },
    );
    let last = std::cell::RefCell::new(None);
    let shed = wait_for(
        Duration::from_secs(10),
        "a request shed while a slow upload holds the body budget",
        || {
            let r = node.post("/v2/models/echo/infer", &echo_body(1.0));
            let shed = (r.status == 503).then(|| r.body.clone());
            *last.borrow_mut() = Some((r.status, r.body));
            shed
        },
        || format!("last answer: {:?}\n{}", last.borrow(), node.log()),
    );
    assert!(shed.contains("overloaded"), "{shed}");
    drop(slow);

    // A drift query: the sync service merges the node's profiles and sets its gauges.
    let token = fleet.registry.path().join("admin.token");
    std::fs::write(&token, &fleet.admin).expect("writing the token");
    let drift: Value = serde_json::from_str(&fleet.kiln(&[
        "monitor",
        "drift",
        "echo",
        "--url",
        &join,
        "--url-token-file",
        token.to_str().unwrap_or_default(),
        "--json",
    ]))
    .expect("drift JSON");
    assert!(drift["rows"].as_u64().unwrap_or_default() > 0, "{drift:#}");

    let node_metrics = node.get("/metrics").body;
    let sync_metrics = fleet
        .sync
        .as_ref()
        .expect("the sync service")
        .get("/metrics")
        .body;
    let mut known = exposition_names(&node_metrics);
    known.extend(exposition_names(&sync_metrics));
    // The rollout gauges say what the registry says: the canary succeeded.
    for line in [
        "kiln_rollout_canary_weight{model=\"echo\"} 100",
        "kiln_rollouts{model=\"echo\",state=\"succeeded\"} 1",
    ] {
        assert!(
            sync_metrics.lines().any(|l| l == line),
            "{line} in:\n{sync_metrics}"
        );
    }
    assert!(
        sync_metrics.lines().any(|l| l.starts_with("kiln_rollout_info{")
            && l.contains("state=\"succeeded\"")
            && l.contains(&format!("to_version=\"{v2}\""))
            && l.contains("strategy=\"canary\"")),
        "{sync_metrics}"
    );

    // The SLO series: recording rules of an availability and a latency SLO.
    let config = tempfile::tempdir().expect("a directory");
    let gitops = config.path().join("kiln.toml");
    std::fs::write(
        &gitops,
        "[models.echo.slo]\navailability = 0.99\nlatency = { threshold = \"50ms\", objective = 0.99 }\nwindow = \"30d\"\n",
    )
    .expect("kiln.toml");
    let rules = fleet.kiln(&["slo", "rules", "--file", gitops.to_str().unwrap_or_default()]);
    let recorded = recorded_names(&rules);
    assert!(recorded.contains("slo:current_burn_rate:ratio"), "{rules}");
    known.extend(recorded);

    let missing: Vec<String> = queries(&dashboard())
        .iter()
        .flat_map(|q| {
            unknown_metrics(&concrete(q), &known)
                .into_iter()
                .map(move |m| format!("{m} in `{q}`"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics Kiln does not export:\n{}\n--- node /metrics ---\n{node_metrics}\n--- sync /metrics ---\n{sync_metrics}",
        missing.join("\n")
    );
}

/// `docs/grafana/kiln.json`.
fn dashboard() -> Value {
    let path = kiln_tests::root().join("docs").join("grafana").join("kiln.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel, rows' nested panels (a collapsed row holds its own) included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Every PromQL expression of the dashboard: the panels' targets and the query variables
/// (`label_values(SELECTOR, label)` as its selector), Grafana variables still in them.
fn queries(dashboard: &Value) -> Vec<String> {
    let mut out: Vec<String> = panels(dashboard)
        .into_iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]
            .as_str()
            .or_else(|| variable["query"]["query"].as_str())
            .unwrap_or_default();
        out.extend(variable_expr(query));
    }
    out
}

/// The PromQL of a Prometheus query variable; None for those that name no metric
/// (`label_names()`, `label_values(label)`).
fn variable_expr(query: &str) -> Option<String> {
    let query = query.trim();
    if let Some(args) = query
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
    {
        // The label comes last; a selector's matchers may hold commas.
        return args
            .rsplit_once(',')
            .map(|(selector, _)| selector.trim().to_string());
    }
    if let Some(expr) = query
        .strip_prefix("query_result(")
        .and_then(|r| r.strip_suffix(')'))
    {
        return Some(expr.to_string());
    }
    if query.starts_with("label_names(") || query.starts_with("metrics(") {
        return None;
    }
    Some(query.to_string())
}

/// `expr` with Grafana's variables replaced by values Prometheus would get: `$__interval`,
/// `$__rate_interval`, `$__range` by a duration, `$model`, `${model}`, `${model:regex}` by
/// a name.
fn concrete(expr: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = match after.strip_prefix('{') {
            Some(braced) => {
                let end = braced.find('}').unwrap_or(braced.len());
                (braced[..end].split(':').next().unwrap_or_default(), end + 2)
            }
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        out.push_str(match name {
            "" => "$",
            n if n.starts_with("__") => "5m",
            _ => "echo",
        });
        rest = after.get(len..).unwrap_or_default();
    }
    out.push_str(rest);
    out
}

/// PromQL's keywords: operators, modifiers and aggregations (`sum by (le) (…)` puts no
/// parenthesis right after `sum`).
const KEYWORDS: [&str; 24] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
    "group_left",
    "group_right",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
/// Keywords whose parenthesised list holds label names, not metrics.
const LABEL_LISTS: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];

/// The metric names a PromQL expression selects: its identifiers that are not functions,
/// keywords, label names (in `{…}` or a `by`/`without`/`on`/`ignoring`/`group_*` list),
/// strings, numbers or durations; plus `{__name__="…"}`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = past_string(&chars, i);
        } else if c == '{' {
            let end = closing(&chars, i);
            let matchers: String = chars[i + 1..end.min(chars.len())].iter().collect();
            names.extend(name_matcher(&matchers));
            i = end + 1;
        } else if c == '[' {
            i = closing(&chars, i) + 1;
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            // A number or a duration (`5m`, `1e-3`'s `1e`, `0x1f`): no name in it.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_')
            {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let lower = word.to_ascii_lowercase();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let paren = chars.get(next) == Some(&'(');
            if LABEL_LISTS.contains(&lower.as_str()) && paren {
                i = closing(&chars, next) + 1;
            } else if !paren && !KEYWORDS.contains(&lower.as_str()) && !LABEL_LISTS.contains(&lower.as_str())
            {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The index just past the string starting at `open` (backslash escapes, except in
/// backquoted raw strings).
fn past_string(chars: &[char], open: usize) -> usize {
    let quote = chars[open];
    let mut i = open + 1;
    while i < chars.len() && chars[i] != quote {
        i += if chars[i] == '\\' && quote != '`' { 2 } else { 1 };
    }
    i + 1
}

/// The index of the bracket closing the one at `open` (strings skipped), or the end.
fn closing(chars: &[char], open: usize) -> usize {
    let (up, down) = match chars[open] {
        '{' => ('{', '}'),
        '[' => ('[', ']'),
        _ => ('(', ')'),
    };
    let mut depth = 0;
    let mut i = open;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = past_string(chars, i);
                continue;
            }
            c if c == up => depth += 1,
            c if c == down => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
        i += 1;
    }
    chars.len()
}

/// The metric a `__name__` matcher selects; one that is not `=` (a regex, a negation) is
/// returned as written, which is never a metric name, so the check fails on it.
fn name_matcher(matchers: &str) -> Option<String> {
    let at = matchers.find("__name__")?;
    let rest = matchers[at + "__name__".len()..].trim_start();
    let value = rest
        .strip_prefix('=')
        .filter(|r| !r.starts_with('~'))
        .map(str::trim_start)
        .and_then(|r| {
            let quote = r.chars().next()?;
            let body = &r[quote.len_utf8()..];
            body.find(quote).map(|end| body[..end].to_string())
        });
    Some(value.unwrap_or_else(|| format!("{{__name__{rest}}}")))
}

/// The metrics `expr` names that are not in `known`.
fn unknown_metrics(expr: &str, known: &BTreeSet<String>) -> Vec<String> {
    metric_names(expr)
        .into_iter()
        .filter(|m| !known.contains(m))
        .collect()
}

/// The series names of a Prometheus text exposition (`_bucket`, `_sum`, `_count` as
/// written).
fn exposition_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// The `record:` names of a Prometheus rules file.
fn recorded_names(rules: &str) -> BTreeSet<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record:"))
        .map(|n| n.trim().trim_matches(['"', '\'']).to_string())
        .collect()
}

/// Runs `promtool check rules` on `exprs` (Grafana variables replaced) as recording rules.
fn promtool_check(exprs: &[String]) -> Result<(), String> {
    let mut yaml = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        yaml.push_str(&format!("      - record: dashboard:q{i}\n        expr: |-\n"));
        for line in concrete(expr).lines() {
            yaml.push_str(&format!("          {line}\n"));
        }
    }
    let dir = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
    let file = dir.path().join("dashboard.rules.yml");
    std::fs::write(&file, &yaml).map_err(|e| format!("writing {}: {e}", file.display()))?;
    let out = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&file)
        .output()
        .map_err(|e| format!("promtool (Debian package prometheus) must be installed: {e}"))?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.contains("SUCCESS") {
        Ok(())
    } else {
        Err(format!(
            "promtool check rules failed:\n{said}\n--- rules ---\n{yaml}"
        ))
    }
}

#[test]
fn metric_names_leave_out_functions_keywords_labels_strings_and_durations() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"sum by (model, version) (rate(kiln_requests_total{model=~"a|b", code=~"5.."}[5m])) / ignoring (version) group_left sum by (model) (rate(kiln_requests_total{model=~"x}"}[5m:1m] offset 1h))"#
        ),
        ["kiln_requests_total"]
    );
    assert_eq!(
        names("histogram_quantile(0.99, sum by (le) (rate(kiln_request_duration_seconds_bucket[5m])))"),
        ["kiln_request_duration_seconds_bucket"]
    );
    assert_eq!(
        names(
            "slo:current_burn_rate:ratio{slo=\"latency\"} > bool 1e-3 and on (model) max without (instance) (kiln_sync_nodes) or vector(0)"
        ),
        ["kiln_sync_nodes", "slo:current_burn_rate:ratio"]
    );
    assert_eq!(
        names(r#"count({__name__="kiln_build_info"}) + sum (kiln_models_loaded)"#),
        ["kiln_build_info", "kiln_models_loaded"]
    );
    // A regex on the name cannot be checked: it stays as written, which no metric is.
    assert_eq!(names(r#"{__name__=~"kiln_.*"}"#), [r#"{__name__=~"kiln_.*"}"#]);
}

#[test]
fn a_query_naming_a_metric_kiln_does_not_export_is_caught() {
    let known: BTreeSet<String> = ["kiln_requests_total", "kiln_request_duration_seconds_bucket"]
        .map(String::from)
        .into();
    assert_eq!(
        unknown_metrics(
            &concrete("sum(rate(kiln_requests_total{model=~\"$model\"}[$__rate_interval]))"),
            &known
        ),
        Vec::<String>::new()
    );
    // Made up, and a histogram's base name (only its `_bucket`, `_sum`, `_count` series exist).
    assert_eq!(
        unknown_metrics(
            "rate(kiln_made_up_total[5m]) / rate(kiln_request_duration_seconds[5m])",
            &known
        ),
        ["kiln_made_up_total", "kiln_request_duration_seconds"]
    );
    let exposition =
        "# HELP kiln_x x\n# TYPE kiln_x histogram\nkiln_x_bucket{le=\"+Inf\"} 1\nkiln_x_count 1\n";
    assert_eq!(
        exposition_names(exposition).into_iter().collect::<Vec<_>>(),
        ["kiln_x_bucket", "kiln_x_count"]
    );
    assert!(promtool_check(&["sum(rate(kiln_requests_total[5m])".to_string()]).is_err());
}

#[test]
fn grafana_variables_become_values_prometheus_parses() {
    assert_eq!(
        concrete(r#"rate(x{model=~"$model", version=~"${version:regex}"}[$__rate_interval])"#),
        r#"rate(x{model=~"echo", version=~"echo"}[5m])"#
    );
    assert_eq!(concrete("x[${__range}] $"), "x[5m] $");
    assert_eq!(
        variable_expr(r#"label_values(kiln_requests_total{model=~"$model",code="200"}, version)"#).as_deref(),
        Some(r#"kiln_requests_total{model=~"$model",code="200"}"#)
    );
    assert_eq!(variable_expr("label_values(model)"), None);
}
