//! The [`Alerter`] (see the module docs of [`crate::alerts`]): its configuration and
//! status, one [`Endpoint`] per Alertmanager with its counters, and the thread per
//! Alertmanager that sends what [`State`] holds for it ([`run`]).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::breaker::BreakerPolicy;
use crate::retry::{Event, Refused, RetryPolicy, Target, TargetStatus, ThreadPause};
use crate::tls::ClientTls;

use super::alert::{Alert, Fingerprint};
use super::post::{
    ALERTMANAGER_BREAKER, ALERTMANAGER_RETRY, PostError, REQUEST_TIMEOUT, alerts_url, post_json, redact,
};
use super::state::{Postable, Shared, State};

/// How often active alerts are posted again when nothing else changes (Prometheus's
/// `resend_delay` default).
pub const DEFAULT_RESEND_INTERVAL: Duration = Duration::from_secs(60);

/// How an [`Alerter`] reaches its Alertmanagers. [`AlerterConfig::new`] gives the
/// production defaults.
#[derive(Clone, Debug)]
pub struct AlerterConfig {
    /// The name of the Alertmanager targets in status reports and metrics (low
    /// cardinality): itself with one Alertmanager, `NAME-1`, `NAME-2`, … with several.
    pub name: String,
    /// Base URLs (`http(s)://host:port[/prefix]`); [`API_PATH`](super::API_PATH) is
    /// appended. Every alert goes to each of them, like Prometheus does for an
    /// Alertmanager cluster.
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
