//! Measures the web face on the real binary and prints the figures
//! recorded in BENCHMARKS.md.
//!
//!     cargo bench --bench http                      # both runs below
//!     cargo bench --bench http -- --cells 100 --agents 10 --clients 8 --seconds 5
//!     cargo bench --bench http -- --streams 1000 --events 20
//!
//! Heartbeat run: `serve` over `--cells` × `--agents` agents; `--clients`
//! threads, each with one kept-alive connection, POST
//! `/heartbeat/{cell}/{agent}` with each agent's own token, round robin,
//! for `--seconds`. Measured: requests answered per second and each
//! request's latency (every answer must be 200: an agent's own rate limit
//! is 20 a second, and the agents are many).
//!
//! Stream run: `--streams` clients hold `GET /api/events` open; one event
//! line is appended to a cell's `events.jsonl` every 100 ms, `--events`
//! times. Measured: from each append to each client reading the line, and
//! lines a client never got.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

fn bin() -> String {
    std::env::var("LAZARUS_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_lazarus-pit").into())
}

fn arg(name: &str) -> Option<usize> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

fn has(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

struct Setup {
    _tmp: tempfile::TempDir,
    root: std::path::PathBuf,
    state: std::path::PathBuf,
    config: std::path::PathBuf,
    cells: Vec<String>,
}

impl Setup {
    fn new(cells: usize, agents: usize) -> Setup {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        };
        let tmp = tempfile::tempdir_in(base).expect("tmp");
        let root = tmp.path().join("missions");
        let state = tmp.path().join("state");
        let config = tmp.path().join("lazarus-pit.toml");
        std::fs::write(
            &config,
            format!("[daemon]\nstate_dir = \"{}\"\n", state.display()),
        )
        .expect("config");
        let mut setup = Setup {
            _tmp: tmp,
            root,
            state,
            config,
            cells: Vec::new(),
        };
        for _ in 0..cells {
            let mut args = vec!["cell".to_string(), "create".to_string()];
            for a in 0..agents {
                args.push("--agent".into());
                args.push(format!("a{a}"));
            }
            let out = setup.command(&args).output().expect("create");
            assert!(out.status.success(), "{out:?}");
            setup
                .cells
                .push(String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
        setup
    }

    fn command(&self, args: &[String]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .env("LAZARUS_ROOT", &self.root)
            .env("LAZARUS_CONFIG", &self.config)
            .stdin(Stdio::null());
        cmd
    }

    /// `serve` on a free port: the process and its address.
    fn serve(&self) -> (Server, String) {
        let mut child = self
            .command(&["serve".into(), "--listen".into(), "127.0.0.1:0".into()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let addr = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| {
                l.split("serving http://")
                    .nth(1)
                    .map(|r| r.split('/').next().unwrap_or("").to_string())
            })
            .expect("address");
        std::thread::spawn(move || for _ in lines {});
        (Server(child), addr)
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.state.join("http-token"))
            .expect("token")
            .trim()
            .to_string()
    }

    fn secret(&self) -> lazarus_pit::http::auth::Secret {
        lazarus_pit::http::auth::Secret::load_or_create(&lazarus_pit::config::DaemonConfig {
            state_dir: Some(self.state.clone()),
            ..Default::default()
        })
        .expect("secret")
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Reads one HTTP/1.1 answer with a Content-Length body from a kept-alive
/// connection; its status.
fn read_answer(reader: &mut BufReader<TcpStream>) -> u16 {
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut length = 0;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).expect("header");
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("body");
    status
}

fn heartbeats(cells: usize, agents: usize, clients: usize, seconds: usize) {
    let setup = Setup::new(cells, agents);
    let (server, addr) = setup.serve();
    let secret = setup.secret();
    let targets: Arc<Vec<(String, String)>> = Arc::new(
        setup
            .cells
            .iter()
            .flat_map(|c| {
                let secret = &secret;
                (0..agents).map(move |a| {
                    let agent = format!("a{a}");
                    let token = secret.agent_token(c, &agent);
                    (format!("/heartbeat/{c}/{agent}"), token)
                })
            })
            .collect(),
    );
    let body = r#"{"status":"working","cycle":1}"#;
    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let failures = Arc::new(Mutex::new(std::collections::BTreeMap::<u16, u64>::new()));
    let start = Instant::now();
    let until = start + Duration::from_secs(seconds as u64);
    let threads: Vec<_> = (0..clients)
        .map(|t| {
            let (targets, latencies, failures, addr) = (
                targets.clone(),
                latencies.clone(),
                failures.clone(),
                addr.clone(),
            );
            std::thread::spawn(move || {
                let stream = TcpStream::connect(&addr).expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                let mut writer = stream.try_clone().expect("clone");
                let mut reader = BufReader::new(stream);
                let mut mine = Vec::new();
                let mut i = t;
                while Instant::now() < until {
                    let (path, token) = &targets[i % targets.len()];
                    i += clients;
                    let request = format!(
                        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
                         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let sent = Instant::now();
                    writer.write_all(request.as_bytes()).expect("write");
                    let status = read_answer(&mut reader);
                    mine.push(sent.elapsed().as_secs_f64() * 1000.0);
                    if status != 200 {
                        *failures.lock().expect("lock").entry(status).or_default() += 1;
                    }
                }
                latencies.lock().expect("lock").extend(mine);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut l = latencies.lock().expect("lock").clone();
    l.sort_by(f64::total_cmp);
    println!(
        "heartbeat POSTs: {} agents, {clients} clients, {seconds} s: {:.0} requests/s; \
         latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; not 200: {:?}",
        targets.len(),
        l.len() as f64 / elapsed,
        percentile(&l, 0.5),
        percentile(&l, 0.99),
        l.last().copied().unwrap_or(f64::NAN),
        failures.lock().expect("lock"),
    );
    drop(server);
}

fn streams(clients: usize, events: usize) {
    raise_nofile();
    let setup = Setup::new(1, 1);
    let (server, addr) = setup.serve();
    let token = setup.token();
    let cell = setup.cells[0].clone();
    let ready = Arc::new(Barrier::new(clients + 1));
    let received = Arc::new(Mutex::new(Vec::<(usize, Instant)>::new()));
    let connect_start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (addr, token, ready, received) =
                (addr.clone(), token.clone(), ready.clone(), received.clone());
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    let mut stream = TcpStream::connect(&addr).expect("connect");
                    write!(
                        stream,
                        "GET /api/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
                    )
                    .expect("write");
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .expect("timeout");
                    let mut reader = BufReader::new(stream);
                    // Until the stream's first comment: connected.
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                        if line.starts_with(": connected") {
                            break;
                        }
                        line.clear();
                    }
                    ready.wait();
                    let mut mine = Vec::new();
                    let mut got = 0;
                    while got < events {
                        line.clear();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                        if let Some(at) = line.find("\"seq\":") {
                            let n: usize = line[at + 6..]
                                .trim_start()
                                .split(|c: char| !c.is_ascii_digit())
                                .next()
                                .and_then(|d| d.parse().ok())
                                .unwrap_or(usize::MAX);
                            mine.push((n, Instant::now()));
                            got += 1;
                        }
                    }
                    received.lock().expect("lock").extend(mine);
                })
                .expect("thread")
        })
        .collect();
    ready.wait();
    let connected = connect_start.elapsed();
    let log = setup.root.join(&cell).join("logs/events.jsonl");
    let mut written = Vec::new();
    for seq in 0..events {
        let line = format!(
            "{{\"ts\":\"{}\",\"event\":\"heartbeat\",\"cell\":\"{cell}\",\"agent\":\"a0\",\"status\":\"bench\",\"seq\":{seq}}}\n",
            chrono_like_now()
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .expect("events.jsonl");
        written.push(Instant::now());
        f.write_all(line.as_bytes()).expect("append");
        std::thread::sleep(Duration::from_millis(100));
    }
    for t in threads {
        let _ = t.join();
    }
    let got = received.lock().expect("lock").clone();
    let mut l: Vec<f64> = got
        .iter()
        .filter(|(n, _)| *n < events)
        .map(|(n, at)| at.duration_since(written[*n]).as_secs_f64() * 1000.0)
        .collect();
    l.sort_by(f64::total_cmp);
    println!(
        "event stream: {clients} clients connected in {:.2} s; {events} lines: append → read \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; lines not read: {}",
        connected.as_secs_f64(),
        percentile(&l, 0.5),
        percentile(&l, 0.99),
        l.last().copied().unwrap_or(f64::NAN),
        clients * events - l.len(),
    );
    drop(server);
}

fn chrono_like_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn main() {
    let only_streams = has("--streams") && !has("--clients");
    let only_beats = has("--clients") && !has("--streams");
    if !only_streams {
        heartbeats(
            arg("--cells").unwrap_or(100),
            arg("--agents").unwrap_or(10),
            arg("--clients").unwrap_or(8),
            arg("--seconds").unwrap_or(5),
        );
    }
    if !only_beats {
        streams(
            arg("--streams").unwrap_or(1000),
            arg("--events").unwrap_or(20),
        );
    }
}
