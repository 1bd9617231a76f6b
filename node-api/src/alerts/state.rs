//! The alerts Kiln holds as active and what each Alertmanager has still to be sent
//! ([`State`], with the `postableAlert` body it is sent as), shared by the [`Alerter`]
//! and its threads ([`Shared`]).
//!
//! [`Alerter`]: super::Alerter

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::alert::{Alert, Fingerprint};

/// One element of the POST body (Alertmanager's `postableAlert`).
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub(super) struct Postable {
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
pub(super) struct Active {
    pub(super) alert: Alert,
    /// When it first fired; kept while it stays active, so Alertmanager shows how long
    /// it has been going on.
    starts_at: SystemTime,
    /// The [`Alerter::reconcile`](super::Alerter::reconcile) source that reported it last,
    /// if any.
    source: Option<String>,
    /// When it resolves by itself ([`Alerter::fire_for`](super::Alerter::fire_for)).
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
pub(super) enum Pending {
    /// The active alert, as it is when the batch goes.
    Firing,
    /// A resolved alert (no longer in `active`).
    Resolved(Postable),
}

/// The active alerts and, per Alertmanager, what is waiting to be sent. Every method
/// takes the time, so tests need no clock.
#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) active: BTreeMap<Fingerprint, Active>,
    /// One per Alertmanager, by fingerprint: a later change to the same alert replaces an
    /// earlier one not sent yet, so an outbox never holds more than one entry per alert.
    pub(super) outboxes: Vec<BTreeMap<Fingerprint, Pending>>,
    pub(super) stopping: bool,
}

impl State {
    pub(super) fn new(alertmanagers: usize) -> State {
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

    /// [`Alerter::fire`](super::Alerter::fire) and
    /// [`Alerter::fire_for`](super::Alerter::fire_for): always sent, even unchanged.
    pub(super) fn fire(&mut self, alert: Alert, expires: Option<SystemTime>, now: SystemTime) {
        let (fp, _) = self.upsert(alert, None, expires, now);
        self.queue_firing(fp);
    }

    /// Forgets an active alert and queues it once more, ending at `ends_at`. False when it
    /// was not active.
    pub(super) fn resolve(&mut self, fp: Fingerprint, ends_at: SystemTime) -> bool {
        let Some(active) = self.active.remove(&fp) else {
            return false;
        };
        let resolved = Postable::new(&active.alert, active.starts_at, ends_at);
        for outbox in &mut self.outboxes {
            outbox.insert(fp, Pending::Resolved(resolved.clone()));
        }
        true
    }

    /// [`Alerter::reconcile`](super::Alerter::reconcile): new or changed alerts are queued
    /// now; unchanged ones go with the next resend (a control loop reporting every second
    /// must not mean a POST every second).
    pub(super) fn reconcile(&mut self, source: &str, current: Vec<Alert>, now: SystemTime) {
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
    pub(super) fn expire(&mut self, now: SystemTime) -> bool {
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
    pub(super) fn take(
        &mut self,
        index: usize,
        resend: bool,
        now: SystemTime,
        interval: Duration,
    ) -> Vec<Postable> {
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

/// What the [`Alerter`](super::Alerter) and its threads share.
pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// Wakes the threads: something was queued, or they must stop.
    pub(super) wake: Condvar,
    pub(super) interval: Duration,
    pub(super) invalid: AtomicU64,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the state, then wakes the threads.
    pub(super) fn update<T>(&self, change: impl FnOnce(&mut State) -> T) -> T {
        let out = change(&mut self.lock());
        self.wake.notify_all();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::Severity;
    use crate::alerts::tests::drift;

    const MINUTE: Duration = Duration::from_secs(60);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// 2026-12-07T11:55:27Z, the research notes' example time.
    const T0: u64 = 1_796_644_527;

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
}
