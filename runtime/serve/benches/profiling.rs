//! What profiling for drift costs per request (issue 14: at most 5 % of throughput on the
//! forest), measured in-process, where this machine's noise does not swamp it.
//!
//! ```sh
//! cargo bench -p kiln-serve --bench profiling [-- --rounds 400]
//! ```
//!
//! Three servers in one process on one host and one forest component, each with its
//! prediction cache off: `profiled` (drift profiles on, the default), `plain` and `plain-2`
//! (`drift_profiles: false`). Requests go through each server's axum router (`Router::call`:
//! routing, access, bulkhead, JSON parsing, the model call, profiling, the JSON answer;
//! no socket and no HTTP parsing). A round sends `--batch` requests to each server in
//! turn (the order rotates from round to round), and after each batch waits `--gap-ms`
//! (30) ms, in which the lowest-priority profiler thread, which comes by every 20 ms,
//! drains what the batch queued. The cost of a
//! batch is the process's CPU time from its first request to the end of that wait: the
//! request path and the profiler thread together ("all CPU"); without the profiler
//! thread's CPU time (its schedstat) it is the request path's.
//!
//! At saturation a CPU-bound server's throughput is its cores over its CPU time per
//! request. The profiler thread runs only on otherwise idle CPU (`SCHED_IDLE`) and sheds
//! rows when it falls behind, so at saturation the request path's ratio profiled ÷ plain
//! is the throughput cost; the "all CPU" ratio is what profiling every row costs, which
//! a server pays below saturation, from CPU it has spare.
//! Without sockets and HTTP parsing the denominator is smaller than a real server's, which
//! overstates the ratio: over HTTP the cost is lower. `plain-2 ÷ plain` is an A/A pair that
//! shows the bench's own noise. Ratios are printed as the median of the rounds' ratios /
//! the ratio of the sums over all rounds.

use axum::body::Body;
use axum::http::Request;
use kiln_host::{Host, HostConfig};
use kiln_node_api::{ModelRouting, RoutingTable, VersionRoute};
use kiln_serve::{Catalog, ServeConfig, Server};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tower_service::Service;

const MODEL: &str = "house-price";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One model, one version, weight 1.
struct OneVersion {
    dir: PathBuf,
    digest: String,
}

impl Catalog for OneVersion {
    fn generation(&self) -> anyhow::Result<u64> {
        Ok(1)
    }

    fn routing(&self) -> anyhow::Result<RoutingTable> {
        let route = VersionRoute {
            version: 1,
            digest: self.digest.clone(),
            weight: 1,
            stage: "Production".into(),
            aliases: Vec::new(),
            open: true,
        };
        let mut table = RoutingTable {
            generation: 1,
            ..RoutingTable::default()
        };
        table.models.insert(
            MODEL.into(),
            ModelRouting {
                versions: vec![route],
                shadow: None,
                serving: None,
            },
        );
        Ok(table)
    }

    fn component_path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.wasm"))
    }
}

/// CPU time of the whole process so far.
fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time of the threads named `kiln-profiler` so far (their schedstat).
fn profiler_cpu() -> Duration {
    let mut ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == "kiln-profiler" {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            ns += stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_nanos(ns)
}

struct Workload {
    name: &'static str,
    path: &'static str,
    body: Vec<u8>,
    /// Requests per batch (about the same CPU time per batch for both workloads).
    batch: usize,
}

fn workloads(batch: usize) -> Vec<Workload> {
    let text = std::fs::read(root().join("examples/models/house_price_forest.request.json"))
        .expect("the forest's example request");
    let request: serde_json::Value = serde_json::from_slice(&text).expect("JSON");
    let input = &request["inputs"][0];
    let width = input["shape"][1].as_u64().expect("a 2-D input") as usize;
    let row: Vec<serde_json::Value> = input["data"].as_array().expect("data")[..width].to_vec();
    let rows: Vec<serde_json::Value> = std::iter::repeat_n(row.clone(), 64).flatten().collect();
    let oip = serde_json::json!({"inputs": [{
        "name": input["name"], "shape": [64, width], "datatype": input["datatype"], "data": rows
    }]});
    vec![
        Workload {
            name: "seed API, 1 row",
            path: "/v1/models/house-price/predict",
            body: serde_json::to_vec(&serde_json::json!({ "features": row })).unwrap(),
            batch,
        },
        Workload {
            name: "OIP, 64 rows",
            path: "/v2/models/house-price/infer",
            body: serde_json::to_vec(&oip).unwrap(),
            batch: (batch / 16).max(1),
        },
    ]
}

/// Sends `n` requests of `w` through `router`; panics on an answer other than 200.
async fn send(router: &mut axum::Router, w: &Workload, n: usize) {
    for _ in 0..n {
        let request = Request::post(w.path)
            .header("content-type", "application/json")
            .body(Body::from(w.body.clone()))
            .unwrap();
        let response = router.call(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        assert!(
            status.is_success(),
            "{}: {status} {}",
            w.path,
            String::from_utf8_lossy(&body)
        );
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut rounds = 300usize;
    let mut batch = 256usize;
    let mut gap = Duration::from_millis(30);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = args.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            "--batch" => batch = args.next().and_then(|v| v.parse().ok()).expect("--batch N"),
            "--gap-ms" => {
                gap = Duration::from_millis(args.next().and_then(|v| v.parse().ok()).expect("--gap-ms N"))
            }
            _ => {} // `cargo bench` passes `--bench`
        }
    }
    let cache = root().join("target/kiln-test-cache");
    let host = Arc::new(
        Host::new(HostConfig {
            cache_dir: Some(cache.join("aot")),
            ..HostConfig::default()
        })
        .expect("host"),
    );
    let onnx = std::fs::read(root().join("examples/models/house_price_forest.onnx")).expect("the forest");
    let wasm =
        kiln_host::compile::compile_cached(&host, &onnx, &Default::default(), &cache.join("components"))
            .expect("compiling the forest");
    let dir = tempfile::tempdir().expect("temp dir");
    let digest = kiln_types::digest(&wasm);
    std::fs::write(dir.path().join(format!("{digest}.wasm")), &wasm).unwrap();
    let catalog: Arc<dyn Catalog> = Arc::new(OneVersion {
        dir: dir.path().to_path_buf(),
        digest,
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let names = ["profiled", "plain", "plain-2"];
    let mut routers: Vec<axum::Router> = names
        .iter()
        .map(|name| {
            let config = ServeConfig {
                drift_profiles: *name == "profiled",
                poll_interval: Duration::from_secs(3600),
                ..ServeConfig::default()
            };
            let server = Server::new(host.clone(), catalog.clone(), config).expect("server");
            runtime.block_on(server.load()).expect("loading the forest");
            server.router()
        })
        .collect();

    println!(
        "in-process request path, {} CPUs; {rounds} rounds; per round each server gets a batch then {} ms idle\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        gap.as_millis()
    );
    println!(
        "| workload | CPU µs/request: profiled | plain | plain-2 | profiled ÷ plain, all CPU | profiled ÷ plain, \
         request path | plain-2 ÷ plain (A/A) | profiler thread µs/request |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for w in workloads(batch) {
        // Warm-up: instances, the first KLL compactions, the allocator.
        for router in &mut routers {
            runtime.block_on(send(router, &w, w.batch * 4));
        }
        std::thread::sleep(Duration::from_millis(50));
        // Per server and round, µs per request: all the process's CPU time, and the same
        // without the profiler thread's (the request path).
        let mut all = vec![Vec::with_capacity(rounds); names.len()];
        let mut path = vec![Vec::with_capacity(rounds); names.len()];
        for round in 0..rounds {
            for k in 0..names.len() {
                let i = (round + k) % names.len();
                let p0 = profiler_cpu();
                let t0 = process_cpu();
                runtime.block_on(send(&mut routers[i], &w, w.batch));
                std::thread::sleep(gap);
                let cpu = (process_cpu() - t0).as_secs_f64() * 1e6 / w.batch as f64;
                let profiler = (profiler_cpu() - p0).as_secs_f64() * 1e6 / w.batch as f64;
                all[i].push(cpu);
                path[i].push(cpu - profiler);
            }
        }
        // The median of the rounds' ratios, and the ratio of the sums.
        let ratio = |v: &[Vec<f64>], a: usize, b: usize| {
            let per_round = median(v[a].iter().zip(&v[b]).map(|(x, y)| x / y).collect());
            let totals = v[a].iter().sum::<f64>() / v[b].iter().sum::<f64>();
            format!("{per_round:.3} / {totals:.3}")
        };
        let profiler: f64 = all[0].iter().zip(&path[0]).map(|(a, p)| a - p).sum::<f64>() / rounds as f64;
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {} | **{}** | {} | {profiler:.2} |",
            w.name,
            median(all[0].clone()),
            median(all[1].clone()),
            median(all[2].clone()),
            ratio(&all, 0, 1),
            ratio(&path, 0, 1),
            ratio(&all, 2, 1),
        );
    }
}
