//! TLS flags shared by the commands that serve (`--tls-cert`, `--tls-key`, `--client-ca`)
//! and the ones that call out (`--ca-file`, `--client-cert`, `--client-key`), each with
//! its `KILN_*` environment variable. Flatten them into a command's flags with
//! `#[command(flatten)]`.

use std::path::PathBuf;

use kiln_node_api::tls::{ClientTls, ServerTls};

/// Serve HTTPS: a certificate and key, and optionally a CA for client certificates.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerTlsArgs {
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs --tls-key.
    #[arg(long, env = "KILN_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "KILN_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Require every client to present a certificate signed by this PEM CA (mutual TLS).
    #[arg(long, env = "KILN_CLIENT_CA", value_name = "FILE")]
    pub client_ca: Option<PathBuf>,
}

impl ServerTlsArgs {
    /// The TLS settings these flags describe; `None` serves plain HTTP.
    pub fn load(&self) -> anyhow::Result<Option<ServerTls>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(ServerTls::from_pem_files(
                cert,
                key,
                self.client_ca.as_deref(),
            )?)),
            (None, None) if self.client_ca.is_some() => {
                anyhow::bail!(
                    "--client-ca (KILN_CLIENT_CA) needs --tls-cert and --tls-key: client certificates are checked only over HTTPS"
                )
            }
            (None, None) => Ok(None),
            (Some(_), None) => anyhow::bail!("--tls-cert (KILN_TLS_CERT) needs --tls-key (KILN_TLS_KEY)"),
            (None, Some(_)) => anyhow::bail!("--tls-key (KILN_TLS_KEY) needs --tls-cert (KILN_TLS_CERT)"),
        }
    }

    /// `https` when TLS is configured, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls_cert.is_some() { "https" } else { "http" }
    }
}

/// Call HTTPS servers: trust the system's roots plus a CA file, and optionally present a
/// client certificate.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTlsArgs {
    /// Also trust this PEM CA (besides the system's roots) when calling https:// URLs and rediss://.
    #[arg(long, env = "KILN_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Present this PEM client certificate to servers that require one (mutual TLS); needs --client-key.
    #[arg(long, env = "KILN_CLIENT_CERT", value_name = "FILE")]
    pub client_cert: Option<PathBuf>,
    /// The PEM private key of --client-cert.
    #[arg(long, env = "KILN_CLIENT_KEY", value_name = "FILE")]
    pub client_key: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// The client TLS settings these flags describe (the system's roots at least).
    pub fn load(&self) -> anyhow::Result<ClientTls> {
        let identity = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            (None, None) => None,
            (Some(_), None) => {
                anyhow::bail!("--client-cert (KILN_CLIENT_CERT) needs --client-key (KILN_CLIENT_KEY)")
            }
            (None, Some(_)) => {
                anyhow::bail!("--client-key (KILN_CLIENT_KEY) needs --client-cert (KILN_CLIENT_CERT)")
            }
        };
        ClientTls::from_pem_files(self.ca_file.as_deref(), identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_a_pair_is_refused_saying_what_is_missing() {
        let server = ServerTlsArgs {
            tls_cert: Some("cert.pem".into()),
            ..ServerTlsArgs::default()
        };
        let err = format!("{:#}", server.load().unwrap_err());
        assert!(err.contains("needs --tls-key"), "{err}");
        let ca_only = ServerTlsArgs {
            client_ca: Some("ca.pem".into()),
            ..ServerTlsArgs::default()
        };
        assert!(format!("{:#}", ca_only.load().unwrap_err()).contains("--client-ca"));
        assert!(ServerTlsArgs::default().load().unwrap().is_none());

        let client = ClientTlsArgs {
            client_key: Some("key.pem".into()),
            ..ClientTlsArgs::default()
        };
        let err = format!("{:#}", client.load().unwrap_err());
        assert!(err.contains("needs --client-cert"), "{err}");
        assert!(!ClientTlsArgs::default().load().unwrap().has_client_cert());
    }
}
