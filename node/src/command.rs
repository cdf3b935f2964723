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
    let days = seconds.div_euclid(86_400);
    let rest = seconds.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z ({seconds})",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}
