//! A response body read from a file in 64 KiB pieces on the blocking pool, so that a
//! component download is never held whole in memory.

use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::mpsc;

/// Pieces read ahead of the client at most.
const AHEAD: usize = 4;
const PIECE: usize = 64 << 10;

/// The bytes of a file, `len` of them, as an HTTP body.
pub struct FileBody {
    pieces: mpsc::Receiver<std::io::Result<Bytes>>,
    len: u64,
}

impl FileBody {
    /// Starts reading `file` (positioned where the body starts) on the blocking pool; a
    /// client that goes away stops the reading.
    pub fn new(mut file: std::fs::File, len: u64) -> FileBody {
        let (tx, pieces) = mpsc::channel(AHEAD);
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; PIECE];
            loop {
                let piece = match file.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => Ok(Bytes::copy_from_slice(&buf[..n])),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e),
                };
                let failed = piece.is_err();
                if tx.blocking_send(piece).is_err() || failed {
                    return;
                }
            }
        });
        FileBody { pieces, len }
    }
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.pieces
            .poll_recv(cx)
            .map(|piece| piece.map(|r| r.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_file_arrives_whole_in_pieces_with_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let body = FileBody::new(std::fs::File::open(&path).unwrap(), bytes.len() as u64);
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(300_000));
        let mut body = body;
        let mut pieces = 0;
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            got.extend_from_slice(&frame.unwrap().into_data().unwrap());
            pieces += 1;
        }
        assert_eq!(got, bytes);
        assert!(pieces >= 300_000 / PIECE, "{pieces} pieces");
    }
}
