//! The one way Kiln writes a file that must survive a crash: the bytes go to a temporary
//! file in the same directory, which is fsynced, renamed over the target, and then the
//! directory is fsynced so the rename itself survives a power cut. A reader sees the old
//! file or the new one, never half of one, and a failure leaves nothing behind.
//!
//! Registry blobs, the AOT and function caches, a node's pushed components and routing
//! table, compiled components and exported edge apps all go through [`write`]. Uploads too
//! large to hold in memory are written piece by piece into a [`Staged`] file, hashed as
//! they go, and renamed into place the same way once their digest is checked.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// Writes `bytes` to `path` durably and atomically, creating its directory if needed.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = parent(path);
    std::fs::create_dir_all(dir)?;
    let tmp = temporary_name(path);
    let written = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(std::io::Error::new(
            e.kind(),
            format!("writing {}: {e}", path.display()),
        ));
    }
    sync_dir(dir);
    Ok(())
}

/// A file being written in pieces to a temporary name beside its target, hashed with
/// SHA-256 as it goes: [`Staged::commit`] makes it the target durably (like [`write`]);
/// dropping it uncommitted removes the temporary file.
pub struct Staged {
    target: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
    hasher: Sha256,
    len: u64,
}

impl Staged {
    /// Starts a file that will become `target`, creating its directory if needed.
    pub fn create(target: &Path) -> std::io::Result<Staged> {
        std::fs::create_dir_all(parent(target))?;
        let tmp = temporary_name(target);
        let file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        Ok(Staged {
            target: target.to_path_buf(),
            tmp,
            file: Some(file),
            hasher: Sha256::new(),
            len: 0,
        })
    }

    /// Appends `bytes`.
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("the file is closed"))?;
        file.write_all(bytes)?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The SHA-256 of what was written, as [`crate::digest`] spells it.
    pub fn digest(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }

    /// The temporary file's path (it is removed unless committed).
    pub fn temporary_path(&self) -> &Path {
        &self.tmp
    }

    /// Syncs the file and renames it over the target, then syncs the directory.
    pub fn commit(mut self) -> std::io::Result<PathBuf> {
        let done = (|| {
            let file = self
                .file
                .take()
                .ok_or_else(|| std::io::Error::other("the file is closed"))?;
            file.sync_all()?;
            drop(file);
            std::fs::rename(&self.tmp, &self.target)
        })();
        if let Err(e) = done {
            return Err(std::io::Error::new(
                e.kind(),
                format!("writing {}: {e}", self.target.display()),
            ));
        }
        // Renamed: nothing for Drop to remove.
        self.tmp = PathBuf::new();
        sync_dir(parent(&self.target));
        Ok(std::mem::take(&mut self.target))
    }
}

impl Write for Staged {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Staged::write(self, buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        self.file.take();
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Whether `name` is one of the temporary names [`write`] and [`Staged`] use, so a
/// directory's owner can remove those a crash left behind.
pub fn is_temporary_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// Makes a rename or removal in `dir` durable. Not every platform can open a directory
/// for syncing; there the files themselves were synced and this does nothing.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// `.<name>.tmp-<pid>-<n>` beside the target: unique within the process and between
/// processes, hidden from directory listings that look for the real names.
fn temporary_name(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    parent(path).join(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_files_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("file.bin");
        write(&path, b"first").unwrap();
        write(&path, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("file.bin")]);
    }

    #[test]
    fn staged_files_hash_what_they_hold_and_vanish_unless_committed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("blob");
        let mut staged = Staged::create(&target).unwrap();
        staged.write(b"ab").unwrap();
        staged.write(b"c").unwrap();
        assert_eq!(staged.len(), 3);
        assert_eq!(staged.digest(), crate::digest(b"abc"));
        let tmp = staged.temporary_path().to_path_buf();
        assert!(is_temporary_name(&tmp.file_name().unwrap().to_string_lossy()));
        drop(staged);
        assert!(!tmp.exists() && !target.exists());
        let mut staged = Staged::create(&target).unwrap();
        staged.write(b"abc").unwrap();
        assert_eq!(staged.commit().unwrap(), target);
        assert_eq!(std::fs::read(&target).unwrap(), b"abc");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_write_names_the_file_and_leaves_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write(&path, b"old").unwrap();
        // A directory where the file should go makes the rename fail.
        let blocked = dir.path().join("d");
        std::fs::create_dir_all(blocked.join("x")).unwrap();
        let err = write(&blocked, b"new").unwrap_err();
        assert!(err.to_string().contains("writing"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
