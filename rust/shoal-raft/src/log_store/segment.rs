//! Segment files: naming, the header, creation, and the batch writer that appends records to one.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use super::LARGE_PAYLOAD;
use super::LOG_FORMAT_VERSION;
use super::SEGMENT_HEADER_LEN;
use super::SEGMENT_MAGIC;
use super::WRITE_BUFFER;
use crate::codec::sync_dir;

/// One segment file of a log.
pub(super) struct Segment {
    /// Path of the segment file.
    pub(super) path: PathBuf,
    /// The open file (read + write); shared with in-flight reads and fsyncs.
    pub(super) file: Arc<File>,
    /// Length of the valid prefix (header + whole records); the append position when active.
    pub(super) len: u64,
}

pub(super) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.seg"))
}

fn segment_header() -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&LOG_FORMAT_VERSION.to_le_bytes());
    let crc = crc32c::crc32c(&h[..12]);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

impl Segment {
    /// Creates segment `seq` with its header, durably (file and directory entry).
    pub(super) fn create(dir: &Path, seq: u64) -> io::Result<Segment> {
        let path = segment_path(dir, seq);
        let file = File::options().read(true).write(true).create_new(true).open(&path)?;
        file.write_all_at(&segment_header(), 0)?;
        file.sync_all()?;
        sync_dir(dir)?;
        Ok(Segment { path, file: Arc::new(file), len: SEGMENT_HEADER_LEN })
    }
}

/// Buffers small writes of one append batch; writes large payloads in place.
pub(super) struct BatchWriter {
    /// The segment file.
    pub(super) file: Arc<File>,
    /// Logical end of the written data, buffered bytes included.
    pub(super) pos: u64,
    /// File offset where `buf` starts.
    buf_start: u64,
    /// Buffered bytes not yet written.
    buf: Vec<u8>,
}

impl BatchWriter {
    pub(super) fn new(seg: &Segment) -> BatchWriter {
        BatchWriter { file: seg.file.clone(), pos: seg.len, buf_start: seg.len, buf: Vec::new() }
    }

    pub(super) fn put(&mut self, data: &[u8]) -> io::Result<()> {
        if data.len() >= LARGE_PAYLOAD {
            self.flush_buf()?;
            self.file.write_all_at(data, self.pos)?;
            self.pos += data.len() as u64;
            self.buf_start = self.pos;
        } else {
            self.buf.extend_from_slice(data);
            self.pos += data.len() as u64;
            if self.buf.len() >= WRITE_BUFFER {
                self.flush_buf()?;
            }
        }
        Ok(())
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all_at(&self.buf, self.buf_start)?;
            self.buf_start += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    pub(super) fn finish(&mut self) -> io::Result<()> {
        self.flush_buf()
    }
}
