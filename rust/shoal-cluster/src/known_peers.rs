//! The known-peers file: the other members of this node's cluster (`DATA_DIR/peers`, one `ID ADDRESS` line
//! each, replaced atomically and durably whenever group 0's registry changes). It lives outside group 0 so
//! that a node whose group-0 files are damaged still knows whom to rebuild them from (`meta_rebuild.rs`).
//! It is only a list of hints: a peer is trusted once its TLS certificate names its id, never because of
//! this file, so a damaged line is skipped with a warning.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

/// The known-peers file of one node.
#[derive(Debug)]
pub struct KnownPeers {
    /// The file (`DATA_DIR/peers`).
    path: PathBuf,
    /// Node id → address of the other members; equal to the file's content once a write returned.
    peers: Mutex<BTreeMap<u64, String>>,
}

impl KnownPeers {
    /// Loads `DATA_DIR/peers` (empty when missing; lines that do not parse are skipped with a warning).
    pub fn load(data_dir: &Path) -> KnownPeers {
        let path = data_dir.join("peers");
        let text = match std::fs::read_to_string(&path) {
            Ok(s) => s,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read the known-peers file");
                }
                String::new()
            }
        };
        KnownPeers { peers: Mutex::new(parse(&path, &text)), path }
    }

    /// The known peers, by id.
    pub fn get(&self) -> BTreeMap<u64, String> {
        self.peers.lock().clone()
    }

    /// Whether no peer is known.
    pub fn is_empty(&self) -> bool {
        self.peers.lock().is_empty()
    }

    /// Makes `peers` the file's content when it differs (durably: write, fsync, rename, fsync the dir).
    pub fn update(&self, peers: BTreeMap<u64, String>) -> std::io::Result<()> {
        let mut cur = self.peers.lock();
        if *cur == peers {
            return Ok(());
        }
        let tmp = self.path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            for (id, addr) in &peers {
                writeln!(f, "{id} {addr}")?;
            }
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        *cur = peers;
        Ok(())
    }
}

/// Parses the file's text; each valid line is `ID ADDRESS` with a node id >= 1 and an address that
/// `check_node` accepts.
fn parse(path: &Path, text: &str) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let parsed = line.split_once(' ').and_then(|(id, addr)| {
            let id = id.parse::<u64>().ok()?;
            shoal_api::commands::check_node(id, addr).ok()?;
            Some((id, addr.to_string()))
        });
        match parsed {
            Some((id, addr)) => {
                out.insert(id, addr);
            }
            None => {
                tracing::warn!(file = %path.display(), line = n + 1, "skipping a damaged line of the known-peers file")
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use shoal_testkit::TempDir;

    use super::*;

    #[test]
    fn survives_a_reload_and_skips_damaged_lines() {
        let tmp = TempDir::new("known-peers");
        let dir = tmp.path();
        let p = KnownPeers::load(dir);
        assert!(p.is_empty());
        let want: BTreeMap<u64, String> = [(2, "127.0.0.1:7002".to_string()), (3, "127.0.0.1:7003".to_string())].into();
        p.update(want.clone()).unwrap();
        assert_eq!(KnownPeers::load(dir).get(), want);
        let mut text = std::fs::read_to_string(dir.join("peers")).unwrap();
        text.push_str("x 127.0.0.1:1\n0 127.0.0.1:1\n4\n\u{0}\u{1}garbage\n");
        std::fs::write(dir.join("peers"), text).unwrap();
        assert_eq!(KnownPeers::load(dir).get(), want);
    }
}
