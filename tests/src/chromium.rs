//! Real headless Chromium (Debian's `chromium` + `chromium-driver`), driven through
//! chromedriver's W3C WebDriver HTTP API: open a page, run async scripts in it.

use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian puts the browser and its driver (`CHROMIUM` / `CHROMEDRIVER` override).
fn binary(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

/// A chromedriver process with one headless Chromium session; both end on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session.
    pub fn start() -> Browser {
        let driver_bin = binary("CHROMEDRIVER", "/usr/bin/chromedriver");
        let chromium = binary("CHROMIUM", "/usr/bin/chromium");
        assert!(
            std::path::Path::new(&driver_bin).exists() && std::path::Path::new(&chromium).exists(),
            "the browser tests need Debian's chromium and chromium-driver \
             (apt-get install chromium chromium-driver); .ci/run installs them"
        );
        let port = crate::kiln_process::free_port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while agent(Duration::from_secs(2))
            .get(format!("{base}/status"))
            .call()
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().expect("profile dir");
        // Flags as the machine notes recommend: no sandbox as root, and no background
        // networking, which the closed network would refuse over and over.
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            _profile: profile,
        };
        let reply = browser.call("POST", "/session", Some(caps));
        browser.session = reply["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session from chromedriver: {reply}"))
            .to_string();
        browser.call(
            "POST",
            &format!("/session/{}/timeouts", browser.session),
            Some(json!({"script": 300_000, "pageLoad": 120_000})),
        );
        browser
    }

    /// One WebDriver command; returns its `value`, panicking on a WebDriver error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let value = self.try_call(method, path, body);
        match value {
            Ok(v) => v,
            Err(e) => panic!("WebDriver {method} {path}: {e}"),
        }
    }

    fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let agent = agent(Duration::from_secs(600));
        let result = match (method, body) {
            ("POST", Some(b)) => agent.post(&url).send_json(&b),
            ("POST", None) => agent.post(&url).send_json(json!({})),
            ("DELETE", _) => agent.delete(&url).call(),
            _ => agent.get(&url).call(),
        };
        let mut r = result.map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        let v: Value = r
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_json()
            .map_err(|e| format!("HTTP {status}, unreadable answer: {e}"))?;
        if status != 200 {
            return Err(format!("HTTP {status}: {}", v["value"]));
        }
        Ok(v["value"].clone())
    }

    /// Opens `url` and waits for it to load.
    pub fn open(&self, url: &str) {
        self.call(
            "POST",
            &format!("/session/{}/url", self.session),
            Some(json!({"url": url})),
        );
    }

    /// Runs `body` as an async function in the page (`args` is `arguments`-style: the
    /// function sees them as `args`) and returns what it resolves to, as JSON. A rejection
    /// comes back as `Err(message)`.
    pub fn run(&self, body: &str, args: Value) -> Result<Value, String> {
        let script = format!(
            "const done = arguments[arguments.length - 1]; const args = arguments[0];\n\
             (async () => {{ {body} }})().then(\n\
               (v) => done({{ ok: v === undefined ? null : v }}),\n\
               (e) => done({{ err: String((e && e.message) || e) }}));"
        );
        let v = self.call(
            "POST",
            &format!("/session/{}/execute/async", self.session),
            Some(json!({"script": script, "args": [args]})),
        );
        match v.get("err") {
            Some(e) => Err(e.as_str().unwrap_or_default().to_string()),
            None => Ok(v.get("ok").cloned().unwrap_or(Value::Null)),
        }
    }

    /// [`Browser::run`] that must succeed.
    pub fn eval(&self, body: &str, args: Value) -> Value {
        self.run(body, args)
            .unwrap_or_else(|e| panic!("script failed in Chromium: {e}\n{body}"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.try_call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
