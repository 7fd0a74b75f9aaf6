//! The life cycle of a node's engine, shared by the engine and the components that refuse requests or stop
//! background work by it:
//!
//! ```text
//!   open ──start──> ready ──begin_drain──> draining ──shutdown──> closing
//!                   (served)  (no node-state answers,   (requests refused, groups flushed)
//!                              no campaigning)
//! ```

use std::sync::atomic::{AtomicBool, Ordering};

use crate::{Error, Result};

/// The engine's life-cycle flags. Each is set once and never cleared.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    /// This node's id (named in refusals).
    node_id: u64,
    /// Set once the node joined (or recovered) and reconciled: requests are served.
    ready: AtomicBool,
    /// Set once shutdown began; new requests are refused.
    closing: AtomicBool,
    /// Set once a graceful stop began (`begin_drain`): no node-state answers, no campaigning.
    draining: AtomicBool,
}

impl Lifecycle {
    /// A node that is opening: not ready, not stopping.
    pub(crate) fn new(node_id: u64) -> Lifecycle {
        Lifecycle {
            node_id,
            ready: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        }
    }

    /// Marks the node ready (requests are served from now on).
    pub(crate) fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Marks a graceful stop begun.
    pub(crate) fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Marks shutdown begun; returns whether it had begun already.
    pub(crate) fn set_closing(&self) -> bool {
        self.closing.swap(true, Ordering::AcqRel)
    }

    /// Whether the node joined (or recovered) and reconciled.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Whether shutdown began.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Whether a graceful stop began.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Refuses requests while shutting down.
    pub(crate) fn check_running(&self) -> Result<()> {
        if self.is_closing() {
            return Err(Error::NodeUnavailable(format!("node {} is shutting down", self.node_id).into()));
        }
        Ok(())
    }

    /// Refuses requests while starting or shutting down.
    pub(crate) fn check_open(&self) -> Result<()> {
        self.check_running()?;
        if !self.is_ready() {
            return Err(Error::NodeUnavailable(format!("node {} is starting", self.node_id).into()));
        }
        Ok(())
    }
}
