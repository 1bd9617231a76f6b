//! A real `mlflow server` on 127.0.0.1 for tests: SQLite backend and proxied artifacts in a
//! temporary directory, killed (with its worker processes) when dropped, plus a runner for
//! `tests/python/mlflow_publish.py`, which publishes models the way a training job would.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The MLflow release the tests and `.ci/run` use.
pub const MLFLOW_VERSION: &str = "3.17.2";

/// A running MLflow tracking server.
pub struct MlflowServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub uri: String,
    /// Holds `mlflow.db`, `artifacts/` and `server.log`.
    pub dir: tempfile::TempDir,
    /// How long the server took to answer `/health`.
    pub startup: Duration,
}

impl MlflowServer {
    /// Starts a fresh server and waits until `/health` answers. Panics with the server's
    /// log if it does not come up, and with install instructions if mlflow is missing.
    pub fn start() -> MlflowServer {
        require_mlflow();
        let dir = tempfile::tempdir().expect("temp dir for mlflow");
        let port = crate::kiln_process::free_port();
        let log = std::fs::File::create(dir.path().join("server.log")).expect("mlflow log file");
        let err_log = log.try_clone().expect("mlflow log file");
        let started = Instant::now();
        let mut command = Command::new("python3");
        command
            .args(["-m", "mlflow", "server", "--host", "127.0.0.1", "--workers", "1"])
            .arg("--port")
            .arg(port.to_string())
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", dir.path().join("mlflow.db").display()))
            .arg("--artifacts-destination")
            .arg(dir.path().join("artifacts"))
            .current_dir(dir.path())
            // The job runner starts ~8 huey consumer processes that no test needs.
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
            .env("MLFLOW_DISABLE_TELEMETRY", "true")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log);
        // Its own process group, so dropping the server also ends uvicorn's workers.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().expect("starting python3 -m mlflow server");
        let mut server = MlflowServer {
            child,
            uri: format!("http://127.0.0.1:{port}"),
            dir,
            startup: Duration::ZERO,
        };
        server.wait_healthy(Duration::from_secs(180));
        server.startup = started.elapsed();
        eprintln!("mlflow server {} ready in {:.1?}", server.uri, server.startup);
        server
    }

    /// One server shared by the tests of a process that run at the same time; it stops
    /// when the last of them drops its handle. Tests must use their own model names.
    pub fn shared() -> Arc<MlflowServer> {
        static SHARED: OnceLock<Mutex<Weak<MlflowServer>>> = OnceLock::new();
        let slot = SHARED.get_or_init(|| Mutex::new(Weak::new()));
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(server) = slot.upgrade() {
            return server;
        }
        let server = Arc::new(MlflowServer::start());
        *slot = Arc::downgrade(&server);
        server
    }

    /// What the server printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Runs `mlflow_publish.py URI ARGS` and returns the JSON it prints.
    pub fn publish(&self, args: &[&str]) -> Value {
        let script = crate::root().join("tests/python/mlflow_publish.py");
        let out = Command::new("python3")
            .arg(&script)
            .arg(&self.uri)
            .args(args)
            .env("MLFLOW_DISABLE_TELEMETRY", "true")
            .output()
            .expect("running python3 tests/python/mlflow_publish.py");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "mlflow_publish.py {} failed:\n{stdout}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("mlflow_publish.py printed no JSON ({e}): {stdout}"))
    }

    fn wait_healthy(&mut self, limit: Duration) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        let started = Instant::now();
        loop {
            if let Ok(r) = agent.get(format!("{}/health", self.uri)).call()
                && r.status() == 200
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "mlflow server exited with {status} before it was ready:\n{}",
                    self.log()
                );
            }
            assert!(
                started.elapsed() < limit,
                "mlflow server did not answer /health in {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        // SIGTERM to the group lets uvicorn stop its worker; then make sure.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

/// Panics with install instructions when the mlflow package is missing: these tests do
/// not skip silently.
pub fn require_mlflow() {
    let found = Command::new("python3")
        .args([
            "-c",
            "import mlflow, onnx, onnxruntime; print(mlflow.__version__)",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match found {
        Some(version) if version != MLFLOW_VERSION => {
            eprintln!("warning: tests expect mlflow {MLFLOW_VERSION}, python3 has {version}")
        }
        Some(_) => {}
        None => panic!(
            "python3 cannot import mlflow, onnx and onnxruntime (mlflow.onnx.log_model needs it): the \
             MLflow source tests need a real tracking server. `.ci/run` installs them; by hand: \
             python3 -m pip install 'mlflow=={MLFLOW_VERSION}' 'onnx==1.23.2' 'onnxruntime==1.32.0'"
        ),
    }
}
