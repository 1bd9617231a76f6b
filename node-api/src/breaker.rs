//! A circuit breaker in front of a remote peer: the prediction cache's Redis on a node,
//! each node on the sync service. Closed: calls go through and consecutive failures are
//! counted. After `failure_threshold` of them it opens: callers are refused at once,
//! without touching the network, for a cool-down that doubles on each failed probe up to
//! `max_cooldown`. When the cool-down is over one call is let through as a probe
//! (half-open); its success closes the breaker, its failure reopens it.
//!
//! The closed path reads two atomics and takes no lock; the lock is taken on transitions
//! and while open. The breaker does no logging: the calls that change its state return
//! the change, and the caller says what it means for its peer.

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
pub enum Admit {
    /// Closed: go ahead.
    Call,
    /// Half-open: go ahead; this call decides whether the breaker closes.
    Probe,
    /// Open: do not touch the peer.
    Reject,
}

/// The breaker's state, for status reports (`closed`, `open`, `half-open`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The name in status reports.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

/// A failure that changed the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened {
    /// This failure opened the breaker (it was closed).
    Now { failures: u32, cooldown: Duration },
    /// A failed probe: the breaker stays open, for a longer cool-down.
    Again { cooldown: Duration },
}

struct OpenState {
    until: Instant,
    cooldown: Duration,
    /// When the current probe was let through; a probe whose caller went away never
    /// reports back, so a stale one is replaced by a new probe.
    probe_since: Option<Instant>,
}

/// A circuit breaker (see the module docs).
pub struct Breaker {
    policy: BreakerPolicy,
    /// Longest a probe can take before another one is let through.
    probe_stale_after: Duration,
    open: AtomicBool,
    failures: AtomicU32,
    state: Mutex<Option<OpenState>>,
}

impl Breaker {
    /// A closed breaker; a probe counts as abandoned after `probe_stale_after`.
    pub fn new(policy: BreakerPolicy, probe_stale_after: Duration) -> Breaker {
        Breaker {
            policy,
            probe_stale_after,
            open: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            state: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<OpenState>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True while closed.
    pub fn is_closed(&self) -> bool {
        !self.open.load(Ordering::Acquire)
    }

    /// The state now.
    pub fn state(&self) -> BreakerState {
        if self.is_closed() {
            return BreakerState::Closed;
        }
        match self.lock().as_ref() {
            None => BreakerState::Closed,
            Some(open) if open.probe_since.is_some() => BreakerState::HalfOpen,
            Some(_) => BreakerState::Open,
        }
    }

    /// Consecutive failures so far (0 after a success).
    pub fn failures(&self) -> u32 {
        self.failures.load(Ordering::Acquire)
    }

    /// How long until an open breaker lets a probe through (zero when closed or due).
    pub fn retry_in(&self) -> Duration {
        match self.lock().as_ref() {
            Some(open) => open.until.saturating_duration_since(Instant::now()),
            None => Duration::ZERO,
        }
    }

    /// Whether a call may go now.
    pub fn admit(&self) -> Admit {
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

    /// Ends an open cool-down now (the peer showed it is back, e.g. it sent a heartbeat):
    /// the next [`Breaker::admit`] lets a probe through.
    pub fn probe_now(&self) {
        if let Some(open) = self.lock().as_mut() {
            open.until = Instant::now();
        }
    }

    /// Records a successful call; returns true when it closed an open breaker.
    pub fn record_success(&self) -> bool {
        let had_failures = self.failures.swap(0, Ordering::AcqRel) != 0;
        if !had_failures && self.is_closed() {
            return false;
        }
        let mut state = self.lock();
        if state.take().is_some() {
            self.open.store(false, Ordering::Release);
            return true;
        }
        false
    }

    /// Records a failed call (`was_probe`: it was admitted as [`Admit::Probe`]); returns
    /// the change it made, if any.
    pub fn record_failure(&self, was_probe: bool) -> Option<Opened> {
        let failures = self.failures.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        let now = Instant::now();
        let mut state = self.lock();
        match state.as_mut() {
            Some(open) if was_probe => {
                open.cooldown = (open.cooldown * 2).min(self.policy.max_cooldown);
                open.until = now + open.cooldown;
                open.probe_since = None;
                Some(Opened::Again {
                    cooldown: open.cooldown,
                })
            }
            // A call admitted before the breaker opened: nothing new to decide.
            Some(_) => None,
            None if failures >= self.policy.failure_threshold => {
                let cooldown = self.policy.initial_cooldown;
                *state = Some(OpenState {
                    until: now + cooldown,
                    cooldown,
                    probe_since: None,
                });
                self.open.store(true, Ordering::Release);
                Some(Opened::Now { failures, cooldown })
            }
            None => None,
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
        Breaker::new(policy, Duration::from_millis(20))
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = breaker(1000);
        b.record_failure(false);
        b.record_failure(false);
        b.record_success();
        b.record_failure(false);
        b.record_failure(false);
        assert!(b.is_closed(), "a success resets the count");
        assert!(matches!(
            b.record_failure(false),
            Some(Opened::Now { failures: 3, .. })
        ));
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.admit(), Admit::Reject);
        assert!(b.retry_in() > Duration::from_millis(500));
    }

    #[test]
    fn half_open_lets_one_probe_through_and_closes_on_success() {
        let b = breaker(20);
        for _ in 0..3 {
            b.record_failure(false);
        }
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(b.admit(), Admit::Probe);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.admit(), Admit::Reject, "only one probe at a time");
        assert!(b.record_success());
        assert!(b.is_closed());
        assert_eq!(b.admit(), Admit::Call);
    }

    #[test]
    fn failed_probe_doubles_the_cooldown_up_to_the_max() {
        let b = breaker(20);
        for _ in 0..3 {
            b.record_failure(false);
        }
        let mut cooldowns = Vec::new();
        for _ in 0..4 {
            let deadline = Instant::now() + Duration::from_secs(2);
            while b.admit() != Admit::Probe {
                assert!(Instant::now() < deadline, "no probe admitted");
                std::thread::sleep(Duration::from_millis(2));
            }
            match b.record_failure(true) {
                Some(Opened::Again { cooldown }) => cooldowns.push(cooldown.as_millis()),
                other => panic!("a failed probe reopens: {other:?}"),
            }
        }
        assert_eq!(cooldowns, vec![40, 80, 80, 80]);
    }

    #[test]
    fn abandoned_probe_is_replaced_and_probe_now_skips_the_cooldown() {
        let b = breaker(10);
        for _ in 0..3 {
            b.record_failure(false);
        }
        std::thread::sleep(Duration::from_millis(15));
        assert_eq!(b.admit(), Admit::Probe);
        // The probe's caller vanished; after `probe_stale_after` another probe may go.
        std::thread::sleep(Duration::from_millis(25));
        assert_eq!(b.admit(), Admit::Probe);
        assert!(b.record_failure(true).is_some());
        assert_eq!(b.admit(), Admit::Reject);
        b.probe_now();
        assert_eq!(b.admit(), Admit::Probe);
    }
}
