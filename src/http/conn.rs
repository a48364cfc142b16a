//! The accept loop: how many connections, and how long each may take to
//! say what it wants.
//!
//! With `[http] listen` the server shares the daemon's descriptor table,
//! and on loopback every agent of the host can reach it. So a connection
//! holds a permit for its life and, when none is left, `accept` waits: new
//! connections queue in the kernel instead of taking descriptors the
//! supervisor needs for heartbeat files. And a connection that does not
//! send a request's headers within [`HEADER_TIME`] (the first request, or
//! the next on a kept-alive one), or whose socket takes none of an answer
//! for [`WRITE_TIME`] (a caller that pipelines requests and never reads, a
//! stalled event-stream client), is closed: no caller can hold the permits
//! by saying nothing or by reading nothing.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tower::ServiceExt;

/// How long a connection may take to send a request's headers.
pub const HEADER_TIME: Duration = Duration::from_secs(10);
/// How long a connection's socket may take no byte of an answer.
pub const WRITE_TIME: Duration = Duration::from_secs(10);
/// The most a connection may buffer of what it is sent, and the longest
/// request head (431 past it): hyper's default, 400 KiB, times every
/// connection is a lot of memory for callers with no token. Bodies are
/// read in pieces.
const READ_BUFFER: usize = 32 * 1024;
const HEAD_LIMIT: usize = 16 * 1024;

/// The caller's address, as handlers see it (`ConnectInfo<Peer>`).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Serves `router` on `listener`, at most `most` connections at once,
/// until `shutdown`; then waits for the connections under way, which the
/// caller bounds (an event stream never ends by itself).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    most: usize,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(most.max(1)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break, // never closed
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = router
            .clone()
            .map_request(move |mut req: axum::http::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(Peer(peer)));
                req
            });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIME)
            .max_buf_size(READ_BUFFER)
            .max_header_size(HEAD_LIMIT)
            .serve_connection(
                TokioIo::new(WriteDeadline::new(stream, WRITE_TIME)),
                TowerToHyperService::new(service),
            );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A peer that goes away or times out is no error of ours.
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A failed `accept`: a connection reset before it was taken is nothing;
/// anything else (out of descriptors, above all) is said, and waited out
/// for a moment rather than spun on.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted) {
        return;
    }
    tracing::warn!("http: cannot accept a connection: {e}; trying again in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// A stream whose writes fail once the peer has taken nothing for `limit`.
/// The timer is armed only while a write waits (a full socket buffer), so
/// a reader that keeps up costs nothing.
struct WriteDeadline {
    stream: TcpStream,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl WriteDeadline {
    fn new(stream: TcpStream, limit: Duration) -> WriteDeadline {
        WriteDeadline {
            stream,
            limit,
            stalled: None,
        }
    }

    /// After a write (or flush) that waits: fails once the wait is over
    /// `limit`; any progress disarms the timer.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(stalled.as_mut().poll(cx));
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the peer took no byte of the answer in time",
        )))
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.check(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        self.check(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_shutdown(cx);
        self.check(cx, polled)
    }
}
