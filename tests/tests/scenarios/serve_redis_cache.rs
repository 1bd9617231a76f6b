//! `kiln serve --cache redis://…` against a real `redis-server` started here: identical
//! requests are answered from Redis; when Redis dies the server keeps answering, uncached,
//! and says so in its metrics and logs.

use kiln_tests::kiln_process::{KilnHome, free_port};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) must be installed");
        let redis = Redis {
            child,
            port,
            _dir: dir,
        };
        let started = Instant::now();
        while redis.cli(&["PING"]).trim() != "PONG" {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
    }

    fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn cache_count(metrics: &str, result: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("kiln_prediction_cache_total{") && l.contains(&format!(r#"result="{result}""#))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn redis_cache_hits_and_a_dead_redis_never_fails_requests() {
    let mut redis = Redis::start();
    let home = KilnHome::new();
    let v = home.register_example("house_price_forest", "house-price");
    home.run(&["models", "promote", "house-price", &v.to_string(), "Production"]);
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let server = home.serve("serve", &["--cache", &url]);

    let body = r#"{"features": [1850, 3, 2, 15, 6000, 1, 12.5, 7, 2, 1]}"#;
    let first = server.post("/v1/models/house-price/predict", body);
    assert_eq!(first.status, 200, "{}", first.body);
    // The store happens after the answer; give it a moment.
    let started = Instant::now();
    while redis.cli(&["DBSIZE"]).trim() == "0" {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "nothing was stored in Redis"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = server.post("/v1/models/house-price/predict", body);
    assert_eq!(second.status, 200);
    assert_eq!(first.json()["prediction"], second.json()["prediction"]);
    let metrics = server.get("/metrics").body;
    assert!(cache_count(&metrics, "hit") >= 1.0, "{metrics}");
    assert!(cache_count(&metrics, "miss") >= 1.0, "{metrics}");
    assert!(metrics.contains("kiln_prediction_cache_up 1"), "{metrics}");

    redis.kill();
    let started = Instant::now();
    for i in 0..40 {
        let body = format!(
            r#"{{"features": [{}, 3, 2, 15, 6000, 1, 12.5, 7, 2, 1]}}"#,
            1000 + i
        );
        let r = server.post("/v1/models/house-price/predict", &body);
        assert_eq!(r.status, 200, "request {i} with Redis down: {}", r.body);
    }
    let elapsed = started.elapsed();
    let metrics = server.get("/metrics").body;
    assert!(cache_count(&metrics, "unavailable") >= 1.0, "{metrics}");
    assert!(metrics.contains("kiln_prediction_cache_up 0"), "{metrics}");
    // The breaker stops the server from waiting on Redis for every request.
    assert!(
        elapsed < Duration::from_secs(5),
        "40 requests took {elapsed:?} with Redis down"
    );
    let log = server.log().to_lowercase();
    assert!(log.contains("redis"), "the log should say Redis is down:\n{log}");
}
