//! The web face (BRIEF 8, HTTP): `serve` and `[http] listen`, the JSON
//! API and its tokens, HTTP heartbeats, the event stream and metrics.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Daemon, Env};
use crate::web::{EventStream, get, post};

const WAIT: Duration = Duration::from_secs(20);

const CONFIG: &str = "\
[cells]
heartbeat_stale_threshold = 1
resurrect_after = 300
kill_grace = 0.5
poll_interval = 5
";

fn env() -> Env {
    let env = Env::new();
    env.config(CONFIG);
    env
}

/// `lazarus-pit serve` on a free loopback port: the server and its address.
fn serve(env: &Env) -> (Daemon, String) {
    let server = env.spawn_daemon_cmd(env.command(&["serve", "--listen", "127.0.0.1:0"]));
    server.wait_log("serving http://", WAIT);
    let addr = address(&server.log());
    (server, addr)
}

/// The `host:port` of the "serving http://…/" line.
fn address(log: &str) -> String {
    log.lines()
        .find_map(|l| l.split("serving http://").nth(1))
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no address in {log}"))
        .to_string()
}

/// The operator's token `serve` made in the state directory.
fn operator_token(env: &Env) -> String {
    std::fs::read_to_string(env.state.join("http-token"))
        .expect("token file")
        .trim()
        .to_string()
}

/// An agent that saves the token it was given, then only waits (it never
/// beats by itself).
fn token_saver(name: &str) -> Value {
    json!({
        "name": name,
        "command": ["/bin/sh", "-c",
            format!("printf %s \"$LAZARUS_HEARTBEAT_TOKEN\" > {name}.token; exec sleep 300")],
    })
}

fn saved_token(env: &Env, uuid: &str, agent: &str) -> String {
    let file = env
        .cell(uuid)
        .join("workspace")
        .join(format!("{agent}.token"));
    crate::harness::wait_for("the agent's token", WAIT, || {
        std::fs::read_to_string(&file).is_ok_and(|t| t.len() == 64)
    });
    std::fs::read_to_string(&file).expect("token")
}

#[test]
fn operator_endpoints_answer_only_the_operators_token() {
    let env = env();
    let uuid = env.create(&["--name", "web", "--agent", "a"]);
    let (_server, addr) = serve(&env);
    let token = operator_token(&env);
    // Probes and the page carry no data: open.
    assert_eq!(get(&addr, "/healthz", None).status, 200);
    let ready = get(&addr, "/readyz", None);
    assert_eq!(ready.status, 200, "{ready:#?}");
    assert_eq!(ready.json()["ready"], true);
    for path in [
        "/api/cells",
        &format!("/api/cells/{uuid}"),
        &format!("/api/cells/{uuid}/events"),
        "/api/events",
        "/metrics",
    ] {
        let none = get(&addr, path, None);
        assert_eq!(none.status, 401, "{path}: {none:#?}");
        assert_eq!(none.header("www-authenticate"), Some("Bearer"));
        assert!(none.json()["error"].is_string(), "{none:#?}");
        let wrong = get(&addr, path, Some("0123456789abcdef0123456789abcdef"));
        assert_eq!(wrong.status, 403, "{path}: {wrong:#?}");
    }
    // The facts of `status --json`.
    let cells = get(&addr, "/api/cells", Some(&token));
    assert_eq!(cells.status, 200, "{cells:#?}");
    assert_eq!(cells.header("cache-control"), Some("no-store"));
    let body = cells.json();
    let status = env.run(&["status", "--json"]).reported().json();
    assert_eq!(body["cells"][0]["uuid"], status["cells"][0]["uuid"]);
    assert_eq!(body["summary"], status["summary"]);
    assert_eq!(body["cells"][0]["agents"][0]["name"], "a");
    // One cell, by prefix or name.
    for id in [&uuid[..8], "web"] {
        let one = get(&addr, &format!("/api/cells/{id}"), Some(&token));
        assert_eq!(one.status, 200, "{one:#?}");
        assert_eq!(one.json()["uuid"], uuid.as_str());
    }
    let missing = get(&addr, "/api/cells/ffffffff", Some(&token));
    assert_eq!(missing.status, 404, "{missing:#?}");
    // Its events, one JSON object per line, and `since`.
    let events = get(&addr, &format!("/api/cells/{uuid}/events"), Some(&token));
    assert_eq!(events.status, 200);
    let names: Vec<String> = events
        .body
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line")["event"].to_string())
        .collect();
    assert!(names.contains(&"\"cell_created\"".to_string()), "{names:?}");
    let later = get(
        &addr,
        &format!("/api/cells/{uuid}/events?since=2999-01-01T00:00:00Z"),
        Some(&token),
    );
    assert_eq!((later.status, later.body.as_str()), (200, ""));
    let bad = get(
        &addr,
        &format!("/api/cells/{uuid}/events?since=soon"),
        Some(&token),
    );
    assert_eq!(bad.status, 400, "{bad:#?}");
    // The Prometheus text of `metrics`.
    let metrics = get(&addr, "/metrics", Some(&token));
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain"))
    );
    assert!(metrics.body.contains("lazarus_"), "{}", metrics.body);
    // Nothing else answers.
    assert_eq!(get(&addr, "/api/nothing", Some(&token)).status, 404);
    // A request's head is at most 32 KiB: what a caller without a token
    // can make the server hold is small.
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        let big = "a".repeat(40_000);
        let _ = write!(s, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: {big}\r\n\r\n");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    }
    // A path in a cell's place names no cell.
    assert_eq!(
        get(&addr, "/api/cells/..%2f..%2fetc", Some(&token)).status,
        404
    );
    // An agent's FIFO in place of its stream: a refusal, said, not hung on.
    let log = env.cell(&uuid).join("logs/events.jsonl");
    std::fs::remove_file(&log).expect("rm");
    nix::unistd::mkfifo(&log, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let fifo = get(&addr, &format!("/api/cells/{uuid}/events"), Some(&token));
    assert_eq!(fifo.status, 409, "{fifo:#?}");
    assert!(
        fifo.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("not a regular file")),
        "{fifo:#?}"
    );
}

#[test]
fn a_heartbeat_post_needs_that_agents_own_token() {
    let env = env();
    let uuid = env.create_from(&json!({"agents": [token_saver("a"), token_saver("b")]}));
    let _daemon = env.daemon(&[]);
    let (_server, addr) = serve(&env);
    let a = saved_token(&env, &uuid, "a");
    let b = saved_token(&env, &uuid, "b");
    assert_ne!(a, b);
    let file = env.cell(&uuid).join(".lazarus/heartbeats/a.json");
    let path = format!("/heartbeat/{uuid}/a");
    let body = r#"{"status": "from http", "cycle": 3, "model": "m"}"#;
    // No token, another agent's, the operator's: refused, nothing written.
    assert_eq!(post(&addr, &path, None, Some(body)).status, 401);
    assert_eq!(post(&addr, &path, Some(&b), Some(body)).status, 403);
    assert_eq!(
        post(&addr, &path, Some(&operator_token(&env)), Some(body)).status,
        403
    );
    assert!(!file.exists(), "a refused beat wrote {}", file.display());
    // A prefix is not the cell here: the token is bound to the full UUID.
    assert_eq!(
        post(
            &addr,
            &format!("/heartbeat/{}/a", &uuid[..8]),
            Some(&a),
            Some(body)
        )
        .status,
        400
    );
    // Its own: written as `lazarus-pit heartbeat` writes it, and the
    // daemon takes it (stale → recovered).
    let ok = post(&addr, &path, Some(&a), Some(body));
    assert_eq!(ok.status, 200, "{ok:#?}");
    let answer = ok.json();
    assert_eq!(answer["status"], "ok");
    assert_eq!(answer["agent_id"], "a");
    assert!(answer["next_heartbeat"].as_f64().is_some_and(|s| s > 0.0));
    let written = crate::harness::read_json(&file);
    assert_eq!(written["status"], "from http");
    assert_eq!(written["cycle"], 3);
    assert_eq!(written["cell_uuid"], uuid.as_str());
    // Silent past its threshold it is stale; a beat over HTTP brings it
    // back.
    let stale = env.wait_event(&uuid, "agent_stale", 1, WAIT);
    assert_eq!(stale[0]["agent"], "a");
    assert_eq!(post(&addr, &path, Some(&a), Some(body)).status, 200);
    let recovered = env.wait_event(&uuid, "agent_recovered", 1, WAIT);
    assert_eq!(recovered[0]["agent"], "a");
    // Bad bodies and names are refused, and an empty body is a plain beat.
    assert_eq!(post(&addr, &path, Some(&a), Some("[1]")).status, 400);
    assert_eq!(
        post(&addr, &format!("/heartbeat/{uuid}/..%2Fa"), Some(&a), None).status,
        400
    );
    assert_eq!(post(&addr, &path, Some(&a), None).status, 200);
    let huge = format!(r#"{{"status": "{}"}}"#, "x".repeat(20_000));
    assert_eq!(post(&addr, &path, Some(&a), Some(&huge)).status, 413);
    // Without the token, it is not even read.
    assert_eq!(post(&addr, &path, None, Some(&huge)).status, 401);
    // Sent in chunks, it is cut at the limit; one that ends early is
    // no heartbeat.
    let chunked = format!("{:x}\r\n{huge}\r\n0\r\n\r\n", huge.len());
    let raw = |head: &str, body: &str, cut: bool| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {a}\r\n{head}\r\n{body}"
        )
        .expect("write");
        if cut {
            s.shutdown(std::net::Shutdown::Write).expect("shutdown");
        }
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
    };
    let answer = raw("Transfer-Encoding: chunked\r\n", &chunked, false);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let answer = raw("Content-Length: 100\r\n", "{}", true);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}

#[test]
fn operators_revive_approve_and_deny_over_http() {
    let env = env();
    let uuid = env.create_from(&json!({"revive_policy": "ask", "agents": [
        {"name": "asker", "command": ["/bin/sh", "-c", "exit 3"]},
        {"name": "denied", "command": ["/bin/sh", "-c", "exit 4"]},
    ]}));
    let _daemon = env.daemon(&[]);
    let (_server, addr) = serve(&env);
    let token = operator_token(&env);
    env.wait_event(&uuid, "revive_requested", 2, WAIT);
    // The question is open once the daemon's records say so.
    crate::harness::wait_for("both awaiting approval", WAIT, || {
        let status = env.run(&["status", "--json"]).reported().json();
        status["pending_approvals"]
            .as_array()
            .is_some_and(|p| p.len() == 2)
    });
    let act = |agent: &str, action: &str, token: Option<&str>| {
        post(
            &addr,
            &format!("/api/cells/{uuid}/agents/{agent}/{action}"),
            token,
            None,
        )
    };
    assert_eq!(act("asker", "approve", None).status, 401);
    assert_eq!(
        act("asker", "approve", Some("not-the-token-at-all")).status,
        403
    );
    let approved = act("asker", "approve", Some(&token));
    assert_eq!(approved.status, 202, "{approved:#?}");
    assert_eq!(approved.json()["cell"], uuid.as_str());
    let revived = env.wait_event(&uuid, "agent_revived", 1, WAIT);
    assert_eq!(revived[0]["agent"], "asker");
    let by = env.events_named(&uuid, "revive_approved");
    assert!(
        by[0]["by"].as_str().is_some_and(|b| b.starts_with("http@")),
        "{by:?}"
    );
    let denied = act("denied", "deny", Some(&token));
    assert_eq!(denied.status, 202, "{denied:#?}");
    env.wait_event(&uuid, "revive_denied", 1, WAIT);
    // The CLI's words for the CLI's mistakes, with an HTTP status.
    let none = act("nobody", "approve", Some(&token));
    assert_eq!(none.status, 409, "{none:#?}");
    assert!(
        none.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("no agent of that name"))
    );
    assert_eq!(act("asker", "explode", Some(&token)).status, 400);
}

#[test]
fn the_event_stream_carries_new_lines_of_every_cell() {
    let env = env();
    env.create(&[]);
    let (server, addr) = serve(&env);
    let token = operator_token(&env);
    let (status, mut stream) = EventStream::open(&addr, &token);
    assert_eq!(status, 200);
    // A cell made after the stream opened: its first line arrives.
    let uuid = env.create(&["--name", "late"]);
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < WAIT {
        let Some(data) = stream.next_data(Duration::from_secs(1)) else {
            continue;
        };
        let event: Value = serde_json::from_str(&data).expect("JSON data");
        seen.push(event.clone());
        if event["event"] == "cell_created" && event["cell"] == uuid.as_str() {
            // A stream never ends by itself: SIGTERM still stops the
            // server, promptly, with status 0.
            let (status, took) = server.stop(Duration::from_secs(5));
            assert!(status.success(), "{status:?}");
            assert!(took < Duration::from_secs(3), "{took:?}");
            return;
        }
    }
    panic!("no cell_created of {uuid} on the stream: {seen:?}");
}

/// An agent writes its own stream: garbage and overlong lines are left out
/// of the event stream and said in the server's log once, not once per line.
#[test]
fn garbage_in_a_stream_is_said_once_not_per_line() {
    use std::io::Write;
    let env = env();
    let uuid = env.create(&[]);
    let (server, addr) = serve(&env);
    let (status, mut stream) = EventStream::open(&addr, &operator_token(&env));
    assert_eq!(status, 200);
    let log = env.cell(&uuid).join("logs/events.jsonl");
    let first = std::fs::read_to_string(&log).expect("events");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("open");
    for i in 0..200 {
        writeln!(file, "not json {i}").expect("garbage");
    }
    // A claim of a huge cell is said short.
    writeln!(
        file,
        r#"{{"event": "big", "cell": "{}"}}"#,
        "b".repeat(50_000)
    )
    .expect("claim");
    // A whole line, but longer than the stream carries (the backlog holds
    // lines by count).
    let mut long: Value = serde_json::from_str(first.trim()).expect("a line");
    long["pad"] = "x".repeat(20_000).into();
    writeln!(file, "{long}").expect("long line");
    // A `cell` that is not a string names no cell here; a line without
    // one (the seed's format) is given its stream's.
    let mut forged = long.clone();
    forged["pad"] = Value::Null;
    forged["cell"] = json!(["ffffffff-ffff-4fff-8fff-ffffffffffff"]);
    writeln!(file, "{forged}").expect("forged line");
    // Written again with its cell, it would grow past the limit.
    let grows = vec!["1e15"; 1000].join(",");
    writeln!(
        file,
        r#"{{"ts": "2026-04-06T01:00:00Z", "event": "x", "a": [{grows}]}}"#
    )
    .expect("growing line");
    writeln!(
        file,
        r#"{{"ts": "2026-04-06T01:00:00Z", "event": "agent_left", "agent": "claude"}}"#
    )
    .expect("seed line");
    // Then a whole line again: once it is on the stream, the garbage
    // before it has been read.
    file.write_all(first.as_bytes()).expect("line");
    drop(file);
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < WAIT {
        let Some(data) = stream.next_data(Duration::from_secs(1)) else {
            continue;
        };
        assert!(!data.contains("not json"), "garbage on the stream: {data}");
        seen.push(data);
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "the whole lines never came: {seen:?}");
    let unnamed: Value = serde_json::from_str(&seen[0]).expect("JSON");
    assert_eq!(unnamed["event"], "agent_left", "{seen:?}");
    assert_eq!(unnamed["cell"], uuid.as_str());
    assert!(seen[1].len() < 1000, "{}", seen[1]);
    assert!(!seen[1].contains("ffffffff"), "{}", seen[1]);
    // Said before the last line was sent; the log is read by a thread.
    server.wait_log("bytes is over the 16384 the event stream carries", WAIT);
    let log = server.log();
    let claim = log
        .lines()
        .find(|l| l.contains("claims to be of cell"))
        .unwrap_or_else(|| panic!("no note of the claim: {log}"));
    assert!(claim.len() < 400, "{claim}");
    let said = server.log().matches("is corrupt").count();
    assert_eq!(said, 1, "{}", server.log());
}

#[test]
fn the_daemon_serves_with_http_listen_and_hands_agents_their_tokens() {
    let env = Env::new();
    env.config(&format!("{CONFIG}\n[http]\nlisten = \"127.0.0.1:0\"\n"));
    let uuid = env.create_from(&json!({"agents": [token_saver("a")]}));
    let daemon = env.daemon(&[]);
    daemon.wait_log("serving http://", WAIT);
    let addr = address(&daemon.log());
    let a = saved_token(&env, &uuid, "a");
    assert_eq!(get(&addr, "/healthz", None).status, 200);
    let cells = get(&addr, "/api/cells", Some(&operator_token(&env)));
    assert_eq!(cells.status, 200);
    assert_eq!(cells.json()["daemon"]["pid"], daemon.pid());
    let ok = post(&addr, &format!("/heartbeat/{uuid}/a"), Some(&a), None);
    assert_eq!(ok.status, 200, "{ok:#?}");
}

#[test]
fn a_taken_port_or_a_token_file_open_to_others_stops_the_start() {
    let env = env();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    env.run(&["serve", "--listen", &format!("127.0.0.1:{port}")])
        .fails(1, "cannot listen");
    env.run(&["serve", "--listen", "localhost"])
        .fails(2, "not an IP address");
    let file = env.tmp.path().join("token");
    std::fs::write(&file, "0123456789abcdef0123\n").expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    env.config(&format!("[http]\ntoken_file = \"{}\"\n", file.display()));
    env.run(&["serve", "--listen", "127.0.0.1:0"])
        .fails(1, "chmod 600");
}

#[test]
fn the_page_is_served_with_its_own_assets_only() {
    let env = env();
    let (_server, addr) = serve(&env);
    let page = get(&addr, "/", None);
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .is_some_and(|t| t.starts_with("text/html"))
    );
    let csp = page.header("content-security-policy").expect("CSP");
    assert!(
        csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert!(
        !page.body.contains("http://") && !page.body.contains("https://"),
        "no external assets"
    );
    for asset in ["/assets/app.js", "/assets/app.css"] {
        let reply = get(&addr, asset, None);
        assert_eq!(reply.status, 200, "{asset}");
        for sink in [
            ".innerHTML",
            ".outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(!reply.body.contains(sink), "{asset} writes markup ({sink})");
        }
    }
    assert!(page.header("set-cookie").is_none());
}

/// The token the daemon would hand `agent` (from the state directory's
/// secret, which `serve` made).
fn token_of(env: &Env, uuid: &str, agent: &str) -> String {
    lazarus_pit::http::auth::Secret::load_or_create(&lazarus_pit::config::DaemonConfig {
        state_dir: Some(env.state.clone()),
        ..Default::default()
    })
    .expect("secret")
    .agent_token(uuid, agent)
}

#[test]
#[cfg_attr(
    not(as_root),
    ignore = "needs root: the server writes into a cell another user owns"
)]
fn a_heartbeat_post_writes_as_the_cells_owner_and_never_through_a_symlink() {
    use std::os::unix::fs::MetadataExt;
    let env = env();
    let uuid = env.create(&["--agent", "a", "--agent", "b"]);
    let cell = env.cell(&uuid);
    // The cell belongs to nobody, as an isolated cell would.
    let status = std::process::Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&cell)
        .status()
        .expect("chown");
    assert!(status.success());
    let (_server, addr) = serve(&env);
    let a = token_of(&env, &uuid, "a");
    assert_eq!(
        post(&addr, &format!("/heartbeat/{uuid}/a"), Some(&a), None).status,
        200
    );
    let meta = std::fs::metadata(cell.join(".lazarus/heartbeats/a.json")).expect("written");
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "the owner's file");
    // A heartbeats directory swapped for a symlink out of the cell: refused,
    // nothing written where it points.
    let outside = env.tmp.path().join("outside");
    std::fs::create_dir(&outside).expect("outside");
    let beats = cell.join(".lazarus/heartbeats");
    std::fs::rename(&beats, cell.join(".lazarus/old")).expect("move");
    std::os::unix::fs::symlink(&outside, &beats).expect("symlink");
    let refused = post(&addr, &format!("/heartbeat/{uuid}/a"), Some(&a), None);
    assert_eq!(refused.status, 409, "{refused:#?}");
    assert_eq!(std::fs::read_dir(&outside).expect("dir").count(), 0);
    // And a missing one is not made by root in the agent's cell.
    std::fs::remove_file(&beats).expect("unlink");
    let missing = post(&addr, &format!("/heartbeat/{uuid}/a"), Some(&a), None);
    assert_eq!(missing.status, 409, "{missing:#?}");
    assert!(!beats.exists());
}

/// With `[http] listen` the web face shares the daemon's descriptors, and
/// every agent of the host reaches loopback: connections that say nothing
/// must neither take the descriptors the supervisor needs nor hold the face.
#[test]
fn idle_connections_neither_starve_the_daemon_nor_hold_the_face() {
    use std::io::Read;
    let env = Env::new();
    env.config(&format!("{CONFIG}\n[http]\nlisten = \"127.0.0.1:0\"\n"));
    let uuid = env.create_from(&json!({"agents": [{"name": "w"}]}));
    // 128 descriptors at most: the cap on connections (64, the least) must
    // leave the daemon the rest.
    let daemon = env.spawn_daemon_cmd(with_128_files(env.command(&["daemon"])));
    daemon.wait_log("ready:", WAIT);
    daemon.wait_log("serving http://", WAIT);
    let addr = address(&daemon.log());
    let sock: std::net::SocketAddr = addr.parse().expect("address");
    // A beat with the agent's token whose body never comes whole.
    let token = token_of(&env, &uuid, "w");
    let cell = uuid.clone();
    let slow = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(sock).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        write!(
            s,
            "POST /heartbeat/{cell}/w HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
        )
        .expect("write");
        let started = Instant::now();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        (answer, started.elapsed())
    });
    // More connections than the daemon has descriptors: those past the cap
    // wait in the kernel's queue (and, past it, are refused).
    let mut idle = Vec::new();
    let mut misses = 0;
    while idle.len() < 400 && misses < 3 {
        match std::net::TcpStream::connect_timeout(&sock, Duration::from_millis(300)) {
            Ok(s) => idle.push(s),
            Err(_) => misses += 1,
        }
    }
    assert!(
        idle.len() > 128,
        "only {} connections were taken",
        idle.len()
    );
    // The supervisor still opens heartbeat files: a beat, a silence, a beat.
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        env.beat(&uuid, "w", "first");
        env.wait_event(&uuid, "agent_stale", 1, WAIT);
        env.beat(&uuid, "w", "back");
        env.wait_event(&uuid, "agent_recovered", 1, WAIT);
    }));
    if let Err(e) = waited {
        eprintln!(
            "daemon log:\n{}\nevents:\n{}\nfds: {:?}",
            daemon.log(),
            std::fs::read_to_string(env.cell(&uuid).join("logs/events.jsonl")).unwrap_or_default(),
            std::fs::read_dir(format!("/proc/{}/fd", daemon.pid())).map(|d| d.count())
        );
        std::panic::resume_unwind(e);
    }
    assert!(
        !daemon.log().contains("Too many open files"),
        "{}",
        daemon.log()
    );
    drop(idle);
    // Once the queue behind the cap has drained, the face answers again.
    crate::harness::wait_for("the web face to answer", WAIT, || {
        get(&addr, "/healthz", None).status == 200
    });
    // A connection that sends no request is closed once its time to send
    // the headers is up (10 s), and its place is free again.
    let mut silent = std::net::TcpStream::connect(sock).expect("connect");
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    // Closed: the end, an answer (408) and the end, or a reset; not the
    // client's own timeout.
    let read = silent.read(&mut buf);
    let took = started.elapsed();
    assert!(
        !matches!(&read, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "the silent connection was still open after {took:?}"
    );
    assert!(
        took > Duration::from_secs(5) && took < Duration::from_secs(25),
        "the silent connection was closed after {took:?}, not its 10 s: {read:?} {:?}",
        String::from_utf8_lossy(&buf)
    );
    let (answer, took) = slow.join().expect("slow body");
    assert!(
        answer.starts_with("HTTP/1.1 408") && took < Duration::from_secs(25),
        "a body that never came: {answer:?} after {took:?}"
    );
    assert_eq!(get(&addr, "/healthz", None).status, 200);
}

/// `serve` with 128 descriptors: 64 connection places.
fn serve_with_64_places(env: &Env) -> (Daemon, String) {
    let server = env.spawn_daemon_cmd(with_128_files(env.command(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
    ])));
    server.wait_log("serving http://", WAIT);
    let addr = address(&server.log());
    (server, addr)
}

/// `cmd` with at most 128 descriptors (soft and hard): the server's cap on
/// connections is then its least, 64.
fn with_128_files(mut cmd: std::process::Command) -> std::process::Command {
    // SAFETY: one async-signal-safe call in the child before exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            let limit = nix::libc::rlimit {
                rlim_cur: 128,
                rlim_max: 128,
            };
            if nix::libc::setrlimit(nix::libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    cmd
}

/// A caller that asks and asks and never reads the answers (and so an
/// event-stream client that stalled) loses its connection: 64 of them,
/// every place there is, hold the face only until their writes time out.
#[test]
fn callers_that_never_read_lose_their_connections() {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, connect, setsockopt, socket, sockopt,
    };
    use std::io::Write;
    let env = env();
    let (_server, addr) = serve_with_64_places(&env);
    let sock: std::net::SocketAddrV4 = addr.parse().expect("address");
    let asks = "GET /assets/app.js HTTP/1.1\r\nHost: x\r\n\r\n".repeat(300);
    let mut stalled = Vec::new();
    for _ in 0..64 {
        // A small receive buffer, so the answers fill it at once; not
        // inherited by the daemons other tests start meanwhile.
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket");
        setsockopt(&fd, sockopt::RcvBuf, &4096).expect("rcvbuf");
        connect(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &SockaddrIn::from(sock),
        )
        .expect("connect");
        let mut stream = std::net::TcpStream::from(fd);
        stream.write_all(asks.as_bytes()).expect("ask");
        stalled.push(stream);
    }
    // Every place is taken by a caller that does not read; the next one
    // is answered once their answers time out (10 s without a byte taken).
    let started = Instant::now();
    let answer = get(&addr, "/healthz", None);
    assert_eq!(answer.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(28),
        "answered only after {:?}",
        started.elapsed()
    );
    drop(stalled);
}

/// Out of descriptors (the web face took the last ones, or anything else
/// did), a rescan of the root sees nothing: that is no proof the cells are
/// gone, and none is dropped from supervision.
#[test]
fn a_rescan_out_of_descriptors_forgets_no_cell() {
    let env = Env::new();
    env.config(&format!(
        "{}\n[http]\nlisten = \"127.0.0.1:0\"\n",
        CONFIG.replace("poll_interval = 5", "poll_interval = 0.5")
    ));
    let uuid = env.create_from(&json!({"agents": [{"name": "w"}]}));
    let mut cmd = with_128_files(env.command(&["daemon"]));
    // Forty descriptors the daemon holds from its start: with the 64
    // connections the face may take, the 128 run out.
    // SAFETY: open(2) is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            for _ in 0..40 {
                if nix::libc::open(c"/dev/null".as_ptr(), nix::libc::O_RDONLY) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let daemon = env.spawn_daemon_cmd(cmd);
    daemon.wait_log("ready:", WAIT);
    daemon.wait_log("serving http://", WAIT);
    let addr = address(&daemon.log());
    let sock: std::net::SocketAddr = addr.parse().expect("address");
    let mut idle = Vec::new();
    while idle.len() < 100 {
        match std::net::TcpStream::connect_timeout(&sock, Duration::from_millis(300)) {
            Ok(s) => idle.push(s),
            Err(_) => break,
        }
    }
    daemon.wait_log("cannot read the root", WAIT);
    drop(idle);
    crate::harness::wait_for("the web face to answer", WAIT, || {
        get(&addr, "/healthz", None).status == 200
    });
    // Still supervised: a beat after its silence is a recovery.
    env.beat(&uuid, "w", "back");
    env.wait_event(&uuid, "agent_recovered", 1, WAIT);
    assert!(
        !daemon.log().contains("no longer monitored"),
        "{}",
        daemon.log()
    );
}

/// A caller that holds every place by asking a little now and then (well
/// within the header deadline) does not lock others out: a new connection
/// takes the place of the one between requests the longest.
#[test]
fn callers_that_hold_every_place_give_way_to_a_new_one() {
    use std::io::{BufRead, BufReader, Write};
    let env = env();
    let (_server, addr) = serve_with_64_places(&env);
    // 64 kept-alive connections (every place), each asking every second.
    let mut holders = Vec::new();
    for _ in 0..64 {
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        write!(s, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").expect("ask");
        holders.push(BufReader::new(s));
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rounds = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let holding = {
        let (stop, rounds) = (stop.clone(), rounds.clone());
        std::thread::spawn(move || {
            let mut held = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                held = 0;
                for r in &mut holders {
                    // Read the answer (to its `ok` body), ask again.
                    let mut answered = false;
                    let mut line = String::new();
                    while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                        if line.trim() == "ok" {
                            answered = true;
                            break;
                        }
                        line.clear();
                    }
                    if answered
                        && write!(r.get_mut(), "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").is_ok()
                    {
                        held += 1;
                    }
                }
                if held == 64 {
                    rounds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            held
        })
    };
    // Once they hold every place, a newcomer is answered at once, again
    // and again.
    crate::harness::wait_for("the holders to hold every place", WAIT, || {
        rounds.load(std::sync::atomic::Ordering::Relaxed) > 0
    });
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(get(&addr, "/healthz", None).status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "answered after {:?}",
            started.elapsed()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let held = holding.join().expect("holders");
    // The newcomers took the places of a few; the rest went on.
    assert!(held >= 50, "only {held} holders went on");
}
