//! The epoch clock behind every deadline: a thread increments an engine's epoch at a fixed
//! tick, and a call's deadline is a number of ticks. The host shares its clock with every
//! loaded model, so deadlines keep firing as long as any model can run; `kiln spin up`'s
//! router engine has one too.

use anyhow::Context;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::Engine;

/// How often the model engine's epoch ticks; deadlines are rounded up to it.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The ticking thread of one engine; it stops when the last holder drops this.
pub struct Epoch {
    stop: Arc<AtomicBool>,
    tick: Duration,
}

impl Epoch {
    /// Starts incrementing `engine`'s epoch every `tick`.
    pub fn start(engine: &Engine, tick: Duration) -> anyhow::Result<Epoch> {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.weak();
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("kiln-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    match engine.upgrade() {
                        Some(e) => e.increment_epoch(),
                        None => break,
                    }
                }
            })
            .context("starting the epoch thread")?;
        Ok(Epoch { stop, tick })
    }

    /// Epoch ticks for a deadline (at least one full tick).
    pub fn ticks(&self, deadline: Duration) -> u64 {
        (deadline.as_nanos() / self.tick.as_nanos().max(1)).max(1) as u64 + 1
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
