//! A real Prometheus Alertmanager (Debian's `prometheus-alertmanager`) on 127.0.0.1 for
//! the scenarios that check Kiln's alerts: loopback only, gossip off, fast grouping; the
//! alerts it holds are read from its v2 API.

use crate::kiln_process::free_port;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = "/usr/bin/prometheus-alertmanager";

/// A running Alertmanager; killed on drop.
pub struct Alertmanager {
    child: Child,
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Starts one and waits until `/-/ready` answers.
    pub fn start() -> Alertmanager {
        assert!(
            std::path::Path::new(BINARY).exists(),
            "{BINARY} is missing: install the Debian package prometheus-alertmanager (.ci/run does)"
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = dir.path().join("alertmanager.yml");
        // A receiver that sends nowhere: the scenarios read the alerts back from the API.
        std::fs::write(
            &config,
            "global:\n  resolve_timeout: 5s\nroute:\n  receiver: none\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: none\n",
        )
        .expect("writing alertmanager.yml");
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let child = Command::new(BINARY)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {BINARY}: {e}"));
        let am = Alertmanager {
            child,
            url,
            _dir: dir,
        };
        let limit = Instant::now() + Duration::from_secs(30);
        while ureq::get(format!("{}/-/ready", am.url)).call().is_err() {
            assert!(Instant::now() < limit, "Alertmanager did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        am
    }

    /// The active alerts it holds (`GET /api/v2/alerts?active=true&silenced=false&inhibited=false`).
    pub fn active(&self) -> Vec<Value> {
        let url = format!(
            "{}/api/v2/alerts?active=true&silenced=false&inhibited=false",
            self.url
        );
        match ureq::get(&url).call() {
            Ok(mut r) => serde_json::from_str::<Value>(&r.body_mut().read_to_string().unwrap_or_default())
                .ok()
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// The active alert named `alertname` whose labels include `labels`, if any.
    pub fn find(&self, alertname: &str, labels: &[(&str, &str)]) -> Option<Value> {
        self.active().into_iter().find(|a| {
            a["labels"]["alertname"] == alertname && labels.iter().all(|(k, v)| a["labels"][*k] == *v)
        })
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
