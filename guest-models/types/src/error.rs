//! Typed engine errors; hosts map them to HTTP statuses and CLI exit messages.

use serde::{Deserialize, Serialize};

/// Why loading or running a model failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "kebab-case")]
pub enum EngineError {
    /// The request (or model file) does not fit: wrong name, type, shape, count, not ONNX.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The model or request uses something the engine cannot run (an operator, a type).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The engine itself failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    /// The message without the kind prefix.
    pub fn message(&self) -> &str {
        match self {
            EngineError::InvalidInput(m) | EngineError::Unsupported(m) | EngineError::Internal(m) => m,
        }
    }
}
