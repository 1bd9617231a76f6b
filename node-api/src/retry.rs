//! Retries where Kiln is a client (the sync service calling nodes, the alert webhook and
//! MLflow; a node calling the sync service): exponential backoff with full jitter, a cap
//! on attempts and on each delay, and only for failures worth repeating unchanged.
//!
//! Retryable: a transport failure (connection refused or reset, DNS, TLS, timeout), a 5xx,
//! a 408 and a 429 (waiting at least its `Retry-After`). Never a 4xx otherwise: the same
//! request would get the same answer. Only requests that are safe to repeat go through
//! [`Target::call`] or [`Target::retry`]; each caller says why its requests are (GETs,
//! PUTs keyed by digest or generation, heartbeats, alerts that carry an idempotency key).
//!
//! [`Target`] is one peer as a client sees it: its circuit breaker ([`crate::breaker`])
//! and its retry counters, for status reports and metrics. Nothing here does network I/O
//! or reads a clock: waiting and randomness come from a [`Pause`], which tests replace.

use crate::breaker::{Admit, Breaker, BreakerPolicy, BreakerState, Opened};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// How a client retries one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// The first backoff's upper bound; doubled per failed attempt.
    pub base_delay: Duration,
    /// Upper bound of any delay; a `Retry-After` longer than this ends the retries.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// One attempt, no retry (a breaker's probe, a request that is not safe to repeat).
    pub const ONCE: RetryPolicy = RetryPolicy {
        max_attempts: 1,
        base_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
    };

    /// Backoff after `failed` failed attempts (1 for the first), with full jitter: uniform
    /// in `[0, min(max_delay, base_delay·2^(failed−1))]`; `unit` is a random number in
    /// `[0, 1)`. Full jitter spreads the retries of many clients that failed at the same
    /// moment (a restarted sync service, a deploy of MLflow) instead of synchronising them.
    pub fn backoff(&self, failed: u32, unit: f64) -> Duration {
        if failed == 0 {
            return Duration::ZERO;
        }
        let ceiling = self
            .base_delay
            .saturating_mul(1u32 << (failed - 1).min(20))
            .min(self.max_delay);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// What to do after attempt number `attempt` (1 for the first) failed with `failure`.
    pub fn after_failure(&self, attempt: u32, failure: &Failure, unit: f64) -> Decision {
        if !failure.is_retryable() {
            return Decision::GiveUp(GiveUp::NotRetryable);
        }
        if attempt >= self.max_attempts {
            return Decision::GiveUp(GiveUp::Exhausted);
        }
        let backoff = self.backoff(attempt, unit);
        match failure.retry_after() {
            Some(asked) if asked > self.max_delay => Decision::GiveUp(GiveUp::RetryAfterTooLong(asked)),
            Some(asked) => Decision::Retry(asked.max(backoff)),
            None => Decision::Retry(backoff),
        }
    }
}

/// A failed attempt, as far as retrying goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No answer: connection refused or reset, DNS, TLS handshake, timeout.
    Transport,
    /// An HTTP answer with an error status, and its `Retry-After` if it had one.
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// Anything else (an answer that could not be read, a local error): not retried.
    Permanent,
}

impl Failure {
    /// A status answer; `retry_after` is the header's value, if any (read at `now`).
    pub fn status(code: u16, retry_after: Option<&str>, now: SystemTime) -> Failure {
        Failure::Status {
            code,
            retry_after: retry_after.and_then(|v| parse_retry_after(v, now)),
        }
    }

    /// Whether repeating the same request may succeed: transport failures, 5xx, 408, 429.
    pub fn is_retryable(&self) -> bool {
        match self {
            Failure::Transport => true,
            Failure::Status { code, .. } => *code >= 500 || *code == 408 || *code == 429,
            Failure::Permanent => false,
        }
    }

    /// The wait the peer asked for (429 or 503 with `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// What [`RetryPolicy::after_failure`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Try again after this delay.
    Retry(Duration),
    /// Stop: return the failure.
    GiveUp(GiveUp),
}

/// Why retrying stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GiveUp {
    /// A failure that repeating would not fix (a 4xx, an unreadable answer).
    NotRetryable,
    /// Every attempt the policy allows failed.
    Exhausted,
    /// The peer asked to wait longer than the policy's `max_delay`: the caller's next
    /// periodic attempt (the next poll, heartbeat or check) comes instead.
    RetryAfterTooLong(Duration),
}

/// A `Retry-After` value (RFC 9110, 10.2.3): delay-seconds, or an IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`) read against `now`. Anything else is ignored.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = parse_imf_fixdate(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` as a time.
fn parse_imf_fixdate(value: &str) -> Option<SystemTime> {
    let (_, rest) = value.split_once(", ")?;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, clock, "GMT"] = parts[..] else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let day: i64 = day.parse().ok()?;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<u64> = clock.split(':').map(str::parse).collect::<Result<_, _>>().ok()?;
    let [h, m, s] = hms[..] else { return None };
    if !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + m * 60 + s;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Where a client's waiting and randomness come from.
pub trait Pause {
    /// A uniform random number in `[0, 1)`, for jitter.
    fn unit(&mut self) -> f64;
    /// Waits `delay` before the next attempt.
    fn sleep(&mut self, delay: Duration);
}

/// The real thing: `std::thread::sleep` and [`random_unit`] (for blocking clients, each
/// on its own thread).
pub struct ThreadPause;

impl Pause for ThreadPause {
    fn unit(&mut self) -> f64 {
        random_unit()
    }

    fn sleep(&mut self, delay: Duration) {
        std::thread::sleep(delay);
    }
}

/// A random number in `[0, 1)` from the standard library's per-process random hash keys
/// and a counter: good enough to spread retries, not for secrets.
pub fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Something that happened during a call, for the caller's log.
#[derive(Debug)]
pub enum Event<'a, E> {
    /// Attempt `attempt` failed with `error`; the next one goes after `delay`.
    Retry {
        attempt: u32,
        delay: Duration,
        error: &'a E,
    },
    /// The breaker opened (or, after a failed probe, stayed open for longer).
    Opened(Opened),
    /// A successful probe closed the breaker.
    Closed,
}

/// Why [`Target::call`] returned no answer.
#[derive(Debug)]
pub enum Refused<E> {
    /// The breaker is open: the peer was not called; a probe may go in `retry_in`.
    Open { retry_in: Duration },
    /// The call failed (after `attempts` attempts).
    Failed { error: E, attempts: u32 },
}

/// One peer a client calls (a node, MLflow, the alert webhook, the sync service): its
/// circuit breaker and its retry counters.
pub struct Target {
    name: String,
    kind: &'static str,
    /// The peer's breaker; [`Target::call`] consults it, and a caller that runs its own
    /// loop (the sync service's node worker) uses it directly.
    pub breaker: Breaker,
    retries: AtomicU64,
    failed: AtomicU64,
    rejected: AtomicU64,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("breaker", &self.breaker.state())
            .finish()
    }
}

/// A target's breaker and counters, as status reports show them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetStatus {
    /// The peer: a node's name, `mlflow`, `webhook`, `sync`.
    pub target: String,
    /// What it is: `node`, `mlflow`, `webhook`, `sync`.
    pub kind: String,
    /// `closed`, `open` or `half-open`.
    pub breaker: String,
    /// Consecutive failed calls (what opens the breaker).
    pub consecutive_failures: u32,
    /// Retried attempts since the process started.
    pub retries: u64,
    /// Calls that failed after their retries.
    pub failed_calls: u64,
    /// Calls refused at once because the breaker was open.
    pub rejected_calls: u64,
    /// Milliseconds until an open breaker lets a probe through.
    pub retry_in_ms: u64,
}

impl Target {
    /// A target named `name` (low cardinality: it becomes a metric label) of `kind`,
    /// with a breaker whose probe counts as abandoned after `probe_stale_after`.
    pub fn new(name: &str, kind: &'static str, policy: BreakerPolicy, probe_stale_after: Duration) -> Target {
        Target {
            name: name.to_string(),
            kind,
            breaker: Breaker::new(policy, probe_stale_after),
            retries: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    /// The peer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the peer is.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Retried attempts so far.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Acquire)
    }

    /// Counts a retried attempt made by a caller's own loop.
    pub fn count_retry(&self) {
        self.retries.fetch_add(1, Ordering::AcqRel);
    }

    /// The breaker and counters now.
    pub fn status(&self) -> TargetStatus {
        TargetStatus {
            target: self.name.clone(),
            kind: self.kind.to_string(),
            breaker: self.breaker.state().as_str().to_string(),
            consecutive_failures: self.breaker.failures(),
            retries: self.retries(),
            failed_calls: self.failed.load(Ordering::Acquire),
            rejected_calls: self.rejected.load(Ordering::Acquire),
            retry_in_ms: u64::try_from(self.breaker.retry_in().as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Runs `call` with retries under `policy`, without the breaker (for a caller that
    /// keeps its own: the node worker). `classify` says what a failure was; `on_event`
    /// hears of each retry. The caller makes sure `call` is safe to repeat.
    pub fn retry<T, E>(
        &self,
        policy: &RetryPolicy,
        pause: &mut dyn Pause,
        classify: impl Fn(&E) -> Failure,
        mut on_event: impl FnMut(Event<'_, E>),
        mut call: impl FnMut() -> Result<T, E>,
    ) -> Result<T, (E, u32)> {
        let mut attempt = 1;
        loop {
            match call() {
                Ok(v) => return Ok(v),
                Err(error) => match policy.after_failure(attempt, &classify(&error), pause.unit()) {
                    Decision::Retry(delay) => {
                        on_event(Event::Retry {
                            attempt,
                            delay,
                            error: &error,
                        });
                        self.count_retry();
                        pause.sleep(delay);
                        attempt += 1;
                    }
                    Decision::GiveUp(_) => return Err((error, attempt)),
                },
            }
        }
    }

    /// Runs `call` behind the breaker, with retries under `policy`: refused at once while
    /// the breaker is open; one attempt only as the half-open probe. A call that fails
    /// with a retryable failure after its retries counts as one failure towards opening
    /// the breaker; an answer that is not retryable (a 4xx) shows the peer is up and
    /// counts as a success for the breaker.
    pub fn call<T, E>(
        &self,
        policy: &RetryPolicy,
        pause: &mut dyn Pause,
        classify: impl Fn(&E) -> Failure,
        mut on_event: impl FnMut(Event<'_, E>),
        call: impl FnMut() -> Result<T, E>,
    ) -> Result<T, Refused<E>> {
        let admit = self.breaker.admit();
        if admit == Admit::Reject {
            self.rejected.fetch_add(1, Ordering::AcqRel);
            return Err(Refused::Open {
                retry_in: self.breaker.retry_in(),
            });
        }
        let probe = admit == Admit::Probe;
        let policy = if probe { &RetryPolicy::ONCE } else { policy };
        match self.retry(policy, pause, &classify, &mut on_event, call) {
            Ok(v) => {
                if self.breaker.record_success() {
                    on_event(Event::Closed);
                }
                Ok(v)
            }
            Err((error, attempts)) => {
                self.failed.fetch_add(1, Ordering::AcqRel);
                if classify(&error).is_retryable() {
                    if let Some(opened) = self.breaker.record_failure(probe) {
                        on_event(Event::Opened(opened));
                    }
                } else if self.breaker.record_success() {
                    on_event(Event::Closed);
                }
                Err(Refused::Failed { error, attempts })
            }
        }
    }

    /// The breaker's state as a metric value: 0 closed, 1 half-open, 2 open.
    pub fn breaker_gauge(&self) -> i64 {
        match self.breaker.state() {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pause that records its sleeps and gives the same "random" number every time.
    struct Fake {
        unit: f64,
        slept: Vec<Duration>,
    }

    impl Pause for Fake {
        fn unit(&mut self) -> f64 {
            self.unit
        }
        fn sleep(&mut self, delay: Duration) {
            self.slept.push(delay);
        }
    }

    fn fake(unit: f64) -> Fake {
        Fake {
            unit,
            slept: Vec::new(),
        }
    }

    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(300),
    };

    fn target() -> Target {
        let policy = BreakerPolicy {
            failure_threshold: 2,
            initial_cooldown: Duration::from_secs(60),
            max_cooldown: Duration::from_secs(60),
        };
        Target::new("mlflow", "mlflow", policy, Duration::from_secs(1))
    }

    fn status(code: u16) -> Failure {
        Failure::Status {
            code,
            retry_after: None,
        }
    }

    #[test]
    fn backoff_doubles_under_full_jitter_and_caps() {
        assert_eq!(POLICY.backoff(0, 0.9), Duration::ZERO);
        // The top of the jitter range: base·2^(n−1), capped at max_delay.
        assert_eq!(POLICY.backoff(1, 1.0), Duration::from_millis(100));
        assert_eq!(POLICY.backoff(2, 1.0), Duration::from_millis(200));
        assert_eq!(POLICY.backoff(3, 1.0), Duration::from_millis(300));
        assert_eq!(POLICY.backoff(40, 1.0), Duration::from_millis(300));
        // Full jitter: anywhere from zero.
        assert_eq!(POLICY.backoff(2, 0.0), Duration::ZERO);
        assert_eq!(POLICY.backoff(2, 0.25), Duration::from_millis(50));
    }

    #[test]
    fn only_transport_failures_5xx_408_and_429_are_retried() {
        for failure in [
            Failure::Transport,
            status(500),
            status(503),
            status(408),
            status(429),
        ] {
            assert!(failure.is_retryable(), "{failure:?}");
            assert_eq!(
                POLICY.after_failure(1, &failure, 0.5),
                Decision::Retry(Duration::from_millis(50))
            );
        }
        for failure in [
            status(400),
            status(401),
            status(403),
            status(404),
            status(409),
            status(422),
            Failure::Permanent,
        ] {
            assert_eq!(
                POLICY.after_failure(1, &failure, 0.5),
                Decision::GiveUp(GiveUp::NotRetryable),
                "{failure:?}"
            );
        }
        assert_eq!(
            POLICY.after_failure(4, &Failure::Transport, 0.5),
            Decision::GiveUp(GiveUp::Exhausted)
        );
        assert_eq!(
            RetryPolicy::ONCE.after_failure(1, &Failure::Transport, 0.5),
            Decision::GiveUp(GiveUp::Exhausted)
        );
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_max_delay() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let asked = Failure::status(429, Some("0"), now);
        assert_eq!(
            POLICY.after_failure(1, &asked, 0.5),
            Decision::Retry(Duration::from_millis(50))
        );
        let asked = Failure::Status {
            code: 503,
            retry_after: Some(Duration::from_millis(250)),
        };
        assert_eq!(
            POLICY.after_failure(1, &asked, 0.5),
            Decision::Retry(Duration::from_millis(250))
        );
        let too_long = Failure::status(429, Some("120"), now);
        assert_eq!(
            POLICY.after_failure(1, &too_long, 0.5),
            Decision::GiveUp(GiveUp::RetryAfterTooLong(Duration::from_secs(120)))
        );
        // The HTTP-date form: RFC 9110's example date is 784111777 seconds after the epoch.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:40 GMT", now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:30 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:40 UTC", now), None);
    }

    #[test]
    fn retry_sleeps_the_policy_delays_and_counts_retries() {
        let t = target();
        let mut pause = fake(1.0);
        let mut calls = 0;
        let mut events = Vec::new();
        let result: Result<u32, (u16, u32)> = t.retry(
            &POLICY,
            &mut pause,
            |code: &u16| status(*code),
            |e| {
                if let Event::Retry { attempt, .. } = e {
                    events.push(attempt)
                }
            },
            || {
                calls += 1;
                if calls < 3 { Err(503) } else { Ok(calls) }
            },
        );
        assert_eq!(result, Ok(3));
        assert_eq!(
            pause.slept,
            vec![Duration::from_millis(100), Duration::from_millis(200)]
        );
        assert_eq!(events, vec![1, 2]);
        assert_eq!(t.retries(), 2);
    }

    #[test]
    fn a_4xx_is_returned_at_once() {
        let t = target();
        let mut pause = fake(1.0);
        let mut calls = 0;
        let result: Result<(), _> = t.retry(
            &POLICY,
            &mut pause,
            |code: &u16| status(*code),
            |_| {},
            || {
                calls += 1;
                Err(404u16)
            },
        );
        assert_eq!(result, Err((404, 1)));
        assert_eq!(calls, 1);
        assert!(pause.slept.is_empty());
        assert_eq!(t.retries(), 0);
    }

    #[test]
    fn call_opens_the_breaker_after_failed_calls_and_then_refuses_without_calling() {
        let t = target();
        let mut pause = fake(0.0);
        let mut calls = 0;
        let mut opened = 0;
        for _ in 0..2 {
            let r: Result<(), Refused<u16>> = t.call(
                &POLICY,
                &mut pause,
                |code: &u16| status(*code),
                |e| {
                    if matches!(e, Event::Opened(Opened::Now { .. })) {
                        opened += 1
                    }
                },
                || {
                    calls += 1;
                    Err(502u16)
                },
            );
            assert!(
                matches!(
                    r,
                    Err(Refused::Failed {
                        error: 502,
                        attempts: 4
                    })
                ),
                "{r:?}"
            );
        }
        assert_eq!(calls, 8, "four attempts per call");
        assert_eq!(opened, 1);
        assert_eq!(t.breaker.state(), BreakerState::Open);
        let r: Result<(), Refused<u16>> = t.call(
            &POLICY,
            &mut pause,
            |c: &u16| status(*c),
            |_| {},
            || {
                calls += 1;
                Ok(())
            },
        );
        assert!(matches!(r, Err(Refused::Open { .. })), "{r:?}");
        assert_eq!(calls, 8, "an open breaker does not call the peer");
        let s = t.status();
        assert_eq!(
            (
                s.breaker.as_str(),
                s.retries,
                s.failed_calls,
                s.rejected_calls,
                s.consecutive_failures
            ),
            ("open", 6, 2, 1, 2)
        );
        assert_eq!(t.breaker_gauge(), 2);
    }

    #[test]
    fn a_probe_is_one_attempt_and_its_success_closes_the_breaker() {
        let policy = BreakerPolicy {
            failure_threshold: 1,
            initial_cooldown: Duration::ZERO,
            max_cooldown: Duration::ZERO,
        };
        let t = Target::new("webhook", "webhook", policy, Duration::from_secs(1));
        let mut pause = fake(0.0);
        let r: Result<(), Refused<u16>> =
            t.call(&POLICY, &mut pause, |c: &u16| status(*c), |_| {}, || Err(500));
        assert!(matches!(r, Err(Refused::Failed { attempts: 4, .. })));
        assert!(!t.breaker.is_closed());
        // The cool-down is zero: the next call is the probe, one attempt only.
        let mut calls = 0;
        let r: Result<(), Refused<u16>> = t.call(
            &POLICY,
            &mut pause,
            |c: &u16| status(*c),
            |_| {},
            || {
                calls += 1;
                Err(500)
            },
        );
        assert!(matches!(r, Err(Refused::Failed { attempts: 1, .. })), "{r:?}");
        assert_eq!(calls, 1);
        let mut closed = false;
        let r: Result<(), Refused<u16>> = t.call(
            &POLICY,
            &mut pause,
            |c: &u16| status(*c),
            |e| closed |= matches!(e, Event::Closed),
            || Ok(()),
        );
        assert!(r.is_ok() && closed && t.breaker.is_closed());
    }

    #[test]
    fn a_4xx_does_not_count_towards_the_breaker() {
        let t = target();
        let mut pause = fake(0.0);
        for _ in 0..5 {
            let _: Result<(), Refused<u16>> =
                t.call(&POLICY, &mut pause, |c: &u16| status(*c), |_| {}, || Err(403));
        }
        assert!(t.breaker.is_closed());
        assert_eq!(t.status().failed_calls, 5);
    }

    #[test]
    fn random_unit_stays_in_range_and_varies() {
        let draws: Vec<f64> = (0..100).map(|_| random_unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        assert!(draws.windows(2).any(|w| w[0] != w[1]));
    }
}
