//! Backpressure: a bulkhead per model (at most `max_concurrent` of its calls run at once,
//! at most `max_queue` wait, each for at most the model's deadline) and a budget of
//! request-body bytes in flight on the node. A request past either is shed at once with
//! 503 `overloaded` and `Retry-After` (as Envoy's and Triton's queue limits do) instead
//! of piling up until everything times out; one slow model cannot take the workers,
//! instances and memory of the others.

use kiln_api::ApiError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// The limits of one model's bulkhead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Calls of the model running at once (all its versions together).
    pub max_concurrent: usize,
    /// Calls waiting for a slot; one more is shed.
    pub max_queue: usize,
}

impl Limits {
    /// The default for a node whose models keep `idle_instances` warm instances each:
    /// that many calls at once (each reuses a warm instance; at least the CPU count, so
    /// every core has work), and a queue eight times as deep.
    pub fn derived(idle_instances: usize) -> Limits {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let max_concurrent = idle_instances.max(cores).max(1);
        Limits {
            max_concurrent,
            max_queue: max_concurrent * 8,
        }
    }
}

impl std::str::FromStr for Limits {
    type Err = String;

    /// `CONCURRENT[:QUEUE]` (the queue defaults to eight times the concurrency).
    fn from_str(s: &str) -> Result<Limits, String> {
        let (concurrent, queue) = match s.split_once(':') {
            Some((c, q)) => (c, Some(q)),
            None => (s, None),
        };
        let max_concurrent: usize = concurrent
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("`{concurrent}`: the concurrency must be a whole number above 0"))?;
        let max_queue = match queue {
            Some(q) => q
                .trim()
                .parse()
                .map_err(|_| format!("`{q}`: the queue length must be a whole number (0 for none)"))?,
            None => max_concurrent * 8,
        };
        Ok(Limits {
            max_concurrent,
            max_queue,
        })
    }
}

/// One model's bulkhead.
///
/// A freed slot goes to the first call that asks for it, queued or not: a queued call is
/// woken, but it runs only when the async runtime next polls it, which under load is after
/// every other ready connection; a slot reserved for it would sit idle that long (with 900
/// connections sending, ~100 ms per hand-off, and the model's throughput fell to its
/// slots ÷ that). A queued call that keeps losing the race is shed when its wait runs out.
pub struct Bulkhead {
    limits: Limits,
    running: AtomicUsize,
    waiting: AtomicUsize,
    freed: Notify,
}

/// A running call's slot; dropping it frees the slot (and wakes a queued call). It can
/// move to the thread that runs the call, so the slot is free as soon as the call ends,
/// not when the request's task is next polled.
pub struct Slot {
    bulkhead: Arc<Bulkhead>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.bulkhead.running.fetch_sub(1, Ordering::AcqRel);
        self.bulkhead.freed.notify_one();
    }
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Bulkhead {
    /// A bulkhead with these limits.
    pub fn new(limits: Limits) -> Bulkhead {
        Bulkhead {
            limits,
            running: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            freed: Notify::new(),
        }
    }

    /// Its limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Calls running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// Whether a call arriving now would be shed: every slot running and the queue full.
    pub fn is_full(&self) -> bool {
        self.running() >= self.limits.max_concurrent && self.queued() >= self.limits.max_queue
    }

    /// Calls waiting now.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// A free slot now, if there is one.
    fn try_take(self: &Arc<Self>) -> Option<Slot> {
        let max = self.limits.max_concurrent;
        self.running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                (r < max).then_some(r + 1)
            })
            .ok()
            .map(|_| Slot {
                bulkhead: self.clone(),
            })
    }

    /// A slot for one call of `model`: at once if one is free, else after waiting in the
    /// queue for at most `max_wait`; 503 `overloaded` when the queue is full or the wait
    /// runs out.
    pub async fn enter(self: &Arc<Self>, model: &str, max_wait: Duration) -> Result<Slot, ApiError> {
        if let Some(slot) = self.try_take() {
            return Ok(slot);
        }
        let ahead = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        if ahead >= self.limits.max_queue {
            return Err(ApiError::overloaded(format!(
                "model `{model}` is at capacity: {} calls running and {} queued (its bulkhead's limits); retry later",
                self.limits.max_concurrent, self.limits.max_queue
            )));
        }
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            // Registered before the check, so a slot freed in between still wakes us.
            let freed = self.freed.notified();
            let mut freed = std::pin::pin!(freed);
            freed.as_mut().enable();
            if let Some(slot) = self.try_take() {
                return Ok(slot);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                // A wake-up this call took but can no longer use goes to the next waiter.
                if self.running() < self.limits.max_concurrent {
                    self.freed.notify_one();
                }
                return Err(ApiError::overloaded(format!(
                    "model `{model}` is at capacity: no call slot freed up within {} ms; retry later",
                    max_wait.as_millis()
                )));
            }
        }
    }
}

/// The bulkheads of every model, kept across routing changes (a reload must not reset
/// them while calls run) and replaced only when a model's limits change.
#[derive(Default)]
pub struct Bulkheads {
    by_model: Mutex<HashMap<String, Arc<Bulkhead>>>,
}

impl Bulkheads {
    /// The bulkhead of `model` with `limits`.
    pub fn get(&self, model: &str, limits: Limits) -> Arc<Bulkhead> {
        let mut by_model = self.by_model.lock().unwrap_or_else(|p| p.into_inner());
        match by_model.get(model) {
            Some(b) if b.limits == limits => b.clone(),
            _ => {
                let bulkhead = Arc::new(Bulkhead::new(limits));
                by_model.insert(model.to_string(), bulkhead.clone());
                bulkhead
            }
        }
    }

    /// `(model, running, queued, limits)` of every bulkhead, for metrics.
    pub fn snapshot(&self) -> Vec<(String, usize, usize, Limits)> {
        let by_model = self.by_model.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = by_model
            .iter()
            .map(|(m, b)| (m.clone(), b.running(), b.queued(), b.limits))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// The node's budget of request-body bytes in flight (being read, parsed or run), in
/// KiB; a request that would pass it is shed before its body is read.
pub struct BodyBudget {
    kib: Arc<Semaphore>,
    limit_kib: usize,
}

/// Bytes of a request held against the budget until it is answered.
pub struct BodyPermit {
    _permit: Option<OwnedSemaphorePermit>,
}

impl BodyBudget {
    /// A budget of `bytes` (0: no budget).
    pub fn new(bytes: usize) -> BodyBudget {
        let limit_kib = bytes.div_ceil(1024);
        BodyBudget {
            kib: Arc::new(Semaphore::new(limit_kib.min(Semaphore::MAX_PERMITS))),
            limit_kib,
        }
    }

    /// Reserves `bytes` (the body's `Content-Length`, or the body limit when the client
    /// does not say) or sheds the request.
    pub fn reserve(&self, bytes: usize) -> Result<BodyPermit, ApiError> {
        if self.limit_kib == 0 {
            return Ok(BodyPermit { _permit: None });
        }
        let kib = bytes.div_ceil(1024).clamp(1, self.limit_kib);
        let kib_u32 = u32::try_from(kib).unwrap_or(u32::MAX);
        match self.kib.clone().try_acquire_many_owned(kib_u32) {
            Ok(permit) => Ok(BodyPermit {
                _permit: Some(permit),
            }),
            Err(_) => Err(ApiError::overloaded(format!(
                "the server has {} MiB of request bodies in flight (its limit); retry later",
                self.limit_kib / 1024
            ))),
        }
    }

    /// Bytes in flight now.
    pub fn in_flight_bytes(&self) -> usize {
        (self.limit_kib - self.kib.available_permits().min(self.limit_kib)) * 1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_with_and_without_a_queue() {
        assert_eq!(
            "4:16".parse::<Limits>().unwrap(),
            Limits {
                max_concurrent: 4,
                max_queue: 16
            }
        );
        assert_eq!("2".parse::<Limits>().unwrap().max_queue, 16);
        assert_eq!("3:0".parse::<Limits>().unwrap().max_queue, 0);
        assert!("0:4".parse::<Limits>().is_err());
        assert!("x".parse::<Limits>().is_err());
    }

    #[tokio::test]
    async fn a_full_bulkhead_queues_then_sheds() {
        let b = Arc::new(Bulkhead::new(Limits {
            max_concurrent: 1,
            max_queue: 1,
        }));
        assert!(!b.is_full());
        let first = b.enter("m", Duration::from_secs(5)).await.unwrap();
        assert_eq!(b.running(), 1);
        assert!(!b.is_full(), "the queue has room");
        // The second call waits in the queue; the third finds it full.
        let queued = {
            let b = b.clone();
            tokio::spawn(async move { b.enter("m", Duration::from_secs(5)).await.map(|_| ()) })
        };
        while b.queued() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(b.is_full(), "one running, one queued");
        let shed = b.enter("m", Duration::from_secs(5)).await.err().unwrap();
        assert!(shed.is_overloaded(), "{shed:?}");
        assert!(
            shed.message.contains("1 calls running and 1 queued"),
            "{}",
            shed.message
        );
        drop(first);
        queued.await.unwrap().expect("the queued call got the freed slot");
        assert_eq!(b.queued(), 0);
    }

    #[tokio::test]
    async fn a_queued_call_is_shed_after_its_wait() {
        let b = Arc::new(Bulkhead::new(Limits {
            max_concurrent: 1,
            max_queue: 4,
        }));
        let _held = b.enter("m", Duration::from_secs(1)).await.unwrap();
        let started = std::time::Instant::now();
        let shed = b.enter("m", Duration::from_millis(50)).await.err().unwrap();
        assert!(shed.is_overloaded());
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(b.queued(), 0, "a shed call leaves the queue");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_freed_slot_goes_to_the_first_caller_not_to_a_waiter_not_yet_running() {
        let b = Arc::new(Bulkhead::new(Limits {
            max_concurrent: 1,
            max_queue: 4,
        }));
        let first = b.enter("m", Duration::from_secs(5)).await.unwrap();
        let queued = {
            let b = b.clone();
            tokio::spawn(async move { b.enter("m", Duration::from_secs(5)).await.map(|_| ()) })
        };
        while b.queued() == 0 {
            tokio::task::yield_now().await;
        }
        // The drop wakes the queued call, which cannot run until this task yields: the slot
        // is free meanwhile (a slot reserved for the waiter would sit idle).
        drop(first);
        let second = b
            .enter("m", Duration::ZERO)
            .await
            .expect("the freed slot is taken at once");
        assert_eq!(b.queued(), 1, "the woken call lost the race and waits again");
        drop(second);
        queued
            .await
            .unwrap()
            .expect("the queued call gets the next freed slot");
        assert_eq!((b.running(), b.queued()), (0, 0));
    }

    #[tokio::test]
    async fn a_slot_is_freed_where_it_is_dropped() {
        let b = Arc::new(Bulkhead::new(Limits {
            max_concurrent: 1,
            max_queue: 0,
        }));
        let slot = b.enter("m", Duration::ZERO).await.unwrap();
        assert!(b.is_full());
        // The call's thread drops it; the request's task has not run since.
        std::thread::spawn(move || drop(slot)).join().unwrap();
        assert_eq!(b.running(), 0);
        assert!(b.enter("m", Duration::ZERO).await.is_ok());
    }

    #[test]
    fn the_body_budget_sheds_past_its_bytes() {
        let budget = BodyBudget::new(1 << 20);
        let a = budget.reserve(600 << 10).unwrap();
        assert!(budget.reserve(600 << 10).err().unwrap().is_overloaded());
        assert_eq!(budget.in_flight_bytes(), 600 << 10);
        drop(a);
        assert!(budget.reserve(600 << 10).is_ok());
        assert!(BodyBudget::new(0).reserve(usize::MAX).is_ok(), "0 = no budget");
    }
}
