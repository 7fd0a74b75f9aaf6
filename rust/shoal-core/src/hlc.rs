//! Hybrid logical clock: the versions that order every write (DESIGN §3).
//!
//! A [`Version`] is `hlc` = 48 bits of wall-clock milliseconds << 16 | 16 logical bits, plus the id of the
//! node that stamped it, which breaks ties. Versions are totally ordered (`hlc` first, then `node`), and a
//! shard store applies writes last-writer-wins on that order.
//!
//! [`Hlc::now`] is strictly monotonic per clock, even when the wall clock stands still or goes backwards
//! (the logical counter advances instead; when it overflows, the millisecond part rolls forward).
//! [`Hlc::observe`] advances the clock past a version seen elsewhere (a remote write, or the newest version
//! found in a store at startup), so later stamps from this node order after it.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Number of logical bits in an `hlc` value.
pub const LOGICAL_BITS: u32 = 16;
/// Mask of the logical part of an `hlc` value.
pub const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;
/// Largest representable wall-clock millisecond value (48 bits).
pub const MAX_WALL_MS: u64 = (1 << 48) - 1;
/// Default bound on how far ahead of a node's clock a received version may be (DESIGN §3's max clock
/// offset): writes stamped further ahead are refused (`--max-clock-offset-ms`).
pub const DEFAULT_MAX_AHEAD_MS: u64 = 60_000;

/// The version of a write: a hybrid logical timestamp and the node that issued it.
/// Ordered by `hlc`, then `node`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Version {
    /// `wall_ms << 16 | logical`; compared first.
    pub hlc: u64,
    /// The stamping node's id; breaks ties between equal `hlc` values.
    pub node: u32,
}

impl Version {
    /// The smallest version; older than every stamped write.
    pub const ZERO: Version = Version { hlc: 0, node: 0 };
    /// The largest version.
    pub const MAX: Version = Version { hlc: u64::MAX, node: u32::MAX };

    /// A version from its parts.
    pub const fn new(hlc: u64, node: u32) -> Self {
        Version { hlc, node }
    }

    /// A version from a wall-clock millisecond value and a logical counter (`ms` is truncated to 48 bits).
    pub const fn from_parts(ms: u64, logical: u16, node: u32) -> Self {
        Version { hlc: ((ms & MAX_WALL_MS) << LOGICAL_BITS) | logical as u64, node }
    }

    /// Wall-clock milliseconds since the Unix epoch.
    pub const fn wall_ms(self) -> u64 {
        self.hlc >> LOGICAL_BITS
    }

    /// Logical counter within the millisecond.
    pub const fn logical(self) -> u16 {
        (self.hlc & LOGICAL_MASK) as u16
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{}", self.wall_ms(), self.logical(), self.node)
    }
}

/// Milliseconds since the Unix epoch from the system clock (0 if the clock is before the epoch).
pub fn system_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A hybrid logical clock of one node. Thread-safe and lock-free.
pub struct Hlc {
    /// Id stamped into every version; fixed.
    node: u32,
    /// The last `hlc` value issued or observed; only ever grows.
    last: AtomicU64,
    /// Wall clock in milliseconds since the Unix epoch; the system clock unless injected for tests.
    clock: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hlc")
            .field("node", &self.node)
            .field("last", &Version::new(self.last.load(Ordering::Relaxed), self.node))
            .finish()
    }
}

impl Hlc {
    /// A clock for `node_id` driven by the system clock.
    pub fn new(node_id: u32) -> Self {
        Self::with_clock(node_id, system_ms)
    }

    /// A clock for `node_id` driven by `clock` (milliseconds since the Unix epoch), e.g. a fake clock in tests.
    pub fn with_clock(node_id: u32, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        Hlc { node: node_id, last: AtomicU64::new(0), clock: Box::new(clock) }
    }

    /// The node id stamped into versions.
    pub fn node(&self) -> u32 {
        self.node
    }

    /// A new version, strictly greater than every version previously returned by this clock or passed to
    /// [`Hlc::observe`]. Uses the wall clock when it is ahead, the logical counter otherwise.
    pub fn now(&self) -> Version {
        let wall = ((self.clock)().min(MAX_WALL_MS)) << LOGICAL_BITS;
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            // `last + 1` carries a logical overflow into the millisecond part.
            let next = wall.max(last.saturating_add(1));
            match self.last.compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    return Version { hlc: next, node: self.node };
                }
                Err(actual) => last = actual,
            }
        }
    }

    /// Advances the clock so that every later [`Hlc::now`] is greater than `v`.
    pub fn observe(&self, v: Version) {
        self.last.fetch_max(v.hlc, Ordering::AcqRel);
    }

    /// This clock's wall time in milliseconds (the system clock unless injected or skewed).
    pub fn wall_ms(&self) -> u64 {
        (self.clock)().min(MAX_WALL_MS)
    }

    /// How far (ms) `v` is ahead of this clock's wall time, when it is more than `max_ahead_ms` ahead: such a
    /// version comes from a broken clock or a forged message, and must neither be stamped on data nor pushed
    /// into the clock (it would pin every later version near u64::MAX).
    pub fn too_far_ahead(&self, v: Version, max_ahead_ms: u64) -> Option<u64> {
        let wall = self.wall_ms();
        let ahead = v.wall_ms().saturating_sub(wall);
        (ahead > max_ahead_ms).then_some(ahead)
    }

    /// [`Hlc::observe`] for a version that is at most `max_ahead_ms` ahead of this clock; returns false (and
    /// leaves the clock alone) for one further ahead.
    pub fn observe_bounded(&self, v: Version, max_ahead_ms: u64) -> bool {
        if self.too_far_ahead(v, max_ahead_ms).is_some() {
            return false;
        }
        self.observe(v);
        true
    }

    /// The last `hlc` value issued or observed, as a version of this node (no advance).
    pub fn last(&self) -> Version {
        Version { hlc: self.last.load(Ordering::Acquire), node: self.node }
    }
}

#[cfg(test)]
mod bound_tests {
    use super::*;

    #[test]
    fn versions_far_ahead_are_refused_and_never_observed() {
        let c = Hlc::with_clock(1, || 1_000_000);
        assert_eq!(c.too_far_ahead(Version::from_parts(1_050_000, 0, 2), 60_000), None);
        assert_eq!(c.too_far_ahead(Version::from_parts(1_070_000, 0, 2), 60_000), Some(70_000));
        assert!(!c.observe_bounded(Version::new(u64::MAX, 2), 60_000));
        assert!(c.now().wall_ms() < 1_000_001, "a refused version does not move the clock");
        assert!(c.observe_bounded(Version::from_parts(1_010_000, 5, 2), 60_000));
        assert!(c.now() > Version::from_parts(1_010_000, 5, 2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64 as A;

    fn fake(start: u64) -> (Arc<A>, Hlc) {
        let t = Arc::new(A::new(start));
        let t2 = t.clone();
        (t, Hlc::with_clock(7, move || t2.load(Ordering::SeqCst)))
    }

    #[test]
    fn version_order_is_hlc_then_node() {
        assert!(Version::new(1, 9) < Version::new(2, 0));
        assert!(Version::new(2, 0) < Version::new(2, 1));
        assert_eq!(Version::from_parts(5, 3, 1).wall_ms(), 5);
        assert_eq!(Version::from_parts(5, 3, 1).logical(), 3);
        assert_eq!(Version::from_parts(5, 3, 1).to_string(), "5.3@1");
    }

    #[test]
    fn follows_wall_clock_when_it_advances() {
        let (t, c) = fake(1000);
        let a = c.now();
        assert_eq!((a.wall_ms(), a.logical(), a.node), (1000, 0, 7));
        t.store(1005, Ordering::SeqCst);
        let b = c.now();
        assert_eq!((b.wall_ms(), b.logical()), (1005, 0));
    }

    #[test]
    fn same_ms_and_backwards_clock_use_logical_counter() {
        let (t, c) = fake(1000);
        let a = c.now();
        let b = c.now();
        assert_eq!((b.wall_ms(), b.logical()), (1000, 1));
        t.store(900, Ordering::SeqCst); // clock jumps back
        let d = c.now();
        assert!(a < b && b < d);
        assert_eq!((d.wall_ms(), d.logical()), (1000, 2));
    }

    #[test]
    fn logical_overflow_rolls_ms_forward() {
        let (_t, c) = fake(1000);
        c.observe(Version::from_parts(1000, u16::MAX, 3));
        let v = c.now();
        assert_eq!((v.wall_ms(), v.logical()), (1001, 0));
        let w = c.now();
        assert_eq!((w.wall_ms(), w.logical()), (1001, 1));
    }

    #[test]
    fn observe_advances_past_remote_versions() {
        let (_t, c) = fake(1000);
        let remote = Version::from_parts(5000, 4, 2);
        c.observe(remote);
        let v = c.now();
        assert!(v > remote);
        assert_eq!((v.wall_ms(), v.logical()), (5000, 5));
        // observing an older version changes nothing
        c.observe(Version::from_parts(10, 0, 1));
        assert!(c.now() > v);
    }

    #[test]
    fn system_clock_is_sane() {
        let c = Hlc::new(1);
        let v = c.now();
        assert!(v.wall_ms() > 1_600_000_000_000, "{v}");
        assert!(c.now() > v);
    }

    #[test]
    fn strictly_monotonic_under_concurrency() {
        let (t, c) = fake(1000);
        let c = Arc::new(c);
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let c = c.clone();
                let t = t.clone();
                std::thread::spawn(move || {
                    let mut prev = Version::ZERO;
                    let mut all = Vec::with_capacity(20_000);
                    for j in 0..20_000u64 {
                        if i == 0 && j % 1000 == 0 {
                            // wobble the clock forwards and backwards
                            t.store(1000 + (j / 1000) * 3 % 7, Ordering::SeqCst);
                        }
                        let v = c.now();
                        assert!(v > prev);
                        prev = v;
                        all.push(v.hlc);
                    }
                    all
                })
            })
            .collect();
        let mut all: Vec<u64> = threads.into_iter().flat_map(|h| h.join().unwrap()).collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "duplicate versions issued");
    }
}
