//! Binary wire codec of the openraft RPCs carried by the gRPC transport (append entries, vote,
//! snapshot header and replies), built on the same little-endian encoders as the on-disk formats.
//!
//! ```text
//! entry            = log_id | kind u8 (0 blank, 1 normal, 2 membership) | payload bytes
//! append request   = vote | prev opt_log_id | commit opt_log_id | n u32 | entry * n
//! append response  = tag u8: 0 Success | 1 PartialSuccess opt_log_id | 2 Conflict | 3 HigherVote vote
//! vote request     = vote | last opt_log_id | leadership_transfer u8
//! vote response    = vote | granted u8 | last opt_log_id
//! snapshot reply   = vote
//! transfer request = vote (from leader) | to u64 | last opt_log_id
//! transfer reply   = tag u8: 0 Ok | 1 VoteChanged vote vote | 2 LogNotFlushed opt_log_id opt_log_id
//! ```
//!
//! Every message names its codec version ([`WIRE_FORMAT`]) in the protobuf envelope.

use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::TransferLeaderError;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::TransferLeaderResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;

use crate::codec::Dec;
use crate::codec::Enc;
use crate::types::Command;
use crate::types::Entry;
use crate::types::EntryPayload;
use crate::types::SnapshotMeta;
use crate::types::TypeConfig;
use crate::types::Vote;

/// Version of this wire codec, carried in every request and reply envelope.
pub const WIRE_FORMAT: u32 = 1;

/// Entry kind tags.
const KIND_BLANK: u8 = 0;
const KIND_NORMAL: u8 = 1;
const KIND_MEMBERSHIP: u8 = 2;

/// Result of decoding: the error names what was malformed.
type DecResult<T> = std::result::Result<T, String>;

fn finish<T>(d: &Dec<'_>, v: T, what: &str) -> DecResult<T> {
    if d.remaining() != 0 {
        return Err(format!("{} trailing bytes after {what}", d.remaining()));
    }
    Ok(v)
}

fn enc_bool(e: &mut Enc<'_>, b: bool) {
    e.u8(u8::from(b));
}

fn dec_bool(d: &mut Dec<'_>, what: &str) -> DecResult<bool> {
    match d.u8(what)? {
        0 => Ok(false),
        1 => Ok(true),
        t => Err(format!("bad {what} flag {t}")),
    }
}

fn enc_entry(e: &mut Enc<'_>, entry: &Entry) {
    e.log_id(&entry.log_id);
    match &entry.payload {
        EntryPayload::Blank => {
            e.u8(KIND_BLANK);
            e.bytes(&[]);
        }
        EntryPayload::Normal(c) => {
            e.u8(KIND_NORMAL);
            e.bytes(&c.0);
        }
        EntryPayload::Membership(m) => {
            e.u8(KIND_MEMBERSHIP);
            let mut b = Vec::new();
            Enc(&mut b).membership(m);
            e.bytes(&b);
        }
    }
}

fn dec_entry(d: &mut Dec<'_>) -> DecResult<Entry> {
    let log_id = d.log_id()?;
    let kind = d.u8("entry kind")?;
    let payload = d.bytes("entry payload")?;
    let payload = match kind {
        KIND_BLANK => EntryPayload::Blank,
        KIND_NORMAL => EntryPayload::Normal(Command(payload.to_vec())),
        KIND_MEMBERSHIP => {
            let mut md = Dec::new(payload);
            let m = md.membership()?;
            EntryPayload::Membership(finish(&md, m, "membership")?)
        }
        k => return Err(format!("unknown entry kind {k}")),
    };
    Ok(Entry { log_id, payload })
}

/// Encodes an AppendEntries request.
pub(crate) fn encode_append(rpc: &AppendEntriesRequest<TypeConfig>) -> Vec<u8> {
    let payload: usize = rpc
        .entries
        .iter()
        .map(|e| match &e.payload {
            EntryPayload::Normal(c) => c.0.len(),
            _ => 0,
        })
        .sum();
    let mut out = Vec::with_capacity(64 + payload + rpc.entries.len() * 32);
    let mut e = Enc(&mut out);
    e.vote(&rpc.vote);
    e.opt_log_id(rpc.prev_log_id.as_ref());
    e.opt_log_id(rpc.leader_commit.as_ref());
    e.u32(u32::try_from(rpc.entries.len()).unwrap_or(u32::MAX));
    for entry in &rpc.entries {
        enc_entry(&mut e, entry);
    }
    out
}

/// Decodes an AppendEntries request.
pub(crate) fn decode_append(buf: &[u8]) -> DecResult<AppendEntriesRequest<TypeConfig>> {
    let mut d = Dec::new(buf);
    let vote = d.vote()?;
    let prev_log_id = d.opt_log_id()?;
    let leader_commit = d.opt_log_id()?;
    let n = d.u32("entry count")? as usize;
    // Every entry takes at least 29 bytes: never trust a count beyond what the buffer can hold.
    let mut entries = Vec::with_capacity(n.min(d.remaining() / 29 + 1));
    for _ in 0..n {
        entries.push(dec_entry(&mut d)?);
    }
    finish(&d, AppendEntriesRequest { vote, prev_log_id, entries, leader_commit }, "append request")
}

/// Encodes an AppendEntries response.
pub(crate) fn encode_append_response(resp: &AppendEntriesResponse<TypeConfig>) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    let mut e = Enc(&mut out);
    match resp {
        AppendEntriesResponse::Success => e.u8(0),
        AppendEntriesResponse::PartialSuccess(l) => {
            e.u8(1);
            e.opt_log_id(l.as_ref());
        }
        AppendEntriesResponse::Conflict => e.u8(2),
        AppendEntriesResponse::HigherVote(v) => {
            e.u8(3);
            e.vote(v);
        }
    }
    out
}

/// Decodes an AppendEntries response.
pub(crate) fn decode_append_response(buf: &[u8]) -> DecResult<AppendEntriesResponse<TypeConfig>> {
    let mut d = Dec::new(buf);
    let resp = match d.u8("append response tag")? {
        0 => AppendEntriesResponse::Success,
        1 => AppendEntriesResponse::PartialSuccess(d.opt_log_id()?),
        2 => AppendEntriesResponse::Conflict,
        3 => AppendEntriesResponse::HigherVote(d.vote()?),
        t => return Err(format!("unknown append response tag {t}")),
    };
    finish(&d, resp, "append response")
}

/// Encodes a Vote (or Pre-Vote) request.
pub(crate) fn encode_vote(rpc: &VoteRequest<TypeConfig>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    let mut e = Enc(&mut out);
    e.vote(&rpc.vote);
    e.opt_log_id(rpc.last_log_id.as_ref());
    enc_bool(&mut e, rpc.leadership_transfer);
    out
}

/// Decodes a Vote (or Pre-Vote) request.
pub(crate) fn decode_vote(buf: &[u8]) -> DecResult<VoteRequest<TypeConfig>> {
    let mut d = Dec::new(buf);
    let vote = d.vote()?;
    let last_log_id = d.opt_log_id()?;
    let leadership_transfer = dec_bool(&mut d, "leadership transfer")?;
    finish(&d, VoteRequest { vote, last_log_id, leadership_transfer }, "vote request")
}

/// Encodes a Vote (or Pre-Vote) response.
pub(crate) fn encode_vote_response(resp: &VoteResponse<TypeConfig>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    let mut e = Enc(&mut out);
    e.vote(&resp.vote);
    enc_bool(&mut e, resp.vote_granted);
    e.opt_log_id(resp.last_log_id.as_ref());
    out
}

/// Decodes a Vote (or Pre-Vote) response.
pub(crate) fn decode_vote_response(buf: &[u8]) -> DecResult<VoteResponse<TypeConfig>> {
    let mut d = Dec::new(buf);
    let vote = d.vote()?;
    let vote_granted = dec_bool(&mut d, "vote granted")?;
    let last_log_id = d.opt_log_id()?;
    finish(&d, VoteResponse { vote, vote_granted, last_log_id }, "vote response")
}

/// Encodes a vote alone (snapshot header and snapshot reply).
pub(crate) fn encode_vote_only(v: &Vote) -> Vec<u8> {
    let mut out = Vec::with_capacity(17);
    Enc(&mut out).vote(v);
    out
}

/// Decodes a vote alone.
pub(crate) fn decode_vote_only(buf: &[u8]) -> DecResult<Vote> {
    let mut d = Dec::new(buf);
    let v = d.vote()?;
    finish(&d, v, "vote")
}

/// Encodes a snapshot's metadata.
pub(crate) fn encode_snapshot_meta(m: &SnapshotMeta) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    Enc(&mut out).snapshot_meta(m);
    out
}

/// Decodes a snapshot's metadata.
pub(crate) fn decode_snapshot_meta(buf: &[u8]) -> DecResult<SnapshotMeta> {
    let mut d = Dec::new(buf);
    let m = d.snapshot_meta()?;
    finish(&d, m, "snapshot meta")
}

/// Encodes a snapshot response.
pub(crate) fn encode_snapshot_response(resp: &SnapshotResponse<TypeConfig>) -> Vec<u8> {
    encode_vote_only(&resp.vote)
}

/// Decodes a snapshot response.
pub(crate) fn decode_snapshot_response(buf: &[u8]) -> DecResult<SnapshotResponse<TypeConfig>> {
    Ok(SnapshotResponse::new(decode_vote_only(buf)?))
}

/// Encodes a TransferLeader request.
pub(crate) fn encode_transfer(rpc: &TransferLeaderRequest<TypeConfig>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    let mut e = Enc(&mut out);
    e.vote(rpc.from_leader());
    e.u64(*rpc.to_node_id());
    e.opt_log_id(rpc.last_log_id());
    out
}

/// Decodes a TransferLeader request.
pub(crate) fn decode_transfer(buf: &[u8]) -> DecResult<TransferLeaderRequest<TypeConfig>> {
    let mut d = Dec::new(buf);
    let from = d.vote()?;
    let to = d.u64("transfer target")?;
    let last = d.opt_log_id()?;
    finish(&d, TransferLeaderRequest::new(from, to, last), "transfer leader request")
}

/// Encodes a TransferLeader response.
pub(crate) fn encode_transfer_response(resp: &TransferLeaderResponse<TypeConfig>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    let mut e = Enc(&mut out);
    match resp {
        Ok(()) => e.u8(0),
        Err(TransferLeaderError::VoteChanged { expected, actual }) => {
            e.u8(1);
            e.vote(expected);
            e.vote(actual);
        }
        Err(TransferLeaderError::LogNotFlushed { expected, actual }) => {
            e.u8(2);
            e.opt_log_id(expected.as_ref());
            e.opt_log_id(actual.as_ref());
        }
    }
    out
}

/// Decodes a TransferLeader response.
pub(crate) fn decode_transfer_response(buf: &[u8]) -> DecResult<TransferLeaderResponse<TypeConfig>> {
    let mut d = Dec::new(buf);
    let resp = match d.u8("transfer response tag")? {
        0 => Ok(()),
        1 => Err(TransferLeaderError::VoteChanged { expected: d.vote()?, actual: d.vote()? }),
        2 => Err(TransferLeaderError::LogNotFlushed { expected: d.opt_log_id()?, actual: d.opt_log_id()? }),
        t => return Err(format!("unknown transfer response tag {t}")),
    };
    finish(&d, resp, "transfer leader response")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::collections::BTreeSet;

    use shoal_testkit::Rng;

    use super::*;
    use crate::types::LeaderId;
    use crate::types::LogId;
    use crate::types::Membership;
    use crate::types::Node;

    fn lid(term: u64, node_id: u64, index: u64) -> LogId {
        LogId::new(LeaderId { term, node_id }, index)
    }

    /// Bounded decoder fuzz (issue 11): random bytes and random mutations of valid encodings (byte flips,
    /// truncations, huge lengths and terms) fed to every wire decoder must give Ok or Err, never a panic,
    /// and never a term or index past the codec's bounds. Capped at ~5 s.
    #[test]
    fn decoders_never_panic_on_mutated_input() {
        let nodes = BTreeMap::from([(1u64, Node { addr: "a:1".into() }), (2u64, Node { addr: "b:2".into() })]);
        let m = Membership::new(vec![BTreeSet::from([1u64, 2])], nodes).unwrap();
        let append = encode_append(&AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(lid(2, 1, 10)),
            entries: vec![
                Entry { log_id: lid(3, 1, 11), payload: EntryPayload::Normal(Command(b"hello".to_vec())) },
                Entry { log_id: lid(3, 1, 12), payload: EntryPayload::Membership(m) },
            ],
            leader_commit: Some(lid(3, 1, 11)),
        });
        let vote = encode_vote(&VoteRequest::<TypeConfig> {
            vote: Vote::new(5, 2),
            last_log_id: Some(lid(4, 1, 100)),
            leadership_transfer: false,
        });
        let transfer = encode_transfer(&TransferLeaderRequest::<TypeConfig>::new(
            Vote::new_committed(3, 1),
            2,
            Some(lid(3, 1, 40)),
        ));
        let seeds = [append, vote, transfer, encode_snapshot_meta(&SnapshotMeta::default())];
        type Decoder<'a> = &'a dyn Fn(&[u8]) -> bool;
        let decoders: [Decoder; 9] = [
            &|b| decode_append(b).is_ok(),
            &|b| decode_append_response(b).is_ok(),
            &|b| decode_vote(b).is_ok_and(|v| v.vote.leader_id.term <= crate::codec::MAX_TERM),
            &|b| decode_vote_response(b).is_ok(),
            &|b| decode_vote_only(b).is_ok(),
            &|b| decode_snapshot_meta(b).is_ok(),
            &|b| decode_snapshot_response(b).is_ok(),
            &|b| decode_transfer(b).is_ok(),
            &|b| decode_transfer_response(b).is_ok(),
        ];
        let mut rng = Rng::new(0x5eed_1234_abcd_0001);
        let start = std::time::Instant::now();
        let mut cases = 0u64;
        while cases < 400_000 && start.elapsed() < std::time::Duration::from_secs(5) {
            let mut buf = if rng.next_u64().is_multiple_of(4) {
                (0..rng.next_u64() % 64).map(|_| rng.next_u64() as u8).collect::<Vec<u8>>()
            } else {
                seeds[(rng.next_u64() % seeds.len() as u64) as usize].clone()
            };
            for _ in 0..=rng.next_u64() % 4 {
                if buf.is_empty() {
                    break;
                }
                let i = (rng.next_u64() % buf.len() as u64) as usize;
                match rng.next_u64() % 4 {
                    0 => buf[i] = rng.next_u64() as u8,
                    1 => buf.truncate(i),
                    // a u32 length or u64 value run of 0xff: huge counts, terms near u64::MAX
                    2 => buf[i..].iter_mut().take(8).for_each(|b| *b = 0xff),
                    _ => buf.insert(i, rng.next_u64() as u8),
                }
            }
            for d in &decoders {
                let _ = d(&buf);
            }
            cases += 1;
        }
        assert!(cases > 1000, "the fuzz loop ran {cases} cases");
    }

    #[test]
    fn append_round_trip() {
        let nodes = BTreeMap::from([(1u64, Node { addr: "a:1".into() }), (2u64, Node { addr: "b:2".into() })]);
        let m = Membership::new(vec![BTreeSet::from([1u64, 2])], nodes).unwrap();
        let rpc = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(lid(2, 1, 10)),
            entries: vec![
                Entry { log_id: lid(3, 1, 11), payload: EntryPayload::Blank },
                Entry { log_id: lid(3, 1, 12), payload: EntryPayload::Normal(Command(b"hello".to_vec())) },
                Entry { log_id: lid(3, 1, 13), payload: EntryPayload::Membership(m) },
            ],
            leader_commit: Some(lid(3, 1, 11)),
        };
        let back = decode_append(&encode_append(&rpc)).unwrap();
        assert_eq!(back.vote, rpc.vote);
        assert_eq!(back.prev_log_id, rpc.prev_log_id);
        assert_eq!(back.leader_commit, rpc.leader_commit);
        assert_eq!(back.entries, rpc.entries);

        let empty = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new(1, 2),
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        };
        let back = decode_append(&encode_append(&empty)).unwrap();
        assert_eq!((back.vote, back.prev_log_id, back.entries.len()), (empty.vote, None, 0));

        let mut bad = encode_append(&rpc);
        bad.pop();
        assert!(decode_append(&bad).is_err());
        bad.extend_from_slice(&[0, 0]);
        assert!(decode_append(&bad).is_err());
    }

    #[test]
    fn responses_round_trip() {
        for r in [
            AppendEntriesResponse::Success,
            AppendEntriesResponse::PartialSuccess(None),
            AppendEntriesResponse::PartialSuccess(Some(lid(4, 2, 9))),
            AppendEntriesResponse::Conflict,
            AppendEntriesResponse::HigherVote(Vote::new(7, 3)),
        ] {
            assert_eq!(decode_append_response(&encode_append_response(&r)).unwrap(), r);
        }
        let v = VoteRequest::<TypeConfig> {
            vote: Vote::new(5, 2),
            last_log_id: Some(lid(4, 1, 100)),
            leadership_transfer: true,
        };
        assert_eq!(decode_vote(&encode_vote(&v)).unwrap(), v);
        let vr = VoteResponse::<TypeConfig> { vote: Vote::new(5, 2), vote_granted: true, last_log_id: None };
        assert_eq!(decode_vote_response(&encode_vote_response(&vr)).unwrap(), vr);
        let sr = SnapshotResponse::<TypeConfig>::new(Vote::new_committed(9, 1));
        assert_eq!(decode_snapshot_response(&encode_snapshot_response(&sr)).unwrap(), sr);
        let meta = SnapshotMeta::default();
        assert_eq!(decode_snapshot_meta(&encode_snapshot_meta(&meta)).unwrap(), meta);
        assert!(decode_append_response(&[9]).is_err());

        let t = TransferLeaderRequest::<TypeConfig>::new(Vote::new_committed(3, 1), 2, Some(lid(3, 1, 40)));
        assert_eq!(decode_transfer(&encode_transfer(&t)).unwrap(), t);
        for r in [
            Ok(()),
            Err(TransferLeaderError::VoteChanged { expected: Vote::new(1, 1), actual: Vote::new_committed(2, 3) }),
            Err(TransferLeaderError::LogNotFlushed { expected: Some(lid(1, 1, 5)), actual: None }),
        ] {
            assert_eq!(decode_transfer_response(&encode_transfer_response(&r)).unwrap(), r);
        }
    }
}
