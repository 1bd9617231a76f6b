//! Drift profiling off the request path. A request copies the profiled part of its inputs
//! and outputs (`kiln_monitor::model::profiled_part`: at most 64 columns) onto a queue and
//! goes on (a lock and a push: no system call, nothing woken); one profiler thread that
//! runs only on otherwise idle CPU (`SCHED_IDLE`) comes by every 20 ms and updates the
//! versions' windows.
//! So profiling does not take a core from serving: under CPU saturation the thread falls
//! behind, the queue reaches [`MAX_QUEUED_BYTES`], and requests that find it full are not
//! profiled, counted in `kiln_drift_rows_shed_total`. Which requests are left out depends on timing, not on
//! their values, so the profile stays a fair sample of the traffic (a busy minute weighs
//! less than its share when it was shed from).
//!
//! Readers (a drift query, the node's profiles for the sync service, the gauges) call
//! [`Profiler::flush`] first, which profiles what is still queued on their own thread, so
//! they see every request answered before them.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_types::Tensor;

use crate::profiles::VersionProfiles;

/// Bytes queued at most: the tensors' data and what holding them costs (see
/// [`footprint`]), so that a queue of one-row calls is bounded like one of large batches.
pub const MAX_QUEUED_BYTES: usize = 8 << 20;
/// What the allocator adds to each heap block (glibc: a 16-byte header, blocks rounded up
/// to 16 bytes), counted three times per tensor (its name, shape and data).
const BLOCK_OVERHEAD: usize = 16;

/// The memory a queued call holds: its job, and each tensor's struct, name, shape and
/// data with their allocator overhead. For a one-row call of ten floats this is about
/// 300 bytes, not the 40 of its data.
fn footprint(part: &[Tensor]) -> usize {
    std::mem::size_of::<Job>()
        + part
            .iter()
            .map(|t| {
                std::mem::size_of::<Tensor>()
                    + t.name.capacity()
                    + t.shape.capacity() * std::mem::size_of::<u64>()
                    + t.data.capacity()
                    + 3 * BLOCK_OVERHEAD
            })
            .sum::<usize>()
}
/// How often the thread looks at the queue: requests never wake it (no system call on the
/// request path), it comes by.
const POLL: Duration = Duration::from_millis(20);

struct Job {
    profiles: Arc<VersionProfiles>,
    tensors: Vec<Tensor>,
    inputs: bool,
    bytes: usize,
}

/// State shared with the thread.
#[derive(Default)]
struct Inner {
    queue: Mutex<Vec<Job>>,
    /// Calls the thread profiled, waiting to be freed by a request (see [`Inner::drain`]).
    spent: Mutex<Vec<Job>>,
    /// An empty buffer swapped in for the queue's, so the thread frees none of it.
    spare: Mutex<Vec<Job>>,
    /// What queued and spent calls hold: counted from a call's queueing to its freeing.
    queued_bytes: AtomicUsize,
    shed_rows: AtomicU64,
    /// Held while calls are being profiled (by the thread, or by a reader's flush).
    work: Mutex<()>,
    stop: AtomicBool,
}

impl Inner {
    /// Profiles what is queued. The queue's lock is held only to swap the queue out (the
    /// request path takes the same lock), the work lock while profiling.
    ///
    /// The thread (`free_here` false) frees nothing that requests allocated: it leaves the
    /// profiled calls on `spent`, for requests to free. A free takes the lock of the
    /// allocator arena the block came from, the requests' own; an idle-priority thread
    /// preempted while holding it (it is preempted whenever a request's thread wakes)
    /// would stall that request's next allocation until the thread runs again, which
    /// under load is late. A reader's flush (`free_here`) runs at normal priority and
    /// frees what it profiled, and what is left on `spent`.
    fn drain(&self, free_here: bool) {
        let _working = self.work.lock().unwrap_or_else(|p| p.into_inner());
        let mut jobs = std::mem::take(&mut *self.spare.lock().unwrap_or_else(|p| p.into_inner()));
        std::mem::swap(
            &mut jobs,
            &mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()),
        );
        for job in &jobs {
            if job.inputs {
                job.profiles.observe_inputs(&job.tensors);
            } else {
                job.profiles.observe_outputs(&job.tensors);
            }
        }
        if free_here {
            let spent = std::mem::take(&mut *self.spent.lock().unwrap_or_else(|p| p.into_inner()));
            self.free(spent);
            self.free(jobs);
        } else {
            self.spent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .append(&mut jobs);
            // Empty now, its buffer (the queue's) is the next swap's.
            *self.spare.lock().unwrap_or_else(|p| p.into_inner()) = jobs;
        }
    }

    /// Frees `jobs` on the calling thread and stops counting their bytes.
    fn free(&self, jobs: impl IntoIterator<Item = Job>) {
        let bytes = jobs.into_iter().map(|job| job.bytes).sum::<usize>();
        self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// A request frees two profiled calls (each request makes at most two), if the spent
    /// list is free to take: a request never waits for the thread.
    fn free_some(&self) {
        let (a, b) = match self.spent.try_lock() {
            Ok(mut spent) => (spent.pop(), spent.pop()),
            Err(_) => return,
        };
        self.free([a, b].into_iter().flatten());
    }
}

/// The profiler thread and its queue.
pub struct Profiler {
    inner: Arc<Inner>,
    /// Whether the thread runs; if it could not start, calls are profiled where made.
    threaded: bool,
}

impl Default for Profiler {
    fn default() -> Self {
        Profiler::start()
    }
}

impl Drop for Profiler {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Release);
    }
}

impl Profiler {
    /// Starts the thread; it ends soon after the profiler is dropped.
    pub fn start() -> Profiler {
        let inner = Arc::new(Inner::default());
        let shared = inner.clone();
        let started = std::thread::Builder::new()
            .name("kiln-profiler".into())
            .spawn(move || {
                lowest_priority();
                while !shared.stop.load(Ordering::Acquire) {
                    std::thread::sleep(POLL);
                    shared.drain(false);
                }
            });
        if let Err(e) = &started {
            tracing::warn!(error = %e, "could not start the profiler thread; profiling on the request path");
        }
        Profiler {
            inner,
            threaded: started.is_ok(),
        }
    }

    /// Queues a call's inputs (`inputs`) or outputs for `profiles`; sheds them when the
    /// queue holds [`MAX_QUEUED_BYTES`] already.
    pub fn observe(&self, profiles: &Arc<VersionProfiles>, tensors: &[Tensor], inputs: bool) {
        if !self.threaded {
            if inputs {
                profiles.observe_inputs(tensors);
            } else {
                profiles.observe_outputs(tensors);
            }
            return;
        }
        let rows = tensors
            .first()
            .and_then(|t| t.shape.first().copied())
            .unwrap_or(1);
        let part = kiln_monitor::model::profiled_part(tensors);
        let bytes = footprint(&part);
        let inner = &self.inner;
        inner.free_some();
        let before = inner.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
        if before > 0 && before + bytes > MAX_QUEUED_BYTES {
            inner.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            // A request's rows count once: by its inputs.
            if inputs {
                inner.shed_rows.fetch_add(rows, Ordering::Relaxed);
            }
            return;
        }
        inner.queue.lock().unwrap_or_else(|p| p.into_inner()).push(Job {
            profiles: profiles.clone(),
            tensors: part,
            inputs,
            bytes,
        });
    }

    /// Profiles, on the calling thread, everything queued before this call (after the
    /// chunk the thread may be in the middle of).
    pub fn flush(&self) {
        self.inner.drain(true);
    }

    /// Request rows whose inputs were not profiled because the queue was full.
    pub fn shed_rows(&self) -> u64 {
        self.inner.shed_rows.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    fn queued_bytes(&self) -> &AtomicUsize {
        &self.inner.queued_bytes
    }
}

/// The calling thread runs only when a CPU would otherwise idle: Linux's `SCHED_IDLE`
/// (per thread), else nice 19.
fn lowest_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; the parameter is a valid sched_param for
    // SCHED_IDLE (priority 0). Only this thread's scheduling changes.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0 {
        return;
    }
    // SAFETY: gettid has no preconditions; setpriority on our own thread id only changes
    // this thread's scheduling weight.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) };
    if result != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower the profiler thread's priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(rows: u64) -> Vec<Tensor> {
        let values: Vec<f32> = (0..rows * 3).map(|i| i as f32).collect();
        vec![Tensor::from_f32("x", &[rows, 3], &values)]
    }

    #[test]
    fn queued_calls_are_profiled_by_the_thread_and_a_flush_sees_them() {
        let profiler = Profiler::start();
        let profiles = Arc::new(VersionProfiles::default());
        for _ in 0..100 {
            profiler.observe(&profiles, &batch(4), true);
            profiler.observe(&profiles, &[Tensor::from_f32("y", &[4], &[1.0; 4])], false);
        }
        profiler.flush();
        let s = profiles.snapshot(Duration::from_secs(60)).unwrap();
        assert_eq!(s.profile.rows(), 400);
        assert_eq!(s.profile.outputs.as_ref().map(|o| o.rows()), Some(400));
        assert_eq!(profiler.shed_rows(), 0);
        assert_eq!(profiler.queued_bytes().load(Ordering::Acquire), 0);
    }

    #[test]
    fn the_thread_comes_by_without_being_woken_and_leaves_the_freeing_to_requests() {
        let profiler = Profiler::start();
        let profiles = Arc::new(VersionProfiles::default());
        profiler.observe(&profiles, &batch(3), true);
        let held = footprint(&batch(3));
        assert_eq!(profiler.queued_bytes().load(Ordering::Acquire), held);
        let started = std::time::Instant::now();
        while profiles.snapshot(Duration::from_secs(60)).is_none() {
            assert!(started.elapsed() < Duration::from_secs(10), "never profiled");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Profiled by the thread but not freed by it: still counted, on the spent list.
        let _hold = profiler.inner.work.lock().unwrap();
        assert_eq!(profiler.inner.spent.lock().unwrap().len(), 1);
        assert_eq!(profiler.queued_bytes().load(Ordering::Acquire), held);
        // The next request frees it (and queues its own call).
        profiler.observe(&profiles, &batch(2), true);
        assert!(profiler.inner.spent.lock().unwrap().is_empty());
        assert_eq!(
            profiler.queued_bytes().load(Ordering::Acquire),
            footprint(&batch(2))
        );
    }

    #[test]
    fn the_queue_bound_counts_what_a_small_call_holds_not_only_its_data() {
        let profiler = Profiler::start();
        let profiles = Arc::new(VersionProfiles::default());
        // Keep the thread out: it profiles only while it holds the work lock.
        let _hold = profiler.inner.work.lock().unwrap();
        let one_row = || vec![Tensor::from_f32("input", &[1, 10], &[0.5; 10])];
        let mut queued = 0u64;
        while profiler.shed_rows() == 0 {
            profiler.observe(&profiles, &one_row(), true);
            queued += 1;
        }
        queued -= 1;
        let held = footprint(&one_row());
        // 40 bytes of data each, but each queued call holds several times that: the bound
        // stops the queue at MAX_QUEUED_BYTES of what it holds.
        assert!(held >= 200, "{held}");
        assert!(
            queued as usize * held <= MAX_QUEUED_BYTES,
            "{queued} calls of {held} bytes"
        );
        assert!(
            queued as usize * held > MAX_QUEUED_BYTES - held,
            "{queued} calls of {held} bytes"
        );
        assert!((queued as usize) < MAX_QUEUED_BYTES / 40 / 4, "{queued}");
    }

    #[test]
    fn calls_past_the_queued_bytes_are_shed_and_counted_not_queued() {
        let profiler = Profiler::start();
        let profiles = Arc::new(VersionProfiles::default());
        // Hold the queue: pretend it is full of bytes, as when the thread is starved.
        profiler.queued_bytes().store(MAX_QUEUED_BYTES, Ordering::Release);
        profiler.observe(&profiles, &batch(7), true);
        assert_eq!(profiler.shed_rows(), 7);
        profiler.queued_bytes().store(0, Ordering::Release);
        profiler.observe(&profiles, &batch(2), true);
        profiler.flush();
        assert_eq!(
            profiles.snapshot(Duration::from_secs(60)).unwrap().profile.rows(),
            2
        );
    }
}
