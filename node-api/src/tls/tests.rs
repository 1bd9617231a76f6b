//! PEM loading errors, and the HTTPS accept loop with a real ureq client on 127.0.0.1.

use std::path::{Path, PathBuf};

use super::{ClientTls, ServerTls, describe_ureq_error, serve};

/// A CA and certificates it signed, written as PEM files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kiln test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(params, ca_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        for (name, sans) in [
            ("server", vec!["127.0.0.1".to_string()]),
            ("client", vec!["client".to_string()]),
        ] {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(sans)
                .unwrap()
                .signed_by(&key, &*ca)
                .unwrap();
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).unwrap();
        }
        // A second, unrelated CA: the wrong one.
        let other = rcgen::generate_simple_self_signed(vec!["other".to_string()]).unwrap();
        std::fs::write(dir.path().join("other-ca.pem"), other.cert.pem()).unwrap();
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn server_error(cert: &Path, key: &Path, ca: Option<&Path>) -> String {
    format!("{:#}", ServerTls::from_pem_files(cert, key, ca).unwrap_err())
}

#[test]
fn server_pem_errors_name_the_file() {
    let pki = Pki::new();
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    assert!(ServerTls::from_pem_files(&cert, &key, None).is_ok());
    assert!(
        ServerTls::from_pem_files(&cert, &key, Some(&pki.path("ca.pem")))
            .unwrap()
            .requires_client_cert()
    );

    let missing = server_error(&pki.path("nope.pem"), &key, None);
    assert!(
        missing.contains("reading the certificate") && missing.contains("nope.pem"),
        "{missing}"
    );

    // A key where the certificate should be: valid PEM, but no certificate in it.
    let no_cert = server_error(&key, &key, None);
    assert!(no_cert.contains("server.key holds no certificate"), "{no_cert}");

    let no_key = server_error(&cert, &cert, None);
    assert!(no_key.contains("server.pem holds no private key"), "{no_key}");

    let garbage = pki.path("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    let bad = server_error(&garbage, &key, None);
    assert!(bad.contains("garbage.pem is not valid PEM"), "{bad}");

    let mismatch = server_error(&cert, &pki.path("client.key"), None);
    assert!(
        mismatch.contains("client.key does not belong to the certificate") && mismatch.contains("server.pem"),
        "{mismatch}"
    );

    let bad_ca = server_error(&cert, &key, Some(&pki.path("missing-ca.pem")));
    assert!(
        bad_ca.contains("client CA") && bad_ca.contains("missing-ca.pem"),
        "{bad_ca}"
    );
}

#[test]
fn client_pem_errors_name_the_file() {
    let pki = Pki::new();
    let ok = ClientTls::from_pem_files(
        Some(&pki.path("ca.pem")),
        Some((&pki.path("client.pem"), &pki.path("client.key"))),
    )
    .unwrap();
    assert!(ok.has_client_cert());
    assert!(format!("{ok:?}").contains("client.pem"));
    assert!(!format!("{ok:?}").contains("PRIVATE KEY"));
    let roots = String::from_utf8(ok.roots_pem().unwrap()).unwrap();
    assert!(roots.starts_with(&std::fs::read_to_string(pki.path("ca.pem")).unwrap()));
    assert!(ClientTls::default().roots_pem().is_none());

    let err = format!(
        "{:#}",
        ClientTls::from_pem_files(Some(&pki.path("nope.pem")), None).unwrap_err()
    );
    assert!(err.contains("CA file") && err.contains("nope.pem"), "{err}");

    let err = format!(
        "{:#}",
        ClientTls::from_pem_files(None, Some((&pki.path("client.pem"), &pki.path("server.key"))))
            .unwrap_err()
    );
    assert!(
        err.contains("server.key does not belong to the client certificate"),
        "{err}"
    );
}

/// Serves one route over HTTPS on 127.0.0.1 until the returned sender is dropped.
fn https_server(
    tls: ServerTls,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = axum::Router::new().route(
        "/hello",
        axum::routing::get(
            |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>| async move {
                format!("hello {}", peer.ip())
            },
        ),
    );
    let thread = std::thread::spawn(move || {
        runtime
            .block_on(serve(
                listener,
                app,
                Some(tls),
                &super::ServeLimits::default(),
                async move {
                    let _ = stopped.await;
                },
            ))
            .unwrap();
    });
    (url, stop, thread)
}

fn get(tls: &ClientTls, url: &str) -> Result<String, String> {
    let agent: ureq::Agent = tls
        .agent_config()
        .timeout_global(Some(std::time::Duration::from_secs(5)))
        .build()
        .into();
    agent
        .get(url)
        .call()
        .and_then(|mut r| r.body_mut().read_to_string())
        .map_err(|e| describe_ureq_error(url, &e))
}

#[test]
fn https_serves_trusting_clients_and_refuses_others_without_stopping() {
    let pki = Pki::new();
    let tls = ServerTls::from_pem_files(&pki.path("server.pem"), &pki.path("server.key"), None).unwrap();
    let (url, stop, thread) = https_server(tls);
    let hello = format!("{url}/hello");

    let wrong = ClientTls::from_pem_files(Some(&pki.path("other-ca.pem")), None).unwrap();
    let refused = get(&wrong, &hello).unwrap_err();
    assert_eq!(
        refused,
        format!(
            "TLS: the certificate of {url} is not trusted (unknown issuer); pass --ca-file (or KILN_CA_FILE) with the CA that signed it"
        )
    );
    // The failed handshake did not stop the server.
    let trusting = ClientTls::from_pem_files(Some(&pki.path("ca.pem")), None).unwrap();
    assert_eq!(get(&trusting, &hello).unwrap(), "hello 127.0.0.1");

    drop(stop);
    thread.join().unwrap();
}

#[test]
fn mutual_tls_requires_a_client_certificate_from_the_client_ca() {
    let pki = Pki::new();
    let tls = ServerTls::from_pem_files(
        &pki.path("server.pem"),
        &pki.path("server.key"),
        Some(&pki.path("ca.pem")),
    )
    .unwrap();
    let (url, stop, thread) = https_server(tls);
    let hello = format!("{url}/hello");

    let anonymous = ClientTls::from_pem_files(Some(&pki.path("ca.pem")), None).unwrap();
    let refused = get(&anonymous, &hello).unwrap_err();
    assert!(refused.contains("--client-cert"), "{refused}");

    let with_cert = ClientTls::from_pem_files(
        Some(&pki.path("ca.pem")),
        Some((&pki.path("client.pem"), &pki.path("client.key"))),
    )
    .unwrap();
    assert_eq!(get(&with_cert, &hello).unwrap(), "hello 127.0.0.1");

    drop(stop);
    thread.join().unwrap();
}
