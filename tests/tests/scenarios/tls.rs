//! TLS everywhere, with real processes on 127.0.0.1 and certificates made at run time
//! (rcgen; no key material is committed): `kiln serve` over HTTPS answered to curl and
//! Python's `ssl` with the CA and refused with a wrong one; a managed node and
//! `kiln sync run` both on HTTPS with mutual TLS; the sync service and a node given the
//! wrong CA saying so; the prediction cache over `rediss://` against a real
//! `redis-server --tls-port`.

use kiln_tests::fleet::wait_for;
use kiln_tests::kiln_process::{KilnHome, Server, free_port};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const HOUSE: &str = r#"{"features": [1850, 3, 2, 15, 6000, 1, 12.5, 7, 2, 1]}"#;

/// A test CA, certificates it signed, and an unrelated CA, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// `ca.pem`, `wrong-ca.pem`, and for each name `NAME.pem` + `NAME.key`: servers
    /// valid for 127.0.0.1 and localhost, clients with a CN of their name.
    fn new(servers: &[&str], clients: &[&str]) -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = ca_named("kiln test CA");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("writing ca.pem");
        let wrong = ca_named("someone else's CA");
        std::fs::write(dir.path().join("wrong-ca.pem"), wrong.pem()).expect("writing wrong-ca.pem");
        for (names, server) in [(servers, true), (clients, false)] {
            for name in names.iter() {
                let key = rcgen::KeyPair::generate().expect("key");
                let sans = if server {
                    vec!["127.0.0.1".to_string(), "localhost".to_string()]
                } else {
                    vec![format!("{name}.kiln.test")]
                };
                let mut params = rcgen::CertificateParams::new(sans).expect("params");
                params.distinguished_name.push(rcgen::DnType::CommonName, *name);
                params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
                params.extended_key_usages = vec![if server {
                    rcgen::ExtendedKeyUsagePurpose::ServerAuth
                } else {
                    rcgen::ExtendedKeyUsagePurpose::ClientAuth
                }];
                params.use_authority_key_identifier_extension = true;
                let cert = params.signed_by(&key, &*ca).expect("signing");
                std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).expect("cert");
                std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).expect("key");
            }
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

fn ca_named(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().expect("CA key")).expect("CA")
}

/// `curl -sS` with `args`; the whole output.
fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl must be installed")
}

/// What Python's `urllib` with an `ssl` context that trusts only `ca` (and presents
/// `identity`, if given) got from POSTing `body` to `url`: `{"status", "body"}` or
/// `{"refused", "reason"}`.
fn python_post(url: &str, body: &str, ca: &Path, identity: Option<(&Path, &Path)>) -> serde_json::Value {
    const SCRIPT: &str = r#"
import json, ssl, sys, urllib.error, urllib.request
url, body, ca = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
if len(sys.argv) > 5:
    ctx.load_cert_chain(sys.argv[4], sys.argv[5])
req = urllib.request.Request(url, data=body.encode(), headers={"content-type": "application/json"})
try:
    with urllib.request.urlopen(req, context=ctx, timeout=20) as r:
        out = {"status": r.status, "body": r.read().decode()}
except ssl.SSLCertVerificationError as e:
    out = {"refused": "verify", "reason": str(e.verify_message)}
except urllib.error.URLError as e:
    out = {"refused": type(e.reason).__name__, "reason": str(e.reason)}
except (ssl.SSLError, ConnectionError) as e:
    out = {"refused": type(e).__name__, "reason": str(e)}
print(json.dumps(out))
"#;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", SCRIPT, url, body, &ca.display().to_string()]);
    if let Some((cert, key)) = identity {
        cmd.args([cert.display().to_string(), key.display().to_string()]);
    }
    let out = cmd.output().expect("python3 must be installed");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "python printed no JSON ({e}): {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Waits until `url` answers 200 to curl with `tls_args` (the server is up and ready).
fn wait_https_ready(server: &Server, url: &str, tls_args: &[&str]) {
    wait_for(
        Duration::from_secs(600),
        &format!("{url} to answer 200"),
        || {
            let mut args = tls_args.to_vec();
            args.extend(["-o", "/dev/null", "-w", "%{http_code}", url]);
            (String::from_utf8_lossy(&curl(&args).stdout) == "200").then_some(())
        },
        || server.log(),
    );
}

/// `kiln sync run` on `addr` for `registry`, quick to converge, with `extra` flags.
fn spawn_sync(registry: &KilnHome, addr: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "sync",
        "run",
        "--listen",
        addr,
        "--check-interval",
        "200ms",
        "--backoff-max",
        "1s",
    ];
    args.extend_from_slice(extra);
    registry.spawn(&args, addr)
}

/// A managed node `edge-1` on `addr` joining `sync_url` with the join token in the file
/// `join_token`, with `extra` flags.
fn spawn_node(home: &KilnHome, addr: &str, sync_url: &str, join_token: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "serve",
        "--listen",
        addr,
        "--join",
        sync_url,
        "--join-token-file",
        join_token,
        "--node-name",
        "edge-1",
        "--cache",
        "off",
    ];
    args.extend_from_slice(extra);
    home.spawn(&args, addr)
}

/// A registry home serving house-price version 1 in Production.
fn home_with_house_price() -> KilnHome {
    let home = KilnHome::new();
    let v = home.register_example("house_price_forest", "house-price");
    home.run(&["models", "promote", "house-price", &v.to_string(), "Production"]);
    home
}

#[test]
fn kiln_serve_over_https_answers_curl_and_python_with_the_ca_and_refuses_a_wrong_ca() {
    let pki = Pki::new(&["server"], &[]);
    let home = home_with_house_price();
    let addr = format!("127.0.0.1:{}", free_port());
    let (cert, key, ca, wrong) = (
        pki.arg("server.pem"),
        pki.arg("server.key"),
        pki.arg("ca.pem"),
        pki.arg("wrong-ca.pem"),
    );
    let server = home.spawn(
        &[
            "serve",
            "--listen",
            &addr,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--cache",
            "off",
        ],
        &addr,
    );
    let base = format!("https://{addr}");
    wait_https_ready(&server, &format!("{base}/v2/health/ready"), &["--cacert", &ca]);
    assert!(
        server.stdout().contains(&format!("kiln ready on {base}")),
        "{}",
        server.stdout()
    );

    // curl, trusting the test CA.
    let predict = format!("{base}/v1/models/house-price/predict");
    let ok = curl(&[
        "--cacert",
        &ca,
        "-H",
        "content-type: application/json",
        "-d",
        HOUSE,
        &predict,
    ]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&ok.stdout).expect("curl got JSON");
    let prediction = answer["prediction"].as_f64().expect("a prediction");
    assert!(prediction > 0.0, "{answer}");

    // Python's urllib + ssl, trusting the test CA: the same answer.
    let py = python_post(&predict, HOUSE, &pki.path("ca.pem"), None);
    assert_eq!(py["status"], 200, "{py}");
    let py_answer: serde_json::Value = serde_json::from_str(py["body"].as_str().unwrap_or("")).expect("JSON");
    assert_eq!(py_answer["prediction"].as_f64(), Some(prediction), "{py_answer}");

    // A wrong CA: both clients refuse the server's certificate.
    let refused = curl(&["--cacert", &wrong, "-d", HOUSE, &predict]);
    assert_eq!(
        refused.status.code(),
        Some(60),
        "curl exit 60 = peer certificate cannot be authenticated: {}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(refused.stdout.is_empty());
    let py = python_post(&predict, HOUSE, &pki.path("wrong-ca.pem"), None);
    assert_eq!(py["refused"], "SSLCertVerificationError", "{py}");
    assert!(
        py["reason"]
            .as_str()
            .unwrap_or("")
            .contains("unable to get local issuer certificate"),
        "{py}"
    );

    // Plain HTTP to the HTTPS port gets no answer; the failed handshakes stopped nothing.
    let plain = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{addr}/v2/health/ready"),
    ]);
    assert_ne!(String::from_utf8_lossy(&plain.stdout), "200");
    let again = curl(&[
        "--cacert",
        &ca,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{base}/metrics"),
    ]);
    assert_eq!(String::from_utf8_lossy(&again.stdout), "200");
    assert!(server.log().contains("TLS handshake failed"), "{}", server.log());
}

#[test]
fn a_managed_node_and_the_sync_service_speak_mutual_tls() {
    let pki = Pki::new(&["sync", "node"], &["sync-client", "node-client"]);
    let registry = home_with_house_price();
    let join_token = kiln_tests::fleet::join_token_file(&registry, "tls-join")
        .display()
        .to_string();
    let node_home = KilnHome::new();
    let sync_addr = format!("127.0.0.1:{}", free_port());
    let node_addr = format!("127.0.0.1:{}", free_port());
    let ca = pki.arg("ca.pem");

    // The sync service: HTTPS requiring node certificates, and its own client certificate
    // for the nodes' admin API.
    let (sync_cert, sync_key, sync_client_cert, sync_client_key) = (
        pki.arg("sync.pem"),
        pki.arg("sync.key"),
        pki.arg("sync-client.pem"),
        pki.arg("sync-client.key"),
    );
    let sync = spawn_sync(
        &registry,
        &sync_addr,
        &[
            "--tls-cert",
            &sync_cert,
            "--tls-key",
            &sync_key,
            "--client-ca",
            &ca,
            "--ca-file",
            &ca,
            "--client-cert",
            &sync_client_cert,
            "--client-key",
            &sync_client_key,
        ],
    );
    let sync_url = format!("https://{sync_addr}");
    let (node_client_cert, node_client_key) = (pki.arg("node-client.pem"), pki.arg("node-client.key"));
    let with_node_cert = [
        "--cacert",
        &ca,
        "--cert",
        &node_client_cert,
        "--key",
        &node_client_key,
    ];
    wait_https_ready(&sync, &format!("{sync_url}/metrics"), &with_node_cert);
    assert!(
        sync.stdout().contains(&format!("kiln sync ready on {sync_url}")),
        "{}",
        sync.stdout()
    );

    // The node: HTTPS requiring the sync service's certificate, joining over HTTPS with its own.
    let (node_cert, node_key) = (pki.arg("node.pem"), pki.arg("node.key"));
    let node = spawn_node(
        &node_home,
        &node_addr,
        &sync_url,
        &join_token,
        &[
            "--tls-cert",
            &node_cert,
            "--tls-key",
            &node_key,
            "--client-ca",
            &ca,
            "--ca-file",
            &ca,
            "--client-cert",
            &node_client_cert,
            "--client-key",
            &node_client_key,
        ],
    );
    let node_url = format!("https://{node_addr}");
    let with_sync_cert = [
        "--cacert",
        &ca,
        "--cert",
        &sync_client_cert,
        "--key",
        &sync_client_key,
    ];

    // The node joins (heartbeat over mutual TLS), and the service converges it over mutual
    // TLS: it serves house-price.
    let status = || -> serde_json::Value {
        serde_json::from_str(&registry.run(&["sync", "status", "--json"])).expect("status JSON")
    };
    let node_state = wait_for(
        Duration::from_secs(600),
        "edge-1 to join and converge",
        || {
            status()["nodes"]
                .as_array()
                .and_then(|nodes| nodes.iter().find(|n| n["name"] == "edge-1").cloned())
                .filter(|n| n["status"] == "converged")
        },
        || format!("{:#}\nsync:\n{}\nnode:\n{}", status(), sync.log(), node.log()),
    );
    assert_eq!(node_state["url"], node_url.as_str(), "{node_state}");
    let predict = format!("{node_url}/v1/models/house-price/predict");
    let served = wait_for(
        Duration::from_secs(120),
        "edge-1 to serve house-price",
        || {
            let mut args = with_sync_cert.to_vec();
            args.extend(["-d", HOUSE, predict.as_str()]);
            let out = curl(&args);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            v["prediction"].as_f64()
        },
        || node.log(),
    );
    assert!(served > 0.0);

    // Python with a client certificate the node's CA signed: answered.
    let py = python_post(
        &predict,
        HOUSE,
        &pki.path("ca.pem"),
        Some((&pki.path("sync-client.pem"), &pki.path("sync-client.key"))),
    );
    assert_eq!(py["status"], 200, "{py}");

    // Without a client certificate, the node refuses curl and Python alike.
    let anonymous = curl(&["--cacert", &ca, "-d", HOUSE, &predict]);
    assert!(
        !anonymous.status.success(),
        "curl without a client certificate was answered"
    );
    assert!(
        anonymous.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&anonymous.stdout)
    );
    let py = python_post(&predict, HOUSE, &pki.path("ca.pem"), None);
    // TLS 1.3: the handshake completes on the client's side, then the node sends
    // "certificate required" and closes; Python reports the alert or the EOF after it.
    let reason = py["reason"].as_str().unwrap_or("").to_uppercase();
    assert!(
        py["status"].is_null() && (reason.contains("CERTIFICATE_REQUIRED") || py["refused"] == "SSLEOFError"),
        "python without a client certificate: {py}"
    );
    // A client certificate from another CA is refused too.
    let stranger_key = tempfile::NamedTempFile::new().expect("temp file");
    let stranger = rcgen::generate_simple_self_signed(vec!["stranger.kiln.test".to_string()]).expect("cert");
    let stranger_cert = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(stranger_cert.path(), stranger.cert.pem()).expect("write");
    std::fs::write(stranger_key.path(), stranger.signing_key.serialize_pem()).expect("write");
    let foreign = curl(&[
        "--cacert",
        &ca,
        "--cert",
        &stranger_cert.path().display().to_string(),
        "--key",
        &stranger_key.path().display().to_string(),
        "-d",
        HOUSE,
        &predict,
    ]);
    assert!(
        !foreign.status.success(),
        "a foreign client certificate was accepted"
    );

    // The sync service's API requires a node certificate as well.
    let sync_anonymous = curl(&["--cacert", &ca, &format!("{sync_url}/metrics")]);
    assert!(!sync_anonymous.status.success());
}

#[test]
fn the_sync_service_and_a_node_given_the_wrong_ca_say_so() {
    let pki = Pki::new(&["sync", "node"], &[]);
    let registry = home_with_house_price();
    let join_token = kiln_tests::fleet::join_token_file(&registry, "tls-join")
        .display()
        .to_string();
    let node_home = KilnHome::new();
    let sync_addr = format!("127.0.0.1:{}", free_port());
    let node_addr = format!("127.0.0.1:{}", free_port());
    let (ca, wrong) = (pki.arg("ca.pem"), pki.arg("wrong-ca.pem"));
    let node_url = format!("https://{node_addr}");
    registry.run(&["sync", "add-node", "edge-1", &node_url]);

    let sync_url = format!("https://{sync_addr}");
    // The sync service serves HTTPS but trusts the wrong CA for its calls to nodes.
    let (sync_cert, sync_key) = (pki.arg("sync.pem"), pki.arg("sync.key"));
    let sync = spawn_sync(
        &registry,
        &sync_addr,
        &[
            "--tls-cert",
            &sync_cert,
            "--tls-key",
            &sync_key,
            "--ca-file",
            &wrong,
        ],
    );
    wait_https_ready(&sync, &format!("{sync_url}/metrics"), &["--cacert", &ca]);
    // The node serves HTTPS and joins the sync service without --ca-file: the system's
    // roots do not hold the test CA.
    let (node_cert, node_key) = (pki.arg("node.pem"), pki.arg("node.key"));
    let node = spawn_node(
        &node_home,
        &node_addr,
        &sync_url,
        &join_token,
        &["--tls-cert", &node_cert, "--tls-key", &node_key],
    );

    let expected_sync = format!(
        "TLS: the certificate of {node_url} is not trusted (unknown issuer); pass --ca-file (or KILN_CA_FILE) with the CA that signed it"
    );
    let status = || -> serde_json::Value {
        serde_json::from_str(&registry.run(&["sync", "status", "--json"])).expect("status JSON")
    };
    let error = wait_for(
        Duration::from_secs(600),
        "the sync service to report edge-1's TLS error",
        || {
            status()["nodes"]
                .as_array()
                .and_then(|nodes| nodes.iter().find(|n| n["name"] == "edge-1").cloned())
                .and_then(|n| n["last_error"].as_str().map(str::to_string))
                .filter(|e| e.contains("TLS"))
        },
        || format!("{:#}\n{}", status(), sync.log()),
    );
    assert!(error.contains(&expected_sync), "{error}");
    assert!(!error.contains("UnknownIssuer"), "no raw rustls names: {error}");

    let expected_node = format!(
        "TLS: the certificate of {sync_url} is not trusted (unknown issuer); pass --ca-file (or KILN_CA_FILE)"
    );
    wait_for(
        Duration::from_secs(120),
        "the node to log its heartbeat's TLS error",
        || node.log().contains(&expected_node).then_some(()),
        || node.log(),
    );
}

/// `redis-server` with TLS only (`--port 0 --tls-port`), requiring client certificates
/// signed by the test CA.
struct TlsRedis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl TlsRedis {
    fn start(pki: &Pki) -> TlsRedis {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--tls-cert-file",
                &pki.arg("redis.pem"),
                "--tls-key-file",
                &pki.arg("redis.key"),
                "--tls-ca-cert-file",
                &pki.arg("ca.pem"),
                "--tls-auth-clients",
                "yes",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server, built with TLS) must be installed");
        let redis = TlsRedis {
            child,
            port,
            _dir: dir,
        };
        let started = Instant::now();
        while redis.cli(pki, &["PING"]).trim() != "PONG" {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server with --tls-port did not start (is it built with TLS?)"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
    }

    fn cli(&self, pki: &Pki, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args([
                "-p",
                &self.port.to_string(),
                "--tls",
                "--cacert",
                &pki.arg("ca.pem"),
            ])
            .args([
                "--cert",
                &pki.arg("kiln-client.pem"),
                "--key",
                &pki.arg("kiln-client.key"),
            ])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn metric(metrics: &str, prefix: &str, result: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix) && l.contains(&format!(r#"result="{result}""#)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn the_prediction_cache_speaks_rediss_with_the_ca_and_refuses_a_wrong_one() {
    let pki = Pki::new(&["redis"], &["kiln-client"]);
    let redis = TlsRedis::start(&pki);
    let home = home_with_house_price();
    let url = format!("rediss://127.0.0.1:{}/", redis.port);
    let (ca, wrong, cert, key) = (
        pki.arg("ca.pem"),
        pki.arg("wrong-ca.pem"),
        pki.arg("kiln-client.pem"),
        pki.arg("kiln-client.key"),
    );
    // A generous per-call limit: the first call includes the TLS handshake.
    let cache_flags = [
        "--cache-timeout-ms",
        "2000",
        "--client-cert",
        &cert,
        "--client-key",
        &key,
    ];

    let mut args = vec!["--cache", url.as_str(), "--ca-file", ca.as_str()];
    args.extend(cache_flags);
    let server = home.serve("serve", &args);
    let first = server.post("/v1/models/house-price/predict", HOUSE);
    assert_eq!(first.status, 200, "{}", first.body);
    wait_for(
        Duration::from_secs(10),
        "the prediction to be stored in Redis over TLS",
        || (redis.cli(&pki, &["DBSIZE"]).trim() != "0").then_some(()),
        || server.log(),
    );
    let second = server.post("/v1/models/house-price/predict", HOUSE);
    assert_eq!(second.json()["prediction"], first.json()["prediction"]);
    let metrics = server.get("/metrics").body;
    assert!(
        metric(&metrics, "kiln_prediction_cache_total{", "hit") >= 1.0,
        "{metrics}"
    );
    assert!(metrics.contains("kiln_prediction_cache_up 1"), "{metrics}");
    drop(server);

    // The wrong CA: requests are still answered (uncached), and the log says why.
    let mut args = vec!["--cache", url.as_str(), "--ca-file", wrong.as_str()];
    args.extend(cache_flags);
    let server = home.serve("serve", &args);
    for i in 0..12 {
        let body = format!(
            r#"{{"features": [{}, 3, 2, 15, 6000, 1, 12.5, 7, 2, 1]}}"#,
            2000 + i
        );
        let r = server.post("/v1/models/house-price/predict", &body);
        assert_eq!(r.status, 200, "request {i} with an untrusted Redis: {}", r.body);
    }
    let expected = format!(
        "TLS: the certificate of rediss://127.0.0.1:{} is not trusted (unknown issuer)",
        redis.port
    );
    wait_for(
        Duration::from_secs(10),
        "the cache's TLS error in the log",
        || server.log().contains(&expected).then_some(()),
        || server.log(),
    );
    assert!(server.get("/metrics").body.contains("kiln_prediction_cache_up 0"));
    assert_eq!(
        redis.cli(&pki, &["DBSIZE"]).trim(),
        "1",
        "only the first server's entry"
    );
}

/// `kiln registry serve` over HTTPS: the CLI with `--registry https://… --registry-ca`
/// works, a wrong CA is refused with the clear message, and a Python client with the CA
/// gets the same 401 JSON an untokened caller gets.
#[test]
fn the_registry_server_speaks_tls_to_the_cli_and_python() {
    let pki = Pki::new(&["registry"], &[]);
    let home = KilnHome::new();
    let admin = kiln_tests::fleet::make_token(&home, "root", "admin");
    let token_file = pki.path("root.token");
    std::fs::write(&token_file, &admin).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let (cert, key, ca, wrong) = (
        pki.arg("registry.pem"),
        pki.arg("registry.key"),
        pki.arg("ca.pem"),
        pki.arg("wrong-ca.pem"),
    );
    let server = home.spawn(
        &[
            "registry",
            "serve",
            "--listen",
            &addr,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
        &addr,
    );
    let url = format!("https://{addr}");
    wait_https_ready(&server, &format!("{url}/openapi.json"), &["--cacert", &ca]);
    let cli = |ca: &str| {
        let empty = tempfile::tempdir().unwrap();
        home.command()
            .env("KILN_HOME", empty.path())
            .args(["--registry", &url, "--registry-ca", ca, "--token-file"])
            .arg(&token_file)
            .args(["tokens", "list"])
            .output()
            .unwrap()
    };
    let ok = cli(&ca);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("root"));
    let refused = cli(&wrong);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains(&format!("TLS: the certificate of {url} is not trusted")),
        "{err}"
    );
    let answer = python_post(&format!("{url}/api/v1/tokens"), "{}", &pki.path("ca.pem"), None);
    // urllib raises on 401 (an HTTPError whose reason is the status text): the handshake
    // went through and the refusal is the server's, not TLS's.
    assert_ne!(answer["refused"], "verify", "{answer}");
    assert_eq!(answer["reason"], "Unauthorized", "{answer}");
    let wrong_answer = python_post(
        &format!("{url}/api/v1/tokens"),
        "{}",
        &pki.path("wrong-ca.pem"),
        None,
    );
    assert!(
        wrong_answer["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("CERTIFICATE_VERIFY_FAILED"),
        "{wrong_answer}"
    );
}
