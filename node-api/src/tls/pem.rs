//! Reading PEM files: certificates and private keys, with errors that name the file and
//! say what was expected. Key material never appears in an error.

use std::path::Path;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A file's bytes, or an error naming it and `what` it was meant to be.
pub(crate) fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("TLS: reading the {what} {}", path.display()))
}

/// Every certificate in a PEM file (a chain, or a CA bundle); at least one.
pub(crate) fn certificates(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let bytes = read(path, what)?;
    certificates_in(&bytes, path, what)
}

/// Every certificate in PEM `bytes` read from `path`; at least one.
pub(crate) fn certificates_in(
    bytes: &[u8],
    path: &Path,
    what: &str,
) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            anyhow::anyhow!(
                "TLS: the {what} {} is not valid PEM: {}",
                path.display(),
                pem_error(&e)
            )
        })?;
    if certs.is_empty() {
        anyhow::bail!(
            "TLS: the {what} {} holds no certificate (expected a PEM `-----BEGIN CERTIFICATE-----` block)",
            path.display()
        );
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1; the first one if several).
pub(crate) fn private_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let bytes = read(path, "private key")?;
    private_key_in(&bytes, path)
}

/// The private key in PEM `bytes` read from `path`.
pub(crate) fn private_key_in(bytes: &[u8], path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => anyhow::anyhow!(
            "TLS: the private key {} holds no private key (expected an unencrypted PEM `-----BEGIN PRIVATE KEY-----`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block)",
            path.display()
        ),
        other => anyhow::anyhow!(
            "TLS: the private key {} is not valid PEM: {}",
            path.display(),
            pem_error(&other)
        ),
    })
}

/// A PEM parse error as text (the library's own shows marker lines as byte arrays).
fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { end_marker } => {
            format!("no `{}` line", String::from_utf8_lossy(end_marker).trim())
        }
        Error::IllegalSectionStart { .. } => "a malformed `-----BEGIN ...-----` line".to_string(),
        Error::Base64Decode(_) => "a block is not valid base64".to_string(),
        other => other.to_string(),
    }
}
