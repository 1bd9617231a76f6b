//! The server side: a certificate chain and key, and optionally a CA whose client
//! certificates are required (mutual TLS).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use super::pem;
use super::provider::crypto_provider;

/// A server's TLS settings, loaded and checked: hand it to [`super::serve`].
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    cert: PathBuf,
    client_ca: Option<PathBuf>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key: only where the certificates came from.
        f.debug_struct("ServerTls")
            .field("cert", &self.cert)
            .field("client_ca", &self.client_ca)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads a PEM certificate chain (leaf first) and its PEM private key; with
    /// `client_ca`, every client must present a certificate signed by one of the CA
    /// file's certificates (mutual TLS). Errors name the file that is missing or invalid,
    /// and say so when the key does not belong to the certificate.
    pub fn from_pem_files(cert: &Path, key: &Path, client_ca: Option<&Path>) -> anyhow::Result<ServerTls> {
        let chain = pem::certificates(cert, "certificate")?;
        let key_der = pem::private_key(key)?;
        let provider = crypto_provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow::anyhow!("TLS: the ring provider supports no TLS version: {e}"))?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in pem::certificates(ca, "client CA")? {
                    roots.add(c).map_err(|e| {
                        anyhow::anyhow!(
                            "TLS: the client CA {} holds an unusable certificate: {e}",
                            ca.display()
                        )
                    })?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| anyhow::anyhow!("TLS: the client CA {}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key_der).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => anyhow::anyhow!(
                "TLS: the private key {} does not belong to the certificate {}",
                key.display(),
                cert.display()
            ),
            other => anyhow::anyhow!(
                "TLS: the certificate {} and key {} cannot be used: {other}",
                cert.display(),
                key.display()
            ),
        })?;
        // axum is built with HTTP/1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
            cert: cert.to_path_buf(),
            client_ca: client_ca.map(Path::to_path_buf),
        })
    }

    /// Whether clients must present a certificate (mutual TLS).
    pub fn requires_client_cert(&self) -> bool {
        self.client_ca.is_some()
    }

    /// The rustls configuration, for servers that run their own accept loop.
    pub fn rustls_config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }
}
