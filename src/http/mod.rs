//! The web face (BRIEF 8, HTTP): the JSON API over the root, a live event
//! stream, Prometheus metrics, probes, HTTP heartbeats and the dashboard.
//!
//! It is a client of the same files every command reads — `status --json`
//! ([`crate::commands::status::snapshot`]), the events follower, the
//! daemon's inbox for revive/approve/deny — so it runs as `lazarus-pit
//! serve` or, with `[http] listen`, on a thread of the daemon, and says
//! nothing the CLI would not. Blocking file work runs on the blocking pool.
//!
//! Access: the operator's bearer token for everything under `/api` and for
//! `/metrics` (an agent on the same host reaches loopback too, and must not
//! read other cells through it); an agent's own token for its heartbeat
//! POST; `/`, the assets, `/healthz` and `/readyz` carry no data. No
//! cookies (no CSRF surface), no CORS headers, body size and rate limits.

mod api;
pub mod auth;
mod conn;
mod limit;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::commands::Context;
use crate::config::Config;
use crate::error::{Error, Result};
use auth::{OperatorToken, Secret};
use limit::{Limiter, Rate};

/// `serve`'s address when neither `--listen` nor `[http] listen` names one.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7600";
/// The most event-stream clients at once; more get 503.
const MOST_STREAMS: usize = 4096;
/// The most connections open at once: a quarter of the descriptors this
/// process may have (the rest stay the daemon's, when it serves), and
/// never more than the event streams allowed plus some for requests.
fn most_connections() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft);
    usize::try_from(soft / 4)
        .unwrap_or(usize::MAX)
        .clamp(64, MOST_STREAMS + 256)
}

/// How long a stopping `serve` lets requests under way finish.
const DRAIN: Duration = Duration::from_secs(1);
/// Event lines held for a slow stream client before it is told it lagged.
const STREAM_BACKLOG: usize = 4096;
/// The longest event line the stream carries. An agent writes its own
/// stream, and the backlog holds lines by count: 4,096 of 16 KiB are 64 MiB
/// at most (a daemon's line is well under 1 KiB).
const STREAM_LINE: usize = 16 * 1024;

/// What every handler shares.
pub(crate) struct Shared {
    ctx: Context,
    operator: OperatorToken,
    secret: Secret,
    /// Per agent, per operator, and per address failing to authenticate.
    agents: Limiter,
    operators: Limiter,
    failures: Limiter,
    events: broadcast::Sender<Arc<str>>,
    streams: AtomicUsize,
    /// Whether the events follower runs (for `/readyz`).
    following: AtomicBool,
}

/// `lazarus-pit serve [--listen ADDR]`: serves until SIGTERM or SIGINT.
pub fn serve(ctx: Context, listen: Option<&str>) -> Result<std::process::ExitCode> {
    let listen = listen
        .map(str::to_string)
        .or_else(|| ctx.config.http.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let listener = bind(&listen)?;
    // A connection per dashboard and event-stream client, and a watch
    // descriptor per cell.
    crate::daemon::process::raise_nofile_limit();
    let shared = shared(ctx)?;
    announce(&shared, &listener);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let server = run(shared, listener, async move {
            let mut stopped = stopped;
            let _ = stopped.changed().await;
        });
        tokio::pin!(server);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = &mut server => return result,
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        // Requests under way finish; an event stream never does, so the
        // drain is bounded.
        let _ = stop.send(true);
        match tokio::time::timeout(DRAIN, server).await {
            Ok(result) => result,
            Err(_) => Ok(()),
        }
    })?;
    runtime.shutdown_timeout(Duration::from_millis(500));
    Ok(std::process::ExitCode::SUCCESS)
}

/// `[http] listen` in the daemon: binds now (a taken port fails the start,
/// loudly, as systemd expects), then serves on a thread of its own with
/// its own runtime, so no request ever delays the supervisor's loop.
pub fn start_in_daemon(config: &Config, root: &std::path::Path, listen: &str) -> Result<()> {
    let listener = bind(listen)?;
    let ctx = Context {
        config: config.clone(),
        root: crate::cell::Root::new(root),
        json: true,
    };
    let shared = shared(ctx)?;
    announce(&shared, &listener);
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("http-worker")
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("http: cannot start its runtime: {e}");
                    return;
                }
            };
            // It ends with the daemon's process.
            let result = runtime.block_on(run(shared, listener, std::future::pending()));
            if let Err(e) = result {
                tracing::error!("http: the server stopped: {e}");
            }
        })?;
    Ok(())
}

/// Serves the routes on `listener` until `shutdown`.
async fn run(
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    conn::serve(listener, api::router(shared), most_connections(), shutdown).await;
    Ok(())
}

fn bind(listen: &str) -> Result<std::net::TcpListener> {
    let addr: SocketAddr = listen.parse().map_err(|_| {
        Error::Usage(format!(
            "listen address {listen:?} (--listen or [http] listen): not an IP address and port (such as {DEFAULT_LISTEN})"
        ))
    })?;
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr}: {e}"),
        ))
    })?;
    listener.set_nonblocking(true)?;
    if !addr.ip().is_loopback() {
        tracing::warn!(
            "http: listening on {addr}, beyond loopback, without TLS: tokens cross the network \
             in clear unless a TLS proxy is in front (see the README)"
        );
    }
    Ok(listener)
}

fn shared(ctx: Context) -> Result<Arc<Shared>> {
    let operator = OperatorToken::load(&ctx.config.http, &ctx.config.daemon)?;
    let secret = Secret::load_or_create(&ctx.config.daemon)?;
    let (events, _) = broadcast::channel(STREAM_BACKLOG);
    let shared = Arc::new(Shared {
        ctx,
        operator,
        secret,
        agents: Limiter::new(Rate {
            per_sec: 20.0,
            burst: 40.0,
        }),
        // The operator is trusted: this only stops a runaway script from
        // taking every core (a dashboard asks a few times a second).
        operators: Limiter::new(Rate {
            per_sec: 1000.0,
            burst: 2000.0,
        }),
        failures: Limiter::new(Rate {
            per_sec: 5.0,
            burst: 20.0,
        }),
        events,
        streams: AtomicUsize::new(0),
        following: AtomicBool::new(false),
    });
    follow(shared.clone());
    Ok(shared)
}

/// One follower of every cell's stream for all event-stream clients (the
/// same as `events --follow`), on a thread: it blocks on inotify.
fn follow(shared: Arc<Shared>) {
    let spawned = std::thread::Builder::new()
        .name("http-events".into())
        .spawn(move || {
            // Said once per distinct error: a missing root is retried each
            // second, quietly.
            let mut said = String::new();
            loop {
                shared.following.store(true, Ordering::Relaxed);
                let tx = shared.events.clone();
                let result =
                    crate::commands::events::follow_lines(&shared.ctx, STREAM_LINE, move |line| {
                        // No receiver is not an error: clients come and go.
                        let _ = tx.send(Arc::from(line));
                        Ok(())
                    });
                shared.following.store(false, Ordering::Relaxed);
                if let Err(e) = result
                    && e.to_string() != said
                {
                    said = e.to_string();
                    tracing::warn!(
                        "http: following the event streams: {said}; trying again every second"
                    );
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
    if let Err(e) = spawned {
        tracing::error!("http: cannot follow the event streams: {e}");
    }
}

/// Says where the face is, and where its token is; on a terminal, the
/// dashboard's address with the token in its fragment (never sent to the
/// server, never in its logs).
fn announce(shared: &Shared, listener: &std::net::TcpListener) {
    use std::io::IsTerminal;
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    eprintln!(
        "lazarus-pit: serving http://{addr}/ over {} (operator token in {})",
        shared.ctx.root.path.display(),
        shared.operator.file.display()
    );
    if std::io::stderr().is_terminal() {
        eprintln!(
            "lazarus-pit: dashboard: http://{addr}/#token={}",
            shared.operator.reveal()
        );
    }
}
