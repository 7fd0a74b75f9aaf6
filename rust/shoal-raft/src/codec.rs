//! Little-endian binary encoding of the openraft values this crate persists (log ids, votes,
//! memberships, snapshot metadata), and the atomically replaced small files holding them.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::error::Error;
use crate::error::Result;
use crate::types::LeaderId;
use crate::types::LogId;
use crate::types::Membership;
use crate::types::Node;
use crate::types::SnapshotMeta;
use crate::types::StoredMembership;
use crate::types::Vote;

/// Appends little-endian values to a byte vector.
pub(crate) struct Enc<'a>(pub(crate) &'a mut Vec<u8>);

impl Enc<'_> {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.u32(len_u32(v.len()));
        self.0.extend_from_slice(v);
    }
    pub(crate) fn log_id(&mut self, id: &LogId) {
        self.u64(id.leader_id.term);
        self.u64(id.leader_id.node_id);
        self.u64(id.index);
    }
    pub(crate) fn opt_log_id(&mut self, id: Option<&LogId>) {
        match id {
            None => self.u8(0),
            Some(id) => {
                self.u8(1);
                self.log_id(id);
            }
        }
    }
    pub(crate) fn vote(&mut self, v: &Vote) {
        self.u64(v.leader_id.term);
        self.u64(v.leader_id.node_id);
        self.u8(u8::from(v.committed));
    }
    /// `n_configs u32, (n u32, id u64 * n) * n_configs, n_nodes u32, (id u64, addr bytes) * n_nodes`.
    pub(crate) fn membership(&mut self, m: &Membership) {
        let configs = m.get_joint_config();
        self.u32(len_u32(configs.len()));
        for c in configs {
            self.u32(len_u32(c.len()));
            for id in c {
                self.u64(*id);
            }
        }
        let nodes: Vec<_> = m.nodes().collect();
        self.u32(len_u32(nodes.len()));
        for (id, node) in nodes {
            self.u64(*id);
            self.bytes(node.addr.as_bytes());
        }
    }
    pub(crate) fn stored_membership(&mut self, m: &StoredMembership) {
        self.opt_log_id(m.log_id().as_ref());
        self.membership(m.membership());
    }
    pub(crate) fn snapshot_meta(&mut self, m: &SnapshotMeta) {
        self.opt_log_id(m.last_log_id.as_ref());
        self.stored_membership(&m.last_membership);
    }
}

/// Lengths in our formats are u32; larger values cannot be produced by this crate's callers
/// (memberships and addresses are small), so saturate rather than panic.
fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Reads little-endian values from a byte slice; every error names what was being read.
pub(crate) struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Dec { buf, pos: 0 }
    }
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub(crate) fn take(&mut self, n: usize, what: &str) -> std::result::Result<&'a [u8], String> {
        if self.remaining() < n {
            return Err(format!("truncated while reading {what} at byte {}", self.pos));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub(crate) fn u8(&mut self, what: &str) -> std::result::Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }
    pub(crate) fn u32(&mut self, what: &str) -> std::result::Result<u32, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn u64(&mut self, what: &str) -> std::result::Result<u64, String> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    pub(crate) fn bytes(&mut self, what: &str) -> std::result::Result<&'a [u8], String> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }
    pub(crate) fn log_id(&mut self) -> std::result::Result<LogId, String> {
        let term = bounded(self.u64("log id term")?, MAX_TERM, "log id term")?;
        let node = self.u64("log id node")?;
        let index = bounded(self.u64("log id index")?, MAX_INDEX, "log id index")?;
        Ok(LogId::new(LeaderId { term, node_id: node }, index))
    }
    pub(crate) fn opt_log_id(&mut self) -> std::result::Result<Option<LogId>, String> {
        match self.u8("log id tag")? {
            0 => Ok(None),
            1 => Ok(Some(self.log_id()?)),
            t => Err(format!("bad log id tag {t}")),
        }
    }
    pub(crate) fn vote(&mut self) -> std::result::Result<Vote, String> {
        let term = bounded(self.u64("vote term")?, MAX_TERM, "vote term")?;
        let node = self.u64("vote node")?;
        let committed = match self.u8("vote committed flag")? {
            0 => false,
            1 => true,
            t => return Err(format!("bad vote committed flag {t}")),
        };
        Ok(Vote { leader_id: LeaderId { term, node_id: node }, committed })
    }
    pub(crate) fn membership(&mut self) -> std::result::Result<Membership, String> {
        let n_configs = self.u32("membership config count")?;
        let mut configs = Vec::new();
        for _ in 0..n_configs {
            let n = self.u32("membership config size")?;
            let mut set = BTreeSet::new();
            for _ in 0..n {
                set.insert(self.u64("membership voter id")?);
            }
            configs.push(set);
        }
        let n_nodes = self.u32("membership node count")?;
        let mut nodes = BTreeMap::new();
        for _ in 0..n_nodes {
            let id = self.u64("membership node id")?;
            let addr = self.bytes("membership node address")?;
            let addr =
                String::from_utf8(addr.to_vec()).map_err(|_| "membership node address is not UTF-8".to_string())?;
            nodes.insert(id, Node { addr });
        }
        Membership::new(configs, nodes).map_err(|e| format!("invalid membership: {e}"))
    }
    pub(crate) fn stored_membership(&mut self) -> std::result::Result<StoredMembership, String> {
        let log_id = self.opt_log_id()?;
        let m = self.membership()?;
        Ok(StoredMembership::new(log_id, m))
    }
    pub(crate) fn snapshot_meta(&mut self) -> std::result::Result<SnapshotMeta, String> {
        let last_log_id = self.opt_log_id()?;
        let last_membership = self.stored_membership()?;
        Ok(SnapshotMeta { last_log_id, last_membership })
    }
}

/// Magic of the small state files (vote, committed, purged).
const STATE_MAGIC: &[u8; 8] = b"SHOALST\0";
/// Format version of the small state files.
pub(crate) const STATE_VERSION: u32 = 1;

/// Frames `body` as a small state file:
/// `magic[8] | version u32 | kind u8 | body_len u32 | body | crc32c u32` (crc over all before it).
fn frame_state(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 21);
    out.extend_from_slice(STATE_MAGIC);
    let mut e = Enc(&mut out);
    e.u32(STATE_VERSION);
    e.u8(kind);
    e.bytes(body);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Reads a small state file written by [`write_state_file`]; `Ok(None)` when it does not exist.
pub(crate) fn read_state_file(path: &Path, kind: u8) -> Result<Option<Vec<u8>>> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let bad = |reason: String| Error::corrupt(path, reason);
    if data.len() < 21 || &data[..8] != STATE_MAGIC {
        return Err(bad("not a state file (bad magic or too short)".into()));
    }
    let (content, crc) = data.split_at(data.len() - 4);
    let want = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32c::crc32c(content) != want {
        return Err(bad("checksum mismatch".into()));
    }
    let mut d = Dec::new(&content[8..]);
    let version = d.u32("version").map_err(bad)?;
    if version != STATE_VERSION {
        return Err(bad(format!("unsupported format version {version}")));
    }
    let k = d.u8("kind").map_err(bad)?;
    if k != kind {
        return Err(bad(format!("kind {k}, expected {kind}")));
    }
    let body = d.bytes("body").map_err(bad)?;
    Ok(Some(body.to_vec()))
}

/// Replaces `dir/name` atomically and durably: write `name.tmp`, fsync, rename, fsync `dir`.
pub(crate) fn write_state_file(dir: &Path, name: &str, kind: u8, body: &[u8]) -> std::io::Result<()> {
    let data = frame_state(kind, body);
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// fsyncs a directory so that entries created, renamed or removed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Largest Raft term accepted from the disk or the wire: far beyond any real election count, far below
/// where openraft's `term + 1` arithmetic would overflow (a forged term near u64::MAX is refused here).
pub(crate) const MAX_TERM: u64 = 1 << 48;
/// Largest log index accepted from the disk or the wire (same reason).
pub(crate) const MAX_INDEX: u64 = 1 << 62;

fn bounded(v: u64, max: u64, what: &str) -> std::result::Result<u64, String> {
    if v > max { Err(format!("{what} {v} is out of range (at most {max})")) } else { Ok(v) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_round_trip() {
        let mut nodes = BTreeMap::new();
        nodes.insert(1u64, Node { addr: "a:1".into() });
        nodes.insert(2u64, Node { addr: "b:2".into() });
        nodes.insert(3u64, Node { addr: "c:3".into() });
        let configs = vec![BTreeSet::from([1u64, 2]), BTreeSet::from([2u64])];
        let m = Membership::new(configs, nodes).unwrap();
        let sm = StoredMembership::new(Some(LogId::new(LeaderId { term: 3, node_id: 1 }, 9)), m);
        let meta =
            SnapshotMeta { last_log_id: Some(LogId::new(LeaderId { term: 4, node_id: 2 }, 11)), last_membership: sm };
        let mut buf = Vec::new();
        Enc(&mut buf).snapshot_meta(&meta);
        let mut d = Dec::new(&buf);
        assert_eq!(d.snapshot_meta().unwrap(), meta);
        assert_eq!(d.remaining(), 0);

        let empty = SnapshotMeta::default();
        let mut buf = Vec::new();
        Enc(&mut buf).snapshot_meta(&empty);
        assert_eq!(Dec::new(&buf).snapshot_meta().unwrap(), empty);
    }

    #[test]
    fn state_file_round_trip_and_corruption() {
        let dir = shoal_testkit::TempDir::new("raft-codec");
        write_state_file(dir.path(), "vote", 1, b"hello").unwrap();
        assert_eq!(read_state_file(&dir.path().join("vote"), 1).unwrap().unwrap(), b"hello");
        assert!(read_state_file(&dir.path().join("missing"), 1).unwrap().is_none());
        assert!(matches!(read_state_file(&dir.path().join("vote"), 2), Err(Error::Corrupt { .. })));
        let p = dir.path().join("vote");
        let mut data = std::fs::read(&p).unwrap();
        data[14] ^= 0xff;
        std::fs::write(&p, data).unwrap();
        assert!(matches!(read_state_file(&p, 1), Err(Error::Corrupt { .. })));
    }
}
