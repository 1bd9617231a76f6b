//! Backpressure and fallbacks: a full bulkhead sheds with 503 `overloaded` and
//! `Retry-After` (counted apart from the version's errors), a large batch of a fast model
//! does not hold the async workers, the body bytes in flight are bounded, JSON has its
//! own limit, and a failing version is answered by the model's fallback.

use crate::*;
use kiln_serve::{Fallback, Limits};
use std::time::{Duration, Instant};

fn predict(server: &TestServer, model: &str, first: f64) -> Reply {
    let body = format!(r#"{{"features": [{first}, 2, 3, 4]}}"#);
    post(
        &server.url(&format!("/v1/models/{model}/predict")),
        body.as_bytes(),
        &[],
    )
}

/// An OIP body of `rows` rows of ones whose first value, -1, makes the misbehaving model
/// loop into its deadline.
fn spinning_body(rows: usize) -> String {
    let mut values = vec!["1"; rows * 4];
    values[0] = "-1";
    format!(
        r#"{{"inputs": [{{"name": "x", "shape": [{rows}, 4], "datatype": "FP32", "data": [{}]}}]}}"#,
        values.join(",")
    )
}

fn misbehaving(catalog: &DirCatalog, name: &str) -> ServedVersion {
    version_of(
        catalog,
        name,
        kiln_host::guest::TEST_GUEST_WASM,
        1,
        "Production",
        &[],
    )
}

/// Keeps a call of `model` spinning into its deadline (another when one ends) while calling
/// the model with a fast row until a call is refused, for at most 60 s: the refusal, and
/// the answers of every spinning call, the last one being the call that held the slot
/// when the refusal came. (A spinning call can end without holding the slot for long,
/// for instance when the test process's other servers hold every instance slot of the
/// shared host; without a new one the loop would never see a refusal.)
fn shed_behind_spinning_calls(server: &Arc<TestServer>, model: &str) -> (Reply, Vec<Reply>) {
    let spin = || {
        let (server, model) = (server.clone(), model.to_string());
        std::thread::spawn(move || predict(&server, &model, -1.0))
    };
    let limit = Instant::now() + Duration::from_secs(60);
    let mut spinning = spin();
    let mut answers = Vec::new();
    loop {
        let r = predict(server, model, 1.0);
        if r.status != 200 {
            answers.push(spinning.join().expect("spinning client"));
            return (r, answers);
        }
        if spinning.is_finished() {
            answers.push(spinning.join().expect("spinning client"));
            spinning = spin();
        }
        assert!(
            Instant::now() < limit,
            "no call was refused within 60 s; the spinning calls answered {:?}",
            answers.iter().map(|a| a.status).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn node_state(server: &TestServer) -> kiln_node_api::NodeState {
    let r = send(
        "GET",
        &server.url("/admin/v1/state"),
        b"",
        &[("authorization", format!("Bearer {TOKEN}"))],
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    serde_json::from_slice(&r.body).expect("node state")
}

#[test]
fn a_full_bulkhead_sheds_with_503_retry_after_and_no_error_of_the_version() {
    let catalog = Arc::new(DirCatalog::new());
    catalog.set(vec![misbehaving(&catalog, "bad")]);
    let mut config = admin_config();
    config.bulkheads.insert(
        "bad".into(),
        Limits {
            max_concurrent: 1,
            max_queue: 0,
        },
    );
    let server = Arc::new(TestServer::start_with(catalog, config));
    assert_eq!(predict(&server, "bad", 1.0).status, 200);
    // One call spins into its 1 s deadline and holds the model's only slot.
    let (shed, spins) = shed_behind_spinning_calls(&server, "bad");
    assert_eq!(shed.status, 503, "{}", String::from_utf8_lossy(&shed.body));
    assert_eq!(shed.json()["kind"], "overloaded");
    assert!(
        shed.json()["error"]
            .as_str()
            .unwrap_or_default()
            .contains("at capacity"),
        "{}",
        shed.json()
    );
    assert_eq!(shed.retry_after.as_deref(), Some("1"));
    assert_eq!(spins.last().map(|s| s.status), Some(504));
    // The slot is free again.
    assert_eq!(predict(&server, "bad", 1.0).status, 200);

    let metrics = String::from_utf8_lossy(&get(&server.url("/metrics")).body).into_owned();
    assert!(
        metrics.lines().any(|l| l.starts_with("kiln_overloaded_total{")
            && l.contains(r#"model="bad""#)
            && l.contains(r#"reason="bulkhead""#)),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l.starts_with("kiln_bulkhead_calls{")
            && l.contains(r#"model="bad""#)
            && l.contains(r#"state="max_concurrent""#)
            && l.ends_with(" 1")),
        "{metrics}"
    );
    // What the sync service's canary analysis reads: the timeout is the version's error,
    // the shed requests are not.
    let stats = node_state(&server);
    let v1 = stats
        .versions
        .iter()
        .find(|v| v.model == "bad" && v.version == 1)
        .expect("version stats");
    let timeouts = spins.iter().filter(|s| s.status == 504).count() as u64;
    assert_eq!(v1.server_errors, timeouts, "{v1:?}");
    // A request shed before a version was chosen (the bulkhead was full when it came) is
    // the model's, under no version; one that got past that check while the spinning call
    // was taking the slot is shed when it asks for the slot, under its version, and counted
    // there as overloaded, never as an error. Which one happens is a matter of timing.
    let shed_lines: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("kiln_requests_total{")
                && l.contains(r#"code="503""#)
                && l.contains(r#"model="bad""#)
        })
        .collect();
    assert!(!shed_lines.is_empty(), "{metrics}");
    if shed_lines.iter().any(|l| l.contains(r#"version="1""#)) {
        assert!(v1.overloaded >= 1, "{v1:?}");
    } else {
        assert!(
            shed_lines.iter().all(|l| l.contains(r#"version="""#)),
            "{metrics}"
        );
    }
}

/// Health's wait while as many spinning calls (`rows` rows each) as the server has async
/// workers (2) run into their 1 s deadline, on a model whose earlier calls were fast.
fn health_wait_behind_spinning_calls(rows: usize) -> Duration {
    let catalog = Arc::new(DirCatalog::new());
    catalog.set(vec![misbehaving(&catalog, "bad")]);
    let server = Arc::new(TestServer::start(catalog));
    // Fast single-row calls: the server would run this model inline on its workers.
    for _ in 0..20 {
        assert_eq!(predict(&server, "bad", 1.0).status, 200);
    }
    let body = spinning_body(rows);
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let (server, body) = (server.clone(), body.clone());
            std::thread::spawn(move || post(&server.url("/v2/models/bad/infer"), body.as_bytes(), &[]))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let live = get(&server.url("/v2/health/live"));
    let waited = started.elapsed();
    for c in calls {
        assert_eq!(c.join().expect("client").status, 504);
    }
    assert_eq!(live.status, 200);
    waited
}

#[test]
fn a_large_batch_of_a_fast_model_leaves_the_async_workers_free() {
    // 8192 rows (128 KiB): over the inline size, on the blocking pool from the start.
    // Inline, the batches would hold both workers until their deadline (~700 ms more).
    let waited = health_wait_behind_spinning_calls(8192);
    assert!(
        waited < Duration::from_millis(400),
        "health waited {waited:?} behind two long batches"
    );
}

#[test]
fn a_fast_model_looping_on_one_row_leaves_the_async_workers_free() {
    // One row: inline, stopped after the inline deadline and run again on the pool.
    let waited = health_wait_behind_spinning_calls(1);
    assert!(
        waited < Duration::from_millis(400),
        "health waited {waited:?} behind two looping calls"
    );
}

#[test]
fn json_bodies_have_their_own_limit_and_the_error_names_the_binary_extension() {
    let catalog = Arc::new(DirCatalog::new());
    catalog.set(vec![misbehaving(&catalog, "bad")]);
    let config = ServeConfig {
        max_json_bytes: 1 << 10,
        ..ServeConfig::default()
    };
    let server = TestServer::start_with(catalog, config);
    let rows = 64;
    let body = format!(
        r#"{{"inputs": [{{"name": "x", "shape": [{rows}, 4], "datatype": "FP32", "data": [{}]}}]}}"#,
        vec!["1.5"; rows * 4].join(",")
    );
    assert!(body.len() > 1 << 10);
    let r = post(&server.url("/v2/models/bad/infer"), body.as_bytes(), &[]);
    assert_eq!(r.status, 413, "{}", String::from_utf8_lossy(&r.body));
    let error = r.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("binary tensor extension"), "{error}");
    // The same tensors in the binary extension pass (the JSON part is small).
    let header = format!(
        r#"{{"inputs": [{{"name": "x", "shape": [{rows}, 4], "datatype": "FP32", "parameters": {{"binary_data_size": {}}}}}]}}"#,
        rows * 16
    );
    let mut binary = header.clone().into_bytes();
    for _ in 0..rows * 4 {
        binary.extend(1.5f32.to_le_bytes());
    }
    let r = post(
        &server.url("/v2/models/bad/infer"),
        &binary,
        &[("inference-header-content-length", header.len().to_string())],
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

#[test]
fn request_bytes_in_flight_are_bounded_and_the_excess_is_shed() {
    let catalog = Arc::new(DirCatalog::new());
    catalog.set(vec![misbehaving(&catalog, "bad")]);
    let config = ServeConfig {
        max_body_bytes_in_flight: 64 << 10,
        ..ServeConfig::default()
    };
    let server = Arc::new(TestServer::start_with(catalog, config));
    // A spinning ~40 KiB request holds most of the 64 KiB budget for its 1 s deadline.
    let rows = 5000;
    let big = spinning_body(rows);
    assert!(big.len() > 32 << 10 && big.len() < 64 << 10, "{}", big.len());
    let holding = {
        let (server, big) = (server.clone(), big.clone());
        std::thread::spawn(move || post(&server.url("/v2/models/bad/infer"), big.as_bytes(), &[]))
    };
    std::thread::sleep(Duration::from_millis(300));
    let shed = post(&server.url("/v2/models/bad/infer"), big.as_bytes(), &[]);
    assert_eq!(shed.status, 503, "{}", String::from_utf8_lossy(&shed.body));
    assert_eq!(shed.json()["kind"], "overloaded");
    assert_eq!(shed.retry_after.as_deref(), Some("1"));
    // A small request still fits beside it.
    assert_eq!(predict(&server, "bad", 1.0).status, 200);
    assert_eq!(holding.join().expect("client").status, 504);
    let metrics = String::from_utf8_lossy(&get(&server.url("/metrics")).body).into_owned();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("kiln_overloaded_total{") && l.contains(r#"reason="body_bytes""#)),
        "{metrics}"
    );
}

#[test]
fn a_failing_version_is_answered_by_the_previous_version_and_marked() {
    let catalog = Arc::new(DirCatalog::new());
    // Version 1 is the echo model (y = x, as onnxruntime computes it); version 2, the
    // misbehaving one, takes the traffic and traps on a first value of -3.
    let echo = component("echo4");
    // Staging: loaded beside Production, without traffic.
    let v1 = version_of(&catalog, "m", &echo, 1, "Staging", &[]);
    let v2 = version_of(
        &catalog,
        "m",
        kiln_host::guest::TEST_GUEST_WASM,
        2,
        "Production",
        &[],
    );
    catalog.set(vec![v1, v2]);
    let mut config = admin_config();
    config.fallbacks.insert("m".into(), Fallback::Previous);
    let server = TestServer::start_with(catalog, config);
    let ok = predict(&server, "m", 1.0);
    assert_eq!(ok.served_version.as_deref(), Some("2"));
    assert_eq!(ok.fallback, None);

    let r = predict(&server, "m", -3.0);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.served_version.as_deref(),
        Some("1"),
        "the version that answered"
    );
    assert_eq!(
        r.fallback.as_deref(),
        Some("previous; failed-version=2; kind=trap")
    );
    assert_eq!(r.json()["prediction"], serde_json::json!([-3.0, 2.0, 3.0, 4.0]));
    // The failure is still version 2's.
    let stats = node_state(&server);
    let v2 = stats.versions.iter().find(|v| v.version == 2).expect("v2 stats");
    assert_eq!(v2.server_errors, 1, "{v2:?}");
    let metrics = String::from_utf8_lossy(&get(&server.url("/metrics")).body).into_owned();
    assert!(
        metrics.lines().any(|l| l.starts_with("kiln_fallback_total{")
            && l.contains(r#"fallback="previous""#)
            && l.contains(r#"version="2""#)
            && l.contains(r#"kind="trap""#)),
        "{metrics}"
    );
}

#[test]
fn a_fixed_fallback_answers_every_row_and_a_model_without_one_fails_as_before() {
    let catalog = Arc::new(DirCatalog::new());
    catalog.set(vec![misbehaving(&catalog, "bad"), misbehaving(&catalog, "plain")]);
    let mut config = ServeConfig::default();
    config.fallbacks.insert(
        "bad".into(),
        Fallback::fixed_from_json(br#"{"outputs": {"y": [0, 0, 0, 0]}}"#).unwrap(),
    );
    let server = TestServer::start_with(catalog, config);
    let body = r#"{"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [-3, 1, 1, 1, 1, 1, 1, 1]}]}"#;
    let r = post(&server.url("/v2/models/bad/infer"), body.as_bytes(), &[]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.fallback.as_deref(), Some("fixed; failed-version=1; kind=trap"));
    let out = &r.json()["outputs"][0];
    assert_eq!(out["shape"], serde_json::json!([2, 4]));
    assert_eq!(
        out["data"],
        serde_json::json!([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    );
    // Bad input is the client's: no fallback.
    let wrong = post(
        &server.url("/v2/models/bad/infer"),
        br#"{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}"#,
        &[],
    );
    assert_eq!(wrong.status, 400);
    assert_eq!(wrong.fallback, None);
    let plain = post(&server.url("/v2/models/plain/infer"), body.as_bytes(), &[]);
    assert_eq!(plain.status, 500);
    assert_eq!(plain.json()["kind"], "trap");
}

#[test]
fn the_routing_tables_serving_policy_sets_the_bulkhead_and_fallback_and_a_flag_wins() {
    let catalog = Arc::new(DirCatalog::new());
    let (digest, _) = catalog.store(kiln_host::guest::TEST_GUEST_WASM);
    let routing = |name: &str| {
        let entry = kiln_node_api::ModelRouting {
            versions: vec![crate::routing::route(1, &digest, 100, "Production", &[])],
            shadow: None,
            // What kiln.toml's `serving` sends a node: one call at once, none waiting, and
            // fixed outputs when the version fails.
            serving: Some(
                serde_json::from_value(serde_json::json!({
                    "max_concurrency": 1,
                    "max_queue": 0,
                    "fallback": { "outputs": { "y": [9, 9, 9, 9] } },
                }))
                .unwrap(),
            ),
        };
        (name.to_string(), entry)
    };
    catalog.set_routing(kiln_node_api::RoutingTable {
        generation: 0,
        models: [routing("bad"), routing("flagged")].into_iter().collect(),
        readers: Vec::new(),
    });
    let mut config = ServeConfig::default();
    // A server's own flag for a model wins over the table's policy.
    config.bulkheads.insert(
        "flagged".into(),
        Limits {
            max_concurrent: 4,
            max_queue: 4,
        },
    );
    let server = Arc::new(TestServer::start_with(catalog, config));

    let trapped = predict(&server, "bad", -3.0);
    assert_eq!(trapped.status, 200, "{}", String::from_utf8_lossy(&trapped.body));
    assert_eq!(
        trapped.fallback.as_deref(),
        Some("fixed; failed-version=1; kind=trap")
    );
    assert_eq!(
        trapped.json()["prediction"],
        serde_json::json!([9.0, 9.0, 9.0, 9.0])
    );

    let (shed, spins) = shed_behind_spinning_calls(&server, "bad");
    assert_eq!(shed.status, 503);
    assert_eq!(shed.json()["kind"], "overloaded");
    // The spinning call timed out: the fixed fallback answers it too.
    let spin = spins.last().expect("a spinning call");
    assert_eq!(
        spin.fallback.as_deref(),
        Some("fixed; failed-version=1; kind=timeout")
    );
    let metrics = String::from_utf8_lossy(&get(&server.url("/metrics")).body).into_owned();
    let limit = |model: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("kiln_bulkhead_calls{")
                    && l.contains(&format!(r#"model="{model}""#))
                    && l.contains(r#"state="max_concurrent""#)
            })
            .map(|l| l.rsplit(' ').next().unwrap_or_default().to_string())
    };
    assert_eq!(limit("bad").as_deref(), Some("1"), "{metrics}");
    // `flagged` has not been called yet: call it once so its bulkhead exists.
    assert_eq!(predict(&server, "flagged", 1.0).status, 200);
    let metrics = String::from_utf8_lossy(&get(&server.url("/metrics")).body).into_owned();
    assert!(
        metrics.lines().any(|l| l.starts_with("kiln_bulkhead_calls{")
            && l.contains(r#"model="flagged""#)
            && l.contains(r#"state="max_concurrent""#)
            && l.ends_with(" 4")),
        "{metrics}"
    );
}

#[test]
fn the_health_listener_answers_while_the_main_runtime_is_stuck() {
    let server = Server::new(host(), Arc::new(DirCatalog::new()), ServeConfig::default()).unwrap();
    let health = server
        .serve_health(std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .unwrap();
    let probe = |path: &str| get(&format!("http://{}{path}", health.addr()));
    // Bound before the load: alive, not ready.
    assert_eq!(probe("/v2/health/live").status, 200);
    assert_eq!(probe("/v2/health/ready").status, 503);

    // The main port on a one-thread runtime, whose thread a task then blocks for 3 s.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let main = {
        let server = server.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                server.load().await.unwrap();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let run = tokio::spawn(server.run(listener, async move {
                    let _ = stop_rx.await;
                }));
                tokio::time::sleep(Duration::from_millis(300)).await;
                std::thread::sleep(Duration::from_secs(3));
                run.await.unwrap().unwrap();
            })
        })
    };
    let main_addr = addr_rx.recv_timeout(Duration::from_secs(60)).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    // The main runtime is stuck: its own health route waits for it...
    let stuck = {
        std::thread::spawn(move || {
            let started = Instant::now();
            let r = get(&format!("http://{main_addr}/v2/health/live"));
            (r.status, started.elapsed())
        })
    };
    // ...while the health listener answers at once, ready now.
    std::thread::sleep(Duration::from_millis(100));
    for path in ["/v2/health/live", "/v2/health/ready"] {
        let started = Instant::now();
        let r = probe(path);
        assert_eq!(r.status, 200, "{path}: {}", String::from_utf8_lossy(&r.body));
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{path} took {:?}",
            started.elapsed()
        );
    }
    let metrics = probe("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(String::from_utf8_lossy(&metrics.body).contains("kiln_build_info"));
    let (status, waited) = stuck.join().unwrap();
    assert_eq!(status, 200);
    assert!(
        waited >= Duration::from_secs(1),
        "the main port answered in {waited:?}: the runtime was not stuck"
    );
    // Only health and metrics are served there, with the API's JSON 404.
    let other = probe("/v2/models/m/ready");
    assert_eq!(other.status, 404);
    assert!(
        other.json()["error"]
            .as_str()
            .unwrap()
            .contains("health listener"),
        "{:?}",
        other.json()
    );
    let _ = stop_tx.send(());
    main.join().unwrap();
    drop(health);
}
