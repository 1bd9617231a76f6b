//! Error answers: always a JSON body `{"error": "...", "kind"?: "..."}` with a status that
//! says whose fault it was (4xx: the client's; 5xx: the model's or the host's). The same
//! statuses and texts on `kiln serve` and on every edge.

use kiln_engine::EngineError;
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

    /// An error the model's engine returned, worded and classified as `kiln serve` does
    /// for the same error coming out of a component.
    pub fn from_engine(protocol: Protocol, e: &EngineError) -> ApiError {
        let (status, kind, message) = match e {
            EngineError::InvalidInput(m) => (
                protocol.invalid_status(),
                "invalid_input",
                format!("invalid input: {m}"),
            ),
            EngineError::Unsupported(m) => (
                protocol.invalid_status(),
                "unsupported",
                format!("unsupported: {m}"),
            ),
            EngineError::Internal(m) => (500, "model_error", format!("model error: {m}")),
        };
        ApiError {
            status,
            message,
            kind: Some(kind),
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

    /// 413 for a body over the limit.
    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            413,
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }
}
