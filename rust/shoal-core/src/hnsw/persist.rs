//! Persistence of the graph: the versioned format (`SHOALHNS`, version, header, nodes, CRC32C trailer).

use std::io::{self, Read, Write};
use std::sync::atomic::Ordering as AtOrd;

use super::segment::{list_len, locate, write_list};
use super::{Hnsw, HnswParams, MAX_LEVEL, MAX_M, NO_ENTRY, unpack_entry};
use crate::{Error, Metric, Result};

/// Persistence magic.
pub(super) const MAGIC: [u8; 8] = *b"SHOALHNS";
/// Persistence format version.
pub(super) const FORMAT_VERSION: u32 = 1;

impl Hnsw {
    /// Writes the graph in the versioned format (`SHOALHNS`, version u32, header, nodes in slot order,
    /// CRC32C trailer). Call it while no insert runs (searches are fine); a concurrent insert may produce a
    /// snapshot that [`Hnsw::read_from`] rejects.
    pub fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        let mut out = CrcWriter::new(w);
        out.put(&MAGIC)?;
        out.put(&FORMAT_VERSION.to_le_bytes())?;
        out.put(&[metric_code(self.metric)])?;
        out.put(&(self.params.m as u32).to_le_bytes())?;
        out.put(&(self.params.ef_construction as u32).to_le_bytes())?;
        out.put(&self.entry.load(AtOrd::Acquire).to_le_bytes())?;
        let present: Vec<(u32, usize)> = (0..self.slot_bound.load(AtOrd::Acquire))
            .filter_map(|s| self.level_of(s as u32).map(|l| (s as u32, l)))
            .collect();
        out.put(&(present.len() as u64).to_le_bytes())?;
        for &(slot, level) in &present {
            out.put(&slot.to_le_bytes())?;
            out.put(&[level as u8])?;
            for layer in 0..=level {
                let list = self.links(slot, layer);
                let n = list_len(list);
                out.put(&(n as u32).to_le_bytes())?;
                for i in 0..n {
                    out.put(&list[1 + i].load(AtOrd::Relaxed).to_le_bytes())?;
                }
            }
        }
        out.finish()
    }

    /// Reads a graph written by [`Hnsw::write_to`]. Reads exactly the bytes written (no read-ahead), so a
    /// buffered reader is recommended. Bad magic, unknown version, a metric other than `metric`, a checksum
    /// mismatch, truncation or an inconsistent graph yield [`Error::Corrupt`]; other I/O errors [`Error::Io`].
    pub fn read_from(r: &mut dyn Read, metric: Metric) -> Result<Self> {
        let mut inp = CrcReader { inner: r, crc: 0 };
        if inp.array::<8>()? != MAGIC {
            return Err(corrupt("bad magic"));
        }
        let version = inp.u32()?;
        if version != FORMAT_VERSION {
            return Err(corrupt(format!("unsupported hnsw format version {version}")));
        }
        let code = inp.array::<1>()?[0];
        if code != metric_code(metric) {
            return Err(corrupt(format!("hnsw metric code {code} does not match {metric}")));
        }
        let m = inp.u32()? as usize;
        let ef_construction = inp.u32()? as usize;
        if !(2..=MAX_M).contains(&m) || ef_construction == 0 {
            return Err(corrupt(format!("bad hnsw parameters m={m} ef_construction={ef_construction}")));
        }
        let entry = inp.u64()?;
        let count = inp.u64()?;
        if count > u64::from(u32::MAX) + 1 {
            return Err(corrupt("node count out of range"));
        }
        // Decode everything before allocating the table; memory grows only with bytes actually read.
        let mut nodes: Vec<(u32, usize, usize)> = Vec::with_capacity((count as usize).min(1 << 16)); // slot, level, first list
        let mut lists: Vec<(usize, usize)> = Vec::new(); // (start, len) in `ids`
        let mut ids: Vec<u32> = Vec::new();
        let mut prev: Option<u32> = None;
        for _ in 0..count {
            let slot = inp.u32()?;
            if prev.is_some_and(|p| slot <= p) {
                return Err(corrupt("node slots are not strictly ascending"));
            }
            prev = Some(slot);
            let level = inp.array::<1>()?[0] as usize;
            if level > MAX_LEVEL {
                return Err(corrupt(format!("node {slot} has level {level} > {MAX_LEVEL}")));
            }
            nodes.push((slot, level, lists.len()));
            for layer in 0..=level {
                let n = inp.u32()? as usize;
                let cap = if layer == 0 { 2 * m } else { m };
                if n > cap {
                    return Err(corrupt(format!("node {slot} layer {layer} has {n} links > {cap}")));
                }
                let start = ids.len();
                inp.u32s(n, &mut ids)?;
                lists.push((start, n));
            }
        }
        let computed = inp.crc;
        let stored = u32::from_le_bytes(inp.array::<4>()?);
        if stored != computed {
            return Err(corrupt("hnsw checksum mismatch"));
        }

        // Consistency: links name present nodes living on that layer, never the node itself.
        let level_of = |slot: u32| nodes.binary_search_by_key(&slot, |n| n.0).ok().map(|i| nodes[i].1);
        for &(slot, level, first) in &nodes {
            for layer in 0..=level {
                let (start, n) = lists[first + layer];
                for &id in &ids[start..start + n] {
                    if id == slot || level_of(id).is_none_or(|l| l < layer) {
                        return Err(corrupt(format!("node {slot} layer {layer} links to invalid node {id}")));
                    }
                }
            }
        }
        let max_level = nodes.iter().map(|n| n.1).max();
        match (entry, max_level) {
            (NO_ENTRY, None) => {}
            (e, Some(ml)) if e != NO_ENTRY => {
                let (ep, el) = unpack_entry(e);
                if el != ml || level_of(ep) != Some(el) {
                    return Err(corrupt("entry point is not a top-level node"));
                }
            }
            _ => return Err(corrupt("entry point does not match the node set")),
        }

        let g = Hnsw::new(HnswParams { m, ef_construction }, metric);
        for &(slot, level, first) in &nodes {
            let (seg, off) = locate(slot);
            let segment = g.segment_or_alloc(seg);
            if level > 0 {
                let words = level * (m + 1);
                segment.upper_init(off, words);
            }
            segment.levels[off].store(level as u8 + 1, AtOrd::Release);
            for layer in 0..=level {
                let (start, n) = lists[first + layer];
                write_list(g.links(slot, layer), ids[start..start + n].iter().copied());
            }
        }
        g.len.store(nodes.len(), AtOrd::Release);
        g.slot_bound.store(nodes.last().map_or(0, |n| n.0 as usize + 1), AtOrd::Release);
        g.entry.store(entry, AtOrd::Release);
        Ok(g)
    }
}

pub(super) fn corrupt(msg: impl Into<String>) -> Error {
    Error::Corrupt(msg.into())
}

pub(super) fn metric_code(m: Metric) -> u8 {
    match m {
        Metric::Cosine => 0,
        Metric::L2 => 1,
        Metric::Dot => 2,
    }
}

/// Buffered writer that tracks the CRC32C of everything written.
pub(super) struct CrcWriter<'a> {
    /// Destination.
    pub(super) inner: &'a mut dyn Write,
    /// Pending bytes, flushed at 64 KiB (their CRC is already folded in).
    pub(super) buf: Vec<u8>,
    /// CRC32C of all bytes put so far.
    pub(super) crc: u32,
}

impl<'a> CrcWriter<'a> {
    fn new(inner: &'a mut dyn Write) -> Self {
        CrcWriter { inner, buf: Vec::with_capacity(1 << 16), crc: 0 }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= 1 << 16 {
            self.inner.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Appends the CRC trailer and flushes.
    fn finish(mut self) -> io::Result<()> {
        let crc = self.crc.to_le_bytes();
        self.buf.extend_from_slice(&crc);
        self.inner.write_all(&self.buf)?;
        self.inner.flush()
    }
}

/// Exact reader that tracks the CRC32C of everything read.
pub(super) struct CrcReader<'a> {
    /// Source.
    pub(super) inner: &'a mut dyn Read,
    /// CRC32C of all bytes read so far.
    pub(super) crc: u32,
}

impl CrcReader<'_> {
    fn fill(&mut self, b: &mut [u8]) -> Result<()> {
        self.inner.read_exact(b).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => corrupt("hnsw data is truncated"),
            _ => Error::Io(e),
        })?;
        self.crc = crc32c::crc32c_append(self.crc, b);
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.fill(&mut b)?;
        Ok(b)
    }

    /// Reads `n` little-endian u32s and appends them to `out`.
    fn u32s(&mut self, n: usize, out: &mut Vec<u32>) -> Result<()> {
        let mut b = vec![0u8; n * 4];
        self.fill(&mut b)?;
        out.extend(b.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])));
        Ok(())
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}
