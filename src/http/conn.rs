//! The accept loop: how many connections, and how long each may take to
//! say what it wants.
//!
//! With `[http] listen` the server shares the daemon's descriptor table,
//! and on loopback every agent of the host can reach it. So a connection
//! holds a permit for its life and, when none is left, the one connection
//! just accepted waits for a place (see [`serve`]) and the rest queue in
//! the kernel instead of taking descriptors the supervisor needs for
//! heartbeat files. And a connection that does not
//! send a request's headers within [`HEADER_TIME`] (the first request, or
//! the next on a kept-alive one), or whose socket takes none of an answer
//! for [`WRITE_TIME`] (a caller that pipelines requests and never reads, a
//! stalled event-stream client), is closed: no caller can hold the permits
//! by saying nothing or by reading nothing.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
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
///
/// When every place is taken, a new connection takes the place of the one
/// that has been between requests the longest (as nginx reuses idle
/// keep-alive connections): a caller that holds places by asking a little
/// now and then cannot lock everyone else out. A connection with a request
/// under way (an event stream, a heartbeat being written) is never closed
/// for another.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    most: usize,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let most = most.max(1);
    let permits = Arc::new(Semaphore::new(most));
    let open = Arc::new(Open::default());
    let (closing, closed) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
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
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                open.make_room();
                tokio::select! {
                    permit = permits.clone().acquire_owned() => match permit {
                        Ok(p) => p,
                        Err(_) => break, // never closed
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let state = open.add();
        let service = {
            let (router, state) = (router.clone(), state.clone());
            tower::service_fn(move |mut req: axum::http::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(Peer(peer)));
                let busy = Busy::new(state.clone());
                let router = router.clone();
                async move {
                    let response = router.oneshot(req).await?;
                    // Busy until the whole answer is sent.
                    Ok::<_, std::convert::Infallible>(response.map(|body| {
                        axum::body::Body::new(http_body_util::BodyExt::map_frame(body, move |f| {
                            let _ = &busy;
                            f
                        }))
                    }))
                }
            })
        };
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIME)
            .max_buf_size(READ_BUFFER)
            .max_header_size(HEAD_LIMIT)
            .serve_connection(
                TokioIo::new(WriteDeadline::new(stream, WRITE_TIME)),
                TowerToHyperService::new(service),
            );
        let (open, mut closed) = (open.clone(), closed.clone());
        tokio::spawn(async move {
            tokio::pin!(conn);
            // A peer that goes away or times out is no error of ours.
            tokio::select! {
                _ = conn.as_mut() => {}
                () = state.evict.notified() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
                () = async {
                    let _ = closed.wait_for(|c| *c).await;
                } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            open.remove(state.id);
            drop(permit);
        });
    }
    drop(listener);
    let _ = closing.send(true);
    // Every place given back: every connection has ended.
    let _ = permits.acquire_many(most as u32).await;
}

/// The connections open, for finding one to close when all places are
/// taken.
#[derive(Default)]
struct Open {
    next: std::sync::atomic::AtomicU64,
    conns: std::sync::Mutex<std::collections::HashMap<u64, Arc<ConnState>>>,
}

struct ConnState {
    id: u64,
    /// Requests whose answer is not yet wholly sent.
    busy: AtomicUsize,
    /// When it was last busy (or opened), in ms since `EPOCH`.
    idle_since: AtomicU64,
    evict: tokio::sync::Notify,
    evicted: AtomicBool,
}

static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

fn millis() -> u64 {
    u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Open {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, Arc<ConnState>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self) -> Arc<ConnState> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            id,
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(millis()),
            evict: tokio::sync::Notify::new(),
            evicted: AtomicBool::new(false),
        });
        self.lock().insert(id, state.clone());
        state
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Closes the connection between requests the longest, if there is one.
    fn make_room(&self) {
        let conns = self.lock();
        let idlest = conns
            .values()
            .filter(|c| c.busy.load(Ordering::Acquire) == 0 && !c.evicted.load(Ordering::Relaxed))
            .min_by_key(|c| c.idle_since.load(Ordering::Relaxed));
        if let Some(c) = idlest {
            c.evicted.store(true, Ordering::Relaxed);
            c.evict.notify_one();
        }
    }
}

/// A request under way on its connection, until its answer is dropped.
struct Busy(Arc<ConnState>);

impl Busy {
    fn new(state: Arc<ConnState>) -> Busy {
        state.busy.fetch_add(1, Ordering::AcqRel);
        Busy(state)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.idle_since.store(millis(), Ordering::Relaxed);
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
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
