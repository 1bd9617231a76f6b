//! The client side: the system's root certificates plus an optional CA file, and an
//! optional client certificate for servers that require one (mutual TLS).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use base64::Engine;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::pem;
use super::provider::crypto_provider;

/// What a Kiln client trusts and presents. `ClientTls::default()` trusts the system's
/// roots only. Cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    inner: Arc<Inner>,
}

struct Inner {
    /// System roots, then the CA file's certificates.
    roots: Vec<CertificateDer<'static>>,
    ca_file: Option<PathBuf>,
    /// The CA file as read, for clients that take PEM (Redis).
    ca_pem: Option<Vec<u8>>,
    identity: Option<Identity>,
    ureq: ureq::tls::TlsConfig,
}

/// A client certificate chain and its key, parsed and as read (PEM).
struct Identity {
    cert: PathBuf,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    chain_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key: only where things came from.
        f.debug_struct("ClientTls")
            .field("ca_file", &self.inner.ca_file)
            .field("client_cert", &self.inner.identity.as_ref().map(|i| &i.cert))
            .finish_non_exhaustive()
    }
}

impl Default for ClientTls {
    fn default() -> Self {
        ClientTls::new(Vec::new(), None, None, None)
    }
}

/// The system's root certificates (`SSL_CERT_FILE`/`SSL_CERT_DIR` or the platform's
/// store), read once per process. Unreadable entries are logged and skipped.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "TLS: reading the system's root certificates");
        }
        tracing::debug!(count = found.certs.len(), "TLS: system root certificates loaded");
        found.certs
    })
}

impl ClientTls {
    /// Trusts the system's roots plus every certificate in `ca_file` (PEM), and presents
    /// `identity` = (certificate chain, private key), both PEM files, to servers that ask
    /// for a client certificate. Errors name the file that is missing or invalid, and say
    /// so when the key does not belong to the certificate.
    pub fn from_pem_files(
        ca_file: Option<&Path>,
        identity: Option<(&Path, &Path)>,
    ) -> anyhow::Result<ClientTls> {
        let (extra, ca_pem) = match ca_file {
            Some(path) => {
                let bytes = pem::read(path, "CA file")?;
                (pem::certificates_in(&bytes, path, "CA file")?, Some(bytes))
            }
            None => (Vec::new(), None),
        };
        let identity = match identity {
            Some((cert, key)) => Some(load_identity(cert, key)?),
            None => None,
        };
        Ok(ClientTls::new(
            extra,
            ca_file.map(Path::to_path_buf),
            ca_pem,
            identity,
        ))
    }

    fn new(
        extra: Vec<CertificateDer<'static>>,
        ca_file: Option<PathBuf>,
        ca_pem: Option<Vec<u8>>,
        identity: Option<Identity>,
    ) -> ClientTls {
        let mut roots = system_roots().to_vec();
        roots.extend(extra);
        let ureq = ureq_config(&roots, identity.as_ref());
        ClientTls {
            inner: Arc::new(Inner {
                roots,
                ca_file,
                ca_pem,
                identity,
                ureq,
            }),
        }
    }

    /// The CA file given, if any.
    pub fn ca_file(&self) -> Option<&Path> {
        self.inner.ca_file.as_deref()
    }

    /// Whether a client certificate is presented.
    pub fn has_client_cert(&self) -> bool {
        self.inner.identity.is_some()
    }

    /// ureq's TLS settings for these roots and client certificate.
    pub fn ureq_tls_config(&self) -> ureq::tls::TlsConfig {
        self.inner.ureq.clone()
    }

    /// A ureq agent configuration with these TLS settings; add timeouts and `.build()`.
    pub fn agent_config(&self) -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
        ureq::Agent::config_builder().tls_config(self.ureq_tls_config())
    }

    /// A rustls client configuration with these roots and client certificate.
    pub fn rustls_config(&self) -> anyhow::Result<Arc<ClientConfig>> {
        let mut store = RootCertStore::empty();
        // Platform stores hold the odd certificate webpki cannot use: skip those.
        store.add_parsable_certificates(self.inner.roots.iter().cloned());
        let builder = ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow::anyhow!("TLS: the ring provider supports no TLS version: {e}"))?
            .with_root_certificates(store);
        Ok(Arc::new(match &self.inner.identity {
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                .map_err(|e| anyhow::anyhow!("TLS: the client certificate {}: {e}", id.cert.display()))?,
            None => builder.with_no_client_auth(),
        }))
    }

    /// For clients that take PEM roots instead of a rustls configuration (Redis): `None`
    /// when no CA file was given (such clients read the system's roots themselves), else
    /// the CA file followed by the system's roots.
    pub fn roots_pem(&self) -> Option<Vec<u8>> {
        let ca = self.inner.ca_pem.as_ref()?;
        let mut out = ca.clone();
        if !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        for cert in system_roots() {
            out.extend_from_slice(pem_certificate(cert).as_bytes());
        }
        Some(out)
    }

    /// The client certificate chain and key as PEM, for clients that take PEM (Redis).
    pub fn client_identity_pem(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        self.inner
            .identity
            .as_ref()
            .map(|id| (id.chain_pem.clone(), id.key_pem.clone()))
    }
}

fn load_identity(cert: &Path, key: &Path) -> anyhow::Result<Identity> {
    let chain_pem = pem::read(cert, "client certificate")?;
    let chain = pem::certificates_in(&chain_pem, cert, "client certificate")?;
    let key_pem = pem::read(key, "client key")?;
    let key_der = pem::private_key_in(&key_pem, key)?;
    // The same check a server's certificate gets: a key that does not match fails here,
    // not in the middle of a handshake.
    rustls::sign::CertifiedKey::from_der(chain.clone(), key_der.clone_key(), &crypto_provider()).map_err(
        |e| match e {
            rustls::Error::InconsistentKeys(_) => anyhow::anyhow!(
                "TLS: the client key {} does not belong to the client certificate {}",
                key.display(),
                cert.display()
            ),
            other => anyhow::anyhow!(
                "TLS: the client certificate {} and key {} cannot be used: {other}",
                cert.display(),
                key.display()
            ),
        },
    )?;
    Ok(Identity {
        cert: cert.to_path_buf(),
        chain,
        key: key_der,
        chain_pem,
        key_pem,
    })
}

fn ureq_config(roots: &[CertificateDer<'static>], identity: Option<&Identity>) -> ureq::tls::TlsConfig {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};
    let certs: Vec<Certificate<'static>> = roots
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    let client_cert = identity.and_then(|id| {
        // ureq parses the same PEM rustls accepted (PKCS#8, PKCS#1 or SEC1).
        let key = match PrivateKey::from_pem(&id.key_pem) {
            Ok(key) => key,
            Err(e) => {
                tracing::warn!(cert = %id.cert.display(), error = %e, "TLS: ureq cannot use this client key; no client certificate is presented");
                return None;
            }
        };
        let chain: Vec<Certificate<'static>> = id
            .chain
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        Some(ClientCert::new_with_certs(&chain, key))
    });
    TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::new_with_certs(&certs))
        .client_cert(client_cert)
        .unversioned_rustls_crypto_provider(crypto_provider())
        .build()
}

/// One certificate as a PEM block.
fn pem_certificate(cert: &CertificateDer<'_>) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}
