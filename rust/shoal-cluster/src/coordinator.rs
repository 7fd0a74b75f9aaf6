//! The coordinator of this node's client requests: it routes reads and writes to the replicas of a
//! collection's shards (here or on other nodes) and merges their answers. Reads are in `read_path.rs`,
//! writes in `write_path.rs`, scrolls in `scroll.rs`; this file holds the state they share: the version
//! clock, leader hints, per-node load figures, the node's work counters and the planner's rotation.
//!
//! ```text
//!   client request ──> Coordinator ──┬─> shard leaders   write batches, one per shard (local or forwarded)
//!                                    └─> shard replicas  get / count / search / scan by read level, merged
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use shoal_core::hlc::Hlc;

use crate::engine::EngineConfig;
use crate::leader_hints::LeaderHints;
use crate::lifecycle::Lifecycle;
use crate::load::{LoadTracker, NodeCounters};
use crate::local_replicas::{CollectionView, LocalReplicas};
use crate::meta_plane::MetaPlane;
use crate::peer::Peers;
use crate::{Error, Result};

/// Routes and merges the reads and writes this node coordinates or serves for other coordinators.
pub(crate) struct Coordinator {
    /// Static configuration of the node (shared with the other components).
    pub(crate) cfg: Arc<EngineConfig>,
    /// Group 0: the collections' placement and the other nodes' addresses and zones.
    pub(crate) meta: Arc<MetaPlane>,
    /// This node's replicas (served locally without a network hop).
    pub(crate) local: Arc<LocalReplicas>,
    /// The engine's life cycle: requests are refused while starting or shutting down.
    pub(crate) lifecycle: Arc<Lifecycle>,
    /// Clients of the other nodes.
    pub(crate) peers: Arc<Peers>,
    /// Version clock for writes (shared with `local`, which never lets it fall behind a replica's data).
    pub(crate) hlc: Arc<Hlc>,
    /// Milliseconds added to the system clock by `hlc` (fault injection; 0 otherwise).
    clock_offset: Arc<AtomicI64>,
    /// Leader hints of shard groups this node learnt from other nodes, by group id.
    pub(crate) leader_hints: LeaderHints,
    /// Rotates equal replica choices (see planner::PlanContext::turn).
    pub(crate) round_robin: AtomicUsize,
    /// In-flight requests and latencies of the nodes this node reads from.
    pub(crate) loads: LoadTracker,
    /// This node's work counters (Node.stats).
    pub(crate) counters: Arc<NodeCounters>,
}

impl Coordinator {
    /// A coordinator with no load figures and no hints yet; `hlc` runs `clock_offset` ms off the system clock.
    pub(crate) fn new(
        meta: Arc<MetaPlane>,
        local: Arc<LocalReplicas>,
        lifecycle: Arc<Lifecycle>,
        hlc: Arc<Hlc>,
        clock_offset: Arc<AtomicI64>,
    ) -> Coordinator {
        Coordinator {
            cfg: meta.cfg.clone(),
            peers: meta.peers.clone(),
            meta,
            local,
            lifecycle,
            hlc,
            clock_offset,
            leader_hints: LeaderHints::default(),
            round_robin: AtomicUsize::new(0),
            loads: LoadTracker::default(),
            counters: Arc::default(),
        }
    }

    /// The collection `name` with this node's replicas of it (refused while starting or shutting down).
    pub(crate) fn view(&self, name: &str) -> Result<CollectionView> {
        self.lifecycle.check_open()?;
        self.local.view(name)
    }

    /// Fault injection: runs this node's clock `offset_ms` (|offset| <= 1 hour) off the system clock.
    pub(crate) fn set_clock_offset(&self, offset_ms: i64) -> Result<i64> {
        const MAX: i64 = 3_600_000;
        if !(-MAX..=MAX).contains(&offset_ms) {
            return Err(Error::InvalidArgument(
                format!("clock offset {offset_ms} ms is outside -{MAX}..={MAX}").into(),
            ));
        }
        self.clock_offset.store(offset_ms, Ordering::Relaxed);
        tracing::warn!(offset_ms, "fault injection: clock skewed");
        Ok(offset_ms)
    }
}
