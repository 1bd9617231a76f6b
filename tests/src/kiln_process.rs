//! Runs the real `kiln` binary: CLI commands against a `$KILN_HOME`, and `kiln serve`
//! / `kiln up` as a child process on 127.0.0.1 that is killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The `kiln` binary of this checkout. `cargo test --workspace` has just built it (the
/// runtime's own integration tests need it); it is rebuilt here only when a source it is
/// made from is newer, e.g. after an edit followed by `cargo test -p kiln-tests`. (A
/// `cargo build` from here would resolve features without the test targets and rebuild
/// part of the dependency tree a second time.)
pub fn kiln_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::root().join("target"));
        let bin = target.join("debug").join("kiln");
        let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
        let sources = [
            "runtime",
            "registry-sync",
            "guest-models",
            // kiln links kiln-api, kiln-cloudflare (edge-worker/) and kiln-node-api too.
            "edge-worker/core/src",
            "edge-worker/cloudflare/src",
            "node-api",
            "monitor",
            "Cargo.lock",
            "Cargo.toml",
        ]
        .iter()
        .filter_map(|p| newest_mtime(&crate::root().join(p)))
        .max();
        if built.is_none() || sources > built {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--quiet", "--locked", "--bin", "kiln"])
                .current_dir(crate::root())
                .status()
                .expect("running cargo build --bin kiln");
            assert!(status.success(), "cargo build --bin kiln failed");
        }
        bin
    })
    .clone()
}

/// `PATH` with the directory of [`kiln_bin`] first, for scripts that call `kiln` (the
/// README's tours put `target/debug` on PATH themselves, which is the same binary unless
/// `CARGO_TARGET_DIR` points elsewhere).
pub fn path_with_kiln() -> String {
    let bin = kiln_bin();
    let dir = bin.parent().map(|d| d.display().to_string()).unwrap_or_default();
    format!("{dir}:{}", std::env::var("PATH").unwrap_or_default())
}

/// The newest modification time of a file or of any file below a directory (skipping
/// `target`-like build output, which has none here).
fn newest_mtime(path: &Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_file() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| newest_mtime(&e.path()))
        .max()
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port")
}

/// A `$KILN_HOME` in a temporary directory sharing the tests' AOT cache.
pub struct KilnHome {
    pub dir: tempfile::TempDir,
}

impl KilnHome {
    /// An empty home.
    pub fn new() -> KilnHome {
        KilnHome {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// The home directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A `kiln` command with this home and the shared AOT cache.
    pub fn command(&self) -> Command {
        let mut c = Command::new(kiln_bin());
        c.env("KILN_HOME", self.path())
            .env("KILN_CACHE_DIR", crate::test_cache_dir().join("aot"))
            .env("KILN_ACTOR", "test")
            .env_remove("KILN_LOG");
        c
    }

    /// Runs `kiln ARGS`, asserting success; returns stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.run_raw(args);
        assert!(
            out.status.success(),
            "kiln {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `kiln ARGS` and returns whatever happened.
    pub fn run_raw(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("running kiln")
    }

    /// Registers an example's component (compiled once per checkout) under `name`,
    /// returning the version number.
    pub fn register_example(&self, example: &str, name: &str) -> u64 {
        let wasm = crate::component(example);
        let path = self.path().join(format!("{example}.wasm"));
        std::fs::write(&path, wasm).expect("writing the component");
        let out = self.run(&[
            "models",
            "register",
            path.to_str().unwrap_or_default(),
            "--name",
            name,
            "--json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        v["version"]
            .as_u64()
            .unwrap_or_else(|| panic!("no version in {out}"))
    }

    /// Starts `kiln serve` (or another serving subcommand) on a free port and waits
    /// until `/v2/health/ready` answers 200.
    pub fn serve(&self, subcommand: &str, extra: &[&str]) -> Server {
        let addr = format!("127.0.0.1:{}", free_port());
        self.serve_on(subcommand, &addr, extra)
    }

    /// Starts `kiln serve` (or another serving subcommand) on `addr` and waits until
    /// `/v2/health/ready` answers 200.
    pub fn serve_on(&self, subcommand: &str, addr: &str, extra: &[&str]) -> Server {
        let mut args = vec![subcommand, "--listen", addr];
        args.extend_from_slice(extra);
        let server = self.spawn(&args, addr);
        server.wait_ready(Duration::from_secs(600));
        server
    }

    /// Starts `kiln ARGS` as a long-running process answering on `addr`, without waiting.
    pub fn spawn(&self, args: &[&str], addr: &str) -> Server {
        let mut command = self.command();
        command.args(args).env("KILN_LOG", "info");
        Server::spawn_command(command, addr)
    }
}

impl Default for KilnHome {
    fn default() -> Self {
        KilnHome::new()
    }
}

impl Server {
    /// Starts any server process answering on `addr` (kiln, workerd), collecting its
    /// output, without waiting.
    pub fn spawn_command(mut command: Command, addr: &str) -> Server {
        let addr = addr.to_string();
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {:?}: {e}", command.get_program()));
        let log = Arc::new(Mutex::new(String::new()));
        let stdout = Arc::new(Mutex::new(String::new()));
        for (stream, own) in [
            (
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
                Some(stdout.clone()),
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
                None,
            ),
        ] {
            let Some(stream) = stream else { continue };
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    for buf in [Some(&log), own.as_ref()].into_iter().flatten() {
                        if let Ok(mut l) = buf.lock() {
                            l.push_str(&line);
                            l.push('\n');
                        }
                    }
                }
            });
        }
        Server {
            child,
            addr,
            log,
            stdout,
        }
    }
}

/// A running `kiln serve`.
pub struct Server {
    pub child: Child,
    pub addr: String,
    log: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// An HTTP client that returns 4xx/5xx answers instead of failing on them.
pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

impl Server {
    /// `http://ADDR`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything the server printed so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// What the server printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits until `/v2/health/ready` answers 200.
    pub fn wait_ready(&self, limit: Duration) {
        let started = Instant::now();
        loop {
            if let Ok(r) = agent().get(self.url("/v2/health/ready")).call()
                && r.status() == 200
            {
                return;
            }
            assert!(
                started.elapsed() < limit,
                "kiln did not become ready in {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET a path; None when nothing answers (yet).
    pub fn try_get(&self, path: &str) -> Option<Reply> {
        let mut r = agent().get(self.url(path)).call().ok()?;
        Some(Reply {
            status: r.status().as_u16(),
            body: r.body_mut().read_to_string().unwrap_or_default(),
        })
    }

    /// GET a path.
    pub fn get(&self, path: &str) -> Reply {
        let mut r = agent().get(self.url(path)).call().expect("GET");
        Reply {
            status: r.status().as_u16(),
            body: r.body_mut().read_to_string().unwrap_or_default(),
        }
    }

    /// POST a body to a path with extra headers; also returns the response headers.
    pub fn post_with(
        &self,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (Reply, Vec<(String, String)>) {
        let mut req = agent().post(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        match req.send(body) {
            Ok(mut r) => {
                let hs = r
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                (
                    Reply {
                        status: r.status().as_u16(),
                        body: r.body_mut().read_to_string().unwrap_or_default(),
                    },
                    hs,
                )
            }
            Err(e) => (
                Reply {
                    status: 0,
                    body: e.to_string(),
                },
                vec![],
            ),
        }
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// POST a body to a path.
    pub fn post(&self, path: &str, body: &str) -> Reply {
        let mut r = agent().post(self.url(path)).send(body).expect("POST");
        Reply {
            status: r.status().as_u16(),
            body: r.body_mut().read_to_string().unwrap_or_default(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
