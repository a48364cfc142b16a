//! Agent names become file names (`heartbeats/<agent>.json`,
//! `logs/<agent>.log`, `bus/inbox/<agent>/`), so they are checked before
//! anything is written.

/// Longest agent name accepted.
pub const MAX_AGENT_NAME: usize = 64;

/// Checks an agent name: 1–64 characters of `[A-Za-z0-9._-]`, not starting
/// with `.`. The error says what is wrong, for the user's message.
pub fn validate_agent_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("an agent name cannot be empty".into());
    }
    if name.len() > MAX_AGENT_NAME {
        return Err(format!(
            "an agent name has at most {MAX_AGENT_NAME} characters, this one has {}",
            name.chars().count()
        ));
    }
    if name.starts_with('.') {
        return Err("an agent name cannot start with '.'".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{bad:?} is not allowed in an agent name (letters, digits, '.', '_' and '-' only)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for ok in ["claude", "a", "agent-1", "Agent_2.v3", &"x".repeat(64)] {
            assert!(validate_agent_name(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_names_that_are_not_safe_file_names() {
        for bad in [
            "",
            "../x",
            ".hidden",
            "a/b",
            ".",
            "..",
            "a b",
            "a\0b",
            "é",
            "a\nb",
            &"x".repeat(65),
        ] {
            assert!(validate_agent_name(bad).is_err(), "{bad:?}");
        }
    }
}
