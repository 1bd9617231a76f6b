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
//! [`Target::call`]: crate::retry::Target::call
//!
//! The alert model ([`Severity`], [`Fingerprint`], [`Alert`] and the checks Alertmanager's
//! schema makes) is in `alert`, the [`Alerter`] and the thread per Alertmanager that posts
//! in `alerter`; `post` holds the HTTP side (the POST, its retry and breaker policies, the
//! URL handling), `state` the active and pending alerts each thread sends.

mod alert;
mod alerter;
mod post;
mod state;

pub use alert::{Alert, Fingerprint, Severity};
pub use alerter::{Alerter, AlerterConfig, AlerterStatus, AlertmanagerStatus, DEFAULT_RESEND_INTERVAL};
pub use post::{ALERTMANAGER_BREAKER, ALERTMANAGER_RETRY, API_PATH, PostError, alerts_url, post_json};

#[cfg(test)]
mod tests {
    use super::{Alert, Severity};

    pub(super) fn drift(model: &str) -> Alert {
        Alert::new("KilnDataDrift", Severity::Warning)
            .label("model", model)
            .annotation("summary", format!("{model}: inputs drifted"))
    }
}
