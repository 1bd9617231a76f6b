//! A model that loops, hogs memory or panics, served over HTTP: each request gets a JSON
//! 5xx naming what happened, other requests keep being answered, and the server goes on.

use crate::*;
use std::time::{Duration, Instant};

fn predict(server: &TestServer, first: f64) -> Reply {
    let body = format!(r#"{{"features": [{first}, 2, 3, 4]}}"#);
    post(&server.url("/v1/models/bad/predict"), body.as_bytes(), &[])
}

#[test]
fn a_looping_hogging_or_panicking_model_gets_json_5xx_and_the_server_keeps_serving() {
    let catalog = Arc::new(DirCatalog::new());
    catalog.set(vec![version_of(
        &catalog,
        "bad",
        kiln_host::guest::TEST_GUEST_WASM,
        1,
        "Production",
        &[],
    )]);
    let server = Arc::new(TestServer::start(catalog));
    // Fast, well-behaved calls first, so the server runs this model inline on its
    // async workers: a misbehaving call must still not take the server down with it.
    for _ in 0..20 {
        let ok = predict(&server, 1.0);
        assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
        assert_eq!(ok.json()["prediction"], serde_json::json!([1.0, 2.0, 3.0, 4.0]));
    }

    let trap = predict(&server, -3.0);
    assert_eq!(trap.status, 500, "{}", String::from_utf8_lossy(&trap.body));
    assert_eq!(trap.json()["kind"], "trap");

    // The shared test host caps memory at 512 MiB: on a busy machine, zeroing that much
    // can outlast the 1 s deadline first, so either limit may be the one that stops it.
    let hog = predict(&server, -2.0);
    let kind = hog.json()["kind"].as_str().unwrap_or_default().to_string();
    assert!(
        (hog.status == 500 && kind == "memory_limit") || (hog.status == 504 && kind == "timeout"),
        "{} {}",
        hog.status,
        String::from_utf8_lossy(&hog.body)
    );

    // A looping call runs into the 1 s deadline; meanwhile another request is answered.
    let spinning = {
        let server = server.clone();
        std::thread::spawn(move || predict(&server, -1.0))
    };
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let meanwhile = predict(&server, 1.0);
    let waited = started.elapsed();
    let spin = spinning.join().expect("spinning client");
    assert_eq!(spin.status, 504, "{}", String::from_utf8_lossy(&spin.body));
    assert_eq!(spin.json()["kind"], "timeout");
    assert_eq!(meanwhile.status, 200);
    eprintln!("a request during the looping call waited {waited:?}");

    let after = predict(&server, 1.0);
    assert_eq!(after.status, 200, "the server keeps serving after the faults");
    let metrics = String::from_utf8_lossy(&get(&server.url("/metrics")).body).into_owned();
    for kind in ["trap", "timeout"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("kiln_inference_errors_total{")
                    && l.contains(&format!(r#"kind="{kind}""#))
                    && l.contains(r#"model="bad""#)),
            "no {kind} error counted:\n{metrics}"
        );
    }
}
