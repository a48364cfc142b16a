//! Text an agent wrote, made safe to print on an operator's terminal.
//!
//! Heartbeat statuses, missions, names and every field of an event can be
//! written by an agent. Printed raw, a control character in them is a
//! command to the terminal: `ESC[2K` erases a line, `ESC[1A` moves up over
//! an earlier one, an OSC sequence retitles the window or writes the
//! clipboard, and a bidirectional override reorders what is shown. Human
//! output goes through [`escape`], which spells every such character out
//! (`\x1b`, `\u{202e}`) so it is seen, not obeyed. `--json` output needs no
//! more than JSON's own escaping.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether a character must not reach a terminal as itself: C0 and C1
/// controls (tab and newline included: one field, one line), DEL, and
/// the Unicode format characters that reorder or hide text.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}'   // zero-width characters, LRM/RLM
            | '\u{2028}'..='\u{202e}' // line/paragraph separators, embeddings, overrides
            | '\u{2060}'..='\u{2069}' // word joiner, invisible operators, isolates
            | '\u{feff}'              // zero-width no-break space
        )
}

/// `text` with every unsafe character escaped; borrowed when there is
/// none (the common case costs one scan and no allocation).
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !unsafe_char(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

/// Bytes that should be text (a line of a file an agent can write):
/// invalid UTF-8 becomes U+FFFD, then [`escape`].
pub fn escape_bytes(bytes: &[u8]) -> String {
    escape(&String::from_utf8_lossy(bytes)).into_owned()
}

/// The candidate nearest to `word` by edit distance, if one is near
/// enough to be what was meant (a typo, not another word).
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let distance = |a: &str, b: &str| {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let here = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != *cb))
                    .min(row[j] + 1)
                    .min(here + 1);
                prev = here;
            }
        }
        row[b.len()]
    };
    candidates
        .iter()
        .map(|c| (distance(word, c), *c))
        .filter(|(d, c)| *d <= (c.chars().count() / 3).max(1))
        .min()
        .map(|(_, c)| c)
}

/// Seconds of a duration like `1h30m` or `1.5d`; `None` if it is not one.
pub fn duration_secs(s: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let n: f64 = number.parse().ok()?;
        let scale = match unit {
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            "w" | "week" | "weeks" => 7.0 * 86400.0,
            _ => return None,
        };
        total += n * scale;
        rest = next;
    }
    (total.is_finite() && total < 1e11).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_untouched() {
        assert!(matches!(escape("thinking é 漢字 🚀"), Cow::Borrowed(_)));
    }

    #[test]
    fn terminal_commands_are_spelled_out() {
        assert_eq!(escape("a\x1b[2Kb"), "a\\x1b[2Kb");
        assert_eq!(escape("up\x1b[1A"), "up\\x1b[1A");
        assert_eq!(escape("\x1b]0;pwned\x07"), "\\x1b]0;pwned\\x07");
        assert_eq!(
            escape("tab\tnl\ncr\rdel\x7f"),
            "tab\\x09nl\\x0acr\\x0ddel\\x7f"
        );
        // C1 controls (CSI as one character) and bidirectional overrides.
        assert_eq!(escape("\u{9b}2K"), "\\u{9b}2K");
        assert_eq!(escape("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(escape("\u{2066}x\u{2069}"), "\\u{2066}x\\u{2069}");
    }

    #[test]
    fn invalid_utf8_is_shown_not_lost() {
        assert_eq!(escape_bytes(b"ok\xff\x1b"), "ok\u{fffd}\\x1b");
    }

    #[test]
    fn closest_finds_typos_not_other_words() {
        let names = ["agent_dead", "agent_stale", "heartbeat"];
        assert_eq!(closest("agent_ded", &names), Some("agent_dead"));
        assert_eq!(closest("hearbeat", &names), Some("heartbeat"));
        assert_eq!(closest("checkpoint", &names), None);
    }
}
