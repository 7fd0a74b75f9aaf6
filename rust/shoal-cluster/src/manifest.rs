//! The replica manifest: which shard groups this node has created on its disk (`DATA_DIR/replicas`, one
//! group id per line, replaced atomically and durably). A replica the manifest lists but whose directory
//! or log is gone lost data this node may have acknowledged: that is corruption, never a fresh start.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

/// The manifest of one node.
#[derive(Debug)]
pub struct Manifest {
    /// The manifest file.
    path: PathBuf,
    /// The group ids it lists; always equal to the file's content once a write returned.
    ids: Mutex<BTreeSet<String>>,
}

impl Manifest {
    /// Loads `DATA_DIR/replicas` (empty when missing).
    pub fn load(data_dir: &Path) -> std::io::Result<Manifest> {
        let path = data_dir.join("replicas");
        let ids = match std::fs::read_to_string(&path) {
            Ok(s) => s.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(e),
        };
        Ok(Manifest { path, ids: Mutex::new(ids) })
    }

    /// Whether no replica is listed.
    pub fn is_empty(&self) -> bool {
        self.ids.lock().is_empty()
    }

    /// Whether `gid` is listed.
    pub fn contains(&self, gid: &str) -> bool {
        self.ids.lock().contains(gid)
    }

    /// Lists `gid` (durably, before its directory is created).
    pub fn add(&self, gid: &str) -> std::io::Result<()> {
        let mut ids = self.ids.lock();
        if ids.contains(gid) {
            return Ok(());
        }
        let mut next = ids.clone();
        next.insert(gid.to_string());
        self.write(&next)?;
        *ids = next;
        Ok(())
    }

    /// Drops `gid` (its replica was removed on purpose).
    pub fn remove(&self, gid: &str) -> std::io::Result<()> {
        let mut ids = self.ids.lock();
        if !ids.contains(gid) {
            return Ok(());
        }
        let mut next = ids.clone();
        next.remove(gid);
        self.write(&next)?;
        *ids = next;
        Ok(())
    }

    fn write(&self, ids: &BTreeSet<String>) -> std::io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            for id in ids {
                writeln!(f, "{id}")?;
            }
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use shoal_testkit::TempDir;

    use super::*;

    #[test]
    fn survives_a_reload() {
        let tmp = TempDir::new("manifest");
        let dir = tmp.path();
        let m = Manifest::load(dir).unwrap();
        assert!(!m.contains("a@1/0"));
        m.add("a@1/0").unwrap();
        m.add("b@2/1").unwrap();
        m.add("a@1/0").unwrap();
        m.remove("b@2/1").unwrap();
        let again = Manifest::load(dir).unwrap();
        assert!(again.contains("a@1/0") && !again.contains("b@2/1"));
    }
}
