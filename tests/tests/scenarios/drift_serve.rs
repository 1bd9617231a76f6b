//! Drift on one `kiln serve`: a version registered with a reference CSV is measured
//! against the traffic it serves. Traffic drawn like the reference shows no dataset drift;
//! traffic with three of four features shifted drifts, on those features and on the
//! outputs (the echo model answers its input), in `GET /monitor/v1/drift/{model}`, in the
//! `kiln_feature_drift_score` / `kiln_dataset_drift` gauges, and in `kiln monitor drift`.
//! The statistics themselves are compared with Evidently in `monitor/tests/evidently.rs`.
//! A Parquet reference written by pandas is profiled as pandas counts it.

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

/// Writes, with pandas and pyarrow, a frame of four input columns of the dtypes a training
/// job's frame has (float64, float32 with NaN, int64, bool) as `train.parquet` (Snappy,
/// pandas' default) and `train-zstd.parquet`, plus a frame with a text column, and prints
/// pandas' own count, missing, mean and variance of each column as JSON.
const PANDAS_PARQUET: &str = r#"
import json, sys
import numpy as np, pandas as pd
out = sys.argv[1]
rng = np.random.default_rng(11)
n = 400
b = rng.normal(5, 2, n).astype("float32")
b[::7] = np.nan
df = pd.DataFrame({
    "age": rng.normal(40, 12, n),
    "income": b,
    "visits": rng.integers(0, 30, n).astype("int64"),
    "member": rng.random(n) < 0.3,
}, index=pd.Index(rng.permutation(n), name="customer"))
df.to_parquet(f"{out}/train.parquet")
df.to_parquet(f"{out}/train-zstd.parquet", compression="zstd")
df.assign(city=["Lyon"] * n).to_parquet(f"{out}/text.parquet", index=False)
stats = {c: {"count": int(df[c].count()), "missing": int(df[c].isna().sum()),
             "mean": float(df[c].astype("float64").mean()),
             "var": float(df[c].astype("float64").var(ddof=1))} for c in df.columns}
print(json.dumps(stats))
"#;

#[test]
fn a_parquet_reference_written_by_pandas_is_profiled_as_pandas_counts_it() {
    let home = KilnHome::new();
    let wasm = home.path().join("echo4.wasm");
    std::fs::write(&wasm, kiln_tests::component("echo4")).expect("writing the component");
    let out = std::process::Command::new("python3")
        .args(["-c", PANDAS_PARQUET])
        .arg(home.path())
        .output()
        .expect("running python3 (pandas and pyarrow come with mlflow)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pandas: Value = serde_json::from_slice(&out.stdout).expect("pandas' statistics");

    // Registered with the Snappy file, then set again from the zstd one.
    for file in ["train.parquet", "train-zstd.parquet"] {
        let path = home.path().join(file);
        let path = path.to_str().unwrap_or_default();
        let wasm = wasm.to_str().unwrap_or_default();
        let said = match file {
            "train.parquet" => {
                home.run(&["models", "register", wasm, "--name", "churn", "--reference", path])
            }
            _ => home.run(&["monitor", "reference", "set", "churn/1", path]),
        };
        // The frame's index (`customer`, written by pandas as a column) is not a feature.
        assert!(
            said.contains(&format!("400 rows × 4 features from {file}")),
            "{said}"
        );
        let shown: Value =
            serde_json::from_str(&home.run(&["monitor", "reference", "show", "churn/1", "--json"]))
                .expect("the reference as JSON");
        assert_eq!(
            shown["features"],
            json!(["age", "income", "visits", "member"]),
            "{shown:#}"
        );
        let profile: Value =
            serde_json::from_str(shown["profile"].as_str().unwrap_or_default()).expect("the profile");
        let columns = profile["inputs"]["columns"].as_array().expect("input columns");
        assert_eq!(columns.len(), 4, "{profile:#}");
        // The reference is profiled as the model sees it: cast to its FP32 input, so a
        // float64 column's mean and variance may differ from pandas' in the 8th digit.
        for (column, name) in columns.iter().zip(["age", "income", "visits", "member"]) {
            let p = &column["profile"];
            let want = &pandas[name];
            assert_eq!(p["count"], want["count"], "{name}: {p:#}");
            assert_eq!(p["missing"], want["missing"], "{name}: {p:#}");
            let mean = p["mean"].as_f64().unwrap_or(f64::NAN);
            let want_mean = want["mean"].as_f64().unwrap_or_default();
            assert!(
                (mean - want_mean).abs() <= 1e-6 * want_mean.abs().max(1.0),
                "{name}: mean {mean}, pandas {want_mean}"
            );
            let count = p["count"].as_f64().unwrap_or_default();
            let var = p["m2"].as_f64().unwrap_or(f64::NAN) / (count - 1.0);
            let want_var = want["var"].as_f64().unwrap_or_default();
            assert!(
                (var - want_var).abs() <= 1e-6 * want_var.abs().max(1.0),
                "{name}: variance {var}, pandas {want_var}"
            );
            // Profiled as the model's FP32 input sees them, as live traffic is.
            assert_eq!(p["value_type"], json!("float"), "{name}");
        }
    }

    // A text column is refused by name, by `register` and by `reference set`, and the
    // stored reference stays as it was.
    let text = home.path().join("text.parquet");
    let text = text.to_str().unwrap_or_default();
    let wasm = wasm.to_str().unwrap_or_default();
    for args in [
        vec!["models", "register", wasm, "--name", "other", "--reference", text],
        vec!["monitor", "reference", "set", "churn/1", text],
    ] {
        let refused = home.run_raw(&args);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{stderr}");
        assert!(
            stderr.contains("row 1, column `city`: the text `Lyon` is not a number"),
            "{stderr}"
        );
    }
    let listed = home.run(&["models", "list"]);
    assert!(!listed.contains("other"), "{listed}");
    let shown: Value =
        serde_json::from_str(&home.run(&["monitor", "reference", "show", "churn/1", "--json"]))
            .expect("the reference as JSON");
    assert_eq!(shown["source"], json!("train-zstd.parquet"), "{shown:#}");
}
