//! Opening a log: the scan of every segment that rebuilds the index and repairs a torn tail.

use std::fs::File;
use std::io::BufReader;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use super::FRAME_LEN;
use super::LOG_FORMAT_VERSION;
use super::SEGMENT_HEADER_LEN;
use super::SEGMENT_MAGIC;
use super::inner::Inner;
use super::inner::Loc;
use super::record::BadRecord;
use super::record::read_record;
use super::record::valid_record_at;
use super::segment::Segment;
use super::segment::segment_path;
use crate::codec::sync_dir;
use crate::error::Error;
use crate::error::Result;
use crate::types::LogId;

/// One valid record found by the recovery scan.
struct Scanned {
    /// Byte offset of the record frame in its segment.
    offset: u64,
    /// Length of the record body (checksum verified).
    body_len: u32,
    /// Log id stored in the body.
    log_id: LogId,
}

impl Inner {
    /// Scans all segments and rebuilds the index (see the module docs for the rules).
    pub(super) fn recover(&mut self) -> Result<()> {
        let dir = self.dir.clone();
        let mut seqs = Vec::new();
        for ent in std::fs::read_dir(&dir)? {
            let ent = ent?;
            let name = ent.file_name();
            let name = name.to_string_lossy();
            if let Some(stem) = name.strip_suffix(".seg")
                && let Ok(seq) = stem.parse::<u64>()
            {
                seqs.push(seq);
            } else if name.ends_with(".tmp") {
                std::fs::remove_file(ent.path()).ok();
            }
        }
        seqs.sort_unstable();

        let purged_index = self.last_purged.map(|p| p.index);
        // The torn tail of the last segment, if any: (segment, path, valid length, file length).
        let mut torn: Option<(u64, PathBuf, u64, u64)> = None;
        let n = seqs.len();
        for (i, seq) in seqs.into_iter().enumerate() {
            let is_last = i + 1 == n;
            let path = segment_path(&dir, seq);
            let file = File::options().read(true).write(true).open(&path)?;
            let file_len = file.metadata()?.len();
            let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
            let header_ok = file_len >= SEGMENT_HEADER_LEN && {
                file.read_exact_at(&mut header, 0)?;
                header[..8] == *SEGMENT_MAGIC
                    && crc32c::crc32c(&header[..12])
                        == u32::from_le_bytes([header[12], header[13], header[14], header[15]])
            };
            if !header_ok {
                if is_last && file_len <= SEGMENT_HEADER_LEN {
                    // A crash while the segment was being created: it holds no record.
                    tracing::warn!("removing torn new log segment {} ({file_len} bytes)", path.display());
                    drop(file);
                    std::fs::remove_file(&path)?;
                    sync_dir(&dir)?;
                    continue;
                }
                return Err(Error::corrupt(&path, "bad segment header"));
            }
            let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
            if version != LOG_FORMAT_VERSION {
                return Err(Error::corrupt(&path, format!("unsupported log format version {version}")));
            }

            let (records, valid_len) = scan_segment(&file, &path, file_len, is_last)?;
            if valid_len < file_len {
                // Truncated only once the whole log checked out (below): damage must stay on disk as found.
                torn = Some((seq, path.clone(), valid_len, file_len));
            }
            for r in records {
                let idx = r.log_id.index;
                if purged_index.is_some_and(|p| idx <= p) {
                    continue;
                }
                if let Some(last) = self.last_index()
                    && idx != last + 1
                {
                    return Err(Error::corrupt(
                        &path,
                        format!("log index {idx} at offset {} does not follow index {last}", r.offset),
                    ));
                }
                if self.locs.is_empty() {
                    self.first_index = idx;
                }
                self.locs.push_back(Loc {
                    seg: seq,
                    offset: r.offset,
                    body_len: r.body_len,
                    term: r.log_id.leader_id.term,
                    node: r.log_id.leader_id.node_id,
                });
            }
            self.segments.insert(seq, Segment { path, file: Arc::new(file), len: valid_len });
        }
        if self.segments.is_empty() {
            let seg = Segment::create(&dir, 1)?;
            self.segments.insert(1, seg);
        }

        // Segments holding only purged entries may survive a crash during purge: drop them now.
        let first_needed = self.locs.front().map(|l| l.seg).unwrap_or_else(|| self.active_seq());
        let stale: Vec<u64> = self.segments.range(..first_needed).map(|(s, _)| *s).collect();
        for s in stale {
            if let Some(seg) = self.segments.remove(&s) {
                std::fs::remove_file(&seg.path)?;
            }
        }

        // `committed` is written only after the entries it covers were fsynced (the I/O thread fsyncs an
        // append before it persists a later committed id), so a log that ends before it lost entries this
        // node acknowledged: that is corruption, not a torn write, whatever the damage looks like.
        if let Some(c) = self.committed {
            let last = self.last_log_id();
            if last.is_none_or(|l| c.index > l.index) {
                let last_index = last.map_or(0, |l| l.index);
                return Err(match &torn {
                    Some((_, path, valid, file_len)) => Error::corrupt(
                        path,
                        format!(
                            "damaged record at offset {valid} ({} bytes to the end of the file) would drop \
                             committed entries {}..={}: the log ends at index {last_index}",
                            file_len - valid,
                            last_index + 1,
                            c.index
                        ),
                    ),
                    None => Error::corrupt(
                        &dir,
                        format!(
                            "the log ends at index {last_index} but index {} was committed: segments are missing",
                            c.index
                        ),
                    ),
                });
            } else if let Some(loc) = self.loc(c.index)
                && loc.log_id(c.index) != c
            {
                tracing::warn!("saved committed {c} does not match the log in {}; ignoring it", dir.display());
                self.committed = None;
            }
        }
        if let Some((seq, path, valid_len, file_len)) = torn {
            tracing::warn!(
                "log segment {}: truncating a torn tail at offset {valid_len} ({} bytes, never acknowledged)",
                path.display(),
                file_len - valid_len
            );
            let seg = self.segments.get(&seq).expect("the torn segment was recovered");
            seg.file.set_len(valid_len)?;
            seg.file.sync_all()?;
        }
        Ok(())
    }
}

/// Scans the records of one segment; returns them and the length of the valid prefix.
fn scan_segment(file: &File, path: &Path, file_len: u64, is_last: bool) -> Result<(Vec<Scanned>, u64)> {
    let mut rd = BufReader::with_capacity(1 << 20, file);
    // Skip the header (already checked).
    let mut skip = [0u8; SEGMENT_HEADER_LEN as usize];
    rd.read_exact(&mut skip)?;
    let mut pos = SEGMENT_HEADER_LEN;
    let mut out = Vec::new();
    let mut body = Vec::new();
    while pos < file_len {
        match read_record(&mut rd, pos, file_len, &mut body) {
            Ok(log_id) => {
                let body_len = body.len() as u32;
                out.push(Scanned { offset: pos, body_len, log_id });
                pos += (FRAME_LEN + body.len()) as u64;
            }
            Err(bad) => {
                let (what, complete_len) = match &bad {
                    BadRecord::Short(w) => (w.clone(), None),
                    BadRecord::Damaged(w) => (w.clone(), Some(body.len() as u64)),
                };
                if !is_last {
                    return Err(Error::corrupt(path, format!("{what} at offset {pos} of a sealed segment")));
                }
                // A damaged record followed by a valid one is not a torn write but corruption
                // in the middle of the log: refuse to drop acknowledged entries after it.
                if let Some(len) = complete_len {
                    let next = pos + FRAME_LEN as u64 + len;
                    if next < file_len && valid_record_at(file, next, file_len) {
                        return Err(Error::corrupt(
                            path,
                            format!("{what} at offset {pos}, followed by a valid record at offset {next}"),
                        ));
                    }
                }
                tracing::warn!("log segment {}: {what} at offset {pos} (a torn tail?)", path.display());
                return Ok((out, pos));
            }
        }
    }
    Ok((out, pos))
}
