//! Drift profiling off the request path. A request copies the profiled part of its inputs
//! and outputs (`kiln_monitor::model::profiled_cuts`: at most 64 columns) to the end of a
//! queue and goes on: a lock and a copy into buffers that are reused, so once they have
//! grown to the traffic's size a request allocates nothing, frees nothing, makes no system
//! call and wakes nobody. One profiler thread that runs only on otherwise idle CPU
//! (`SCHED_IDLE`) comes by every 20 ms, swaps the queue's buffers for empty ones and
//! updates the versions' windows from them.
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

use kiln_monitor::model::profiled_cuts;
use kiln_types::{ElementType, Tensor};

use crate::profiles::VersionProfiles;

/// Bytes queued at most, counted as [`Batch::bytes`] counts them (data, names, shapes and
/// the records of each call), the batch being profiled included.
pub const MAX_QUEUED_BYTES: usize = 8 << 20;
/// How often the thread looks at the queue: requests never wake it (no system call on the
/// request path), it comes by.
const POLL: Duration = Duration::from_millis(20);
/// A batch's buffers are given back to the allocator after a burst: when they hold more
/// than this and the last batch used less than a quarter of it. Below, they are kept for
/// the next batches (bounded by [`MAX_QUEUED_BYTES`] anyway).
const KEEP_CAPACITY: usize = 1 << 20;

/// A queued call.
struct Call {
    profiles: Arc<VersionProfiles>,
    inputs: bool,
    /// How many of the batch's parts are this call's (the next ones in order).
    parts: usize,
}

/// A queued tensor: where its name, shape and data end in the batch's buffers (each starts
/// where the previous part's ends).
struct Part {
    element_type: ElementType,
    name_end: usize,
    shape_end: usize,
    data_end: usize,
}

/// Calls' profiled parts laid end to end in buffers that are cleared, not freed, between
/// batches.
#[derive(Default)]
struct Batch {
    calls: Vec<Call>,
    parts: Vec<Part>,
    names: String,
    shapes: Vec<u64>,
    data: Vec<u8>,
}

impl Batch {
    /// What the batch holds, in bytes.
    fn bytes(&self) -> usize {
        Batch::size(
            self.calls.len(),
            self.parts.len(),
            self.names.len(),
            self.shapes.len(),
            self.data.len(),
        )
    }

    /// What the batch's buffers can hold, in bytes.
    fn capacity(&self) -> usize {
        Batch::size(
            self.calls.capacity(),
            self.parts.capacity(),
            self.names.capacity(),
            self.shapes.capacity(),
            self.data.capacity(),
        )
    }

    fn size(calls: usize, parts: usize, names: usize, shapes: usize, data: usize) -> usize {
        calls * std::mem::size_of::<Call>()
            + parts * std::mem::size_of::<Part>()
            + names
            + shapes * std::mem::size_of::<u64>()
            + data
    }

    /// The bytes queueing the profiled part of `tensors` adds.
    fn needs(tensors: &[Tensor]) -> usize {
        let (parts, names, shapes, data) = profiled_cuts(tensors).fold((0, 0, 0, 0), |(p, n, s, d), c| {
            (p + 1, n + c.tensor().name.len(), s + c.rank(), d + c.data_len())
        });
        Batch::size(1, parts, names, shapes, data)
    }

    /// Queues the profiled part of `tensors`.
    fn push(&mut self, profiles: &Arc<VersionProfiles>, tensors: &[Tensor], inputs: bool) {
        let before = self.parts.len();
        for cut in profiled_cuts(tensors) {
            self.names.push_str(&cut.tensor().name);
            cut.copy_into(&mut self.shapes, &mut self.data);
            self.parts.push(Part {
                element_type: cut.tensor().element_type,
                name_end: self.names.len(),
                shape_end: self.shapes.len(),
                data_end: self.data.len(),
            });
        }
        self.calls.push(Call {
            profiles: profiles.clone(),
            inputs,
            parts: self.parts.len() - before,
        });
    }

    /// Feeds every call to its version's profiles, through `scratch` (tensors whose
    /// buffers are reused from call to call), then empties the batch, keeping its buffers.
    fn profile(&mut self, scratch: &mut Vec<Tensor>) {
        let mut parts = self.parts.iter();
        let (mut name, mut shape, mut data) = (0, 0, 0);
        for call in &self.calls {
            while scratch.len() < call.parts {
                scratch.push(Tensor {
                    name: String::new(),
                    element_type: ElementType::F32,
                    shape: Vec::new(),
                    data: Vec::new(),
                });
            }
            for t in &mut scratch[..call.parts] {
                let part = parts.next().expect("a call's parts are queued with it");
                t.name.clear();
                t.name.push_str(&self.names[name..part.name_end]);
                t.element_type = part.element_type;
                t.shape.clear();
                t.shape.extend_from_slice(&self.shapes[shape..part.shape_end]);
                t.data.clear();
                t.data.extend_from_slice(&self.data[data..part.data_end]);
                (name, shape, data) = (part.name_end, part.shape_end, part.data_end);
            }
            let tensors = &scratch[..call.parts];
            if call.inputs {
                call.profiles.observe_inputs(tensors);
            } else {
                call.profiles.observe_outputs(tensors);
            }
        }
        self.calls.clear();
        self.parts.clear();
        self.names.clear();
        self.shapes.clear();
        self.data.clear();
    }
}

/// State shared with the thread.
#[derive(Default)]
struct Inner {
    queue: Mutex<Batch>,
    /// Empty buffers swapped in for the queue's; the thread frees none of them in steady
    /// state (see [`Inner::drain`]).
    spare: Mutex<Batch>,
    /// Bytes of the batch being profiled: they count against the bound until it is done.
    draining: AtomicUsize,
    shed_rows: AtomicU64,
    /// Held while calls are being profiled (by the thread, or by a reader's flush), with
    /// the tensors they are copied into.
    work: Mutex<Vec<Tensor>>,
    stop: AtomicBool,
}

impl Inner {
    /// Profiles what is queued. The queue's lock is held only to swap its buffers for the
    /// spare ones (the request path takes the same lock), the work lock while profiling.
    ///
    /// Nothing is freed here in steady state: the profiled batch's buffers, which requests
    /// allocated, are cleared and become the next spare ones. A free takes the lock of the
    /// allocator arena the block came from, the requests' own; an idle-priority thread
    /// preempted while holding it (it is preempted whenever a request's thread wakes)
    /// would stall that request's next allocation until the thread runs again, which under
    /// load is late. Only after a burst are buffers larger than [`KEEP_CAPACITY`] given
    /// back (blocks of 1 MiB and more are mapped, see `kiln_host::memory`, so freeing them
    /// takes no arena lock).
    fn drain(&self) {
        let mut scratch = self.work.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = std::mem::take(&mut *self.spare.lock().unwrap_or_else(|p| p.into_inner()));
        let used = {
            let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::swap(&mut batch, &mut queue);
            let used = batch.bytes();
            self.draining.store(used, Ordering::Release);
            used
        };
        batch.profile(&mut scratch);
        self.draining.store(0, Ordering::Release);
        if batch.capacity() > KEEP_CAPACITY && used < batch.capacity() / 4 {
            batch = Batch::default();
        }
        *self.spare.lock().unwrap_or_else(|p| p.into_inner()) = batch;
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
                    shared.drain();
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
        let bytes = Batch::needs(tensors);
        let inner = &self.inner;
        let mut queue = inner.queue.lock().unwrap_or_else(|p| p.into_inner());
        let held = queue.bytes() + inner.draining.load(Ordering::Acquire);
        if held > 0 && held + bytes > MAX_QUEUED_BYTES {
            drop(queue);
            // A request's rows count once: by its inputs.
            if inputs {
                let rows = tensors
                    .first()
                    .and_then(|t| t.shape.first().copied())
                    .unwrap_or(1);
                inner.shed_rows.fetch_add(rows, Ordering::Relaxed);
            }
            return;
        }
        queue.push(profiles, tensors, inputs);
    }

    /// Profiles, on the calling thread, everything queued before this call (after the
    /// batch the thread may be in the middle of).
    pub fn flush(&self) {
        self.inner.drain();
    }

    /// Request rows whose inputs were not profiled because the queue was full.
    pub fn shed_rows(&self) -> u64 {
        self.inner.shed_rows.load(Ordering::Relaxed)
    }

    /// Bytes queued or being profiled.
    #[cfg(test)]
    fn held_bytes(&self) -> usize {
        self.inner.queue.lock().unwrap().bytes() + self.inner.draining.load(Ordering::Acquire)
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
        let wide: Vec<f32> = (0..4 * 100).map(|i| i as f32).collect();
        let mut expected = kiln_monitor::model::ModelProfile::default();
        let config = crate::profiles::live_config();
        for i in 0..100u64 {
            // Calls of different sizes and kinds, a wide one cut to its first 64 columns.
            let inputs = if i % 2 == 0 {
                batch(4)
            } else {
                vec![Tensor::from_f32("x", &[4, 100], &wide)]
            };
            let outputs = [
                Tensor::from_f32("y", &[4], &[i as f32; 4]),
                Tensor::from_i64("label", &[1, 2, 3, i as i64]),
            ];
            if i % 2 == 0 {
                expected.observe_inputs(&inputs, config).unwrap();
            }
            expected.observe_outputs(&outputs, config).unwrap();
            profiler.observe(&profiles, &inputs, true);
            profiler.observe(&profiles, &outputs, false);
        }
        profiler.flush();
        let s = profiles.snapshot(Duration::from_secs(60)).unwrap();
        // The 100-column inputs changed the layout and were refused whole, as unqueued
        // calls of another layout are: the inputs profiled are exactly the 3-column ones.
        assert_eq!(s.profile.rows(), 200);
        assert_eq!(s.profile.outputs.as_ref().map(|o| o.rows()), Some(400));
        assert_eq!(s.profile, expected);
        assert_eq!(profiles.skipped.load(Ordering::Relaxed), 50);
        assert_eq!(profiler.shed_rows(), 0);
        assert_eq!(profiler.held_bytes(), 0);
    }

    #[test]
    fn a_wide_call_is_queued_cut_to_its_profiled_columns() {
        let profiler = Profiler::start();
        let profiles = Arc::new(VersionProfiles::default());
        let _hold = profiler.inner.work.lock().unwrap();
        let wide: Vec<f32> = (0..2 * 1000).map(|i| i as f32).collect();
        let call = [Tensor::from_f32("img", &[2, 1000], &wide)];
        profiler.observe(&profiles, &call, true);
        let queue = profiler.inner.queue.lock().unwrap();
        assert_eq!(queue.data.len(), 2 * 64 * 4);
        assert_eq!(queue.shapes, [2, 64]);
    }

    #[test]
    fn the_thread_comes_by_without_being_woken_and_requests_reuse_the_buffers() {
        let profiler = Profiler::start();
        let profiles = Arc::new(VersionProfiles::default());
        profiler.observe(&profiles, &batch(3), true);
        assert_eq!(profiler.held_bytes(), Batch::needs(&batch(3)));
        let started = std::time::Instant::now();
        while profiles.snapshot(Duration::from_secs(60)).is_none() {
            assert!(started.elapsed() < Duration::from_secs(10), "never profiled");
            std::thread::sleep(Duration::from_millis(5));
        }
        // From now on the queue alternates between two sets of buffers that are never
        // freed: a request's copy allocates nothing.
        let mut seen = std::collections::HashSet::new();
        for round in 0..12 {
            {
                let _hold = profiler.inner.work.lock().unwrap();
                profiler.observe(&profiles, &batch(3), true);
                profiler.observe(&profiles, &[Tensor::from_f32("y", &[3], &[1.0; 3])], false);
                let queue = profiler.inner.queue.lock().unwrap();
                // After two rounds both sets have grown to a round's size.
                if round >= 2 {
                    seen.insert((queue.data.as_ptr() as usize, queue.calls.as_ptr() as usize));
                }
            }
            profiler.flush();
        }
        assert!(seen.len() <= 2, "{} different buffers", seen.len());
        assert_eq!(
            profiles.snapshot(Duration::from_secs(60)).unwrap().profile.rows(),
            39
        );
    }

    #[test]
    fn buffers_grown_by_a_burst_are_given_back_after_it() {
        let profiler = Profiler::start();
        let profiles = Arc::new(VersionProfiles::default());
        {
            let _hold = profiler.inner.work.lock().unwrap();
            for _ in 0..200 {
                profiler.observe(&profiles, &batch(1000), true); // 12 KB of data each
            }
            assert!(profiler.inner.queue.lock().unwrap().capacity() > KEEP_CAPACITY);
        }
        for _ in 0..3 {
            profiler.flush();
            profiler.observe(&profiles, &batch(1), true);
        }
        profiler.flush();
        let capacity = |b: &Mutex<Batch>| b.lock().unwrap().capacity();
        assert!(capacity(&profiler.inner.queue) < KEEP_CAPACITY);
        assert!(capacity(&profiler.inner.spare) < KEEP_CAPACITY);
        assert_eq!(
            profiles.snapshot(Duration::from_secs(60)).unwrap().profile.rows(),
            200_003
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
        let held = Batch::needs(&one_row());
        // 40 bytes of data each, but each queued call holds more than that (its record,
        // name and shape): the bound stops the queue at MAX_QUEUED_BYTES of what it holds.
        assert!(held >= 100, "{held}");
        assert_eq!(profiler.held_bytes(), queued as usize * held);
        assert!(
            queued as usize * held <= MAX_QUEUED_BYTES,
            "{queued} calls of {held} bytes"
        );
        assert!(
            queued as usize * held > MAX_QUEUED_BYTES - held,
            "{queued} calls of {held} bytes"
        );
        assert!((queued as usize) < MAX_QUEUED_BYTES / 40 / 2, "{queued}");
    }

    #[test]
    fn calls_past_the_queued_bytes_are_shed_and_counted_not_queued() {
        let profiler = Profiler::start();
        let profiles = Arc::new(VersionProfiles::default());
        {
            // Pretend a full batch is being profiled, as when the thread is starved.
            let _hold = profiler.inner.work.lock().unwrap();
            profiler.inner.draining.store(MAX_QUEUED_BYTES, Ordering::Release);
            profiler.observe(&profiles, &batch(7), true);
            assert_eq!(profiler.shed_rows(), 7);
            profiler.inner.draining.store(0, Ordering::Release);
        }
        profiler.observe(&profiles, &batch(2), true);
        profiler.flush();
        assert_eq!(
            profiles.snapshot(Duration::from_secs(60)).unwrap().profile.rows(),
            2
        );
    }
}
