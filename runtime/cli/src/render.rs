//! Text for the terminal: the registry commands' tables and a model's inputs and outputs.

use kiln_types::{ModelInfo, TensorSpec, format_shape};
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

fn spec_line(s: &TensorSpec) -> String {
    format!("{} {} {}", s.name, s.element_type, format_shape(&s.shape))
}

/// The inputs and outputs, one per line.
pub fn describe_specs(info: &ModelInfo, indent: &str) -> String {
    let mut s = String::new();
    for (i, spec) in info.inputs.iter().enumerate() {
        s += &format!(
            "{indent}{} {}\n",
            if i == 0 { "inputs  " } else { "        " },
            spec_line(spec)
        );
    }
    for (i, spec) in info.outputs.iter().enumerate() {
        s += &format!(
            "{indent}{} {}\n",
            if i == 0 { "outputs " } else { "        " },
            spec_line(spec)
        );
    }
    s
}
