//! Fleet credentials with real processes: `kiln sync run` and two `kiln serve --join`
//! nodes on 127.0.0.1. Nodes join with a join token and get credentials of their own; a
//! node reports only for itself, cannot move a configured node, cannot call another
//! node's admin API; the sync service refuses to listen unauthenticated or in plain text
//! off loopback; tokens given as files appear in no log and no command line.

use std::time::Duration;

use kiln_tests::fleet::{Fleet, wait_for};
use kiln_tests::kiln_process::{KilnHome, free_port};
use serde_json::{Value, json};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// POST a join/heartbeat to the sync service as `token`; (status, body).
fn heartbeat(fleet: &Fleet, token: Option<&str>, name: &str, url: &str) -> (u16, Value) {
    let mut req = agent().post(format!("http://{}/sync/v1/nodes", fleet.sync_addr));
    if let Some(t) = token {
        req = req.header("authorization", &format!("Bearer {t}"));
    }
    let mut r = req
        .send_json(json!({ "name": name, "url": url, "instance_id": "x", "generation": 0 }))
        .expect("POST /sync/v1/nodes");
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

fn node_credentials(fleet: &Fleet, i: usize) -> Value {
    let path = fleet.nodes[i].home.path().join("node").join("credentials.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn node_url(fleet: &Fleet, name: &str) -> String {
    let status: Value = serde_json::from_str(&fleet.kiln(&["sync", "status", "--json"])).unwrap();
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .map(|n| n["url"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

#[test]
fn nodes_hold_their_own_credentials_and_report_only_for_themselves() {
    let fleet = Fleet::start(2, &[]);
    let edge1 = node_credentials(&fleet, 0);
    let edge2 = node_credentials(&fleet, 1);
    let (node1_token, admin1) = (
        edge1["node_token"].as_str().unwrap().to_string(),
        edge1["admin_token"].as_str().unwrap().to_string(),
    );
    assert_ne!(
        edge1["admin_token"], edge2["admin_token"],
        "one credential per node"
    );
    assert_ne!(edge1["node_token"], edge2["node_token"]);
    let edge2_url = node_url(&fleet, "edge-2");
    assert!(edge2_url.starts_with("http://127.0.0.1:"), "{edge2_url}");

    // No token, or a token of another role: refused.
    assert_eq!(heartbeat(&fleet, None, "edge-2", "http://127.0.0.1:9").0, 401);
    let (status, body) = heartbeat(&fleet, Some(&fleet.admin), "edge-2", "http://127.0.0.1:9");
    assert_eq!(status, 403, "{body}");
    // edge-1's own credential cannot re-point edge-2.
    let (status, body) = heartbeat(&fleet, Some(&node1_token), "edge-2", "http://127.0.0.1:9");
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("only report for itself"),
        "{body}"
    );
    // The join token cannot take over a name that already has a credential.
    let join = std::fs::read_to_string(&fleet.join_token).unwrap();
    let (status, body) = heartbeat(&fleet, Some(join.trim()), "edge-2", "http://127.0.0.1:9");
    assert_eq!(status, 409, "{body}");
    assert_eq!(node_url(&fleet, "edge-2"), edge2_url, "edge-2 was not moved");

    // edge-1's admin credential does not open edge-2's admin API; edge-2's own does.
    let state = |i: usize, token: &str| {
        agent()
            .get(fleet.node(i).url("/admin/v1/state"))
            .header("authorization", &format!("Bearer {token}"))
            .call()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(state(1, &admin1), 401);
    assert_eq!(state(1, edge2["admin_token"].as_str().unwrap()), 200);
    assert_eq!(state(0, &admin1), 200);

    // A configured node moves only through configuration.
    let configured = format!("http://127.0.0.1:{}", free_port());
    fleet.kiln(&["sync", "add-node", "edge-9", &configured]);
    let (status, body) = heartbeat(&fleet, Some(join.trim()), "edge-9", "http://127.0.0.1:9");
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("configured"), "{body}");
    assert_eq!(node_url(&fleet, "edge-9"), configured);

    // The status needs a viewer token; the registry API is on the same listener.
    let status_url = format!("http://{}/sync/v1/status", fleet.sync_addr);
    assert_eq!(agent().get(&status_url).call().unwrap().status().as_u16(), 401);
    let whoami = format!("http://{}/api/v1/whoami", fleet.sync_addr);
    assert_eq!(agent().get(&whoami).call().unwrap().status().as_u16(), 401);
    let mut r = agent()
        .get(&whoami)
        .header("authorization", &format!("Bearer {}", fleet.admin))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let me: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(
        (me["name"].as_str(), me["role"].as_str()),
        (Some("fleet-admin"), Some("admin"))
    );

    // The tokens that may read (viewer and up, not node tokens) reach the nodes, which
    // have no registry, by hash; a revoked one leaves with the next push.
    let readers = |i: usize| -> Vec<String> {
        let mut r = agent()
            .get(fleet.node(i).url("/admin/v1/state"))
            .header("authorization", &format!("Bearer {}", fleet.node_admin_token(i)))
            .call()
            .unwrap();
        let state: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        state["routing"]["readers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|g| g["token_sha256"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let viewer = fleet.kiln(&["tokens", "create", "--name", "dashboards", "--role", "viewer"]);
    let viewer_hash = kiln_types::digest(viewer.trim().as_bytes());
    wait_for(
        Duration::from_secs(30),
        "the viewer token to reach edge-1",
        || readers(0).contains(&viewer_hash).then_some(()),
        || fleet.sync_log_tail(),
    );
    let listed = readers(0);
    assert!(listed.contains(&kiln_types::digest(fleet.admin.as_bytes())));
    assert!(
        !listed.contains(&kiln_types::digest(join.trim().as_bytes())),
        "a node token is no reader"
    );
    assert!(listed.iter().all(|h| !h.starts_with("kiln_")), "hashes only");
    fleet.kiln(&["tokens", "revoke", "dashboards"]);
    wait_for(
        Duration::from_secs(30),
        "the revoked token to leave edge-1",
        || (!readers(0).contains(&viewer_hash)).then_some(()),
        || fleet.sync_log_tail(),
    );

    // Removing a node revokes its credential; it joins again with the join token and
    // gets new credentials (a node is evicted for good by revoking the join token too).
    fleet.kiln(&["sync", "remove-node", "edge-2"]);
    wait_for(
        Duration::from_secs(30),
        "edge-2 to join again with new credentials",
        || {
            let now = node_credentials(&fleet, 1);
            (now["node_token"] != edge2["node_token"] && node_url(&fleet, "edge-2") == edge2_url)
                .then_some(())
        },
        || fleet.node(1).log(),
    );

    // The joins and the tokens went through files: no log and no command line holds them.
    let secrets = [
        join.trim().to_string(),
        fleet.admin.clone(),
        node1_token,
        admin1,
        edge2["admin_token"].as_str().unwrap().to_string(),
    ];
    let mut texts = vec![fleet.sync_log_tail(), fleet.node(0).log(), fleet.node(1).log()];
    for pid in [fleet.node(0).child.id(), fleet.node(1).child.id()] {
        texts.push(std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default());
    }
    for text in &texts {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a secret leaked into a log or command line"
            );
        }
    }
}

#[test]
fn the_sync_service_refuses_to_listen_open_off_loopback() {
    let home = KilnHome::new();
    let public = format!("0.0.0.0:{}", free_port());
    let out = home.run_raw(&["sync", "run", "--listen", &public, "--insecure-no-auth"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--insecure-no-auth") && err.contains("loopback"),
        "{err}"
    );
    let out = home.run_raw(&["sync", "run", "--listen", &public]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("plain HTTP") && err.contains("--tls-cert"), "{err}");
    let out = home.run_raw(&["registry", "serve", "--listen", &public]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("plain HTTP"));

    // On loopback, --insecure-no-auth lets a node in without a token, and says so.
    let addr = format!("127.0.0.1:{}", free_port());
    let sync = home.spawn(&["sync", "run", "--listen", &addr, "--insecure-no-auth"], &addr);
    wait_for(
        Duration::from_secs(60),
        "the sync service",
        || sync.try_get("/sync/v1/status").filter(|r| r.status == 200),
        || sync.log(),
    );
    let status = sync.get("/sync/v1/status").json();
    assert_eq!(status["insecure_no_auth"], true);
    assert!(sync.log().contains("--insecure-no-auth"), "{}", sync.log());
}
