//! Terminal rendering shared by the registry commands' tables.

use serde_json::Value;

/// A JSON value on one line, `-` for null.
pub fn compact(value: &Value) -> String {
    if value.is_null() {
        "-".to_string()
    } else {
        value.to_string()
    }
}

/// `-` for an empty field.
pub fn or_dash(text: &str) -> &str {
    if text.is_empty() { "-" } else { text }
}

/// The first 12 hex characters, enough to tell versions apart in a table.
pub fn short_digest(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// One line of at most `max` characters, cut with `…`.
pub fn truncate(text: &str, max: usize) -> String {
    let one_line = text.replace(['\n', '\r'], " ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// A comfy-table table without its padding.
pub fn trim_lines(text: &str) -> String {
    // The NOTHING preset still pads every cell by one space on each side.
    text.lines()
        .map(|line| line.strip_prefix(' ').unwrap_or(line).trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}
