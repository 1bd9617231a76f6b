//! What a managed node (`kiln serve --managed`) holds on disk, in `$KILN_HOME/node/`:
//! components pushed by the sync service (`components/<sha256>.wasm`) and the routing table
//! it serves (`routing.json`). Every write is durable (`kiln_types::durable`): a crash
//! leaves the old file or the new one, never half of one, so a restarted node serves at
//! once what it served before.

use crate::catalog::Catalog;
use kiln_node_api::{NodeCredentials, RoutingTable, is_sha256_hex};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a node store operation failed; the admin API maps the kinds to statuses.
#[derive(Debug, thiserror::Error)]
pub enum NodeStoreError {
    /// The digest is not 64 lowercase hex characters.
    #[error("`{0}` is not a SHA-256 digest (64 lowercase hex characters)")]
    InvalidDigest(String),
    /// The bytes do not hash to the digest they were sent under.
    #[error(
        "the uploaded bytes have sha256 {actual}, not {expected} (corrupted or truncated in transit?); nothing was stored"
    )]
    DigestMismatch {
        /// The digest the component was sent under.
        expected: String,
        /// The SHA-256 of the bytes received.
        actual: String,
    },
    /// `routing.json` exists but is not a routing table.
    #[error(
        "the stored routing table {path} is unreadable: {reason}; fix or delete it, then push the routing again"
    )]
    CorruptRouting {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> NodeStoreError {
    let context = context.into();
    move |source| NodeStoreError::Io { context, source }
}

/// A node's component and routing store.
#[derive(Debug)]
pub struct NodeStore {
    dir: PathBuf,
    components: PathBuf,
}

impl NodeStore {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<NodeStore, NodeStoreError> {
        let components = dir.join("components");
        std::fs::create_dir_all(&components)
            .map_err(io(format!("creating the node store {}", components.display())))?;
        // Uploads a crash or a kill cut short: nobody will finish them.
        for entry in std::fs::read_dir(&components).into_iter().flatten().flatten() {
            if entry
                .file_name()
                .to_str()
                .is_some_and(kiln_types::durable::is_temporary_name)
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(NodeStore {
            dir: dir.to_path_buf(),
            components,
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the component with this digest is (or would be) stored.
    pub fn component_path(&self, digest: &str) -> PathBuf {
        self.components.join(format!("{digest}.wasm"))
    }

    fn routing_path(&self) -> PathBuf {
        self.dir.join("routing.json")
    }

    /// Whether a component with this digest is stored.
    pub fn has(&self, digest: &str) -> bool {
        is_sha256_hex(digest) && self.component_path(digest).is_file()
    }

    /// Stores a component after checking its bytes hash to `digest`. Returns whether it
    /// was new (storing a component already present changes nothing).
    pub fn put_component(&self, digest: &str, bytes: &[u8]) -> Result<bool, NodeStoreError> {
        if !is_sha256_hex(digest) {
            return Err(NodeStoreError::InvalidDigest(digest.to_string()));
        }
        let actual = kiln_types::digest(bytes);
        if actual != digest {
            return Err(NodeStoreError::DigestMismatch {
                expected: digest.to_string(),
                actual,
            });
        }
        if self.has(digest) {
            return Ok(false);
        }
        let path = self.component_path(digest);
        kiln_types::durable::write(&path, bytes).map_err(io(format!("storing {}", path.display())))?;
        tracing::info!(digest, bytes = bytes.len(), "component stored");
        Ok(true)
    }

    /// A temporary file in the store that an upload of `digest` streams into; see
    /// [`NodeStore::commit_component`].
    pub fn stage_component(&self, digest: &str) -> Result<kiln_types::durable::Staged, NodeStoreError> {
        if !is_sha256_hex(digest) {
            return Err(NodeStoreError::InvalidDigest(digest.to_string()));
        }
        let path = self.component_path(digest);
        kiln_types::durable::Staged::create(&path)
            .map_err(io(format!("creating a temporary file for {}", path.display())))
    }

    /// Stores a streamed upload after checking it hashes to `digest`; a mismatch or a
    /// component already present removes the temporary file. Returns whether it was new.
    pub fn commit_component(
        &self,
        digest: &str,
        staged: kiln_types::durable::Staged,
    ) -> Result<bool, NodeStoreError> {
        let actual = staged.digest();
        if actual != digest {
            return Err(NodeStoreError::DigestMismatch {
                expected: digest.to_string(),
                actual,
            });
        }
        if self.has(digest) {
            return Ok(false);
        }
        let bytes = staged.len();
        let path = staged
            .commit()
            .map_err(io(format!("storing {}", self.component_path(digest).display())))?;
        tracing::info!(digest, bytes, path = %path.display(), "component stored");
        Ok(true)
    }

    /// Every stored component digest, sorted.
    pub fn digests(&self) -> Result<Vec<String>, NodeStoreError> {
        let entries = std::fs::read_dir(&self.components)
            .map_err(io(format!("listing {}", self.components.display())))?;
        let mut digests = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io(format!("listing {}", self.components.display())))?;
            let name = entry.file_name();
            if let Some(digest) = name.to_str().and_then(|n| n.strip_suffix(".wasm"))
                && is_sha256_hex(digest)
            {
                digests.push(digest.to_string());
            }
        }
        digests.sort();
        Ok(digests)
    }

    /// The stored routing table; an empty one at generation 0 before the first push.
    pub fn routing(&self) -> Result<RoutingTable, NodeStoreError> {
        let path = self.routing_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RoutingTable::default()),
            Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| NodeStoreError::CorruptRouting {
            path,
            reason: e.to_string(),
        })
    }

    /// Replaces the stored routing table atomically.
    pub fn set_routing(&self, table: &RoutingTable) -> Result<(), NodeStoreError> {
        let json = serde_json::to_vec_pretty(table).map_err(|e| NodeStoreError::Io {
            context: "encoding the routing table".into(),
            source: std::io::Error::other(e),
        })?;
        let path = self.routing_path();
        kiln_types::durable::write(&path, &json).map_err(io(format!("storing {}", path.display())))
    }

    fn credentials_path(&self) -> PathBuf {
        self.dir.join("credentials.json")
    }

    /// The credentials the sync service gave this node when it joined, if any.
    pub fn credentials(&self) -> Result<Option<NodeCredentials>, NodeStoreError> {
        let path = self.credentials_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| NodeStoreError::Io {
                    context: format!("reading {}", path.display()),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(format!("reading {}", path.display()))(e)),
        }
    }

    /// Keeps the node's credentials (owner-only file), so a restarted node reports as
    /// itself rather than joining again.
    pub fn set_credentials(&self, credentials: &NodeCredentials) -> Result<(), NodeStoreError> {
        let path = self.credentials_path();
        let json = serde_json::to_vec(credentials).map_err(|e| NodeStoreError::Io {
            context: "encoding the node credentials".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        kiln_types::durable::write(&path, &json).map_err(io(format!("storing {}", path.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(io(format!("restricting {}", path.display())))?;
        }
        Ok(())
    }
}

impl Catalog for NodeStore {
    fn generation(&self) -> anyhow::Result<u64> {
        Ok(self.routing()?.generation)
    }

    fn routing(&self) -> anyhow::Result<RoutingTable> {
        Ok(NodeStore::routing(self)?)
    }

    fn component_path(&self, digest: &str) -> PathBuf {
        NodeStore::component_path(self, digest)
    }

    fn stored_digests(&self) -> anyhow::Result<Vec<String>> {
        Ok(self.digests()?)
    }

    /// A token the sync service listed in this node's routing table (by its SHA-256).
    fn authenticate(&self, token: &str) -> anyhow::Result<Option<Arc<dyn kiln_api::Reader>>> {
        let hash = kiln_types::digest(token.trim().as_bytes());
        Ok(NodeStore::routing(self)?
            .readers
            .into_iter()
            .find(|g| kiln_node_api::tokens_match(&g.token_sha256, &hash))
            .map(|g| Arc::new(GrantReader(g)) as Arc<dyn kiln_api::Reader>))
    }
}

/// A reader grant of the routing table, as the inference port sees it.
struct GrantReader(kiln_node_api::ReaderGrant);

impl kiln_api::Reader for GrantReader {
    fn name(&self) -> &str {
        &self.0.name
    }

    fn may_read(&self, model: &str) -> bool {
        self.0.covers(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_node_api::{ModelRouting, VersionRoute};

    #[test]
    fn components_are_checked_stored_once_and_listed() {
        let dir = tempfile::tempdir().unwrap();
        let store = NodeStore::open(dir.path()).unwrap();
        let bytes = b"not really a component".to_vec();
        let digest = kiln_types::digest(&bytes);
        let wrong = "0".repeat(64);
        assert!(matches!(
            store.put_component(&wrong, &bytes),
            Err(NodeStoreError::DigestMismatch { .. })
        ));
        assert!(!store.has(&wrong));
        assert!(matches!(
            store.put_component("ABC", &bytes),
            Err(NodeStoreError::InvalidDigest(_))
        ));
        assert!(store.put_component(&digest, &bytes).unwrap());
        assert!(!store.put_component(&digest, &bytes).unwrap());
        assert!(store.has(&digest));
        assert_eq!(store.digests().unwrap(), vec![digest.clone()]);
        assert_eq!(std::fs::read(store.component_path(&digest)).unwrap(), bytes);
    }

    #[test]
    fn streamed_components_are_checked_and_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = NodeStore::open(dir.path()).unwrap();
        let bytes = b"streamed component".to_vec();
        let digest = kiln_types::digest(&bytes);
        let wrong = "0".repeat(64);
        let mut staged = store.stage_component(&wrong).unwrap();
        staged.write(&bytes).unwrap();
        assert!(matches!(
            store.commit_component(&wrong, staged),
            Err(NodeStoreError::DigestMismatch { .. })
        ));
        let mut staged = store.stage_component(&digest).unwrap();
        staged.write(&bytes).unwrap();
        assert!(store.commit_component(&digest, staged).unwrap());
        let mut again = store.stage_component(&digest).unwrap();
        again.write(&bytes).unwrap();
        assert!(!store.commit_component(&digest, again).unwrap());
        let names: Vec<_> = std::fs::read_dir(dir.path().join("components"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(format!("{digest}.wasm"))]);
        // A temporary file left by a crash is gone when the store opens again.
        std::fs::write(dir.path().join("components").join(".x.wasm.tmp-1-0"), b"half").unwrap();
        NodeStore::open(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("components")).unwrap().count(),
            1
        );
    }

    #[test]
    fn routing_survives_reopening_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = NodeStore::open(dir.path()).unwrap();
        assert_eq!(store.routing().unwrap(), RoutingTable::default());
        let mut table = RoutingTable {
            generation: 4,
            ..RoutingTable::default()
        };
        table.models.insert(
            "m".into(),
            ModelRouting {
                versions: vec![VersionRoute {
                    version: 1,
                    digest: "a".repeat(64),
                    weight: 100,
                    ..VersionRoute::default()
                }],
                shadow: None,
                serving: None,
            },
        );
        store.set_routing(&table).unwrap();
        let reopened = NodeStore::open(dir.path()).unwrap();
        assert_eq!(reopened.routing().unwrap(), table);
        assert_eq!(Catalog::generation(&reopened).unwrap(), 4);
        std::fs::write(dir.path().join("routing.json"), b"{").unwrap();
        assert!(matches!(
            reopened.routing(),
            Err(NodeStoreError::CorruptRouting { .. })
        ));
    }
}
