//! Error responses: always a JSON body `{"error": "...", "kind"?: "..."}` with a status
//! that says whose fault it was (4xx: the client's; 5xx: the model's or the host's).
//! The protocol's own errors come from `kiln_edge`, shared with the edge workers; this
//! adds the host's (traps, deadlines, memory limits, body limits).

use super::table::RouteError;
use crate::error::HostError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

pub use kiln_edge::Protocol;

fn invalid_status(protocol: Protocol) -> StatusCode {
    StatusCode::from_u16(protocol.invalid_status()).unwrap_or(StatusCode::BAD_REQUEST)
}

/// An error answered to the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable reason.
    pub message: String,
    /// Machine-readable kind for model and host failures (`trap`, `timeout`...).
    pub kind: Option<&'static str>,
}

impl ApiError {
    /// An error with a status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            kind: None,
        }
    }

    /// 400: the body could not be read as a request.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// The request does not fit the model (422 seed / 400 OIP).
    pub fn invalid(protocol: Protocol, message: impl Into<String>) -> ApiError {
        ApiError::new(invalid_status(protocol), message)
    }

    /// 500 for a failure of the server itself.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            kind: Some("host_error"),
            ..ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
        }
    }

    /// Maps a host error: client errors to 4xx, a deadline to 504, the rest to 500.
    pub fn from_host(protocol: Protocol, e: &HostError) -> ApiError {
        let status = match e {
            HostError::InvalidInput(_) | HostError::Unsupported(_) => invalid_status(protocol),
            HostError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            HostError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            HostError::MemoryLimit(_) | HostError::Trap(_) | HostError::Model(_) | HostError::Host(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError {
            status,
            message: e.to_string(),
            kind: Some(e.kind()),
        }
    }
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, e.to_string())
    }
}

/// The protocol code's errors (the same texts and statuses as every edge's).
impl From<kiln_edge::ApiError> for ApiError {
    fn from(e: kiln_edge::ApiError) -> ApiError {
        ApiError {
            status: StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: e.message,
            kind: e.kind,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.kind {
            Some(kind) => serde_json::json!({ "error": self.message, "kind": kind }),
            None => serde_json::json!({ "error": self.message }),
        };
        (self.status, Json(body)).into_response()
    }
}

/// Maps a body-reading failure: over the limit → 413, otherwise 400.
pub fn body_error(e: axum::extract::rejection::BytesRejection, limit: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    } else {
        ApiError::bad_request(format!("could not read the request body: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn host_errors_map_to_the_party_at_fault() {
        let cases = [
            (
                HostError::InvalidInput("x".into()),
                Protocol::Oip,
                400,
                "invalid_input",
            ),
            (
                HostError::InvalidInput("x".into()),
                Protocol::Seed,
                422,
                "invalid_input",
            ),
            (
                HostError::Unsupported("x".into()),
                Protocol::Oip,
                400,
                "unsupported",
            ),
            (HostError::TooLarge("x".into()), Protocol::Seed, 413, "too_large"),
            (
                HostError::Timeout(Duration::from_secs(1)),
                Protocol::Oip,
                504,
                "timeout",
            ),
            (HostError::MemoryLimit(64), Protocol::Oip, 500, "memory_limit"),
            (HostError::Trap("boom".into()), Protocol::Seed, 500, "trap"),
            (HostError::Model("bad".into()), Protocol::Oip, 500, "model_error"),
            (
                HostError::Host(anyhow::anyhow!("io")),
                Protocol::Oip,
                500,
                "host_error",
            ),
        ];
        for (e, protocol, status, kind) in cases {
            let api = ApiError::from_host(protocol, &e);
            assert_eq!(api.status.as_u16(), status, "{e}");
            assert_eq!(api.kind, Some(kind));
            assert_eq!(e.is_client_error(), status < 500, "{e}");
        }
    }
}
