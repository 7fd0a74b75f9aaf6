//! The group-0 state machine: the catalog of collections (name -> spec + uid).

use std::collections::BTreeMap;
use std::io::{Read, Write};

use parking_lot::RwLock;
use prost::Message;
use shoal_api::collections::CollectionSpec;
use shoal_api::commands::{MetaCommand, decode_meta, encode_meta_reply};
use tokio::sync::watch;

/// One catalog entry.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionEntry {
    /// The collection's definition, fixed at creation.
    pub spec: CollectionSpec,
    /// The group-0 log index that created it; distinguishes a re-created collection from a dropped one.
    pub uid: u64,
}

/// Snapshot format of the catalog.
const CATALOG_MAGIC: &[u8; 8] = b"SHOALCT1";
const CATALOG_FORMAT: u32 = 1;

/// The catalog, applied from group 0's log. Every change bumps `changes` so the reconciler wakes.
#[derive(Debug)]
pub struct Catalog {
    /// Collections by name; only changed by `apply`/`restore`.
    entries: RwLock<BTreeMap<String, CollectionEntry>>,
    /// Incremented on every change.
    changes: watch::Sender<u64>,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog { entries: RwLock::new(BTreeMap::new()), changes: watch::channel(0).0 }
    }
}

impl Catalog {
    /// A receiver that sees a new value after every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The entry of `name`, if any.
    pub fn get(&self, name: &str) -> Option<CollectionEntry> {
        self.entries.read().get(name).cloned()
    }

    /// All entries in name order.
    pub fn list(&self) -> Vec<CollectionEntry> {
        self.entries.read().values().cloned().collect()
    }

    fn bump(&self) {
        self.changes.send_modify(|v| *v += 1);
    }
}

impl shoal_raft::StateMachineApp for Catalog {
    fn apply(&self, index: u64, command: &[u8]) -> Vec<u8> {
        let reply = match decode_meta(command) {
            Err(e) => Err(format!("undecodable metadata command: {e}")),
            Ok(MetaCommand::CreateCollection(spec)) => {
                let mut entries = self.entries.write();
                if entries.contains_key(&spec.name) {
                    Err(format!("collection {:?} already exists", spec.name))
                } else {
                    entries.insert(spec.name.clone(), CollectionEntry { spec, uid: index });
                    Ok(true)
                }
            }
            Ok(MetaCommand::DropCollection(name)) => Ok(self.entries.write().remove(&name).is_some()),
        };
        if reply == Ok(true) {
            self.bump();
        }
        encode_meta_reply(reply)
    }

    fn snapshot(&self, w: &mut dyn Write) -> std::io::Result<()> {
        let entries = self.entries.read();
        w.write_all(CATALOG_MAGIC)?;
        w.write_all(&CATALOG_FORMAT.to_le_bytes())?;
        w.write_all(&(entries.len() as u64).to_le_bytes())?;
        for e in entries.values() {
            let bytes = e.spec.to_info().encode_to_vec();
            w.write_all(&e.uid.to_le_bytes())?;
            w.write_all(&(bytes.len() as u32).to_le_bytes())?;
            w.write_all(&bytes)?;
        }
        Ok(())
    }

    fn restore(&self, r: &mut dyn Read) -> std::io::Result<()> {
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("catalog snapshot: {m}"));
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)?;
        if &magic != CATALOG_MAGIC {
            return Err(bad("bad magic"));
        }
        let mut b4 = [0u8; 4];
        let mut b8 = [0u8; 8];
        r.read_exact(&mut b4)?;
        if u32::from_le_bytes(b4) > CATALOG_FORMAT {
            return Err(bad("format version newer than this build"));
        }
        r.read_exact(&mut b8)?;
        let n = u64::from_le_bytes(b8);
        let mut map = BTreeMap::new();
        for _ in 0..n {
            r.read_exact(&mut b8)?;
            let uid = u64::from_le_bytes(b8);
            r.read_exact(&mut b4)?;
            let len = u32::from_le_bytes(b4) as usize;
            if len > 1 << 20 {
                return Err(bad("entry too large"));
            }
            let mut buf = vec![0u8; len];
            r.read_exact(&mut buf)?;
            let info = shoal_api::v1::CollectionInfo::decode(buf.as_slice()).map_err(|e| bad(&e.to_string()))?;
            let spec = CollectionSpec::from_info(&info).map_err(|e| bad(&e.to_string()))?;
            map.insert(spec.name.clone(), CollectionEntry { spec, uid });
        }
        *self.entries.write() = map;
        self.bump();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::commands::{decode_meta_reply, encode_meta};
    use shoal_core::{IdType, IndexConfig, Metric, ShardConfig};
    use shoal_raft::StateMachineApp;

    fn spec(name: &str) -> CollectionSpec {
        CollectionSpec {
            name: name.into(),
            shard: ShardConfig { dim: 4, metric: Metric::L2, id_type: IdType::Int, index: IndexConfig::Flat },
            shards: 2,
            replication_factor: 1,
        }
    }

    #[test]
    fn create_drop_and_snapshot() {
        let c = Catalog::default();
        let r = c.apply(3, &encode_meta(&MetaCommand::CreateCollection(spec("a"))));
        assert_eq!(decode_meta_reply(&r).unwrap(), Ok(true));
        let r = c.apply(4, &encode_meta(&MetaCommand::CreateCollection(spec("a"))));
        assert!(decode_meta_reply(&r).unwrap().unwrap_err().contains("exists"));
        c.apply(5, &encode_meta(&MetaCommand::CreateCollection(spec("b"))));
        c.apply(6, &encode_meta(&MetaCommand::DropCollection("b".into())));
        assert_eq!(c.get("a").unwrap().uid, 3);
        let mut buf = Vec::new();
        c.snapshot(&mut buf).unwrap();
        let d = Catalog::default();
        d.restore(&mut buf.as_slice()).unwrap();
        assert_eq!(d.list(), c.list());
        assert!(d.restore(&mut &buf[..10]).is_err());
    }
}
