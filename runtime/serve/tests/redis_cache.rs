//! The prediction cache against a real `redis-server` started by each test on a free
//! loopback port: hits, expiry, a server that dies and comes back (circuit breaker), and a
//! corrupt value. `redis-server` must be installed (Debian: `apt-get install redis-server`);
//! without it these tests fail rather than skip, so CI cannot silently lose them.

use kiln_serve::prediction_cache::{CacheConfig, CacheKey, DEFAULT_REDIS_TIMEOUT, Lookup, PredictionCache};
use kiln_types::{ElementType, Tensor};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` child on 127.0.0.1, killed on drop.
struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("temporary directory for redis-server");
        let port = free_port();
        let mut server = RedisServer {
            child: None,
            port,
            dir,
        };
        server.spawn();
        server
    }

    fn binary() -> PathBuf {
        let found = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("redis-server"))
                .find(|p| p.is_file())
        });
        found.unwrap_or_else(|| {
            panic!(
                "redis-server is not installed; these tests need a real Redis. \
                 Install it (Debian/Ubuntu: `apt-get install -y redis-server`) and rerun."
            )
        })
    }

    fn spawn(&mut self) {
        let log = self.dir.path().join("redis.log");
        let child = Command::new(Self::binary())
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers_ping() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("redis-server exited with {status} on port {}:\n{log}", self.port);
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING in 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut reply = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("local address").port()
}

fn tensor(name: &str, values: &[f32]) -> Tensor {
    Tensor::from_f32(name, &[1, values.len() as u64], values)
}

fn request_key(x: f32) -> CacheKey {
    CacheKey::new("sha256:feed", &[tensor("input", &[x, 2.0, 3.0])], &[])
}

fn outputs() -> Vec<Tensor> {
    vec![
        Tensor {
            name: "label".into(),
            element_type: ElementType::I64,
            shape: vec![1],
            data: 1i64.to_le_bytes().to_vec(),
        },
        tensor("probabilities", &[0.125, 0.875]),
    ]
}

async fn cache(server: &RedisServer, ttl: Duration, timeout: Duration) -> PredictionCache {
    PredictionCache::new(CacheConfig::Redis {
        url: server.url(),
        ttl,
        timeout,
        tls: kiln_node_api::tls::ClientTls::default(),
    })
    .await
    .expect("building the Redis prediction cache")
}

fn describe(lookup: &Lookup) -> &'static str {
    match lookup {
        Lookup::Hit(_) => "hit",
        Lookup::Miss => "miss",
        Lookup::Unavailable => "unavailable",
    }
}

// Generous enough that a loaded CI machine does not turn a healthy call into a timeout.
const FUNCTIONAL_TIMEOUT: Duration = Duration::from_millis(500);

#[tokio::test]
async fn miss_then_put_then_hit_returns_identical_tensors() {
    let server = RedisServer::start();
    let cache = cache(&server, Duration::from_secs(60), FUNCTIONAL_TIMEOUT).await;
    assert_eq!(cache.backend(), "redis");
    let key = request_key(1.0);
    assert_eq!(describe(&cache.get(&key).await), "miss");
    cache.put(&key, &outputs()).await;
    match cache.get(&key).await {
        Lookup::Hit(got) => assert_eq!(got, outputs()),
        other => panic!("expected a hit, got a {}", describe(&other)),
    }
    assert_eq!(describe(&cache.get(&request_key(2.0)).await), "miss");
    let stats = cache.stats();
    assert_eq!(
        (stats.hits, stats.misses, stats.stores, stats.store_errors),
        (1, 2, 1, 0)
    );
    assert!(stats.healthy);
}

#[tokio::test]
async fn entries_expire_after_the_ttl() {
    let server = RedisServer::start();
    let cache = cache(&server, Duration::from_millis(200), FUNCTIONAL_TIMEOUT).await;
    let key = request_key(1.0);
    cache.put(&key, &outputs()).await;
    assert_eq!(describe(&cache.get(&key).await), "hit");
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(describe(&cache.get(&key).await), "miss");
}

#[tokio::test]
async fn corrupt_value_in_redis_is_a_counted_miss() {
    let server = RedisServer::start();
    let cache = cache(&server, Duration::from_secs(60), FUNCTIONAL_TIMEOUT).await;
    let key = request_key(1.0);
    let client = redis::Client::open(server.url()).expect("redis URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connecting to redis-server");
    let _: () = redis::cmd("SET")
        .arg(key.redis_key())
        .arg("garbage")
        .query_async(&mut conn)
        .await
        .expect("SET garbage");
    assert_eq!(describe(&cache.get(&key).await), "miss");
    let stats = cache.stats();
    assert_eq!((stats.misses, stats.corrupt, stats.hits), (1, 1, 0));
    assert!(stats.healthy, "a bad value says nothing about Redis being down");
    // The next store overwrites it.
    cache.put(&key, &outputs()).await;
    assert_eq!(describe(&cache.get(&key).await), "hit");
}

#[tokio::test]
async fn killed_server_opens_the_breaker_and_a_restart_closes_it() {
    let mut server = RedisServer::start();
    let timeout = DEFAULT_REDIS_TIMEOUT * 2;
    let cache = cache(&server, Duration::from_secs(60), timeout).await;
    let key = request_key(1.0);
    cache.put(&key, &outputs()).await;
    assert_eq!(describe(&cache.get(&key).await), "hit");

    server.kill();

    // Each failing call is bounded by the timeout (plus scheduling slack).
    for i in 0..3 {
        let start = Instant::now();
        let lookup = cache.get(&key).await;
        let elapsed = start.elapsed();
        assert_eq!(describe(&lookup), "unavailable", "call {i}");
        assert!(
            elapsed < timeout + Duration::from_millis(100),
            "call {i} took {elapsed:?}"
        );
    }
    assert!(!cache.stats().healthy, "breaker open after 3 failures");

    // Open: no network at all.
    let start = Instant::now();
    for _ in 0..100 {
        assert_eq!(describe(&cache.get(&key).await), "unavailable");
    }
    let elapsed = start.elapsed();
    assert!(
        elapsed < Duration::from_millis(10),
        "100 gets with the breaker open took {elapsed:?}"
    );
    let before = cache.stats().skipped_stores;
    cache.put(&key, &outputs()).await;
    assert_eq!(
        cache.stats().skipped_stores,
        before + 1,
        "store skipped while open"
    );
    assert_eq!(cache.stats().unavailable, 103);

    server.spawn();

    // After the cool-down (1 s) a probe goes through and closes the breaker; the new
    // server is empty, so the first answer is a miss.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match cache.get(&key).await {
            Lookup::Miss => break,
            Lookup::Unavailable => {}
            Lookup::Hit(_) => panic!("hit on a fresh redis-server"),
        }
        assert!(
            Instant::now() < deadline,
            "breaker did not close within 10 s of the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(cache.stats().healthy);
    cache.put(&key, &outputs()).await;
    match cache.get(&key).await {
        Lookup::Hit(got) => assert_eq!(got, outputs()),
        other => panic!("expected a hit after recovery, got a {}", describe(&other)),
    }
}
