//! The registry server with identities and roles, as real processes: `kiln registry
//! serve` on 127.0.0.1, driven by the real `kiln` CLI through `--registry`/`--token-file`
//! and by raw HTTP. Each hole the trust issue names has a check that fails on the old
//! code (which had no server, and audited `$KILN_ACTOR`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_tests::kiln_process::{KilnHome, Server, free_port};
use serde_json::Value;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// `(status, body, www-authenticate)` of a raw call.
fn call(method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> (u16, Value, Option<String>) {
    let agent = agent();
    let auth = token.map(|t| format!("Bearer {t}"));
    let sent = match (method, body) {
        ("GET", _) => {
            let mut r = agent.get(url);
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.call()
        }
        ("DELETE", _) => {
            let mut r = agent.delete(url);
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.call()
        }
        (m, b) => {
            let mut r = if m == "PUT" {
                agent.put(url)
            } else {
                agent.post(url)
            };
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.header("content-type", "application/json")
                .send(b.unwrap_or("{}"))
        }
    };
    let mut resp = sent.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let www = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        www,
    )
}

struct Registry {
    home: KilnHome,
    server: Server,
    tokens: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let home = KilnHome::new();
        // Bootstrap: the machine's owner makes the first admin token on the local file.
        let admin = token_of(&home.run(&["tokens", "create", "--name", "root", "--role", "admin", "--json"]));
        let addr = format!("127.0.0.1:{}", free_port());
        let server = home.spawn(&["registry", "serve", "--listen", &addr], &addr);
        let started = Instant::now();
        while server.try_get("/openapi.json").is_none_or(|r| r.status != 200) {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "registry did not start:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let tokens = tempfile::tempdir().unwrap();
        std::fs::write(tokens.path().join("root"), &admin).unwrap();
        Registry { home, server, tokens }
    }

    fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    fn token_file(&self, name: &str) -> PathBuf {
        self.tokens.path().join(name)
    }

    fn token(&self, name: &str) -> String {
        std::fs::read_to_string(self.token_file(name)).unwrap()
    }

    /// `kiln --registry URL --token-file <as> ARGS` (no $KILN_HOME registry is touched:
    /// the home is an empty directory).
    fn kiln(&self, who: &str, args: &[&str]) -> std::process::Output {
        let empty = tempfile::tempdir().unwrap();
        let mut c = self.home.command();
        c.env("KILN_HOME", empty.path())
            .env_remove("KILN_TOKEN")
            .args(["--registry", &self.url(), "--token-file"])
            .arg(self.token_file(who))
            .args(args);
        c.output().unwrap()
    }

    fn kiln_ok(&self, who: &str, args: &[&str]) -> String {
        let out = self.kiln(who, args);
        assert!(
            out.status.success(),
            "kiln {args:?} as {who} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command expected to fail; returns its stderr.
    fn kiln_err(&self, who: &str, args: &[&str]) -> String {
        let out = self.kiln(who, args);
        assert!(!out.status.success(), "kiln {args:?} as {who} should have failed");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// An admin-made token with this role, stored as a file named `name`.
    fn make_token(&self, name: &str, role: &str, extra: &[&str]) {
        let mut args = vec!["tokens", "create", "--name", name, "--role", role, "--json"];
        args.extend_from_slice(extra);
        let token = token_of(&self.kiln_ok("root", &args));
        std::fs::write(self.token_file(name), token).unwrap();
    }

    fn audit(&self) -> Vec<Value> {
        let out = self.kiln_ok("root", &["audit", "log", "--json"]);
        serde_json::from_str(&out).unwrap()
    }
}

fn token_of(json: &str) -> String {
    let v: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let t = v["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {json}"));
    assert!(t.starts_with("kiln_") && t.len() > 60, "{t}");
    t.to_string()
}

fn write_component(dir: &Path) -> PathBuf {
    let path = dir.join("echo4.wasm");
    std::fs::write(&path, kiln_tests::component("echo4")).unwrap();
    path
}

#[test]
fn a_reference_set_through_the_server_holds_the_versions_outputs_and_components_download_by_role() {
    let r = Registry::start();
    r.make_token("dev", "deployer", &[]);
    r.make_token("ana", "viewer", &[]);
    r.make_token("fraud-dev", "deployer", &["--model", "fraud-*"]);
    let scratch = tempfile::tempdir().unwrap();
    let wasm = write_component(scratch.path());
    r.kiln_ok(
        "dev",
        &["models", "register", wasm.to_str().unwrap(), "--name", "echo"],
    );

    // The CLI downloads the component through the server and runs it on the file, so the
    // reference holds the version's outputs (prediction drift), not only its inputs.
    let csv = scratch.path().join("reference.csv");
    let mut text = String::from("a,b,c,d\n");
    for i in 0..50 {
        text.push_str(&format!("{},{},{},{}\n", i, i * 2, 0.5, -(i as i64)));
    }
    std::fs::write(&csv, text).unwrap();
    let set = r.kiln_ok(
        "dev",
        &["monitor", "reference", "set", "echo/1", csv.to_str().unwrap()],
    );
    assert!(
        set.contains("50 rows × 4 features") && set.contains("with the version's outputs on them"),
        "{set}"
    );
    let shown = r.kiln_ok("ana", &["monitor", "reference", "show", "echo/1"]);
    assert!(shown.contains("output:y[1]"), "{shown}");

    // The download itself: a viewer gets the bytes, their size and digest; a token scoped
    // to other models gets 403; no token 401.
    let url = format!("{}/api/v1/models/echo/versions/1/component", r.url());
    let mut answer = agent()
        .get(&url)
        .header("authorization", &format!("Bearer {}", r.token("ana")))
        .call()
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    let header = |a: &ureq::http::Response<ureq::Body>, name: &str| {
        a.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(
        header(&answer, "content-type").as_deref(),
        Some("application/wasm")
    );
    let digest = header(&answer, "x-kiln-digest").expect("x-kiln-digest");
    let bytes = answer
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .unwrap();
    assert_eq!(bytes, kiln_tests::component("echo4"));
    assert_eq!(digest, format!("sha256:{}", kiln_types::digest(&bytes)));
    assert_eq!(call("GET", &url, Some(&r.token("fraud-dev")), None).0, 403);
    assert_eq!(call("GET", &url, None, None).0, 401);
    let missing = format!("{}/api/v1/models/echo/versions/9/component", r.url());
    let (status, body, _) = call("GET", &missing, Some(&r.token("ana")), None);
    assert_eq!(status, 404, "{body}");
}

#[test]
fn roles_decide_and_the_token_is_the_actor() {
    let r = Registry::start();
    for (name, role) in [("ana", "viewer"), ("dev", "deployer"), ("rel", "maintainer")] {
        r.make_token(name, role, &[]);
    }
    r.make_token("fraud-rel", "maintainer", &["--model", "fraud-*"]);

    // No token, a made-up token: 401 with a JSON body and a Bearer challenge, before
    // anything else is looked at (the body here is not even valid).
    let stage = format!("{}/api/v1/models/iris/versions/1/stage", r.url());
    let (status, body, www) = call("PUT", &stage, None, Some("not json"));
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["kind"], "unauthenticated");
    assert_eq!(www.as_deref(), Some("Bearer"));
    let fake = format!("kiln_{}", "0".repeat(64));
    assert_eq!(call("PUT", &stage, Some(&fake), Some("{}")).0, 401);

    // A deployer registers (upload + register through the CLI) and moves to Staging.
    let scratch = tempfile::tempdir().unwrap();
    let wasm = write_component(scratch.path());
    let registered: Value = serde_json::from_str(&r.kiln_ok(
        "dev",
        &[
            "models",
            "register",
            wasm.to_str().unwrap(),
            "--name",
            "iris",
            "--json",
        ],
    ))
    .unwrap();
    assert_eq!(registered["version"], 1, "{registered}");
    assert_eq!(registered["created"], true);
    r.kiln_ok("dev", &["models", "promote", "iris", "1", "staging"]);

    // A viewer may read but not promote; a deployer may not promote to Production or
    // set champion; a maintainer limited to fraud-* may not touch iris.
    assert!(r.kiln_ok("ana", &["models", "list"]).contains("iris"));
    let e = r.kiln_err("ana", &["models", "promote", "iris", "1", "staging"]);
    assert!(e.contains("viewer") && e.contains("deployer"), "{e}");
    let e = r.kiln_err("dev", &["models", "promote", "iris", "1", "production"]);
    assert!(e.contains("maintainer"), "{e}");
    let e = r.kiln_err("dev", &["models", "alias", "iris", "champion", "1"]);
    assert!(e.contains("maintainer"), "{e}");
    r.kiln_ok("dev", &["models", "alias", "iris", "challenger", "1"]);
    let e = r.kiln_err("fraud-rel", &["models", "promote", "iris", "1", "production"]);
    assert!(e.contains("fraud-*"), "{e}");
    // The same refusals as raw HTTP statuses.
    let (status, body, _) = call(
        "PUT",
        &stage,
        Some(&r.token("ana")),
        Some(r#"{"stage":"Production"}"#),
    );
    assert_eq!(
        (status, body["kind"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (status, _, _) = call(
        "PUT",
        &stage,
        Some(&r.token("dev")),
        Some(r#"{"stage":"Production"}"#),
    );
    assert_eq!(status, 403);

    // The maintainer promotes: 200, and the audit entry names the token, not $KILN_ACTOR.
    let (status, body, _) = call(
        "PUT",
        &stage,
        Some(&r.token("rel")),
        Some(r#"{"stage":"Production"}"#),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"]["stage"], "Production");
    let audit = r.audit();
    let last = audit.last().unwrap();
    assert_eq!(
        (last["action"].as_str(), last["actor"].as_str()),
        (Some("transition_stage"), Some("rel")),
        "{last}"
    );
    let register = audit.iter().find(|e| e["action"] == "register").unwrap();
    assert_eq!(register["actor"], "dev");
    // The bootstrap token was made on the local file: audited as local:<os user>.
    let created = audit.iter().find(|e| e["action"] == "token.create").unwrap();
    assert!(
        created["actor"].as_str().unwrap().starts_with("local:"),
        "{created}"
    );
    assert!(
        audit.iter().all(|e| e["actor"] != "test"),
        "KILN_ACTOR must not be the actor"
    );

    // A revoked token stops at once.
    r.kiln_ok("root", &["tokens", "revoke", "dev"]);
    let e = r.kiln_err("dev", &["models", "list"]);
    assert!(e.contains("unknown, expired or revoked"), "{e}");
    let listed = r.kiln_ok("root", &["tokens", "list"]);
    assert!(listed.contains("revoked") && listed.contains("dev"), "{listed}");
    // Only admins list or make tokens.
    let e = r.kiln_err("rel", &["tokens", "list"]);
    assert!(e.contains("admin"), "{e}");

    // No secret in the server's output, in `tokens list`, or in the audit log.
    let log = r.server.log();
    let audit_text = serde_json::to_string(&r.audit()).unwrap();
    for name in ["root", "ana", "dev", "rel", "fraud-rel"] {
        let secret = r.token(name);
        assert!(!log.contains(&secret), "the server log holds {name}'s token");
        assert!(!listed.contains(&secret));
        assert!(!audit_text.contains(&secret));
        // The database holds hashes only.
        let db = std::fs::read(r.home.path().join("registry.db")).unwrap();
        assert!(!db.windows(secret.len()).any(|w| w == secret.as_bytes()));
    }
}

#[test]
fn rollouts_nodes_and_gitops_need_their_roles() {
    let r = Registry::start();
    r.make_token("dev", "deployer", &[]);
    r.make_token("rel", "maintainer", &[]);
    let e = r.kiln_err("rel", &["sync", "add-node", "edge-1", "http://127.0.0.1:9"]);
    assert!(e.contains("admin"), "{e}");
    let out = r.kiln_ok("root", &["sync", "add-node", "edge-1", "http://127.0.0.1:9"]);
    assert!(out.contains("edge-1"), "{out}");
    let status: Value = serde_json::from_str(&r.kiln_ok("dev", &["sync", "status", "--json"])).unwrap();
    assert_eq!(status["nodes"][0]["name"], "edge-1");

    let scratch = tempfile::tempdir().unwrap();
    let wasm = write_component(scratch.path());
    r.kiln_ok(
        "dev",
        &["models", "register", wasm.to_str().unwrap(), "--name", "iris"],
    );
    let gitops = scratch.path().join("kiln.toml");
    let node = "[[nodes]]\nname = \"edge-1\"\nurl = \"http://127.0.0.1:9\"\n\n";
    std::fs::write(&gitops, format!("{node}[models.iris]\nversion = 1\n")).unwrap();
    let plan = r.kiln_ok("dev", &["sync", "plan", gitops.to_str().unwrap()]);
    assert!(plan.contains("iris"), "{plan}");
    let e = r.kiln_err("dev", &["sync", "apply", gitops.to_str().unwrap()]);
    assert!(e.contains("maintainer"), "{e}");
    let applied = r.kiln_ok("rel", &["sync", "apply", gitops.to_str().unwrap()]);
    assert!(applied.contains("Production"), "{applied}");
    // A file that drops a node changes the fleet: an admin's job.
    let no_nodes = scratch.path().join("no-nodes.toml");
    std::fs::write(&no_nodes, "[models.iris]\nversion = 1\n").unwrap();
    let e = r.kiln_err("rel", &["sync", "apply", no_nodes.to_str().unwrap()]);
    assert!(e.contains("admin") && e.contains("nodes"), "{e}");
    let e = r.kiln_err("dev", &["rollout", "policy", "iris", "--steps", "10,100"]);
    assert!(e.contains("maintainer"), "{e}");
    r.kiln_ok("rel", &["rollout", "policy", "iris", "--steps", "10,100"]);
    let e = r.kiln_err("dev", &["models", "delete", "iris", "1", "--force"]);
    assert!(e.contains("maintainer"), "{e}");
}

/// Every route the OpenAPI document lists exists and asks for a token first; the
/// document itself passes a real validator (openapi-spec-validator, from PyPI).
#[test]
fn openapi_document_is_valid_and_complete() {
    let r = Registry::start();
    let doc = r.server.get("/openapi.json");
    assert_eq!(doc.status, 200);
    let spec = doc.json();
    let file = r.tokens.path().join("openapi.json");
    std::fs::write(&file, &doc.body).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .expect("running python3 -m openapi_spec_validator (pip install openapi-spec-validator)");
    assert!(
        out.status.success(),
        "openapi-spec-validator refused the document: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let paths = spec["paths"].as_object().unwrap();
    assert!(paths.len() >= 20, "{paths:?}");
    let mut checked = 0;
    for (path, ops) in paths {
        let concrete = path
            .replace("{name}", "iris")
            .replace("{version}", "1")
            .replace("{alias}", "challenger")
            .replace("{key}", "team")
            .replace("{digest}", &format!("sha256:{}", "0".repeat(64)))
            .replace("{action}", "pause")
            .replace("{mode}", "plan");
        for method in ops.as_object().unwrap().keys() {
            let url = format!("{}{concrete}", r.url());
            let (status, body, _) = call(&method.to_uppercase(), &url, None, Some("{}"));
            assert_eq!(status, 401, "{method} {path}: {body}");
            checked += 1;
        }
    }
    assert!(checked >= 25, "{checked}");
}
