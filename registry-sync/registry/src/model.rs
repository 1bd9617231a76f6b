//! The records the registry hands out, and the naming rules that keep references
//! (`name/3`, `name/Production`, `name@champion`) unambiguous.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::RegistryError;

/// Lifecycle stage of a model version, as in MLflow.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    None,
    Staging,
    Production,
    Archived,
}

impl Stage {
    /// All stages, in lifecycle order.
    pub const ALL: [Stage; 4] = [Stage::None, Stage::Staging, Stage::Production, Stage::Archived];

    /// The capitalised name stored in the database and printed to users.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::None => "None",
            Stage::Staging => "Staging",
            Stage::Production => "Production",
            Stage::Archived => "Archived",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Stage {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stage::ALL
            .into_iter()
            .find(|stage| stage.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                RegistryError::Invalid(format!(
                    "unknown stage '{s}': use None, Staging, Production or Archived"
                ))
            })
    }
}

/// One recorded request and the response the version gave when it was registered.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct GoldenPair {
    pub request: serde_json::Value,
    pub response: serde_json::Value,
}

/// What the caller supplies to register a version; the registry adds number, digest and time.
#[derive(Clone, Debug, Default)]
pub struct NewVersion {
    pub name: String,
    pub component: Vec<u8>,
    pub source_digest: Option<String>,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    pub lineage: serde_json::Value,
    pub signature: serde_json::Value,
    pub golden: Vec<GoldenPair>,
}

/// A file made ready for registration by the host (an `.onnx` compiled into a component,
/// a `.wasm` loaded to prove it is a Kiln model, golden requests answered by it): what
/// `kiln models register` and the MLflow importer store.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The component bytes to store (compiled from .onnx, or the verified .wasm).
    pub component: Vec<u8>,
    /// SHA-256 of the source .onnx, when the file was one.
    pub source_digest: Option<String>,
    /// Inputs, outputs and labels of the component.
    pub signature: serde_json::Value,
    /// The golden requests with the responses the component gave.
    pub golden: Vec<GoldenPair>,
}

/// A registered model version as stored, with its current stage and aliases.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ModelVersion {
    pub name: String,
    pub version: u64,
    /// SHA-256 of the component, lowercase hex without a `sha256:` prefix.
    pub digest: String,
    pub source_digest: Option<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    pub stage: Stage,
    /// Sorted alphabetically.
    pub aliases: Vec<String>,
    pub lineage: serde_json::Value,
    pub signature: serde_json::Value,
    /// Component size in bytes.
    pub size: u64,
}

impl ModelVersion {
    /// `name/version`, the canonical reference to this version.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.name, self.version)
    }
}

/// One hash-chained audit log entry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AuditEntry {
    pub seq: u64,
    pub time: String,
    pub actor: String,
    pub action: String,
    pub model: String,
    pub version: Option<u64>,
    pub before: serde_json::Value,
    pub after: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// Result of walking the audit chain; the log is intact when `problems` is empty.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AuditReport {
    pub entries: u64,
    pub problems: Vec<String>,
}

impl AuditReport {
    /// True when no problem was found.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Aliases that would make a reference ambiguous with a version selector.
const RESERVED_ALIASES: [&str; 5] = ["latest", "none", "staging", "production", "archived"];

/// Checks a model name: `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`.
pub fn validate_name(name: &str) -> Result<(), RegistryError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if first_ok && rest_ok && name.len() <= 128 {
        Ok(())
    } else {
        Err(RegistryError::Invalid(format!(
            "invalid model name '{name}': use 1-128 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"
        )))
    }
}

/// Checks an alias: `[a-z][a-z0-9_-]*`, at most 128 characters, not a reserved word.
pub fn validate_alias(alias: &str) -> Result<(), RegistryError> {
    let mut chars = alias.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'));
    if !(first_ok && rest_ok && alias.len() <= 128) {
        return Err(RegistryError::Invalid(format!(
            "invalid alias '{alias}': use lowercase letters, digits, '_' and '-', starting with a letter (e.g. champion)"
        )));
    }
    if RESERVED_ALIASES.contains(&alias) {
        return Err(RegistryError::Invalid(format!(
            "'{alias}' is reserved (it already selects versions as 'latest' or a stage name); choose another alias"
        )));
    }
    Ok(())
}

/// Checks a tag key: non-empty, at most 256 bytes, no control characters.
pub fn validate_tag_key(key: &str) -> Result<(), RegistryError> {
    if key.is_empty() || key.len() > 256 || key.chars().any(char::is_control) {
        return Err(RegistryError::Invalid(format!(
            "invalid tag key '{}': use 1-256 printable characters",
            key.escape_debug()
        )));
    }
    Ok(())
}

/// Normalises a digest given as `sha256:<hex>` or `<hex>` to 64 lowercase hex characters.
pub fn normalize_digest(digest: &str) -> Result<String, RegistryError> {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(hex.to_ascii_lowercase())
    } else {
        Err(RegistryError::Invalid(format!(
            "invalid digest '{digest}': expected sha256:<64 hex characters>"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_parses_case_insensitively_and_prints_capitalised() {
        assert_eq!("production".parse::<Stage>().unwrap(), Stage::Production);
        assert_eq!("STAGING".parse::<Stage>().unwrap(), Stage::Staging);
        assert_eq!(Stage::Archived.to_string(), "Archived");
        let err = "prod".parse::<Stage>().unwrap_err().to_string();
        assert!(err.contains("unknown stage 'prod'"), "{err}");
    }

    #[test]
    fn model_names_follow_the_pattern() {
        assert!(validate_name("house-price").is_ok());
        assert!(validate_name("A.b_c-9").is_ok());
        assert!(validate_name(&"a".repeat(128)).is_ok());
        assert!(validate_name(&"a".repeat(129)).is_err());
        assert!(validate_name("").is_err());
        assert!(validate_name("-x").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name("a@b").is_err());
    }

    #[test]
    fn aliases_reject_reserved_words_and_bad_characters() {
        assert!(validate_alias("champion").is_ok());
        assert!(validate_alias("canary_2-b").is_ok());
        for bad in ["latest", "production", "staging", "none", "archived"] {
            let err = validate_alias(bad).unwrap_err().to_string();
            assert!(err.contains("reserved"), "{bad}: {err}");
        }
        assert!(validate_alias("Champion").is_err());
        assert!(validate_alias("2nd").is_err());
        assert!(validate_alias("").is_err());
    }

    #[test]
    fn digests_normalise_with_or_without_prefix() {
        let hex = "AB".repeat(32);
        assert_eq!(normalize_digest(&hex).unwrap(), "ab".repeat(32));
        assert_eq!(
            normalize_digest(&format!("sha256:{hex}")).unwrap(),
            "ab".repeat(32)
        );
        assert!(normalize_digest("sha256:abc").is_err());
        assert!(normalize_digest(&"../".repeat(22)).is_err());
    }
}
