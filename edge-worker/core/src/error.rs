//! Error answers: always a JSON body `{"error": "...", "kind"?: "..."}` with a status that
//! says whose fault it was (4xx: the client's; 5xx: the model's or the host's). The same
//! statuses and texts on `kiln serve` and on every edge.

use kiln_types::EngineError;
use serde_json::json;

/// Which protocol's convention to follow for requests that do not fit the model: the
/// seed API answers 422 (as the FastAPI seed server did), OIP answers 400 (as Triton does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `POST /v1/models/{name}/predict`.
    Seed,
    /// `/v2/...`.
    Oip,
}

impl Protocol {
    /// The status of a request that is well-formed but does not fit the model.
    pub fn invalid_status(self) -> u16 {
        match self {
            Protocol::Seed => 422,
            Protocol::Oip => 400,
        }
    }
}

/// An error answered to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Human-readable reason.
    pub message: String,
    /// Machine-readable kind for model and host failures (`trap`, `timeout`...).
    pub kind: Option<&'static str>,
}

impl ApiError {
    /// An error with a status and message.
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            kind: None,
        }
    }

    /// 400: the body could not be read as a request.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, message)
    }

    /// The request does not fit the model (422 seed / 400 OIP).
    pub fn invalid(protocol: Protocol, message: impl Into<String>) -> ApiError {
        ApiError::new(protocol.invalid_status(), message)
    }

    /// 500 for a failure of the server itself.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            kind: Some("host_error"),
            ..ApiError::new(500, message)
        }
    }

    /// A failed model run: the caller's fault (4xx) or the model's or host's (5xx).
    pub fn from_failure(protocol: Protocol, f: &Failure) -> ApiError {
        let status = match f.kind {
            FailureKind::InvalidInput | FailureKind::Unsupported => protocol.invalid_status(),
            FailureKind::TooLarge => 413,
            FailureKind::Timeout => 504,
            FailureKind::Overloaded => 503,
            FailureKind::MemoryLimit | FailureKind::Trap | FailureKind::Model | FailureKind::Host => 500,
        };
        ApiError {
            status,
            message: f.message.clone(),
            kind: Some(f.kind.as_str()),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        match self.kind {
            Some(kind) => json!({ "error": self.message, "kind": kind }),
            None => json!({ "error": self.message }),
        }
    }

    /// 404 for a path nothing serves.
    pub fn no_route(method: &str, path: &str) -> ApiError {
        ApiError::new(404, format!("no route for {method} {path}"))
    }

    /// 405 for a known path with the wrong method.
    pub fn method_not_allowed(method: &str, path: &str) -> ApiError {
        ApiError::new(405, format!("{method} is not allowed on {path}"))
    }

    /// 503 `overloaded`: the server sheds the request because it is at capacity (a
    /// model's bulkhead, the bytes in flight, the instance pool); the client should
    /// retry after [`RETRY_AFTER_SECONDS`] (the `Retry-After` header says so).
    pub fn overloaded(message: impl Into<String>) -> ApiError {
        ApiError {
            kind: Some(FailureKind::Overloaded.as_str()),
            ..ApiError::new(503, message)
        }
    }

    /// Whether this is a 503 `overloaded` (answered with `Retry-After`).
    pub fn is_overloaded(&self) -> bool {
        self.status == 503 && self.kind == Some(FailureKind::Overloaded.as_str())
    }

    /// 413 for a body over the limit.
    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            413,
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }
}

/// The `Retry-After` of a 503 `overloaded`, in seconds (HTTP allows whole seconds only).
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// Why running a model failed, as every host classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The request does not fit the model (the model's own check, or the host's).
    InvalidInput,
    /// The model or request needs something the engine cannot do.
    Unsupported,
    /// The request is larger than the host accepts.
    TooLarge,
    /// The model ran past its deadline and was stopped.
    Timeout,
    /// The host is at capacity (bulkhead full, instance pool exhausted): nothing ran;
    /// neither the client's nor the model's fault.
    Overloaded,
    /// The model tried to grow its memory past the cap and was stopped.
    MemoryLimit,
    /// The model trapped (crashed).
    Trap,
    /// The model reported an internal failure.
    Model,
    /// The host itself failed.
    Host,
}

impl FailureKind {
    /// The `kind` of the error body, and of metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::InvalidInput => "invalid_input",
            FailureKind::Unsupported => "unsupported",
            FailureKind::TooLarge => "too_large",
            FailureKind::Timeout => "timeout",
            FailureKind::Overloaded => "overloaded",
            FailureKind::MemoryLimit => "memory_limit",
            FailureKind::Trap => "trap",
            FailureKind::Model => "model_error",
            FailureKind::Host => "host_error",
        }
    }

    /// Whether the caller caused it (answered with a 4xx).
    pub fn is_client_error(self) -> bool {
        matches!(
            self,
            FailureKind::InvalidInput | FailureKind::Unsupported | FailureKind::TooLarge
        )
    }
}

/// A failed model run: its kind and the whole message the client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    /// A failure of `kind` with `message` as the client reads it.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

/// An error the model's engine returned, worded and classified as `kiln serve` does for
/// the same error coming out of a component.
impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Failure {
        match e {
            EngineError::InvalidInput(m) => {
                Failure::new(FailureKind::InvalidInput, format!("invalid input: {m}"))
            }
            EngineError::Unsupported(m) => {
                Failure::new(FailureKind::Unsupported, format!("unsupported: {m}"))
            }
            EngineError::Internal(m) => Failure::new(FailureKind::Model, format!("model error: {m}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_map_to_the_party_at_fault() {
        let cases = [
            (FailureKind::InvalidInput, Protocol::Oip, 400),
            (FailureKind::InvalidInput, Protocol::Seed, 422),
            (FailureKind::Unsupported, Protocol::Oip, 400),
            (FailureKind::TooLarge, Protocol::Seed, 413),
            (FailureKind::Timeout, Protocol::Oip, 504),
            (FailureKind::MemoryLimit, Protocol::Oip, 500),
            (FailureKind::Trap, Protocol::Seed, 500),
            (FailureKind::Model, Protocol::Oip, 500),
            (FailureKind::Host, Protocol::Oip, 500),
        ];
        for (kind, protocol, status) in cases {
            let e = ApiError::from_failure(protocol, &Failure::new(kind, "m"));
            assert_eq!(e.status, status, "{kind:?}");
            assert_eq!(e.kind, Some(kind.as_str()));
            assert_eq!(kind.is_client_error(), status < 500, "{kind:?}");
        }
        let f = Failure::from(EngineError::Internal("x".into()));
        assert_eq!(
            (f.kind, f.message.as_str()),
            (FailureKind::Model, "model error: x")
        );
    }
}
