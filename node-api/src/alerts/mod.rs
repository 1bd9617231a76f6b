//! Alerts pushed to Prometheus Alertmanager's v2 API (`POST /api/v2/alerts`, as in
//! Alertmanager 0.25): what the sync service and `kiln serve --alertmanager` report
//! (drift, SLO burn, rollbacks, failing nodes, versions that fail to load, MLflow
//! imports that fail).
//!
//! Alertmanager expects its clients to behave like Prometheus: an alert stays active while
//! it is posted again and again, each time with `endsAt` a few resend intervals ahead
//! (`now + 4 × interval`, Prometheus's rule), so that if Kiln dies its alerts resolve by
//! themselves instead of firing forever; an alert that ended is posted once more with
//! `endsAt = now`. [`Alerter`] does exactly that. Callers say what fires
//! ([`Alerter::fire`]), what ended ([`Alerter::resolve`]) or, for conditions they
//! re-evaluate every tick, what is true now ([`Alerter::reconcile`]); one thread per
//! Alertmanager does the posting, so no caller ever waits on the network.
//!
//! Alertmanager merges the alerts it receives by the fingerprint of their labels, so a
//! repeated POST changes nothing and every POST goes through [`Target::call`]: retried on
//! transport failures, 5xx, 408 and 429 under [`ALERTMANAGER_RETRY`], behind one circuit
//! breaker per Alertmanager ([`ALERTMANAGER_BREAKER`]). A firing alert whose POST was lost
//! goes again with the next resend; a resolve that was lost still ends at the `endsAt`
//! sent before it, at most `4 × interval` later.
//!
//! This file holds the alert model ([`Severity`], [`Fingerprint`], [`Alert`] and the
//! checks Alertmanager's schema makes) and the [`Alerter`]; `post` holds the HTTP side
//! (the POST, its retry and breaker policies, the URL handling), `state` the active and
//! pending alerts and the thread that sends them.

mod post;
mod state;

pub use post::{ALERTMANAGER_BREAKER, ALERTMANAGER_RETRY, API_PATH, PostError, alerts_url, post_json};

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::breaker::BreakerPolicy;
use crate::retry::{RetryPolicy, Target, TargetStatus};
use crate::tls::ClientTls;

use post::{Endpoint, REQUEST_TIMEOUT, redact};
use state::{Shared, State, run};

/// How often active alerts are posted again when nothing else changes (Prometheus's
/// `resend_delay` default).
pub const DEFAULT_RESEND_INTERVAL: Duration = Duration::from_secs(60);

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

/// How an [`Alerter`] reaches its Alertmanagers. [`AlerterConfig::new`] gives the
/// production defaults.
#[derive(Clone, Debug)]
pub struct AlerterConfig {
    /// The name of the Alertmanager targets in status reports and metrics (low
    /// cardinality): itself with one Alertmanager, `NAME-1`, `NAME-2`, … with several.
    pub name: String,
    /// Base URLs (`http(s)://host:port[/prefix]`); [`API_PATH`] is appended. Every alert
    /// goes to each of them, like Prometheus does for an Alertmanager cluster.
    pub urls: Vec<String>,
    /// Roots and client certificate for `https://` Alertmanagers.
    pub tls: ClientTls,
    /// How often active alerts are posted again.
    pub resend_interval: Duration,
    /// Retries of one POST.
    pub retry: RetryPolicy,
    /// Each Alertmanager's circuit breaker.
    pub breaker: BreakerPolicy,
}

impl AlerterConfig {
    /// Alertmanagers at `urls`, named `alertmanager`, with the system's roots and the
    /// default resend interval, retries and breaker.
    pub fn new(urls: impl IntoIterator<Item = impl Into<String>>) -> AlerterConfig {
        AlerterConfig {
            name: "alertmanager".to_string(),
            urls: urls.into_iter().map(Into::into).collect(),
            tls: ClientTls::default(),
            resend_interval: DEFAULT_RESEND_INTERVAL,
            retry: ALERTMANAGER_RETRY,
            breaker: ALERTMANAGER_BREAKER,
        }
    }
}

/// An [`Alerter`]'s counters, for status reports and metrics.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct AlerterStatus {
    /// Alerts active now.
    pub active: u64,
    /// Alerts posted and accepted, over all Alertmanagers (each resend counts).
    pub sent: u64,
    /// POSTs that failed after their retries or were refused by an open breaker.
    pub failed_posts: u64,
    /// Alerts dropped before sending because Alertmanager would refuse them
    /// ([`Alert::check`]).
    pub invalid: u64,
    /// Each Alertmanager.
    pub alertmanagers: Vec<AlertmanagerStatus>,
}

/// One Alertmanager's counters.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct AlertmanagerStatus {
    /// Its alerts URL, without credentials.
    pub url: String,
    /// Alerts it accepted.
    pub sent: u64,
    /// POSTs to it that failed.
    pub failed_posts: u64,
    /// Why the last failed POST failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Its breaker and retry counters.
    pub target: TargetStatus,
}

/// Sends alerts to Alertmanager (see the module docs): holds the active alerts, posts
/// changes at once and everything active every resend interval, one thread per
/// Alertmanager. Dropping it stops the threads (each after the POST it is in, if any);
/// the alerts then resolve in Alertmanager by themselves, `4 × interval` after the last
/// resend.
pub struct Alerter {
    shared: Arc<Shared>,
    endpoints: Vec<Arc<Endpoint>>,
}

impl fmt::Debug for Alerter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<&str> = self.endpoints.iter().map(|e| e.shown.as_str()).collect();
        f.debug_struct("Alerter")
            .field("alertmanagers", &urls)
            .field("resend_interval", &self.shared.interval)
            .finish_non_exhaustive()
    }
}

impl Alerter {
    /// Checks `config` and starts one thread per Alertmanager. Errors say which URL or
    /// setting is wrong.
    pub fn start(config: AlerterConfig) -> anyhow::Result<Alerter> {
        if config.urls.is_empty() {
            anyhow::bail!("no Alertmanager URL given");
        }
        if config.resend_interval.is_zero() || config.resend_interval > Duration::from_secs(86_400) {
            anyhow::bail!(
                "the Alertmanager resend interval must be more than 0 and at most a day, not {:?}",
                config.resend_interval
            );
        }
        let mut endpoints = Vec::new();
        for (i, base) in config.urls.iter().enumerate() {
            let url = alerts_url(base).map_err(anyhow::Error::msg)?;
            let name = match config.urls.len() {
                1 => config.name.clone(),
                _ => format!("{}-{}", config.name, i + 1),
            };
            // A probe takes at most one request timeout; twice that means its thread is
            // stuck and another probe may go.
            let target = Target::new(&name, "alertmanager", config.breaker, REQUEST_TIMEOUT * 2);
            endpoints.push(Arc::new(Endpoint {
                shown: redact(&url),
                url,
                target: Arc::new(target),
                sent: AtomicU64::new(0),
                failed_posts: AtomicU64::new(0),
                last_error: Mutex::new(None),
            }));
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(endpoints.len())),
            wake: Condvar::new(),
            interval: config.resend_interval,
            invalid: AtomicU64::new(0),
        });
        let alerter = Alerter {
            shared: shared.clone(),
            endpoints: endpoints.clone(),
        };
        for (index, endpoint) in endpoints.into_iter().enumerate() {
            let agent: ureq::Agent = config
                .tls
                .agent_config()
                .timeout_global(Some(REQUEST_TIMEOUT))
                .http_status_as_error(false)
                // A redirect means a wrong URL; say so with its status instead of
                // following it as a GET.
                .max_redirects(0)
                .build()
                .into();
            let (shared, retry) = (shared.clone(), config.retry);
            std::thread::Builder::new()
                .name(format!("kiln-alerts-{}", index + 1))
                .spawn(move || run(&shared, &endpoint, index, &agent, &retry))
                .map_err(|e| anyhow::anyhow!("could not start the Alertmanager thread: {e}"))?;
            // On an error here, dropping `alerter` stops the threads already started.
        }
        Ok(alerter)
    }

    /// Fires `alert` (or refreshes it, keeping its start) and sends it now. It stays
    /// active, posted every resend interval, until [`Alerter::resolve`]d.
    pub fn fire(&self, alert: Alert) {
        if self.admit(&alert) {
            let now = SystemTime::now();
            self.shared.update(|s| s.fire(alert, None, now));
        }
    }

    /// Fires `alert` for something that happened (a rollback, a failed import) rather
    /// than a condition that holds: it resolves by itself after `lasting` (within a resend
    /// interval; Alertmanager is told the end time at once).
    pub fn fire_for(&self, alert: Alert, lasting: Duration) {
        if self.admit(&alert) {
            let now = SystemTime::now();
            let expires = now.checked_add(lasting).unwrap_or(now);
            self.shared.update(|s| s.fire(alert, Some(expires), now));
        }
    }

    /// Resolves an active alert, named by its labels or fingerprint: it is sent once more
    /// with `endsAt = now`, then forgotten. False when no such alert is active.
    pub fn resolve(&self, alert: impl Into<Fingerprint>) -> bool {
        let fp = alert.into();
        let now = SystemTime::now();
        self.shared.update(|s| s.resolve(fp, now))
    }

    /// For a condition re-evaluated every tick (`source` = `drift`, `nodes`, …): fires
    /// every alert in `current` and resolves every active alert last reported by `source`
    /// that is not in it. New and changed alerts are sent now, unchanged ones with the
    /// next resend. An alert belongs to the last source that reported it.
    pub fn reconcile(&self, source: &str, current: Vec<Alert>) {
        let current: Vec<Alert> = current.into_iter().filter(|a| self.admit(a)).collect();
        let now = SystemTime::now();
        self.shared.update(|s| s.reconcile(source, current, now));
    }

    /// The active alerts, in fingerprint order.
    pub fn active(&self) -> Vec<Alert> {
        self.shared
            .lock()
            .active
            .values()
            .map(|a| a.alert.clone())
            .collect()
    }

    /// The counters now.
    pub fn status(&self) -> AlerterStatus {
        let active = self.shared.lock().active.len() as u64;
        let alertmanagers: Vec<AlertmanagerStatus> = self.endpoints.iter().map(|e| e.status()).collect();
        AlerterStatus {
            active,
            sent: alertmanagers.iter().map(|a| a.sent).sum(),
            failed_posts: alertmanagers.iter().map(|a| a.failed_posts).sum(),
            invalid: self.shared.invalid.load(Ordering::Acquire),
            alertmanagers,
        }
    }

    /// Each Alertmanager's target (breaker and retry counters), for a service's metrics.
    pub fn targets(&self) -> Vec<Arc<Target>> {
        self.endpoints.iter().map(|e| e.target.clone()).collect()
    }

    /// Whether `alert` can be sent; logs and counts it when not.
    fn admit(&self, alert: &Alert) -> bool {
        match alert.check() {
            Ok(()) => true,
            Err(e) => {
                self.shared.invalid.fetch_add(1, Ordering::AcqRel);
                tracing::error!(error = %e, "alerts: alert not sent (Alertmanager would refuse it)");
                false
            }
        }
    }
}

impl Drop for Alerter {
    fn drop(&mut self) {
        // Not joined: a thread in the middle of a POST to a hanging Alertmanager would hold
        // up whoever drops the alerter for the whole retry budget.
        self.shared.update(|s| s.stopping = true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn drift(model: &str) -> Alert {
        Alert::new("KilnDataDrift", Severity::Warning)
            .label("model", model)
            .annotation("summary", format!("{model}: inputs drifted"))
    }

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
