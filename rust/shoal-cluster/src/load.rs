//! What a node measures of its own work and of the nodes it reads from: the per-node counters of
//! `Node.stats` (NodeCounters) and, as a coordinator, each peer's in-flight requests and latency
//! (LoadTracker) that `least_loaded` and hedging decide on (planner.rs).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use shoal_api::v1::NodeStats;

use crate::planner::{NodeLoad, ewma, p95};

/// Latency samples kept per node for its p95.
const SAMPLES: usize = 128;

/// Work counters of this node since it started (all monotonic except `in_flight`).
#[derive(Debug, Default)]
pub struct NodeCounters {
    /// Searches run on this node's replicas (one per request reaching them).
    pub searches: AtomicU64,
    /// Gets, counts and scans served by this node's replicas.
    pub reads: AtomicU64,
    /// Write requests this node coordinated.
    pub writes: AtomicU64,
    /// Requests executing now (client and node-to-node); back to 0 when idle.
    pub in_flight: AtomicU64,
    /// Replica searches stopped by a cancel or their deadline.
    pub cancelled: AtomicU64,
    /// Hedged shard requests sent as coordinator.
    pub hedged: AtomicU64,
}

impl NodeCounters {
    /// Counts a request as executing until the guard drops (also when its future is dropped).
    pub fn enter(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.in_flight)
    }

    /// [`NodeCounters::enter`] for work that outlives the borrow (a rayon job).
    pub fn enter_shared(self: &Arc<Self>) -> SharedInFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        SharedInFlight(self.clone())
    }

    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The wire form.
    pub fn to_proto(&self) -> NodeStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NodeStats {
            searches: g(&self.searches),
            reads: g(&self.reads),
            writes: g(&self.writes),
            in_flight: g(&self.in_flight),
            cancelled: g(&self.cancelled),
            hedged: g(&self.hedged),
        }
    }
}

/// A request counted in [`NodeCounters::in_flight`] until dropped.
#[derive(Debug)]
pub struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Work counted in [`NodeCounters::in_flight`] until dropped, holding the counters.
#[derive(Debug)]
pub struct SharedInFlight(Arc<NodeCounters>);

impl Drop for SharedInFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One peer as this coordinator sees it.
#[derive(Debug, Default)]
struct PeerLoad {
    /// Requests sent and not answered (a dropped request counts as answered).
    in_flight: u32,
    /// Latency EWMA in ms (0 = no sample).
    ewma_ms: f64,
    /// The last [`SAMPLES`] latencies in ms, oldest first.
    recent: VecDeque<f64>,
}

/// In-flight requests and answer latencies per node, as seen by this coordinator.
#[derive(Debug, Default)]
pub struct LoadTracker {
    /// By node id.
    peers: Mutex<HashMap<u64, PeerLoad>>,
}

impl LoadTracker {
    /// Marks a request to `node` as sent; the returned ticket records its latency when `done` is called
    /// and releases the in-flight slot when dropped.
    pub fn start(&self, node: u64) -> Ticket<'_> {
        self.peers.lock().entry(node).or_default().in_flight += 1;
        Ticket { tracker: self, node, started: Instant::now() }
    }

    /// The figures the planner uses, per node seen so far; the p95 (a selection over the recent samples) only
    /// `with_p95`, i.e. when the read may be hedged.
    pub fn snapshot(&self, with_p95: bool) -> HashMap<u64, NodeLoad> {
        let mut v = Vec::with_capacity(SAMPLES);
        self.peers
            .lock()
            .iter()
            .map(|(&n, p)| {
                let p95_ms = with_p95
                    .then(|| {
                        v.clear();
                        v.extend(p.recent.iter().copied());
                        p95(&mut v)
                    })
                    .flatten();
                (n, NodeLoad { in_flight: p.in_flight, ewma_ms: p.ewma_ms, p95_ms })
            })
            .collect()
    }
}

/// A request in flight to one node (see [`LoadTracker::start`]).
#[derive(Debug)]
pub struct Ticket<'a> {
    tracker: &'a LoadTracker,
    node: u64,
    started: Instant,
}

impl Ticket<'_> {
    /// Records the answer's latency per work unit (queries x shards of the request; successful answers only:
    /// a failure says nothing about speed).
    pub fn done(&self, units: usize) {
        let ms = self.started.elapsed().as_secs_f64() * 1000.0 / units.max(1) as f64;
        let mut peers = self.tracker.peers.lock();
        let p = peers.entry(self.node).or_default();
        p.ewma_ms = ewma(p.ewma_ms, ms);
        if p.recent.len() == SAMPLES {
            p.recent.pop_front();
        }
        p.recent.push_back(ms);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.tracker.peers.lock().get_mut(&self.node) {
            p.in_flight = p.in_flight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_count_in_flight_and_latency() {
        let t = LoadTracker::default();
        let a = t.start(2);
        let b = t.start(2);
        assert_eq!(t.snapshot(true)[&2].in_flight, 2);
        a.done(1);
        drop(a);
        drop(b);
        let s = t.snapshot(true)[&2];
        assert_eq!(s.in_flight, 0);
        assert!(s.ewma_ms >= 0.0);
        assert_eq!(s.p95_ms, None, "one sample is not enough for a p95");
        for _ in 0..10 {
            t.start(2).done(3);
        }
        assert!(t.snapshot(true)[&2].p95_ms.is_some());
    }

    #[test]
    fn counters_track_in_flight() {
        let c = NodeCounters::default();
        {
            let _g = c.enter();
            let _h = c.enter();
            assert_eq!(c.to_proto().in_flight, 2);
        }
        NodeCounters::bump(&c.searches);
        let p = c.to_proto();
        assert_eq!((p.in_flight, p.searches), (0, 1));
    }
}
