//! Per-thread reusable search state ([`Scratch`]): visited stamps, the beam's heaps and the insert buffers.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::cand::Cand;

/// Min-heap adapter for [`Cand`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Near(pub(super) Cand);

impl Ord for Near {
    #[inline]
    fn cmp(&self, o: &Self) -> Ordering {
        o.0.cmp(&self.0)
    }
}

impl PartialOrd for Near {
    #[inline]
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// Per-thread reusable search state (no allocation in the hot loop once warmed up).
#[derive(Default)]
pub(super) struct Scratch {
    /// Visited marks: `visited[slot] == stamp` means visited in the current search.
    pub(super) visited: Vec<u16>,
    /// Stamp of the current search; never 0 while a search runs.
    pub(super) stamp: u16,
    /// Frontier of the layer search (closest first).
    pub(super) frontier: BinaryHeap<Near>,
    /// Best results of the layer search (farthest on top), at most `ef`.
    pub(super) top: BinaryHeap<Cand>,
    /// Unvisited neighbours of the node being expanded.
    pub(super) fresh: Vec<u32>,
    /// Layer-search results sorted ascending (insert only).
    pub(super) sorted: Vec<Cand>,
    /// Neighbours selected for the new node (insert only).
    pub(super) selected: Vec<Cand>,
    /// Candidate list when pruning a neighbour's list (insert only).
    pub(super) pool: Vec<Cand>,
    /// Result of pruning (insert only).
    pub(super) pruned: Vec<Cand>,
}

impl Scratch {
    /// Starts a new search over slots `< bound` (more are accommodated on the fly).
    pub(super) fn begin(&mut self, bound: usize) {
        if self.visited.len() < bound {
            self.visited.resize(bound, 0);
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.visited.fill(0);
            self.stamp = 1;
        }
        self.frontier.clear();
        self.top.clear();
    }

    /// Marks `id` visited; true when it was not visited before in this search.
    #[inline]
    pub(super) fn visit(&mut self, id: u32) -> bool {
        let i = id as usize;
        if i >= self.visited.len() {
            self.visited.resize((i + 1).max(self.visited.len() * 2), 0);
        }
        let v = &mut self.visited[i];
        if *v == self.stamp {
            false
        } else {
            *v = self.stamp;
            true
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch (or a fresh one if it is already in use, e.g. re-entrant calls from an
/// accept predicate).
pub(super) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::default()),
    })
}
