//! Traffic routing: weighted splits, weight-0 versions reachable only by name, sticky
//! routing keys, the forced-version header, and the served version in a response header.

use crate::*;
use kiln_node_api::{ModelRouting, RoutingTable, VersionRoute, choose_weighted, routing_point};
use serde_json::json;
use std::collections::BTreeMap;

/// One version of a routing table, open to every client as `kiln-fleet` would mark it
/// (Production, aliased, or taking traffic).
pub fn route(version: u64, digest: &str, weight: u32, stage: &str, aliases: &[&str]) -> VersionRoute {
    VersionRoute {
        version,
        digest: digest.to_string(),
        weight,
        stage: stage.to_string(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        open: weight > 0 || stage == "Production" || !aliases.is_empty(),
    }
}

/// A routing table of (model, versions, shadow).
pub fn table(generation: u64, models: Vec<(&str, Vec<VersionRoute>, Option<VersionRoute>)>) -> RoutingTable {
    RoutingTable {
        generation,
        models: models
            .into_iter()
            .map(|(name, versions, shadow)| {
                (
                    name.to_string(),
                    ModelRouting {
                        versions,
                        shadow,
                        serving: None,
                    },
                )
            })
            .collect(),
        readers: Vec::new(),
    }
}

/// `iris` v1 (weight 80, Production), v2 (weight 20, Staging), v3 (weight 0, alias
/// `dark`), all the same classifier.
fn split_server(config: ServeConfig) -> TestServer {
    let catalog = Arc::new(DirCatalog::new());
    let (digest, _) = catalog.store(&component("iris_logreg"));
    catalog.set_routing(table(
        0,
        vec![(
            "iris",
            vec![
                route(1, &digest, 80, "Production", &[]),
                route(2, &digest, 20, "Staging", &[]),
                route(3, &digest, 0, "None", &["dark"]),
            ],
            None,
        )],
    ));
    TestServer::start_with(catalog, config)
}

const ROW: [f64; 4] = [6.3, 3.4, 5.6, 2.4];

fn predict(server: &TestServer, body: serde_json::Value, headers: &[(&str, String)]) -> Reply {
    post(
        &server.url("/v1/models/iris/predict"),
        body.to_string().as_bytes(),
        headers,
    )
}

#[test]
fn routing_weighted_split_follows_the_weights_and_weight_zero_gets_no_weighted_traffic() {
    let server = split_server(ServeConfig::default());
    let mut hits: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..400 {
        let r = predict(&server, json!({ "features": ROW }), &[]);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let version = r.served_version.clone().expect("the served version header");
        assert_eq!(r.json()["model_version"], version.as_str());
        *hits.entry(version).or_default() += 1;
    }
    let count = |v: &str| hits.get(v).copied().unwrap_or(0);
    eprintln!("400 requests at 80/20/0: {hits:?}");
    assert_eq!(count("3"), 0, "weight 0 takes no weighted traffic: {hits:?}");
    assert_eq!(count("1") + count("2"), 400);
    // Expected 80 ± 8 (one standard deviation): ±5 of them.
    assert!((40..=130).contains(&count("2")), "{hits:?}");

    // The weight-0 version still answers when named, by header or selector.
    for (headers, body) in [
        (
            vec![("x-kiln-version", "3".to_string())],
            json!({ "features": ROW }),
        ),
        (
            vec![("x-kiln-version", "dark".to_string())],
            json!({ "features": ROW }),
        ),
        (vec![], json!({ "features": ROW, "model_version": "dark" })),
    ] {
        let r = predict(&server, body, &headers);
        assert_eq!(r.status, 200);
        assert_eq!(r.served_version.as_deref(), Some("3"));
        assert_eq!(r.json()["model_version"], "3");
    }
}

#[test]
fn routing_the_same_key_always_gets_the_same_version_and_keys_spread_over_versions() {
    let server = split_server(ServeConfig::default());
    let request = example_json("iris_logreg.request.json");
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for i in 0..60 {
        let key = format!("user-{i}");
        // Newest first, as the server lists them: v3 (0), v2 (20), v1 (80).
        let want = ["3", "2", "1"][choose_weighted(&[0, 20, 80], routing_point(&key)).unwrap()];
        for _ in 0..3 {
            let r = predict(
                &server,
                json!({ "features": ROW }),
                &[("x-kiln-routing-key", key.clone())],
            );
            assert_eq!(r.served_version.as_deref(), Some(want), "key {key}");
        }
        // The OIP endpoint routes the key the same way.
        let r = post(
            &server.url("/v2/models/iris/infer"),
            request.to_string().as_bytes(),
            &[("x-kiln-routing-key", key.clone())],
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.served_version.as_deref(), Some(want), "key {key} over OIP");
        assert_eq!(r.json()["model_version"], want);
        *seen.entry(want.to_string()).or_default() += 1;
    }
    assert!(
        seen.get("1").is_some_and(|n| *n > 0) && seen.get("2").is_some_and(|n| *n > 0),
        "60 keys land on both weighted versions: {seen:?}"
    );
}

#[test]
fn routing_the_forced_version_header_beats_weights_and_body_selectors() {
    let server = split_server(ServeConfig::default());
    let forced = |v: &str| vec![("x-kiln-version", v.to_string())];
    let r = predict(
        &server,
        json!({ "features": ROW, "model_version": "1" }),
        &forced("2"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["model_version"], "2");
    assert_eq!(r.served_version.as_deref(), Some("2"));

    let r = predict(&server, json!({ "features": ROW }), &forced("Staging"));
    assert_eq!(r.served_version.as_deref(), Some("2"));
    let r = predict(&server, json!({ "features": ROW }), &forced("latest"));
    assert_eq!(r.served_version.as_deref(), Some("3"));

    let request = example_json("iris_logreg.request.json").to_string();
    let r = post(
        &server.url("/v2/models/iris/versions/1/infer"),
        request.as_bytes(),
        &forced("dark"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["model_version"], "3");
    assert_eq!(r.served_version.as_deref(), Some("3"));

    // A forced version that is not served is a 404 naming what is; no version answered.
    let r = predict(&server, json!({ "features": ROW }), &forced("9"));
    assert_eq!(r.status, 404);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("served versions: 1, 2, 3")
    );
    assert_eq!(r.served_version, None);
    // The routing key does not override the forced version either.
    let r = predict(
        &server,
        json!({ "features": ROW }),
        &[
            ("x-kiln-version", "3".to_string()),
            ("x-kiln-routing-key", "user-1".to_string()),
        ],
    );
    assert_eq!(r.served_version.as_deref(), Some("3"));
}

#[test]
fn routing_every_inference_response_names_the_served_version_errors_included() {
    let server = split_server(ServeConfig::default());
    let forced = vec![("x-kiln-version", "2".to_string())];
    // A refused request still names the version that refused it.
    let r = predict(&server, json!({ "features": [1.0] }), &forced);
    assert_eq!(r.status, 422);
    assert_eq!(r.served_version.as_deref(), Some("2"));
    let r = post(
        &server.url("/v2/models/iris/infer"),
        br#"{"inputs": [{"name": "X", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}"#,
        &forced,
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.served_version.as_deref(), Some("2"));
    // No version was chosen for an unknown model.
    let r = post(
        &server.url("/v1/models/nope/predict"),
        json!({ "features": ROW }).to_string().as_bytes(),
        &[],
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.served_version, None);

    // Version-less metadata describes the version with the highest weight.
    let r = get(&server.url("/v2/models/iris/ready"));
    assert_eq!(r.json()["version"], "1");
    let r = get(&server.url("/v2/models/iris"));
    assert_eq!(r.json()["versions"], json!(["1", "2", "3"]));
}
