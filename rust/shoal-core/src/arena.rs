//! Storage for the vectors of one shard, addressed by dense slot numbers: fixed-size chunks on the heap or
//! memory-mapped from a file (`on_disk` collections), plus their int8 codes when the collection is quantized.
//!
//! Chunks never move once allocated, so growing the arena copies nothing (a `Vec` would double and copy)
//! and a row's address is stable. An on-disk arena writes its rows into a file created (and at once
//! unlinked) in the shard's directory and reads them through a shared read-write mapping: the kernel keeps
//! the hot rows in the page cache and may evict the rest, so resident memory is mostly the codes and the
//! graph. The file is scratch, not a source of truth (the Raft log and snapshots are): it is rebuilt on every
//! open, needs no fsync, and leaves nothing behind after a crash. When a chunk cannot be placed on disk
//! (creating or reserving the file fails, e.g. the disk is full), that chunk lives on the heap instead and
//! [`VectorArena::disk_fallback`] says why: an apply never fails for it, and a full disk never turns into a
//! SIGBUS on a later write (space is reserved with `posix_fallocate` before a chunk is mapped).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::quantizer::{Quantization, ScalarQuantizer, TRAIN_ROWS};

/// Target bytes of one chunk; the row count is rounded down to a power of two, at least `MIN_CHUNK_ROWS`.
const CHUNK_BYTES: usize = 16 << 20;
/// At least this many rows per chunk: `MIN_CHUNK_ROWS * 4` is a multiple of the page size, so every chunk's
/// offset in the file is page-aligned whatever the dimension.
const MIN_CHUNK_ROWS: usize = 1024;

/// Where an arena keeps its full-precision vectors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum VectorStorage {
    /// On the heap.
    #[default]
    Memory,
    /// Memory-mapped from a scratch file created in this directory (which must exist).
    Disk(PathBuf),
}

/// What backs one chunk.
enum Backing {
    /// Zero-initialised heap memory (`calloc`: pages become resident only when written).
    Heap(#[allow(dead_code)] Box<[f32]>),
    /// A shared read-write mapping of the arena's file, `chunk_rows * dim * 4` bytes at a page-aligned
    /// offset; the space was reserved with `posix_fallocate` first.
    Mapped(#[allow(dead_code)] memmap2::MmapMut),
}

/// One chunk of `chunk_rows` rows.
struct Chunk {
    /// Start of the chunk's `chunk_rows * dim` floats, owned by `backing` (a boxed slice's or a mapping's
    /// address never changes when the `Chunk` moves), 4-byte aligned.
    ptr: NonNull<f32>,
    /// Keeps the memory alive; dropped with the chunk.
    _backing: Backing,
}

// SAFETY: `ptr` points into memory owned by `_backing`, which is `Send` and `Sync` (a boxed slice, an
// `MmapMut`). The arena hands out shared slices only through `&self` and writes only through `&mut self`, so
// the usual borrow rules keep readers and the writer apart.
unsafe impl Send for Chunk {}
// SAFETY: as for `Send`: no interior mutability; writes need `&mut VectorArena`.
unsafe impl Sync for Chunk {}

/// The file behind an on-disk arena.
struct DiskFile {
    /// The open (already unlinked) scratch file; its length is `chunks mapped * chunk bytes`.
    file: File,
}

/// Append-only vector storage. Slot `s` lives in chunk `s >> shift`, row `s & mask` of it.
/// Invariant: rows `0..len` are written; slots are never reused, so a slot number is a stable handle.
#[derive(Default)]
pub struct VectorArena {
    /// Dimension of every vector; fixed at creation.
    dim: usize,
    /// Number of rows written.
    len: usize,
    /// `log2(chunk_rows)`; `chunk_rows * dim * 4` is a multiple of the page size.
    shift: u32,
    /// `chunk_rows - 1`.
    mask: usize,
    /// Chunks in slot order; together they hold at least `len` rows.
    chunks: Vec<Chunk>,
    /// Where full-precision rows go.
    storage: VectorStorage,
    /// The scratch file of a `Disk` arena, created with its first chunk.
    file: Option<DiskFile>,
    /// Why the last chunk that should have gone to disk went to the heap; `None` while every chunk did.
    disk_fallback: Option<String>,
    /// What the collection asked for. `Int8` trains `quantizer` once `TRAIN_ROWS` vectors exist.
    quantization: Quantization,
    /// Trained on rows `0..TRAIN_ROWS` (deterministic across replicas); `None` before that or unquantized.
    quantizer: Option<ScalarQuantizer>,
    /// Row-major codes: `codes.len() == len * dim` once `quantizer` is set, empty before.
    codes: Vec<u8>,
}

impl std::fmt::Debug for VectorArena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorArena")
            .field("dim", &self.dim)
            .field("len", &self.len)
            .field("storage", &self.storage)
            .field("disk_fallback", &self.disk_fallback)
            .field("quantization", &self.quantization)
            .finish_non_exhaustive()
    }
}

/// Scratch file names are unique within the process (a snapshot install builds a new store while the old
/// one still serves).
static FILE_SEQ: AtomicU64 = AtomicU64::new(0);

impl VectorArena {
    /// An empty in-memory arena for vectors of `dim` components.
    pub fn new(dim: usize) -> Self {
        Self::create(dim, Quantization::None, VectorStorage::Memory)
    }

    /// An empty in-memory arena that quantizes as `quantization` asks.
    pub fn with_quantization(dim: usize, quantization: Quantization) -> Self {
        Self::create(dim, quantization, VectorStorage::Memory)
    }

    /// An empty arena keeping its vectors in `storage`. Nothing is created on disk until the first row.
    pub fn create(dim: usize, quantization: Quantization, storage: VectorStorage) -> Self {
        let dim = dim.max(1);
        let want = (CHUNK_BYTES / (dim * 4)).max(MIN_CHUNK_ROWS);
        // Round down to a power of two (at least MIN_CHUNK_ROWS, itself a power of two).
        let shift = usize::BITS - 1 - want.leading_zeros();
        VectorArena { dim, shift, mask: (1usize << shift) - 1, storage, quantization, ..Default::default() }
    }

    /// Rows per chunk.
    #[inline]
    fn chunk_rows(&self) -> usize {
        1 << self.shift
    }

    /// Switches quantization (e.g. after a snapshot restore): trains and encodes every row when `Int8` and
    /// enough rows exist, drops the codes for `None`.
    pub fn set_quantization(&mut self, quantization: Quantization) {
        self.quantization = quantization;
        match quantization {
            Quantization::None => {
                self.quantizer = None;
                self.codes = Vec::new();
            }
            Quantization::Int8 => {
                if self.quantizer.is_none() && self.len() >= TRAIN_ROWS {
                    self.train();
                }
            }
        }
    }

    /// Trains on rows `0..TRAIN_ROWS` and encodes every row.
    fn train(&mut self) {
        let mut sample = Vec::with_capacity(TRAIN_ROWS * self.dim);
        for s in 0..TRAIN_ROWS {
            sample.extend_from_slice(self.get(s as u32));
        }
        let q = ScalarQuantizer::train(&sample, self.dim);
        let mut codes = Vec::with_capacity(self.len * self.dim);
        for s in 0..self.len {
            q.encode_into(self.get(s as u32), &mut codes);
        }
        self.codes = codes;
        self.quantizer = Some(q);
    }

    /// The trained quantizer, if any.
    #[inline]
    pub fn quantizer(&self) -> Option<&ScalarQuantizer> {
        self.quantizer.as_ref()
    }

    /// The code of `slot` (the arena is quantized and trained). Panics when out of range.
    #[inline]
    pub fn code(&self, slot: u32) -> &[u8] {
        let s = slot as usize * self.dim;
        &self.codes[s..s + self.dim]
    }

    /// Bytes held by codes.
    pub fn code_bytes(&self) -> usize {
        self.codes.len()
    }

    /// Vector dimension.
    #[inline]
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of slots.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no slot exists.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where full-precision rows are kept.
    pub fn storage(&self) -> &VectorStorage {
        &self.storage
    }

    /// Why some chunk of a `Disk` arena lives on the heap (the scratch file could not be created or grown),
    /// `None` while every chunk is on disk (and always for `Memory`).
    pub fn disk_fallback(&self) -> Option<&str> {
        self.disk_fallback.as_deref()
    }

    /// Bytes of vector rows held on the heap and in mapped files: `(heap, mapped)`, whole chunks.
    pub fn chunk_bytes(&self) -> (usize, usize) {
        let per = self.chunk_rows() * self.dim * 4;
        let mapped = self.chunks.iter().filter(|c| matches!(c._backing, Backing::Mapped(_))).count();
        ((self.chunks.len() - mapped) * per, mapped * per)
    }

    /// The vector in `slot`. Panics when `slot` is beyond every allocated chunk; a slot at or past `len`
    /// inside the last chunk reads zeros (callers check `len`; debug builds assert it). This is the hot path
    /// of every distance: one shift, one bounds-checked chunk lookup, one multiply.
    #[inline]
    pub fn get(&self, slot: u32) -> &[f32] {
        let s = slot as usize;
        debug_assert!(s < self.len, "arena slot {s} out of range (len {})", self.len);
        let c = &self.chunks[s >> self.shift];
        // SAFETY: the chunk exists (the index above is bounds-checked) and row `s & mask < chunk_rows` lies
        // within its `chunk_rows * dim` floats, all initialised (zeroed heap, or a reserved file range that
        // reads as zeros until written); the borrow is tied to `&self`, and rows are written only through
        // `&mut self`.
        unsafe { std::slice::from_raw_parts(c.ptr.as_ptr().add((s & self.mask) * self.dim), self.dim) }
    }

    /// Appends a vector (must have `dim` components) and returns its slot.
    pub fn push(&mut self, v: &[f32]) -> u32 {
        assert_eq!(v.len(), self.dim, "arena push: vector has {} components, the arena {}", v.len(), self.dim);
        let slot = self.len;
        if slot >> self.shift == self.chunks.len() {
            let chunk = self.new_chunk();
            self.chunks.push(chunk);
        }
        let c = &self.chunks[slot >> self.shift];
        // SAFETY: the chunk holds `chunk_rows * dim` floats and row `slot & mask` is within it; `&mut self`
        // means no shared borrow of any row is alive.
        let row =
            unsafe { std::slice::from_raw_parts_mut(c.ptr.as_ptr().add((slot & self.mask) * self.dim), self.dim) };
        row.copy_from_slice(v);
        self.len += 1;
        if let Some(q) = &self.quantizer {
            q.encode_into(v, &mut self.codes);
        } else if self.quantization == Quantization::Int8 && self.len == TRAIN_ROWS {
            self.train();
        }
        slot as u32
    }

    /// A new chunk: mapped from the scratch file for `Disk` (heap when that fails, see the module doc).
    fn new_chunk(&mut self) -> Chunk {
        let floats = self.chunk_rows() * self.dim;
        if let VectorStorage::Disk(dir) = &self.storage {
            let dir = dir.clone();
            match self.map_chunk(&dir, floats * 4) {
                Ok(c) => return c,
                Err(e) => self.disk_fallback = Some(format!("vectors kept in memory: {e}")),
            }
        }
        let mut b = vec![0f32; floats].into_boxed_slice();
        Chunk { ptr: NonNull::new(b.as_mut_ptr()).expect("a boxed slice is non-null"), _backing: Backing::Heap(b) }
    }

    /// Grows the scratch file by `bytes` (reserved, not sparse) and maps the new part.
    fn map_chunk(&mut self, dir: &Path, bytes: usize) -> std::io::Result<Chunk> {
        if self.file.is_none() {
            let path = dir.join(format!(
                "vectors-{}-{}.f32.tmp",
                std::process::id(),
                FILE_SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
            // Unlinked at once: the mapping keeps the data; a crash leaves nothing behind.
            std::fs::remove_file(&path)?;
            self.file = Some(DiskFile { file });
        }
        let f = &self.file.as_ref().expect("created above").file;
        let offset = self.chunks.len() as u64 * bytes as u64;
        fallocate(f, offset, bytes as u64)?;
        // SAFETY: the file is private to this arena (created with create_new and unlinked, so no other
        // process or arena can open, truncate or write it); the range was reserved by posix_fallocate, so
        // writes through the mapping cannot hit ENOSPC (SIGBUS). The offset is page-aligned (see
        // MIN_CHUNK_ROWS).
        let mut map = unsafe { memmap2::MmapOptions::new().offset(offset).len(bytes).map_mut(f)? };
        let ptr = NonNull::new(map.as_mut_ptr().cast::<f32>()).expect("a mapping is non-null");
        Ok(Chunk { ptr, _backing: Backing::Mapped(map) })
    }

    /// Reserves room for `additional` more codes (rows need no reservation: chunks never move).
    pub fn reserve(&mut self, additional: usize) {
        if self.quantizer.is_some() {
            self.codes.reserve(additional * self.dim);
        }
    }

    /// Bytes of full-precision vector data (`len * dim * 4`).
    pub fn vector_bytes(&self) -> usize {
        self.len * self.dim * 4
    }

    /// Rows `from..to` as contiguous runs (at most one per chunk), for snapshots. Panics when `to > len`.
    pub fn runs(&self, from: usize, to: usize) -> impl Iterator<Item = &[f32]> + '_ {
        assert!(from <= to && to <= self.len, "arena runs {from}..{to} out of range (len {})", self.len);
        let rows = self.chunk_rows();
        let mut at = from;
        std::iter::from_fn(move || {
            if at >= to {
                return None;
            }
            let end = to.min((at / rows + 1) * rows);
            let c = &self.chunks[at >> self.shift];
            // SAFETY: rows `at..end` lie in one chunk (end is at most the chunk's last row + 1) and below
            // `len`; the borrow is tied to `&self`.
            let run = unsafe {
                std::slice::from_raw_parts(c.ptr.as_ptr().add((at & self.mask) * self.dim), (end - at) * self.dim)
            };
            at = end;
            Some(run)
        })
    }
}

/// Reserves `len` bytes at `offset` of `f` (the file grows to cover them): later writes through a mapping
/// cannot fail for lack of space.
fn fallocate(f: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(off), Ok(n)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(std::io::Error::other("vector file offset out of range"));
    };
    // SAFETY: a plain syscall on an open descriptor owned by `f`; no memory is passed.
    let rc = unsafe { libc::posix_fallocate(f.as_raw_fd(), off, n) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::from_raw_os_error(rc)) }
}

#[cfg(test)]
mod tests {
    use shoal_testkit::TempDir;

    use super::*;

    fn row(i: usize, dim: usize) -> Vec<f32> {
        (0..dim).map(|j| (i * 31 + j) as f32 * 0.5).collect()
    }

    fn fill(a: &mut VectorArena, n: usize) {
        for i in 0..n {
            assert_eq!(a.push(&row(i, a.dim())), i as u32);
        }
    }

    #[test]
    fn rows_survive_growth_across_chunks_in_memory_and_on_disk() {
        let tmp = TempDir::new("arena");
        let dir = tmp.path().to_path_buf();
        for storage in [VectorStorage::Memory, VectorStorage::Disk(dir.clone())] {
            // dim 3000: 1024 rows per chunk (the minimum), so 2500 rows span three chunks.
            let dim = 3000;
            let mut a = VectorArena::create(dim, Quantization::None, storage.clone());
            fill(&mut a, 2500);
            assert_eq!(a.len(), 2500);
            for i in [0, 1, 1023, 1024, 2047, 2048, 2499] {
                assert_eq!(a.get(i as u32), row(i, dim).as_slice(), "row {i} in {storage:?}");
            }
            let flat: Vec<f32> = a.runs(1000, 2100).flat_map(|r| r.iter().copied()).collect();
            let want: Vec<f32> = (1000..2100).flat_map(|i| row(i, dim)).collect();
            assert_eq!(flat, want);
            assert_eq!(a.runs(5, 5).count(), 0);
            let (heap, mapped) = a.chunk_bytes();
            match storage {
                VectorStorage::Memory => assert_eq!(mapped, 0),
                VectorStorage::Disk(_) => {
                    assert_eq!((heap, a.disk_fallback()), (0, None));
                    assert_eq!(mapped, 3 * 1024 * dim * 4);
                }
            }
        }
        // The scratch files are unlinked at once: nothing is left in the directory.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[test]
    fn a_disk_arena_without_its_directory_falls_back_to_memory() {
        let mut a = VectorArena::create(8, Quantization::None, VectorStorage::Disk("/nonexistent/shoal".into()));
        fill(&mut a, 10);
        assert_eq!(a.get(9), row(9, 8).as_slice());
        assert!(a.disk_fallback().unwrap().contains("vectors kept in memory"), "{:?}", a.disk_fallback());
        assert_eq!(a.chunk_bytes().1, 0);
    }

    #[test]
    fn quantized_disk_arena_trains_on_the_same_rows_as_memory() {
        let tmp = TempDir::new("arena-q");
        let dir = tmp.path().to_path_buf();
        let dim = 16;
        let mut m = VectorArena::create(dim, Quantization::Int8, VectorStorage::Memory);
        let mut d = VectorArena::create(dim, Quantization::Int8, VectorStorage::Disk(dir.clone()));
        fill(&mut m, TRAIN_ROWS + 10);
        fill(&mut d, TRAIN_ROWS + 10);
        assert!(m.quantizer().is_some());
        assert_eq!(m.quantizer(), d.quantizer());
        assert_eq!(m.code((TRAIN_ROWS + 5) as u32), d.code((TRAIN_ROWS + 5) as u32));
    }

    #[test]
    #[should_panic]
    fn reading_past_every_chunk_panics() {
        let mut a = VectorArena::new(4);
        fill(&mut a, 3);
        let _ = a.get(1 << 20);
    }
}
