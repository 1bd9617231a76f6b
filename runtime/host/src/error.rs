//! Host errors, typed so callers can map them to HTTP statuses and retry policies.

use kiln_engine::EngineError;

/// Why a host operation failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The request does not fit the model (the model's own check, or the host's).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The request is larger than the configured limit.
    #[error("request too large: {0}")]
    TooLarge(String),
    /// The model or request needs something the engine cannot do.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The model ran past its deadline and was stopped.
    #[error("the model ran past its {0:?} deadline and was stopped")]
    Timeout(std::time::Duration),
    /// The model tried to grow its memory past the cap and was stopped.
    #[error("the model exceeded its memory limit of {0} MiB and was stopped")]
    MemoryLimit(usize),
    /// The model trapped (crashed); the instance was discarded.
    #[error("the model trapped: {0}")]
    Trap(String),
    /// The model reported an internal failure.
    #[error("model error: {0}")]
    Model(String),
    /// No instance could be made: the pooling allocator's slots are all in use (too many
    /// calls at once for `instance_slots`). Nothing ran; retry later.
    #[error("the host is at capacity: {0}")]
    Overloaded(String),
    /// The host itself failed (compilation, instantiation, I/O).
    #[error(transparent)]
    Host(#[from] anyhow::Error),
}

impl HostError {
    /// Whether the caller caused it (an HTTP 4xx).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            HostError::InvalidInput(_) | HostError::TooLarge(_) | HostError::Unsupported(_)
        )
    }

    /// Short machine-readable kind, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            HostError::InvalidInput(_) => "invalid_input",
            HostError::TooLarge(_) => "too_large",
            HostError::Unsupported(_) => "unsupported",
            HostError::Timeout(_) => "timeout",
            HostError::MemoryLimit(_) => "memory_limit",
            HostError::Trap(_) => "trap",
            HostError::Model(_) => "model_error",
            HostError::Overloaded(_) => "overloaded",
            HostError::Host(_) => "host_error",
        }
    }
}

impl From<EngineError> for HostError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::InvalidInput(m) => HostError::InvalidInput(m),
            EngineError::Unsupported(m) => HostError::Unsupported(m),
            EngineError::Internal(m) => HostError::Model(m),
        }
    }
}
