//! Serving an axum router over plain HTTP or HTTPS, with the connection limits of
//! [`ServeLimits`]. Kiln runs hyper's HTTP/1 connections itself rather than through
//! `axum::serve`, which has no connection cap, header timeout or idle timeout.
//!
//! - At `max_connections` open (TLS handshakes included) the server stops accepting:
//!   new connections wait in the kernel's listen backlog until one closes, as hyper's own
//!   examples and tower's concurrency limits do. Accepting and closing at once (Envoy's
//!   overflow counter) would turn a short burst into resets that clients retry at once,
//!   and a load balancer in front retries a slow connect elsewhere anyway.
//! - A connection must send a request's head within `header_timeout` of opening, or of
//!   the first byte of a later request, else it is closed (slowloris); one idle between
//!   requests longer than `idle_timeout` is closed gracefully.
//! - HTTPS handshakes run each in their own task (bounded in number and time), so a slow
//!   or failing client delays nobody and never stops the accept loop.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tower_service::Service;

use super::limits::ServeLimits;
use super::server::ServerTls;

/// Longest a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most handshakes in progress at once; further connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 256;

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and lets
/// in-flight requests finish: plain HTTP without `tls`, HTTPS with it, within `limits`.
/// The peer address is available to handlers as `ConnectInfo<SocketAddr>` either way.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<ServerTls>,
    limits: &ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max));
    let (stop_tx, stop) = watch::channel(false);
    let connection = Connection {
        app,
        header_timeout: limits.header_timeout.max(Duration::from_millis(10)),
        idle_timeout: limits.idle_timeout.max(Duration::from_millis(10)),
        open: limits.open.clone(),
        stop: stop.clone(),
    };
    let mut shutdown = std::pin::pin!(shutdown);
    match tls {
        None => {
            loop {
                let permit = tokio::select! {
                    p = slots.clone().acquire_owned() => p.context("the connection limit closed")?,
                    () = &mut shutdown => break,
                };
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    () = &mut shutdown => break,
                };
                match accepted {
                    Ok((tcp, peer)) => {
                        let _ = tcp.set_nodelay(true);
                        tokio::spawn(connection.clone().run(tcp, peer, permit));
                    }
                    Err(e) => accept_failed(e).await,
                }
            }
            drop(listener);
        }
        Some(tls) => {
            let acceptor = TlsAcceptor::from(tls.rustls_config());
            let (tx, mut ready) = mpsc::channel(64);
            let accept_task = tokio::spawn(accept_tls(listener, acceptor, slots.clone(), tx, stop.clone()));
            loop {
                tokio::select! {
                    conn = ready.recv() => match conn {
                        Some((stream, peer, permit)) => {
                            tokio::spawn(connection.clone().run(stream, peer, permit));
                        }
                        // The accept task ended (it does not, short of a panic).
                        None => anyhow::bail!("the HTTPS accept loop stopped"),
                    },
                    () = &mut shutdown => break,
                }
            }
            accept_task.abort();
        }
    }
    // Stop accepting (the listener is dropped or its task aborted), tell every connection
    // to finish its request and close, and wait until all have.
    let _ = stop_tx.send(true);
    let _all = slots.acquire_many(max as u32).await;
    Ok(())
}

/// Out of file descriptors and the like: wait rather than spin, as axum does.
async fn accept_failed(e: io::Error) {
    tracing::warn!(error = %e, "accepting a TCP connection failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

async fn accept_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    slots: Arc<Semaphore>,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr, OwnedSemaphorePermit)>,
    stop: watch::Receiver<bool>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok(handshake) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                accept_failed(e).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _handshake = handshake;
            let shaken = tokio::select! {
                s = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => s,
                _ = stop.wait_for(|s| *s) => return,
            };
            match shaken {
                Ok(Ok(stream)) => {
                    // Fails only when the server is shutting down: the connection closes.
                    let _ = ready.send((stream, peer, slot)).await;
                }
                Ok(Err(e)) => tracing::info!(peer = %peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::info!(peer = %peer, "TLS handshake timed out"),
            }
        });
    }
}

/// What every connection task shares.
#[derive(Clone)]
struct Connection {
    app: Router,
    header_timeout: Duration,
    idle_timeout: Duration,
    open: super::limits::OpenConnections,
    stop: watch::Receiver<bool>,
}

impl Connection {
    /// Serves one connection until it closes, is timed out, or the server stops.
    async fn run<I>(self, io: I, peer: SocketAddr, slot: OwnedSemaphorePermit)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let _slot = slot;
        let _open = self.open.enter();
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched {
            inner: io,
            activity: activity.clone(),
        });
        let app = self.app;
        let requests = activity.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            let busy = requests.begin();
            let answer = app.clone().call(request);
            async move {
                let response = answer.await?;
                Ok::<_, std::convert::Infallible>(response.map(|body| Tracked { body, _busy: busy }))
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        // Kiln's own header timeout below: hyper's would also close idle connections.
        builder.header_read_timeout(None);
        let mut conn = std::pin::pin!(builder.serve_connection(io, service));
        let mut stop = self.stop;
        let mut closing = false;
        let tick = (self.header_timeout.min(self.idle_timeout) / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut ticks = tokio::time::interval(tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = stop.wait_for(|s| *s), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = ticks.tick() => match activity.expired(self.header_timeout, self.idle_timeout) {
                    Some(Expired::Header) => {
                        tracing::info!(peer = %peer, timeout = ?self.header_timeout, "closing a connection that did not send a request head in time");
                        return;
                    }
                    Some(Expired::Idle) if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    _ => {}
                },
            }
        }
    }
}

/// Which timeout a connection ran out of.
enum Expired {
    Header,
    Idle,
}

/// What a connection is doing, seen from its socket reads and its requests.
struct Activity {
    started: Instant,
    /// Requests whose answer is not sent yet.
    busy: AtomicUsize,
    /// When (ms since `started`) the last request ended.
    idle_since: AtomicU64,
    /// When (ms since `started`) the next request's first byte arrived; [`NONE`] while
    /// nothing arrived or a request is being answered.
    head_since: AtomicU64,
}

const NONE: u64 = u64::MAX;

impl Activity {
    /// A new connection: it owes a request head from now on.
    fn new() -> Activity {
        Activity {
            started: Instant::now(),
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Bytes arrived: between requests, that starts the head's clock.
    fn read(&self) {
        if self.busy.load(Ordering::Acquire) == 0 {
            let _ = self
                .head_since
                .compare_exchange(NONE, self.now(), Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// A request's head was read: it is being answered until the guard drops.
    fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(NONE, Ordering::Release);
        Busy(self.clone())
    }

    fn expired(&self, header: Duration, idle: Duration) -> Option<Expired> {
        if self.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        let now = self.now();
        let head = self.head_since.load(Ordering::Acquire);
        if head != NONE {
            return (now.saturating_sub(head) >= header.as_millis() as u64).then_some(Expired::Header);
        }
        let idle_since = self.idle_since.load(Ordering::Acquire);
        (now.saturating_sub(idle_since) >= idle.as_millis() as u64).then_some(Expired::Idle)
    }
}

/// A request being answered; dropped when its response body is sent (or abandoned).
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.idle_since.store(self.0.now(), Ordering::Release);
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as busy until it is sent.
struct Tracked {
    body: Body,
    _busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The connection's socket, telling [`Activity`] when bytes arrive.
struct Watched<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
