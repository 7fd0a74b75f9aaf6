//! The snapshot codec: a point-in-time capture of a store, written as a versioned, CRC32C-protected
//! stream including the graph, and read back with full validation.

use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::{Mutex, RwLock};

use super::digest::slot_hash;
use super::{Inner, Payload, ShardStore, Slot, new_graph, storage_of};
use crate::arena::{VectorArena, VectorStorage};
use crate::dedup::WriteId;
use crate::hlc::Version;
use crate::hnsw::Hnsw;
use crate::quantizer::Quantization;
use crate::{Error, IdType, Metric, PointId, Result, ShardConfig};

/// Snapshot magic bytes.
pub(super) const SNAPSHOT_MAGIC: &[u8; 8] = b"SHOALSS\x01";
/// Snapshot format version; bumped on any layout change. Format 1 (no dedup table) is still read.
pub const SNAPSHOT_FORMAT: u32 = 2;

// ---------------------------------------------------------------------------------------------------------
// Snapshots
//
// Layout (little-endian):
//   header   magic "SHOALSS\x01" (8 bytes), format u32 (= SNAPSHOT_FORMAT)
//   META     u64 length, then: dim u32, metric u8, id_type u8, slots u64, live u64, indexed watermark u64,
//            max_version, one record per slot (u8 live flag; live: id, version, payload, key versions),
//            tombstones u64 count + (id, version) sorted by id,
//            (format >= 2) dedup entries u64 count + (write id 16 bytes, ms u64, applied u64) in apply order
//   VECTORS  u64 length (= slots * dim * 4), f32 rows
//   GRAPH    u8 present; if present u64 length + the HNSW's own serialisation
//   trailer  CRC32C u32 of every byte between header and trailer
// ids: u8 tag (0 int: u64; 1 str: u32 length + UTF-8); version: u64 hlc + u32 node; payload: u8 present +
// u32 length + JSON text; key versions: u32 count + (u32 length + key, version) sorted by key.
// ---------------------------------------------------------------------------------------------------------

fn put_u8(b: &mut Vec<u8>, v: u8) {
    b.push(v);
}
fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put_bytes(b: &mut Vec<u8>, v: &[u8]) {
    put_u32(b, v.len() as u32);
    b.extend_from_slice(v);
}
pub(super) fn put_version(b: &mut Vec<u8>, v: Version) {
    put_u64(b, v.hlc);
    put_u32(b, v.node);
}
pub(super) fn put_id(b: &mut Vec<u8>, id: &PointId) {
    match id {
        PointId::Int(v) => {
            put_u8(b, 0);
            put_u64(b, *v);
        }
        PointId::Str(s) => {
            put_u8(b, 1);
            put_bytes(b, s.as_bytes());
        }
    }
}

fn metric_code(m: Metric) -> u8 {
    match m {
        Metric::Cosine => 0,
        Metric::L2 => 1,
        Metric::Dot => 2,
    }
}
fn id_type_code(t: IdType) -> u8 {
    match t {
        IdType::Int => 0,
        IdType::Str => 1,
    }
}

fn corrupt(msg: impl fmt::Display) -> Error {
    Error::Corrupt(format!("shard snapshot: {msg}"))
}

/// A bounds-checked reader over an in-memory section.
struct Dec<'a> {
    /// The section.
    b: &'a [u8],
    /// Read position, `<= b.len()`.
    p: usize,
}

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.b.len() - self.p < n {
            return Err(corrupt("META section ends early"));
        }
        let s = &self.b[self.p..self.p + n];
        self.p += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn version(&mut self) -> Result<Version> {
        Ok(Version { hlc: self.u64()?, node: self.u32()? })
    }
    fn string(&mut self) -> Result<String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| corrupt("string is not UTF-8"))
    }
    fn id(&mut self, id_type: IdType) -> Result<PointId> {
        let id = match self.u8()? {
            0 => PointId::Int(self.u64()?),
            1 => PointId::Str(self.string()?),
            t => return Err(corrupt(format!("unknown id tag {t}"))),
        };
        if id.id_type() != id_type {
            return Err(corrupt(format!("id {id} does not match the collection's id_type {}", id_type.as_str())));
        }
        Ok(id)
    }
}

/// Writes to the inner stream, folding everything written into a CRC32C.
struct CrcWriter<'a> {
    /// Destination.
    w: &'a mut dyn Write,
    /// CRC32C of all bytes written so far.
    crc: u32,
}

impl CrcWriter<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.w.write_all(bytes)?;
        Ok(())
    }
}

/// Reads exactly what is asked from the inner stream, folding it into a CRC32C.
struct CrcReader<'a> {
    /// Source.
    r: &'a mut dyn Read,
    /// CRC32C of all bytes read so far.
    crc: u32,
}

fn read_err(e: std::io::Error, what: &str) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof { corrupt(format!("truncated in {what}")) } else { Error::Io(e) }
}

impl CrcReader<'_> {
    fn exact(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        self.r.read_exact(buf).map_err(|e| read_err(e, what))?;
        self.crc = crc32c::crc32c_append(self.crc, buf);
        Ok(())
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        let mut b = [0u8; 8];
        self.exact(&mut b, what)?;
        Ok(u64::from_le_bytes(b))
    }
    /// Reads `len` bytes, growing the buffer only as data arrives (a corrupt length cannot force a huge
    /// allocation up front).
    fn section(&mut self, len: u64, what: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            self.exact(&mut buf[..n], what)?;
            out.extend_from_slice(&buf[..n]);
            left -= n as u64;
        }
        Ok(out)
    }
}

impl ShardStore {
    /// Writes a consistent point-in-time snapshot (format in the module source): [`ShardStore::capture`]
    /// then [`StoreCapture::write`].
    pub fn write_snapshot(&self, w: &mut dyn Write) -> Result<()> {
        self.capture()?.write(self, w)
    }

    /// Takes a point-in-time copy of the store's state for a snapshot: slot metadata (payloads are shared,
    /// not copied), tombstones and the dedup table under a short read lock; the graph is kept as it is by
    /// holding the index lock until the capture is written (writes never touch the graph). Writers wait only for the metadata copy;
    /// the serialisation of everything happens later, in [`StoreCapture::write`], without any lock but the
    /// brief ones that read vector rows (rows below the capture's slot count never change).
    pub fn capture(&self) -> Result<StoreCapture> {
        let index_guard = self.index_lock.lock_arc();
        let cap = {
            let g = self.inner.read();
            let n = g.slots.len();
            let slots = g
                .slots
                .iter()
                .zip(&g.alive)
                .map(|(slot, live)| {
                    live.then(|| {
                        let mut kv: Vec<(String, Version)> =
                            slot.key_versions.iter().flat_map(|k| k.iter()).map(|(k, v)| (k.clone(), *v)).collect();
                        kv.sort_unstable();
                        CapturedSlot { id: slot.id.clone(), version: slot.version, payload: slot.payload.clone(), kv }
                    })
                })
                .collect();
            let mut tombstones: Vec<(PointId, Version)> = g.tombstones.iter().map(|(i, v)| (i.clone(), *v)).collect();
            tombstones.sort_unstable();
            StoreCapture {
                n,
                live: g.live(),
                mark: self.indexed.load(Ordering::Acquire).min(n),
                max_version: g.max_version,
                slots,
                tombstones,
                dedup: g.dedup.iter().collect(),
                _index: index_guard,
            }
        };
        Ok(cap)
    }

    /// Reads a snapshot written by [`ShardStore::write_snapshot`] for a collection with `config`.
    /// Bad input (wrong magic or format, another collection's dim/metric/id_type, truncation, a CRC
    /// mismatch, inconsistent contents) is [`Error::Corrupt`]; I/O failures are [`Error::Io`]. Never panics.
    /// A snapshot without a graph loaded into an HNSW collection is indexed again by `index_step`.
    pub fn read_snapshot(config: ShardConfig, r: &mut dyn Read) -> Result<ShardStore> {
        Self::read_snapshot_with(config, None, r)
    }

    /// [`ShardStore::read_snapshot`] for a store whose `on_disk` vectors go to `vector_dir` (streamed there
    /// as they are read: a restore never holds the whole VECTORS section in memory).
    pub fn read_snapshot_with(
        config: ShardConfig,
        vector_dir: Option<PathBuf>,
        r: &mut dyn Read,
    ) -> Result<ShardStore> {
        let dim = config.dim;
        if dim == 0 {
            return Err(corrupt("config has dim 0"));
        }
        let mut head = [0u8; 12];
        r.read_exact(&mut head).map_err(|e| read_err(e, "header"))?;
        if &head[..8] != SNAPSHOT_MAGIC {
            return Err(corrupt("bad magic: not a shoal shard snapshot"));
        }
        let format = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
        if format == 0 || format > SNAPSHOT_FORMAT {
            return Err(corrupt(format!(
                "unsupported format version {format} (this build reads 1..={SNAPSHOT_FORMAT})"
            )));
        }
        let mut cr = CrcReader { r, crc: 0 };
        let meta_len = cr.u64("META length")?;
        let meta = cr.section(meta_len, "META")?;
        let vec_len = cr.u64("VECTORS length")?;
        let row_bytes = dim as u64 * 4;
        if vec_len % row_bytes != 0 {
            return Err(corrupt(format!("VECTORS length {vec_len} is not a whole number of {dim}-d rows")));
        }
        let mut arena = VectorArena::create(dim, Quantization::None, storage_of(&config, vector_dir));
        {
            // Whole rows per read, so no row straddles two reads.
            let rows_per_read = (64 * 1024 / row_bytes as usize).max(1);
            let mut buf = vec![0u8; rows_per_read * dim * 4];
            let mut row = vec![0f32; dim];
            let mut left = vec_len;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                cr.exact(&mut buf[..n], "VECTORS")?;
                for bytes in buf[..n].chunks_exact(dim * 4) {
                    for (x, c) in row.iter_mut().zip(bytes.chunks_exact(4)) {
                        *x = f32::from_le_bytes(c.try_into().expect("4 bytes"));
                    }
                    arena.push(&row);
                }
                left -= n as u64;
            }
        }
        let mut flag = [0u8; 1];
        cr.exact(&mut flag, "GRAPH")?;
        let graph = match flag[0] {
            0 => None,
            1 => {
                let len = cr.u64("GRAPH length")?;
                Some(cr.section(len, "GRAPH")?)
            }
            f => return Err(corrupt(format!("bad GRAPH flag {f}"))),
        };
        let computed = cr.crc;
        let mut trailer = [0u8; 4];
        r.read_exact(&mut trailer).map_err(|e| read_err(e, "trailer"))?;
        if u32::from_le_bytes(trailer) != computed {
            return Err(corrupt("CRC32C mismatch"));
        }
        Self::decode(config, format, &meta, arena, graph.as_deref())
    }

    /// Builds a store from CRC-checked snapshot sections, validating their consistency.
    fn decode(
        config: ShardConfig,
        format: u32,
        meta: &[u8],
        arena: VectorArena,
        graph: Option<&[u8]>,
    ) -> Result<ShardStore> {
        let dim = config.dim;
        if dim == 0 {
            return Err(corrupt("config has dim 0"));
        }
        let mut d = Dec { b: meta, p: 0 };
        let s_dim = d.u32()? as usize;
        let s_metric = d.u8()?;
        let s_id_type = d.u8()?;
        if s_dim != dim || s_metric != metric_code(config.metric) || s_id_type != id_type_code(config.id_type) {
            return Err(corrupt(format!(
                "snapshot is for dim {s_dim}, metric code {s_metric}, id_type code {s_id_type}, but the collection \
                 has dim {dim}, metric {}, id_type {}",
                config.metric,
                config.id_type.as_str()
            )));
        }
        let n = d.u64()?;
        let live = d.u64()?;
        let mark = d.u64()?;
        let max_version = d.version()?;
        // Every slot record takes at least one byte, so `n` is bounded by the section's size.
        if n > (meta.len() - d.p) as u64 || mark > n || live > n {
            return Err(corrupt(format!("inconsistent counts: {n} slots, {live} live, watermark {mark}")));
        }
        let n = n as usize;
        if arena.len() != n {
            return Err(corrupt(format!("VECTORS holds {} rows of {dim}, expected {n}", arena.len())));
        }
        let mut inner = Inner::new(&config, VectorStorage::Memory);
        inner.slots.reserve(n);
        inner.alive.reserve(n);
        inner.ids.reserve(live as usize);
        inner.max_version = max_version;
        for slot in 0..n {
            match d.u8()? {
                0 => {
                    inner.slots.push(Slot {
                        id: PointId::Int(0),
                        version: Version::ZERO,
                        payload: None,
                        key_versions: None,
                        hash: 0,
                    });
                    inner.alive.push(false);
                }
                1 => {
                    let id = d.id(config.id_type)?;
                    let version = d.version()?;
                    let payload = match d.u8()? {
                        0 => None,
                        1 => Some(
                            serde_json::from_slice::<Payload>(d.bytes()?)
                                .map_err(|e| corrupt(format!("payload of slot {slot}: {e}")))?,
                        ),
                        f => return Err(corrupt(format!("bad payload flag {f} in slot {slot}"))),
                    };
                    let nk = d.u32()? as usize;
                    let key_versions = if nk == 0 {
                        None
                    } else {
                        let mut kv = HashMap::new();
                        for _ in 0..nk {
                            let k = d.string()?;
                            kv.insert(k, d.version()?);
                        }
                        Some(Box::new(kv))
                    };
                    if inner.ids.insert(id.clone(), slot as u32).is_some() {
                        return Err(corrupt(format!("id {id} is live in two slots")));
                    }
                    inner.slots.push(Slot { id, version, payload: payload.map(Arc::new), key_versions, hash: 0 });
                    inner.alive.push(true);
                }
                f => return Err(corrupt(format!("bad slot flag {f} in slot {slot}"))),
            }
        }
        if inner.ids.len() as u64 != live {
            return Err(corrupt(format!("{} live slots but the header says {live}", inner.ids.len())));
        }
        let nt = d.u64()?;
        if nt > (meta.len() - d.p) as u64 {
            return Err(corrupt(format!("tombstone count {nt} exceeds the section")));
        }
        for _ in 0..nt {
            let id = d.id(config.id_type)?;
            let v = d.version()?;
            if inner.ids.contains_key(&id) || inner.tombstones.insert(id.clone(), v).is_some() {
                return Err(corrupt(format!("tombstone for {id} duplicates a live point or another tombstone")));
            }
        }
        if format >= 2 {
            let nd = d.u64()?;
            // Every entry takes 32 bytes.
            if nd > ((meta.len() - d.p) / 32) as u64 {
                return Err(corrupt(format!("dedup entry count {nd} exceeds the section")));
            }
            let mut last_ms = 0;
            for i in 0..nd {
                let id = WriteId::from_bytes(d.take(WriteId::LEN)?).expect("16 bytes");
                let (ms, applied) = (d.u64()?, d.u64()?);
                if ms < last_ms || inner.dedup.get(id).is_some() {
                    return Err(corrupt(format!("dedup entry {i} ({id}) is out of order or repeated")));
                }
                last_ms = ms;
                inner.dedup.record(id, ms, applied);
            }
        }
        if d.p != meta.len() {
            return Err(corrupt(format!("{} unexpected bytes after META", meta.len() - d.p)));
        }
        inner.arena = arena;
        inner.arena.set_quantization(config.index.quantization());
        for slot in 0..n {
            if inner.alive[slot] {
                let s = &inner.slots[slot];
                let hash = slot_hash(&s.id, s.version, inner.arena.get(slot as u32), s.payload.as_deref());
                inner.content = inner.content.wrapping_add(hash);
                inner.slots[slot].hash = hash;
            }
        }

        // A flat store keeps the watermark as written (it is meaningless there, but re-snapshots stay identical).
        let mut indexed = mark as usize;
        let mut hnsw = new_graph(&config);
        if hnsw.is_some() {
            match graph {
                None => indexed = 0, // written by a flat store: index everything again
                Some(bytes) => {
                    let mut rd: &[u8] = bytes;
                    let h = Hnsw::read_from(&mut rd, config.metric).map_err(|e| corrupt(format!("graph: {e}")))?;
                    if !rd.is_empty() {
                        return Err(corrupt(format!("{} unexpected bytes after the graph", rd.len())));
                    }
                    let mark = mark as usize;
                    if h.len() > mark {
                        return Err(corrupt(format!("graph holds {} nodes, above the watermark {mark}", h.len())));
                    }
                    for s in 0..n {
                        let inside = h.contains(s as u32);
                        if (s < mark && inner.alive[s] && !inside) || (s >= mark && inside) {
                            return Err(corrupt(format!("graph membership of slot {s} disagrees with the watermark")));
                        }
                    }
                    hnsw = Some(h);
                }
            }
        }
        Ok(ShardStore {
            config,
            inner: RwLock::new(inner),
            hnsw,
            index_lock: Arc::new(Mutex::new(())),
            indexed: AtomicUsize::new(indexed),
        })
    }
}

/// One live slot as captured for a snapshot.
#[derive(Debug)]
struct CapturedSlot {
    /// The point.
    id: PointId,
    /// Its version.
    version: Version,
    /// Its payload (shared with the store until the store replaces it).
    payload: Option<Arc<Payload>>,
    /// Key versions of patched keys, sorted by key.
    kv: Vec<(String, Version)>,
}

/// A point-in-time copy of a [`ShardStore`] ([`ShardStore::capture`]) that [`StoreCapture::write`] turns
/// into a snapshot without holding the store's locks.
pub struct StoreCapture {
    /// Slots at capture time; vector rows below it never change.
    n: usize,
    /// Live points.
    live: usize,
    /// Indexed watermark, consistent with `graph`.
    mark: usize,
    /// Newest version applied.
    max_version: Version,
    /// One entry per slot: `None` for a dead slot.
    slots: Vec<Option<CapturedSlot>>,
    /// Tombstones sorted by id.
    tombstones: Vec<(PointId, Version)>,
    /// The dedup table in apply order.
    dedup: Vec<(WriteId, crate::dedup::Applied)>,
    /// Holds the store's index lock until the capture is written: the graph stays as captured (consistent
    /// with `mark`) while writes go on; only indexing waits.
    _index: parking_lot::ArcMutexGuard<parking_lot::RawMutex, ()>,
}

impl fmt::Debug for StoreCapture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreCapture").field("slots", &self.n).field("live", &self.live).finish_non_exhaustive()
    }
}

impl StoreCapture {
    /// Writes the snapshot of the captured state; `store` must be the store it was captured from (its vector
    /// rows below the captured slot count are read in short chunks).
    pub fn write(&self, store: &ShardStore, w: &mut dyn Write) -> Result<()> {
        let config = &store.config;
        let n = self.n;
        let mut m = Vec::with_capacity(64 + n * 32);
        put_u32(&mut m, config.dim as u32);
        put_u8(&mut m, metric_code(config.metric));
        put_u8(&mut m, id_type_code(config.id_type));
        put_u64(&mut m, n as u64);
        put_u64(&mut m, self.live as u64);
        put_u64(&mut m, self.mark as u64);
        put_version(&mut m, self.max_version);
        for slot in &self.slots {
            let Some(slot) = slot else {
                put_u8(&mut m, 0);
                continue;
            };
            put_u8(&mut m, 1);
            put_id(&mut m, &slot.id);
            put_version(&mut m, slot.version);
            match &slot.payload {
                Some(p) => {
                    put_u8(&mut m, 1);
                    let json = serde_json::to_vec(&**p).map_err(|e| Error::Io(e.into()))?;
                    put_bytes(&mut m, &json);
                }
                None => put_u8(&mut m, 0),
            }
            put_u32(&mut m, slot.kv.len() as u32);
            for (k, v) in &slot.kv {
                put_bytes(&mut m, k.as_bytes());
                put_version(&mut m, *v);
            }
        }
        put_u64(&mut m, self.tombstones.len() as u64);
        for (id, v) in &self.tombstones {
            put_id(&mut m, id);
            put_version(&mut m, *v);
        }
        put_u64(&mut m, self.dedup.len() as u64);
        for (id, a) in &self.dedup {
            m.extend_from_slice(&id.to_bytes());
            put_u64(&mut m, a.ms);
            put_u64(&mut m, a.applied);
        }

        w.write_all(SNAPSHOT_MAGIC)?;
        w.write_all(&SNAPSHOT_FORMAT.to_le_bytes())?;
        let mut cw = CrcWriter { w, crc: 0 };
        cw.put(&(m.len() as u64).to_le_bytes())?;
        cw.put(&m)?;
        drop(m);
        let dim = config.dim;
        cw.put(&((n * dim * 4) as u64).to_le_bytes())?;
        // Rows below `n` never change (the arena is append-only), so they can be copied chunk by chunk.
        let rows_per_chunk = (256 * 1024 / (dim * 4)).max(1);
        let mut buf: Vec<u8> = Vec::with_capacity(rows_per_chunk * dim * 4);
        let mut row = 0;
        while row < n {
            let end = n.min(row + rows_per_chunk);
            buf.clear();
            {
                let g = store.inner.read();
                for run in g.arena.runs(row, end) {
                    for x in run {
                        buf.extend_from_slice(&x.to_le_bytes());
                    }
                }
            }
            cw.put(&buf)?;
            row = end;
        }
        match &store.hnsw {
            Some(h) => {
                let mut b = Vec::new();
                h.write_to(&mut b)?;
                cw.put(&[1])?;
                cw.put(&(b.len() as u64).to_le_bytes())?;
                cw.put(&b)?;
            }
            None => cw.put(&[0])?,
        }
        let crc = cw.crc;
        w.write_all(&crc.to_le_bytes())?;
        w.flush()?;
        Ok(())
    }
}
