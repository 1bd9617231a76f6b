//! Failed TLS handshakes as sentences that say what to do: rustls reports enum names
//! (`invalid peer certificate: UnknownIssuer`) that mean little to an operator.

use rustls::{AlertDescription, CertificateError};

/// A clear message for `error` (any error whose source chain holds a rustls error) met
/// while calling `url`, or `None` when it is not a TLS failure.
pub fn describe_error(url: &str, error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let origin = origin(url);
    let tls = find_rustls(error)?;
    Some(match tls {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => format!(
                "TLS: the certificate of {origin} is not trusted (unknown issuer); pass --ca-file (or KILN_CA_FILE) with the CA that signed it"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => format!(
                "TLS: the certificate of {origin} is not valid for that host name; use a URL with a name or IP address the certificate lists"
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("TLS: the certificate of {origin} has expired")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!("TLS: the certificate of {origin} is not valid yet (check the clocks)")
            }
            other => format!("TLS: the certificate of {origin} was refused: {other}"),
        },
        rustls::Error::AlertReceived(
            alert @ (AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::AccessDenied),
        ) => format!(
            "TLS: {origin} refused this client ({}): it requires a client certificate signed by its --client-ca; pass --client-cert and --client-key",
            alert_text(*alert)
        ),
        rustls::Error::AlertReceived(alert) => {
            format!("TLS: {origin} ended the handshake ({})", alert_text(*alert))
        }
        rustls::Error::InvalidMessage(_) => {
            format!("TLS: {origin} did not answer with TLS (is it serving plain http://?)")
        }
        other => format!("TLS with {origin} failed: {other}"),
    })
}

/// [`describe_error`] for a ureq error, falling back to ureq's own message.
pub fn describe_ureq_error(url: &str, error: &ureq::Error) -> String {
    let found = match error {
        ureq::Error::Io(io) => describe_error(url, io),
        ureq::Error::Rustls(tls) => describe_error(url, tls),
        other => describe_error(url, other),
    };
    found.unwrap_or_else(|| error.to_string())
}

/// The first rustls error in `error`'s chain (io errors wrap theirs without a source).
fn find_rustls<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(tls) = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        next = e.source();
    }
    None
}

/// `scheme://host:port` of a URL, without credentials, path or query (a `rediss://` URL
/// may hold a password).
fn origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    if scheme.is_empty() {
        host.to_string()
    } else {
        format!("{scheme}://{host}")
    }
}

fn alert_text(alert: AlertDescription) -> String {
    // `CertificateRequired` → "certificate required".
    let name = format!("{alert:?}");
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push(' ');
        }
        out.extend(c.to_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_issuer_says_to_pass_a_ca_file() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let text = describe_ureq_error("https://127.0.0.1:8443/v2/health/ready", &ureq::Error::Io(io));
        assert_eq!(
            text,
            "TLS: the certificate of https://127.0.0.1:8443 is not trusted (unknown issuer); pass --ca-file (or KILN_CA_FILE) with the CA that signed it"
        );
    }

    #[test]
    fn a_missing_client_certificate_says_which_flags() {
        let err = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        let text = describe_error("https://node-a:8443", &err).unwrap_or_default();
        assert!(text.contains("certificate required"), "{text}");
        assert!(text.contains("--client-cert"), "{text}");
    }

    #[test]
    fn other_errors_are_not_tls() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(describe_error("https://x", &io), None);
        assert_eq!(origin("http://a:1"), "http://a:1");
        assert_eq!(origin("https://a:1/p?q"), "https://a:1");
        assert_eq!(origin("rediss://:s3cret@redis:6380/0"), "rediss://redis:6380");
    }
}
