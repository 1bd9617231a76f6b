//! Hot reload: a catalog change made while a client sends requests is served within a
//! second, without a failed request; a version that fails to load leaves the previous
//! routes serving.

use crate::metrics::sample;
use crate::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

#[test]
fn reload_promotes_a_new_version_within_a_second_without_failed_requests() {
    let catalog = Arc::new(DirCatalog::new());
    let v1 = version(
        &catalog,
        "house_price",
        "house_price_forest",
        1,
        "Production",
        &[],
    );
    let v2_wasm = component_variant("house_price_forest", "2");
    catalog.set(vec![v1.clone()]);
    let server = TestServer::start(catalog.clone());
    let (_, want) = reference("house_price_forest", "variable");
    let rows = request_rows("house_price_forest");

    // A client sending requests back to back, recording when each answer arrived.
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (url, stop, rows, want) = (
            server.url("/v1/models/house_price/predict"),
            stop.clone(),
            rows.clone(),
            want.clone(),
        );
        std::thread::spawn(move || {
            let mut seen: Vec<(Instant, u16, String)> = Vec::new();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let row = i % rows.len();
                let r = post_json(
                    &url,
                    &json!({ "features": rows[row], "model_version": "Production" }),
                );
                let version = if r.status == 200 {
                    let body = r.json();
                    let got = body["prediction"].as_f64().unwrap_or(f64::NAN);
                    assert!(close(got, want[row]), "row {row}: {got} vs {}", want[row]);
                    body["model_version"].as_str().unwrap_or("").to_string()
                } else {
                    String::from_utf8_lossy(&r.body).into_owned()
                };
                seen.push((Instant::now(), r.status, version));
                i += 1;
            }
            seen
        })
    };

    std::thread::sleep(Duration::from_millis(300));
    let mut v1_archived = v1.clone();
    v1_archived.stage = "Archived".into();
    let changed = Instant::now();
    catalog.set(vec![
        v1_archived,
        version_of(&catalog, "house_price", &v2_wasm, 2, "Production", &[]),
    ]);
    // Wait until the promotion shows, then let the client run a little longer.
    let deadline = changed + Duration::from_secs(10);
    while Instant::now() < deadline {
        let r = get(&server.url("/v2/models/house_price/versions/Production"));
        if r.json()["versions"] == json!(["2"]) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let seen = client.join().expect("client thread");

    let failed: Vec<_> = seen.iter().filter(|(_, s, _)| *s != 200).collect();
    assert!(failed.is_empty(), "failed requests during the reload: {failed:?}");
    assert!(seen.len() > 20, "only {} requests", seen.len());
    let first_v2 = seen
        .iter()
        .position(|(_, _, v)| v == "2")
        .expect("v2 was never served");
    let took = seen[first_v2].0.duration_since(changed);
    assert!(took < Duration::from_secs(1), "promotion served after {took:?}");
    assert!(
        seen[first_v2..].iter().all(|(_, _, v)| v == "2"),
        "once switched, every request goes to v2"
    );
    assert!(seen[..first_v2].iter().all(|(_, _, v)| v == "1"));
    eprintln!(
        "promotion served {took:?} after the catalog change; {} requests, {} before the switch",
        seen.len(),
        first_v2
    );

    // v1 is archived and not served any more: its component is unloaded.
    let metrics = String::from_utf8(get(&server.url("/metrics")).body).unwrap();
    assert_eq!(sample(&metrics, "kiln_models_loaded", &[]), Some(1.0));
    assert_eq!(sample(&metrics, "kiln_routing_generation", &[]), Some(2.0));
}

#[test]
fn reload_keeps_serving_the_previous_version_when_a_new_one_fails_to_load() {
    let catalog = Arc::new(DirCatalog::new());
    let v1 = version(&catalog, "iris", "iris_logreg", 1, "Production", &["champion"]);
    catalog.set(vec![v1.clone()]);
    let server = TestServer::start(catalog.clone());
    let features = json!({ "features": [5.1, 3.5, 1.4, 0.2], "model_version": "Production" });
    let url = server.url("/v1/models/iris/predict");

    // v2's blob does not match its digest (corrupted in transit).
    let mut broken = version(&catalog, "iris", "iris_logreg", 2, "Production", &["champion"]);
    broken.digest = "0".repeat(64);
    let mut v1_archived = v1.clone();
    v1_archived.stage = "Archived".into();
    v1_archived.aliases.clear();
    catalog.set(vec![v1_archived.clone(), broken]);
    std::thread::sleep(Duration::from_millis(600));
    let r = post_json(&url, &features);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["model_version"], "1", "the old Production keeps serving");
    let metrics = String::from_utf8(get(&server.url("/metrics")).body).unwrap();
    assert!(sample(&metrics, "kiln_reloads_total", &[("result", "error")]).unwrap_or(0.0) >= 1.0);
    assert_eq!(
        sample(&metrics, "kiln_model_load_failures_total", &[("model", "iris")]),
        Some(1.0),
        "a failed version is tried once per generation"
    );

    // A later generation with a good blob loads and serves it.
    let fixed = version_of(
        &catalog,
        "iris",
        &component_variant("iris_logreg", "2"),
        2,
        "Production",
        &["champion"],
    );
    catalog.set(vec![v1_archived, fixed]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = post_json(&url, &features);
        assert_eq!(r.status, 200);
        if r.json()["model_version"] == "2" {
            break;
        }
        assert!(Instant::now() < deadline, "the fixed v2 was never served");
        std::thread::sleep(Duration::from_millis(20));
    }
}
