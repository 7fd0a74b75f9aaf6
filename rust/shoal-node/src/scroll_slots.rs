//! Bounds on open Scroll streams: at most [`PER_CONNECTION`] per client connection and [`PER_NODE`] per node.
//! Each open stream holds a producer and up to two queued batches, so an unbounded number of unread streams
//! would exhaust a node's memory. A stream takes a [`ScrollSlot`] when it starts and gives it back when it
//! ends or is dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;

/// Most Scroll streams open at once on one client connection.
pub const PER_CONNECTION: usize = 16;
/// Most Scroll streams open at once on one node.
pub const PER_NODE: usize = 256;

/// The open streams of a node, per connection (the client's socket address; `None` when unknown).
#[derive(Debug, Default)]
pub struct ScrollSlots {
    /// Open streams per connection; entries are removed when they reach zero. Invariant: the values sum to
    /// at most [`PER_NODE`], each is at most [`PER_CONNECTION`].
    open: Mutex<HashMap<Option<SocketAddr>, usize>>,
}

/// One open stream's slot; released on drop.
#[derive(Debug)]
pub struct ScrollSlot {
    /// Where to give the slot back.
    slots: Arc<ScrollSlots>,
    /// The connection it counts against.
    conn: Option<SocketAddr>,
}

impl ScrollSlots {
    /// Takes a slot for a stream on connection `conn`, or says which bound is reached.
    pub fn take(self: &Arc<Self>, conn: Option<SocketAddr>) -> Result<ScrollSlot, String> {
        let mut open = self.open.lock();
        let total: usize = open.values().sum();
        if total >= PER_NODE {
            return Err(format!("{PER_NODE} scroll streams are open on this node already"));
        }
        let n = open.entry(conn).or_default();
        if *n >= PER_CONNECTION {
            return Err(format!("{PER_CONNECTION} scroll streams are open on this connection already"));
        }
        *n += 1;
        Ok(ScrollSlot { slots: Arc::clone(self), conn })
    }
}

impl Drop for ScrollSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock();
        if let Some(n) = open.get_mut(&self.conn) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.conn);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_per_connection_and_per_node() {
        let slots = Arc::new(ScrollSlots::default());
        let a: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let held: Vec<_> = (0..PER_CONNECTION).map(|_| slots.take(Some(a)).unwrap()).collect();
        assert!(slots.take(Some(a)).unwrap_err().contains("this connection"));
        drop(held);
        assert!(slots.take(Some(a)).is_ok(), "slots come back when streams end");
        let mut many = Vec::new();
        for port in 0..PER_NODE {
            let c: SocketAddr = format!("127.0.0.2:{}", 2000 + port / PER_CONNECTION).parse().unwrap();
            many.push(slots.take(Some(c)).unwrap());
        }
        assert!(slots.take(None).unwrap_err().contains("this node"));
    }
}
