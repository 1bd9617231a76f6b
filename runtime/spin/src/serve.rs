//! The HTTP listener of `kiln spin up`: every request goes to the router (the app has a
//! single `/...` route), errors of the host itself answer 500 with Kiln's error JSON.

use crate::app::SpinApp;
use anyhow::Context;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kiln_api::ApiError;
use std::sync::Arc;

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn run(
    app: Arc<SpinApp>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let router = axum::Router::new().fallback(handle).with_state(app);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")
}

async fn handle(State(app): State<Arc<SpinApp>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, app.max_body_bytes()).await {
        Ok(b) => b,
        Err(_) => return error(ApiError::too_large(app.max_body_bytes())),
    };
    match app.handle(http::Request::from_parts(parts, body)).await {
        Ok(res) => {
            let (parts, body) = res.into_parts();
            Response::from_parts(parts, Body::from(body))
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "router failed");
            error(ApiError::internal(format!("the Spin router failed: {e:#}")))
        }
    }
}

/// An error of the host itself, in Kiln's error JSON (the router answers everything else).
fn error(e: ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(e.body())).into_response()
}
