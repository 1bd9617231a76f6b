//! Kiln's Alertmanager client against a real Alertmanager (Debian's
//! `prometheus-alertmanager`, 0.25 on bookworm) on 127.0.0.1, with a webhook receiver this
//! test runs itself: fired alerts show up active and reach the webhook firing; resolved
//! and reconciled-away alerts reach it resolved; resends keep an alert active past the
//! `endsAt` of any single POST; a dead Alertmanager only counts failures.

#![cfg(feature = "tls")]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_node_api::alerts::{Alert, Alerter, AlerterConfig, Severity};
use kiln_node_api::retry::RetryPolicy;
use serde_json::{Value, json};

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

/// A webhook receiver: records the JSON body of every POST.
struct Webhook {
    url: String,
    received: Arc<Mutex<Vec<Value>>>,
}

impl Webhook {
    fn start() -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the webhook receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("its address"));
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Some(body) = read_post(stream) {
                    sink.lock().unwrap().push(body);
                }
            }
        });
        Webhook { url, received }
    }

    /// Whether a notification carried an alert with exactly `labels` in `status`.
    fn saw(&self, labels: &Value, status: &str) -> bool {
        self.received.lock().unwrap().iter().any(|message| {
            message["alerts"].as_array().is_some_and(|alerts| {
                alerts
                    .iter()
                    .any(|a| a["labels"] == *labels && a["status"] == status)
            })
        })
    }
}

/// Reads one HTTP request with a Content-Length body, answers 200 and closes.
fn read_post(mut stream: TcpStream) -> Option<Value> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let body = loop {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if data.len() >= end + 4 + length {
            break data[end + 4..end + 4 + length].to_vec();
        }
    };
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    serde_json::from_slice(&body).ok()
}

/// A running Alertmanager, killed when dropped.
struct Alertmanager {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Starts one routing everything to `webhook` within a second (group_wait and
    /// group_interval 1s), and waits until it is ready.
    fn start(webhook: &str) -> Alertmanager {
        assert!(
            Path::new(ALERTMANAGER).exists(),
            "{ALERTMANAGER} is missing: install the Debian package prometheus-alertmanager \
             (apt-get install --no-install-recommends prometheus-alertmanager)"
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  resolve_timeout: 5s\n\
                 route:\n  receiver: kiln-test\n  group_by: ['alertname', 'model']\n  \
                 group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
                 receivers:\n  - name: kiln-test\n    webhook_configs:\n      - url: {webhook}\n        \
                 send_resolved: true\n"
            ),
        )
        .expect("write alertmanager.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("alertmanager.log")).expect("create the log");
        let child = Command::new(ALERTMANAGER)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // No HA gossip: its default listens on 0.0.0.0:9094.
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus-alertmanager");
        let mut am = Alertmanager {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let ready = format!("{}/-/ready", am.url);
        let deadline = Instant::now() + Duration::from_secs(15);
        while ureq::get(&ready).call().is_err() {
            if let Ok(Some(status)) = am.child.try_wait() {
                panic!("Alertmanager exited ({status}):\n{}", am.log());
            }
            assert!(
                Instant::now() < deadline,
                "Alertmanager not ready after 15 s:\n{}",
                am.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        am
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("alertmanager.log")).unwrap_or_default()
    }

    /// `GET /api/v2/alerts`: the alerts it holds that have not ended.
    fn alerts(&self) -> Vec<Value> {
        let mut response = ureq::get(&format!("{}/api/v2/alerts", self.url))
            .call()
            .expect("GET /api/v2/alerts");
        let text = response.body_mut().read_to_string().expect("read the alerts");
        serde_json::from_str(&text).expect("alerts as JSON")
    }

    /// The alert with exactly `labels`, if it holds one.
    fn alert(&self, labels: &Value) -> Option<Value> {
        self.alerts().into_iter().find(|a| a["labels"] == *labels)
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on (bound, then released).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address").port()
}

/// Polls `check` every 50 ms until it gives a value, for at most `within`.
fn wait_for<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn labels(alert: &Alert) -> Value {
    serde_json::to_value(&alert.labels).unwrap()
}

/// Retries short enough for a test.
const QUICK: RetryPolicy = RetryPolicy {
    max_attempts: 2,
    base_delay: Duration::from_millis(20),
    max_delay: Duration::from_millis(100),
};

#[test]
fn alerts_fire_resolve_reconcile_and_stay_active_through_resends_in_a_real_alertmanager() {
    let webhook = Webhook::start();
    let am = Alertmanager::start(&webhook.url);
    let mut config = AlerterConfig::new([am.url.clone()]);
    // Every POST says `endsAt = now + 4 s`: only the resends keep an alert active longer.
    config.resend_interval = Duration::from_secs(1);
    config.retry = QUICK;
    let alerter = Alerter::start(config).unwrap();

    let drift = Alert::new("KilnDataDrift", Severity::Warning)
        .label("model", "iris")
        .annotation("summary", "iris: inputs drifted (psi 0.31)");
    let node = Alert::new("KilnNodeFailing", Severity::Page)
        .label("node", "node-b")
        .generator_url(format!("{}/sync/v1/status", am.url));
    let load = Alert::new("KilnVersionFailedToLoad", Severity::Critical)
        .label("model", "iris")
        .label("version", 3);
    let started = Instant::now();
    alerter.fire(drift.clone());
    alerter.reconcile("nodes", vec![node.clone()]);
    alerter.fire(load.clone());

    // Active in Alertmanager, with our labels and our fingerprint.
    for alert in [&drift, &node, &load] {
        let held = wait_for("the alerts in GET /api/v2/alerts", Duration::from_secs(5), || {
            am.alert(&labels(alert))
        });
        assert_eq!(held["status"]["state"], "active", "{held}");
        assert_eq!(held["fingerprint"], alert.fingerprint().to_string(), "{held}");
        assert_eq!(held["annotations"], json!(alert.annotations), "{held}");
    }
    assert_eq!(
        am.alert(&labels(&node)).unwrap()["generatorURL"],
        json!(format!("{}/sync/v1/status", am.url))
    );
    // And notified firing (group_wait 1s).
    for alert in [&drift, &node, &load] {
        wait_for("firing notifications", Duration::from_secs(10), || {
            webhook.saw(&labels(alert), "firing").then_some(())
        });
    }

    // Resolved by name: notified resolved, gone from the active list.
    assert!(alerter.resolve(&drift));
    wait_for("the resolved drift notification", Duration::from_secs(10), || {
        webhook.saw(&labels(&drift), "resolved").then_some(())
    });
    assert!(am.alert(&labels(&drift)).is_none());

    // Reconciled away: the "nodes" source no longer reports node-b.
    alerter.reconcile("nodes", vec![]);
    wait_for("the resolved node notification", Duration::from_secs(10), || {
        webhook.saw(&labels(&node), "resolved").then_some(())
    });
    assert!(am.alert(&labels(&node)).is_none());

    // The load failure was never resolved: 7 s after it fired (past resolve_timeout, and
    // past the 4 s `endsAt` of any single POST), the resends keep it active.
    let first = am.alert(&labels(&load)).expect("still held");
    std::thread::sleep(Duration::from_secs(7).saturating_sub(started.elapsed()));
    let later = am
        .alert(&labels(&load))
        .expect("the load failure is still active after 7 s");
    assert_eq!(later["status"]["state"], "active", "{later}");
    assert_ne!(later["updatedAt"], first["updatedAt"], "resent since");
    assert!(!webhook.saw(&labels(&load), "resolved"));

    let status = alerter.status();
    assert_eq!(
        (status.active, status.failed_posts, status.invalid),
        (1, 0, 0),
        "{status:?}"
    );
    // Three firing, two resolves, and at least five resends of the load failure.
    assert!(status.sent >= 10, "{status:?}");
    assert_eq!(status.alertmanagers[0].target.breaker, "closed");
    assert_eq!(alerter.active(), vec![load]);
}

#[test]
fn an_unreachable_alertmanager_counts_failures_without_blocking_fire() {
    let mut config = AlerterConfig::new([format!("http://127.0.0.1:{}", free_port())]);
    config.resend_interval = Duration::from_secs(1);
    config.retry = QUICK;
    let alerter = Alerter::start(config).unwrap();

    let started = Instant::now();
    for model in ["iris", "wine", "digits"] {
        alerter.fire(Alert::new("KilnDataDrift", Severity::Warning).label("model", model));
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(100),
        "fire waited on the network: {took:?}"
    );

    let status = wait_for("failed posts", Duration::from_secs(10), || {
        let s = alerter.status();
        (s.failed_posts >= 1).then_some(s)
    });
    assert_eq!((status.sent, status.active), (0, 3), "{status:?}");
    let am = &status.alertmanagers[0];
    assert!(
        am.target.retries >= 1,
        "connection refused is retried: {status:?}"
    );
    let error = am.last_error.as_deref().unwrap_or_default();
    assert!(!error.is_empty() && !error.starts_with("HTTP"), "{error}");
}
