//! The alert model: [`Severity`], [`Fingerprint`], [`Alert`] and the checks
//! Alertmanager's schema makes, which stop an alert it would refuse before it is sent.

use std::collections::BTreeMap;
use std::fmt;

/// The `severity` label: who should look, and how soon. `page` and `ticket` are the
/// tiers of the SRE workbook's burn-rate alerts (and of Kiln's SLO rules for Prometheus);
/// `critical`, `warning` and `info` are the names most Alertmanager routes match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Wake someone now.
    Page,
    /// Someone should look within a working day.
    Ticket,
    /// Broken now.
    Critical,
    /// Needs a look.
    Warning,
    /// For the record.
    Info,
}

impl Severity {
    /// The label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Page => "page",
            Severity::Ticket => "ticket",
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// Alertmanager's identity of an alert: FNV-1a (64 bits) over its sorted label names and
/// values, each followed by the byte 0xff (`model.LabelSet.Fingerprint` of
/// prometheus/common), shown as 16 hex digits like `GET /api/v2/alerts` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint(pub u64);

impl Fingerprint {
    /// The fingerprint of a label set.
    pub fn of(labels: &BTreeMap<String, String>) -> Fingerprint {
        const OFFSET: u64 = 14_695_981_039_346_656_037;
        const PRIME: u64 = 1_099_511_628_211;
        // The separator cannot occur in UTF-8, so {"a": "bc"} and {"ab": "c"} differ.
        const SEPARATOR: u8 = 0xff;
        let mut hash = OFFSET;
        let mut add = |bytes: &[u8]| {
            for b in bytes {
                hash ^= u64::from(*b);
                hash = hash.wrapping_mul(PRIME);
            }
        };
        // A BTreeMap iterates in byte order of the names: Go's sort.Strings order.
        for (name, value) in labels {
            add(name.as_bytes());
            add(&[SEPARATOR]);
            add(value.as_bytes());
            add(&[SEPARATOR]);
        }
        Fingerprint(hash)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl From<&BTreeMap<String, String>> for Fingerprint {
    fn from(labels: &BTreeMap<String, String>) -> Fingerprint {
        Fingerprint::of(labels)
    }
}

impl From<&Alert> for Fingerprint {
    fn from(alert: &Alert) -> Fingerprint {
        alert.fingerprint()
    }
}

/// One alert: labels identify it (and route it), annotations describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    /// `alertname`, `severity`, and whichever of `model`, `version`, `node` apply.
    pub labels: BTreeMap<String, String>,
    /// `summary`, `description`, … (not part of the identity).
    pub annotations: BTreeMap<String, String>,
    /// A link back to what raised it (sent as `generatorURL`).
    pub generator_url: Option<String>,
}

impl Alert {
    /// An alert named `alertname` (`KilnDataDrift`) of `severity`; add labels with
    /// [`Alert::label`].
    pub fn new(alertname: &str, severity: Severity) -> Alert {
        let labels = BTreeMap::from([
            ("alertname".to_string(), alertname.to_string()),
            ("severity".to_string(), severity.as_str().to_string()),
        ]);
        Alert {
            labels,
            annotations: BTreeMap::new(),
            generator_url: None,
        }
    }

    /// Sets a label. An empty value removes it: for Prometheus and Alertmanager an empty
    /// label is no label, and keeping it would change the fingerprint for nothing.
    pub fn label(mut self, name: &str, value: impl ToString) -> Alert {
        let value = value.to_string();
        if value.is_empty() {
            self.labels.remove(name);
        } else {
            self.labels.insert(name.to_string(), value);
        }
        self
    }

    /// Sets an annotation (`summary`, `description`, `runbook_url`).
    pub fn annotation(mut self, name: &str, value: impl ToString) -> Alert {
        self.annotations.insert(name.to_string(), value.to_string());
        self
    }

    /// Sets the link back to what raised the alert.
    pub fn generator_url(mut self, url: impl ToString) -> Alert {
        self.generator_url = Some(url.to_string());
        self
    }

    /// The `alertname` label.
    pub fn alertname(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }

    /// Its identity in Alertmanager (from the labels only).
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.labels)
    }

    /// Whether Alertmanager will take it: an `alertname`, label and annotation names of
    /// `[a-zA-Z_][a-zA-Z0-9_]*`, and a generator URL that parses. Alertmanager refuses a
    /// whole POST when one alert fails its schema, so a bad one is stopped here instead
    /// of breaking every resend of the others.
    pub fn check(&self) -> Result<(), String> {
        if self.alertname().is_empty() {
            return Err("an alert needs a non-empty `alertname` label".into());
        }
        for (kind, names) in [("label", &self.labels), ("annotation", &self.annotations)] {
            if let Some(bad) = names.keys().find(|n| !is_label_name(n)) {
                return Err(format!(
                    "alert `{}`: {kind} name `{bad}` is not [a-zA-Z_][a-zA-Z0-9_]*",
                    self.alertname()
                ));
            }
        }
        if let Some(url) = &self.generator_url {
            check_generator_url(url).map_err(|e| format!("alert `{}`: {e}", self.alertname()))?;
        }
        Ok(())
    }
}

/// Prometheus's (pre-UTF-8) label name rule, which Alertmanager 0.25 enforces.
fn is_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// What Go's `url.Parse` (Alertmanager's `uri` format check) refuses in a URL Kiln makes:
/// no scheme or host, control characters and spaces, and `%` not followed by two hex
/// digits.
fn check_generator_url(url: &str) -> Result<(), String> {
    crate::check_http_url(url).map_err(|e| format!("generator URL: {e}"))?;
    if url.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!(
            "generator URL `{url}` holds spaces or control characters"
        ));
    }
    let bytes = url.as_bytes();
    for (i, _) in url.match_indices('%') {
        let escape = bytes.get(i + 1..i + 3);
        if !escape.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
            return Err(format!(
                "generator URL `{url}` has a `%` that is not a %XX escape"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::tests::drift;

    #[test]
    fn fingerprints_follow_alertmanagers_hash_of_the_labels_only() {
        // The empty set is FNV-1a's offset basis, as in prometheus/common.
        assert_eq!(Fingerprint::of(&BTreeMap::new()).to_string(), "cbf29ce484222325");
        // Pinned from Alertmanager 0.25's `GET /api/v2/alerts` for these labels (the
        // integration test checks every alert it sends the same way).
        let a = Alert::new("KilnDataDrift", Severity::Warning).label("model", "iris");
        assert_eq!(a.fingerprint().to_string(), PINNED_FINGERPRINT);
        // Annotations and generator URL are not part of the identity; labels are.
        let described = a.clone().annotation("summary", "x").generator_url("http://k/");
        assert_eq!(described.fingerprint(), a.fingerprint());
        assert_ne!(a.clone().label("model", "wine").fingerprint(), a.fingerprint());
        // The separator keeps names and values apart.
        let ab = BTreeMap::from([("ab".to_string(), "c".to_string())]);
        let a_bc = BTreeMap::from([("a".to_string(), "bc".to_string())]);
        assert_ne!(Fingerprint::of(&ab), Fingerprint::of(&a_bc));
        // An empty label is no label.
        assert_eq!(a.clone().label("node", "").fingerprint(), a.fingerprint());
        assert_eq!(Fingerprint::from(&a.labels), Fingerprint::from(&a));
    }

    const PINNED_FINGERPRINT: &str = "6118f88ad7352096";

    #[test]
    fn alerts_alertmanager_would_refuse_are_caught_before_sending() {
        assert!(drift("iris").check().is_ok());
        assert!(Alert::new("", Severity::Info).check().is_err());
        let e = drift("iris").label("model-name", "x").check().unwrap_err();
        assert!(e.contains("`model-name`"), "{e}");
        assert!(drift("iris").annotation("9lives", "x").check().is_err());
        assert!(drift("iris").generator_url("/monitor").check().is_err());
        assert!(drift("iris").generator_url("http://kiln/%zz").check().is_err());
        assert!(drift("iris").generator_url("http://kiln/a b").check().is_err());
        assert!(
            drift("iris")
                .generator_url("http://kiln/a%2Fb?x=1")
                .check()
                .is_ok()
        );
        assert_eq!(Severity::Ticket.as_str(), "ticket");
    }
}
