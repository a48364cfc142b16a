//! The dashboard in a real browser: Debian's headless Chromium driven over
//! WebDriver (chromedriver). It shows a new cell, an agent going stale and
//! a pending approval within a second of the fact, keeps agent-written
//! text as text, and approves.
//!
//! A test binary of its own: cargo runs test binaries one after another, so
//! Chromium's start does not starve the timing-sensitive tests of
//! `integration`, nor they it.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[allow(dead_code)]
#[path = "integration/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "integration/web.rs"]
mod web;

use harness::Env;
use web::{Reply, request};

const WAIT: Duration = Duration::from_secs(30);
/// What the issue asks of the page: a fact shows within a second.
const LIVE: Duration = Duration::from_secs(1);

/// chromedriver and its Chromium, in their own process group: killed
/// together, by pid, when the test ends.
struct Browser {
    driver: Child,
    addr: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = request(
            &self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
            None,
        );
        let pgid = nix::unistd::Pid::from_raw(self.driver.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}

impl Browser {
    fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver");
        let addr = format!("127.0.0.1:{port}");
        harness::wait_for("chromedriver", WAIT, || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
        let profile = tempfile::tempdir().expect("profile");
        // The flags Chromium needs on a machine without a network or a
        // display, as root.
        let args = json!([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            format!("--user-data-dir={}", profile.path().display()),
        ]);
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
        }}});
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            _profile: profile,
        };
        let reply = browser.call("POST", "/session", Some(caps));
        browser.session = reply["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {reply}"))
            .to_string();
        browser
    }

    /// One WebDriver command; its `value`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string());
        let reply: Reply = request(&self.addr, method, path, None, body.as_deref());
        let value = reply.json()["value"].clone();
        assert_eq!(reply.status, 200, "{method} {path}: {value}");
        value
    }

    fn session(&self, method: &str, rel: &str, body: Value) -> Value {
        self.call(
            method,
            &format!("/session/{}{rel}", self.session),
            Some(body),
        )
    }

    fn open(&self, url: &str) {
        self.session("POST", "/url", json!({"url": url}));
    }

    /// Runs `script` (a function body) in the page; what it returns.
    fn eval(&self, script: &str) -> Value {
        self.session(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
    }

    fn click(&self, css: &str) {
        let found = self.session(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        let id = found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string();
        self.session("POST", &format!("/element/{id}/click"), json!({}));
    }

    /// Waits until `script` returns true; how long it took.
    #[track_caller]
    fn until(&self, what: &str, limit: Duration, script: &str) -> Duration {
        let start = Instant::now();
        loop {
            if self.eval(script) == json!(true) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "{what}: not within {limit:?}; the page: {}",
                self.eval("return document.body.innerText")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn row(uuid: &str, agent: &str) -> String {
    format!("document.querySelector('tr.agent[data-cell=\"{uuid}\"][data-agent=\"{agent}\"]')")
}

#[test]
#[cfg_attr(
    not(chromium),
    ignore = "needs Debian's chromium and chromium-driver (.ci/run installs them on CI)"
)]
fn the_dashboard_is_live_keeps_text_as_text_and_approves() {
    let env = Env::new();
    env.config(
        "[cells]\nheartbeat_stale_threshold = 1.5\nresurrect_after = 300\nkill_grace = 0.5\n",
    );
    let first = env.create_from(&json!({"name": "first", "agents": [
        {"name": "w"},
        {"name": "asker", "revive_policy": "ask", "command": ["/bin/sh", "-c", "exit 3"]},
    ]}));
    // An agent's status is hostile markup: it must stay text.
    let hostile = "<img src=x onerror=\"window.pwned=1\"><script>window.pwned=2</script>";
    let beat = || {
        env.run(&[
            "heartbeat",
            "--cell",
            &first,
            "--agent",
            "w",
            "--status",
            hostile,
        ])
        .success();
    };
    beat();
    let _daemon = env.daemon(&[]);
    let server = env.spawn_daemon_cmd(env.command(&["serve", "--listen", "127.0.0.1:0"]));
    server.wait_log("serving http://", WAIT);
    let addr = server
        .log()
        .lines()
        .find_map(|l| {
            l.split("serving http://")
                .nth(1)
                .map(|r| r.split('/').next().unwrap_or("").to_string())
        })
        .expect("address");
    let token = std::fs::read_to_string(env.state.join("http-token")).expect("token");
    let browser = Browser::start();
    browser.open(&format!("http://{addr}/#token={}", token.trim()));
    browser.until(
        "the first cell",
        WAIT,
        &format!("return {} !== null", row(&first, "w")),
    );
    // The last events are there from the start (the stream brings only
    // new ones).
    browser.until(
        "the cell's earlier events",
        WAIT,
        &format!("return document.querySelector('#events li[data-event=\"cell_created\"][data-cell=\"{first}\"]') !== null"),
    );
    // The token left the address bar.
    assert_eq!(browser.eval("return location.hash"), json!(""));
    // Text, not markup: no image, no script ran, the words are shown.
    assert_eq!(
        browser.eval(&format!(
            "const r = {}; return [r.querySelectorAll('img,script').length, \
             r.textContent.includes('<script>'), window.pwned === undefined]",
            row(&first, "w")
        )),
        json!([0, true, true])
    );

    // A new cell shows within a second.
    let second = env.create(&["--name", "second", "--agent", "x"]);
    let took = browser.until(
        "the new cell",
        LIVE,
        &format!("return document.querySelector('section.cell[data-cell=\"{second}\"]') !== null"),
    );
    eprintln!("new cell shown after {took:?}");

    // `w` goes stale (its one beat is old): its row changes colour within
    // a second of the daemon's agent_stale.
    let colour = |state: &str| {
        format!(
            "const r = {}; return r !== null && r.dataset.state === '{state}' \
             && getComputedStyle(r).backgroundColor",
            row(&first, "w")
        )
    };
    // A fresh beat: healthy on the page first.
    let stale_before = env.events_named(&first, "agent_stale").len();
    beat();
    browser.until(
        "w shown healthy",
        WAIT,
        &format!("return (() => {{ {} }})() !== false", colour("healthy")),
    );
    let healthy_colour = browser.eval(&colour("healthy"));
    env.wait_event(&first, "agent_stale", stale_before + 1, WAIT);
    let seen_at = Instant::now();
    browser.until(
        "w shown stale",
        LIVE,
        &format!("return (() => {{ {} }})() !== false", colour("stale")),
    );
    let stale_colour = browser.eval(&colour("stale"));
    assert_ne!(healthy_colour, stale_colour, "the colour says the state");
    eprintln!(
        "stale shown {:?} after the event was read",
        seen_at.elapsed()
    );

    // The pending approval has a button; a click approves.
    browser.until(
        "the approve button",
        WAIT,
        &format!("return document.querySelector('button.approve[data-cell=\"{first}\"][data-agent=\"asker\"]') !== null"),
    );
    browser.click(&format!(
        "button.approve[data-cell=\"{first}\"][data-agent=\"asker\"]"
    ));
    let approved = env.wait_event(&first, "revive_approved", 1, WAIT);
    assert_eq!(approved[0]["agent"], "asker");
    env.wait_event(&first, "agent_revived", 1, WAIT);
}
