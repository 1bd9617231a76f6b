//! Receiving a large request body without holding it: [`receive`] streams it chunk by
//! chunk into a writer on the blocking pool (a temporary file that hashes what it holds,
//! in the servers that take components), stopping at a size limit.

use std::io::Write;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use http_body_util::BodyExt;

/// Chunks in flight between the connection and the writer: memory stays at a few chunks
/// whatever the body's size.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Why an upload was not received whole.
#[derive(Debug)]
pub enum UploadError {
    /// The body is larger than the limit (in bytes); answer `413`.
    TooLarge(u64),
    /// The client's body ended badly (connection closed mid-body, malformed chunking).
    Body(String),
    /// Writing failed (disk full, say).
    Write(std::io::Error),
}

impl std::fmt::Display for UploadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UploadError::TooLarge(limit) => write!(f, "the upload is larger than the limit of {limit} bytes"),
            UploadError::Body(e) => write!(f, "could not read the request body: {e}"),
            UploadError::Write(e) => write!(f, "storing the upload: {e}"),
        }
    }
}

impl std::error::Error for UploadError {}

/// Whether the request's `Content-Length` already says the body is over `limit`.
pub fn declared_too_large(headers: &HeaderMap, limit: u64) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limit)
}

/// Streams `body` into `writer` (on the blocking pool), at most `limit` bytes; returns the
/// writer once the body ended. On an error the writer is dropped (a `Staged` file then
/// removes itself).
pub async fn receive<W: Write + Send + 'static>(body: Body, limit: u64, writer: W) -> Result<W, UploadError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    let sink = tokio::task::spawn_blocking(move || {
        let mut writer = writer;
        while let Some(chunk) = rx.blocking_recv() {
            writer.write_all(&chunk)?;
        }
        writer.flush()?;
        Ok::<W, std::io::Error>(writer)
    });
    let mut body = body;
    let mut received: u64 = 0;
    let outcome = loop {
        match body.frame().await {
            None => break Ok(()),
            Some(Err(e)) => break Err(UploadError::Body(e.to_string())),
            Some(Ok(frame)) => {
                // Trailers carry nothing an upload needs.
                let Ok(chunk) = frame.into_data() else { continue };
                received += chunk.len() as u64;
                if received > limit {
                    break Err(UploadError::TooLarge(limit));
                }
                if tx.send(chunk).await.is_err() {
                    // The writer stopped: its error is below.
                    break Ok(());
                }
            }
        }
    };
    drop(tx);
    let written = sink
        .await
        .map_err(|e| UploadError::Write(std::io::Error::other(format!("the writer task failed: {e}"))))?;
    outcome?;
    written.map_err(UploadError::Write)
}
