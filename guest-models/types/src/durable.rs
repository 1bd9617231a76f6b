//! The one way Kiln writes a file that must survive a crash: the bytes go to a temporary
//! file in the same directory, which is fsynced, renamed over the target, and then the
//! directory is fsynced so the rename itself survives a power cut. A reader sees the old
//! file or the new one, never half of one, and a failure leaves nothing behind.
//!
//! Registry blobs, the AOT and function caches, a node's pushed components and routing
//! table, compiled components and exported edge apps all go through [`write`].

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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
