//! [`TempDir`]: a fresh directory under the system temp directory, removed (with its contents) on drop.

use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

/// Numbers the directories of this process: two calls never share one.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// A directory `<temp>/shoal-<label>-<pid>-<n>`, unique per process and call, created empty and removed with
/// everything in it when dropped (also when the test panics).
#[derive(Debug)]
pub struct TempDir {
    /// The directory; it exists from [`TempDir::new`] until drop (unless the test removes it itself).
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh empty directory; `label` names the test in the path (for a left-over after a crash).
    /// A stale directory of the same name (a crashed earlier process with the same pid) is emptied first.
    pub fn new(label: &str) -> TempDir {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("shoal-{label}-{}-{n}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path).unwrap_or_else(|e| panic!("removing stale {}: {e}", path.display()));
        }
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path().join(p)`.
    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: a test that already removed it, or a file still mapped elsewhere, must not panic here.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_and_removed_on_drop() {
        let a = TempDir::new("testkit");
        let b = TempDir::new("testkit");
        assert_ne!(a.path(), b.path());
        assert!(a.path().is_dir() && std::fs::read_dir(a.path()).unwrap().count() == 0);
        std::fs::create_dir_all(a.join("x/y")).unwrap();
        std::fs::write(a.join("x/y/f"), b"data").unwrap();
        let p = a.path().to_path_buf();
        drop(a);
        assert!(!p.exists());
        drop(b);
    }
}
