//! The background indexer: one OS thread that moves freshly written points into each shard's HNSW graph.
//! The graph build fans out on the indexer's own rayon pool, whose threads run at a lower CPU priority
//! (nice +10): writes (Raft log, replication, apply) and searches keep the cores they need, and index
//! building takes what is left. Until a point is indexed it is found by an exact scan, so nothing waits.
//! It also builds new payload indexes, in steps (filters are evaluated per point until one is built).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle, Thread};
use std::time::Duration;

use crate::shard_app::ShardApp;
use parking_lot::Mutex;

/// Points indexed per step; small enough that a waiting writer is not held long.
const STEP: usize = 2048;
/// Slots covered per payload-index build step (each step holds the store's write lock; ~1 ms).
const PAYLOAD_STEP: usize = 16_384;

/// Handle to the indexer thread.
pub struct Indexer {
    /// Shards to index; the engine registers and unregisters them (the store inside may be swapped).
    stores: Arc<Mutex<Vec<Arc<ShardApp>>>>,
    /// Set to stop the thread.
    stop: Arc<AtomicBool>,
    /// The thread, for `unpark` and `join`.
    thread: Mutex<Option<JoinHandle<()>>>,
    /// For waking the thread after a write.
    waker: Thread,
}

impl std::fmt::Debug for Indexer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Indexer").finish_non_exhaustive()
    }
}

impl Indexer {
    /// Starts the thread.
    pub fn start() -> Self {
        let stores: Arc<Mutex<Vec<Arc<ShardApp>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, stop2) = (stores.clone(), stop.clone());
        let threads = thread::available_parallelism().map_or(2, |n| n.get());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("shoal-index-{i}"))
            .start_handler(|_| lower_priority())
            .build()
            .expect("build the indexer's thread pool");
        let handle = thread::Builder::new()
            .name("shoal-indexer".into())
            .spawn(move || {
                lower_priority();
                while !stop2.load(Ordering::Acquire) {
                    let current: Vec<Arc<ShardApp>> = s2.lock().clone();
                    let mut did = 0;
                    for app in &current {
                        did += pool.install(|| app.store().index_step(STEP));
                        if !app.build_payload_indexes(PAYLOAD_STEP) {
                            did += 1;
                        }
                    }
                    if did == 0 {
                        thread::park_timeout(Duration::from_millis(50));
                    }
                }
            })
            .expect("spawn indexer thread");
        let waker = handle.thread().clone();
        Indexer { stores, stop, thread: Mutex::new(Some(handle)), waker }
    }

    /// A cheap closure that wakes the indexer (called after every apply).
    pub fn waker(&self) -> impl Fn() + Send + Sync + 'static {
        let t = self.waker.clone();
        move || t.unpark()
    }

    /// Replaces the set of shards to index.
    pub fn set_shards(&self, stores: Vec<Arc<ShardApp>>) {
        *self.stores.lock() = stores;
        self.waker.unpark();
    }

    /// Stops and joins the thread.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.waker.unpark();
        if let Some(h) = self.thread.lock().take() {
            let _ = h.join();
        }
    }
}

/// Lowers the calling thread's CPU priority (nice +10) on Linux; elsewhere a no-op.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority have no memory-safety preconditions; on Linux PRIO_PROCESS with a
    // thread id changes only that thread's nice value. A failure leaves the priority unchanged.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.stop();
    }
}
