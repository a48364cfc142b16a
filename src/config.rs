//! `lazarus-pit.toml`: typed sections with the documented defaults, the
//! file precedence, and root precedence.
//!
//! The seed's file must load unchanged, so sections the program does not
//! act on (`[gateway]`, `[gitea]`) are accepted, and unknown keys are
//! warnings, never failures.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::cell::manifest::RevivePolicy;
use crate::error::{Error, Result};

/// Used when neither `--config` nor `LAZARUS_CONFIG` names a file.
pub const SYSTEM_CONFIG: &str = "/etc/lazarus-pit/lazarus-pit.toml";
/// `[events] max_bytes` when the config does not say.
pub const DEFAULT_EVENTS_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Used when neither `--root`, `LAZARUS_ROOT` nor `cells.root` names one.
pub const DEFAULT_ROOT: &str = "/var/missions";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub cells: CellsConfig,
    pub events: EventsConfig,
    pub isolation: IsolationConfig,
    pub notifications: NotificationsConfig,
    /// Seed section, accepted as is (the gateway probe is not ours).
    pub gateway: toml::Table,
    pub gitea: GiteaConfig,
    pub metrics: MetricsConfig,
    pub http: HttpConfig,
}

/// `[http]`: the web face (`serve`, or inside the daemon).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// Where the daemon serves the HTTP API and dashboard (`127.0.0.1:7600`).
    /// Absent: the daemon serves none (`lazarus-pit serve` still can).
    pub listen: Option<String>,
    /// The operator's bearer token (mode 0600). Absent: `http-token` in the
    /// state directory, made on first use.
    pub token_file: Option<PathBuf>,
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MetricsConfig {
    /// Where the daemon writes its metrics for node_exporter's textfile
    /// collector (a `*.prom` file; temp file + rename), every
    /// [`crate::metrics::PERIOD`]. Absent: not written.
    pub textfile: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DaemonConfig {
    /// Written at start, removed at exit.
    pub pid_file: Option<PathBuf>,
    /// `-` or absent: stderr.
    pub log_file: Option<String>,
    /// `DEBUG`, `INFO`, `WARNING`, `ERROR` (seed spelling) or tracing's.
    pub log_level: Option<String>,
    pub log_format: LogFormat,
    /// Where the daemon keeps its own records (see [`crate::records`]).
    /// Absent: `/var/lib/lazarus-pit` for root, the XDG state home else.
    pub state_dir: Option<PathBuf>,
    /// How agents' processes are controlled: `"auto"` (default: a cgroup
    /// v2 per agent where the daemon can create one, its process group
    /// elsewhere), `"off"` (process groups only), or a path in the cgroup2
    /// hierarchy to work beneath instead of the daemon's own cgroup.
    pub cgroup: CgroupSetting,
}

/// `[daemon] cgroup`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CgroupSetting {
    #[default]
    Auto,
    Off,
    Base(PathBuf),
}

impl<'de> Deserialize<'de> for CgroupSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "auto" => Ok(CgroupSetting::Auto),
            "off" => Ok(CgroupSetting::Off),
            path if path.starts_with('/') => Ok(CgroupSetting::Base(PathBuf::from(path))),
            other => Err(serde::de::Error::custom(format!(
                "cgroup = {other:?}: expected \"auto\", \"off\" or an absolute path in the \
                 cgroup2 hierarchy"
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CellsConfig {
    pub root: Option<PathBuf>,
    #[serde(deserialize_with = "positive_seconds")]
    pub heartbeat_stale_threshold: Duration,
    #[serde(deserialize_with = "positive_seconds")]
    pub resurrect_after: Duration,
    pub max_revive_attempts: u32,
    #[serde(deserialize_with = "positive_seconds")]
    pub poll_interval: Duration,
    pub revive_policy: RevivePolicy,
    #[serde(deserialize_with = "seconds")]
    pub kill_grace: Duration,
    #[serde(deserialize_with = "seconds")]
    pub backoff_initial: Duration,
    #[serde(deserialize_with = "seconds")]
    pub backoff_max: Duration,
    #[serde(deserialize_with = "seconds")]
    pub reset_after: Duration,
    pub watch: WatchMode,
    pub checkpoints_keep: u32,
    pub checkpoint_on_archive: bool,
    /// Variables of the daemon's environment passed on to agents (their
    /// environment is otherwise a clean one).
    pub pass_env: Vec<String>,
}

impl Default for CellsConfig {
    fn default() -> Self {
        CellsConfig {
            root: None,
            heartbeat_stale_threshold: Duration::from_secs(60),
            resurrect_after: Duration::from_secs(120),
            max_revive_attempts: 3,
            poll_interval: Duration::from_secs(15),
            revive_policy: RevivePolicy::Yes,
            kill_grace: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            reset_after: Duration::from_secs(600),
            watch: WatchMode::Auto,
            checkpoints_keep: 10,
            checkpoint_on_archive: false,
            pass_env: Vec::new(),
        }
    }
}

/// How the daemon learns of file changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchMode {
    /// inotify, or polling on a filesystem without it (NFS, CIFS, FUSE).
    #[default]
    Auto,
    Inotify,
    Poll,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct EventsConfig {
    pub heartbeats: HeartbeatEvents,
    /// Rotate `events.jsonl` past this size (default 64 MiB); 0: never.
    pub max_bytes: Option<u64>,
    /// Rotated files kept.
    pub keep: u32,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            heartbeats: HeartbeatEvents::Changes,
            max_bytes: Some(DEFAULT_EVENTS_MAX_BYTES),
            keep: 5,
        }
    }
}

/// Which heartbeats become `heartbeat` events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeartbeatEvents {
    /// Only those whose `status` changed.
    #[default]
    Changes,
    All,
    None,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct IsolationConfig {
    /// Paths hidden from agents under `mount-namespace` isolation
    /// (absolute: there is no working directory to resolve them from).
    #[serde(deserialize_with = "absolute_paths")]
    pub hidden_paths: Vec<PathBuf>,
    /// The podman program for `podman` isolation (default: `podman` on
    /// the daemon's `PATH`).
    pub podman: Option<PathBuf>,
    /// The image `podman` agents run in (never pulled: it must be there).
    pub podman_image: Option<String>,
    /// Or a directory holding a root filesystem (`podman run --rootfs`).
    pub podman_rootfs: Option<PathBuf>,
    /// More `podman run` options (`--network=none`, `--runtime=runc`, …),
    /// placed before the image.
    pub podman_args: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct NotificationsConfig {
    /// Hook argv, run with the event line on stdin.
    pub command: Option<Vec<String>>,
    /// Events that run the hook.
    pub events: Vec<String>,
    pub open_issue_on_death: bool,
    pub close_issue_on_revive: bool,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        NotificationsConfig {
            command: None,
            events: [
                "agent_stale",
                "agent_revived",
                "revive_failed",
                "revive_exhausted",
                "revive_requested",
                "agent_dead",
            ]
            .map(String::from)
            .to_vec(),
            open_issue_on_death: true,
            close_issue_on_revive: true,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GiteaConfig {
    pub url: Option<String>,
    pub repo: Option<String>,
    /// Prefer `GITEA_TOKEN` in the environment; see [`GiteaConfig::token`].
    token: Option<String>,
}

impl GiteaConfig {
    /// `GITEA_TOKEN` if set, else the file's `token`.
    pub fn token(&self) -> Option<String> {
        std::env::var("GITEA_TOKEN")
            .ok()
            .or_else(|| self.token.clone())
    }
}

/// The longest duration anything accepts: ten years. Beyond it a number
/// is a mistake (or an attack: `1e19` seconds overflows every clock).
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 86_400 + 2 * 86_400);

/// The shortest positive duration taken: a millisecond, the precision of
/// every deadline (`1e-12` would be zero nanoseconds: stale at once).
pub const MIN_POSITIVE_SECS: f64 = 0.001;

/// `secs` as a duration if it is a number of seconds in `0..=MAX_DURATION`
/// (above zero if `positive`).
pub fn bounded_seconds(secs: f64, positive: bool) -> Result<Duration, String> {
    let ok = secs.is_finite()
        && secs >= 0.0
        && secs <= MAX_DURATION.as_secs_f64()
        && (!positive || secs >= MIN_POSITIVE_SECS);
    if ok {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!(
            "{secs} is not a duration: give {} number of seconds, at most ten years ({})",
            if positive {
                "a positive (at least 0.001)"
            } else {
                "a non-negative"
            },
            MAX_DURATION.as_secs()
        ))
    }
}

/// Seconds as integer or float, `0..=MAX_DURATION`.
fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(Secs { positive: false })
}

/// Seconds as integer or float, above zero and at most `MAX_DURATION`.
fn positive_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(Secs { positive: true })
}

struct Secs {
    positive: bool,
}

impl serde::de::Visitor<'_> for Secs {
    type Value = Duration;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.positive {
            "a positive number of seconds"
        } else {
            "a non-negative number of seconds"
        })
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
        self.visit_f64(v as f64)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
        self.visit_f64(v as f64)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Duration, E> {
        bounded_seconds(v, self.positive).map_err(E::custom)
    }
}

fn absolute_paths<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    let paths = Vec::<PathBuf>::deserialize(d)?;
    match paths.iter().find(|p| !p.is_absolute()) {
        Some(p) => Err(serde::de::Error::custom(format!(
            "{:?} is not an absolute path",
            p.display()
        ))),
        None => Ok(paths),
    }
}

/// Every key the config knows, by section: the one place "did you mean"
/// looks (a unit test checks each is accepted, so the list cannot drift
/// into suggesting a key that is itself unknown).
pub const KNOWN_KEYS: &[(&str, &[&str])] = &[
    (
        "daemon",
        &[
            "pid_file",
            "log_file",
            "log_level",
            "log_format",
            "state_dir",
            "cgroup",
        ],
    ),
    (
        "cells",
        &[
            "root",
            "heartbeat_stale_threshold",
            "resurrect_after",
            "max_revive_attempts",
            "poll_interval",
            "revive_policy",
            "kill_grace",
            "backoff_initial",
            "backoff_max",
            "reset_after",
            "watch",
            "checkpoints_keep",
            "checkpoint_on_archive",
            "pass_env",
        ],
    ),
    ("events", &["heartbeats", "max_bytes", "keep"]),
    (
        "isolation",
        &[
            "hidden_paths",
            "podman",
            "podman_image",
            "podman_rootfs",
            "podman_args",
        ],
    ),
    (
        "notifications",
        &[
            "command",
            "events",
            "open_issue_on_death",
            "close_issue_on_revive",
        ],
    ),
    ("gitea", &["url", "repo", "token"]),
    ("metrics", &["textfile"]),
    ("http", &["listen", "token_file"]),
    ("gateway", &[]),
];

/// The warning for an unknown key (a dotted path such as
/// `cells.stale_threshold`), with the known key it most likely means.
pub fn unknown_key_warning(key: &str) -> String {
    let (section, leaf) = key.split_once('.').unwrap_or(("", key));
    let sections: Vec<&str> = KNOWN_KEYS.iter().map(|(s, _)| *s).collect();
    let suggestion = match KNOWN_KEYS.iter().find(|(s, _)| *s == section) {
        // A known section: a key of it, or the same key in another section
        // (`[cells] state_dir`).
        Some((_, keys)) if !leaf.contains('.') => crate::text::closest(leaf, keys)
            .map(|k| format!("{section}.{k}"))
            .or_else(|| {
                KNOWN_KEYS
                    .iter()
                    .find(|(_, keys)| keys.contains(&leaf))
                    .map(|(s, _)| format!("{s}.{leaf}"))
            }),
        Some(_) => None,
        // A top-level key, or one in a misspelt section.
        None if section.is_empty() => crate::text::closest(leaf, &sections)
            .map(|s| format!("[{s}]"))
            .or_else(|| {
                KNOWN_KEYS
                    .iter()
                    .find(|(_, keys)| keys.contains(&leaf))
                    .map(|(s, _)| format!("{s}.{leaf}"))
            }),
        None => crate::text::closest(section, &sections).map(|s| format!("{s}.{leaf}")),
    };
    match suggestion {
        Some(s) => format!("unknown key {key:?} ignored (did you mean {s}?)"),
        None => format!("unknown key {key:?} ignored"),
    }
}

/// A loaded configuration and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// The file read, if any.
    pub source: Option<PathBuf>,
    /// Keys the program does not know, as dotted paths.
    pub unknown_keys: Vec<String>,
}

impl Config {
    /// Parses TOML text. Errors carry the line; unknown keys are returned.
    pub fn parse(text: &str, path: &Path) -> Result<(Config, Vec<String>)> {
        let err = |e: toml::de::Error| Error::Config {
            path: path.to_path_buf(),
            message: match e.span() {
                Some(span) => {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!("line {line}, column {column}: {}", e.message())
                }
                None => e.message().to_string(),
            },
        };
        let de = toml::Deserializer::parse(text).map_err(err)?;
        let mut unknown = Vec::new();
        let config =
            serde_ignored::deserialize(de, |p| unknown.push(p.to_string())).map_err(err)?;
        Ok((config, unknown))
    }

    /// Loads the configuration: `explicit` (from `--config` or
    /// `LAZARUS_CONFIG`) must exist and parse; otherwise the system file is
    /// used if present, else the defaults.
    pub fn load(explicit: Option<&Path>) -> Result<Loaded> {
        let (path, required) = match explicit {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(SYSTEM_CONFIG), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Loaded {
                    config: Config::default(),
                    source: None,
                    unknown_keys: Vec::new(),
                });
            }
            Err(e) => {
                return Err(Error::Config {
                    path,
                    message: if e.kind() == std::io::ErrorKind::NotFound {
                        "config file does not exist".into()
                    } else {
                        e.to_string()
                    },
                });
            }
        };
        let (config, unknown_keys) = Config::parse(&text, &path)?;
        Ok(Loaded {
            config,
            source: Some(path),
            unknown_keys,
        })
    }

    /// The cells root: `cli` (from `--root` or `LAZARUS_ROOT`) >
    /// `cells.root` > `/var/missions`.
    pub fn root(&self, cli: Option<&Path>) -> PathBuf {
        cli.map(Path::to_path_buf)
            .or_else(|| self.cells.root.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(Config, Vec<String>)> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn defaults() {
        let (c, unknown) = parse("").expect("parse");
        assert!(unknown.is_empty());
        assert_eq!(c.cells.heartbeat_stale_threshold, Duration::from_secs(60));
        assert_eq!(c.cells.resurrect_after, Duration::from_secs(120));
        assert_eq!(c.cells.max_revive_attempts, 3);
        assert_eq!(c.cells.poll_interval, Duration::from_secs(15));
        assert_eq!(c.cells.revive_policy, RevivePolicy::Yes);
        assert_eq!(c.cells.backoff_max, Duration::from_secs(300));
        assert_eq!(c.events.heartbeats, HeartbeatEvents::Changes);
        assert_eq!(c.root(None), PathBuf::from("/var/missions"));
    }

    #[test]
    fn every_known_key_is_accepted() {
        for (section, keys) in KNOWN_KEYS {
            for key in *keys {
                // A value of the wrong type is an error, not an unknown
                // key: only the absence of an "unknown" report matters.
                let text = format!("[{section}]\n{key} = 1\n");
                if let Ok((_, unknown)) = Config::parse(&text, Path::new("t.toml")) {
                    assert!(unknown.is_empty(), "{section}.{key} is reported unknown");
                }
            }
        }
    }

    #[test]
    fn unknown_keys_get_the_closest_known_one() {
        let w = |k: &str| unknown_key_warning(k);
        assert!(
            w("cells.heartbeat_stale_treshold")
                .contains("did you mean cells.heartbeat_stale_threshold?")
        );
        assert!(w("cells.state_dir").contains("did you mean daemon.state_dir?"));
        assert!(w("cels").contains("did you mean [cells]?"));
        assert!(w("root").contains("did you mean cells.root?"));
        assert!(w("deamon").contains("did you mean [daemon]?"));
        assert!(!w("cells.zzzzzzzzzzzz").contains("did you mean"));
    }

    #[test]
    fn fractional_durations_and_unknown_keys() {
        let (c, unknown) = parse(
            "[cells]\nheartbeat_stale_threshold = 0.25\npoll_interval = 2\nbogus = 1\n[weird]\nx = 1\n",
        )
        .expect("parse");
        assert_eq!(
            c.cells.heartbeat_stale_threshold,
            Duration::from_millis(250)
        );
        assert_eq!(c.cells.poll_interval, Duration::from_secs(2));
        assert_eq!(
            unknown,
            vec!["cells.bogus".to_string(), "weird".to_string()]
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let err = parse("[cells]\nresurrect_after = -3\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("test.toml:"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        let err = parse("[cells]\nroot = \n").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn hidden_paths_must_be_absolute_and_say_where() {
        let e = parse("[isolation]\nhidden_paths = [\"/root\", \"home/x\"]\n").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("line 2") && text.contains("\"home/x\" is not an absolute path"),
            "{text}"
        );
        let (c, _) = parse("[isolation]\nhidden_paths = [\"/root\"]\n").unwrap();
        assert_eq!(c.isolation.hidden_paths, vec![PathBuf::from("/root")]);
    }

    #[test]
    fn absurd_durations_are_errors_not_panics() {
        for bad in ["1e19", "-3", "315662401", "nan"] {
            let text = format!("[cells]\nkill_grace = {bad}\n");
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains("line 2"), "{bad}: {err}");
        }
        let err = parse("[cells]\nheartbeat_stale_threshold = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("positive"), "{err}");
        let (c, _) = parse("[cells]\nkill_grace = 0\nbackoff_max = 315360000\n").expect("ok");
        assert_eq!(c.cells.kill_grace, Duration::ZERO);
        assert_eq!(c.cells.backoff_max, Duration::from_secs(315_360_000));
    }

    #[test]
    fn root_precedence() {
        let (c, _) = parse("[cells]\nroot = \"/srv/cells\"\n").expect("parse");
        assert_eq!(c.root(None), PathBuf::from("/srv/cells"));
        assert_eq!(c.root(Some(Path::new("/x"))), PathBuf::from("/x"));
    }
}
