//! A temporary cells root and the real binary, run against it.
//!
//! Every [`Env`] has its own root and its own (empty) config file, and
//! clears the `LAZARUS_*` variables of the calling environment, so no test
//! reads `/etc` or touches `/var/missions`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_lazarus-pit");

pub struct Env {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub config: PathBuf,
}

/// The outcome of one run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Shown in failure messages (through `Debug`).
    #[allow(dead_code)]
    pub args: Vec<String>,
}

impl Run {
    fn from_output(args: Vec<String>, out: Output) -> Run {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            args,
        }
    }

    /// Asserts exit 0 and returns self.
    #[track_caller]
    pub fn success(self) -> Run {
        assert_eq!(self.code, Some(0), "{self:#?}");
        self
    }

    /// Asserts the exit code and that stderr mentions `needle`.
    #[track_caller]
    pub fn fails(self, code: i32, needle: &str) -> Run {
        assert_eq!(self.code, Some(code), "{self:#?}");
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}: {self:#?}"
        );
        self
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self:#?}"))
    }
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("missions");
        let config = tmp.path().join("lazarus-pit.toml");
        std::fs::write(&config, "").expect("config");
        Env { tmp, root, config }
    }

    /// A command for the binary with this env's root and config.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("LAZARUS_") {
                cmd.env_remove(&key);
            }
        }
        cmd.args(args)
            .env("LAZARUS_ROOT", &self.root)
            .env("LAZARUS_CONFIG", &self.config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_cmd(self.command(args), args)
    }

    pub fn run_cmd(&self, mut cmd: Command, args: &[&str]) -> Run {
        let out = cmd.output().expect("run lazarus-pit");
        Run::from_output(args.iter().map(|s| s.to_string()).collect(), out)
    }

    /// `cell create` with `args`; returns the new UUID.
    pub fn create(&self, args: &[&str]) -> String {
        let mut all = vec!["cell", "create"];
        all.extend_from_slice(args);
        let run = self.run(&all).success();
        let uuid = run.stdout.trim().to_string();
        assert_eq!(uuid.len(), 36, "{run:#?}");
        uuid
    }

    pub fn cell(&self, uuid: &str) -> PathBuf {
        self.root.join(uuid)
    }

    pub fn manifest(&self, uuid: &str) -> Value {
        read_json(&self.cell(uuid).join("cell.json"))
    }

    /// Every line of the cell's events.jsonl, each parsed (a torn line fails).
    pub fn events(&self, uuid: &str) -> Vec<Value> {
        read_jsonl(&self.cell(uuid).join("logs/events.jsonl"))
    }

    pub fn event_names(&self, uuid: &str) -> Vec<String> {
        self.events(uuid)
            .iter()
            .map(|e| e["event"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    /// Every file below the root, relative, sorted (to prove nothing was written).
    pub fn tree(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.root, &self.root, &mut out);
        out.sort();
        out
    }
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        out.push(
            path.strip_prefix(base)
                .unwrap_or(&path)
                .display()
                .to_string(),
        );
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(base, &path, out);
        }
    }
}

pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(text.is_empty() || text.ends_with('\n'), "last line is torn");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("torn line {l:?}: {e}")))
        .collect()
}

/// Waits until `cond` holds, checking every 10 ms, failing after `limit`.
#[allow(dead_code)]
#[track_caller]
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The repository's own files (schemas, templates, spec).
pub fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}
