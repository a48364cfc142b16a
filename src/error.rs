//! The library's error type. Every message names the file, cell or agent
//! at fault, as one sentence an operator can act on.

use std::path::PathBuf;

use crate::store::ReadError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line is wrong in a way clap cannot see (exit 2).
    #[error("{0}")]
    Usage(String),

    #[error("cells root {} does not exist (set it with --root, LAZARUS_ROOT or cells.root)", .0.display())]
    RootMissing(PathBuf),

    #[error("no cell in {} has the UUID, prefix or name {prefix:?}", root.display())]
    CellNotFound { prefix: String, root: PathBuf },

    #[error("{prefix:?} matches {} cells (by UUID prefix or name), give more of the UUID: {}", candidates.len(), candidates.join(", "))]
    AmbiguousCell {
        prefix: String,
        candidates: Vec<String>,
    },

    #[error("{0:?} is not a cell id: give a cell's UUID, a unique prefix of it, or its name")]
    BadCellId(String),

    #[error("invalid agent name {name:?}: {reason}")]
    InvalidAgentName { name: String, reason: String },

    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: ReadError,
    },

    /// Not JSON at all, or JSON with a value of the wrong kind (an
    /// unknown `isolation`, a string for a number): said apart.
    #[error("{}: {}: {source}", path.display(), json_problem(source))]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("{}: {}", path.display(), problems.join("; "))]
    InvalidManifest {
        path: PathBuf,
        problems: Vec<String>,
    },

    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },

    #[error("cell {cell}: cannot {action}: {reason}")]
    Refused {
        cell: String,
        action: String,
        reason: String,
    },

    #[error("another lazarus-pit daemon{} already runs on {}", pid.map(|p| format!(" (pid {p})")).unwrap_or_default(), root.display())]
    AlreadyRunning { root: PathBuf, pid: Option<u32> },

    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The process exit code (BRIEF 8), one rule for every command: 2 when
    /// what was typed can never be right (a flag clap cannot check, an
    /// agent name or cell id of the wrong form), 1 when a well-formed
    /// command failed (no such cell, refused, I/O).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::InvalidAgentName { .. } | Error::BadCellId(_) => 2,
            _ => 1,
        }
    }

    pub fn refused(cell: &str, action: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Refused {
            cell: cell.to_string(),
            action: action.into(),
            reason: reason.into(),
        }
    }
}

/// How a JSON error reads: the text is not JSON, or a value in it is not
/// one this program takes.
pub fn json_problem(e: &serde_json::Error) -> &'static str {
    if e.is_data() {
        "invalid value"
    } else {
        "invalid JSON"
    }
}
