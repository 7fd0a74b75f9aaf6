//! [`Scorer`]: the distance of a query to a slot during a traversal, on full-precision vectors or int8 codes.

use crate::Metric;
use crate::arena::VectorArena;
use crate::distance::distance;
use crate::quantizer::CodeQuery;

/// Hints the CPU to load the first cache lines of `v` (no-op off x86-64).
#[inline(always)]
pub(super) fn prefetch<T>(v: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let p = v.as_ptr().cast::<i8>();
        let bytes = std::mem::size_of_val(v).min(PREFETCH_BYTES);
        let mut off = 0;
        while off < bytes {
            // SAFETY: prefetching is a hint and never faults; the address is inside `v` anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(off)) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// How much of a vector [`prefetch`] requests (the hardware prefetcher follows the rest).
const PREFETCH_BYTES: usize = 512;

/// Scores slots against one query during a traversal.
pub(super) trait Scorer {
    /// Number of slots that can be scored (the arena's length).
    fn len(&self) -> usize;
    /// Distance of the query to `id` (`id < len()`).
    fn dist(&self, id: u32) -> f32;
    /// Hints that `id` will be scored soon.
    fn prefetch(&self, id: u32);
}

/// Full-precision scoring.
pub(super) struct FloatScorer<'a> {
    /// Metric of the graph.
    pub(super) metric: Metric,
    /// The prepared query.
    pub(super) q: &'a [f32],
    /// Vectors.
    pub(super) arena: &'a VectorArena,
}

impl Scorer for FloatScorer<'_> {
    #[inline]
    fn len(&self) -> usize {
        self.arena.len()
    }
    #[inline]
    fn dist(&self, id: u32) -> f32 {
        distance(self.metric, self.q, self.arena.get(id))
    }
    #[inline]
    fn prefetch(&self, id: u32) {
        prefetch(self.arena.get(id));
    }
}

/// Scoring on int8 codes (the arena is trained, so every slot below its length has a code).
pub(super) struct CodeScorer<'a> {
    /// The query prepared for the arena's quantizer.
    pub(super) q: CodeQuery,
    /// Codes.
    pub(super) arena: &'a VectorArena,
}

impl Scorer for CodeScorer<'_> {
    #[inline]
    fn len(&self) -> usize {
        self.arena.len()
    }
    #[inline]
    fn dist(&self, id: u32) -> f32 {
        self.q.distance(self.arena.code(id))
    }
    #[inline]
    fn prefetch(&self, id: u32) {
        prefetch(self.arena.code(id));
    }
}
