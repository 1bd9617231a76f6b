//! The limits every Kiln server applies the same way ([`ServeLimits`]): how many
//! connections are open at once, how long a client may take to send a request's head or
//! leave a keep-alive connection idle ([`super::serve`] enforces these), and how long a
//! whole request may take ([`request_timeout`], tower-http's `TimeoutLayer` answering
//! with a JSON body). [`json_error`] is the `{"error", "kind"}` answer they share.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower_http::timeout::TimeoutLayer;

/// Connection and request limits of one server.
#[derive(Clone, Debug)]
pub struct ServeLimits {
    /// Most connections open at once (TLS handshakes included); at the limit the server
    /// stops accepting and further connections wait in the kernel's listen backlog.
    pub max_connections: usize,
    /// Longest a client may take to send a request's head (the request line and headers),
    /// from the moment the connection opens or its first byte of a later request arrives;
    /// the connection is then closed without an answer (slowloris).
    pub header_timeout: Duration,
    /// Longest a keep-alive connection may sit idle between requests before it is closed.
    pub idle_timeout: Duration,
    /// Longest a request may take, from its head to its answer (slow bodies included);
    /// `408` with a JSON body after it.
    pub request_timeout: Duration,
    /// The same for the routes that take uploads (components), which are far larger.
    pub upload_timeout: Duration,
    /// Most uploads received at once; more answer `503` with `Retry-After`.
    pub max_concurrent_uploads: usize,
    /// Connections open now, counted by [`super::serve`] (shared between clones).
    pub open: OpenConnections,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            upload_timeout: Duration::from_secs(600),
            max_concurrent_uploads: 2,
            open: OpenConnections::default(),
        }
    }
}

/// The number of connections a server has open (a gauge for its metrics).
#[derive(Clone, Debug, Default)]
pub struct OpenConnections(Arc<AtomicUsize>);

impl OpenConnections {
    /// Connections open now.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts one connection until the returned guard drops.
    pub(crate) fn enter(&self) -> OpenGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        OpenGuard(self.0.clone())
    }
}

/// One counted connection.
pub(crate) struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A JSON error answer: `{"error": message, "kind": kind}` with `status`.
pub fn json_error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into(), "kind": kind });
    (status, axum::Json(body)).into_response()
}

/// `503` `overloaded` with `Retry-After: 1`: more uploads at once than the server takes.
pub fn overloaded(message: impl Into<String>) -> Response {
    let mut response = json_error(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Bounds every request of `router` to `limit` (its body included): past it the request
/// is dropped and the client gets `408` `{"error": ..., "kind": "timeout"}` with
/// `Connection: close` (the rest of its body is never read). `flag` names the setting
/// in the message.
pub fn request_timeout<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    limit: Duration,
    flag: &'static str,
) -> Router<S> {
    router
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limit))
        .layer(axum::middleware::map_response(
            move |response: Response| async move { timeout_json(response, limit, flag) },
        ))
}

/// The layer's own 408 (no body, no content type) as a JSON answer; others pass.
fn timeout_json(response: Response, limit: Duration, flag: &str) -> Response {
    if response.status() != StatusCode::REQUEST_TIMEOUT
        || response.headers().contains_key(header::CONTENT_TYPE)
    {
        return response;
    }
    let mut answer = json_error(
        StatusCode::REQUEST_TIMEOUT,
        "timeout",
        format!(
            "the request took longer than {} ({flag}): its body arrived too slowly or the server could not answer in time; retry, or send it faster",
            humanize(limit)
        ),
    );
    answer
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    answer
}

/// `30s`, `1.5s`, `250ms`.
fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_slow_handler_gets_a_json_408_and_a_fast_one_passes() {
        use tower_service::Service;
        let app: Router = Router::new()
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .route("/fast", axum::routing::get(|| async { "ok" }));
        let mut app = request_timeout(app, Duration::from_millis(50), "--request-timeout");
        let call = |path: &str| {
            axum::http::Request::builder()
                .uri(path)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let slow = app.call(call("/slow")).await.unwrap();
        assert_eq!(slow.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(slow.headers()[header::CONNECTION], "close");
        let body = axum::body::to_bytes(slow.into_body(), 1 << 16).await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["kind"], "timeout");
        assert!(
            json["error"]
                .as_str()
                .unwrap()
                .contains("50ms (--request-timeout)"),
            "{json}"
        );
        let fast = app.call(call("/fast")).await.unwrap();
        assert_eq!(fast.status(), StatusCode::OK);
    }
}
