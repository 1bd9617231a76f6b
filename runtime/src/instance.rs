//! Model instances under the two isolation modes, and the calls into them: every call
//! gets an epoch deadline and runs under the memory cap; a trap is contained and turned
//! into a typed error, and a trapped instance is never reused.

use crate::bindings::{self, Model, ModelPre};
use crate::config::Isolation;
use crate::error::HostError;
use crate::host::Host;
use crate::sandbox::{STDERR_CAPACITY, Sandbox};
use kiln_engine::{ElementType, ModelInfo, Tensor, TensorSpec};
use std::sync::{Arc, Mutex};
use wasmtime::{Store, Trap};

struct Live {
    store: Store<Sandbox>,
    model: Model,
    /// Calls served, to recycle pooled instances.
    uses: u32,
}

/// Creates, reuses and drops instances of one model.
pub struct Instances {
    host: Arc<Host>,
    pre: ModelPre<Sandbox>,
    idle: Mutex<Vec<Live>>,
    /// Given on stdin to every new instance (components that load their model lazily).
    stdin: Option<Vec<u8>>,
}

impl Instances {
    pub(crate) fn new(host: Arc<Host>, pre: ModelPre<Sandbox>, stdin: Option<Vec<u8>>) -> Instances {
        Instances {
            host,
            pre,
            idle: Mutex::new(Vec::new()),
            stdin,
        }
    }

    pub(crate) fn host(&self) -> &Host {
        &self.host
    }

    fn instantiate(&self) -> Result<Live, HostError> {
        let limit = self.host.config.memory_limit;
        let sandbox = match &self.stdin {
            Some(bytes) => Sandbox::with_stdin(limit, bytes.clone()),
            None => Sandbox::new(limit),
        };
        let mut store = Store::new(&self.host.engine, sandbox);
        store.limiter(|s| s as &mut dyn wasmtime::ResourceLimiter);
        store.set_epoch_deadline(self.host.deadline_ticks(self.host.config.deadline));
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
        if self.host.config.isolation == Isolation::Pooled
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
        let fresh_enough = live.uses < self.host.config.max_instance_reuse
            && live.store.data().stderr_len() < STDERR_CAPACITY / 2;
        if self.host.config.isolation == Isolation::Pooled && fresh_enough {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < self.host.config.pool_size {
                idle.push(live);
            }
        }
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
                return HostError::Timeout(self.host.config.deadline);
            }
            if sandbox.memory_denied {
                return HostError::MemoryLimit(self.host.config.memory_limit >> 20);
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
            return HostError::MemoryLimit(self.host.config.memory_limit >> 20);
        }
        HostError::Host(anyhow::anyhow!("{e:#}"))
    }

    /// Reads the model's info from a fresh instance.
    pub(crate) fn info(&self) -> Result<ModelInfo, HostError> {
        let mut live = self.instantiate()?;
        live.store
            .set_epoch_deadline(self.host.deadline_ticks(std::time::Duration::from_secs(30)));
        let info = live
            .model
            .kiln_model_inference()
            .call_info(&mut live.store)
            .map_err(|e| self.classify(&live.store, e))?;
        self.give_back(live);
        Ok(from_wit_info(info))
    }

    /// One prediction under the deadline and memory cap.
    pub(crate) fn predict(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, HostError> {
        let mut live = self.take()?;
        live.store
            .set_epoch_deadline(self.host.deadline_ticks(self.host.config.deadline));
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
                let err = self.classify(&live.store, e);
                tracing::warn!(kind = err.kind(), error = %err, "model call failed; instance discarded");
                Err(err)
            }
        }
    }
}

fn last_line(s: &str) -> &str {
    s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(s)
}

pub(crate) fn to_wit_type(t: ElementType) -> bindings::ElementType {
    use bindings::ElementType as W;
    match t {
        ElementType::F16 => W::Fp16,
        ElementType::F32 => W::Fp32,
        ElementType::F64 => W::Fp64,
        ElementType::I8 => W::Int8,
        ElementType::I16 => W::Int16,
        ElementType::I32 => W::Int32,
        ElementType::I64 => W::Int64,
        ElementType::U8 => W::Uint8,
        ElementType::U16 => W::Uint16,
        ElementType::U32 => W::Uint32,
        ElementType::U64 => W::Uint64,
        ElementType::Bool => W::Boolean,
    }
}

pub(crate) fn from_wit_type(t: bindings::ElementType) -> ElementType {
    use bindings::ElementType as W;
    match t {
        W::Fp16 => ElementType::F16,
        W::Fp32 => ElementType::F32,
        W::Fp64 => ElementType::F64,
        W::Int8 => ElementType::I8,
        W::Int16 => ElementType::I16,
        W::Int32 => ElementType::I32,
        W::Int64 => ElementType::I64,
        W::Uint8 => ElementType::U8,
        W::Uint16 => ElementType::U16,
        W::Uint32 => ElementType::U32,
        W::Uint64 => ElementType::U64,
        W::Boolean => ElementType::Bool,
    }
}

fn to_wit_tensor(t: Tensor) -> bindings::Tensor {
    bindings::Tensor {
        name: t.name,
        element_type: to_wit_type(t.element_type),
        shape: t.shape,
        data: t.data,
    }
}

fn from_wit_tensor(t: bindings::Tensor) -> Tensor {
    Tensor {
        name: t.name,
        element_type: from_wit_type(t.element_type),
        shape: t.shape,
        data: t.data,
    }
}

fn from_wit_spec(s: bindings::TensorSpec) -> TensorSpec {
    TensorSpec {
        name: s.name,
        element_type: from_wit_type(s.element_type),
        shape: s.shape,
    }
}

fn from_wit_info(i: bindings::ModelInfo) -> ModelInfo {
    ModelInfo {
        name: i.name,
        version: i.version,
        source_digest: i.source_digest,
        inputs: i.inputs.into_iter().map(from_wit_spec).collect(),
        outputs: i.outputs.into_iter().map(from_wit_spec).collect(),
        labels: i.labels,
        metadata: i.metadata,
    }
}
