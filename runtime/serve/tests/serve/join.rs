//! Joining a sync service: the node announces itself with its name, URL, instance id and
//! served generation, with the join token once and then the credential the service gave
//! it, at the interval the service asks for, and keeps serving (and retrying) while the
//! service is down. (The real service is in the fleet scenarios, e.g. tests/tests/scenarios/fleet_credentials.rs.)

use crate::*;
use axum::http::HeaderMap;
use kiln_node_api::{JoinReply, JoinRequest, NodeCredentials};
use kiln_serve::JoinConfig;
use std::sync::Mutex;
use std::time::Instant;

/// The join token the node starts with, the credential the service gives it, and the admin
/// token the service will present.
const JOIN_TOKEN: &str = "kiln_join-token-for-the-test";
const NODE_TOKEN: &str = "kiln_node-credential-for-the-test";
const GIVEN_ADMIN_TOKEN: &str = "kiln_adm_given-by-the-service";

type Seen = Arc<Mutex<Vec<(Option<String>, JoinRequest)>>>;

/// A stand-in sync service that records heartbeats and asks for one every 50 ms.
struct FakeSync {
    url: String,
    seen: Seen,
    _runtime: tokio::runtime::Runtime,
}

fn fake_sync() -> FakeSync {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/sync/v1/nodes",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let record = record.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let request: JoinRequest = serde_json::from_slice(&body).expect("a JoinRequest");
                let mut seen = record.lock().unwrap();
                seen.push((auth, request));
                // The first join gets the node's credentials, as the real service does.
                let credentials = (seen.len() == 1).then(|| NodeCredentials {
                    node_token: Some(NODE_TOKEN.into()),
                    admin_token: GIVEN_ADMIN_TOKEN.into(),
                });
                axum::Json(JoinReply {
                    heartbeat_ms: 50,
                    credentials,
                })
            }
        }),
    );
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(async move { axum::serve(listener, app).await });
    FakeSync {
        url,
        seen,
        _runtime: runtime,
    }
}

fn join_config(sync_url: &str, advertise: Option<&str>) -> ServeConfig {
    ServeConfig {
        node_name: Some("edge-1".into()),
        join: Some(JoinConfig {
            sync_url: sync_url.to_string(),
            advertise_url: advertise.map(str::to_string),
            join_token: Some(JOIN_TOKEN.to_string().into()),
        }),
        ..admin_config()
    }
}

#[test]
fn join_heartbeats_announce_the_node_with_the_token_at_the_requested_interval() {
    let sync = fake_sync();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_managed(dir.path(), join_config(&sync.url, None));
    let deadline = Instant::now() + Duration::from_secs(10);
    while sync.seen.lock().unwrap().len() < 4 {
        assert!(Instant::now() < deadline, "fewer than 4 heartbeats in 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = sync.seen.lock().unwrap().clone();
    let state: kiln_node_api::NodeState =
        serde_json::from_slice(&admin("GET", &server.url("/admin/v1/state"), b"").body).unwrap();
    // The join token once; then the node's own credential.
    assert_eq!(
        seen[0].0.as_deref(),
        Some(format!("Bearer {JOIN_TOKEN}").as_str())
    );
    for (auth, _) in &seen[1..] {
        assert_eq!(auth.as_deref(), Some(format!("Bearer {NODE_TOKEN}").as_str()));
    }
    // The admin API now takes the credential the service gave (and still the fixed one),
    // and the credentials survive in the node store (owner-only).
    let given = send(
        "GET",
        &server.url("/admin/v1/state"),
        b"",
        &[("authorization", format!("Bearer {GIVEN_ADMIN_TOKEN}"))],
    );
    assert_eq!(given.status, 200);
    let wrong = send(
        "GET",
        &server.url("/admin/v1/state"),
        b"",
        &[("authorization", "Bearer nope".to_string())],
    );
    assert_eq!(wrong.status, 401);
    let stored = std::fs::read_to_string(dir.path().join("credentials.json")).unwrap();
    assert!(
        stored.contains(NODE_TOKEN) && stored.contains(GIVEN_ADMIN_TOKEN),
        "{stored}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("credentials.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "credentials readable by others: {mode:o}");
    }
    for (_, request) in &seen {
        assert_eq!(request.name, "edge-1");
        assert_eq!(request.url, server.base, "advertised at the bound address");
        assert_eq!(request.instance_id, state.instance_id);
        assert_eq!(request.generation, 0);
    }
    assert_eq!(state.node, "edge-1");
}

#[test]
fn join_keeps_serving_while_the_sync_service_is_down() {
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_managed(dir.path(), join_config(&url, Some("http://edge-1.example:8080")));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(&server.url("/v2/health/ready")).status, 200);
    assert_eq!(admin("GET", &server.url("/admin/v1/state"), b"").status, 200);
    // The node's own state shows its connection to the sync service: its joins fail and
    // the breaker opens after three of them. A first join (with the join token) issues
    // credentials, so it is never retried within a beat: the retries stay 0.
    let started = std::time::Instant::now();
    let sync = loop {
        let answer = admin("GET", &server.url("/admin/v1/state"), b"");
        let state: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        let sync = state["sync"].clone();
        if sync["breaker"] == "open" {
            break sync;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the breaker never opened: {state:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        (sync["target"].as_str(), sync["kind"].as_str()),
        (Some("sync"), Some("sync"))
    );
    assert_eq!(sync["retries"], 0, "{sync:#}");
    assert!(sync["failed_calls"].as_u64().unwrap_or_default() >= 3, "{sync:#}");
}
