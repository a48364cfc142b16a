//! Setting `cell.json` fields from text (`cell set KEY=VALUE`, the flags of
//! `cell join`): which fields may be set at which level, how each value is
//! read, and what changed.
//!
//! A field is set on the entry's JSON object and the entry is read back
//! through the typed manifest, so fields this program does not know stay
//! exactly as they were, and a value the manifest would reject is refused
//! here with the manifest's own words ([`Manifest::problems`]).

use serde_json::{Map, Number, Value};

use super::manifest::{Agent, CGROUP_LIMIT_NAMES, LIMIT_NAMES, Manifest, Seconds};

/// How a field's text is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Policy,
    Restart,
    Isolation,
    /// Seconds, integer or fractional.
    Seconds,
    Count,
    Bool,
    /// Agent names, comma-separated.
    Names,
    /// A string (run with `/bin/sh -c`) or a JSON array (an argv).
    Command,
}

/// The fields `cell set` changes on a cell.
const CELL_FIELDS: &[(&str, Kind)] = &[
    ("name", Kind::Text),
    ("mission", Kind::Text),
    ("revive_policy", Kind::Policy),
    ("max_revive_attempts", Kind::Count),
    ("heartbeat_stale_threshold", Kind::Seconds),
    ("resurrect_after", Kind::Seconds),
    ("idle_timeout", Kind::Seconds),
    ("max_duration", Kind::Seconds),
    ("checkpoint_interval", Kind::Seconds),
    ("isolation", Kind::Isolation),
];

/// The fields `cell set --agent` changes on an agent (`env.K` and
/// `limits.NAME` besides, at either level for limits).
const AGENT_FIELDS: &[(&str, Kind)] = &[
    ("role", Kind::Text),
    ("command", Kind::Command),
    ("revive_policy", Kind::Policy),
    ("substitutes", Kind::Names),
    ("heartbeat_stale_threshold", Kind::Seconds),
    ("resurrect_after", Kind::Seconds),
    ("max_revive_attempts", Kind::Count),
    ("autostart", Kind::Bool),
    ("restart", Kind::Restart),
    ("isolation", Kind::Isolation),
];

/// Shorter spellings, as `cell join` names its flags.
const ALIASES: &[(&str, &str)] = &[
    ("stale_after", "heartbeat_stale_threshold"),
    ("substitute", "substitutes"),
    ("policy", "revive_policy"),
];

/// Fields that have their own command.
const OWN_COMMAND: &[(&str, &str)] = &[
    ("status", "use cell freeze, thaw, archive or destroy"),
    ("agents", "use cell join and cell leave"),
    ("uuid", "a cell's UUID never changes"),
    ("created_at", "it records when the cell was made"),
    ("created_by", "it records who made the cell"),
    (
        "name",
        "an agent's name is its identity: leave and join again",
    ),
    ("joined_at", "it records when the agent joined"),
];

/// One field set: its name and the value before and after (`None`:
/// absent, so the next level applies).
#[derive(Debug, Clone, PartialEq)]
pub struct Assigned {
    pub key: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

impl Assigned {
    /// With an `env` value shown only as `(set)`: values may be secrets.
    pub fn redacted(&self) -> Assigned {
        if !self.key.starts_with("env.") {
            return self.clone();
        }
        let hide = |v: &Option<Value>| v.as_ref().map(|_| Value::String("(set)".into()));
        Assigned {
            key: self.key.clone(),
            before: hide(&self.before),
            after: hide(&self.after),
        }
    }

    /// `revive_policy: yes -> ask`, for people (`env` values redacted).
    pub fn describe(&self) -> String {
        let this = self.redacted();
        let show = |v: &Option<Value>| match v {
            None => "(unset)".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        };
        format!(
            "{}: {} -> {}",
            this.key,
            show(&this.before),
            show(&this.after)
        )
    }
}

/// Why a field was not set: in what was typed (`usage`: a key or value
/// that can never be right) or in the cell (no such agent, a manifest the
/// change would make invalid).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub usage: bool,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// One `KEY=VALUE`, checked without a manifest: the field, the entry of
/// an object field (`env.K`, `limits.NAME`), and the value (`None`:
/// remove).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    key: String,
    field: String,
    entry: Option<String>,
    value: Option<Value>,
}

/// Checks `key` and `text` for a cell (`agent` false) or an agent: every
/// usage error is found here, before any cell is read.
pub fn parse(agent: bool, key: &str, text: &str) -> Result<Parsed, String> {
    let key = ALIASES
        .iter()
        .find(|(alias, _)| *alias == key)
        .map_or(key, |(_, field)| field);
    let fields = if agent { AGENT_FIELDS } else { CELL_FIELDS };
    // `env.K` (agents) and `limits.NAME`: one entry of an object field.
    let (field, entry) = match key.split_once('.') {
        Some((f @ ("env" | "limits"), e)) if !e.is_empty() => (f, Some(e)),
        _ => (key, None),
    };
    let kind = match (field, entry) {
        ("env", Some(name)) if agent => {
            env_name(name)?;
            None
        }
        ("limits", Some(name)) => {
            if !LIMIT_NAMES.contains(&name) && !CGROUP_LIMIT_NAMES.contains(&name) {
                return Err(format!(
                    "limits.{name}: not one of {}, {}",
                    LIMIT_NAMES.join(", "),
                    CGROUP_LIMIT_NAMES.join(", ")
                ));
            }
            None
        }
        _ => Some(
            fields
                .iter()
                .find(|(f, _)| *f == field)
                .map(|(_, k)| *k)
                .ok_or_else(|| unknown(key, agent))?,
        ),
    };
    let value = if text.is_empty() {
        None
    } else {
        Some(match (field, kind) {
            ("env", _) => Value::String(text.to_string()),
            ("limits", _) => {
                let v = limit_value(text)?;
                let name = entry.unwrap_or_default();
                if super::manifest::limit_value(name, &v).is_none() {
                    return Err(format!("limits.{name}={text:?}: not a value it takes"));
                }
                v
            }
            (_, Some(kind)) => parse_value(kind, key, text)?,
            (_, None) => unreachable!("a plain field has a kind"),
        })
    };
    Ok(Parsed {
        key: key.to_string(),
        field: field.to_string(),
        entry: entry.map(str::to_string),
        value,
    })
}

/// An environment variable name an agent can be given: a portable shell
/// name, not one of the daemon's own (`LAZARUS_*` always win).
fn env_name(name: &str) -> Result<(), String> {
    let portable = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !portable {
        return Err(format!(
            "env.{}: an environment variable name is letters, digits and '_', not starting with a digit",
            crate::text::escape(name)
        ));
    }
    if name.starts_with("LAZARUS_") {
        return Err(format!(
            "env.{name}: the daemon sets LAZARUS_* itself for every agent, over its env"
        ));
    }
    Ok(())
}

/// Sets `key` to `text` on the cell (`agent` is `None`) or on one of its
/// agents. An empty `text` removes the field. The manifest is unchanged
/// when the result is an error.
pub fn assign(
    manifest: &mut Manifest,
    agent: Option<&str>,
    key: &str,
    text: &str,
) -> Result<Assigned, FieldError> {
    let parsed = parse(agent.is_some(), key, text).map_err(|message| FieldError {
        usage: true,
        message,
    })?;
    apply(manifest, agent, &parsed).map_err(|message| FieldError {
        usage: false,
        message,
    })
}

/// Sets a parsed field on the cell or `agent`; the manifest is unchanged
/// on error.
pub fn apply(manifest: &mut Manifest, agent: Option<&str>, p: &Parsed) -> Result<Assigned, String> {
    let (field, value) = (p.field.as_str(), &p.value);
    let mut object = match agent {
        None => to_object(&*manifest),
        Some(name) => to_object(manifest.agent(name).ok_or_else(|| no_agent(name))?),
    };
    let before;
    match p.entry.as_deref() {
        None => {
            before = object.get(field).cloned();
            match value {
                Some(v) => object.insert(field.to_string(), v.clone()),
                None => object.remove(field),
            };
        }
        Some(entry) => {
            let slot = object
                .entry(field.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(map) = slot else {
                return Err(format!("{field} is not an object in cell.json"));
            };
            before = map.get(entry).cloned();
            match value {
                Some(v) => map.insert(entry.to_string(), v.clone()),
                None => map.remove(entry),
            };
            if map.is_empty() {
                object.remove(field);
            }
        }
    }
    let invalid = |e: serde_json::Error| format!("cell.json would not be valid: {e}");
    let mut next = manifest.clone();
    match agent {
        None => {
            let agents = std::mem::take(&mut next.agents);
            next = serde_json::from_value(Value::Object(object)).map_err(invalid)?;
            next.agents = agents;
        }
        Some(name) => {
            let updated: Agent = serde_json::from_value(Value::Object(object)).map_err(invalid)?;
            if let Some(slot) = next.agents.iter_mut().find(|a| a.name == name) {
                *slot = updated;
            }
        }
    }
    // Only the problems this change brought: an old one elsewhere in the
    // file is not this command's to refuse.
    let old = manifest.problems();
    if let Some(problem) = next.problems().into_iter().find(|p| !old.contains(p)) {
        return Err(problem);
    }
    *manifest = next;
    Ok(Assigned {
        key: p.key.clone(),
        before,
        after: value.clone(),
    })
}

/// Splits `KEY=VALUE`.
pub fn split(assignment: &str) -> Result<(&str, &str), String> {
    match assignment.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k, v)),
        _ => Err(format!(
            "{assignment:?}: expected KEY=VALUE (an empty VALUE removes the field)"
        )),
    }
}

fn parse_value(kind: Kind, key: &str, text: &str) -> Result<Value, String> {
    let one_of = |choices: &[&str]| {
        if choices.contains(&text) {
            Ok(Value::String(text.to_string()))
        } else {
            let hint = crate::text::closest(text, choices)
                .map(|c| format!(" (did you mean {c}?)"))
                .unwrap_or_default();
            Err(format!(
                "{key}={text:?}: expected one of {}{hint}",
                choices.join(", ")
            ))
        }
    };
    match kind {
        Kind::Text => Ok(Value::String(text.to_string())),
        Kind::Policy => one_of(&["yes", "no", "ask", "substitute"]),
        Kind::Restart => one_of(&["on-failure", "always"]),
        Kind::Isolation => one_of(&["directory", "mount-namespace", "podman"]),
        Kind::Seconds => {
            // Seconds, or a duration such as `90s`, `10m`, `1h30m`.
            let secs: f64 = text
                .parse()
                .ok()
                .or_else(|| crate::text::duration_secs(text))
                .ok_or_else(|| {
                    format!("{key}={text:?}: expected a number of seconds (or 90s, 10m, 2h)")
                })?;
            crate::config::bounded_seconds(secs, true).map_err(|e| format!("{key}: {e}"))?;
            let seconds = Seconds::from_secs_f64(secs)
                .ok_or_else(|| format!("{key}={text:?}: expected a number of seconds"))?;
            Ok(Value::Number(seconds.0))
        }
        Kind::Count => text
            .parse::<u32>()
            .map(|n| Value::Number(n.into()))
            .map_err(|_| {
                format!(
                    "{key}={text:?}: expected a whole number from 0 to {}",
                    u32::MAX
                )
            }),
        Kind::Bool => match text {
            "true" | "yes" | "on" | "1" => Ok(Value::Bool(true)),
            "false" | "no" | "off" | "0" => Ok(Value::Bool(false)),
            _ => Err(format!("{key}={text:?}: expected true or false")),
        },
        Kind::Names => {
            let names: Vec<Value> = text
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(|n| {
                    super::name::validate_agent_name(n)
                        .map(|()| Value::String(n.to_string()))
                        .map_err(|e| format!("{key}: {n:?}: {e}"))
                })
                .collect::<Result<_, _>>()?;
            Ok(Value::Array(names))
        }
        Kind::Command => {
            if text.trim_start().starts_with('[') {
                let argv: Vec<String> = serde_json::from_str(text).map_err(|e| {
                    format!("{key}: a value starting with '[' must be a JSON array of strings: {e}")
                })?;
                if argv.first().is_none_or(|p| p.is_empty()) {
                    return Err(format!("{key}: the argv has no program"));
                }
                Ok(Value::Array(argv.into_iter().map(Value::String).collect()))
            } else if text.trim().is_empty() {
                Err(format!("{key}: a blank shell line runs nothing"))
            } else {
                Ok(Value::String(text.to_string()))
            }
        }
    }
}

/// A `limits` value: a number as written (`cpu.max` takes fractions).
fn limit_value(text: &str) -> Result<Value, String> {
    if let Ok(n) = text.parse::<u64>() {
        return Ok(Value::Number(n.into()));
    }
    text.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map(Value::Number)
        .ok_or_else(|| format!("limits: {text:?} is not a number"))
}

fn to_object<T: serde::Serialize>(value: &T) -> Map<String, Value> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

fn no_agent(name: &str) -> String {
    format!("no agent named {name:?} is in the cell")
}

fn unknown(key: &str, agent: bool) -> String {
    let (level, fields, other) = if agent {
        ("an agent", AGENT_FIELDS, CELL_FIELDS)
    } else {
        ("a cell", CELL_FIELDS, AGENT_FIELDS)
    };
    if let Some((_, why)) = OWN_COMMAND
        .iter()
        .find(|(f, _)| *f == key && !(agent && *f == "status"))
        .filter(|(f, _)| !fields.iter().any(|(known, _)| known == f))
    {
        return format!("{key} cannot be set here: {why}");
    }
    let mut names: Vec<&str> = fields.iter().map(|(f, _)| *f).collect();
    names.extend(ALIASES.iter().map(|(a, _)| *a));
    if let Some(close) = crate::text::closest(key, &names) {
        return format!("{key:?} is not a field of {level} (did you mean {close}?)");
    }
    if other.iter().any(|(f, _)| *f == key) {
        return format!(
            "{key:?} is not a field of {level}; it is one of {}",
            if agent {
                "the cell (leave out --agent)"
            } else {
                "an agent (add --agent NAME)"
            }
        );
    }
    let mut all = names;
    all.push(if agent { "env.NAME" } else { "limits.NAME" });
    if agent {
        all.push("limits.NAME");
    }
    format!(
        "{key:?} is not a field of {level}: one of {}",
        all.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest::from_slice(
            br#"{"uuid":"u","status":"active","gitea_issue":7,
                "agents":[{"name":"a","command":["x"],"mine":{"deep":[1]}},{"name":"b"}]}"#,
        )
        .expect("parse")
    }

    #[test]
    fn sets_agent_fields_and_keeps_unknown_ones() {
        let mut m = manifest();
        let a = assign(&mut m, Some("a"), "revive_policy", "ask").expect("set");
        assert_eq!(a.before, None);
        assert_eq!(a.after, Some(Value::String("ask".into())));
        assign(&mut m, Some("a"), "stale_after", "30").expect("alias");
        assign(&mut m, Some("a"), "resurrect_after", "2.5").expect("fraction");
        assign(&mut m, Some("b"), "resurrect_after", "1m30s").expect("duration");
        assert_eq!(m.agents[1].resurrect_after, Seconds::from_secs_f64(90.0));
        assign(&mut m, Some("a"), "substitutes", "b").expect("names");
        assign(&mut m, Some("a"), "env.TOKEN", "x=y").expect("env");
        assign(&mut m, Some("a"), "limits.nofile", "1024").expect("limit");
        let text = String::from_utf8(m.to_bytes()).expect("utf-8");
        assert!(
            text.contains(r#""heartbeat_stale_threshold": 30,"#),
            "{text}"
        );
        assert!(text.contains(r#""resurrect_after": 2.5"#), "{text}");
        assert!(text.contains(r#""deep""#), "{text}");
        assert!(text.contains(r#""gitea_issue": 7"#), "{text}");
        assert!(text.contains(r#""TOKEN": "x=y""#), "{text}");
    }

    #[test]
    fn an_empty_value_removes_the_field() {
        let mut m = manifest();
        assign(&mut m, Some("a"), "restart", "always").expect("set");
        let a = assign(&mut m, Some("a"), "restart", "").expect("unset");
        assert_eq!(a.before, Some(Value::String("always".into())));
        assert_eq!(m.agents[0].restart, None);
        assign(&mut m, Some("a"), "env.K", "v").expect("set");
        assign(&mut m, Some("a"), "env.K", "").expect("unset");
        assert_eq!(m.agents[0].env, None);
    }

    #[test]
    fn bad_values_change_nothing_and_say_why() {
        let mut m = manifest();
        let before = m.clone();
        for (agent, key, value, says) in [
            (Some("a"), "revive_policy", "mabye", "expected one of"),
            (Some("a"), "restart", "alwyas", "did you mean always"),
            (Some("a"), "stale_after", "-1", "positive"),
            (Some("a"), "stale_after", "1e30", "ten years"),
            (Some("a"), "stale_after", "1e-12", "at least 0.001"),
            (Some("a"), "autostart", "perhaps", "true or false"),
            (Some("a"), "substitutes", "a", "cannot substitute itself"),
            (Some("a"), "substitutes", "x/y", "not allowed"),
            (Some("a"), "limits.nofiles", "1", "not one of"),
            (Some("a"), "limits.cpu.max", "0", "not a value it takes"),
            (Some("a"), "env.A B", "x", "environment variable name"),
            (Some("a"), "env.LAZARUS_CELL_UUID", "x", "sets LAZARUS_"),
            (Some("a"), "command", "[\"\"]", "no program"),
            (Some("a"), "command", "  ", "runs nothing"),
            (Some("a"), "command", "[1]", "JSON array of strings"),
            (
                Some("a"),
                "revive_polcy",
                "yes",
                "did you mean revive_policy",
            ),
            (Some("a"), "status", "active", "not a field"),
            (None, "status", "active", "cell freeze"),
            (None, "autostart", "true", "add --agent"),
            (None, "max_revive_attempts", "-1", "whole number"),
            (Some("ghost"), "restart", "always", "no agent named"),
        ] {
            let err = assign(&mut m, agent, key, value).expect_err(key).message;
            assert!(err.contains(says), "{key}={value}: {err}");
            assert_eq!(m, before, "{key}={value} changed the manifest");
        }
    }

    #[test]
    fn a_command_is_a_shell_line_or_an_argv() {
        let mut m = manifest();
        assign(&mut m, Some("b"), "command", "sleep 1 && exit").expect("shell");
        assert_eq!(
            m.agents[1].command,
            Some(super::super::manifest::AgentCommand::Shell(
                "sleep 1 && exit".into()
            ))
        );
        assign(&mut m, Some("b"), "command", r#"["/bin/agent","--fast"]"#).expect("argv");
        assert_eq!(
            m.agents[1].command,
            Some(super::super::manifest::AgentCommand::Argv(vec![
                "/bin/agent".into(),
                "--fast".into()
            ]))
        );
    }

    #[test]
    fn cell_fields_keep_the_agents() {
        let mut m = manifest();
        assign(&mut m, None, "revive_policy", "no").expect("set");
        assign(&mut m, None, "mission", "ship it").expect("set");
        assert_eq!(m.agents.len(), 2);
        assert_eq!(m.extra.get("gitea_issue"), Some(&Value::from(7)));
        assert_eq!(m.mission.as_deref(), Some("ship it"));
    }
}
