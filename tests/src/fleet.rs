//! A fleet on one machine for the sync and rollout tests: one registry home with a
//! running `kiln sync run`, and N `kiln serve --join` nodes, each with its own home (all
//! sharing the tests' AOT cache), plus a steady request load that records every answer.

use crate::kiln_process::{KilnHome, Server, free_port};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Creates a token with `role` on the registry in `home` (as its owner) and returns it.
pub fn make_token(home: &KilnHome, name: &str, role: &str) -> String {
    let out = home.run(&["tokens", "create", "--name", name, "--role", role]);
    let token = out.trim().to_string();
    assert!(token.starts_with("kiln_"), "not a token: {out}");
    token
}

/// A file in `home` holding a new join token (role `node`) named `name`.
pub fn join_token_file(home: &KilnHome, name: &str) -> std::path::PathBuf {
    let path = home.path().join(format!("{name}.token"));
    std::fs::write(&path, make_token(home, name, "node")).expect("writing the join token");
    path
}

/// One edge node.
pub struct Node {
    pub name: String,
    pub home: KilnHome,
    pub addr: String,
    pub server: Option<Server>,
}

/// The registry, the sync service and the nodes.
pub struct Fleet {
    pub registry: KilnHome,
    pub sync_addr: String,
    pub sync: Option<Server>,
    pub sync_args: Vec<String>,
    pub nodes: Vec<Node>,
    /// An admin token of the registry (for the sync API's status and the registry API).
    pub admin: String,
    /// A file holding the join token (role `node`) the nodes join with.
    pub join_token: std::path::PathBuf,
}

/// Polls `check` until it returns Some or `limit` passes (then panics with `what` and the
/// last value seen by `describe`).
pub fn wait_for<T>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}\n{}",
            describe()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Fleet {
    /// A registry, `kiln sync run` (with `sync_args`) and `n` joined nodes `edge-1..n`.
    pub fn start(n: usize, sync_args: &[&str]) -> Fleet {
        let registry = KilnHome::new();
        let admin = make_token(&registry, "fleet-admin", "admin");
        let join_token = join_token_file(&registry, "fleet-join");
        let mut fleet = Fleet {
            registry,
            sync_addr: format!("127.0.0.1:{}", free_port()),
            sync: None,
            sync_args: sync_args.iter().map(|s| s.to_string()).collect(),
            nodes: Vec::new(),
            admin,
            join_token,
        };
        fleet.start_sync();
        for i in 1..=n {
            fleet.nodes.push(Node {
                name: format!("edge-{i}"),
                home: KilnHome::new(),
                addr: format!("127.0.0.1:{}", free_port()),
                server: None,
            });
            fleet.start_node(i - 1);
        }
        fleet.wait_joined();
        fleet
    }

    /// Starts (or restarts) the sync service and waits until its API answers.
    pub fn start_sync(&mut self) {
        let mut args = vec![
            "sync".to_string(),
            "run".into(),
            "--listen".into(),
            self.sync_addr.clone(),
            "--check-interval".into(),
            "200ms".into(),
            "--backoff-max".into(),
            "1s".into(),
        ];
        args.extend(self.sync_args.iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = self.registry.spawn(&refs, &self.sync_addr);
        wait_for(
            Duration::from_secs(60),
            "the sync service to answer",
            || server.try_get("/metrics").filter(|r| r.status == 200).map(|_| ()),
            || server.log(),
        );
        self.sync = Some(server);
    }

    /// Kills the sync service (SIGKILL).
    pub fn kill_sync(&mut self) {
        self.sync = None;
    }

    /// Starts (or restarts) node `i` on its address and waits until it is ready.
    pub fn start_node(&mut self, i: usize) {
        let join = format!("http://{}", self.sync_addr);
        let join_token = self.join_token.display().to_string();
        let node = &mut self.nodes[i];
        let server = node.home.serve_on(
            "serve",
            &node.addr,
            &[
                "--join",
                &join,
                "--join-token-file",
                &join_token,
                "--node-name",
                &node.name,
                "--cache",
                "off",
            ],
        );
        node.server = Some(server);
    }

    /// The admin credential the sync service gave node `i` when it joined (from the
    /// node's store), for tests that call the node admin API themselves.
    pub fn node_admin_token(&self, i: usize) -> String {
        let path = self.nodes[i].home.path().join("node").join("credentials.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let v: Value = serde_json::from_str(&text).expect("credentials JSON");
        v["admin_token"].as_str().expect("admin_token").to_string()
    }

    /// Kills node `i` (SIGKILL).
    pub fn kill_node(&mut self, i: usize) {
        self.nodes[i].server = None;
    }

    /// Node `i`'s server.
    pub fn node(&self, i: usize) -> &Server {
        self.nodes[i].server.as_ref().expect("node is running")
    }

    /// `kiln ARGS` against the registry home.
    pub fn kiln(&self, args: &[&str]) -> String {
        self.registry.run(args)
    }

    /// `kiln sync status --json`.
    pub fn status(&self) -> Value {
        serde_json::from_str(&self.kiln(&["sync", "status", "--json"])).expect("status JSON")
    }

    /// The latest rollout of `model` (`kiln rollout status MODEL --json`), if any.
    pub fn rollout(&self, model: &str) -> Option<Value> {
        let v: Value =
            serde_json::from_str(&self.kiln(&["rollout", "status", model, "--json"])).expect("rollout JSON");
        v.as_array().and_then(|a| a.first().cloned())
    }

    /// Waits until the latest rollout of `model` is in `state`; returns it.
    pub fn wait_rollout(&self, model: &str, state: &str, limit: Duration) -> Value {
        wait_for(
            limit,
            &format!("rollout of {model} to be {state}"),
            || self.rollout(model).filter(|r| r["state"] == state),
            || format!("{:#?}\nsync log:\n{}", self.rollout(model), self.sync_log_tail()),
        )
    }

    /// The last lines of the sync service's log.
    pub fn sync_log_tail(&self) -> String {
        let log = self.sync.as_ref().map(|s| s.log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Waits until every node joined (is in the registry).
    pub fn wait_joined(&self) {
        let n = self.nodes.len();
        wait_for(
            Duration::from_secs(60),
            "every node to join",
            || (self.status()["nodes"].as_array().map_or(0, Vec::len) == n).then_some(()),
            || format!("{:#}", self.status()),
        );
    }

    /// The version (response header) node `i` answers `model` with for `body`.
    pub fn served_version(&self, i: usize, model: &str, body: &str) -> Option<String> {
        let (reply, headers) = self
            .node(i)
            .post_with(&format!("/v2/models/{model}/infer"), body, &[]);
        if reply.status != 200 {
            return None;
        }
        headers
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(kiln_node_api::SERVED_VERSION_HEADER))
            .map(|(_, v)| v)
    }

    /// Waits until every running node answers `model` with `version` only (20 requests each).
    pub fn wait_all_serving(&self, model: &str, body: &str, version: u64, limit: Duration) {
        let want = version.to_string();
        wait_for(
            limit,
            &format!("every node to serve {model} version {version}"),
            || {
                self.nodes
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| n.server.is_some())
                    .all(|(i, _)| {
                        (0..20).all(|_| self.served_version(i, model, body).as_deref() == Some(&want))
                    })
                    .then_some(())
            },
            || format!("{:#}\n{}", self.status(), self.sync_log_tail()),
        );
    }
}

/// What a steady load saw.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// Answers by HTTP status (0 = no answer).
    pub statuses: BTreeMap<u16, u64>,
    /// 200 answers by served version.
    pub versions: BTreeMap<String, u64>,
    /// Failed answers (status, version, body), the first 20.
    pub failures: Vec<(u16, String, String)>,
}

impl LoadReport {
    /// Every answer that was not 200.
    pub fn failed(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| **s != 200)
            .map(|(_, n)| n)
            .sum()
    }
    /// All answers.
    pub fn total(&self) -> u64 {
        self.statuses.values().sum()
    }
}

/// A steady load on some nodes: `threads` clients, each sending `bodies` in turn to the
/// nodes in turn, until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<LoadReport>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// Starts the load.
    pub fn start(addrs: Vec<String>, path: String, bodies: Vec<String>, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(LoadReport::default()));
        let handles = (0..threads)
            .map(|t| {
                let (stop, report, addrs, path, bodies) = (
                    stop.clone(),
                    report.clone(),
                    addrs.clone(),
                    path.clone(),
                    bodies.clone(),
                );
                std::thread::spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(10)))
                        .build()
                        .into();
                    let mut i = t;
                    while !stop.load(Ordering::Acquire) {
                        let addr = &addrs[i % addrs.len()];
                        let body = &bodies[i % bodies.len()];
                        i += 1;
                        let (status, version, text) =
                            match agent.post(format!("http://{addr}{path}")).send(body.as_str()) {
                                Ok(mut r) => {
                                    let v = r
                                        .headers()
                                        .get(kiln_node_api::SERVED_VERSION_HEADER)
                                        .and_then(|v| v.to_str().ok())
                                        .unwrap_or("")
                                        .to_string();
                                    (
                                        r.status().as_u16(),
                                        v,
                                        r.body_mut().read_to_string().unwrap_or_default(),
                                    )
                                }
                                Err(e) => (0, String::new(), e.to_string()),
                            };
                        let mut rep = report.lock().unwrap_or_else(|p| p.into_inner());
                        *rep.statuses.entry(status).or_default() += 1;
                        if status == 200 {
                            *rep.versions.entry(version).or_default() += 1;
                        } else if rep.failures.len() < 20 {
                            rep.failures.push((status, version, text));
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            report,
            threads: handles,
        }
    }

    /// What it saw so far.
    pub fn report(&self) -> LoadReport {
        self.report.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops and returns the final report.
    pub fn stop(mut self) -> LoadReport {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.report()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// An OIP infer body for the echo models: one row `[first, 2, 3, 4]`.
pub fn echo_body(first: f32) -> String {
    serde_json::json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [first, 2.0, 3.0, 4.0]}]}).to_string()
}

/// The echo model (`examples/models/echo4.onnx`, y = x) compiled with version label
/// `label`: each label gives the same answers from a component with another digest.
pub fn echo_component(label: &str) -> Vec<u8> {
    let options = kiln_engine::LoadOptions {
        version: label.to_string(),
        ..Default::default()
    };
    kiln_host::compile::compile_cached(
        &crate::host(),
        &crate::onnx("echo4"),
        &options,
        &crate::test_cache_dir().join("components"),
    )
    .unwrap_or_else(|e| panic!("compiling echo4 ({label}): {e}"))
}

impl Fleet {
    /// Registers `wasm` as a version of `name` with one golden request (`echo_body(1)`);
    /// returns the version.
    pub fn register(&self, name: &str, file: &str, wasm: &[u8]) -> u64 {
        let path = self.registry.path().join(file);
        std::fs::write(&path, wasm).expect("writing the component");
        let golden = self.registry.path().join("golden.json");
        std::fs::write(&golden, echo_body(1.0)).expect("writing the golden request");
        let out = self.kiln(&[
            "models",
            "register",
            path.to_str().unwrap_or_default(),
            "--name",
            name,
            "--golden",
            golden.to_str().unwrap_or_default(),
            "--json",
        ]);
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        v["version"]
            .as_u64()
            .unwrap_or_else(|| panic!("no version in {out}"))
    }

    /// Promotes `name` `version` to Production in the registry (what a person does).
    pub fn promote(&self, name: &str, version: u64) {
        self.kiln(&["models", "promote", name, &version.to_string(), "Production"]);
    }

    /// Node addresses of running nodes.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.server.is_some())
            .map(|n| n.addr.clone())
            .collect()
    }

    /// Registers the echo model v1, promotes it and waits until every node serves it.
    pub fn deploy_echo_v1(&self) -> u64 {
        let v1 = self.register("echo", "echo-v1.wasm", &echo_component("v1"));
        self.promote("echo", v1);
        self.wait_all_serving("echo", &echo_body(1.0), v1, Duration::from_secs(60));
        v1
    }
}
