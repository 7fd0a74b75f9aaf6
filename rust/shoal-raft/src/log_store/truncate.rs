//! Shortening a log: truncation after a log id (a new leader's conflicting tail) and purging up to one.

use std::path::PathBuf;

use super::inner::Inner;
use crate::codec::sync_dir;
use crate::types::LogId;

use std::io;

impl Inner {
    /// Removes every entry after `last` (all of them for `None`), from the end backward.
    pub(super) fn truncate_after(&mut self, last: Option<LogId>) -> io::Result<()> {
        let keep = match last {
            None => 0,
            Some(l) if self.locs.is_empty() || l.index < self.first_index => 0,
            Some(l) => ((l.index - self.first_index + 1) as usize).min(self.locs.len()),
        };
        if keep == self.locs.len() {
            return Ok(());
        }
        let cut = self.locs[keep];
        let later: Vec<u64> = self.segments.range(cut.seg + 1..).map(|(s, _)| *s).rev().collect();
        for s in &later {
            let seg = self.segments.remove(s).expect("segment listed above");
            std::fs::remove_file(&seg.path)?;
        }
        let seg = self.segments.get_mut(&cut.seg).expect("segment of an indexed entry");
        seg.file.set_len(cut.offset)?;
        seg.file.sync_all()?;
        seg.len = cut.offset;
        if !later.is_empty() {
            sync_dir(&self.dir)?;
        }
        self.locs.truncate(keep);
        Ok(())
    }

    /// Drops entries up to `upto` from the index and the segments left without entries; returns the
    /// paths of those segments, for the caller to delete (readers still holding one keep a valid handle).
    /// The caller has already persisted `upto` in the `purged` file.
    pub(super) fn purge(&mut self, upto: LogId) -> Vec<PathBuf> {
        self.last_purged = Some(upto);
        while !self.locs.is_empty() && self.first_index <= upto.index {
            self.locs.pop_front();
            self.first_index += 1;
        }
        let first_needed = self.locs.front().map(|l| l.seg).unwrap_or_else(|| self.active_seq());
        let stale: Vec<u64> = self.segments.range(..first_needed).map(|(s, _)| *s).collect();
        stale.iter().map(|s| self.segments.remove(s).expect("segment listed above").path).collect()
    }
}
