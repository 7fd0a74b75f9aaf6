//! Reading a log: [`LogReader`]'s openraft reader trait, bounded reads and chunked entry streams.

use std::fmt::Debug;
use std::io;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::ops::RangeInclusive;
use std::sync::Arc;

use futures::Stream;
use futures::StreamExt;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::entry::RaftEntry;
use openraft::errors::LeaderChanged;
use openraft::storage::LeaderBoundedStreamError;
use openraft::storage::LeaderBoundedStreamResult;

use super::LogReader;
use super::READ_CHUNK_BYTES;
use super::READ_CHUNK_ENTRIES;
use super::Shared;
use super::record::read_entry;
use crate::types::Entry;
use crate::types::LeaderId;
use crate::types::LogId;
use crate::types::TypeConfig;
use crate::types::Vote;

fn range_to_half_open(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => e.saturating_add(1),
        Bound::Excluded(e) => *e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl Shared {
    /// Reads the present entries of `[start, end)`, bounded by the given limits.
    fn read(&self, start: u64, end: u64, max_bytes: u64, max_entries: usize) -> io::Result<Vec<Entry>> {
        self.check()?;
        let plan = self.inner.read().plan(start, end, max_bytes, max_entries);
        plan.iter().map(|(file, loc, index)| read_entry(file, loc, *index, &self.dir)).collect()
    }

    /// Reads all present entries of `[start, end)`.
    fn read_all(&self, start: u64, end: u64) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        let mut next = start;
        while next < end {
            let chunk = self.read(next, end, u64::MAX, usize::MAX)?;
            match chunk.last() {
                None => break,
                Some(e) => next = e.index() + 1,
            }
            out.extend(chunk);
        }
        Ok(out)
    }

    fn vote(&self) -> Option<Vote> {
        self.inner.read().vote
    }
}

/// A stream of the entries of `[start, end)`, read from disk in bounded chunks.
fn chunked_stream(
    shared: Arc<Shared>,
    start: u64,
    end: u64,
    leader: Option<LeaderId>,
) -> impl Stream<Item = io::Result<Result<Entry, LeaderChanged<TypeConfig>>>> + Send + 'static {
    let chunks = futures::stream::unfold(Some(start), move |next| {
        let shared = shared.clone();
        async move {
            let next = next?;
            if next >= end {
                return None;
            }
            // With a leader: the vote must be that leader's committed vote before and after
            // the read, or the entries may have been truncated meanwhile.
            let leader_changed = |shared: &Shared| {
                let leader = leader?;
                let vote = shared.vote();
                match vote {
                    Some(v) if v.leader_id == leader && v.committed => None,
                    _ => Some(LeaderChanged::new(leader, vote)),
                }
            };
            if let Some(err) = leader_changed(&shared) {
                return Some((vec![Ok(Err(err))], None));
            }
            let res = shared.read(next, end, READ_CHUNK_BYTES, READ_CHUNK_ENTRIES);
            if let Some(err) = leader_changed(&shared) {
                return Some((vec![Ok(Err(err))], None));
            }
            match res {
                Ok(entries) if entries.is_empty() => None,
                Ok(entries) => {
                    let after = entries.last().map(|e| e.index() + 1);
                    Some((entries.into_iter().map(|e| Ok(Ok(e))).collect::<Vec<_>>(), after))
                }
                Err(e) => Some((vec![Err(e)], None)),
            }
        }
    });
    chunks.flat_map(futures::stream::iter)
}

impl LogReader {
    /// Closes the store this reader belongs to, like [`LogStore::close`].
    pub fn close(&self) {
        self.shared.close();
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let (start, end) = range_to_half_open(&range);
        self.shared.read_all(start, end)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        self.shared.check()?;
        Ok(self.shared.vote())
    }

    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> io::Result<Vec<Entry>> {
        self.shared.read(start, end, READ_CHUNK_BYTES, usize::MAX)
    }

    async fn entries_stream<RB>(&mut self, range: RB) -> impl Stream<Item = io::Result<Entry>> + OptionalSend
    where
        RB: RangeBounds<u64> + Clone + Debug + OptionalSend,
    {
        let (start, end) = range_to_half_open(&range);
        chunked_stream(self.shared.clone(), start, end, None).map(|r| match r {
            Ok(Ok(e)) => Ok(e),
            Ok(Err(changed)) => Err(io::Error::other(changed.to_string())),
            Err(e) => Err(e),
        })
    }

    async fn leader_bounded_stream<RB>(
        &mut self,
        leader: LeaderId,
        range: RB,
    ) -> impl Stream<Item = LeaderBoundedStreamResult<TypeConfig>> + OptionalSend
    where
        RB: RangeBounds<u64> + Clone + Debug + OptionalSend,
    {
        let (start, end) = range_to_half_open(&range);
        chunked_stream(self.shared.clone(), start, end, Some(leader)).map(|r| match r {
            Ok(Ok(e)) => Ok(e),
            Ok(Err(changed)) => Err(LeaderBoundedStreamError::LeaderChanged(changed)),
            Err(e) => Err(LeaderBoundedStreamError::IoError(e)),
        })
    }

    async fn get_key_log_ids(&mut self, range: RangeInclusive<LogId>) -> io::Result<Vec<LogId>> {
        // The last log id of each leader within `range`, from the in-memory index.
        let g = self.shared.inner.read();
        let (first, last) = (range.start().index, range.end().index);
        let mut out: Vec<LogId> = Vec::new();
        let mut prev: Option<LogId> = None;
        for index in first..=last {
            let Some(loc) = g.loc(index) else {
                return Err(io::Error::new(io::ErrorKind::NotFound, format!("log index {index} is not in the log")));
            };
            let id = loc.log_id(index);
            if let Some(p) = prev
                && p.leader_id != id.leader_id
            {
                out.push(p);
            }
            prev = Some(id);
        }
        out.extend(prev);
        Ok(out)
    }
}
