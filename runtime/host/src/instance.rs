//! Model instances under the two isolation modes, and the calls into them: every call
//! gets an epoch deadline and runs under the memory cap; a trap is contained and turned
//! into a typed error, and a trapped instance is never reused.

use crate::bindings::{self, Model, ModelPre, from_wit_info, from_wit_tensor, to_wit_tensor};
use crate::config::{HostConfig, Isolation};
use crate::epoch::Epoch;
use crate::error::HostError;
use crate::sandbox::{STDERR_CAPACITY, Sandbox};
use kiln_types::{ModelInfo, Tensor};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::{Engine, Store, Trap};

struct Live {
    store: Store<Sandbox>,
    model: Model,
    /// Calls served, to recycle pooled instances.
    uses: u32,
}

/// Creates, reuses and drops instances of one model.
pub struct Instances {
    engine: Engine,
    /// The host's epoch clock, kept ticking while this model can run.
    epoch: Arc<Epoch>,
    config: HostConfig,
    pre: ModelPre<Sandbox>,
    idle: Mutex<Vec<Live>>,
    /// Given on stdin to every new instance (components that load their model lazily).
    stdin: Option<Vec<u8>>,
}

impl Instances {
    pub(crate) fn new(
        engine: Engine,
        epoch: Arc<Epoch>,
        config: HostConfig,
        pre: ModelPre<Sandbox>,
        stdin: Option<Vec<u8>>,
    ) -> Instances {
        Instances {
            engine,
            epoch,
            config,
            pre,
            idle: Mutex::new(Vec::new()),
            stdin,
        }
    }

    /// The host settings the instances run under.
    pub(crate) fn config(&self) -> &HostConfig {
        &self.config
    }

    fn deadline(&self, deadline: Duration) -> u64 {
        self.epoch.ticks(deadline)
    }

    fn instantiate(&self) -> Result<Live, HostError> {
        let limit = self.config.memory_limit;
        let sandbox = match &self.stdin {
            Some(bytes) => Sandbox::with_stdin(limit, bytes.clone()),
            None => Sandbox::new(limit),
        };
        let mut store = Store::new(&self.engine, sandbox);
        store.limiter(|s| s as &mut dyn wasmtime::ResourceLimiter);
        store.set_epoch_deadline(self.deadline(self.config.deadline));
        let model = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.classify(&store, e))?;
        Ok(Live {
            store,
            model,
            uses: 0,
        })
    }

    fn take(&self) -> Result<Live, HostError> {
        if self.config.isolation == Isolation::Pooled
            && let Some(live) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
        {
            return Ok(live);
        }
        self.instantiate()
    }

    fn give_back(&self, mut live: Live) {
        live.uses += 1;
        // A recycled instance bounds whatever state a model accumulates (leaks, caches,
        // its stderr buffer).
        let fresh_enough = live.uses < self.config.max_instance_reuse
            && live.store.data().stderr_len() < STDERR_CAPACITY / 2;
        if self.config.isolation == Isolation::Pooled && fresh_enough {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < self.config.pool_size {
                idle.push(live);
            }
        }
    }

    /// Lets go of what the model holds for traffic it no longer gets: its idle instances
    /// (their linear memory goes back to the pool, which keeps none of it resident) and the
    /// resident pages of its compiled code. The next call instantiates afresh (copy-on-write
    /// memory images: no model load) and faults the code back in, from the page cache when
    /// it is still there. Returns the instances dropped.
    pub(crate) fn stand_by(&self) -> usize {
        let dropped = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        let count = dropped.len();
        drop(dropped);
        crate::memory::page_out(self.code_range());
        crate::memory::unmap_file_pages(self.code_range());
        count
    }

    /// Where the model's compiled code is mapped.
    pub(crate) fn code_range(&self) -> std::ops::Range<*const u8> {
        self.pre.instance_pre().component().image_range()
    }

    pub(crate) fn idle(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }

    pub(crate) fn warm(&self) -> Result<(), HostError> {
        let live = self.instantiate()?;
        self.give_back(live);
        Ok(())
    }

    /// Maps a wasmtime error from a call into a typed host error.
    fn classify(&self, store: &Store<Sandbox>, e: wasmtime::Error) -> HostError {
        let sandbox = store.data();
        if let Some(trap) = e.downcast_ref::<Trap>() {
            if *trap == Trap::Interrupt {
                return HostError::Timeout(self.config.deadline);
            }
            if sandbox.memory_denied {
                return HostError::MemoryLimit(self.config.memory_limit >> 20);
            }
            let stderr = sandbox.stderr_text();
            let detail = if stderr.is_empty() {
                String::new()
            } else {
                format!(" (model stderr: {})", last_line(&stderr))
            };
            return HostError::Trap(format!("{trap}{detail}"));
        }
        if sandbox.memory_denied {
            return HostError::MemoryLimit(self.config.memory_limit >> 20);
        }
        if let Some(limit) = e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
            return HostError::Overloaded(format!(
                "{limit} (all {} instance slots are in use)",
                self.config.instance_slots
            ));
        }
        HostError::Host(anyhow::anyhow!("{e:#}"))
    }

    /// Reads the model's info from a fresh instance.
    pub(crate) fn info(&self) -> Result<ModelInfo, HostError> {
        let mut live = self.instantiate()?;
        live.store
            .set_epoch_deadline(self.deadline(Duration::from_secs(30)));
        let info = live
            .model
            .kiln_model_inference()
            .call_info(&mut live.store)
            .map_err(|e| self.classify(&live.store, e))?;
        self.give_back(live);
        Ok(from_wit_info(info))
    }

    /// One prediction under `deadline` and the memory cap.
    pub(crate) fn predict(&self, inputs: Vec<Tensor>, deadline: Duration) -> Result<Vec<Tensor>, HostError> {
        let mut live = self.take()?;
        live.store.set_epoch_deadline(self.deadline(deadline));
        live.store.data_mut().memory_denied = false;
        let wit_inputs: Vec<bindings::Tensor> = inputs.into_iter().map(to_wit_tensor).collect();
        let result = live
            .model
            .kiln_model_inference()
            .call_predict(&mut live.store, &wit_inputs);
        match result {
            Ok(Ok(outputs)) => {
                self.give_back(live);
                Ok(outputs.into_iter().map(from_wit_tensor).collect())
            }
            Ok(Err(model_error)) => {
                self.give_back(live);
                Err(match model_error {
                    bindings::GuestError::InvalidInput(m) => HostError::InvalidInput(m),
                    bindings::GuestError::Unsupported(m) => HostError::Unsupported(m),
                    bindings::GuestError::Internal(m) => HostError::Model(m),
                })
            }
            // The instance is dropped here: wasmtime forbids re-entering a trapped one.
            Err(e) => {
                let err = match self.classify(&live.store, e) {
                    HostError::Timeout(_) => HostError::Timeout(deadline),
                    other => other,
                };
                tracing::warn!(kind = err.kind(), error = %err, "model call failed; instance discarded");
                Err(err)
            }
        }
    }
}

fn last_line(s: &str) -> &str {
    s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(s)
}
