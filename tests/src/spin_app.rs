//! The Spin edge in tests: the router (edge-worker/spin, wasm32-wasip2) built once per
//! test run into `target/edge-spin` (a file lock keeps parallel test binaries from
//! building it twice at once), the root spin.toml's model components, and `kiln spin up`
//! as a child process on 127.0.0.1 that is killed when dropped.

use crate::kiln_process::{KilnHome, agent, free_port};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// `target/edge-spin`: the router, vacant.wasm and the bundled app's models.
pub fn out_dir() -> PathBuf {
    crate::root().join("target").join("edge-spin")
}

/// Builds the router and vacant.wasm (once per test process; cargo makes a rebuild with
/// nothing changed a no-op) and returns their paths.
pub fn router() -> (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = out_dir();
            std::fs::create_dir_all(&out).expect("creating target/edge-spin");
            let lock = std::fs::File::create(out.join(".build.lock")).expect("creating the build lock");
            lock.lock().expect("locking target/edge-spin");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.current_dir(crate::root())
                // --locked: the router's own Cargo.lock is committed and a test run must not
                // rewrite it; a change of kiln-api's dependencies updates it in the same commit.
                .args([
                    "build",
                    "--release",
                    "--locked",
                    "--target",
                    "wasm32-wasip2",
                    "--workspace",
                ])
                .args(["--manifest-path", "edge-worker/spin/Cargo.toml", "--target-dir"])
                .arg(&out);
            for var in [
                "RUSTFLAGS",
                "CARGO_ENCODED_RUSTFLAGS",
                "CARGO_TARGET_DIR",
                "CARGO_BUILD_TARGET",
            ] {
                cmd.env_remove(var);
            }
            let status = cmd.status().expect("running cargo build for the Spin router");
            assert!(
                status.success(),
                "building the Spin router (edge-worker/spin) failed"
            );
            let release = out.join("wasm32-wasip2").join("release");
            let router = out.join("kiln_spin.wasm");
            let vacant = out.join("vacant.wasm");
            for (from, to) in [("kiln_spin.wasm", &router), ("kiln_spin_vacant.wasm", &vacant)] {
                let bytes = std::fs::read(release.join(from)).expect("reading the built component");
                if std::fs::read(to).ok().as_deref() != Some(bytes.as_slice()) {
                    std::fs::write(to, bytes).expect("copying the built component");
                }
            }
            drop(lock);
            (router, vacant)
        })
        .clone()
}

/// `kiln export spin --out OUT` of `home`'s registry with the router and vacant.wasm
/// built by [`router`]; returns the export's summary.
pub fn export(home: &KilnHome, out: &Path) -> String {
    let (router, vacant) = router();
    home.run(&[
        "export",
        "spin",
        "--out",
        out.to_str().unwrap_or_default(),
        "--router",
        router.to_str().unwrap_or_default(),
        "--vacant",
        vacant.to_str().unwrap_or_default(),
    ])
}

/// The models the root spin.toml binds: (registry name, example) → `models/<name>-1.wasm`.
pub const BUNDLED: [(&str, &str); 3] = [
    ("house-price", "house_price_forest"),
    ("iris", "iris_logreg"),
    ("mlp", "mlp"),
];

/// Makes the root spin.toml servable: the router, and each bundled model's component
/// (the tests' own compile of the example when `spin build` has not made one).
pub fn bundled_app() -> PathBuf {
    router();
    let models = out_dir().join("models");
    std::fs::create_dir_all(&models).expect("creating target/edge-spin/models");
    for (name, example) in BUNDLED {
        let path = models.join(format!("{name}-1.wasm"));
        if !path.exists() {
            let tmp = models.join(format!(".{name}-1.wasm.{}", std::process::id()));
            std::fs::write(&tmp, crate::component(example)).expect("writing a model component");
            std::fs::rename(&tmp, &path).expect("renaming a model component");
        }
    }
    crate::root().join("spin.toml")
}

/// A running `kiln spin up`.
pub struct SpinServer {
    child: Child,
    pub addr: String,
    log: Arc<Mutex<String>>,
}

/// An HTTP answer with its headers.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// A response header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Starts `kiln spin up --from MANIFEST` with extra environment variables (e.g.
/// `SPIN_VARIABLE_KILN_ROUTES`) and waits until it answers `/v2/health/ready`.
pub fn spin_up(home: &KilnHome, manifest: &Path, env: &[(&str, &str)]) -> SpinServer {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = home.command();
    cmd.args(["spin", "up", "--from"])
        .arg(manifest)
        .args(["--listen", &addr])
        .env("KILN_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("starting kiln spin up");
    let log = Arc::new(Mutex::new(String::new()));
    let streams: Vec<Box<dyn std::io::Read + Send>> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    .collect();
    for stream in streams {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if let Ok(mut l) = log.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
    }
    let mut server = SpinServer { child, addr, log };
    let started = Instant::now();
    loop {
        if let Ok(r) = agent().get(server.url("/v2/health/ready")).call()
            && r.status() == 200
        {
            return server;
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("kiln spin up exited with {status}:\n{}", server.log());
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "kiln spin up did not become ready:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl SpinServer {
    /// `http://ADDR/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything the server printed so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Sends a request (`GET` when `body` is None).
    pub fn send(&self, method: &str, path: &str, body: Option<&str>, headers: &[(&str, &str)]) -> Answer {
        crate::spin_app::send(&self.url(path), method, body, headers)
    }
}

/// Sends one request to a URL and reads the whole answer.
pub fn send(url: &str, method: &str, body: Option<&str>, headers: &[(&str, &str)]) -> Answer {
    let agent = agent();
    let result = match (method, body) {
        ("GET", _) => {
            let mut req = agent.get(url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.call()
        }
        (_, body) => {
            let mut req = agent.post(url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.send(body.unwrap_or(""))
        }
    };
    let mut r = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    Answer {
        status: r.status().as_u16(),
        headers: r
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: r.body_mut().read_to_string().unwrap_or_default(),
    }
}

impl Drop for SpinServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
