//! Metrics in the Prometheus text format (version 0.0.4): the root's cells
//! and agents, and the daemon's own counters.
//!
//! `lazarus-pit metrics` renders them from what `status` reads plus the
//! counters the running daemon publishes in its state directory
//! ([`STATS_FILE`]); with `[metrics] textfile` the daemon renders them
//! from its own core and writes them (temp file + rename) for
//! node_exporter's textfile collector. Both go through [`render`].

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::state::AgentState;

/// The daemon's counters, in its records directory (per root).
pub const STATS_FILE: &str = "daemon-stats.json";
/// How often the daemon writes them (and the textfile).
pub const PERIOD: std::time::Duration = std::time::Duration::from_secs(10);
/// Counters older than this are a hung daemon's: not shown, not ready.
pub const STALE_AFTER: f64 = 30.0;

/// Upper bounds (seconds) of the stale-detection lateness histogram: the
/// target is 50 ms (BRIEF section 10).
pub const LATENESS_BUCKETS: [f64; 10] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// The statuses cells are counted by; any other is `other`.
pub const CELL_STATUSES: [&str; 6] = [
    "provisioned",
    "active",
    "frozen",
    "archived",
    "destroyed",
    "other",
];

/// The key a cell of `status` is counted under.
pub fn cell_key(status: &str) -> &'static str {
    CELL_STATUSES
        .into_iter()
        .find(|s| *s == status)
        .unwrap_or("other")
}

/// One agent, as a metric sees it.
#[derive(Debug, Clone)]
pub struct AgentSample {
    pub cell: String,
    pub agent: String,
    pub state: AgentState,
    pub heartbeat_age_s: Option<f64>,
    pub revive_count: u32,
}

/// What the daemon counts while it runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DaemonStats {
    pub pid: u32,
    /// Unix seconds.
    pub started_at: f64,
    pub written_at: f64,
    /// Heartbeat files read and handed to the core.
    pub heartbeats: u64,
    /// Event lines recorded, by event name.
    pub events: BTreeMap<String, u64>,
    /// `agent_revived` by reason.
    pub revives: BTreeMap<String, u64>,
    /// `agent_stale` after its deadline: counts per bucket of
    /// [`LATENESS_BUCKETS`] (not cumulative), the sum and the count.
    pub stale_lateness: Vec<u64>,
    pub stale_lateness_sum: f64,
    pub stale_lateness_count: u64,
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    /// `inotify`, `mixed` (some cells polled) or `poll`.
    pub watch: String,
    pub polled_cells: u64,
}

impl DaemonStats {
    pub fn new(pid: u32, started_at: f64) -> DaemonStats {
        DaemonStats {
            pid,
            started_at,
            stale_lateness: vec![0; LATENESS_BUCKETS.len()],
            watch: "inotify".into(),
            ..DaemonStats::default()
        }
    }

    /// Counts one event line (and its lateness or reason).
    pub fn event(&mut self, name: &str, fields: &serde_json::Map<String, serde_json::Value>) {
        // No allocation once an event name was counted (with
        // `heartbeats = "all"` this runs for every heartbeat).
        match self.events.get_mut(name) {
            Some(n) => *n += 1,
            None => {
                self.events.insert(name.to_string(), 1);
            }
        }
        match name {
            "agent_revived" => {
                let reason = fields
                    .get("reason")
                    .and_then(|r| r.as_str())
                    .unwrap_or("unknown");
                *self.revives.entry(reason.to_string()).or_default() += 1;
            }
            "agent_stale" => {
                if let Some(ms) = fields.get("late_ms").and_then(|l| l.as_f64()) {
                    self.lateness(ms / 1000.0);
                }
            }
            _ => {}
        }
    }

    pub fn lateness(&mut self, secs: f64) {
        if self.stale_lateness.len() != LATENESS_BUCKETS.len() {
            self.stale_lateness = vec![0; LATENESS_BUCKETS.len()];
        }
        if let Some(i) = LATENESS_BUCKETS.iter().position(|le| secs <= *le) {
            self.stale_lateness[i] += 1;
        }
        self.stale_lateness_sum += secs;
        self.stale_lateness_count += 1;
    }

    /// The daemon's CPU time and resident memory, from the kernel.
    pub fn sample_process(&mut self) {
        if let Ok(usage) = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        {
            let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            self.cpu_seconds = secs(usage.user_time()) + secs(usage.system_time());
        }
        if let Ok(statm) = std::fs::read_to_string("/proc/self/statm")
            && let Some(pages) = statm
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        {
            let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
                .ok()
                .flatten()
                .unwrap_or(4096) as u64;
            self.rss_bytes = pages * page;
        }
    }
}

/// A label value, escaped as the text format wants.
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A float as Prometheus reads it.
fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The exposition: cells by status, agents by state and each agent's
/// heartbeat age and revive count; whether a daemon holds the root (`up`);
/// when it last published its counters (`daemon`), and those counters if
/// they are `fresh` (a daemon that stopped publishing is not ready).
pub fn render(
    cells: &BTreeMap<String, u64>,
    agents: &[AgentSample],
    up: bool,
    daemon: Option<&DaemonStats>,
    fresh: bool,
) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "lazarus_pit_cells",
        "gauge",
        "Cells in the root, by status.",
    );
    for status in CELL_STATUSES {
        let n = cells.get(status).copied().unwrap_or(0);
        let _ = writeln!(out, "lazarus_pit_cells{{status=\"{status}\"}} {n}");
    }
    family(
        &mut out,
        "lazarus_pit_agents",
        "gauge",
        "Agents of monitored and provisioned cells, by state.",
    );
    for state in AgentState::BY_URGENCY {
        let n = agents.iter().filter(|a| a.state == state).count();
        let _ = writeln!(
            out,
            "lazarus_pit_agents{{state=\"{}\"}} {n}",
            state.as_str()
        );
    }
    family(
        &mut out,
        "lazarus_pit_agent_heartbeat_age_seconds",
        "gauge",
        "Seconds since the agent's last heartbeat (agents that have beaten).",
    );
    for a in agents {
        if let Some(age) = a.heartbeat_age_s {
            let _ = writeln!(
                out,
                "lazarus_pit_agent_heartbeat_age_seconds{{cell=\"{}\",agent=\"{}\"}} {}",
                label(&a.cell),
                label(&a.agent),
                num(age.max(0.0))
            );
        }
    }
    family(
        &mut out,
        "lazarus_pit_agent_revives",
        "gauge",
        "Revivals of the agent since its count last reset.",
    );
    for a in agents {
        let _ = writeln!(
            out,
            "lazarus_pit_agent_revives{{cell=\"{}\",agent=\"{}\"}} {}",
            label(&a.cell),
            label(&a.agent),
            a.revive_count
        );
    }
    family(
        &mut out,
        "lazarus_pit_agent_healthy",
        "gauge",
        "1 if the agent is healthy, 0 if not.",
    );
    for a in agents {
        let _ = writeln!(
            out,
            "lazarus_pit_agent_healthy{{cell=\"{}\",agent=\"{}\",state=\"{}\"}} {}",
            label(&a.cell),
            label(&a.agent),
            a.state.as_str(),
            u8::from(a.state == AgentState::Healthy)
        );
    }
    family(
        &mut out,
        "lazarus_pit_daemon_up",
        "gauge",
        "1 if a daemon holds the root (its lock).",
    );
    let _ = writeln!(out, "lazarus_pit_daemon_up {}", u8::from(up));
    family(
        &mut out,
        "lazarus_pit_daemon_ready",
        "gauge",
        "1 once that daemon has scanned the root and published its counters (below) within the last 30 s, readable by this user.",
    );
    let _ = writeln!(
        out,
        "lazarus_pit_daemon_ready {}",
        u8::from(up && fresh && daemon.is_some())
    );
    if let Some(d) = daemon {
        family(
            &mut out,
            "lazarus_pit_daemon_last_update_seconds",
            "gauge",
            "When the daemon last published its figures (unix seconds): alert when it lags.",
        );
        let _ = writeln!(
            out,
            "lazarus_pit_daemon_last_update_seconds {}",
            num(d.written_at)
        );
    }
    if let Some(d) = daemon.filter(|_| fresh) {
        render_daemon(&mut out, d);
    }
    out
}

fn render_daemon(out: &mut String, d: &DaemonStats) {
    family(
        out,
        "lazarus_pit_daemon_start_time_seconds",
        "gauge",
        "When the daemon started (unix seconds).",
    );
    let _ = writeln!(
        out,
        "lazarus_pit_daemon_start_time_seconds {}",
        num(d.started_at)
    );
    family(
        out,
        "lazarus_pit_heartbeats_total",
        "counter",
        "Heartbeat files the daemon read and handled.",
    );
    let _ = writeln!(out, "lazarus_pit_heartbeats_total {}", d.heartbeats);
    family(
        out,
        "lazarus_pit_events_total",
        "counter",
        "Event lines the daemon recorded, by event.",
    );
    for kind in crate::events::EventKind::ALL {
        let n = d.events.get(kind.as_str()).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "lazarus_pit_events_total{{event=\"{}\"}} {n}",
            kind.as_str()
        );
    }
    family(
        out,
        "lazarus_pit_revives_total",
        "counter",
        "Agents the daemon revived, by reason.",
    );
    for (reason, n) in &d.revives {
        let _ = writeln!(
            out,
            "lazarus_pit_revives_total{{reason=\"{}\"}} {n}",
            label(reason)
        );
    }
    let name = "lazarus_pit_stale_detection_lateness_seconds";
    family(
        out,
        name,
        "histogram",
        "How long after its deadline an agent was found stale.",
    );
    let mut cumulative = 0;
    for (i, le) in LATENESS_BUCKETS.iter().enumerate() {
        cumulative += d.stale_lateness.get(i).copied().unwrap_or(0);
        let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cumulative}", num(*le));
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{le=\"+Inf\"}} {}",
        d.stale_lateness_count
    );
    let _ = writeln!(out, "{name}_sum {}", num(d.stale_lateness_sum));
    let _ = writeln!(out, "{name}_count {}", d.stale_lateness_count);
    family(
        out,
        "lazarus_pit_daemon_cpu_seconds_total",
        "counter",
        "CPU time (user and system) the daemon has used.",
    );
    let _ = writeln!(
        out,
        "lazarus_pit_daemon_cpu_seconds_total {}",
        num(d.cpu_seconds)
    );
    family(
        out,
        "lazarus_pit_daemon_resident_memory_bytes",
        "gauge",
        "The daemon's resident memory.",
    );
    let _ = writeln!(
        out,
        "lazarus_pit_daemon_resident_memory_bytes {}",
        d.rss_bytes
    );
    family(
        out,
        "lazarus_pit_watch_mode",
        "gauge",
        "How the daemon learns of changes: 1 for the mode in use.",
    );
    for mode in ["inotify", "mixed", "poll"] {
        let _ = writeln!(
            out,
            "lazarus_pit_watch_mode{{mode=\"{mode}\"}} {}",
            u8::from(d.watch == mode)
        );
    }
    family(
        out,
        "lazarus_pit_polled_cells",
        "gauge",
        "Cells polled because they could not be watched.",
    );
    let _ = writeln!(out, "lazarus_pit_polled_cells {}", d.polled_cells);
}

/// A strict reader of the text format (for tests, where `promtool` is
/// absent): every sample belongs to a
/// family announced with `# TYPE` before it, names and labels are
/// well formed, values parse, histogram buckets are cumulative and end
/// in `+Inf` equal to `_count`, no series repeats.
pub fn validate(text: &str) -> Result<usize, String> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    let mut samples = 0;
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut last_bucket: Option<(String, f64)> = None;
    for (no, line) in text.lines().enumerate() {
        let at = |why: &str| format!("line {}: {why}: {line}", no + 1);
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or_else(|| at("TYPE"))?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(at("unknown type"));
            }
            if types.insert(name.into(), kind.into()).is_some() {
                return Err(at("family announced twice"));
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or_else(|| at("no value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| at("value"))?,
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}').ok_or_else(|| at("labels"))?),
            None => (series, ""),
        };
        if !name_ok(name) {
            return Err(at("metric name"));
        }
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|b| types.get(*b).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        let kind = types
            .get(base)
            .ok_or_else(|| at("sample before its TYPE"))?;
        if kind == "counter" && value < 0.0 {
            return Err(at("negative counter"));
        }
        // Labels: name="value" pairs, escapes \\ \" \n only.
        let mut rest = labels;
        let mut le = None;
        while !rest.is_empty() {
            let (lname, after) = rest.split_once("=\"").ok_or_else(|| at("label"))?;
            if !name_ok(lname) || lname.contains(':') {
                return Err(at("label name"));
            }
            let mut value = String::new();
            let mut chars = after.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        _ => return Err(at("label escape")),
                    },
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let end = end.ok_or_else(|| at("unterminated label"))?;
            if lname == "le" {
                le = Some(value.clone());
            }
            rest = &after[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
        if !seen.insert(series.to_string()) {
            return Err(at("series repeated"));
        }
        if name.ends_with("_bucket") && base != name {
            let le = le.ok_or_else(|| at("bucket without le"))?;
            if let Some((prev_base, prev)) = &last_bucket
                && prev_base == base
                && value < *prev
            {
                return Err(at("buckets not cumulative"));
            }
            last_bucket = Some((base.to_string(), value));
            let _ = le;
        }
        samples += 1;
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<usize, String> {
        validate(text)
    }

    #[test]
    fn the_exposition_is_well_formed_and_escapes_labels() {
        let mut d = DaemonStats::new(42, 1.0);
        d.heartbeats = 7;
        d.event(
            "agent_revived",
            serde_json::json!({"reason": "stale"})
                .as_object()
                .expect("obj"),
        );
        d.event(
            "agent_stale",
            serde_json::json!({"late_ms": 3.0})
                .as_object()
                .expect("obj"),
        );
        d.lateness(0.2);
        let agents = vec![AgentSample {
            cell: "c\"\\\n".into(),
            agent: "a".into(),
            state: AgentState::Stale,
            heartbeat_age_s: Some(61.5),
            revive_count: 2,
        }];
        let cells = BTreeMap::from([("active".to_string(), 1)]);
        let text = render(&cells, &agents, true, Some(&d), true);
        let n = check(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(n > 20, "{text}");
        assert!(
            text.contains("lazarus_pit_agents{state=\"stale\"} 1"),
            "{text}"
        );
        assert!(text.contains("cell=\"c\\\"\\\\\\n\""), "{text}");
        assert!(text.contains("lazarus_pit_revives_total{reason=\"stale\"} 1"));
        assert!(
            text.contains("lazarus_pit_stale_detection_lateness_seconds_bucket{le=\"0.005\"} 1")
        );
        assert!(text.contains("lazarus_pit_stale_detection_lateness_seconds_count 2"));
        assert!(text.contains("lazarus_pit_daemon_up 1"));
        assert!(text.contains("lazarus_pit_daemon_ready 1"));
        // Without a daemon: its counters are not invented.
        let text = render(&cells, &agents, false, None, false);
        check(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(!text.contains("heartbeats_total"));
        assert!(text.contains("lazarus_pit_daemon_up 0"));
        assert!(text.contains("lazarus_pit_daemon_ready 0"));
        // A daemon whose counters this user may not read: up, not ready.
        let text = render(&cells, &agents, true, None, false);
        assert!(text.contains("lazarus_pit_daemon_up 1"));
        assert!(text.contains("lazarus_pit_daemon_ready 0"));
    }

    #[test]
    fn the_checker_refuses_what_prometheus_would() {
        for bad in [
            "x 1\n",
            "# TYPE x gauge\nx{a=\"1} 1\n",
            "# TYPE x gauge\nx 1\nx 2\n",
            "# TYPE x counter\nx -1\n",
            "# TYPE x gauge\nx{a=\"\\q\"} 1\n",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"2\"} 1\n",
        ] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
    }
}
