//! Templates for `cell create --template FILE`: a `cell.json`-shaped JSON
//! file, or a filled `mission-proposal.md` whose tables map one-to-one onto
//! `cell.json` fields.

use std::path::Path;

use serde_json::{Map, Value};

use super::manifest::Manifest;
use crate::error::{Error, Result};

/// Largest template read.
const TEMPLATE_LIMIT: u64 = 1024 * 1024;

/// Fields whose value is text even when it looks like a number.
const STRING_FIELDS: &[&str] = &[
    "name",
    "mission",
    "created_by",
    "revive_policy",
    "isolation",
    "repo",
];

/// Loads a template: Markdown (by extension `.md`) or JSON.
pub fn load(path: &Path) -> Result<Manifest> {
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("template {}: {e}", path.display()),
        ))
    })?;
    if meta.len() > TEMPLATE_LIMIT {
        return Err(Error::Config {
            path: path.to_path_buf(),
            message: format!(
                "template is {} bytes, more than {TEMPLATE_LIMIT}",
                meta.len()
            ),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("template {}: {e}", path.display()),
        ))
    })?;
    let value = if path.extension().is_some_and(|e| e == "md") {
        from_proposal(&text).map_err(|message| Error::Config {
            path: path.to_path_buf(),
            message,
        })?
    } else {
        serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?
    };
    serde_json::from_value(value).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Turns a filled proposal into `cell.json`-shaped JSON. Two kinds of table
/// rows count:
///
/// - `` | `field` | value | ``: a cell field; the value is read as JSON if
///   it parses (numbers, `true`, arrays), else as a string; empty is skipped.
/// - rows of a table whose header starts with `Agent`: `name | role |
///   command`, one agent per row (`command` run with `/bin/sh -c`).
pub fn from_proposal(text: &str) -> Result<Value, String> {
    let mut cell = Map::new();
    let mut agents = Vec::new();
    let mut in_agent_table = false;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if !line.starts_with('|') {
            in_agent_table = false;
            continue;
        }
        let cols: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cols
            .iter()
            .all(|c| c.chars().all(|ch| matches!(ch, '-' | ':' | ' ')))
        {
            continue; // separator row
        }
        let first = cols.first().copied().unwrap_or("");
        if first.eq_ignore_ascii_case("agent") || first.eq_ignore_ascii_case("agents") {
            in_agent_table = true;
            continue;
        }
        if in_agent_table {
            let name = first.trim_matches('`').trim_start_matches('@');
            if name.is_empty() {
                continue;
            }
            let mut agent = Map::new();
            agent.insert("name".into(), name.into());
            if let Some(role) = cols.get(1).filter(|r| !r.is_empty()) {
                agent.insert("role".into(), (*role).into());
            }
            if let Some(cmd) = cols
                .get(2)
                .map(|c| c.trim_matches('`'))
                .filter(|c| !c.is_empty())
            {
                agent.insert("command".into(), cmd.into());
            }
            agents.push(Value::Object(agent));
            continue;
        }
        let Some(field) = first.strip_prefix('`').and_then(|f| f.strip_suffix('`')) else {
            continue;
        };
        let raw = cols.get(1).copied().unwrap_or("").trim_matches('`').trim();
        if raw.is_empty() {
            continue;
        }
        if field.is_empty() || field.contains(char::is_whitespace) {
            return Err(format!("line {}: {field:?} is not a field name", i + 1));
        }
        let value = if STRING_FIELDS.contains(&field) {
            Value::String(raw.to_string())
        } else {
            serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
        };
        cell.insert(field.to_string(), value);
    }
    if !agents.is_empty() {
        cell.insert("agents".into(), Value::Array(agents));
    }
    Ok(Value::Object(cell))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposal_tables_become_fields() {
        let text = "\
## Cell configuration
| Field | Value |
|-------|-------|
| `mission` | Fix the flaky deploy |
| `name` | 2024 |
| `max_revive_attempts` | 5 |
| `heartbeat_stale_threshold` | 2.5 |
| `revive_policy` | ask |
| `checkpoint_interval` |  |

## Agents
| Agent | Role | Command |
|---|---|---|
| @claude | developer | `python3 agent.py` |
| gpt | reviewer | |
";
        let v = from_proposal(text).expect("parse");
        assert_eq!(v["mission"], "Fix the flaky deploy");
        assert_eq!(v["name"], "2024");
        assert_eq!(v["max_revive_attempts"], 5);
        assert_eq!(v["heartbeat_stale_threshold"], 2.5);
        assert_eq!(v["revive_policy"], "ask");
        assert!(v.get("checkpoint_interval").is_none());
        assert_eq!(v["agents"][0]["name"], "claude");
        assert_eq!(v["agents"][0]["command"], "python3 agent.py");
        assert_eq!(v["agents"][1]["role"], "reviewer");
        assert!(v["agents"][1].get("command").is_none());
        let m: Manifest = serde_json::from_value(v).expect("manifest");
        assert_eq!(m.agents.len(), 2);
    }
}
