//! One error enum because callers branch on the kind: the HTTP layer maps `NotFound` to 404
//! and `Conflict` to 409, the CLI prints the message, and `Storage` is the only kind worth
//! retrying.

/// What went wrong in a registry call; every message says what failed and what to do.
#[derive(thiserror::Error, Debug)]
pub enum RegistryError {
    /// The model, version, alias, stage or tag asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts the current state (e.g. deleting a Production version).
    #[error("{0}")]
    Conflict(String),
    /// The request itself is malformed (bad name, alias, reference, digest, JSON shape).
    #[error("{0}")]
    Invalid(String),
    /// Stored data failed verification (blob hash mismatch, unreadable row).
    #[error("{0}")]
    Corrupt(String),
    /// The database or the filesystem failed; usually transient (busy, disk full).
    #[error("registry storage error: {0:#}")]
    Storage(anyhow::Error),
}

impl From<rusqlite::Error> for RegistryError {
    fn from(err: rusqlite::Error) -> Self {
        let busy = matches!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        );
        if busy {
            RegistryError::Storage(anyhow::Error::new(err).context(
                "the registry database stayed locked by another kiln process for more than 5 s; retry",
            ))
        } else {
            RegistryError::Storage(anyhow::Error::new(err).context("registry database query failed"))
        }
    }
}

impl From<std::io::Error> for RegistryError {
    fn from(err: std::io::Error) -> Self {
        RegistryError::Storage(anyhow::Error::new(err))
    }
}
