//! Raft commands: shard write batches and group-0 metadata commands, encoded with prost and versioned.

use prost::Message;
use shoal_core::dedup::WriteId;
use shoal_core::hlc::Version;
use shoal_core::payload_index::{IndexKind, validate_field};
use shoal_core::store::{ApplyOutcome, WriteBatch, WriteOp};
use shoal_core::{IdType, PointId};

use crate::collections::{CollectionSpec, check_name};
use crate::internal::{self, OpKind, meta_command::Op};
use crate::points::{ids_from_proto, ids_to_proto, payloads_from_text};
use crate::{COMMAND_FORMAT, Error, Result};

fn check_format(what: &'static str, found: u32) -> Result<()> {
    if found > COMMAND_FORMAT {
        return Err(Error::Format { what, found, supported: COMMAND_FORMAT });
    }
    Ok(())
}

/// Encodes a shard write batch. All ops must carry the same version (the coordinator stamps one per batch).
pub fn encode_write_batch(batch: &WriteBatch) -> Vec<u8> {
    let mut msg = internal::WriteBatch {
        format: COMMAND_FORMAT,
        write_id: batch.write_id.map(|w| w.to_bytes().to_vec()).unwrap_or_default(),
        ..Default::default()
    };
    let mut ids = Vec::with_capacity(batch.ops.len());
    for op in &batch.ops {
        match op {
            WriteOp::Upsert { id, version, vector, payload } => {
                ids.push(id.clone());
                msg.kinds.push(OpKind::Upsert as i32);
                msg.vectors.extend_from_slice(vector);
                msg.payloads.push(crate::points::payload_to_text(payload.as_ref()));
                (msg.hlc, msg.node) = (version.hlc, version.node);
            }
            WriteOp::Delete { id, version } => {
                ids.push(id.clone());
                msg.kinds.push(OpKind::Delete as i32);
                (msg.hlc, msg.node) = (version.hlc, version.node);
            }
            WriteOp::PatchPayload { id, version, patch } => {
                ids.push(id.clone());
                msg.kinds.push(OpKind::Patch as i32);
                msg.payloads.push(serde_json::to_string(patch).unwrap_or_default());
                (msg.hlc, msg.node) = (version.hlc, version.node);
            }
        }
    }
    msg.ids = Some(ids_to_proto(&ids));
    msg.encode_to_vec()
}

/// Decodes a shard write batch for a collection of `dim` / `id_type`.
pub fn decode_write_batch(bytes: &[u8], dim: usize, id_type: IdType) -> Result<WriteBatch> {
    let msg = internal::WriteBatch::decode(bytes).map_err(|source| Error::Decode { what: "WriteBatch", source })?;
    check_format("WriteBatch", msg.format)?;
    let ids: Vec<PointId> = ids_from_proto(msg.ids.as_ref(), id_type)?;
    if ids.len() != msg.kinds.len() {
        return Err(Error::invalid("WriteBatch: ids and kinds differ in length"));
    }
    let version = Version { hlc: msg.hlc, node: msg.node };
    let payloads = payloads_from_text(&msg.payloads, "payloads")?;
    let mut payloads = payloads.into_iter();
    let mut vectors = msg.vectors.chunks_exact(dim.max(1));
    let mut ops = Vec::with_capacity(ids.len());
    for (id, kind) in ids.into_iter().zip(msg.kinds) {
        let op = match OpKind::try_from(kind).map_err(|_| Error::invalid(format!("unknown op kind {kind}")))? {
            OpKind::Upsert => {
                let vector = vectors.next().ok_or_else(|| Error::invalid("WriteBatch: too few vectors"))?.to_vec();
                let payload = payloads.next().ok_or_else(|| Error::invalid("WriteBatch: too few payloads"))?;
                WriteOp::Upsert { id, version, vector, payload }
            }
            OpKind::Delete => WriteOp::Delete { id, version },
            OpKind::Patch => {
                let patch = payloads.next().flatten().unwrap_or_default();
                WriteOp::PatchPayload { id, version, patch }
            }
        };
        ops.push(op);
    }
    Ok(WriteBatch { ops, write_id: write_id_from_bytes(&msg.write_id, "WriteBatch.write_id")? })
}

/// A write id from its wire bytes: empty is `None`, 16 bytes an id, any other length an error naming `what`.
pub fn write_id_from_bytes(b: &[u8], what: &str) -> Result<Option<WriteId>> {
    if b.is_empty() {
        return Ok(None);
    }
    WriteId::from_bytes(b)
        .map(Some)
        .ok_or_else(|| Error::invalid(format!("{what} must be {} bytes, got {}", WriteId::LEN, b.len())))
}

/// Encodes what applying a write batch did.
pub fn encode_write_reply(out: &ApplyOutcome) -> Vec<u8> {
    internal::WriteReply {
        applied: out.applied as u64,
        skipped_stale: out.skipped_stale as u64,
        duplicate: out.duplicate,
        expired: out.expired,
    }
    .encode_to_vec()
}

/// Decodes a write reply.
pub fn decode_write_reply(bytes: &[u8]) -> Result<internal::WriteReply> {
    internal::WriteReply::decode(bytes).map_err(|source| Error::Decode { what: "WriteReply", source })
}

/// A group-0 metadata command.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaCommand {
    /// Create a collection (refused when the name exists).
    CreateCollection(CollectionSpec),
    /// Drop a collection by name (a no-op when absent).
    DropCollection(String),
    /// Add or update a node of the registry.
    UpsertNode(internal::NodeRecord),
    /// Start moving a shard replica.
    MoveReplica(internal::MoveReplica),
    /// Finish a shard's move.
    FinishMove(internal::FinishMove),
    /// Remove a node from the registry.
    RemoveNode(u64),
    /// Make a replica the preferred leader of its shard.
    PreferLeader(internal::PreferLeader),
    /// Add or replace an API key (name, role, hash).
    PutApiKey(internal::ApiKey),
    /// Revoke the API key of that name.
    RevokeApiKey(String),
    /// Add, replace (kind `Some`) or drop (`None`) a collection's payload index.
    SetPayloadIndex {
        /// The collection.
        collection: String,
        /// Its uid.
        uid: u64,
        /// The field path (validated).
        field: String,
        /// The kind; `None` drops the index.
        kind: Option<IndexKind>,
    },
}

/// Encodes a metadata command.
pub fn encode_meta(cmd: &MetaCommand) -> Vec<u8> {
    let op = match cmd {
        MetaCommand::CreateCollection(spec) => Op::CreateCollection(spec.to_info()),
        MetaCommand::DropCollection(name) => Op::DropCollection(name.clone()),
        MetaCommand::UpsertNode(n) => Op::UpsertNode(n.clone()),
        MetaCommand::MoveReplica(m) => Op::MoveReplica(m.clone()),
        MetaCommand::FinishMove(m) => Op::FinishMove(m.clone()),
        MetaCommand::RemoveNode(id) => Op::RemoveNode(*id),
        MetaCommand::PreferLeader(p) => Op::PreferLeader(p.clone()),
        MetaCommand::PutApiKey(k) => Op::PutApiKey(k.clone()),
        MetaCommand::RevokeApiKey(n) => Op::RevokeApiKey(n.clone()),
        MetaCommand::SetPayloadIndex { collection, uid, field, kind } => {
            Op::SetPayloadIndex(internal::SetPayloadIndex {
                collection: collection.clone(),
                uid: *uid,
                field: field.clone(),
                kind: kind.map_or_else(String::new, |k| k.as_str().to_string()),
            })
        }
    };
    internal::MetaCommand { format: COMMAND_FORMAT, op: Some(op) }.encode_to_vec()
}

/// Decodes a metadata command.
pub fn decode_meta(bytes: &[u8]) -> Result<MetaCommand> {
    let msg = internal::MetaCommand::decode(bytes).map_err(|source| Error::Decode { what: "MetaCommand", source })?;
    check_format("MetaCommand", msg.format)?;
    match msg.op {
        Some(Op::CreateCollection(info)) => Ok(MetaCommand::CreateCollection(CollectionSpec::from_info(&info)?)),
        Some(Op::DropCollection(name)) => {
            check_name(&name)?;
            Ok(MetaCommand::DropCollection(name))
        }
        Some(Op::UpsertNode(n)) => {
            check_node(n.id, &n.address)?;
            if !["up", "joining", "leaving"].contains(&n.state.as_str()) || n.zone.len() > 128 || n.version.len() > 64 {
                return Err(Error::invalid(format!("UpsertNode {}: bad state, zone or version", n.id)));
            }
            Ok(MetaCommand::UpsertNode(n))
        }
        Some(Op::MoveReplica(m)) => {
            check_name(&m.collection)?;
            Ok(MetaCommand::MoveReplica(m))
        }
        Some(Op::FinishMove(m)) => {
            check_name(&m.collection)?;
            Ok(MetaCommand::FinishMove(m))
        }
        Some(Op::RemoveNode(0)) => Err(Error::invalid("RemoveNode with node id 0")),
        Some(Op::RemoveNode(id)) => Ok(MetaCommand::RemoveNode(id)),
        Some(Op::PreferLeader(p)) => {
            check_name(&p.collection)?;
            Ok(MetaCommand::PreferLeader(p))
        }
        Some(Op::PutApiKey(k)) => {
            check_key_name(&k.name)?;
            if !["read", "write", "admin"].contains(&k.role.as_str()) || k.hash.len() != 32 {
                return Err(Error::invalid(format!("API key {:?}: bad role or hash", k.name)));
            }
            Ok(MetaCommand::PutApiKey(k))
        }
        Some(Op::SetPayloadIndex(p)) => {
            check_name(&p.collection)?;
            validate_field(&p.field)?;
            let kind = if p.kind.is_empty() { None } else { Some(IndexKind::parse(&p.kind)?) };
            Ok(MetaCommand::SetPayloadIndex { collection: p.collection, uid: p.uid, field: p.field, kind })
        }
        Some(Op::RevokeApiKey(n)) => {
            check_key_name(&n)?;
            Ok(MetaCommand::RevokeApiKey(n))
        }
        None => Err(Error::invalid("MetaCommand without op")),
    }
}

/// Largest node id (ids travel as u64 but are stamped into 32-bit versions).
pub const MAX_NODE_ID: u64 = u32::MAX as u64;

/// Checks a node id (1..=[`MAX_NODE_ID`]) and its address (`HOST:PORT`, port 1..=65535, at most 256 bytes).
pub fn check_node(id: u64, address: &str) -> Result<()> {
    if !(1..=MAX_NODE_ID).contains(&id) {
        return Err(Error::invalid(format!("node id {id} is out of range (1..={MAX_NODE_ID})")));
    }
    let port =
        address.rsplit_once(':').and_then(|(h, p)| (!h.is_empty()).then_some(p)).and_then(|p| p.parse::<u16>().ok());
    if address.len() > 256 || address.chars().any(|c| c.is_whitespace() || c.is_control()) || !matches!(port, Some(1..))
    {
        return Err(Error::invalid(format!(
            "node {id}: address {address:?} is not HOST:PORT with a port in 1..=65535"
        )));
    }
    Ok(())
}

/// Checks an API key's name: 1..=64 chars of `[A-Za-z0-9_.-]`.
pub fn check_key_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        return Err(Error::invalid(format!("API key name {name:?} must be 1 to 64 letters, digits, '_', '-', '.'")));
    }
    Ok(())
}

/// Encodes a metadata reply: `Err(text)` when refused, `Ok(changed)` otherwise.
pub fn encode_meta_reply(r: std::result::Result<bool, String>) -> Vec<u8> {
    match r {
        Ok(changed) => internal::MetaReply { error: String::new(), changed },
        Err(error) => internal::MetaReply { error, changed: false },
    }
    .encode_to_vec()
}

/// Decodes a metadata reply.
pub fn decode_meta_reply(bytes: &[u8]) -> Result<std::result::Result<bool, String>> {
    let r = internal::MetaReply::decode(bytes).map_err(|source| Error::Decode { what: "MetaReply", source })?;
    Ok(if r.error.is_empty() { Ok(r.changed) } else { Err(r.error) })
}

#[cfg(test)]
mod fuzz_tests {
    use super::*;

    /// Bounded decoder fuzz of the commands peers propose (issue 11): random bytes and mutations of valid
    /// encodings give Ok or Err, never a panic; a decoded create never names a path outside its directory.
    #[test]
    fn command_decoders_never_panic() {
        let info = crate::v1::CollectionInfo {
            name: "docs".into(),
            dim: 4,
            metric: "l2".into(),
            id_type: "int".into(),
            shards: 2,
            replication_factor: 1,
            index: None,
            payload_indexes: vec![crate::v1::PayloadIndex { field: "lang".into(), kind: "keyword".into() }],
            on_disk: false,
        };
        let seeds = [
            internal::MetaCommand { format: crate::COMMAND_FORMAT, op: Some(Op::CreateCollection(info)) }
                .encode_to_vec(),
            internal::MetaCommand {
                format: crate::COMMAND_FORMAT,
                op: Some(Op::SetPayloadIndex(internal::SetPayloadIndex {
                    collection: "docs".into(),
                    uid: 3,
                    field: "meta.lang".into(),
                    kind: "keyword".into(),
                })),
            }
            .encode_to_vec(),
            internal::MetaCommand { format: crate::COMMAND_FORMAT, op: Some(Op::DropCollection("docs".into())) }
                .encode_to_vec(),
            encode_write_batch(&WriteBatch {
                ops: vec![WriteOp::Upsert {
                    id: PointId::Int(7),
                    version: Version::new(1 << 20, 1),
                    vector: vec![0.5; 4],
                    payload: None,
                }],
                write_id: None,
            }),
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let start = std::time::Instant::now();
        let mut cases = 0u64;
        while cases < 200_000 && start.elapsed() < std::time::Duration::from_secs(5) {
            let mut buf = if next().is_multiple_of(4) {
                (0..next() % 48).map(|_| next() as u8).collect::<Vec<u8>>()
            } else {
                seeds[(next() % seeds.len() as u64) as usize].clone()
            };
            for _ in 0..=next() % 3 {
                if buf.is_empty() {
                    break;
                }
                let i = (next() % buf.len() as u64) as usize;
                match next() % 3 {
                    0 => buf[i] = next() as u8,
                    1 => buf.truncate(i),
                    _ => buf.insert(i, next() as u8),
                }
            }
            if let Ok(MetaCommand::CreateCollection(spec)) = decode_meta(&buf) {
                assert!(!spec.name.starts_with('.') && !spec.name.contains('/'), "{:?}", spec.name);
                assert!(spec.shard.dim >= 1 && spec.shards >= 1);
            }
            let _ = decode_write_batch(&buf, 4, IdType::Int);
            let _ = decode_write_reply(&buf);
            let _ = decode_meta_reply(&buf);
            cases += 1;
        }
        assert!(cases > 1000);
    }
}
