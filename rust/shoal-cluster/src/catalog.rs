//! The group-0 state machine: the catalog of collections (name -> spec, uid, placement) and the node registry.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use parking_lot::RwLock;
use prost::Message;
use shoal_api::collections::CollectionSpec;
use shoal_api::commands::{MetaCommand, decode_meta, encode_meta_reply};
use shoal_api::internal::{
    ApiKey, CatalogCollection, CatalogSnapshot, FinishMove, MoveReplica, NodeRecord, PreferLeader, ShardReplicas,
};
use tokio::sync::watch;

use crate::placement::{self, ClusterView, NodeInfo, NodeState, Placement, ShardPlacement};

/// One catalog entry.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionEntry {
    /// The collection's definition, fixed at creation.
    pub spec: CollectionSpec,
    /// The group-0 log index that created it; distinguishes a re-created collection from a dropped one.
    pub uid: u64,
    /// The desired replicas of each shard, `len() == spec.shards`; the first replica is the preferred leader.
    /// During a move it holds both the source and the target.
    pub placement: Placement,
    /// Per shard (`len() == spec.shards`), the replicas of `placement` on their way out (a move in
    /// progress); empty when none.
    pub leaving: Vec<Vec<u64>>,
}

impl CollectionEntry {
    /// The nodes holding replicas of `shard` (the source and the target of a move in progress included).
    pub fn replicas(&self, shard: u32) -> &[u64] {
        self.placement.get(shard as usize).map_or(&[], |p| p.replicas.as_slice())
    }

    /// The replicas of `shard` that a move is taking away.
    pub fn leaving(&self, shard: u32) -> &[u64] {
        self.leaving.get(shard as usize).map_or(&[], Vec::as_slice)
    }
}

/// Snapshot format of the catalog: 1 = collections only (single node), 2 = `CatalogSnapshot` protobuf.
const CATALOG_MAGIC: &[u8; 8] = b"SHOALCT1";
const CATALOG_FORMAT: u32 = 2;

/// What the catalog holds; replaced whole on restore.
#[derive(Debug, Default)]
struct CatalogState {
    /// Collections by name.
    collections: BTreeMap<String, CollectionEntry>,
    /// Registered nodes by id.
    nodes: BTreeMap<u64, NodeRecord>,
    /// API keys by name: (role, SHA-256 of the key).
    api_keys: BTreeMap<String, (String, Vec<u8>)>,
    /// Names of revoked keys.
    revoked_keys: std::collections::BTreeSet<String>,
}

/// The catalog, applied from group 0's log. Every change bumps `changes` so the reconciler wakes.
#[derive(Debug)]
pub struct Catalog {
    /// Collections and nodes; only changed by `apply`/`restore`.
    state: RwLock<CatalogState>,
    /// Incremented on every change.
    changes: watch::Sender<u64>,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog { state: RwLock::new(CatalogState::default()), changes: watch::channel(0).0 }
    }
}

fn node_state(s: &str) -> NodeState {
    match s {
        "joining" => NodeState::Joining,
        "leaving" => NodeState::Leaving,
        _ => NodeState::Up,
    }
}

impl Catalog {
    /// A receiver that sees a new value after every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The entry of `name`, if any.
    pub fn get(&self, name: &str) -> Option<CollectionEntry> {
        self.state.read().collections.get(name).cloned()
    }

    /// All entries in name order.
    pub fn list(&self) -> Vec<CollectionEntry> {
        self.state.read().collections.values().cloned().collect()
    }

    /// Every registered node, by id.
    pub fn nodes(&self) -> Vec<NodeRecord> {
        self.state.read().nodes.values().cloned().collect()
    }

    /// The role of the API key whose SHA-256 is `hash`, with its name (`None`: unknown or revoked).
    pub fn api_key_role(&self, hash: &[u8]) -> Option<(String, String)> {
        let st = self.state.read();
        st.api_keys.iter().find(|(_, (_, h))| h.as_slice() == hash).map(|(n, (r, _))| (n.clone(), r.clone()))
    }

    /// Whether the key named `name` was revoked.
    pub fn api_key_revoked(&self, name: &str) -> bool {
        self.state.read().revoked_keys.contains(name)
    }

    /// (name, role) of every API key in the cluster.
    pub fn api_keys(&self) -> Vec<(String, String)> {
        self.state.read().api_keys.iter().map(|(n, (r, _))| (n.clone(), r.clone())).collect()
    }

    /// The registered node `id`.
    pub fn node(&self, id: u64) -> Option<NodeRecord> {
        self.state.read().nodes.get(&id).cloned()
    }

    /// The placement view of the registry and the existing collections.
    pub fn view(&self) -> ClusterView {
        view_of(&self.state.read())
    }

    /// The view a drain of `node` plans on: shards whose replica on `node` is already leaving (a move out
    /// of it is in flight) no longer count it, so they need no second target. Without this, draining the
    /// last node a shard could move to failed as soon as the move had started ("no other Up node").
    pub fn drain_view(&self, node: u64) -> ClusterView {
        let st = self.state.read();
        let mut view = view_of(&st);
        for (name, (_, placement)) in view.collections.iter_mut() {
            let Some(e) = st.collections.get(name) else { continue };
            for sp in placement.iter_mut() {
                if e.leaving(sp.shard).contains(&node) {
                    sp.replicas.retain(|&r| r != node);
                }
            }
        }
        view
    }

    fn bump(&self) {
        self.changes.send_modify(|v| *v += 1);
    }
}

fn view_of(st: &CatalogState) -> ClusterView {
    ClusterView {
        nodes: st
            .nodes
            .values()
            .map(|n| NodeInfo {
                id: n.id,
                zone: (!n.zone.is_empty()).then(|| n.zone.clone()),
                state: node_state(&n.state),
            })
            .collect(),
        collections: st
            .collections
            .iter()
            .map(|(name, e)| (name.clone(), (e.spec.replication_factor, e.placement.clone())))
            .collect(),
    }
}

/// Starts a move: `to` joins the shard's replicas (last), `from` (if any) is marked leaving.
fn apply_move(st: &mut CatalogState, m: &MoveReplica) -> std::result::Result<bool, String> {
    let to_known = st.nodes.contains_key(&m.to);
    let e = st
        .collections
        .get_mut(&m.collection)
        .filter(|e| e.uid == m.uid)
        .ok_or_else(|| format!("move refused: collection {:?} (uid {}) does not exist", m.collection, m.uid))?;
    let shard = m.shard as usize;
    let (Some(p), Some(leaving)) = (e.placement.get_mut(shard), e.leaving.get_mut(shard)) else {
        return Err(format!("move refused: collection {:?} has no shard {}", m.collection, m.shard));
    };
    if !leaving.is_empty() || p.replicas.len() > e.spec.replication_factor as usize {
        return Err(format!("move refused: shard {} of {:?} is already moving", m.shard, m.collection));
    }
    if !to_known {
        return Err(format!("move refused: node {} is not registered", m.to));
    }
    if p.replicas.contains(&m.to) {
        return Err(format!("move refused: node {} already holds shard {} of {:?}", m.to, m.shard, m.collection));
    }
    if m.from != 0 {
        if !p.replicas.contains(&m.from) {
            return Err(format!("move refused: node {} holds no replica of shard {}", m.from, m.shard));
        }
        leaving.push(m.from);
    }
    p.replicas.push(m.to);
    Ok(true)
}

/// Makes `p.node` the shard's preferred leader (first replica); refused while the shard is moving.
fn apply_prefer(st: &mut CatalogState, p: &PreferLeader) -> std::result::Result<bool, String> {
    let e = st.collections.get_mut(&p.collection).filter(|e| e.uid == p.uid).ok_or_else(|| {
        format!("leader change refused: collection {:?} (uid {}) does not exist", p.collection, p.uid)
    })?;
    let shard = p.shard as usize;
    let (Some(sp), Some(leaving)) = (e.placement.get_mut(shard), e.leaving.get(shard)) else {
        return Err(format!("leader change refused: collection {:?} has no shard {}", p.collection, p.shard));
    };
    if !leaving.is_empty() {
        return Err(format!("leader change refused: shard {} of {:?} is moving", p.shard, p.collection));
    }
    let Some(i) = sp.replicas.iter().position(|&n| n == p.node) else {
        return Err(format!("leader change refused: node {} holds no replica of shard {}", p.node, p.shard));
    };
    if i == 0 {
        return Ok(false);
    }
    let lead = sp.replicas.remove(i);
    sp.replicas.insert(0, lead);
    Ok(true)
}

/// Adds, changes (`kind` given) or drops a collection's payload index; refused past `MAX_INDEXES`.
fn apply_payload_index(
    st: &mut CatalogState,
    collection: &str,
    uid: u64,
    field: &str,
    kind: Option<shoal_core::payload_index::IndexKind>,
) -> std::result::Result<bool, String> {
    let e =
        st.collections.get_mut(collection).filter(|e| e.uid == uid).ok_or_else(|| {
            format!("payload index change refused: collection {collection:?} (uid {uid}) does not exist")
        })?;
    let list = &mut e.spec.payload_indexes;
    let Some(kind) = kind else {
        let before = list.len();
        list.retain(|(f, _)| f != field);
        return Ok(list.len() != before);
    };
    if let Some(x) = list.iter_mut().find(|(f, _)| f == field) {
        let changed = x.1 != kind;
        x.1 = kind;
        return Ok(changed);
    }
    let max = shoal_core::payload_index::MAX_INDEXES;
    if list.len() >= max {
        return Err(format!("collection {collection:?} already has {max} payload indexes (the most allowed)"));
    }
    list.push((field.to_string(), kind));
    list.sort();
    Ok(true)
}

/// Ends a move: each leaving replica leaves; the target takes its position (inheriting preferred leadership).
fn apply_finish(st: &mut CatalogState, m: &FinishMove) -> std::result::Result<bool, String> {
    let Some(e) = st.collections.get_mut(&m.collection).filter(|e| e.uid == m.uid) else {
        return Ok(false);
    };
    let shard = m.shard as usize;
    let (Some(p), Some(leaving)) = (e.placement.get_mut(shard), e.leaving.get_mut(shard)) else {
        return Ok(false);
    };
    if leaving.is_empty() {
        return Ok(false);
    }
    for from in std::mem::take(leaving) {
        if let Some(pos) = p.replicas.iter().position(|&n| n == from) {
            match p.replicas.pop() {
                Some(to) if pos < p.replicas.len() => p.replicas[pos] = to,
                _ => {}
            }
        }
    }
    Ok(true)
}

impl shoal_raft::StateMachineApp for Catalog {
    fn apply(&self, index: u64, command: &[u8]) -> Vec<u8> {
        let reply = match decode_meta(command) {
            Err(e) => Err(format!("undecodable metadata command: {e}")),
            Ok(MetaCommand::CreateCollection(spec)) => {
                let mut st = self.state.write();
                if st.collections.contains_key(&spec.name) {
                    Err(format!("collection {:?} already exists", spec.name))
                } else {
                    // Deterministic on every replica: the same registry and collections give the same placement.
                    match placement::place_collection(&view_of(&st), spec.shards, spec.replication_factor) {
                        Ok(placement) => {
                            let leaving = vec![Vec::new(); placement.len()];
                            let entry = CollectionEntry { spec, uid: index, placement, leaving };
                            st.collections.insert(entry.spec.name.clone(), entry);
                            Ok(true)
                        }
                        Err(e) => Err(format!("cannot place collection {:?}: {e}", spec.name)),
                    }
                }
            }
            Ok(MetaCommand::DropCollection(name)) => Ok(self.state.write().collections.remove(&name).is_some()),
            Ok(MetaCommand::MoveReplica(m)) => apply_move(&mut self.state.write(), &m),
            Ok(MetaCommand::FinishMove(m)) => apply_finish(&mut self.state.write(), &m),
            Ok(MetaCommand::RemoveNode(id)) => Ok(self.state.write().nodes.remove(&id).is_some()),
            Ok(MetaCommand::PreferLeader(p)) => apply_prefer(&mut self.state.write(), &p),
            Ok(MetaCommand::SetPayloadIndex { collection, uid, field, kind }) => {
                apply_payload_index(&mut self.state.write(), &collection, uid, &field, kind)
            }
            Ok(MetaCommand::PutApiKey(k)) => {
                let mut st = self.state.write();
                st.revoked_keys.remove(&k.name);
                st.api_keys.insert(k.name, (k.role, k.hash));
                Ok(true)
            }
            Ok(MetaCommand::RevokeApiKey(name)) => {
                let mut st = self.state.write();
                let had = st.api_keys.remove(&name).is_some();
                Ok(st.revoked_keys.insert(name) || had)
            }
            Ok(MetaCommand::UpsertNode(n)) => {
                let mut st = self.state.write();
                let changed = st.nodes.get(&n.id) != Some(&n);
                st.nodes.insert(n.id, n);
                Ok(changed)
            }
        };
        if reply == Ok(true) {
            self.bump();
        }
        encode_meta_reply(reply)
    }

    fn snapshot(&self, w: &mut dyn Write) -> std::io::Result<()> {
        let st = self.state.read();
        let snap = CatalogSnapshot {
            collections: st
                .collections
                .values()
                .map(|e| CatalogCollection {
                    info: Some(e.spec.to_info()),
                    uid: e.uid,
                    placement: e.placement.iter().map(|p| ShardReplicas { nodes: p.replicas.clone() }).collect(),
                    leaving: e.leaving.iter().map(|l| ShardReplicas { nodes: l.clone() }).collect(),
                })
                .collect(),
            nodes: st.nodes.values().cloned().collect(),
            api_keys: st
                .api_keys
                .iter()
                .map(|(name, (role, hash))| ApiKey { name: name.clone(), role: role.clone(), hash: hash.clone() })
                .collect(),
            revoked_keys: st.revoked_keys.iter().cloned().collect(),
        };
        w.write_all(CATALOG_MAGIC)?;
        w.write_all(&CATALOG_FORMAT.to_le_bytes())?;
        let bytes = snap.encode_to_vec();
        w.write_all(&(bytes.len() as u64).to_le_bytes())?;
        w.write_all(&bytes)
    }

    fn restore(&self, _index: u64, r: &mut dyn Read) -> std::io::Result<()> {
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("catalog snapshot: {m}"));
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)?;
        if &magic != CATALOG_MAGIC {
            return Err(bad("bad magic"));
        }
        let mut b4 = [0u8; 4];
        let mut b8 = [0u8; 8];
        r.read_exact(&mut b4)?;
        let format = u32::from_le_bytes(b4);
        if format > CATALOG_FORMAT {
            return Err(bad("format version newer than this build"));
        }
        let mut st = CatalogState::default();
        r.read_exact(&mut b8)?;
        let n = u64::from_le_bytes(b8);
        if format == 1 {
            // Single-node catalogs: every shard on node 1, no registry (the node registers itself again).
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
                let placement = (0..spec.shards).map(|shard| ShardPlacement { shard, replicas: vec![1] }).collect();
                let leaving = vec![Vec::new(); spec.shards as usize];
                st.collections.insert(spec.name.clone(), CollectionEntry { spec, uid, placement, leaving });
            }
        } else {
            if n > 1 << 30 {
                return Err(bad("snapshot too large"));
            }
            let mut buf = vec![0u8; n as usize];
            r.read_exact(&mut buf)?;
            let snap = CatalogSnapshot::decode(buf.as_slice()).map_err(|e| bad(&e.to_string()))?;
            for c in snap.collections {
                let info = c.info.ok_or_else(|| bad("collection without info"))?;
                let spec = CollectionSpec::from_info(&info).map_err(|e| bad(&e.to_string()))?;
                if c.placement.len() != spec.shards as usize {
                    return Err(bad(&format!("collection {:?}: placement does not match its shards", spec.name)));
                }
                let placement = c
                    .placement
                    .into_iter()
                    .enumerate()
                    .map(|(i, p)| ShardPlacement { shard: i as u32, replicas: p.nodes })
                    .collect();
                let mut leaving: Vec<Vec<u64>> = c.leaving.into_iter().map(|l| l.nodes).collect();
                leaving.resize(spec.shards as usize, Vec::new());
                st.collections.insert(spec.name.clone(), CollectionEntry { spec, uid: c.uid, placement, leaving });
            }
            st.nodes = snap.nodes.into_iter().map(|n| (n.id, n)).collect();
            st.api_keys = snap.api_keys.into_iter().map(|k| (k.name, (k.role, k.hash))).collect();
            st.revoked_keys = snap.revoked_keys.into_iter().collect();
        }
        *self.state.write() = st;
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
            shard: ShardConfig {
                dim: 4,
                metric: Metric::L2,
                id_type: IdType::Int,
                index: IndexConfig::Flat,
                on_disk: false,
            },
            shards: 2,
            replication_factor: 1,
            payload_indexes: Vec::new(),
        }
    }

    #[test]
    fn a_move_adds_the_target_then_finishing_drops_the_source_in_place() {
        let c = Catalog::default();
        for id in 1..=4 {
            c.apply(id, &encode_meta(&node(id)));
        }
        let mut s = spec("m");
        s.shards = 1;
        s.replication_factor = 3;
        c.apply(9, &encode_meta(&MetaCommand::CreateCollection(s)));
        let e = c.get("m").unwrap();
        let before = e.replicas(0).to_vec();
        assert!(!before.contains(&4));
        let from = before[0];
        let mv =
            |from, to| MetaCommand::MoveReplica(MoveReplica { collection: "m".into(), uid: 9, shard: 0, from, to });
        assert!(
            decode_meta_reply(&c.apply(10, &encode_meta(&mv(from, before[1])))).unwrap().is_err(),
            "target holds it"
        );
        assert!(decode_meta_reply(&c.apply(10, &encode_meta(&mv(from, 7)))).unwrap().is_err(), "unknown target");
        assert_eq!(decode_meta_reply(&c.apply(11, &encode_meta(&mv(from, 4)))).unwrap(), Ok(true));
        let e = c.get("m").unwrap();
        assert_eq!(e.replicas(0).len(), 4);
        assert_eq!(e.leaving(0), &[from]);
        assert!(decode_meta_reply(&c.apply(12, &encode_meta(&mv(before[1], 4)))).unwrap().is_err(), "one at a time");
        let fin = MetaCommand::FinishMove(FinishMove { collection: "m".into(), uid: 9, shard: 0 });
        assert_eq!(decode_meta_reply(&c.apply(13, &encode_meta(&fin))).unwrap(), Ok(true));
        let e = c.get("m").unwrap();
        assert_eq!(e.replicas(0), &[4, before[1], before[2]], "the target takes the source's place");
        assert!(e.leaving(0).is_empty());
        let mut buf = Vec::new();
        c.snapshot(&mut buf).unwrap();
        let d = Catalog::default();
        d.restore(0, &mut buf.as_slice()).unwrap();
        assert_eq!(d.list(), c.list());
    }

    #[test]
    fn payload_indexes_are_added_changed_and_dropped() {
        use shoal_core::payload_index::{IndexKind, MAX_INDEXES};
        let c = Catalog::default();
        c.apply(1, &encode_meta(&node(1)));
        c.apply(9, &encode_meta(&MetaCommand::CreateCollection(spec("p"))));
        let set = |field: &str, kind: Option<IndexKind>, uid: u64| {
            let cmd = MetaCommand::SetPayloadIndex { collection: "p".into(), uid, field: field.into(), kind };
            shoal_api::commands::decode_meta_reply(&c.apply(10, &encode_meta(&cmd))).unwrap()
        };
        assert!(set("lang", Some(IndexKind::Keyword), 9).unwrap());
        assert!(!set("lang", Some(IndexKind::Keyword), 9).unwrap(), "unchanged");
        assert!(set("year", Some(IndexKind::Integer), 9).unwrap());
        assert!(set("lang", Some(IndexKind::Bool), 9).unwrap(), "kind changed");
        assert_eq!(
            c.get("p").unwrap().spec.payload_indexes,
            vec![("lang".to_string(), IndexKind::Bool), ("year".to_string(), IndexKind::Integer)]
        );
        assert!(set("lang", None, 9).unwrap());
        assert!(!set("lang", None, 9).unwrap(), "dropping a missing index is a no-op");
        assert!(set("x", Some(IndexKind::Bool), 8).unwrap_err().contains("does not exist"), "another uid");
        for i in 0..MAX_INDEXES - 1 {
            set(&format!("f{i}"), Some(IndexKind::Float), 9).unwrap();
        }
        assert!(set("one_more", Some(IndexKind::Float), 9).unwrap_err().contains("already has"));
        // the list survives the snapshot
        let mut buf = Vec::new();
        c.snapshot(&mut buf).unwrap();
        let d = Catalog::default();
        d.restore(0, &mut buf.as_slice()).unwrap();
        assert_eq!(d.get("p").unwrap().spec.payload_indexes.len(), MAX_INDEXES);
    }

    #[test]
    fn prefer_leader_moves_a_replica_first_and_refuses_strangers() {
        let c = Catalog::default();
        for id in 1..=3 {
            c.apply(id, &encode_meta(&node(id)));
        }
        let mut s = spec("p");
        s.shards = 1;
        s.replication_factor = 2;
        c.apply(9, &encode_meta(&MetaCommand::CreateCollection(s)));
        let before = c.get("p").unwrap().replicas(0).to_vec();
        let outsider = (1..=3).find(|n| !before.contains(n)).unwrap();
        let prefer = |node| {
            let cmd = MetaCommand::PreferLeader(PreferLeader { collection: "p".into(), uid: 9, shard: 0, node });
            decode_meta_reply(&c.apply(10, &encode_meta(&cmd))).unwrap()
        };
        assert_eq!(prefer(before[1]), Ok(true));
        assert_eq!(c.get("p").unwrap().replicas(0), &[before[1], before[0]]);
        assert_eq!(prefer(before[1]), Ok(false), "already first");
        assert!(prefer(outsider).unwrap_err().contains("holds no replica"));
    }

    #[test]
    fn placement_spreads_replicas_over_registered_nodes() {
        let c = Catalog::default();
        for id in 1..=3 {
            c.apply(id, &encode_meta(&node(id)));
        }
        let mut s = spec("r");
        s.shards = 6;
        s.replication_factor = 3;
        let r = c.apply(9, &encode_meta(&MetaCommand::CreateCollection(s)));
        assert_eq!(decode_meta_reply(&r).unwrap(), Ok(true));
        let e = c.get("r").unwrap();
        let mut leaders = BTreeMap::new();
        for shard in 0..6 {
            let mut r = e.replicas(shard).to_vec();
            *leaders.entry(r[0]).or_insert(0) += 1;
            r.sort();
            assert_eq!(r, vec![1, 2, 3]);
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
    }

    fn node(id: u64) -> MetaCommand {
        MetaCommand::UpsertNode(NodeRecord {
            id,
            address: format!("127.0.0.1:{id}"),
            zone: String::new(),
            state: "up".into(),
            version: "t".into(),
        })
    }

    #[test]
    fn create_drop_and_snapshot() {
        let c = Catalog::default();
        let r = c.apply(1, &encode_meta(&MetaCommand::CreateCollection(spec("a"))));
        assert!(decode_meta_reply(&r).unwrap().unwrap_err().contains("needs 1 distinct Up nodes"), "no nodes yet");
        c.apply(2, &encode_meta(&node(1)));
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
        d.restore(0, &mut buf.as_slice()).unwrap();
        assert_eq!(d.list(), c.list());
        assert_eq!(d.nodes(), c.nodes());
        assert_eq!(c.get("a").unwrap().replicas(0), &[1]);
        assert!(d.restore(0, &mut &buf[..10]).is_err());
    }
}
