//! The node admin API on a registry-mode server: off without a token, bearer auth, the
//! node state with per-version counters, and pushes refused (the registry decides).

use crate::*;
use kiln_node_api::NodeState;
use serde_json::json;

fn iris_server(config: ServeConfig) -> TestServer {
    let catalog = Arc::new(DirCatalog::new());
    catalog.set(vec![
        version(&catalog, "iris", "iris_logreg", 1, "Production", &[]),
        version(&catalog, "iris", "iris_logreg", 2, "Staging", &[]),
    ]);
    TestServer::start_with(catalog, config)
}

#[test]
fn admin_api_is_off_without_a_token() {
    let server = iris_server(ServeConfig::default());
    for path in ["/admin/v1", "/admin/v1/state", "/admin/v1/routing"] {
        let r = send("GET", &server.url(path), b"", &[bearer()]);
        assert_eq!(r.status, 404, "{path}");
        let error = r.json()["error"].as_str().unwrap().to_string();
        assert!(
            error.contains("admin API is off") && error.contains("--admin-token-file"),
            "{error}"
        );
    }
    let r = send("PUT", &server.url("/admin/v1/routing"), b"{}", &[bearer()]);
    assert_eq!(r.status, 404);
}

#[test]
fn admin_requests_need_the_bearer_token() {
    let server = iris_server(admin_config());
    let url = server.url("/admin/v1/state");
    for headers in [
        vec![],
        vec![("authorization", "Bearer wrong".to_string())],
        vec![("authorization", format!("Basic {TOKEN}"))],
        vec![("authorization", format!("Bearer {TOKEN}x"))],
    ] {
        let r = send("GET", &url, b"", &headers);
        assert_eq!(r.status, 401, "{headers:?}");
        assert_eq!(r.authenticate.as_deref(), Some("Bearer"));
        assert!(r.json()["error"].is_string());
    }
    for (method, path) in [
        ("PUT", "/admin/v1/routing"),
        ("PUT", &format!("/admin/v1/components/{}", "a".repeat(64))),
    ] {
        let r = send(method, &server.url(path), b"{}", &[]);
        assert_eq!(r.status, 401, "{method} {path}");
    }
    let r = admin("GET", &url, b"");
    assert_eq!(r.status, 200);
}

#[test]
fn admin_state_counts_requests_per_version_from_the_metrics() {
    let server = iris_server(admin_config());
    let predict = server.url("/v1/models/iris/predict");
    let row = json!({ "features": [6.3, 3.4, 5.6, 2.4] });
    for _ in 0..5 {
        assert_eq!(post_json(&predict, &row).status, 200);
    }
    for _ in 0..3 {
        let r = post(
            &predict,
            row.to_string().as_bytes(),
            &[
                ("x-kiln-version", "2".to_string()),
                // v2 is Staging: restricted, nameable with a viewer token.
                (
                    "authorization",
                    format!("Bearer {}", crate::catalog::VIEWER_TOKEN),
                ),
            ],
        );
        assert_eq!(r.status, 200);
    }
    let request = example_json("iris_logreg.request.json");
    assert_eq!(
        post_json(&server.url("/v2/models/iris/infer"), &request).status,
        200
    );
    for _ in 0..2 {
        assert_eq!(post_json(&predict, &json!({ "features": [1.0] })).status, 422);
    }

    let r = admin("GET", &server.url("/admin/v1/state"), b"");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let state: NodeState = serde_json::from_slice(&r.body).expect("a NodeState");
    assert_eq!(state.mode, "registry");
    assert!(state.ready);
    assert_eq!(state.node, server.base.trim_start_matches("http://"));
    assert_eq!(
        uuid::Uuid::parse_str(&state.instance_id)
            .unwrap()
            .get_version_num(),
        4
    );
    assert_eq!(state.last_error, None);
    assert_eq!(state.routing.generation, 1);
    let weights: Vec<(u64, u32)> = state.routing.models["iris"]
        .versions
        .iter()
        .map(|v| (v.version, v.weight))
        .collect();
    assert_eq!(weights, [(1, 100), (2, 0)]);
    let digest = kiln_types::digest(&component("iris_logreg"));
    assert_eq!(state.loaded, vec![digest.clone()]);
    assert!(state.digests.contains(&digest));

    let stats = |v: u64| {
        state
            .versions
            .iter()
            .find(|s| s.model == "iris" && s.version == v)
            .unwrap_or_else(|| panic!("no counters for iris/{v}: {:?}", state.versions))
            .clone()
    };
    let v1 = stats(1);
    // 5 seed + 1 OIP answered, 2 refused: summed over endpoints.
    assert_eq!((v1.requests, v1.client_errors, v1.server_errors), (8, 2, 0));
    assert_eq!(v1.latency.count, 8);
    assert!(!v1.latency.bounds.is_empty());
    assert_eq!(v1.latency.bounds.len(), v1.latency.counts.len());
    assert!(v1.latency.counts.windows(2).all(|w| w[0] <= w[1]), "cumulative");
    assert!(v1.latency.sum > 0.0);
    let v2 = stats(2);
    assert_eq!((v2.requests, v2.client_errors), (3, 0));
    assert!(
        !state.versions.iter().any(|s| s.model == "_unknown"),
        "only served models"
    );
}

#[test]
fn admin_pushes_are_refused_in_registry_mode() {
    let server = iris_server(admin_config());
    let wasm = component("iris_logreg");
    let digest = kiln_types::digest(&wasm);
    let r = admin(
        "PUT",
        &server.url(&format!("/admin/v1/components/{digest}")),
        &wasm,
    );
    assert_eq!(r.status, 409);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("--managed or --join")
    );
    let routing = crate::routing::table(
        5,
        vec![("iris", vec![crate::routing::route(1, &digest, 1, "", &[])], None)],
    );
    let r = admin(
        "PUT",
        &server.url("/admin/v1/routing"),
        serde_json::to_string(&routing).unwrap().as_bytes(),
    );
    assert_eq!(r.status, 409);
    assert!(r.json()["error"].as_str().unwrap().contains("local registry"));
    let r = admin(
        "HEAD",
        &server.url(&format!("/admin/v1/components/{digest}")),
        b"",
    );
    assert_eq!(r.status, 409);
}
