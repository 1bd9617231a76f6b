//! A circuit breaker in front of a remote cache. Closed: calls go through and consecutive
//! failures are counted. After `failure_threshold` of them it opens: calls are refused at
//! once, without touching the network, for a cool-down that doubles on each failed probe
//! up to `max_cooldown`. When the cool-down is over one call is let through as a probe
//! (half-open); its success closes the breaker, its failure reopens it.
//!
//! The closed path reads two atomics and takes no lock; the lock is taken on transitions
//! and while open. State changes are logged once each, never per call.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// When the breaker opens and how long it stays open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// First cool-down; doubled after each failed probe.
    pub initial_cooldown: Duration,
    /// Upper bound of the cool-down.
    pub max_cooldown: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            failure_threshold: 3,
            initial_cooldown: Duration::from_secs(1),
            max_cooldown: Duration::from_secs(30),
        }
    }
}

/// What a caller may do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Admit {
    /// Closed: go ahead.
    Call,
    /// Half-open: go ahead, this call decides whether the breaker closes.
    Probe,
    /// Open: do not touch the backend.
    Reject,
}

struct OpenState {
    until: Instant,
    cooldown: Duration,
    /// When the current probe was let through; a probe whose caller went away (its future
    /// dropped) never reports back, so a stale one is replaced by a new probe.
    probe_since: Option<Instant>,
}

pub(super) struct Breaker {
    policy: BreakerPolicy,
    /// Longest a probe can take before another one is let through.
    probe_stale_after: Duration,
    backend: &'static str,
    open: AtomicBool,
    failures: AtomicU32,
    state: Mutex<Option<OpenState>>,
}

impl Breaker {
    pub(super) fn new(policy: BreakerPolicy, call_timeout: Duration, backend: &'static str) -> Breaker {
        Breaker {
            policy,
            probe_stale_after: call_timeout * 4,
            backend,
            open: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            state: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<OpenState>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True while closed.
    pub(super) fn is_closed(&self) -> bool {
        !self.open.load(Ordering::Acquire)
    }

    pub(super) fn admit(&self) -> Admit {
        if self.is_closed() {
            return Admit::Call;
        }
        let now = Instant::now();
        let mut state = self.lock();
        match state.as_mut() {
            None => Admit::Call,
            Some(open) if now < open.until => Admit::Reject,
            Some(open) => match open.probe_since {
                Some(since) if now.duration_since(since) < self.probe_stale_after => Admit::Reject,
                _ => {
                    open.probe_since = Some(now);
                    Admit::Probe
                }
            },
        }
    }

    pub(super) fn record_success(&self) {
        let had_failures = self.failures.swap(0, Ordering::AcqRel) != 0;
        if !had_failures && self.is_closed() {
            return;
        }
        let mut state = self.lock();
        if state.take().is_some() {
            self.open.store(false, Ordering::Release);
            tracing::info!(
                backend = self.backend,
                "prediction cache backend is back; circuit breaker closed"
            );
        }
    }

    /// Records a failed call; returns true when this failure opened (or reopened) the
    /// breaker, so the caller can drop its connection.
    pub(super) fn record_failure(&self, was_probe: bool, error: &str) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        let now = Instant::now();
        let mut state = self.lock();
        match state.as_mut() {
            Some(open) if was_probe => {
                open.cooldown = (open.cooldown * 2).min(self.policy.max_cooldown);
                open.until = now + open.cooldown;
                open.probe_since = None;
                tracing::debug!(
                    backend = self.backend,
                    error,
                    cooldown_ms = open.cooldown.as_millis() as u64,
                    "prediction cache probe failed; circuit breaker stays open"
                );
                true
            }
            // A call admitted before the breaker opened: nothing new to decide.
            Some(_) => false,
            None if failures >= self.policy.failure_threshold => {
                let cooldown = self.policy.initial_cooldown;
                *state = Some(OpenState {
                    until: now + cooldown,
                    cooldown,
                    probe_since: None,
                });
                self.open.store(true, Ordering::Release);
                tracing::warn!(
                    backend = self.backend,
                    error,
                    failures,
                    cooldown_ms = cooldown.as_millis() as u64,
                    "prediction cache backend failing; circuit breaker open, serving uncached"
                );
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(cooldown_ms: u64) -> Breaker {
        let policy = BreakerPolicy {
            failure_threshold: 3,
            initial_cooldown: Duration::from_millis(cooldown_ms),
            max_cooldown: Duration::from_millis(cooldown_ms * 4),
        };
        Breaker::new(policy, Duration::from_millis(5), "test")
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = breaker(1000);
        b.record_failure(false, "x");
        b.record_failure(false, "x");
        b.record_success();
        b.record_failure(false, "x");
        b.record_failure(false, "x");
        assert!(b.is_closed(), "a success resets the count");
        assert!(b.record_failure(false, "x"));
        assert!(!b.is_closed());
        assert_eq!(b.admit(), Admit::Reject);
    }

    #[test]
    fn half_open_lets_one_probe_through_and_closes_on_success() {
        let b = breaker(20);
        for _ in 0..3 {
            b.record_failure(false, "x");
        }
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(b.admit(), Admit::Probe);
        assert_eq!(b.admit(), Admit::Reject, "only one probe at a time");
        b.record_success();
        assert!(b.is_closed());
        assert_eq!(b.admit(), Admit::Call);
    }

    #[test]
    fn failed_probe_doubles_the_cooldown_up_to_the_max() {
        let b = breaker(20);
        for _ in 0..3 {
            b.record_failure(false, "x");
        }
        let mut cooldowns = Vec::new();
        for _ in 0..4 {
            let deadline = Instant::now() + Duration::from_secs(2);
            while b.admit() != Admit::Probe {
                assert!(Instant::now() < deadline, "no probe admitted");
                std::thread::sleep(Duration::from_millis(2));
            }
            assert!(b.record_failure(true, "x"));
            cooldowns.push(b.lock().as_ref().map(|o| o.cooldown.as_millis()).unwrap());
        }
        assert_eq!(cooldowns, vec![40, 80, 80, 80]);
    }

    #[test]
    fn abandoned_probe_is_replaced() {
        let b = breaker(10);
        for _ in 0..3 {
            b.record_failure(false, "x");
        }
        std::thread::sleep(Duration::from_millis(15));
        assert_eq!(b.admit(), Admit::Probe);
        // The probe's caller vanished; after 4 × the call timeout another probe may go.
        std::thread::sleep(Duration::from_millis(25));
        assert_eq!(b.admit(), Admit::Probe);
    }
}
