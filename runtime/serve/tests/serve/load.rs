//! A quick local load check (ignored by default): client threads send seed requests for a
//! few seconds and the throughput and latency percentiles are printed.
//! `cargo test -p kiln-serve --test serve --release -- --ignored --nocapture load_`

use crate::*;
use serde_json::json;
use std::time::Instant;

#[test]
#[ignore]
fn load_seed_requests_throughput() {
    let catalog = Arc::new(DirCatalog::new());
    catalog.set(vec![
        version(
            &catalog,
            "house_price",
            "house_price_forest",
            1,
            "Production",
            &[],
        ),
        version(&catalog, "iris", "iris_logreg", 1, "Production", &[]),
    ]);
    let server = TestServer::start(catalog);
    let threads: usize = std::env::var("KILN_LOAD_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    for model in ["iris", "house_price"] {
        let rows = request_rows(if model == "iris" {
            "iris_logreg"
        } else {
            "house_price_forest"
        });
        let url = server.url(&format!("/v1/models/{model}/predict"));
        let body = json!({ "features": rows[0] }).to_string();
        // Warm up.
        for _ in 0..50 {
            assert_eq!(post(&url, body.as_bytes(), &[]).status, 200);
        }
        let started = Instant::now();
        let duration = Duration::from_secs(3);
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (url, body) = (url.clone(), body.clone());
                std::thread::spawn(move || {
                    let agent = agent();
                    let mut latencies = Vec::new();
                    while started.elapsed() < duration {
                        let t = Instant::now();
                        let r = agent.post(&url).send(body.as_bytes()).expect("request");
                        assert_eq!(r.status().as_u16(), 200);
                        latencies.push(t.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        let mut all: Vec<Duration> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
        all.sort();
        let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
        eprintln!(
            "{model}: {threads} client threads, {:.0} req/s, p50 {:?}, p99 {:?}",
            all.len() as f64 / started.elapsed().as_secs_f64(),
            pct(0.5),
            pct(0.99)
        );
    }
}
