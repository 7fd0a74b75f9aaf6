//! On-disk Raft log: append-only segment files with CRC32C-framed records, group-committed
//! fsyncs, and crash recovery that repairs a torn tail.
//!
//! # Layout of a log directory
//!
//! ```text
//! DIR/LOCK                      held (flock) while a LogStore is open on DIR
//! DIR/00000000000000000001.seg  segment files, named by a sequence number that only grows
//! DIR/00000000000000000002.seg  (the last one is the active segment, the only one appended to)
//! DIR/vote                      last saved vote        } small state files, replaced atomically:
//! DIR/committed                 last saved committed   } write *.tmp, fsync, rename, fsync DIR
//! DIR/purged                    last purged log id     }
//! ```
//!
//! # Segment file
//!
//! ```text
//! offset 0                  16
//! +--------+-------+-------++--------------+--------------+-----
//! | magic  |version| crc32c|| record       | record       | ...
//! |"SHOALLOG" u32  | of 0..12|              |              |
//! +--------+-------+-------++--------------+--------------+-----
//!
//! record:
//! +----------+-----------+------------------------------------------------------------+
//! | len u32  | crc32c u32| body (len bytes; crc32c covers exactly these bytes)         |
//! +----------+-----------+------+----------+----------+-----------+-------------------+
//!                        | kind | term u64 | node u64 | index u64 | payload           |
//!                        | u8   |    (leader id of the log id)    |                   |
//!                        +------+----------+----------+-----------+-------------------+
//! kind 0 = blank (no payload), 1 = normal (payload = the command bytes, verbatim),
//! 2 = membership (payload = crate::codec membership encoding). Integers are little-endian.
//! ```
//!
//! # Durability
//!
//! [`RaftLogStorage::append`] writes the records (one `pwrite` per batch of small records, the
//! payload of a large one written in place without copying) and returns: the entries are readable
//! at once. A background I/O thread then fsyncs and only then calls the `IOFlushed` callbacks:
//! every append queued while an fsync runs shares the next one (group commit). Votes and the
//! purge point are written durably before their calls return; `committed` is persisted by the I/O
//! thread, coalesced (it is only a hint for recovery: a stale value is safe).
//!
//! # Recovery
//!
//! Opening scans every segment and checks every record. In the last segment a short or
//! corrupt record ends the log: the tail from there is a torn write, truncated with a
//! `tracing::warn!`, unless it held entries this node knew to be committed (the saved `committed`
//! id is past the records before the damage): then it is corruption. The same damage in an older
//! segment, a corrupt record followed by a valid one, a bad header or state file, or missing
//! segments, is an [`Error::Corrupt`] naming the file and offset: never a panic, never silent loss,
//! and nothing is changed on disk (the files stay as found, for inspection or repair).
//!
//! # Files of this module
//!
//! ```text
//! mod.rs        LogStore, LogReader, the shared state (Shared, Health) and open/close
//! inner.rs      Inner: the in-memory index of entries and segments; append, read plans
//! segment.rs    Segment files: naming, header, creation; BatchWriter
//! record.rs     reading, checking and decoding records
//! recovery.rs   the scan on open that rebuilds the index and repairs a torn tail
//! truncate.rs   truncate_after and purge of the index and segment files
//! io_thread.rs  the I/O thread: group-committed fsyncs, the `committed` file
//! reader.rs     openraft's RaftLogReader: bounded reads, chunked streams
//! storage.rs    openraft's RaftLogStorage: vote, commit point, append, truncate, purge
//! salvage.rs    salvage of a damaged log directory
//! ```

mod inner;
mod io_thread;
mod reader;
mod record;
mod recovery;
mod salvage;
mod segment;
mod storage;
mod truncate;

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use parking_lot::RwLock;

use crate::codec::Dec;
use crate::codec::read_state_file;
use crate::error::Error;
use crate::error::Result;
use crate::types::LogId;
use crate::types::Vote;

use inner::Inner;
use io_thread::IoMsg;
use io_thread::io_loop;
pub use salvage::SalvageReport;
pub use salvage::salvage;

/// Magic bytes at the start of every segment file.
const SEGMENT_MAGIC: &[u8; 8] = b"SHOALLOG";
/// Version of the segment and record format; bumped on any incompatible change.
pub const LOG_FORMAT_VERSION: u32 = 1;
/// Size of the segment file header: magic, version, crc32c of both.
const SEGMENT_HEADER_LEN: u64 = 16;
/// Size of the record frame: `len u32 | crc32c u32`.
const FRAME_LEN: usize = 8;
/// Size of the fixed part of a record body: kind, term, node, index.
const BODY_HEAD_LEN: usize = 25;
/// Default size at which the active segment is sealed and a new one started.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

const KIND_BLANK: u8 = 0;
const KIND_NORMAL: u8 = 1;
const KIND_MEMBERSHIP: u8 = 2;

/// Small state file kinds (see [`crate::codec::write_state_file`]).
const STATE_VOTE: u8 = 1;
const STATE_COMMITTED: u8 = 2;
const STATE_PURGED: u8 = 3;

/// Payloads at least this large are written and read in place, never copied into a batch buffer.
const LARGE_PAYLOAD: usize = 256 << 10;
/// Batch buffer size at which buffered small records are written out.
const WRITE_BUFFER: usize = 1 << 20;
/// Upper bound of bytes returned by one `limited_get_log_entries` / one stream chunk.
const READ_CHUNK_BYTES: u64 = 16 << 20;
/// Upper bound of entries in one stream chunk.
const READ_CHUNK_ENTRIES: usize = 256;
/// Minimum interval between two writes of the `committed` file.
const COMMITTED_INTERVAL: Duration = Duration::from_millis(20);

/// Options of a [`LogStore`].
#[derive(Debug, Clone)]
pub struct LogStoreOptions {
    /// Size in bytes at which the active segment is sealed and a new one started (> 0).
    pub segment_bytes: u64,
}

impl Default for LogStoreOptions {
    fn default() -> Self {
        LogStoreOptions { segment_bytes: DEFAULT_SEGMENT_BYTES }
    }
}

/// The on-disk Raft log of one group; implements openraft's [`RaftLogStorage`].
///
/// There is one `LogStore` per directory (it holds the directory's lock) and openraft owns it;
/// readers are [`LogReader`]s sharing its state.
pub struct LogStore {
    /// State shared with the readers and the I/O thread.
    shared: Arc<Shared>,
}

/// A reader of a [`LogStore`], handed to openraft's replication and apply tasks. It sees every
/// entry appended before a read starts.
#[derive(Clone)]
pub struct LogReader {
    /// State shared with the store.
    shared: Arc<Shared>,
}

struct Shared {
    /// The log directory.
    dir: PathBuf,
    /// Index, segments and small state; writers hold it exclusively only to update memory and
    /// to write records, readers only to plan their reads (file reads happen outside it).
    inner: RwLock<Inner>,
    /// Channel to the I/O thread; `None` once the store is closed.
    io_tx: Mutex<Option<mpsc::Sender<IoMsg>>>,
    /// The I/O thread, joined on close/drop so no write outlives the store.
    io_thread: Mutex<Option<JoinHandle<()>>>,
    /// Set once an I/O error left the files in an unknown state: every later operation fails.
    health: Arc<Health>,
    /// Held open (and locked) until the store is closed: one store per directory.
    lock: Mutex<Option<File>>,
}

/// Sticky failure state shared with the I/O thread.
#[derive(Default)]
struct Health {
    /// The first fatal I/O error, if any.
    failed: Mutex<Option<String>>,
}

impl Health {
    fn check(&self) -> io::Result<()> {
        match &*self.failed.lock() {
            None => Ok(()),
            Some(msg) => Err(io::Error::other(format!("log store failed earlier: {msg}"))),
        }
    }
    fn fail(&self, msg: String) {
        let mut f = self.failed.lock();
        if f.is_none() {
            tracing::error!("log store failed: {msg}");
            *f = Some(msg);
        }
    }
}
impl LogStore {
    /// Opens (creating if needed) the log in `dir` with default options.
    pub fn open(dir: &Path) -> Result<LogStore> {
        LogStore::open_with(dir, LogStoreOptions::default())
    }

    /// Opens (creating if needed) the log in `dir`, recovering from a crash: a torn tail of the
    /// last segment is truncated (with a warning); other damage is an [`Error::Corrupt`].
    pub fn open_with(dir: &Path, opts: LogStoreOptions) -> Result<LogStore> {
        if opts.segment_bytes == 0 {
            return Err(Error::InvalidArgument("segment_bytes must be > 0".into()));
        }
        std::fs::create_dir_all(dir)?;
        let lock = File::options().read(true).write(true).create(true).truncate(false).open(dir.join("LOCK"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(Error::Locked(dir.to_path_buf())),
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }

        let vote = match read_state_file(&dir.join("vote"), STATE_VOTE)? {
            None => None,
            Some(b) => Some(Dec::new(&b).vote().map_err(|r| Error::corrupt(dir.join("vote"), r))?),
        };
        let last_purged = match read_state_file(&dir.join("purged"), STATE_PURGED)? {
            None => None,
            Some(b) => Dec::new(&b).opt_log_id().map_err(|r| Error::corrupt(dir.join("purged"), r))?,
        };
        // `committed` is a recovery hint: a damaged file is reported and ignored.
        let committed = match read_state_file(&dir.join("committed"), STATE_COMMITTED) {
            Ok(None) => None,
            Ok(Some(b)) => match Dec::new(&b).opt_log_id() {
                Ok(c) => c,
                Err(r) => {
                    tracing::warn!("ignoring damaged committed file in {}: {r}", dir.display());
                    None
                }
            },
            Err(e) => {
                tracing::warn!("ignoring unreadable committed file in {}: {e}", dir.display());
                None
            }
        };

        let mut inner = Inner {
            dir: dir.to_path_buf(),
            segments: BTreeMap::new(),
            first_index: 0,
            locs: VecDeque::new(),
            last_purged,
            vote,
            committed,
            segment_bytes: opts.segment_bytes,
        };
        inner.recover()?;

        let health = Arc::new(Health::default());
        let (tx, rx) = mpsc::channel();
        let thread = {
            let dir = dir.to_path_buf();
            let health = health.clone();
            std::thread::Builder::new().name("shoal-log-io".into()).spawn(move || io_loop(rx, dir, health))?
        };
        Ok(LogStore {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                inner: RwLock::new(inner),
                io_tx: Mutex::new(Some(tx)),
                io_thread: Mutex::new(Some(thread)),
                health,
                lock: Mutex::new(Some(lock)),
            }),
        })
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// A reader sharing this store's state.
    pub fn reader(&self) -> LogReader {
        LogReader { shared: self.shared.clone() }
    }

    /// Waits for pending fsyncs and the `committed` file, then stops the I/O thread. Later
    /// operations on this store or its readers fail. Dropping the last handle does the same.
    pub fn close(&self) {
        self.shared.close();
    }

    /// What recovery found: (last purged log id, saved vote, last log index), for the group's own
    /// consistency checks (a purged log needs a snapshot; a snapshot needs a log).
    pub fn recovered(&self) -> (Option<LogId>, Option<Vote>, Option<u64>) {
        let g = self.shared.inner.read();
        (g.last_purged, g.vote, g.last_index())
    }

    /// Number of segment files (for tests and metrics).
    pub fn segment_count(&self) -> usize {
        self.shared.inner.read().segments.len()
    }
}

impl Shared {
    fn send(&self, msg: IoMsg) -> io::Result<()> {
        let tx = self.io_tx.lock();
        match &*tx {
            Some(tx) => tx.send(msg).map_err(|_| io::Error::other("log store I/O thread is gone")),
            None => Err(io::Error::other("log store is closed")),
        }
    }

    fn close(&self) {
        if let Some(tx) = self.io_tx.lock().take() {
            tx.send(IoMsg::Stop).ok();
        }
        if let Some(t) = self.io_thread.lock().take()
            && t.join().is_err()
        {
            tracing::error!("log store I/O thread panicked");
        }
        // Dropping the file releases the directory lock.
        self.lock.lock().take();
    }

    fn check(&self) -> io::Result<()> {
        self.health.check()?;
        if self.io_tx.lock().is_none() {
            return Err(io::Error::other("log store is closed"));
        }
        Ok(())
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.close();
    }
}
