//! Content-addressed blob files under `blobs/sha256/<hex>`.
//!
//! A blob is made durable (temp file, fsync, rename, fsync of the directory) before the
//! database row that names it commits, so a crash can leave an unreferenced blob but never
//! a row pointing at a missing one. Reads re-hash because a blob may have been damaged on
//! disk after it was written, and serving a damaged component must not happen silently.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::RegistryError;
use crate::model::normalize_digest;

/// The blob directory of one registry home.
#[derive(Debug, Clone)]
pub(crate) struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    pub(crate) fn open(home: &Path) -> Result<BlobStore, RegistryError> {
        let dir = home.join("blobs").join("sha256");
        fs::create_dir_all(&dir).map_err(|e| {
            RegistryError::Storage(anyhow::Error::new(e).context(format!(
                "creating blob directory {} (check KILN_HOME points at a writable directory)",
                dir.display()
            )))
        })?;
        Ok(BlobStore { dir })
    }

    /// Path of a blob; an invalid digest maps to a name that can never exist.
    pub(crate) fn path(&self, digest: &str) -> PathBuf {
        match normalize_digest(digest) {
            Ok(hex) => self.dir.join(hex),
            Err(_) => self.dir.join("invalid-digest"),
        }
    }

    /// Makes the blob for `bytes` (whose digest is `hex`) durable, unless an intact copy exists.
    pub(crate) fn put(&self, hex: &str, bytes: &[u8]) -> Result<(), RegistryError> {
        let path = self.path(hex);
        if self.intact(&path, hex) {
            return Ok(());
        }
        kiln_types::durable::write(&path, bytes)
            .map_err(|e| storage(e, format!("storing blob {hex} in {}", self.dir.display())))
    }

    /// Makes the blob of the file at `source` (whose digest should be `hex`) durable, unless
    /// an intact copy exists: copied in pieces and hashed on the way, never held whole. A
    /// file that no longer hashes to `hex` (changed since it was hashed) stores nothing.
    pub(crate) fn put_file(&self, hex: &str, source: &Path) -> Result<(), RegistryError> {
        let path = self.path(hex);
        if self.intact(&path, hex) {
            return Ok(());
        }
        let context = || {
            format!(
                "storing blob {hex} in {} from {}",
                self.dir.display(),
                source.display()
            )
        };
        let mut from = fs::File::open(source).map_err(|e| storage(e, context()))?;
        let mut staged = kiln_types::durable::Staged::create(&path).map_err(|e| storage(e, context()))?;
        std::io::copy(&mut from, &mut staged).map_err(|e| storage(e, context()))?;
        if staged.digest() != hex {
            return Err(RegistryError::Conflict(format!(
                "{} changed while it was being registered: it now hashes to sha256:{}, not sha256:{hex}; nothing was stored",
                source.display(),
                staged.digest()
            )));
        }
        staged.commit().map_err(|e| storage(e, context()))?;
        Ok(())
    }

    /// Whether the blob at `path` exists and hashes to `hex` (read in pieces).
    fn intact(&self, path: &Path, hex: &str) -> bool {
        fs::File::open(path)
            .and_then(kiln_types::digest_reader)
            .is_ok_and(|(actual, _)| actual == hex)
    }

    /// Reads a blob and checks it still hashes to its name.
    pub(crate) fn read(&self, digest: &str) -> Result<Vec<u8>, RegistryError> {
        let (hex, path, mut file) = self.open_file(digest)?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes)
            .map_err(|e| storage(e, format!("reading blob {}", path.display())))?;
        check(&path, &hex, &kiln_types::digest(&bytes))?;
        Ok(bytes)
    }

    /// Opens a blob after checking, in one streaming pass, that it still hashes to its
    /// name; the file is positioned at its start. Its bytes are never all in memory: this
    /// is how the sync service sends a component to a node.
    pub(crate) fn open_verified(&self, digest: &str) -> Result<fs::File, RegistryError> {
        use std::io::{Seek, SeekFrom};
        let (hex, path, mut file) = self.open_file(digest)?;
        let (actual, _) = kiln_types::digest_reader(&mut file)
            .map_err(|e| storage(e, format!("reading blob {}", path.display())))?;
        check(&path, &hex, &actual)?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| storage(e, format!("reading blob {}", path.display())))?;
        Ok(file)
    }

    fn open_file(&self, digest: &str) -> Result<(String, PathBuf, fs::File), RegistryError> {
        let hex = normalize_digest(digest)?;
        let path = self.dir.join(&hex);
        match fs::File::open(&path) {
            Ok(file) => Ok((hex, path, file)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(RegistryError::NotFound(format!(
                "blob sha256:{hex} is missing from {}; re-register the component to restore it",
                self.dir.display()
            ))),
            Err(e) => Err(storage(e, format!("reading blob {}", path.display()))),
        }
    }

    /// Removes a blob; a blob that is already gone is fine.
    pub(crate) fn remove(&self, hex: &str) -> Result<(), RegistryError> {
        match fs::remove_file(self.path(hex)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(storage(e, format!("removing unreferenced blob {hex}"))),
        }
    }
}

/// A blob whose content no longer hashes to its name is `Corrupt`.
fn check(path: &Path, hex: &str, actual: &str) -> Result<(), RegistryError> {
    if actual == hex {
        return Ok(());
    }
    Err(RegistryError::Corrupt(format!(
        "blob {} is corrupt: its content hashes to sha256:{actual}, not sha256:{hex}; \
         delete the file and re-register the component",
        path.display()
    )))
}

fn storage(err: std::io::Error, context: String) -> RegistryError {
    RegistryError::Storage(anyhow::Error::new(err).context(context))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_types::digest;

    #[test]
    fn put_then_read_round_trips_and_detects_corruption() {
        let home = tempfile::tempdir().unwrap();
        let store = BlobStore::open(home.path()).unwrap();
        let bytes = b"component bytes".to_vec();
        let hex = digest(&bytes);
        store.put(&hex, &bytes).unwrap();
        assert_eq!(store.read(&format!("sha256:{hex}")).unwrap(), bytes);

        fs::write(store.path(&hex), b"tampered").unwrap();
        let err = store.read(&hex).unwrap_err();
        assert!(matches!(err, RegistryError::Corrupt(_)), "{err:?}");

        // Writing again repairs a damaged copy.
        store.put(&hex, &bytes).unwrap();
        assert_eq!(store.read(&hex).unwrap(), bytes);

        store.remove(&hex).unwrap();
        assert!(matches!(store.read(&hex), Err(RegistryError::NotFound(_))));
        store.remove(&hex).unwrap();
    }

    #[test]
    fn a_file_is_stored_in_pieces_and_one_that_does_not_hash_to_its_name_stores_nothing() {
        let home = tempfile::tempdir().unwrap();
        let store = BlobStore::open(home.path()).unwrap();
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
        let source = home.path().join("upload");
        fs::write(&source, &bytes).unwrap();
        let hex = digest(&bytes);
        store.put_file(&hex, &source).unwrap();
        assert_eq!(store.read(&hex).unwrap(), bytes);
        assert!(source.exists(), "the source is left in place");
        // Damaged in place: put_file repairs it from the file.
        fs::write(store.path(&hex), b"tampered").unwrap();
        store.put_file(&hex, &source).unwrap();
        assert_eq!(store.read(&hex).unwrap(), bytes);

        // A file that no longer matches the digest it was hashed to: nothing is stored.
        let other = "1".repeat(64);
        let err = store.put_file(&other, &source).unwrap_err();
        assert!(
            matches!(&err, RegistryError::Conflict(m) if m.contains("changed while it was being registered")),
            "{err:?}"
        );
        assert!(!store.path(&other).exists());
        let leftovers: Vec<_> = fs::read_dir(store.path(&hex).parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            leftovers,
            [std::ffi::OsString::from(&hex)],
            "no temporary file is left"
        );
    }

    #[test]
    fn an_opened_blob_is_checked_and_starts_at_its_first_byte() {
        use std::io::Read;
        let home = tempfile::tempdir().unwrap();
        let store = BlobStore::open(home.path()).unwrap();
        // Past digest_reader's 64 KiB buffer, so the check reads in several passes.
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let hex = digest(&bytes);
        store.put(&hex, &bytes).unwrap();
        let mut read = Vec::new();
        store.open_verified(&hex).unwrap().read_to_end(&mut read).unwrap();
        assert_eq!(read, bytes);

        let mut tampered = bytes.clone();
        tampered[150_000] ^= 1;
        fs::write(store.path(&hex), &tampered).unwrap();
        let err = store.open_verified(&hex).unwrap_err();
        assert!(matches!(err, RegistryError::Corrupt(_)), "{err:?}");
        assert!(matches!(
            store.open_verified(&"0".repeat(64)),
            Err(RegistryError::NotFound(_))
        ));
    }

    #[test]
    fn invalid_digests_never_escape_the_blob_directory() {
        let home = tempfile::tempdir().unwrap();
        let store = BlobStore::open(home.path()).unwrap();
        let path = store.path("../../etc/passwd");
        assert!(path.starts_with(home.path().join("blobs/sha256")));
        assert!(matches!(store.read("../x"), Err(RegistryError::Invalid(_))));
    }
}
