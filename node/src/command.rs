//! What every command of the `meridian` binary shares: the report it prints, the error that
//! means "your input was refused" (exit 1), and how times and durations are written. The
//! command modules ([`crate::cli`], [`crate::gov_cli`], [`crate::agent_cli`], [`crate::demo`])
//! import this; it imports none of them.

/// What a command prints: a line of text for people and a JSON value for programs.
#[derive(Debug)]
pub struct Report {
    /// Text output.
    pub text: String,
    /// JSON output.
    pub json: serde_json::Value,
}

/// A problem found while checking input; exits with code 1 rather than 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub String);

/// Parses `90`, `90s`, `15m`, `12h` or `30d` into seconds.
pub fn parse_duration_secs(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(index) => text.split_at(index),
        None => (text, "s"),
    };
    let value: i64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 3600s, 90m, 12h or 30d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown duration unit `{unit}` (use s, m, h or d)")),
    };
    let seconds = value
        .checked_mul(scale)
        .filter(|s| *s > 0 && *s <= 10 * 365 * 86_400)
        .ok_or_else(|| format!("duration `{text}` must be between 1s and 10 years"))?;
    Ok(seconds)
}

/// Unix seconds as `2026-12-06T13:44:37Z (1796564677)`: readable, and still the number.
pub fn utc(seconds: i64) -> String {
    format!("{} ({seconds})", meridian_registry::time::iso8601(seconds))
}
