//! The log's in-memory index ([`Inner`]: where every entry lives, segments, small state) and appends.

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use super::BODY_HEAD_LEN;
use super::FRAME_LEN;
use super::KIND_BLANK;
use super::KIND_MEMBERSHIP;
use super::KIND_NORMAL;
use super::SEGMENT_HEADER_LEN;
use super::segment::BatchWriter;
use super::segment::Segment;
use crate::codec::Enc;
use crate::types::Entry;
use crate::types::EntryPayload;
use crate::types::LeaderId;
use crate::types::LogId;
use crate::types::Vote;

/// Index, segments and small state of a log, behind the store's lock.
pub(super) struct Inner {
    /// The log directory (for error messages and new segments).
    pub(super) dir: PathBuf,
    /// Segments by sequence number; never empty; the last one is the active segment.
    pub(super) segments: BTreeMap<u64, Segment>,
    /// Log index of `locs[0]`; meaningless while `locs` is empty.
    pub(super) first_index: u64,
    /// Where every present entry lives, in index order without holes; entries at or below
    /// `last_purged` are never in it.
    pub(super) locs: VecDeque<Loc>,
    /// Last purged log id, as persisted in the `purged` file.
    pub(super) last_purged: Option<LogId>,
    /// Last saved vote, as persisted in the `vote` file.
    pub(super) vote: Option<Vote>,
    /// Last saved committed log id (persisted lazily by the I/O thread).
    pub(super) committed: Option<LogId>,
    /// Segment roll size.
    pub(super) segment_bytes: u64,
}

/// Location and log id of one entry.
#[derive(Clone, Copy, Debug)]
pub(super) struct Loc {
    /// Sequence number of the segment holding the record.
    pub(super) seg: u64,
    /// Byte offset of the record frame in that segment.
    pub(super) offset: u64,
    /// Length of the record body (after the 8-byte frame).
    pub(super) body_len: u32,
    /// Term of the entry's leader id.
    pub(super) term: u64,
    /// Node of the entry's leader id.
    pub(super) node: u64,
}

impl Loc {
    pub(super) fn log_id(&self, index: u64) -> LogId {
        LogId::new(LeaderId { term: self.term, node_id: self.node }, index)
    }
}

impl Inner {
    pub(super) fn active_seq(&self) -> u64 {
        *self.segments.keys().next_back().expect("a log store always has an active segment")
    }

    pub(super) fn last_index(&self) -> Option<u64> {
        if self.locs.is_empty() { None } else { Some(self.first_index + self.locs.len() as u64 - 1) }
    }

    pub(super) fn last_log_id(&self) -> Option<LogId> {
        match self.locs.back() {
            Some(l) => Some(l.log_id(self.first_index + self.locs.len() as u64 - 1)),
            None => self.last_purged,
        }
    }

    pub(super) fn loc(&self, index: u64) -> Option<&Loc> {
        index.checked_sub(self.first_index).and_then(|i| self.locs.get(i as usize))
    }

    /// Appends `entries` to the active segment (rolling as needed); returns the file to fsync.
    pub(super) fn append(&mut self, entries: impl Iterator<Item = Entry>) -> io::Result<Arc<File>> {
        // Check the whole batch before writing any of it: a rejected batch changes nothing.
        let entries: Vec<Entry> = entries.collect();
        let mut expect = self.last_index().map(|l| l + 1);
        for entry in &entries {
            let idx = entry.log_id.index;
            if let Some(want) = expect {
                if idx != want {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("append of index {idx} where {want} is expected would leave a hole"),
                    ));
                }
            } else if let Some(p) = self.last_purged
                && idx <= p.index
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("append of index {idx} at or below the purged index {}", p.index),
                ));
            }
            if let EntryPayload::Normal(c) = &entry.payload
                && c.0.len() > u32::MAX as usize - BODY_HEAD_LEN
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("log entry {idx} is larger than 4 GiB"),
                ));
            }
            expect = Some(idx + 1);
        }

        let mut seq = self.active_seq();
        let mut w = BatchWriter::new(&self.segments[&seq]);
        for entry in entries {
            let idx = entry.log_id.index;
            if w.pos >= self.segment_bytes && w.pos > SEGMENT_HEADER_LEN {
                w.finish()?;
                self.segments.get_mut(&seq).expect("active segment").len = w.pos;
                seq = self.roll()?;
                w = BatchWriter::new(&self.segments[&seq]);
            }

            let membership_buf;
            let (kind, payload): (u8, &[u8]) = match &entry.payload {
                EntryPayload::Blank => (KIND_BLANK, &[]),
                EntryPayload::Normal(c) => (KIND_NORMAL, &c.0),
                EntryPayload::Membership(m) => {
                    let mut b = Vec::new();
                    Enc(&mut b).membership(m);
                    membership_buf = b;
                    (KIND_MEMBERSHIP, &membership_buf)
                }
            };
            let body_len = u32::try_from(BODY_HEAD_LEN + payload.len())
                .map_err(|_| io::Error::other("log record larger than 4 GiB"))?;
            let mut head = [0u8; FRAME_LEN + BODY_HEAD_LEN];
            head[0..4].copy_from_slice(&body_len.to_le_bytes());
            head[8] = kind;
            head[9..17].copy_from_slice(&entry.log_id.leader_id.term.to_le_bytes());
            head[17..25].copy_from_slice(&entry.log_id.leader_id.node_id.to_le_bytes());
            head[25..33].copy_from_slice(&idx.to_le_bytes());
            let crc = crc32c::crc32c_append(crc32c::crc32c(&head[FRAME_LEN..]), payload);
            head[4..8].copy_from_slice(&crc.to_le_bytes());

            let offset = w.pos;
            w.put(&head)?;
            w.put(payload)?;

            if self.locs.is_empty() {
                self.first_index = idx;
            }
            self.locs.push_back(Loc {
                seg: seq,
                offset,
                body_len,
                term: entry.log_id.leader_id.term,
                node: entry.log_id.leader_id.node_id,
            });
        }
        w.finish()?;
        let seg = self.segments.get_mut(&seq).expect("active segment");
        seg.len = w.pos;
        Ok(seg.file.clone())
    }

    /// Seals the active segment (fsync) and starts the next one; returns its sequence number.
    pub(super) fn roll(&mut self) -> io::Result<u64> {
        let seq = self.active_seq();
        self.segments[&seq].file.sync_data()?;
        let next = seq + 1;
        let seg = Segment::create(&self.dir, next)?;
        self.segments.insert(next, seg);
        Ok(next)
    }

    /// Plans a read of `[start, end)`: the present entries of that range, at most `max_bytes`
    /// of bodies (but at least one entry).
    pub(super) fn plan(&self, start: u64, end: u64, max_bytes: u64, max_entries: usize) -> Vec<(Arc<File>, Loc, u64)> {
        let mut out = Vec::new();
        if self.locs.is_empty() {
            return out;
        }
        let start = start.max(self.first_index);
        let end = end.min(self.first_index + self.locs.len() as u64);
        let mut bytes = 0u64;
        for index in start..end {
            let loc = self.locs[(index - self.first_index) as usize];
            if !out.is_empty()
                && (bytes.saturating_add(u64::from(loc.body_len)) > max_bytes || out.len() >= max_entries)
            {
                break;
            }
            bytes += u64::from(loc.body_len);
            out.push((self.segments[&loc.seg].file.clone(), loc, index));
        }
        out
    }
}
