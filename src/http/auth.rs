//! Who may call what: the operator's bearer token, and each agent's own
//! heartbeat token.
//!
//! An agent's token is HMAC-SHA256 over its cell's UUID and its name,
//! keyed by a secret in the daemon's state directory (`http-secret`, mode
//! 0600, made once): the daemon hands it to the agent as
//! `LAZARUS_HEARTBEAT_TOKEN`, and the server recomputes it, so no token
//! list is kept and one agent's token proves nothing for another. Removing
//! the secret rotates every token (agents get theirs at their next start).

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{DaemonConfig, HttpConfig};
use crate::error::{Error, Result};

/// The secret's file in the state directory.
pub const SECRET_FILE: &str = "http-secret";
/// The operator token's file in the state directory when `[http]
/// token_file` names none.
pub const DEFAULT_TOKEN_FILE: &str = "http-token";
/// Fewer bytes than this is not a token worth the name.
const MIN_TOKEN_LEN: usize = 16;
/// A token file larger than this is not a token.
const MAX_TOKEN_LEN: usize = 4096;

/// The key agents' tokens are derived from.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// The state directory's secret, made (32 random bytes, 0600) if it
    /// has none yet. Two processes making it at once agree: the file is
    /// linked into place only if absent, and the loser reads the winner's.
    pub fn load_or_create(cfg: &DaemonConfig) -> Result<Secret> {
        let dir = crate::records::private_state_dir(cfg)?;
        let path = dir.join(SECRET_FILE);
        if let Some(bytes) = read_private(&path, 32)? {
            return Secret::from_bytes(&path, &bytes);
        }
        create_private(&path, &random_bytes()?)?;
        let bytes = read_private(&path, 32)?.unwrap_or_default();
        Secret::from_bytes(&path, &bytes)
    }

    fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Secret> {
        <[u8; 32]>::try_from(bytes).map(Secret).map_err(|_| {
            Error::Io(std::io::Error::other(format!(
                "{}: not a secret of 32 bytes (remove it to make a new one; every agent's token changes)",
                path.display()
            )))
        })
    }

    /// `agent`'s heartbeat token in `cell` (64 hex digits).
    pub fn agent_token(&self, cell: &str, agent: &str) -> String {
        hex(&self.mac(cell, agent).finalize().into_bytes())
    }

    /// Whether `token` is `agent`'s in `cell`, in constant time.
    pub fn verify_agent(&self, cell: &str, agent: &str, token: &str) -> bool {
        let Some(bytes) = unhex(token) else {
            return false;
        };
        self.mac(cell, agent).verify_slice(&bytes).is_ok()
    }

    fn mac(&self, cell: &str, agent: &str) -> Hmac<Sha256> {
        // A key of any length is accepted by HMAC.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key");
        mac.update(b"lazarus-pit heartbeat v1\0");
        mac.update(cell.as_bytes());
        mac.update(b"\0");
        mac.update(agent.as_bytes());
        mac
    }
}

/// The operator's token, and the file it came from (said at start).
#[derive(Clone)]
pub struct OperatorToken {
    token: String,
    pub file: PathBuf,
}

impl std::fmt::Debug for OperatorToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OperatorToken({})", self.file.display())
    }
}

impl OperatorToken {
    /// `[http] token_file`, which must exist, be a regular file of this
    /// user's and be closed to others (0600, as ssh asks of its keys); or,
    /// when none is named, `http-token` in the state directory, made on
    /// first use.
    pub fn load(http: &HttpConfig, daemon: &DaemonConfig) -> Result<OperatorToken> {
        let file = match &http.token_file {
            Some(file) => file.clone(),
            None => {
                let file = crate::records::private_state_dir(daemon)?.join(DEFAULT_TOKEN_FILE);
                if read_private(&file, MAX_TOKEN_LEN)?.is_none() {
                    let token = hex(&random_bytes()?);
                    create_private(&file, format!("{token}\n").as_bytes())?;
                }
                file
            }
        };
        let bytes = read_private(&file, MAX_TOKEN_LEN)?.ok_or_else(|| {
            Error::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("[http] token_file {}: no such file", file.display()),
            ))
        })?;
        let token = String::from_utf8(bytes)
            .map(|t| t.trim().to_string())
            .unwrap_or_default();
        if token.len() < MIN_TOKEN_LEN || token.chars().any(|c| !c.is_ascii_graphic()) {
            return Err(Error::Io(std::io::Error::other(format!(
                "[http] token_file {}: a token is at least {MIN_TOKEN_LEN} printable characters \
                 without spaces (`openssl rand -hex 32 > {0}`)",
                file.display()
            ))));
        }
        Ok(OperatorToken { token, file })
    }

    /// The token itself, for the one line `serve` prints on a terminal.
    pub fn reveal(&self) -> &str {
        &self.token
    }

    /// Whether `given` is the operator's token, in constant time.
    pub fn verify(&self, given: &str) -> bool {
        constant_time_eq(self.token.as_bytes(), given.as_bytes())
    }

    #[cfg(test)]
    pub fn for_tests(token: &str) -> OperatorToken {
        OperatorToken {
            token: token.into(),
            file: PathBuf::from("/dev/null"),
        }
    }
}

/// Reads a file that holds a secret: `None` if it does not exist; an
/// error if it is not a regular file, is another user's, or others may
/// read or write it.
fn read_private(path: &Path, limit: usize) -> Result<Option<Vec<u8>>> {
    let refuse =
        |why: String| Error::Io(std::io::Error::other(format!("{}: {why}", path.display())));
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(refuse(e.to_string())),
    };
    let meta = file.metadata().map_err(|e| refuse(e.to_string()))?;
    if !meta.is_file() {
        return Err(refuse("is not a regular file".into()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(refuse(format!(
            "is owned by uid {}, not by this user (uid {me})",
            meta.uid()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(refuse(format!(
            "mode {:04o} lets others read it: chmod 600 it",
            meta.permissions().mode() & 0o7777
        )));
    }
    let mut bytes = Vec::new();
    Read::by_ref(&mut file)
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| refuse(e.to_string()))?;
    if bytes.len() > limit {
        return Err(refuse(format!("larger than {limit} bytes")));
    }
    Ok(Some(bytes))
}

/// Puts `data` at `path` (mode 0600) only if nothing is there: written
/// whole to a temporary name, then linked into place, so a reader never
/// sees half of it and a concurrent maker's file is never replaced.
fn create_private(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let io = |e: std::io::Error| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", path.display()),
        ))
    };
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result.map_err(io)
}

fn random_bytes() -> Result<[u8; 32]> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Error::Io(std::io::Error::new(e.kind(), format!("/dev/urandom: {e}"))))?;
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// Compares in time that depends on the lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(byte: u8) -> Secret {
        Secret([byte; 32])
    }

    #[test]
    fn an_agents_token_is_its_own() {
        let s = secret(7);
        let t = s.agent_token("c1", "a");
        assert_eq!(t.len(), 64);
        assert!(s.verify_agent("c1", "a", &t));
        assert!(!s.verify_agent("c1", "b", &t), "another agent's");
        assert!(!s.verify_agent("c2", "a", &t), "another cell's");
        assert!(!secret(8).verify_agent("c1", "a", &t), "another secret's");
        assert!(!s.verify_agent("c1", "a", "zz"));
        assert!(!s.verify_agent("c1", "a", ""));
        // The separator keeps ("c1", "0a") and ("c10", "a") apart.
        assert_ne!(s.agent_token("c1", "0a"), s.agent_token("c10", "a"));
    }

    #[test]
    fn bearer_takes_the_token_only() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }

    #[test]
    fn the_operator_token_compares_whole() {
        let t = OperatorToken::for_tests("0123456789abcdef");
        assert!(t.verify("0123456789abcdef"));
        assert!(!t.verify("0123456789abcde"));
        assert!(!t.verify("0123456789abcdeF"));
    }

    #[test]
    fn secrets_are_made_once_and_kept_private() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = DaemonConfig {
            state_dir: Some(dir.path().join("state")),
            ..Default::default()
        };
        let a = Secret::load_or_create(&cfg).expect("made");
        let b = Secret::load_or_create(&cfg).expect("read");
        assert_eq!(a.0, b.0);
        let path = dir.path().join("state").join(SECRET_FILE);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = Secret::load_or_create(&cfg).expect_err("open to others");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn a_named_token_file_must_be_private_and_a_token() {
        let dir = tempfile::tempdir().expect("tmp");
        let daemon = DaemonConfig {
            state_dir: Some(dir.path().join("state")),
            ..Default::default()
        };
        let file = dir.path().join("token");
        let http = HttpConfig {
            token_file: Some(file.clone()),
            ..Default::default()
        };
        let err = OperatorToken::load(&http, &daemon).expect_err("missing");
        assert!(err.to_string().contains("no such file"), "{err}");
        std::fs::write(&file, "short\n").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let err = OperatorToken::load(&http, &daemon).expect_err("short");
        assert!(err.to_string().contains("at least 16"), "{err}");
        std::fs::write(&file, "0123456789abcdef0123\n").expect("write");
        let t = OperatorToken::load(&http, &daemon).expect("good");
        assert!(t.verify("0123456789abcdef0123"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        assert!(OperatorToken::load(&http, &daemon).is_err());
        // None named: one is made in the state directory.
        let made = OperatorToken::load(&HttpConfig::default(), &daemon).expect("made");
        assert_eq!(made.file, dir.path().join("state").join(DEFAULT_TOKEN_FILE));
        let again = OperatorToken::load(&HttpConfig::default(), &daemon).expect("kept");
        assert_eq!(made.token, again.token);
    }
}
