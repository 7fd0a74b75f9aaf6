//! Graph layout: the segmented node table ([`Segment`]: levels, layer-0 and upper neighbour lists), where a slot
//! lives, and the words of one neighbour list.

use std::sync::atomic::{AtomicPtr, AtomicU8, AtomicU32, Ordering as AtOrd};

use super::SEG_BASE_BITS;

/// A fixed-capacity block of node records. Never resized or moved once allocated.
pub(super) struct Segment {
    /// Per node: 0 = absent, otherwise `level + 1`. Goes from 0 to its final value exactly once (the claim
    /// at the start of the insert) and never changes afterwards.
    pub(super) levels: Box<[AtomicU8]>,
    /// Layer-0 lists, `stride0 = 2m + 1` words per node: the count (≤ 2m), then the ids. Ids at positions
    /// `< max count ever published` are always valid node slots.
    pub(super) links0: Box<[AtomicU32]>,
    /// Layers 1..=level of nodes with level ≥ 1: null, or a leaked block (see [`Segment::upper`]) of
    /// `level * (m + 1)` words, per layer the count (≤ m) then the ids. Set once (compare-exchange from null)
    /// before the node's level is claimed, so any node reachable at layer `l ≥ 1` has it; freed on drop.
    /// A null pointer per node (zeroed, so untouched pages are not resident) instead of a `OnceLock<Box<_>>`
    /// (24 bytes written per node of capacity).
    pub(super) upper: Box<[AtomicPtr<AtomicU32>]>,
}

impl Segment {
    pub(super) fn new(cap: usize, stride0: usize) -> Segment {
        let mut ptrs = std::mem::ManuallyDrop::new(vec![0usize; cap]);
        // SAFETY: `AtomicPtr<T>` has the same size and alignment as `usize` on every platform Rust supports
        // atomics pointers on, and the all-zero bit pattern is a null pointer; the buffer moves to the new Vec.
        let upper = unsafe {
            Vec::from_raw_parts(ptrs.as_mut_ptr().cast::<AtomicPtr<AtomicU32>>(), ptrs.len(), ptrs.capacity())
        }
        .into_boxed_slice();
        Segment { levels: zeroed_atomic_u8(cap), links0: zeroed_atomic_u32(cap * stride0), upper }
    }

    /// The upper-layer words of node `off` (empty when it has none). A block is `[len, words...]`.
    #[inline]
    pub(super) fn upper(&self, off: usize) -> &[AtomicU32] {
        let p = self.upper[off].load(AtOrd::Acquire);
        if p.is_null() {
            return &[];
        }
        // SAFETY: a non-null pointer was published (Release) by `upper_init` from a leaked boxed slice of
        // `1 + len` words whose first word holds `len` and is never written again; the block lives until the
        // segment is dropped, which outlives `&self`.
        unsafe {
            let len = (*p).load(AtOrd::Relaxed) as usize;
            &std::slice::from_raw_parts(p, len + 1)[1..]
        }
    }

    /// Gives node `off` a zeroed upper block of `words` words unless it already has one.
    #[inline]
    pub(super) fn upper_init(&self, off: usize, words: usize) {
        if !self.upper[off].load(AtOrd::Acquire).is_null() {
            return;
        }
        let block: Box<[AtomicU32]> =
            std::iter::once(words as u32).chain(std::iter::repeat_n(0, words)).map(AtomicU32::new).collect();
        let p = Box::into_raw(block).cast::<AtomicU32>();
        if self.upper[off].compare_exchange(std::ptr::null_mut(), p, AtOrd::AcqRel, AtOrd::Acquire).is_err() {
            // SAFETY: `p` came from `Box::into_raw` of a `1 + words` slice just above and was never published.
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, words + 1)) });
        }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        for u in self.upper.iter() {
            let p = u.load(AtOrd::Acquire);
            if !p.is_null() {
                // SAFETY: published by `upper_init` from `Box::into_raw` of a slice of `1 + len` words (len in
                // the first word); `&mut self` means no reader remains, and each pointer is freed once.
                unsafe {
                    let len = (*p).load(AtOrd::Relaxed) as usize;
                    drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, len + 1)));
                }
            }
        }
    }
}

/// `n` zeroed `AtomicU32`s from `alloc_zeroed`: pages never written stay untouched and are not resident. A
/// segment is sized for doubling, so the newest one is mostly empty; writing its zeros up front made the graph
/// cost ~2.5x its used size in RSS.
pub(super) fn zeroed_atomic_u32(n: usize) -> Box<[AtomicU32]> {
    let mut v = std::mem::ManuallyDrop::new(vec![0u32; n]); // `vec![0; n]` allocates with alloc_zeroed
    // SAFETY: `AtomicU32` has the same size, alignment and bit validity as `u32` (std::sync::atomic docs), so
    // the buffer of a `Vec<u32>` is a valid buffer of as many `AtomicU32`s, allocated with the same layout;
    // ownership moves to the new Vec (the old one is never dropped).
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<AtomicU32>(), v.len(), v.capacity()) }.into_boxed_slice()
}

/// `n` zeroed `AtomicU8`s from `alloc_zeroed` (see [`zeroed_atomic_u32`]).
pub(super) fn zeroed_atomic_u8(n: usize) -> Box<[AtomicU8]> {
    let mut v = std::mem::ManuallyDrop::new(vec![0u8; n]);
    // SAFETY: `AtomicU8` has the same size, alignment and bit validity as `u8`; as in `zeroed_atomic_u32`.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<AtomicU8>(), v.len(), v.capacity()) }.into_boxed_slice()
}

/// Segment index and offset of `slot`.
#[inline]
pub(super) fn locate(slot: u32) -> (usize, usize) {
    let x = (u64::from(slot) >> SEG_BASE_BITS) + 1;
    let seg = 63 - x.leading_zeros() as usize;
    let start = ((1u64 << seg) - 1) << SEG_BASE_BITS;
    (seg, (u64::from(slot) - start) as usize)
}

/// Capacity of segment `seg`.
#[inline]
pub(super) fn segment_capacity(seg: usize) -> usize {
    1usize << (SEG_BASE_BITS as usize + seg)
}

/// The number of ids in a list (count word clamped to the list's capacity).
#[inline]
pub(super) fn list_len(list: &[AtomicU32]) -> usize {
    match list.first() {
        Some(c) => (c.load(AtOrd::Acquire) as usize).min(list.len() - 1),
        None => 0,
    }
}

/// Overwrites a list with `ids` (ids first, count last). Caller holds the node's lock.
#[inline]
pub(super) fn write_list(list: &[AtomicU32], ids: impl ExactSizeIterator<Item = u32>) {
    let n = ids.len().min(list.len().saturating_sub(1));
    for (i, id) in ids.take(n).enumerate() {
        list[1 + i].store(id, AtOrd::Relaxed);
    }
    if let Some(c) = list.first() {
        c.store(n as u32, AtOrd::Release);
    }
}

/// Hints the CPU to load the start of a neighbour list (no-op off x86-64).
#[inline(always)]
pub(super) fn prefetch_links(list: &[AtomicU32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: prefetching is a hint and never faults.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(list.as_ptr().cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = list;
}
