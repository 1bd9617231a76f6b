//! A promotion made by another process (the CLI) while `kiln serve` is under a steady
//! request load: the new version takes traffic within 1 s and no request fails.

use kiln_tests::kiln_process::KilnHome;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

struct Seen {
    at: Instant,
    status: u16,
    version: String,
}

#[test]
fn promote_under_load_is_served_within_a_second_with_zero_failed_requests() {
    let home = KilnHome::new();
    // Two versions of one iris classifier: logistic regression, then a linear SVM.
    let v1 = home.register_example("iris_logreg", "iris");
    let v2 = home.register_example("ops_linear_svc", "iris");
    assert_eq!((v1, v2), (1, 2));
    home.run(&["models", "promote", "iris", "1", "Production"]);
    let server = Arc::new(home.serve("serve", &["--cache", "off"]));

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let server = server.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    // Varying features, so no answer could come from a cache.
                    let body = format!(
                        r#"{{"features": [{}, 3.4, 5.6, 2.4], "model_version": "Production"}}"#,
                        5.0 + (i as f64) * 0.1 + f64::from(n % 97) * 0.001
                    );
                    let r = server.post("/v1/models/iris/predict", &body);
                    let version = if r.status == 200 {
                        r.json()["model_version"].as_str().unwrap_or_default().to_string()
                    } else {
                        format!("error: {}", r.body)
                    };
                    seen.push(Seen {
                        at: Instant::now(),
                        status: r.status,
                        version,
                    });
                }
                seen
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(700));
    home.run(&["models", "promote", "iris", "2", "Production"]);
    let committed = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<Seen> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client"))
        .collect();

    let failed: Vec<_> = seen.iter().filter(|s| s.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, first: {}",
        failed.len(),
        seen.len(),
        failed[0].version
    );
    assert!(seen.len() > 50, "only {} requests were made", seen.len());
    assert!(
        seen.iter().any(|s| s.at < committed && s.version == "1"),
        "v1 served before"
    );
    let first_v2 = seen
        .iter()
        .filter(|s| s.version == "2")
        .map(|s| s.at)
        .min()
        .expect("version 2 was never served");
    let delay = first_v2.saturating_duration_since(committed);
    assert!(
        delay <= Duration::from_secs(1),
        "version 2 first served {delay:?} after the promote"
    );
    let late_v1 = seen
        .iter()
        .filter(|s| s.at > committed + Duration::from_secs(1) && s.version != "2")
        .count();
    assert_eq!(
        late_v1, 0,
        "requests still answered by version 1 a second after the promote"
    );
    eprintln!(
        "promote served after {delay:?}; {} requests, 0 failed",
        seen.len()
    );
}
