//! The inference port's access rules, with real `kiln` processes on 127.0.0.1: a
//! restricted version (Staging, or weight 0 with no stage and no alias, such as a rolled
//! back one) is not forceable (`x-kiln-version`), selectable (`/versions/{v}`) or
//! downloadable (`/bundle`) without a viewer token; an open one (Production, aliased, or
//! taking traffic) is, token or not; and `--rate-limit` answers 429 with `Retry-After`
//! while health stays up. Before this, any client could name any loaded version and
//! download its weights.

use kiln_tests::fleet::{echo_body, echo_component, wait_for};
use kiln_tests::kiln_process::{KilnHome, Server, free_port};
use serde_json::{Value, json};
use std::time::Duration;

/// An answer: status, headers (lowercase names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_string()
    }
}

/// `GET` (no body) or `POST` (a JSON body) with headers.
fn send(server: &Server, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Answer {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let url = server.url(path);
    let result = match body {
        Some(body) => {
            let mut req = agent.post(&url).header("content-type", "application/json");
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.send(body)
        }
        None => {
            let mut req = agent.get(&url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.call()
        }
    };
    let mut r = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    Answer {
        status: r.status().as_u16(),
        headers: r
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: r.body_mut().read_to_vec().unwrap_or_default(),
    }
}

/// `PUT` to the node admin API with its token.
fn admin_put(server: &Server, path: &str, token: &str, content_type: &str, body: &[u8]) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let r = agent
        .put(server.url(path))
        .header("authorization", &format!("Bearer {token}"))
        .header("content-type", content_type)
        .send(body)
        .unwrap_or_else(|e| panic!("PUT {path}: {e}"));
    r.status().as_u16()
}

fn infer(server: &Server, path: &str, headers: &[(&str, &str)]) -> Answer {
    send(server, "POST", path, headers, Some(echo_body(1.0).as_bytes()))
}

/// Registers an echo component (its own digest per label) as a version of `model`.
fn register(home: &KilnHome, model: &str, label: &str) -> u64 {
    let path = home.path().join(format!("{model}-{label}.wasm"));
    std::fs::write(&path, echo_component(label)).expect("writing the component");
    let out = home.run(&[
        "models",
        "register",
        path.to_str().unwrap_or_default(),
        "--name",
        model,
        "--json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v["version"]
        .as_u64()
        .unwrap_or_else(|| panic!("no version in {out}"))
}

/// `kiln tokens create` on the local registry (as its owner): the token alone on stdout.
fn token(home: &KilnHome, name: &str, role: &str, model: Option<&str>) -> String {
    let mut args = vec!["tokens", "create", "--name", name, "--role", role];
    if let Some(m) = model {
        args.extend(["--model", m]);
    }
    let token = home.run(&args).trim().to_string();
    assert!(token.starts_with("kiln_"), "not a token: {token}");
    token
}

fn refused_as_restricted(a: &Answer, what: &str) -> String {
    assert_eq!(a.status, 403, "{what}: {}", String::from_utf8_lossy(&a.body));
    assert!(
        a.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{what}: {:?}",
        a.headers
    );
    assert_eq!(a.json()["kind"], "restricted_version", "{what}");
    assert_eq!(
        a.header("x-kiln-model-version"),
        None,
        "{what}: nothing was served"
    );
    a.error()
}

fn served(a: &Answer, what: &str) -> String {
    assert_eq!(a.status, 200, "{what}: {}", String::from_utf8_lossy(&a.body));
    a.header("x-kiln-model-version").unwrap_or_default().to_string()
}

#[test]
fn a_staging_version_needs_a_viewer_token_of_its_model_and_production_needs_none() {
    let home = KilnHome::new();
    assert_eq!(register(&home, "echo", "v1"), 1);
    assert_eq!(register(&home, "echo", "v2"), 2);
    home.run(&["models", "promote", "echo", "1", "Production"]);
    home.run(&["models", "promote", "echo", "2", "Staging"]);
    let viewer = token(&home, "ci-viewer", "viewer", None);
    let scoped = token(&home, "other-viewer", "viewer", Some("other*"));
    let node = token(&home, "a-node", "node", None);
    let deployer = token(&home, "echo-deployer", "deployer", Some("echo"));
    let server = home.serve("serve", &[]);

    let force = [("x-kiln-version", "2")];
    let forced = || infer(&server, "/v2/models/echo/infer", &force);
    let by_path = || infer(&server, "/v2/models/echo/versions/2/infer", &[]);
    let bundle =
        |headers: &[(&str, &str)]| send(&server, "GET", "/v1/models/echo/versions/2/bundle", headers, None);

    // Without a token: refused, however the version is named, with the JSON error saying
    // a viewer token is needed.
    for (what, a) in [
        ("x-kiln-version", forced()),
        ("/versions/2", by_path()),
        (
            "/versions/staging",
            infer(&server, "/v2/models/echo/versions/Staging/infer", &[]),
        ),
        ("bundle", bundle(&[])),
    ] {
        let error = refused_as_restricted(&a, what);
        assert!(
            error.contains("viewer token") && error.contains("version 2"),
            "{what}: {error}"
        );
    }
    let seed = send(
        &server,
        "POST",
        "/v1/models/echo/predict",
        &[],
        Some(
            json!({"features": [1.0, 2.0, 3.0, 4.0], "model_version": "2"})
                .to_string()
                .as_bytes(),
        ),
    );
    refused_as_restricted(&seed, "seed model_version");

    // With a viewer token (or any role above it) of the model: served.
    let bearer = format!("Bearer {viewer}");
    let auth = [("authorization", bearer.as_str())];
    let forced_with_token = [auth[0], force[0]];
    assert_eq!(
        served(
            &infer(&server, "/v2/models/echo/infer", &forced_with_token),
            "forced"
        ),
        "2"
    );
    assert_eq!(
        served(&infer(&server, "/v2/models/echo/versions/2/infer", &auth), "path"),
        "2"
    );
    let b = bundle(&auth);
    assert_eq!(b.status, 200, "{}", String::from_utf8_lossy(&b.body));
    assert_eq!(
        b.header("x-kiln-bundle-sha256"),
        Some(kiln_types::digest(&b.body).as_str()),
        "the bundle comes whole"
    );
    let deployer_auth = format!("Bearer {deployer}");
    assert_eq!(
        served(
            &infer(
                &server,
                "/v2/models/echo/versions/2/infer",
                &[("authorization", &deployer_auth)]
            ),
            "deployer"
        ),
        "2"
    );

    // A viewer token limited to other models, a node token and a made-up token: refused.
    let scoped_auth = format!("Bearer {scoped}");
    let error = refused_as_restricted(
        &infer(
            &server,
            "/v2/models/echo/infer",
            &[("authorization", &scoped_auth), force[0]],
        ),
        "scoped token",
    );
    assert!(error.contains("limited to other models"), "{error}");
    refused_as_restricted(
        &bundle(&[("authorization", &scoped_auth)]),
        "scoped token, bundle",
    );
    let node_auth = format!("Bearer {node}");
    refused_as_restricted(&by_path_with(&server, &node_auth), "node token");
    let error = refused_as_restricted(&by_path_with(&server, "Bearer kiln_made_up"), "made-up token");
    assert!(error.contains("not a viewer token"), "{error}");

    // Production, forced or downloaded without a token (or with a bad one): served.
    assert_eq!(
        served(&infer(&server, "/v2/models/echo/infer", &[]), "unnamed"),
        "1"
    );
    assert_eq!(
        served(
            &infer(&server, "/v2/models/echo/infer", &[("x-kiln-version", "1")]),
            "forced v1"
        ),
        "1"
    );
    assert_eq!(
        served(
            &infer(
                &server,
                "/v2/models/echo/versions/production/infer",
                &[("authorization", "Bearer kiln_made_up")]
            ),
            "bad token on an open version"
        ),
        "1"
    );
    let b1 = send(&server, "GET", "/v1/models/echo/versions/1/bundle", &[], None);
    assert_eq!(b1.status, 200);

    // The playground's listing says which versions need a token.
    let listing = send(&server, "GET", "/ui/playground/models", &[], None).json();
    let open: Vec<(u64, bool)> = listing["models"][0]["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap_or(0),
                v["open"].as_bool().unwrap_or(true),
            )
        })
        .collect();
    assert_eq!(open, [(1, true), (2, false)]);
}

fn by_path_with(server: &Server, authorization: &str) -> Answer {
    infer(
        server,
        "/v2/models/echo/versions/2/infer",
        &[("authorization", authorization)],
    )
}

#[test]
fn a_rolled_back_version_on_a_managed_node_opens_only_to_tokens_its_routing_lists() {
    let home = KilnHome::new();
    let admin = "node-admin-secret-for-tests";
    let addr = format!("127.0.0.1:{}", free_port());
    let mut command = home.command();
    command
        .args(["serve", "--managed", "--listen", &addr])
        .env("KILN_ADMIN_TOKEN", admin)
        .env("KILN_LOG", "info");
    let server = Server::spawn_command(command, &addr);
    server.wait_ready(Duration::from_secs(600));
    let mut digests = Vec::new();
    for label in ["v1", "v2"] {
        let wasm = echo_component(label);
        let digest = kiln_types::digest(&wasm);
        let status = admin_put(
            &server,
            &format!("/admin/v1/components/{digest}"),
            admin,
            "application/wasm",
            &wasm,
        );
        assert!((200..300).contains(&status), "upload {label}: {status}");
        digests.push(digest);
    }
    // What the sync service pushes after a rollback: v1 serves, v2 (its stage restored to
    // None) stays loaded at weight 0, restricted; a table from before the `open` field
    // (no field) must mean restricted too, so v2 is written without it.
    let table = json!({
        "generation": 3,
        "models": {"echo": {"versions": [
            {"version": 1, "digest": digests[0], "weight": 100, "stage": "Production", "open": true},
            {"version": 2, "digest": digests[1], "weight": 0, "stage": "None"},
        ]}}
    });
    let status = admin_put(
        &server,
        "/admin/v1/routing",
        admin,
        "application/json",
        table.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{}", server.log());

    assert_eq!(
        served(&infer(&server, "/v2/models/echo/infer", &[]), "unnamed"),
        "1"
    );
    assert_eq!(
        served(
            &infer(&server, "/v2/models/echo/versions/1/infer", &[]),
            "v1 by path"
        ),
        "1"
    );
    refused_as_restricted(
        &infer(&server, "/v2/models/echo/infer", &[("x-kiln-version", "2")]),
        "rolled back, forced",
    );
    refused_as_restricted(
        &send(&server, "GET", "/v1/models/echo/versions/2/bundle", &[], None),
        "rolled back, bundle",
    );
    // A managed node has no registry: it knows the tokens the sync service lists in its
    // routing table (by SHA-256), and none are listed yet.
    let viewer = token(&home, "viewer", "viewer", None);
    let error = refused_as_restricted(
        &by_path_with(&server, &format!("Bearer {viewer}")),
        "rolled back, viewer token not listed on the node",
    );
    assert!(error.contains("not a viewer token here"), "{error}");
    // The next push lists it (and a grant limited to another model).
    let scoped = token(&home, "fraud-viewer", "viewer", Some("fraud-*"));
    let mut table = table;
    table["generation"] = json!(4);
    table["readers"] = json!([
        {"name": "viewer", "token_sha256": kiln_types::digest(viewer.as_bytes())},
        {"name": "fraud-viewer", "token_sha256": kiln_types::digest(scoped.as_bytes()), "models": ["fraud-*"]},
    ]);
    let status = admin_put(
        &server,
        "/admin/v1/routing",
        admin,
        "application/json",
        table.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{}", server.log());
    // The server caches a token's answer for up to 10 s (the refusal above included).
    wait_for(
        Duration::from_secs(15),
        "the listed viewer token to open the rolled-back version",
        || {
            let a = by_path_with(&server, &format!("Bearer {viewer}"));
            (a.status == 200).then_some(())
        },
        || server.log(),
    );
    assert_eq!(
        served(
            &by_path_with(&server, &format!("Bearer {viewer}")),
            "listed viewer"
        ),
        "2"
    );
    refused_as_restricted(
        &by_path_with(&server, &format!("Bearer {scoped}")),
        "rolled back, a grant for other models",
    );
    refused_as_restricted(
        &by_path_with(&server, "Bearer kiln_made-up"),
        "rolled back, a made-up token",
    );
}

#[test]
fn a_burst_over_the_rate_limit_gets_429_with_retry_after_and_health_stays_up() {
    let home = KilnHome::new();
    assert_eq!(register(&home, "echo", "v1"), 1);
    home.run(&["models", "promote", "echo", "1", "Production"]);
    let viewer = token(&home, "ci-viewer", "viewer", None);
    // One request a minute with bursts of 3: nothing comes back during the test.
    let server = home.serve(
        "serve",
        &[
            "--rate-limit",
            "1/m",
            "--rate-limit-burst",
            "3",
            "--rate-limit-key",
            "token-or-ip",
        ],
    );
    // `wait_ready` polled health many times: health is not counted.
    let statuses: Vec<u16> = (0..6)
        .map(|_| infer(&server, "/v2/models/echo/infer", &[]).status)
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429], "burst of 3 then 429");
    let limited = infer(&server, "/v2/models/echo/infer", &[]);
    assert_eq!(limited.status, 429);
    let retry: u64 = limited
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in {:?}", limited.headers));
    assert!((1..=61).contains(&retry), "Retry-After {retry}");
    assert_eq!(limited.json()["kind"], "rate_limited");
    assert!(
        limited.error().contains("too many requests"),
        "{}",
        limited.error()
    );
    // The playground and bundles count too.
    assert_eq!(
        send(&server, "GET", "/ui/playground/models", &[], None).status,
        429
    );

    // Health and metrics are never limited.
    for path in ["/v2/health/ready", "/v2/health/live", "/metrics"] {
        assert_eq!(send(&server, "GET", path, &[], None).status, 200, "{path}");
    }
    // A made-up token buys no fresh allowance; a viewer token is its own client.
    assert_eq!(
        infer(
            &server,
            "/v2/models/echo/infer",
            &[("authorization", "Bearer kiln_made_up")]
        )
        .status,
        429
    );
    let bearer = format!("Bearer {viewer}");
    assert_eq!(
        served(
            &infer(&server, "/v2/models/echo/infer", &[("authorization", &bearer)]),
            "viewer's own allowance"
        ),
        "1"
    );
    let metrics = String::from_utf8_lossy(&send(&server, "GET", "/metrics", &[], None).body).into_owned();
    let rejected: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kiln_rate_limited_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no kiln_rate_limited_total in\n{metrics}"));
    assert_eq!(
        rejected, 6,
        "3 of the burst, 1 more, the playground, the made-up token"
    );
}
