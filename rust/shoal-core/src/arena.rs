//! Contiguous storage for the vectors of one shard, addressed by dense slot numbers.

/// Append-only vector storage. Slot `s` holds `data[s*dim .. (s+1)*dim]`.
/// Invariant: `data.len() == len * dim`; slots are never reused, so a slot number is a stable handle.
#[derive(Debug, Clone, Default)]
pub struct VectorArena {
    /// Dimension of every vector; fixed at creation.
    dim: usize,
    /// Row-major vector data.
    data: Vec<f32>,
}

impl VectorArena {
    /// An empty arena for vectors of `dim` components.
    pub fn new(dim: usize) -> Self {
        VectorArena { dim, data: Vec::new() }
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
        slot
    }

    /// Reserves room for `additional` more vectors.
    pub fn reserve(&mut self, additional: usize) {
        self.data.reserve(additional * self.dim);
    }

    /// The raw row-major data (for snapshots).
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// Rebuilds an arena from raw row-major data (for snapshots).
    pub fn from_vec(dim: usize, data: Vec<f32>) -> Self {
        assert!(dim > 0 && data.len().is_multiple_of(dim), "arena data is not a whole number of vectors");
        VectorArena { dim, data }
    }
}
