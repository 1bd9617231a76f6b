//! Where Kiln is a client it retries with backoff and keeps a circuit breaker per target,
//! and both show in the status and the metrics:
//! - the alert webhook answers 503 (with `Retry-After: 1`), 503, then 204: the alert
//!   arrives after two retries, the same alert (same `id` and `Idempotency-Key`) each time,
//!   the wait honours `Retry-After`, and the sync status and metrics count two retries;
//! - a node that is down: the sync service retries each call, the node's breaker opens
//!   (status and `kiln_client_breaker_state`), and closes when the node is back;
//! - MLflow: a 503 and a 429 are retried (after its `Retry-After`), a 404 is not; a
//!   tracking server that keeps failing opens the breaker and calls fail at once, in the
//!   client and in the sync service's status and metrics;
//! - a node whose sync service is down retries its heartbeat and opens its breaker to the
//!   service (the node's `/metrics`), which closes when the service is back.
//!
//! The webhook and MLflow are tiny HTTP servers on 127.0.0.1 in this file that answer
//! from a script and record every request.

use kiln_tests::fleet::{Fleet, Load, echo_body, wait_for};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request a scripted server received.
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An answer: status, extra headers, body.
type Answer = (u16, Vec<(&'static str, String)>, String);

/// An HTTP/1.1 server on 127.0.0.1 that answers request number `i` (0-based) with
/// `script(i, path)` and records every request.
struct Scripted {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    fn start(script: impl Fn(usize, &str) -> Answer + Send + 'static) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                    continue;
                }
                let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
                let mut headers = Vec::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.trim_end().split_once(':') {
                        headers.push((k.trim().to_string(), v.trim().to_string()));
                    }
                }
                let length = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0usize);
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let i = {
                    let mut seen = log.lock().unwrap_or_else(|p| p.into_inner());
                    seen.push(Seen {
                        at: Instant::now(),
                        path: path.clone(),
                        headers,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    });
                    seen.len() - 1
                };
                let (status, extra, body) = script(i, &path);
                let mut response = format!(
                    "HTTP/1.1 {status} Scripted\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                    body.len()
                );
                for (k, v) in extra {
                    response.push_str(&format!("{k}: {v}\r\n"));
                }
                response.push_str("\r\n");
                response.push_str(&body);
                let mut s = stream;
                let _ = s.write_all(response.as_bytes());
            }
        });
        Scripted { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The value of the sample `name{labels}` in a Prometheus text exposition (labels in any
/// order).
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric_name, rest) = series.split_once('{').unwrap_or((series, "}"));
        if metric_name != name {
            return None;
        }
        let set = rest.trim_end_matches('}');
        labels
            .iter()
            .all(|(k, v)| set.split(',').any(|pair| pair == format!("{k}=\"{v}\"")))
            .then(|| value.parse().ok())
            .flatten()
    })
}

/// `GET /sync/v1/status` of the fleet's sync service.
fn sync_status(fleet: &Fleet) -> Value {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let url = format!("http://{}/sync/v1/status", fleet.sync_addr);
    let Ok(mut r) = agent
        .get(&url)
        .header("authorization", &format!("Bearer {}", fleet.admin))
        .call()
    else {
        return Value::Null;
    };
    serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default()).unwrap_or(Value::Null)
}

/// The sync status entry of node `name`.
fn node_entry(fleet: &Fleet, name: &str) -> Value {
    sync_status(fleet)["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["node"] == name).cloned())
        .unwrap_or(Value::Null)
}

/// The sync status entry of client target `name` (`webhook`, `mlflow`).
fn client_entry(fleet: &Fleet, name: &str) -> Value {
    sync_status(fleet)["clients"]
        .as_array()
        .and_then(|c| c.iter().find(|t| t["target"] == name).cloned())
        .unwrap_or(Value::Null)
}

fn sync_metrics(fleet: &Fleet) -> String {
    fleet
        .sync
        .as_ref()
        .and_then(|s| s.try_get("/metrics"))
        .map(|r| r.body)
        .unwrap_or_default()
}

#[test]
fn the_alert_webhook_is_retried_after_503s_honouring_retry_after_and_the_alert_arrives_once() {
    let hook = Scripted::start(|i, _| match i {
        0 => (503, vec![("retry-after", "1".to_string())], String::new()),
        1 => (503, vec![], String::new()),
        _ => (204, vec![], String::new()),
    });
    let url = format!("{}/alerts", hook.url);
    let fleet = Fleet::start(1, &["--alert-webhook", &url]);
    // The webhook is a target from the start, with nothing counted.
    let webhook = client_entry(&fleet, "webhook");
    assert_eq!(webhook["breaker"], "closed", "{webhook:#}");
    assert_eq!(webhook["retries"], 0, "{webhook:#}");

    // A release that fails on part of its inputs is rolled back by itself, which alerts.
    let v1 = fleet.deploy_echo_v1();
    let v2 = fleet.register("echo", "faulty.wasm", &kiln_tests::component("echo4_faulty"));
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
        "--max-error-rate",
        "0.05",
    ]);
    let load = Load::start(
        fleet.addrs(),
        "/v2/models/echo/infer".into(),
        vec![echo_body(1.0), echo_body(-3.0)],
        2,
    );
    fleet.promote("echo", v2);
    fleet.wait_rollout("echo", "rolled_back", Duration::from_secs(60));
    load.stop();

    let seen = wait_for(
        Duration::from_secs(20),
        "the alert to be accepted on the third attempt",
        || Some(hook.seen()).filter(|s| s.len() >= 3),
        || format!("{:#?}\n{}", hook.seen(), fleet.sync_log_tail()),
    );
    // No fourth call: the third was accepted.
    std::thread::sleep(Duration::from_millis(500));
    let seen_after = hook.seen();
    assert_eq!(seen_after.len(), 3, "{seen_after:#?}");
    let first: Value = serde_json::from_str(&seen[0].body).expect("alert JSON");
    assert_eq!(first["event"], "rollout.rolled_back");
    assert_eq!(first["to_version"], v2);
    assert_eq!(first["from_version"], v1);
    let id = first["id"].as_str().expect("an alert id").to_string();
    for s in &seen {
        assert_eq!(s.path, "/alerts");
        assert_eq!(s.body, seen[0].body, "every attempt sends the same alert");
        assert_eq!(s.header("idempotency-key"), Some(id.as_str()));
    }
    let waited = seen[1].at.duration_since(seen[0].at);
    assert!(
        waited >= Duration::from_millis(950),
        "the retry came {waited:?} after a 503 with Retry-After: 1"
    );

    let webhook = client_entry(&fleet, "webhook");
    assert_eq!(webhook["retries"], 2, "{webhook:#}");
    assert_eq!(webhook["breaker"], "closed", "{webhook:#}");
    assert_eq!(webhook["failed_calls"], 0, "{webhook:#}");
    let text = sync_metrics(&fleet);
    let labels = [("target", "webhook"), ("kind", "webhook")];
    assert_eq!(
        metric(&text, "kiln_client_retries_total", &labels),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "kiln_client_breaker_state", &labels),
        Some(0.0),
        "{text}"
    );
}

#[test]
fn a_node_that_is_down_is_retried_and_its_breaker_opens_then_closes_in_status_and_metrics() {
    let mut fleet = Fleet::start(1, &[]);
    let v1 = fleet.deploy_echo_v1();
    let labels = [("target", "edge-1"), ("kind", "node")];
    let text = sync_metrics(&fleet);
    assert_eq!(
        metric(&text, "kiln_client_breaker_state", &labels),
        Some(0.0),
        "{text}"
    );
    assert_eq!(node_entry(&fleet, "edge-1")["retries"], 0);

    fleet.kill_node(0);
    wait_for(
        Duration::from_secs(30),
        "the node's breaker to open in the status and the metrics",
        || {
            let node = node_entry(&fleet, "edge-1");
            let gauge = metric(&sync_metrics(&fleet), "kiln_client_breaker_state", &labels);
            (node["breaker"] == "open" && gauge == Some(2.0)).then_some(())
        },
        || format!("{:#}\n{}", node_entry(&fleet, "edge-1"), fleet.sync_log_tail()),
    );
    // Each failed check retried its calls before counting as one failure.
    let node = node_entry(&fleet, "edge-1");
    let retries = node["retries"].as_u64().unwrap_or(0);
    let failures = node["failures"].as_u64().unwrap_or(0);
    assert!(failures >= 5, "{node:#}");
    assert!(
        retries >= failures,
        "{retries} retries over {failures} failed checks: {node:#}"
    );
    let counted = metric(&sync_metrics(&fleet), "kiln_client_retries_total", &labels).unwrap_or(0.0);
    assert!(counted >= retries as f64, "metric {counted}, status {retries}");
    // `kiln sync status` (the registry's record) agrees.
    let listed = fleet.status();
    let edge = listed["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == "edge-1").cloned())
        .unwrap_or(Value::Null);
    assert_eq!(edge["breaker"], "open", "{listed:#}");

    fleet.start_node(0);
    wait_for(
        Duration::from_secs(30),
        "the breaker to close",
        || {
            let node = node_entry(&fleet, "edge-1");
            let gauge = metric(&sync_metrics(&fleet), "kiln_client_breaker_state", &labels);
            (node["breaker"] == "closed" && node["status"] == "converged" && gauge == Some(0.0)).then_some(())
        },
        || format!("{:#}\n{}", node_entry(&fleet, "edge-1"), fleet.sync_log_tail()),
    );
    fleet.wait_all_serving("echo", &echo_body(1.0), v1, Duration::from_secs(30));
}

#[test]
fn mlflow_calls_are_retried_on_503_and_429_never_on_404_and_a_failing_server_opens_the_breaker() {
    // search: 503, then 429 with Retry-After: 1, then an answer; any get: 404.
    let mlflow = Scripted::start(|i, path| {
        if path.contains("registered-models/get") {
            let body = r#"{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Registered Model with name=nope not found"}"#;
            return (404, vec![], body.to_string());
        }
        match i {
            0 => (503, vec![], "busy".to_string()),
            1 => (
                429,
                vec![("retry-after", "1".to_string())],
                "slow down".to_string(),
            ),
            _ => (
                200,
                vec![],
                r#"{"registered_models": [{"name": "house"}]}"#.to_string(),
            ),
        }
    });
    let client = kiln_mlflow::MlflowClient::new(&mlflow.url).expect("client");
    let models = client
        .search_registered_models(None)
        .expect("the third attempt answers");
    assert_eq!(models.len(), 1);
    let seen = mlflow.seen();
    assert_eq!(seen.len(), 3, "{seen:#?}");
    let waited = seen[2].at.duration_since(seen[1].at);
    assert!(
        waited >= Duration::from_millis(950),
        "retried {waited:?} after Retry-After: 1"
    );
    assert_eq!(client.target().status().retries, 2);

    let missing = client.get_registered_model("nope").expect_err("404");
    assert!(missing.is_not_found(), "{missing}");
    assert_eq!(mlflow.seen().len(), 4, "a 404 is not retried");
    assert_eq!(client.target().status().retries, 2);

    // A tracking server that always fails: five failed calls open the breaker; the next
    // call fails at once without a request.
    let down = Scripted::start(|_, _| (502, vec![], "bad gateway".to_string()));
    let client = kiln_mlflow::MlflowClient::new(&down.url).expect("client");
    for _ in 0..5 {
        let e = client.search_registered_models(None).expect_err("502");
        assert!(e.is_transient(), "{e}");
    }
    assert_eq!(down.seen().len(), 20, "four attempts per call");
    let refused = client.search_registered_models(None).expect_err("breaker open");
    assert!(
        matches!(refused, kiln_mlflow::MlflowError::Unavailable { .. }),
        "{refused}"
    );
    assert!(refused.is_transient());
    assert_eq!(down.seen().len(), 20, "no request while the breaker is open");
    let status = client.target().status();
    assert_eq!(
        (status.breaker.as_str(), status.retries),
        ("open", 15),
        "{status:?}"
    );

    // The sync service watching that server shows its breaker and retries.
    let fleet = Fleet::start(0, &["--mlflow", &down.url, "--mlflow-poll", "200ms"]);
    let labels = [("target", "mlflow"), ("kind", "mlflow")];
    wait_for(
        Duration::from_secs(60),
        "the sync service's MLflow breaker to open",
        || {
            let entry = client_entry(&fleet, "mlflow");
            let gauge = metric(&sync_metrics(&fleet), "kiln_client_breaker_state", &labels);
            (entry["breaker"] == "open" && gauge == Some(2.0)).then_some(entry)
        },
        || format!("{:#}\n{}", client_entry(&fleet, "mlflow"), fleet.sync_log_tail()),
    );
    let retries = metric(&sync_metrics(&fleet), "kiln_client_retries_total", &labels).unwrap_or(0.0);
    assert!(retries >= 15.0, "{retries}");
}

#[test]
fn a_node_retries_its_heartbeat_and_opens_its_breaker_while_the_sync_service_is_down() {
    let mut fleet = Fleet::start(1, &[]);
    let labels = [("target", "sync"), ("kind", "sync")];
    let node_metrics = |fleet: &Fleet| fleet.node(0).get("/metrics").body;
    assert_eq!(
        metric(&node_metrics(&fleet), "kiln_client_breaker_state", &labels),
        Some(0.0),
        "{}",
        node_metrics(&fleet)
    );
    fleet.kill_sync();
    wait_for(
        Duration::from_secs(30),
        "the node's breaker to the sync service to open",
        || (metric(&node_metrics(&fleet), "kiln_client_breaker_state", &labels) == Some(2.0)).then_some(()),
        || node_metrics(&fleet),
    );
    let retries = metric(&node_metrics(&fleet), "kiln_client_retries_total", &labels).unwrap_or(0.0);
    assert!(
        retries >= 6.0,
        "two retries per failed heartbeat, three heartbeats: {retries}"
    );
    fleet.start_sync();
    wait_for(
        Duration::from_secs(30),
        "the node's breaker to close once the sync service is back",
        || (metric(&node_metrics(&fleet), "kiln_client_breaker_state", &labels) == Some(0.0)).then_some(()),
        || node_metrics(&fleet),
    );
    wait_for(
        Duration::from_secs(30),
        "the node to be seen again",
        || {
            let node = node_entry(&fleet, "edge-1");
            node["seen_seconds_ago"]
                .as_f64()
                .is_some_and(|s| s < 2.0)
                .then_some(())
        },
        || format!("{:#}", sync_status(&fleet)),
    );
}
