//! Connection and request limits of Kiln's servers (issue 13), with the real `kiln`
//! binary on 127.0.0.1 and raw sockets where a well-behaved client library would hide the
//! behaviour: uploads stream to disk (memory does not grow with their size, a wrong digest
//! or an over-limit body leaves no file), a slowloris client is cut after the header
//! timeout, connections beyond `--max-connections` wait until the idle timeout frees one,
//! a request slower than `--request-timeout` gets a JSON 408, and more concurrent uploads
//! than allowed get a JSON 503 with `Retry-After`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_tests::fleet::make_token;
use kiln_tests::kiln_process::{KilnHome, Server, free_port};
use serde_json::Value;

/// `kiln registry serve` on a free port with `extra` flags, and an admin token.
struct Registry {
    home: KilnHome,
    server: Server,
    token: String,
}

impl Registry {
    fn start(extra: &[&str]) -> Registry {
        let home = KilnHome::new();
        let token = make_token(&home, "root", "admin");
        let addr = format!("127.0.0.1:{}", free_port());
        let mut args = vec!["registry", "serve", "--listen", &addr];
        args.extend_from_slice(extra);
        let server = home.spawn(&args, &addr);
        let started = Instant::now();
        while server.try_get("/openapi.json").is_none_or(|r| r.status != 200) {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "registry did not start:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Registry { home, server, token }
    }

    fn uploads(&self) -> PathBuf {
        self.home.path().join("uploads")
    }

    fn upload_path(&self, digest: &str) -> String {
        format!("/api/v1/models/big/components/sha256:{digest}")
    }
}

/// Every file in `dir` (none when it does not exist).
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Waits until `dir` holds exactly `expected` (temporary files are removed as the
/// request task ends, a moment after the answer).
fn wait_files(dir: &Path, expected: &[String]) {
    let started = Instant::now();
    while files(dir) != expected {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{} holds {:?}, not {expected:?}",
            dir.display(),
            files(dir)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"))
}

/// An HTTP answer read off a raw socket.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads one answer (a `Content-Length` body) off `s`.
fn read_answer(s: &mut TcpStream) -> std::io::Result<Answer> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("closed after {:?}", String::from_utf8_lossy(&buf)),
            ));
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    let mut answer = Answer {
        status,
        head,
        body: String::new(),
    };
    let len: usize = answer
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    answer.body = String::from_utf8_lossy(&body).into_owned();
    Ok(answer)
}

/// Whether the server closed `s` (EOF or reset) within `limit`.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut byte = [0u8; 1];
    match s.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// A keep-alive GET on an open connection.
fn get(s: &mut TcpStream, path: &str) -> Answer {
    write!(s, "GET {path} HTTP/1.1\r\nHost: kiln\r\n\r\n").unwrap();
    read_answer(s).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// `n` deterministic, incompressible-looking bytes.
fn payload(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// PUTs `body` with a `Content-Length` from a writer thread (a server may answer and
/// close before it has read everything) and reads the answer.
fn put(addr: &str, path: &str, token: &str, body: Vec<u8>) -> Answer {
    let mut s = connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "PUT {path} HTTP/1.1\r\nHost: kiln\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut writer = s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        for chunk in body.chunks(1 << 20) {
            if writer.write_all(chunk).is_err() {
                return;
            }
        }
    });
    let answer = read_answer(&mut s).unwrap_or_else(|e| panic!("PUT {path}: {e}"));
    drop(s);
    let _ = sender.join();
    answer
}

/// PUTs `total` bytes chunked (no `Content-Length`, so only counting them shows the
/// size), in 256 KiB chunks, and reads the answer.
fn put_chunked(addr: &str, path: &str, token: &str, total: usize) -> Answer {
    let mut s = connect(addr);
    write!(
        s,
        "PUT {path} HTTP/1.1\r\nHost: kiln\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    let mut writer = s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = vec![7u8; 256 << 10];
        let mut sent = 0;
        while sent < total {
            let n = chunk.len().min(total - sent);
            if write!(writer, "{n:x}\r\n").is_err()
                || writer.write_all(&chunk[..n]).is_err()
                || writer.write_all(b"\r\n").is_err()
            {
                return;
            }
            sent += n;
        }
        let _ = writer.write_all(b"0\r\n\r\n");
    });
    let answer = read_answer(&mut s).unwrap_or_else(|e| panic!("PUT {path}: {e}"));
    drop(s);
    let _ = sender.join();
    answer
}

#[test]
fn a_200_mib_upload_is_streamed_to_disk_without_holding_it_in_memory() {
    let registry = Registry::start(&["--max-upload-mib", "300"]);
    let addr = registry.server.addr.clone();
    let pid = registry.server.child.id();
    let body = payload(200 << 20);
    let digest = kiln_types::digest(&body);
    let before = peak_rss_kib(pid);
    let answer = put(&addr, &registry.upload_path(&digest), &registry.token, body);
    let after = peak_rss_kib(pid);
    assert_eq!(answer.status, 201, "{answer:?}");
    assert_eq!(answer.json()["size"], 200 << 20, "{answer:?}");
    let grew_mib = (after.saturating_sub(before)) as f64 / 1024.0;
    eprintln!(
        "registry server peak RSS: {:.1} MiB before, {:.1} MiB after a 200 MiB upload (+{grew_mib:.1} MiB)",
        before as f64 / 1024.0,
        after as f64 / 1024.0
    );
    assert!(
        grew_mib < 64.0,
        "the server's peak memory grew by {grew_mib:.1} MiB for a 200 MiB upload: it buffered the body"
    );
    // Stored whole under its digest, nothing else beside it.
    let stored = registry.uploads().join(&digest);
    assert_eq!(std::fs::metadata(&stored).unwrap().len(), 200 << 20);
    assert_eq!(kiln_types::digest(&std::fs::read(&stored).unwrap()), digest);
    wait_files(&registry.uploads(), std::slice::from_ref(&digest));

    // Registering it copies the staged file into the blob store in pieces: the server's
    // peak memory stays where it was, the blob is whole, and the staged upload is gone.
    let before_register = peak_rss_kib(pid);
    let mut s = connect(&addr);
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let request = format!(r#"{{"component_digest": "sha256:{digest}"}}"#);
    write!(
        s,
        "POST /api/v1/models/big/versions HTTP/1.1\r\nHost: kiln\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{request}",
        registry.token,
        request.len()
    )
    .unwrap();
    let answer = read_answer(&mut s).unwrap_or_else(|e| panic!("POST register: {e}"));
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["version"]["size"], 200 << 20, "{answer:?}");
    let grew_mib = peak_rss_kib(pid).saturating_sub(before_register) as f64 / 1024.0;
    eprintln!("registry server peak RSS grew by {grew_mib:.1} MiB registering a 200 MiB upload");
    assert!(
        grew_mib < 64.0,
        "the server's peak memory grew by {grew_mib:.1} MiB registering a 200 MiB upload: it read it whole"
    );
    let blob = registry.home.path().join("blobs/sha256").join(&digest);
    assert_eq!(std::fs::metadata(&blob).unwrap().len(), 200 << 20);
    assert!(!stored.exists(), "the registered upload is removed");

    // A wrong digest: refused, and no file is left behind.
    let other = payload(8 << 20);
    let wrong = kiln_types::digest(b"something else");
    let answer = put(&addr, &registry.upload_path(&wrong), &registry.token, other);
    assert_eq!(answer.status, 422, "{answer:?}");
    assert!(
        answer.json()["error"].as_str().unwrap().contains("sha256"),
        "{answer:?}"
    );
    wait_files(&registry.uploads(), &[]);
}

#[test]
fn an_over_limit_upload_gets_a_json_413_and_leaves_no_temporary_file() {
    let registry = Registry::start(&["--max-upload-mib", "1"]);
    let addr = registry.server.addr.clone();
    let digest = kiln_types::digest(b"x");
    // Declared too large: refused before a byte of the body is read.
    let answer = put(
        &addr,
        &registry.upload_path(&digest),
        &registry.token,
        vec![1; 3 << 20],
    );
    assert_eq!(answer.status, 413, "{answer:?}");
    assert_eq!(answer.json()["kind"], "too_large", "{answer:?}");
    // Chunked: only counting shows it; the temporary file it went to is removed.
    let answer = put_chunked(&addr, &registry.upload_path(&digest), &registry.token, 3 << 20);
    assert_eq!(answer.status, 413, "{answer:?}");
    assert_eq!(answer.json()["kind"], "too_large", "{answer:?}");
    assert!(
        answer.json()["error"].as_str().unwrap().contains("1 MiB"),
        "{answer:?}"
    );
    wait_files(&registry.uploads(), &[]);
}

#[test]
fn a_managed_node_streams_uploads_without_holding_them_and_refuses_wrong_digests_and_over_limit_bodies() {
    let home = KilnHome::new();
    let token_file = home.path().join("admin.token");
    std::fs::write(&token_file, "node-admin-secret").unwrap();
    let node = home.serve(
        "serve",
        &[
            "--managed",
            "--admin-token-file",
            token_file.to_str().unwrap(),
            "--max-upload-mib",
            "160",
        ],
    );
    let components = home.path().join("node").join("components");
    let path = |d: &str| format!("/admin/v1/components/{d}");
    let token = "node-admin-secret";
    // A good upload is stored under its digest.
    let body = payload(1 << 20);
    let digest = kiln_types::digest(&body);
    let answer = put(&node.addr, &path(&digest), token, body);
    assert_eq!(answer.status, 201, "{answer:?}");
    let stored = vec![format!("{digest}.wasm")];
    wait_files(&components, &stored);
    // A wrong digest: 422 and nothing left; the 128 MiB were never held in memory.
    let pid = node.child.id();
    let before = peak_rss_kib(pid);
    let answer = put(&node.addr, &path(&"0".repeat(64)), token, payload(128 << 20));
    let grew_mib = peak_rss_kib(pid).saturating_sub(before) as f64 / 1024.0;
    assert_eq!(answer.status, 422, "{answer:?}");
    assert!(answer.json()["error"].is_string(), "{answer:?}");
    eprintln!("managed node peak RSS grew by {grew_mib:.1} MiB for a 128 MiB upload");
    assert!(
        grew_mib < 48.0,
        "the node's peak memory grew by {grew_mib:.1} MiB: it buffered the body"
    );
    wait_files(&components, &stored);
    // Over the limit, chunked: a JSON 413 and no temporary file.
    let answer = put_chunked(&node.addr, &path(&"1".repeat(64)), token, 170 << 20);
    assert_eq!(answer.status, 413, "{answer:?}");
    assert!(answer.json()["error"].is_string(), "{answer:?}");
    wait_files(&components, &stored);
}

#[test]
fn more_concurrent_uploads_than_allowed_get_a_json_503_with_retry_after() {
    let registry = Registry::start(&["--max-concurrent-uploads", "1"]);
    let addr = registry.server.addr.clone();
    let digest = kiln_types::digest(b"slow");
    // One upload in progress: headers and part of its body, the rest never comes.
    let mut slow = connect(&addr);
    write!(
        slow,
        "PUT {} HTTP/1.1\r\nHost: kiln\r\nAuthorization: Bearer {}\r\nContent-Length: 1000000\r\n\r\n",
        registry.upload_path(&digest),
        registry.token
    )
    .unwrap();
    slow.write_all(&[0u8; 1000]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let answer = put(
        &addr,
        &registry.upload_path(&digest),
        &registry.token,
        b"slow".to_vec(),
    );
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.json()["kind"], "overloaded", "{answer:?}");
    assert_eq!(answer.header("retry-after").as_deref(), Some("1"), "{answer:?}");
    // Once it is gone, uploads are taken again.
    drop(slow);
    let started = Instant::now();
    loop {
        let answer = put(
            &addr,
            &registry.upload_path(&digest),
            &registry.token,
            b"slow".to_vec(),
        );
        if answer.status == 201 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{answer:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_slowloris_client_is_cut_after_the_header_timeout() {
    let home = KilnHome::new();
    let server = home.serve("serve", &["--header-timeout", "1s", "--idle-timeout", "30s"]);
    let mut s = connect(&server.addr);
    let started = Instant::now();
    let head = b"GET /v2/health/live HTTP/1.1\r\nHost: kiln\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut = false;
    for byte in head {
        if s.write_all(&[*byte]).is_err() {
            cut = true;
            break;
        }
        if closed_within(&mut s, Duration::from_millis(200)) {
            cut = true;
            break;
        }
        if started.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    let took = started.elapsed();
    assert!(
        cut,
        "a client sending its headers a byte every 200 ms was still connected after {took:?}"
    );
    assert!(took >= Duration::from_millis(900), "cut too early: {took:?}");
    assert!(took < Duration::from_secs(4), "cut late: {took:?}");
    // A prompt client on a fresh connection is served.
    let mut ok = connect(&server.addr);
    assert_eq!(get(&mut ok, "/v2/health/live").status, 200);
}

#[test]
fn connections_beyond_max_connections_wait_until_the_idle_timeout_frees_one() {
    let registry = Registry::start(&["--max-connections", "2", "--idle-timeout", "2s"]);
    let addr = registry.server.addr.clone();
    // Two keep-alive connections, each served once and then left idle.
    let mut first = connect(&addr);
    let mut second = connect(&addr);
    assert_eq!(get(&mut first, "/openapi.json").status, 200);
    assert_eq!(get(&mut second, "/openapi.json").status, 200);
    // A third is not served while both are open ...
    let started = Instant::now();
    let mut third = connect(&addr);
    let answer = get(&mut third, "/openapi.json");
    let waited = started.elapsed();
    assert_eq!(answer.status, 200);
    assert!(
        waited >= Duration::from_millis(1200),
        "the third connection was served after {waited:?}, beside two open ones (--max-connections 2)"
    );
    assert!(waited < Duration::from_secs(8), "waited {waited:?}");
    // ... because the idle ones were closed by the idle timeout.
    assert!(closed_within(&mut first, Duration::from_secs(1)));
    assert!(closed_within(&mut second, Duration::from_secs(1)));
    // A connection in use is not idle: the third, kept busy, stays open past 2 s.
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(get(&mut third, "/openapi.json").status, 200);
    }
}

#[test]
fn a_request_slower_than_the_request_timeout_gets_a_json_408() {
    let home = KilnHome::new();
    let server = home.serve("serve", &["--request-timeout", "1s"]);
    let mut s = connect(&server.addr);
    // A body announced as 100 bytes, of which 10 arrive.
    write!(
        s,
        "POST /v2/models/iris/infer HTTP/1.1\r\nHost: kiln\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"inputs\""
    )
    .unwrap();
    let started = Instant::now();
    let answer = read_answer(&mut s).expect("an answer before the client gave up");
    let took = started.elapsed();
    assert_eq!(answer.status, 408, "{answer:?}");
    assert_eq!(answer.json()["kind"], "timeout", "{answer:?}");
    assert!(
        answer.json()["error"]
            .as_str()
            .unwrap()
            .contains("--request-timeout"),
        "{answer:?}"
    );
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    // The open connections are a metric.
    let metrics = server.get("/metrics").body;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("kiln_http_connections_open ") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[test]
fn a_slow_upload_to_the_registry_gets_a_json_408_after_the_upload_timeout() {
    let registry = Registry::start(&["--upload-timeout", "1s"]);
    let digest = kiln_types::digest(b"never finished");
    let mut s = connect(&registry.server.addr);
    write!(
        s,
        "PUT {} HTTP/1.1\r\nHost: kiln\r\nAuthorization: Bearer {}\r\nContent-Length: 1000\r\n\r\nabc",
        registry.upload_path(&digest),
        registry.token
    )
    .unwrap();
    let answer = read_answer(&mut s).expect("an answer");
    assert_eq!(answer.status, 408, "{answer:?}");
    assert_eq!(answer.json()["kind"], "timeout", "{answer:?}");
    assert!(
        answer.json()["error"]
            .as_str()
            .unwrap()
            .contains("--upload-timeout"),
        "{answer:?}"
    );
    wait_files(&registry.uploads(), &[]);
}
