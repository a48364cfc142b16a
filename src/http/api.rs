//! The routes of BRIEF 8 (HTTP) and what each answers.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tower_http::set_header::SetResponseHeaderLayer;

use super::Shared;
use super::conn::Peer;
use crate::cell::heartbeat::Heartbeat;
use crate::error::Error;

/// A heartbeat body is a few fields; nothing posted here needs more.
const BODY_LIMIT: usize = 16 * 1024;
/// How long a heartbeat's body may take to arrive.
const BODY_TIME: Duration = Duration::from_secs(10);
/// One cell's events in one answer, at most (the rest: `since` again).
const EVENTS_LIMIT: usize = 16 * 1024 * 1024;

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
/// The page runs only its own script and style: text an agent wrote can
/// never run, even if it reached the page as markup.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

type S = State<Arc<Shared>>;

pub(super) fn router(shared: Arc<Shared>) -> Router {
    let fixed =
        |name, value| SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value));
    Router::new()
        .route("/", get(index))
        .route("/assets/app.js", get(app_js))
        .route("/assets/app.css", get(app_css))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/cells", get(cells))
        .route("/api/cells/{cell}", get(cell))
        .route("/api/cells/{cell}/events", get(cell_events))
        .route("/api/events", get(events))
        .route("/api/cells/{cell}/agents/{agent}/{action}", post(act))
        .route("/heartbeat/{cell}/{agent}", post(heartbeat))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(fixed(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(fixed(header::REFERRER_POLICY, "no-referrer"))
        .layer(fixed(header::X_FRAME_OPTIONS, "DENY"))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .with_state(shared)
}

/// An answer that is not a success: its status and one sentence, as JSON.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, axum::Json(json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The CLI's errors, with the status each means over HTTP.
impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let status = match &e {
            Error::Usage(_) | Error::BadCellId(_) | Error::InvalidAgentName { .. } => {
                StatusCode::BAD_REQUEST
            }
            Error::CellNotFound { .. } => StatusCode::NOT_FOUND,
            Error::AmbiguousCell { .. } | Error::Refused { .. } => StatusCode::CONFLICT,
            Error::Read { .. } | Error::Json { .. } | Error::InvalidManifest { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Error::RootMissing(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

type Answer<T> = std::result::Result<T, ApiError>;

/// Runs file work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::error::Result<T> + Send + 'static,
) -> Answer<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the request's work failed: {e}"),
        )),
    }
}

impl Shared {
    /// Lets the operator through, or says why not. Failures count against
    /// the caller's address, so tokens cannot be guessed at speed.
    fn operator(&self, headers: &HeaderMap, peer: IpAddr) -> Answer<()> {
        let now = Instant::now();
        match super::auth::bearer(authorization(headers)) {
            None => {
                self.failed(peer, now)?;
                Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "no token: send the operator's as `Authorization: Bearer <token>`",
                ))
            }
            Some(token) if !self.operator.verify(token) => {
                self.failed(peer, now)?;
                Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "this token is not the operator's",
                ))
            }
            Some(_) if !self.operators.allow("operator", now) => Err(too_many()),
            Some(_) => Ok(()),
        }
    }

    fn failed(&self, peer: IpAddr, now: Instant) -> Answer<()> {
        if self.failures.allow(&failure_key(peer), now) {
            Ok(())
        } else {
            Err(too_many())
        }
    }
}

/// Whose failures count together: every loopback address is one caller
/// (any process of the host may send from all of 127.0.0.0/8), and an
/// IPv6 caller is its /64 (one host holds a whole one).
fn failure_key(peer: IpAddr) -> String {
    let peer = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
        v4 => v4,
    };
    match peer {
        ip if ip.is_loopback() => "loopback".to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        IpAddr::V4(v4) => v4.to_string(),
    }
}

fn too_many() -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too many requests: slow down",
    )
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    let mut response = ([(header::CONTENT_TYPE, kind)], body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// Alive: the server answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: the root can be read and its event streams are followed.
async fn readyz(State(s): S) -> Response {
    let shared = s.clone();
    let root = blocking(move || shared.ctx.root.open().map(|_| ())).await;
    let following = s.following.load(Ordering::Relaxed);
    let daemon = crate::daemon::lock::holder(&s.ctx.root.path);
    let ready = root.is_ok() && following;
    let body = json!({
        "ready": ready,
        "root": s.ctx.root.path,
        "root_readable": root.is_ok(),
        "events_followed": following,
        "daemon_pid": daemon,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics(
    State(s): S,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
) -> Answer<Response> {
    s.operator(&headers, peer.ip())?;
    let text = blocking(move || crate::commands::metrics::text(&s.ctx)).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// `status --json` of every cell.
async fn cells(
    State(s): S,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
) -> Answer<axum::Json<Value>> {
    s.operator(&headers, peer.ip())?;
    let snapshot = blocking(move || crate::commands::status::snapshot(&s.ctx, None)).await?;
    Ok(axum::Json(snapshot))
}

/// One cell, as it stands in `/api/cells`.
async fn cell(
    State(s): S,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    Path(cell): Path<String>,
) -> Answer<axum::Json<Value>> {
    s.operator(&headers, peer.ip())?;
    let mut snapshot =
        blocking(move || crate::commands::status::snapshot(&s.ctx, Some(&cell))).await?;
    let one = snapshot["cells"]
        .as_array_mut()
        .and_then(|c| c.pop())
        .unwrap_or(Value::Null);
    Ok(axum::Json(one))
}

#[derive(Debug, Deserialize)]
struct Since {
    since: Option<String>,
}

/// One cell's events (JSON lines), since `since` (as `events --since`).
async fn cell_events(
    State(s): S,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    Path(cell): Path<String>,
    Query(q): Query<Since>,
) -> Answer<Response> {
    s.operator(&headers, peer.ip())?;
    let (body, cut) = blocking(move || {
        let since = q
            .since
            .as_deref()
            .map(|t| crate::commands::events::parse_since(t, chrono::Utc::now()))
            .transpose()?;
        let cell = s.ctx.root.resolve(&cell)?;
        let body = Arc::new(std::sync::Mutex::new((Vec::<u8>::new(), false)));
        let sink = body.clone();
        let result = crate::commands::events::cell_lines(&cell, since, move |line| {
            let mut held = sink.lock().map_err(|_| std::io::Error::other("poisoned"))?;
            if held.0.len() + line.len() + 1 > EVENTS_LIMIT {
                held.1 = true;
                return Err(std::io::Error::other("enough"));
            }
            held.0.extend_from_slice(line.as_bytes());
            held.0.push(b'\n');
            Ok(())
        });
        let held = std::mem::take(&mut *body.lock().map_err(|_| Error::Usage("poisoned".into()))?);
        match result {
            Err(_) if held.1 => Ok(held),
            // The stream is the cell's (its agents write it): what stops
            // the reading (a FIFO, a symlink) is a refusal, not ours.
            Err(Error::Io(io)) => {
                let why = io.to_string();
                let why = why
                    .strip_prefix(&format!("cell {}: ", cell.id))
                    .unwrap_or(&why);
                Err(Error::refused(&cell.id, "read its events", why))
            }
            Err(e) => Err(e),
            Ok(()) => Ok(held),
        }
    })
    .await?;
    let mut response = ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response();
    if cut {
        // More than one answer holds: ask again from the last line's `ts`.
        response
            .headers_mut()
            .insert("x-lazarus-truncated", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Held while an event-stream client is connected.
struct StreamSlot(Arc<Shared>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Server-Sent Events: every new event line of every cell, as it is
/// written (the follower of `events --follow`).
async fn events(
    State(s): S,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
) -> Answer<Response> {
    s.operator(&headers, peer.ip())?;
    if s.streams.fetch_add(1, Ordering::Relaxed) >= super::MOST_STREAMS {
        s.streams.fetch_sub(1, Ordering::Relaxed);
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many event-stream clients",
        ));
    }
    let slot = StreamSlot(s.clone());
    let lines = BroadcastStream::new(s.events.subscribe()).map(move |item| {
        let _held = &slot;
        Ok::<_, Infallible>(match item {
            // A line is one JSON text; a CR (JSON whitespace) would end
            // the SSE field early.
            Ok(line) => SseEvent::default().data(line.replace('\r', "")),
            Err(BroadcastStreamRecvError::Lagged(n)) => {
                SseEvent::default().comment(format!("lagged: {n} event lines not sent"))
            }
        })
    });
    // A first comment, so a client knows at once that it is connected.
    let hello = tokio_stream::once(Ok(SseEvent::default().comment("connected")));
    Ok(Sse::new(hello.chain(lines))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// `revive`, `approve`, `deny`, as the commands of the same names.
async fn act(
    State(s): S,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    Path((cell, agent, action)): Path<(String, String, String)>,
) -> Answer<(StatusCode, axum::Json<Value>)> {
    s.operator(&headers, peer.ip())?;
    let by = format!("http@{}", peer.ip());
    let posted = blocking(move || {
        use crate::commands::revive;
        let posted = match action.as_str() {
            "revive" => revive::request_revival(&s.ctx, &cell, &agent, &by)?,
            "approve" => revive::answer(&s.ctx, &cell, &agent, true, &by)?,
            "deny" => revive::answer(&s.ctx, &cell, &agent, false, &by)?,
            other => {
                return Err(Error::Usage(format!(
                    "{:?} is not an action: revive, approve or deny",
                    crate::text::escape(other)
                )));
            }
        };
        let daemon = crate::daemon::lock::holder(&s.ctx.root.path)
            .filter(|pid| posted.records.claimed_by() == Some(*pid));
        Ok(json!({
            "cell": posted.cell.id,
            "agent": agent,
            "action": action,
            "done": posted.what,
            "request": posted.file,
            "daemon_pid": daemon,
        }))
    })
    .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(posted)))
}

/// The seed's heartbeat body: the fields of a heartbeat file (BRIEF 4) an
/// agent may set. Its time is the server's: a beat is seen now.
#[derive(Debug, Default, Deserialize)]
struct Beat {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    cycle: Option<u64>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    pid: Option<i64>,
}

/// `POST /heartbeat/{cell}/{agent}` with that agent's own token: writes its
/// heartbeat file atomically, exactly as `lazarus-pit heartbeat` does.
async fn heartbeat(
    State(s): S,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    Path((cell, agent)): Path<(String, String)>,
    body: axum::body::Body,
) -> Answer<axum::Json<Value>> {
    // What can be checked without the cell, first: the token is bound to
    // the full UUID and the name, so nothing about cells is told to a
    // caller without one.
    let uuid = uuid::Uuid::parse_str(&cell)
        .ok()
        .map(|u| u.hyphenated().to_string())
        .filter(|u| *u == cell)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "the cell is its full UUID here (LAZARUS_CELL_UUID)",
            )
        })?;
    crate::commands::check_agent_name(&agent)?;
    let now = Instant::now();
    match super::auth::bearer(authorization(&headers)) {
        None => {
            s.failed(peer.ip(), now)?;
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "no token: send the agent's LAZARUS_HEARTBEAT_TOKEN as `Authorization: Bearer <token>`",
            ));
        }
        Some(token) if !s.secret.verify_agent(&uuid, &agent, token) => {
            s.failed(peer.ip(), now)?;
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("this token is not agent {agent:?}'s of cell {uuid}"),
            ));
        }
        Some(_) => {}
    }
    if !s.agents.allow(&format!("{uuid}/{agent}"), now) {
        return Err(too_many());
    }
    // Read only for a caller with the agent's token, and within a time:
    // a body sent a byte at a time must not hold the connection. One said
    // to be too long is refused unread.
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a heartbeat body is at most {BODY_LIMIT} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(too_large());
    }
    let body = match tokio::time::timeout(BODY_TIME, axum::body::to_bytes(body, BODY_LIMIT)).await {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => {
            let e = e.into_inner();
            return Err(
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    too_large()
                } else {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("the body was not read whole: {e}"),
                    )
                },
            );
        }
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("the body did not arrive within {}s", BODY_TIME.as_secs()),
            ));
        }
    };
    let beat: Beat = if body.iter().all(u8::is_ascii_whitespace) {
        Beat::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body is not a heartbeat (a JSON object of status, cycle, model, pid): {e}"
                ),
            )
        })?
    };
    let answer = blocking(move || {
        let cell = s.ctx.root.resolve(&uuid)?;
        let manifest = cell.read_manifest()?;
        let Some(found) = manifest.agent(&agent) else {
            return Err(crate::commands::revive::no_such_agent(
                &cell,
                &manifest,
                &agent,
                "write a heartbeat for",
            ));
        };
        let settings =
            crate::cell::settings::AgentSettings::resolve(&s.ctx.config.cells, &manifest, found);
        let timestamp = (crate::commands::status::unix_now() * 1000.0).round() / 1000.0;
        let mut hb = Heartbeat {
            agent: Some(agent.clone()),
            pid: beat.pid,
            timestamp,
            cycle: beat.cycle,
            model: beat.model,
            status: beat.status,
            cell_uuid: None,
        };
        // What stops the write is the cell's state (a missing or symlinked
        // heartbeats directory), not the server's: a refusal, 409.
        crate::commands::heartbeat::write_as_owner(&cell, &agent, &mut hb).map_err(|e| match e {
            Error::Io(io) => Error::refused(&cell.id, format!("write the heartbeat of {agent:?}"), io.to_string()),
            other => other,
        })?;
        Ok(json!({
            "status": "ok",
            "agent_id": agent,
            "cell": cell.id,
            "timestamp": timestamp,
            // Beat again well before the deadline.
            "next_heartbeat": (settings.stale_threshold.as_secs_f64() / 2.0 * 1000.0).round() / 1000.0,
        }))
    })
    .await?;
    Ok(axum::Json(answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_of_loopback_count_as_one_caller_and_ipv6_by_its_64() {
        let key = |s: &str| failure_key(s.parse().expect("ip"));
        assert_eq!(key("127.0.0.1"), key("127.0.0.2"));
        assert_eq!(key("127.9.9.9"), key("::1"));
        assert_eq!(key("::ffff:127.0.0.3"), "loopback");
        assert_eq!(key("::ffff:10.0.0.1"), "10.0.0.1");
        assert_ne!(key("10.0.0.1"), key("10.0.0.2"));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }
}
