//! Secrets from files or the environment. A token given as a flag is visible to every
//! user of the machine in `ps`: still accepted, with a warning; `--*-token-file` (or the
//! environment variable) is the way.

use std::path::Path;

use anyhow::Context;
use secrecy::SecretString;

/// Whether `flag` (e.g. `--admin-token`) was typed on this process's command line (rather
/// than coming from its environment variable).
pub fn on_command_line(flag: &str) -> bool {
    let with_value = format!("{flag}=");
    std::env::args().any(|a| a == flag || a.starts_with(&with_value))
}

/// The secret in `file` (trimmed), else `value` (a flag or its environment variable;
/// warned about when it was typed on the command line as `flag`), else `None`.
pub fn secret(
    file: Option<&Path>,
    file_flag: &str,
    value: Option<&str>,
    flag: &str,
) -> anyhow::Result<Option<SecretString>> {
    if let Some(path) = file {
        if value.is_some() {
            anyhow::bail!("give {file_flag} or {flag}, not both");
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading {file_flag} {}", path.display()))?;
        let token = text.trim();
        if token.is_empty() {
            anyhow::bail!("{file_flag} {} is empty", path.display());
        }
        return Ok(Some(SecretString::from(token.to_string())));
    }
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if on_command_line(flag) {
        tracing::warn!(
            "{flag} on the command line is visible to every user of this machine (`ps`); use {file_flag} or the environment variable instead"
        );
        eprintln!(
            "warning: {flag} on the command line is visible in `ps`; use {file_flag} or the environment variable instead"
        );
    }
    Ok(Some(SecretString::from(value.to_string())))
}

/// A secret from `file`, else the environment variable `var`.
pub fn secret_from(file: Option<&Path>, file_flag: &str, var: &str) -> anyhow::Result<Option<SecretString>> {
    let value = std::env::var(var).ok();
    if file.is_some() && value.is_some() {
        // The file wins; the variable may be set for another command.
        return secret(file, file_flag, None, var);
    }
    secret(file, file_flag, value.as_deref(), var)
}
