//! Process-wide counters of this crate's disk and network I/O that an operator graphs: log fsync latency
//! (a histogram over fixed buckets) and snapshot bytes sent to peers. Lock-free; read by the node's metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the fsync latency buckets: 100 µs to ~0.8 s, doubling; one more bucket above.
pub const FSYNC_BUCKETS: [f64; 14] =
    [0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048, 0.4096, 0.8192];

/// The counters.
#[derive(Debug)]
pub struct IoStats {
    /// Fsyncs per bucket of [`FSYNC_BUCKETS`] (the last slot: slower than the last bound).
    fsync_buckets: [AtomicU64; FSYNC_BUCKETS.len() + 1],
    /// Sum of fsync durations in nanoseconds.
    fsync_nanos: AtomicU64,
    /// Snapshot bytes sent to peers (chunks handed to the transport).
    snapshot_bytes_sent: AtomicU64,
}

/// The process's counters.
pub static IO_STATS: IoStats = IoStats {
    fsync_buckets: [const { AtomicU64::new(0) }; FSYNC_BUCKETS.len() + 1],
    fsync_nanos: AtomicU64::new(0),
    snapshot_bytes_sent: AtomicU64::new(0),
};

/// A copy of the counters.
#[derive(Debug, Clone, PartialEq)]
pub struct IoSnapshot {
    /// (upper bound in seconds, fsyncs in that bucket); the last bound is `f64::MAX` (encoded as +Inf).
    pub fsync_buckets: Vec<(f64, u64)>,
    /// Sum of fsync durations in seconds.
    pub fsync_seconds: f64,
    /// Number of fsyncs.
    pub fsyncs: u64,
    /// Snapshot bytes sent to peers.
    pub snapshot_bytes_sent: u64,
}

impl IoStats {
    /// Records one fsync (of one or several files done together) that took `d`.
    pub fn fsync(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = FSYNC_BUCKETS.iter().position(|&b| s <= b).unwrap_or(FSYNC_BUCKETS.len());
        self.fsync_buckets[i].fetch_add(1, Ordering::Relaxed);
        self.fsync_nanos.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Records `n` snapshot bytes sent.
    pub fn snapshot_sent(&self, n: u64) {
        self.snapshot_bytes_sent.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> IoSnapshot {
        let fsync_buckets: Vec<(f64, u64)> = FSYNC_BUCKETS
            .iter()
            .copied()
            .chain([f64::MAX])
            .zip(self.fsync_buckets.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        IoSnapshot {
            fsyncs: fsync_buckets.iter().map(|b| b.1).sum(),
            fsync_buckets,
            fsync_seconds: self.fsync_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            snapshot_bytes_sent: self.snapshot_bytes_sent.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
#[test]
fn fsyncs_fall_into_their_buckets() {
    let s = IoStats {
        fsync_buckets: [const { AtomicU64::new(0) }; FSYNC_BUCKETS.len() + 1],
        fsync_nanos: AtomicU64::new(0),
        snapshot_bytes_sent: AtomicU64::new(0),
    };
    s.fsync(Duration::from_micros(50));
    s.fsync(Duration::from_millis(3));
    s.fsync(Duration::from_secs(2));
    s.snapshot_sent(10);
    let snap = s.snapshot();
    assert_eq!(snap.fsyncs, 3);
    assert_eq!(snap.fsync_buckets[0], (0.0001, 1));
    assert_eq!(snap.fsync_buckets[5], (0.0032, 1));
    assert_eq!(snap.fsync_buckets.last(), Some(&(f64::MAX, 1)));
    assert!((snap.fsync_seconds - 2.00305).abs() < 1e-9);
    assert_eq!(snap.snapshot_bytes_sent, 10);
}
