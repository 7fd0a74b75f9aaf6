//! Contiguous storage for the vectors of one shard, addressed by dense slot numbers, and their int8 codes
//! when the collection is quantized.

use crate::quantizer::{Quantization, ScalarQuantizer, TRAIN_ROWS};

/// Append-only vector storage. Slot `s` holds `data[s*dim .. (s+1)*dim]`.
/// Invariant: `data.len() == len * dim`; slots are never reused, so a slot number is a stable handle.
#[derive(Debug, Clone, Default)]
pub struct VectorArena {
    /// Dimension of every vector; fixed at creation.
    dim: usize,
    /// Row-major vector data.
    data: Vec<f32>,
    /// What the collection asked for. `Int8` trains `quantizer` once `TRAIN_ROWS` vectors exist.
    quantization: Quantization,
    /// Trained on rows `0..TRAIN_ROWS` (deterministic across replicas); `None` before that or unquantized.
    quantizer: Option<ScalarQuantizer>,
    /// Row-major codes: `codes.len() == len * dim` once `quantizer` is set, empty before.
    codes: Vec<u8>,
}

impl VectorArena {
    /// An empty arena for vectors of `dim` components.
    pub fn new(dim: usize) -> Self {
        VectorArena { dim, ..Default::default() }
    }

    /// An empty arena that quantizes as `quantization` asks.
    pub fn with_quantization(dim: usize, quantization: Quantization) -> Self {
        VectorArena { dim, quantization, ..Default::default() }
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
        let q = ScalarQuantizer::train(&self.data[..TRAIN_ROWS * self.dim], self.dim);
        let mut codes = Vec::with_capacity(self.data.capacity());
        for row in self.data.chunks_exact(self.dim) {
            q.encode_into(row, &mut codes);
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
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    /// True when no slot exists.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The vector in `slot`. Panics when out of range.
    #[inline]
    pub fn get(&self, slot: u32) -> &[f32] {
        let s = slot as usize * self.dim;
        &self.data[s..s + self.dim]
    }

    /// Appends a vector (must have `dim` components) and returns its slot.
    pub fn push(&mut self, v: &[f32]) -> u32 {
        debug_assert_eq!(v.len(), self.dim);
        let slot = self.len() as u32;
        self.data.extend_from_slice(v);
        if let Some(q) = &self.quantizer {
            q.encode_into(v, &mut self.codes);
        } else if self.quantization == Quantization::Int8 && self.len() == TRAIN_ROWS {
            self.train();
        }
        slot
    }

    /// Reserves room for `additional` more vectors.
    pub fn reserve(&mut self, additional: usize) {
        self.data.reserve(additional * self.dim);
        if self.quantizer.is_some() {
            self.codes.reserve(additional * self.dim);
        }
    }

    /// The raw row-major data (for snapshots).
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// Rebuilds an arena from raw row-major data (for snapshots).
    pub fn from_vec(dim: usize, data: Vec<f32>) -> Self {
        assert!(dim > 0 && data.len().is_multiple_of(dim), "arena data is not a whole number of vectors");
        VectorArena { dim, data, ..Default::default() }
    }
}
