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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::breaker::BreakerPolicy;
use crate::retry::{Event, Failure, Refused, RetryPolicy, Target, TargetStatus, ThreadPause};
use crate::tls::{ClientTls, describe_ureq_error};

/// Alertmanager's alerts endpoint, appended to each base URL.
pub const API_PATH: &str = "/api/v2/alerts";

/// How often active alerts are posted again when nothing else changes (Prometheus's
/// `resend_delay` default).
pub const DEFAULT_RESEND_INTERVAL: Duration = Duration::from_secs(60);

/// Retries of one POST: four attempts, up to 500 ms, 1 s, 2 s apart (full jitter); a
/// `Retry-After` over 5 s ends them (the next resend comes anyway).
pub const ALERTMANAGER_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 4,
    base_delay: Duration::from_millis(500),
    max_delay: Duration::from_secs(5),
};

/// One Alertmanager's breaker: open after three failed POSTs, for 30 s, doubling after each
/// failed probe up to 5 minutes.
pub const ALERTMANAGER_BREAKER: BreakerPolicy = BreakerPolicy {
    failure_threshold: 3,
    initial_cooldown: Duration::from_secs(30),
    max_cooldown: Duration::from_secs(300),
};

/// Longest wait for one POST (connect, send, answer).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Most of an error answer read for its message.
const MAX_ANSWER: u64 = 64 * 1024;

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

/// One element of the POST body (Alertmanager's `postableAlert`).
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
struct Postable {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    starts_at: String,
    #[serde(rename = "endsAt")]
    ends_at: String,
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    generator_url: Option<String>,
}

impl Postable {
    fn new(alert: &Alert, starts_at: SystemTime, ends_at: SystemTime) -> Postable {
        Postable {
            labels: alert.labels.clone(),
            annotations: alert.annotations.clone(),
            starts_at: rfc3339(starts_at),
            // Alertmanager refuses an alert that ends before it starts (a clock that went
            // back between the two).
            ends_at: rfc3339(ends_at.max(starts_at)),
            generator_url: alert.generator_url.clone(),
        }
    }
}

/// RFC 3339 UTC to the second (`2026-12-07T11:55:27Z`, as Alertmanager's docs show it).
/// Truncating keeps a resolve's `endsAt = now` from being a moment in Alertmanager's
/// future, and it never puts `endsAt` before `startsAt`.
fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil-from-days (the proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// An alert Kiln holds as active.
#[derive(Clone, Debug)]
struct Active {
    alert: Alert,
    /// When it first fired; kept while it stays active, so Alertmanager shows how long
    /// it has been going on.
    starts_at: SystemTime,
    /// The [`Alerter::reconcile`] source that reported it last, if any.
    source: Option<String>,
    /// When it resolves by itself ([`Alerter::fire_for`]).
    expires: Option<SystemTime>,
}

impl Active {
    /// As posted while active: ending `4 × interval` from now unless posted again (or at
    /// its expiry, if sooner).
    fn postable(&self, now: SystemTime, interval: Duration) -> Postable {
        let mut ends = now.checked_add(interval.saturating_mul(4)).unwrap_or(now);
        if let Some(expires) = self.expires {
            ends = ends.min(expires);
        }
        Postable::new(&self.alert, self.starts_at, ends)
    }
}

/// What an Alertmanager's thread has to send at its next wake-up.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pending {
    /// The active alert, as it is when the batch goes.
    Firing,
    /// A resolved alert (no longer in `active`).
    Resolved(Postable),
}

/// The active alerts and, per Alertmanager, what is waiting to be sent. Every method
/// takes the time, so tests need no clock.
#[derive(Debug, Default)]
struct State {
    active: BTreeMap<Fingerprint, Active>,
    /// One per Alertmanager, by fingerprint: a later change to the same alert replaces an
    /// earlier one not sent yet, so an outbox never holds more than one entry per alert.
    outboxes: Vec<BTreeMap<Fingerprint, Pending>>,
    stopping: bool,
}

impl State {
    fn new(alertmanagers: usize) -> State {
        State {
            outboxes: vec![BTreeMap::new(); alertmanagers],
            ..State::default()
        }
    }

    /// Makes `alert` active or refreshes it (keeping its start); `source` replaces the
    /// previous one when given. Returns its fingerprint and whether Alertmanager has not
    /// seen it as it is now (new, or other annotations or generator URL).
    fn upsert(
        &mut self,
        alert: Alert,
        source: Option<&str>,
        expires: Option<SystemTime>,
        now: SystemTime,
    ) -> (Fingerprint, bool) {
        let fp = alert.fingerprint();
        match self.active.get_mut(&fp) {
            Some(active) => {
                let changed = active.alert != alert;
                active.alert = alert;
                if let Some(source) = source {
                    active.source = Some(source.to_string());
                }
                active.expires = expires;
                (fp, changed)
            }
            None => {
                let active = Active {
                    alert,
                    starts_at: now,
                    source: source.map(str::to_string),
                    expires,
                };
                self.active.insert(fp, active);
                (fp, true)
            }
        }
    }

    fn queue_firing(&mut self, fp: Fingerprint) {
        for outbox in &mut self.outboxes {
            outbox.insert(fp, Pending::Firing);
        }
    }

    /// [`Alerter::fire`] and [`Alerter::fire_for`]: always sent, even unchanged.
    fn fire(&mut self, alert: Alert, expires: Option<SystemTime>, now: SystemTime) {
        let (fp, _) = self.upsert(alert, None, expires, now);
        self.queue_firing(fp);
    }

    /// Forgets an active alert and queues it once more, ending at `ends_at`. False when it
    /// was not active.
    fn resolve(&mut self, fp: Fingerprint, ends_at: SystemTime) -> bool {
        let Some(active) = self.active.remove(&fp) else {
            return false;
        };
        let resolved = Postable::new(&active.alert, active.starts_at, ends_at);
        for outbox in &mut self.outboxes {
            outbox.insert(fp, Pending::Resolved(resolved.clone()));
        }
        true
    }

    /// [`Alerter::reconcile`]: new or changed alerts are queued now; unchanged ones go
    /// with the next resend (a control loop reporting every second must not mean a POST
    /// every second).
    fn reconcile(&mut self, source: &str, current: Vec<Alert>, now: SystemTime) {
        let mut seen = BTreeSet::new();
        for alert in current {
            let (fp, changed) = self.upsert(alert, Some(source), None, now);
            seen.insert(fp);
            if changed {
                self.queue_firing(fp);
            }
        }
        let gone: Vec<Fingerprint> = self
            .active
            .iter()
            .filter(|(fp, a)| a.source.as_deref() == Some(source) && !seen.contains(*fp))
            .map(|(fp, _)| *fp)
            .collect();
        for fp in gone {
            self.resolve(fp, now);
        }
    }

    /// Resolves the alerts whose time is up, as of when it was up; true if any was.
    fn expire(&mut self, now: SystemTime) -> bool {
        let due: Vec<(Fingerprint, SystemTime)> = self
            .active
            .iter()
            .filter_map(|(fp, a)| a.expires.filter(|e| *e <= now).map(|e| (*fp, e)))
            .collect();
        for (fp, expired_at) in &due {
            self.resolve(*fp, *expired_at);
        }
        !due.is_empty()
    }

    /// What Alertmanager `index` is sent now: its outbox, plus every active alert when a
    /// resend is due.
    fn take(&mut self, index: usize, resend: bool, now: SystemTime, interval: Duration) -> Vec<Postable> {
        let outbox = self
            .outboxes
            .get_mut(index)
            .map(std::mem::take)
            .unwrap_or_default();
        let mut batch = Vec::new();
        for (fp, pending) in outbox {
            match pending {
                Pending::Resolved(resolved) => batch.push(resolved),
                // A resend carries every active alert anyway.
                Pending::Firing if resend => {}
                Pending::Firing => {
                    if let Some(active) = self.active.get(&fp) {
                        batch.push(active.postable(now, interval));
                    }
                }
            }
        }
        if resend {
            batch.extend(self.active.values().map(|a| a.postable(now, interval)));
        }
        batch
    }
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

/// The alerts endpoint of an Alertmanager base URL, or what is wrong with the URL.
pub fn alerts_url(base: &str) -> Result<String, String> {
    crate::check_http_url(base).map_err(|e| {
        let e = match userinfo(base) {
            Some(secret) => e.replace(secret, ""),
            None => e,
        };
        format!("Alertmanager URL: {e}")
    })?;
    if base.contains(['?', '#']) {
        return Err(format!(
            "Alertmanager URL `{}`: give the base URL (http://host:9093), without a query or fragment",
            redact(base)
        ));
    }
    let base = base.trim_end_matches('/');
    // Tolerate the full endpoint too: people copy it from Alertmanager's docs.
    let base = base.strip_suffix(API_PATH).unwrap_or(base);
    Ok(format!("{base}{API_PATH}"))
}

/// The `user:password@` of a URL, if it has one (ureq sends it as basic auth).
fn userinfo(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    authority.rfind('@').map(|at| &rest[..=at])
}

/// A URL without the `user:password@` it may hold, for logs and status.
fn redact(url: &str) -> String {
    match userinfo(url) {
        Some(secret) => url.replacen(secret, "", 1),
        None => url.to_string(),
    }
}

/// A failed POST: no answer, or a status other than 2xx.
#[derive(Debug)]
pub enum PostError {
    /// No answer (the transport's error, without credentials).
    Transport(String),
    /// An answer other than 2xx: its status, `Retry-After` and the reason it gave.
    Status {
        /// The HTTP status.
        code: u16,
        /// Its `Retry-After`, if any.
        retry_after: Option<String>,
        /// The receiver's reason (Alertmanager's `message`, else the answer's start).
        message: String,
    },
}

/// One attempt of a JSON POST to an alert receiver (Alertmanager, or the sync service's
/// webhook) with `headers`: `Ok` on a 2xx. A `user:password@` in `url` is sent as basic
/// auth by ureq and kept out of the error; `shown` names the receiver in it.
pub fn post_json(
    agent: &ureq::Agent,
    url: &str,
    shown: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> Result<(), PostError> {
    let mut request = agent.post(url).content_type("application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request.send(body).map_err(|e| {
        // ureq's own messages may quote the URL, credentials and all.
        let text = describe_ureq_error(shown, &e);
        PostError::Transport(match userinfo(url) {
            Some(secret) => text.replace(secret, ""),
            None => text,
        })
    })?;
    let code = response.status().as_u16();
    if (200..300).contains(&code) {
        return Ok(());
    }
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = response
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER)
        .read_to_string()
        .unwrap_or_default();
    Err(PostError::Status {
        code,
        retry_after,
        message: rejection_message(&text),
    })
}

impl PostError {
    /// What the retry policy and breaker make of it.
    pub fn failure(&self) -> Failure {
        match self {
            PostError::Transport(_) => Failure::Transport,
            PostError::Status {
                code, retry_after, ..
            } => Failure::status(*code, retry_after.as_deref(), SystemTime::now()),
        }
    }
}

impl fmt::Display for PostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PostError::Transport(e) => f.write_str(e),
            PostError::Status { code, message, .. } if message.is_empty() => write!(f, "HTTP {code}"),
            PostError::Status { code, message, .. } => write!(f, "HTTP {code}: {message}"),
        }
    }
}

/// Alertmanager's reason in an error answer: `{"code":602,"message":"…"}` from its schema
/// check (422), a JSON string from its own validation (400), else the text's start.
fn rejection_message(text: &str) -> String {
    let start = || text.trim().chars().take(300).collect();
    match serde_json::from_str::<Value>(text) {
        Ok(Value::String(message)) => message,
        Ok(Value::Object(mut answer)) => match answer.remove("message") {
            Some(Value::String(message)) => message,
            _ => start(),
        },
        _ => start(),
    }
}

/// One Alertmanager: where, its breaker and retry counters, and what it was sent.
struct Endpoint {
    url: String,
    /// `url` without credentials, for logs and status.
    shown: String,
    target: Arc<Target>,
    sent: AtomicU64,
    failed_posts: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Endpoint {
    /// POSTs `batch` (with retries, behind the breaker) and counts the outcome.
    fn post(&self, agent: &ureq::Agent, retry: &RetryPolicy, batch: &[Postable]) {
        let body = match serde_json::to_vec(batch) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(error = %e, "alerts: could not encode a POST body");
                return;
            }
        };
        let attempt = || post_json(agent, &self.url, &self.shown, &body, &[]);
        let url = &self.shown;
        let on_event = |event: Event<'_, PostError>| match event {
            Event::Retry {
                attempt,
                delay,
                error,
            } => {
                tracing::info!(url = %url, attempt, delay_ms = delay.as_millis() as u64, error = %error, "alerts: POST to Alertmanager failed; retrying")
            }
            Event::Opened(_) => {
                tracing::warn!(url = %url, "alerts: Alertmanager circuit breaker open: alerts wait for the next resend after its cool-down")
            }
            Event::Closed => {
                tracing::info!(url = %url, "alerts: Alertmanager answers again; circuit breaker closed")
            }
        };
        let outcome = self
            .target
            .call(retry, &mut ThreadPause, PostError::failure, on_event, attempt);
        let error = match outcome {
            Ok(()) => {
                self.sent.fetch_add(batch.len() as u64, Ordering::AcqRel);
                tracing::debug!(url = %url, alerts = batch.len(), "alerts: posted to Alertmanager");
                return;
            }
            Err(Refused::Failed { error, attempts }) => {
                if error.failure().is_retryable() {
                    tracing::warn!(url = %url, attempts, alerts = batch.len(), error = %error, "alerts: POST to Alertmanager failed; active alerts go again with the next resend");
                } else {
                    // Alertmanager read the alerts and refused them: repeating will not help,
                    // and its message says what is wrong.
                    tracing::error!(url = %url, alerts = batch.len(), error = %error, "alerts: Alertmanager refused the alerts");
                }
                error.to_string()
            }
            Err(Refused::Open { retry_in }) => {
                tracing::warn!(url = %url, retry_in_ms = retry_in.as_millis() as u64, alerts = batch.len(), "alerts: Alertmanager circuit breaker open; alerts not sent");
                format!("circuit breaker open (retry in {} ms)", retry_in.as_millis())
            }
        };
        self.failed_posts.fetch_add(1, Ordering::AcqRel);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    fn status(&self) -> AlertmanagerStatus {
        AlertmanagerStatus {
            url: self.shown.clone(),
            sent: self.sent.load(Ordering::Acquire),
            failed_posts: self.failed_posts.load(Ordering::Acquire),
            last_error: self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            target: self.target.status(),
        }
    }
}

/// What the [`Alerter`] and its threads share.
struct Shared {
    state: Mutex<State>,
    /// Wakes the threads: something was queued, or they must stop.
    wake: Condvar,
    interval: Duration,
    invalid: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the state, then wakes the threads.
    fn update<T>(&self, change: impl FnOnce(&mut State) -> T) -> T {
        let out = change(&mut self.lock());
        self.wake.notify_all();
        out
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

/// One Alertmanager's thread: waits for queued alerts or the next resend, posts, repeats.
fn run(shared: &Shared, endpoint: &Endpoint, index: usize, agent: &ureq::Agent, retry: &RetryPolicy) {
    let interval = shared.interval;
    let mut next_resend = Instant::now() + interval;
    loop {
        let batch = {
            let mut state = shared.lock();
            loop {
                if state.stopping {
                    return;
                }
                let now = Instant::now();
                let queued = state.outboxes.get(index).is_some_and(|o| !o.is_empty());
                if queued || now >= next_resend {
                    break;
                }
                state = match shared.wake.wait_timeout(state, next_resend - now) {
                    Ok((state, _)) => state,
                    Err(poisoned) => poisoned.into_inner().0,
                };
            }
            let resend = Instant::now() >= next_resend;
            if resend {
                next_resend = Instant::now() + interval;
            }
            let now = SystemTime::now();
            if state.expire(now) {
                // The other Alertmanagers' outboxes got the resolves too.
                shared.wake.notify_all();
            }
            state.take(index, resend, now, interval)
        };
        if !batch.is_empty() {
            endpoint.post(agent, retry, &batch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    const MINUTE: Duration = Duration::from_secs(60);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// 2026-12-07T11:55:27Z, the research notes' example time.
    const T0: u64 = 1_796_644_527;

    fn drift(model: &str) -> Alert {
        Alert::new("KilnDataDrift", Severity::Warning)
            .label("model", model)
            .annotation("summary", format!("{model}: inputs drifted"))
    }

    fn node_failing(node: &str) -> Alert {
        Alert::new("KilnNodeFailing", Severity::Page).label("node", node)
    }

    /// What outbox 0 holds, as (alertname, resolved?) pairs.
    fn outbox(state: &State) -> Vec<(String, bool)> {
        state.outboxes[0]
            .iter()
            .map(|(fp, p)| match p {
                Pending::Firing => (state.active[fp].alert.alertname().to_string(), false),
                Pending::Resolved(r) => (r.labels["alertname"].clone(), true),
            })
            .collect()
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
    fn rfc3339_is_utc_to_the_second() {
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(T0)), "2026-12-07T11:55:27Z");
        assert_eq!(
            rfc3339(at(T0) + Duration::from_millis(999)),
            "2026-12-07T11:55:27Z"
        );
        assert_eq!(rfc3339(at(1_709_164_800)), "2024-02-29T00:00:00Z");
        assert_eq!(rfc3339(at(951_868_799)), "2000-02-29T23:59:59Z");
        assert_eq!(rfc3339(at(1_735_689_599)), "2024-12-31T23:59:59Z");
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn the_payload_is_alertmanagers_postable_alert() {
        let alert = drift("iris")
            .label("version", 3)
            .generator_url("http://127.0.0.1:8080/monitor");
        let active = Active {
            alert: alert.clone(),
            starts_at: at(T0),
            source: None,
            expires: None,
        };
        let body = serde_json::to_string(&[active.postable(at(T0 + 5), MINUTE)]).unwrap();
        assert_eq!(
            body,
            r#"[{"labels":{"alertname":"KilnDataDrift","model":"iris","severity":"warning","version":"3"},"annotations":{"summary":"iris: inputs drifted"},"startsAt":"2026-12-07T11:55:27Z","endsAt":"2026-12-07T11:59:32Z","generatorURL":"http://127.0.0.1:8080/monitor"}]"#
        );
        // No generator URL: the field is left out (Alertmanager's `uri` check refuses "").
        let plain = Postable::new(&node_failing("node-a"), at(T0), at(T0));
        let json = serde_json::to_value(&plain).unwrap();
        assert!(json.get("generatorURL").is_none(), "{json}");
        assert_eq!(json["annotations"], serde_json::json!({}));
    }

    #[test]
    fn ends_at_is_four_intervals_ahead_and_never_before_the_start() {
        let mut s = State::new(1);
        s.fire(drift("iris"), None, at(T0));
        let batch = s.take(0, false, at(T0), MINUTE);
        assert_eq!(
            (batch[0].starts_at.as_str(), batch[0].ends_at.as_str()),
            ("2026-12-07T11:55:27Z", "2026-12-07T11:59:27Z")
        );
        // A resend 90 s later: same start, end moved.
        let batch = s.take(0, true, at(T0 + 90), MINUTE);
        assert_eq!(
            (batch[0].starts_at.as_str(), batch[0].ends_at.as_str()),
            ("2026-12-07T11:55:27Z", "2026-12-07T12:00:57Z")
        );
        // A clock that went back does not make it end before it started.
        let batch = s.take(0, true, at(T0 - 3600), Duration::from_secs(1));
        assert_eq!(batch[0].ends_at, batch[0].starts_at);
    }

    #[test]
    fn refiring_keeps_the_start_and_resolving_ends_now_then_forgets() {
        let mut s = State::new(2);
        s.fire(drift("iris"), None, at(T0));
        s.fire(drift("iris").annotation("summary", "worse"), None, at(T0 + 30));
        assert_eq!(s.active.len(), 1);
        let batch = s.take(0, false, at(T0 + 30), MINUTE);
        assert_eq!(batch.len(), 1, "one entry per alert in an outbox");
        assert_eq!(batch[0].starts_at, "2026-12-07T11:55:27Z");
        assert_eq!(batch[0].annotations["summary"], "worse");

        assert!(s.resolve(drift("iris").fingerprint(), at(T0 + 100)));
        assert!(
            !s.resolve(drift("iris").fingerprint(), at(T0 + 101)),
            "already forgotten"
        );
        assert!(s.active.is_empty());
        // Outbox 0 was emptied before the resolve, outbox 1 was not: both get only the
        // resolve (it replaced the firing entry).
        for index in [0, 1] {
            let batch = s.take(index, false, at(T0 + 100), MINUTE);
            assert_eq!(batch.len(), 1);
            assert_eq!(batch[0].starts_at, "2026-12-07T11:55:27Z");
            assert_eq!(batch[0].ends_at, "2026-12-07T11:57:07Z");
        }
        // Sent once: gone from the outboxes, and a resend has nothing active to carry.
        assert!(s.take(0, true, at(T0 + 200), MINUTE).is_empty());
    }

    #[test]
    fn reconcile_fires_what_is_true_now_and_resolves_what_its_source_no_longer_reports() {
        let mut s = State::new(1);
        s.reconcile("drift", vec![drift("iris"), drift("wine")], at(T0));
        s.reconcile("nodes", vec![node_failing("node-a")], at(T0));
        s.fire(Alert::new("KilnRolledBack", Severity::Warning), None, at(T0));
        assert_eq!(s.active.len(), 4);
        s.take(0, false, at(T0), MINUTE);

        // Unchanged: nothing queued (the resend carries it); wine gone: resolved.
        s.reconcile("drift", vec![drift("iris")], at(T0 + 10));
        assert_eq!(outbox(&s), vec![("KilnDataDrift".to_string(), true)]);
        let batch = s.take(0, false, at(T0 + 10), MINUTE);
        assert_eq!(batch[0].labels["model"], "wine");
        assert_eq!(batch[0].ends_at, rfc3339(at(T0 + 10)));

        // A changed annotation is sent at once, keeping the start.
        s.reconcile(
            "drift",
            vec![drift("iris").annotation("summary", "psi 0.4")],
            at(T0 + 20),
        );
        assert_eq!(outbox(&s), vec![("KilnDataDrift".to_string(), false)]);
        let batch = s.take(0, false, at(T0 + 20), MINUTE);
        assert_eq!(batch[0].starts_at, rfc3339(at(T0)));

        // Another source, and alerts fired directly, are left alone.
        s.reconcile("drift", vec![], at(T0 + 30));
        let names: Vec<&str> = s.active.values().map(|a| a.alert.alertname()).collect();
        assert_eq!(names.len(), 2);
        assert!(names.contains(&"KilnNodeFailing") && names.contains(&"KilnRolledBack"));
        s.reconcile("nodes", vec![], at(T0 + 30));
        assert_eq!(s.active.len(), 1);
    }

    #[test]
    fn an_event_alert_ends_at_its_expiry_and_then_resolves() {
        let mut s = State::new(1);
        let expires = at(T0 + 90);
        s.fire(
            Alert::new("KilnRolledBack", Severity::Warning),
            Some(expires),
            at(T0),
        );
        let batch = s.take(0, false, at(T0), MINUTE);
        assert_eq!(
            batch[0].ends_at,
            rfc3339(expires),
            "capped at the expiry, not now + 4 min"
        );
        assert!(!s.expire(at(T0 + 89)));
        assert!(s.expire(at(T0 + 95)));
        assert!(s.active.is_empty());
        let batch = s.take(0, false, at(T0 + 95), MINUTE);
        assert_eq!(batch[0].ends_at, rfc3339(expires));
    }

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

    #[test]
    fn alertmanager_urls_get_the_api_path_once_and_lose_their_credentials_in_logs() {
        assert_eq!(
            alerts_url("http://127.0.0.1:9093").unwrap(),
            "http://127.0.0.1:9093/api/v2/alerts"
        );
        assert_eq!(
            alerts_url("https://am/prefix/").unwrap(),
            "https://am/prefix/api/v2/alerts"
        );
        assert_eq!(
            alerts_url("http://am:9093/api/v2/alerts").unwrap(),
            "http://am:9093/api/v2/alerts"
        );
        assert!(alerts_url("am:9093").is_err());
        for bad in ["http://u:s3cret@am/?x", "ftp://u:s3cret@am"] {
            let e = alerts_url(bad).unwrap_err();
            assert!(!e.contains("s3cret"), "{e}");
        }
        let alerter = Alerter::start(AlerterConfig::new(["http://u:s3cret@127.0.0.1:9"])).unwrap();
        assert_eq!(
            alerter.status().alertmanagers[0].url,
            "http://127.0.0.1:9/api/v2/alerts"
        );
        assert!(!format!("{alerter:?}").contains("s3cret"));
        assert_eq!(
            redact("https://u:s3cret@am:9093/api/v2/alerts"),
            "https://am:9093/api/v2/alerts"
        );
        assert_eq!(redact("http://am/a@b"), "http://am/a@b");
        assert!(Alerter::start(AlerterConfig::new(Vec::<String>::new())).is_err());
        let mut config = AlerterConfig::new(["http://127.0.0.1:9"]);
        config.resend_interval = Duration::ZERO;
        assert!(Alerter::start(config).is_err());
    }

    #[test]
    fn rejection_messages_come_from_alertmanagers_answer() {
        assert_eq!(
            rejection_message(r#"{"code":602,"message":"0.labels in body is required"}"#),
            "0.labels in body is required"
        );
        assert_eq!(
            rejection_message(r#""invalid label set: invalid name \"a-b\"""#),
            r#"invalid label set: invalid name "a-b""#
        );
        assert_eq!(rejection_message(" Not Found \n"), "Not Found");
    }

    /// A stand-in Alertmanager on 127.0.0.1 that gives `answers` (status, body) in turn,
    /// one per connection, and records the bodies it was sent.
    fn fake_alertmanager(answers: Vec<(u16, &'static str)>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let seen = bodies.clone();
        std::thread::spawn(move || {
            for (code, answer) in answers {
                let Ok((mut stream, _)) = listener.accept() else {
                    return;
                };
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                let body = loop {
                    let n = stream.read(&mut buf).unwrap_or(0);
                    if n == 0 {
                        break String::new();
                    }
                    data.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&data).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= length {
                            break body.to_string();
                        }
                    }
                };
                seen.lock().unwrap().push(body);
                let reply = format!(
                    "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        (url, bodies)
    }

    fn quick_config(url: &str) -> AlerterConfig {
        let mut config = AlerterConfig::new([url]);
        config.resend_interval = Duration::from_secs(3600);
        config.retry = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        };
        config
    }

    fn wait_for(alerter: &Alerter, done: impl Fn(&AlerterStatus) -> bool) -> AlerterStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = alerter.status();
            if done(&status) || Instant::now() > deadline {
                return status;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_5xx_is_retried_and_the_alert_then_counts_as_sent() {
        let (url, bodies) = fake_alertmanager(vec![(503, ""), (200, "")]);
        let alerter = Alerter::start(quick_config(&url)).unwrap();
        alerter.fire(drift("iris"));
        let status = wait_for(&alerter, |s| s.sent == 1);
        assert_eq!((status.sent, status.failed_posts, status.active), (1, 0, 1));
        assert_eq!(status.alertmanagers[0].target.retries, 1);
        let bodies = bodies.lock().unwrap();
        assert_eq!(bodies.len(), 2);
        assert_eq!(bodies[0], bodies[1], "a retry repeats the same body");
        let sent: Value = serde_json::from_str(&bodies[0]).unwrap();
        assert_eq!(sent[0]["labels"]["model"], "iris");
    }

    #[test]
    fn a_4xx_is_not_retried_and_alertmanagers_message_is_kept() {
        let (url, bodies) = fake_alertmanager(vec![(
            422,
            r#"{"code":602,"message":"0.labels in body is required"}"#,
        )]);
        let alerter = Alerter::start(quick_config(&url)).unwrap();
        alerter.fire(drift("iris"));
        let status = wait_for(&alerter, |s| s.failed_posts == 1);
        let am = &status.alertmanagers[0];
        assert_eq!((status.sent, status.failed_posts, am.target.retries), (0, 1, 0));
        assert_eq!(
            am.last_error.as_deref(),
            Some("HTTP 422: 0.labels in body is required")
        );
        assert_eq!(am.target.breaker, "closed", "a 4xx shows Alertmanager is up");
        assert_eq!(bodies.lock().unwrap().len(), 1);
        // Invalid alerts never reach the thread.
        alerter.fire(drift("iris").label("bad-name", "x"));
        assert_eq!(alerter.status().invalid, 1);
    }
}
