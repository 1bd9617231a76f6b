//! Drift on one `kiln serve`: a version registered with a reference CSV is measured
//! against the traffic it serves. Traffic drawn like the reference shows no dataset drift;
//! traffic with three of four features shifted drifts, on those features and on the
//! outputs (the echo model answers its input), in `GET /monitor/v1/drift/{model}`, in the
//! `kiln_feature_drift_score` / `kiln_dataset_drift` gauges, and in `kiln monitor drift`.
//! The statistics themselves are compared with Evidently in `monitor/tests/evidently.rs`.

use kiln_tests::kiln_process::{KilnHome, Server};
use serde_json::{Value, json};

/// Deterministic standard normal draws (xorshift64* and Box–Muller).
pub struct Normal(u64);

impl Normal {
    pub fn new(seed: u64) -> Normal {
        Normal(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    pub fn draw(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// `rows` rows of 4 features, each feature i shifted by `shift[i]`.
    pub fn rows(&mut self, rows: usize, shift: [f64; 4]) -> Vec<[f64; 4]> {
        (0..rows)
            .map(|_| std::array::from_fn(|i| self.draw() + shift[i]))
            .collect()
    }
}

/// Sends `rows` to the echo model over OIP, 50 rows a request.
pub fn send(server: &Server, path: &str, rows: &[[f64; 4]]) {
    for chunk in rows.chunks(50) {
        let data: Vec<f64> = chunk.iter().flatten().copied().collect();
        let body =
            json!({"inputs": [{"name": "x", "shape": [chunk.len(), 4], "datatype": "FP32", "data": data}]});
        let reply = server.post(path, &body.to_string());
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
}

/// A CSV of `rows` under the header `a,b,c,d`.
pub fn csv(rows: &[[f64; 4]]) -> String {
    let mut text = "a,b,c,d\n".to_string();
    for r in rows {
        text.push_str(&format!("{},{},{},{}\n", r[0], r[1], r[2], r[3]));
    }
    text
}

fn drift(server: &Server) -> Value {
    let reply = server.get("/monitor/v1/drift/echo?since=15m");
    assert_eq!(reply.status, 200, "{}", reply.body);
    serde_json::from_str(&reply.body).expect("JSON")
}

fn drifted(report: &Value, table: &str) -> Vec<String> {
    report[table]
        .as_array()
        .expect("columns")
        .iter()
        .filter(|c| c["drift"] == json!(true))
        .map(|c| c["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn kiln_serve_measures_drift_against_the_reference_registered_with_the_version() {
    let home = KilnHome::new();
    let wasm = home.path().join("echo4.wasm");
    std::fs::write(&wasm, kiln_tests::component("echo4")).expect("writing the component");
    let reference = home.path().join("train.csv");
    std::fs::write(&reference, csv(&Normal::new(1).rows(500, [0.0; 4]))).expect("writing the CSV");
    let out = home.run(&[
        "models",
        "register",
        wasm.to_str().unwrap_or_default(),
        "--name",
        "echo",
        "--reference",
        reference.to_str().unwrap_or_default(),
        "--stage",
        "Production",
    ]);
    assert!(
        out.contains("reference for drift: 500 rows × 4 features from train.csv"),
        "{out}"
    );
    let shown = home.run(&["monitor", "reference", "show", "echo/1"]);
    assert!(shown.contains("500 rows from train.csv"), "{shown}");
    assert!(
        shown.contains("output:y[3]"),
        "the outputs were profiled too:\n{shown}"
    );

    let server = home.serve("serve", &["--cache", "off"]);
    let none = server.get("/monitor/v1/drift/echo");
    assert_eq!(none.status, 404, "{}", none.body);
    assert!(none.body.contains("no traffic"), "{}", none.body);
    let bad = server.get("/monitor/v1/drift/echo?since=2h");
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(server.get("/monitor/v1/drift/nope").status, 404);

    // Traffic like the reference (another seed): no dataset drift.
    send(
        &server,
        "/v2/models/echo/infer",
        &Normal::new(2).rows(300, [0.0; 4]),
    );
    let calm = drift(&server);
    assert_eq!(calm["rows"], json!(300));
    assert_eq!(calm["reference_rows"], json!(500));
    assert_eq!(calm["dataset_drift"], json!(false), "{calm:#}");
    let methods: Vec<&str> = calm["features"]
        .as_array()
        .expect("features")
        .iter()
        .map(|f| f["method"].as_str().unwrap_or_default())
        .collect();
    // Evidently's choice for a numeric column with a reference of ≤ 1000 rows.
    assert_eq!(methods, ["ks"; 4]);
    let names: Vec<&str> = calm["features"]
        .as_array()
        .expect("features")
        .iter()
        .map(|f| f["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["a", "b", "c", "d"]);
    assert_eq!(calm["outputs"].as_array().map(Vec::len), Some(4));

    // Three features shifted by two standard deviations: they drift, `d` does not, and
    // the echoed outputs drift with them.
    send(
        &server,
        "/v2/models/echo/infer",
        &Normal::new(3).rows(600, [2.0, 2.0, 2.0, 0.0]),
    );
    let shifted = drift(&server);
    assert_eq!(shifted["rows"], json!(900));
    assert_eq!(shifted["dataset_drift"], json!(true), "{shifted:#}");
    assert_eq!(drifted(&shifted, "features"), ["a", "b", "c"], "{shifted:#}");
    assert_eq!(
        drifted(&shifted, "outputs"),
        ["y[0]", "y[1]", "y[2]"],
        "{shifted:#}"
    );

    let metrics = server.get("/metrics").body;
    assert!(
        metrics.contains("kiln_dataset_drift{model=\"echo\",version=\"1\"} 1"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("drift"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        metrics.lines().any(|l| l.starts_with(
            "kiln_feature_drift_score{feature=\"a\",method=\"ks\",model=\"echo\",version=\"1\"}"
        )),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("drift"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    let table = home.run(&["monitor", "drift", "echo", "--url", &server.url("")]);
    assert!(
        table.contains("dataset drift: YES (75% of 4 features drifted"),
        "{table}"
    );
    assert!(table.contains("output:y[0]"), "{table}");
}
