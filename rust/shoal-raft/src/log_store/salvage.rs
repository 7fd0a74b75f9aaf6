//! Salvage of a damaged log directory: keep the longest prefix that verifies, drop the rest.

use std::fs::File;
use std::io::BufReader;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::path::PathBuf;

use super::FRAME_LEN;
use super::SEGMENT_HEADER_LEN;
use super::SEGMENT_MAGIC;
use super::STATE_COMMITTED;
use super::STATE_PURGED;
use super::STATE_VOTE;
use super::record::BadRecord;
use super::record::read_record;
use super::segment::segment_path;
use crate::codec::Dec;
use crate::codec::Enc;
use crate::codec::read_state_file;
use crate::codec::sync_dir;
use crate::codec::write_state_file;
use crate::error::Error;
use crate::error::Result;
use crate::types::LogId;

/// What [`salvage`] kept and dropped of a damaged log directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SalvageReport {
    /// Index of the last entry kept (the longest prefix of records that verify); `None` when none is.
    pub kept_last_index: Option<u64>,
    /// The first damage met: file, byte offset and what is wrong (`None`: the log verified whole).
    pub first_damage: Option<(PathBuf, u64, String)>,
    /// The highest index this node had saved as committed, if readable: entries above `kept_last_index`
    /// up to it were acknowledged and are lost.
    pub committed_index: Option<u64>,
    /// Bytes dropped from the damaged segment on, later segments included.
    pub dropped_bytes: u64,
    /// Segment files removed entirely (after the damaged one).
    pub removed_segments: Vec<PathBuf>,
    /// Whether an unreadable vote file was removed (the group elects anew).
    pub vote_reset: bool,
}

/// Salvages the log in `dir` in place (the caller backs it up first and holds no store on it): keeps the
/// longest prefix of consecutive records that verify, truncates the segment where the first damage is,
/// removes later segments, removes an unreadable vote file, and sets the saved commit point to the last
/// kept entry. Returns what was kept and lost. Never panics on any content.
pub fn salvage(dir: &Path) -> Result<SalvageReport> {
    let mut report = SalvageReport::default();
    let committed = read_state_file(&dir.join("committed"), STATE_COMMITTED)
        .ok()
        .flatten()
        .and_then(|b| Dec::new(&b).opt_log_id().ok().flatten());
    report.committed_index = committed.map(|c| c.index);
    if let Err(e) = read_state_file(&dir.join("vote"), STATE_VOTE)
        .and_then(|v| v.map(|b| Dec::new(&b).vote().map_err(|r| Error::corrupt(dir.join("vote"), r))).transpose())
    {
        tracing::warn!("salvage: removing the unreadable vote file: {e}");
        std::fs::remove_file(dir.join("vote"))?;
        report.vote_reset = true;
    }
    let purged = read_state_file(&dir.join("purged"), STATE_PURGED)?
        .map(|b| Dec::new(&b).opt_log_id().map_err(|r| Error::corrupt(dir.join("purged"), r)))
        .transpose()?
        .flatten();
    let mut seqs: Vec<u64> = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().strip_suffix(".seg").and_then(|s| s.parse().ok()))
        .collect();
    seqs.sort_unstable();
    let mut last: Option<LogId> = purged;
    let mut cut: Option<(usize, u64)> = None; // (position in seqs, valid length)
    'segments: for (i, &seq) in seqs.iter().enumerate() {
        let path = segment_path(dir, seq);
        let file = File::options().read(true).write(true).open(&path)?;
        let file_len = file.metadata()?.len();
        let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
        if file_len < SEGMENT_HEADER_LEN
            || file.read_exact_at(&mut header, 0).is_err()
            || header[..8] != *SEGMENT_MAGIC
            || crc32c::crc32c(&header[..12]) != u32::from_le_bytes([header[12], header[13], header[14], header[15]])
        {
            report.first_damage = Some((path, 0, "bad segment header".into()));
            cut = Some((i, 0));
            break;
        }
        let mut rd = BufReader::with_capacity(1 << 20, &file);
        let mut skip = [0u8; SEGMENT_HEADER_LEN as usize];
        rd.read_exact(&mut skip)?;
        let mut pos = SEGMENT_HEADER_LEN;
        let mut body = Vec::new();
        while pos < file_len {
            let why = match read_record(&mut rd, pos, file_len, &mut body) {
                Ok(id) if last.is_none_or(|l| id.index == l.index + 1) || last.is_some_and(|l| id.index <= l.index) => {
                    if last.is_none_or(|l| id.index > l.index) {
                        last = Some(id);
                    }
                    pos += (FRAME_LEN + body.len()) as u64;
                    continue;
                }
                Ok(id) => format!("log index {} does not follow index {}", id.index, last.map_or(0, |l| l.index)),
                Err(BadRecord::Short(w) | BadRecord::Damaged(w)) => w,
            };
            report.first_damage = Some((path, pos, why));
            cut = Some((i, pos));
            break 'segments;
        }
    }
    report.kept_last_index = last.map(|l| l.index);
    if let Some((i, valid)) = cut {
        let path = segment_path(dir, seqs[i]);
        let len = std::fs::metadata(&path)?.len();
        report.dropped_bytes += len - valid;
        if valid <= SEGMENT_HEADER_LEN {
            std::fs::remove_file(&path)?;
            report.removed_segments.push(path);
        } else {
            let f = File::options().write(true).open(&path)?;
            f.set_len(valid)?;
            f.sync_all()?;
        }
        for &seq in &seqs[i + 1..] {
            let p = segment_path(dir, seq);
            report.dropped_bytes += std::fs::metadata(&p)?.len();
            std::fs::remove_file(&p)?;
            report.removed_segments.push(p);
        }
    }
    if committed.is_some_and(|c| last.is_none_or(|l| c.index > l.index)) {
        let mut body = Vec::new();
        Enc(&mut body).opt_log_id(last.as_ref());
        write_state_file(dir, "committed", STATE_COMMITTED, &body)?;
    }
    sync_dir(dir)?;
    Ok(report)
}
