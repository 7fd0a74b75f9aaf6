//! Cooperative cancellation of shard work: a shared flag plus an optional deadline, polled between blocks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::{Error, Result};

/// A cancellation token. Clones share the flag, so cancelling any clone cancels them all.
///
/// Work polls [`CancelToken::is_cancelled`] between blocks (a relaxed atomic load, plus a clock read when
/// a deadline is set) and stops with [`Error::Cancelled`] once it fires. `Default` is the same as
/// [`CancelToken::new`]: cancellable, no deadline.
#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    /// The shared cancelled flag: `false` until [`CancelToken::cancel`], then `true` forever. `None` only
    /// for [`CancelToken::never`], which cannot be cancelled.
    flag: Option<Arc<AtomicBool>>,
    /// When set, the token also counts as cancelled from this instant on. Fixed at construction.
    deadline: Option<Instant>,
}

impl CancelToken {
    /// A token that fires only when [`CancelToken::cancel`] is called on it or a clone.
    pub fn new() -> Self {
        CancelToken { flag: Some(Arc::new(AtomicBool::new(false))), deadline: None }
    }

    /// A token that fires when cancelled or once `deadline` has passed, whichever comes first.
    pub fn with_deadline(deadline: Instant) -> Self {
        CancelToken { deadline: Some(deadline), ..CancelToken::new() }
    }

    /// A token that never fires (no allocation; [`CancelToken::cancel`] on it does nothing).
    pub fn never() -> Self {
        CancelToken { flag: None, deadline: None }
    }

    /// Cancels this token and every clone of it. Idempotent.
    pub fn cancel(&self) {
        if let Some(f) = &self.flag {
            f.store(true, Ordering::Relaxed);
        }
    }

    /// The deadline, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// True once cancelled or past the deadline; stays true afterwards. Cheap: one relaxed load, plus
    /// `Instant::now()` only when a deadline is set — call it per block of work, not per item.
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        self.flag.as_ref().is_some_and(|f| f.load(Ordering::Relaxed))
            || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// `Err(Error::Cancelled)` when [`CancelToken::is_cancelled`], for `?` between blocks.
    #[inline]
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() { Err(Error::Cancelled) } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn cancel_reaches_every_clone() {
        let t = CancelToken::new();
        let c = t.clone();
        assert!(!t.is_cancelled() && !c.is_cancelled());
        assert!(t.check().is_ok());
        c.cancel();
        assert!(t.is_cancelled() && c.is_cancelled());
        assert!(matches!(t.check(), Err(Error::Cancelled)));
        c.cancel();
        assert!(t.is_cancelled());
        assert!(!CancelToken::default().is_cancelled());
    }

    #[test]
    fn deadline_fires_by_itself() {
        let past = CancelToken::with_deadline(Instant::now());
        assert!(past.is_cancelled());
        let later = Instant::now() + Duration::from_secs(3600);
        let t = CancelToken::with_deadline(later);
        assert_eq!(t.deadline(), Some(later));
        assert!(!t.is_cancelled());
        t.cancel();
        assert!(t.is_cancelled());
        let soon = CancelToken::with_deadline(Instant::now() + Duration::from_millis(5));
        std::thread::sleep(Duration::from_millis(20));
        assert!(soon.is_cancelled());
    }

    #[test]
    fn never_never_fires() {
        let n = CancelToken::never();
        n.cancel();
        assert!(!n.is_cancelled() && !n.clone().is_cancelled());
        assert_eq!(n.deadline(), None);
    }
}
