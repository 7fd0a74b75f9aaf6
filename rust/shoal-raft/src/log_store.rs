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

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::fmt::Debug;
use std::fs::File;
use std::io;
use std::io::BufReader;
use std::io::Read;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::ops::RangeInclusive;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;
use std::time::Instant;

use futures::Stream;
use futures::StreamExt;
use openraft::LogState;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::entry::RaftEntry;
use openraft::errors::LeaderChanged;
use openraft::storage::IOFlushed;
use openraft::storage::LeaderBoundedStreamError;
use openraft::storage::LeaderBoundedStreamResult;
use openraft::storage::RaftLogStorage;
use parking_lot::Mutex;
use parking_lot::RwLock;

use crate::codec::Dec;
use crate::codec::Enc;
use crate::codec::read_state_file;
use crate::codec::sync_dir;
use crate::codec::write_state_file;
use crate::error::Error;
use crate::error::Result;
use crate::types::Command;
use crate::types::Entry;
use crate::types::EntryPayload;
use crate::types::LeaderId;
use crate::types::LogId;
use crate::types::TypeConfig;
use crate::types::Vote;

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

enum IoMsg {
    /// fsync `file` (holding the appended records), then report to `callback`.
    Flush {
        /// The segment the append ended in (earlier segments were fsynced when sealed).
        file: Arc<File>,
        /// Called once `file` is fsynced (or with the error).
        callback: IOFlushed<TypeConfig>,
    },
    /// Persist this committed log id (coalesced with later ones).
    Committed(Option<LogId>),
    /// Finish pending work and exit.
    Stop,
}

struct Inner {
    /// The log directory (for error messages and new segments).
    dir: PathBuf,
    /// Segments by sequence number; never empty; the last one is the active segment.
    segments: BTreeMap<u64, Segment>,
    /// Log index of `locs[0]`; meaningless while `locs` is empty.
    first_index: u64,
    /// Where every present entry lives, in index order without holes; entries at or below
    /// `last_purged` are never in it.
    locs: VecDeque<Loc>,
    /// Last purged log id, as persisted in the `purged` file.
    last_purged: Option<LogId>,
    /// Last saved vote, as persisted in the `vote` file.
    vote: Option<Vote>,
    /// Last saved committed log id (persisted lazily by the I/O thread).
    committed: Option<LogId>,
    /// Segment roll size.
    segment_bytes: u64,
}

struct Segment {
    /// Path of the segment file.
    path: PathBuf,
    /// The open file (read + write); shared with in-flight reads and fsyncs.
    file: Arc<File>,
    /// Length of the valid prefix (header + whole records); the append position when active.
    len: u64,
}

/// Location and log id of one entry.
#[derive(Clone, Copy, Debug)]
struct Loc {
    /// Sequence number of the segment holding the record.
    seg: u64,
    /// Byte offset of the record frame in that segment.
    offset: u64,
    /// Length of the record body (after the 8-byte frame).
    body_len: u32,
    /// Term of the entry's leader id.
    term: u64,
    /// Node of the entry's leader id.
    node: u64,
}

impl Loc {
    fn log_id(&self, index: u64) -> LogId {
        LogId::new(LeaderId { term: self.term, node_id: self.node }, index)
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

/// The I/O thread: fsyncs for appends (group commit) and lazy `committed` persistence.
fn io_loop(rx: mpsc::Receiver<IoMsg>, dir: PathBuf, health: Arc<Health>) {
    let mut pending_committed: Option<Option<LogId>> = None;
    let mut last_committed_write: Option<Instant> = None;
    let mut stop = false;
    while !stop {
        let first = if pending_committed.is_some() {
            let wait = last_committed_write.map(|t| COMMITTED_INTERVAL.saturating_sub(t.elapsed())).unwrap_or_default();
            match rx.recv_timeout(wait) {
                Ok(m) => Some(m),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    stop = true;
                    None
                }
            }
        } else {
            match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => {
                    stop = true;
                    None
                }
            }
        };
        let mut msgs: Vec<IoMsg> = first.into_iter().collect();
        msgs.extend(rx.try_iter());

        let mut files: Vec<Arc<File>> = Vec::new();
        let mut callbacks = Vec::new();
        for m in msgs {
            match m {
                IoMsg::Flush { file, callback } => {
                    if !files.iter().any(|f| Arc::ptr_eq(f, &file)) {
                        files.push(file);
                    }
                    callbacks.push(callback);
                }
                IoMsg::Committed(c) => pending_committed = Some(c),
                IoMsg::Stop => stop = true,
            }
        }
        if !callbacks.is_empty() {
            let started = std::time::Instant::now();
            let res = health.check().and_then(|()| files.iter().try_for_each(|f| f.sync_data()));
            crate::io_stats::IO_STATS.fsync(started.elapsed());
            if let Err(e) = &res {
                health.fail(format!("fsync of {}: {e}", dir.display()));
            }
            for cb in callbacks {
                let r = match &res {
                    Ok(()) => Ok(()),
                    Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                };
                cb.io_completed(r);
            }
        }
        let due = stop || last_committed_write.is_none_or(|t| t.elapsed() >= COMMITTED_INTERVAL);
        if due && let Some(c) = pending_committed.take() {
            let mut body = Vec::new();
            Enc(&mut body).opt_log_id(c.as_ref());
            if let Err(e) = write_state_file(&dir, "committed", STATE_COMMITTED, &body) {
                // Not fatal: `committed` only speeds up recovery; the log and the vote are intact.
                tracing::warn!("failed to persist committed log id in {}: {e}", dir.display());
            }
            last_committed_write = Some(Instant::now());
        }
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.seg"))
}

fn segment_header() -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&LOG_FORMAT_VERSION.to_le_bytes());
    let crc = crc32c::crc32c(&h[..12]);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

impl Segment {
    /// Creates segment `seq` with its header, durably (file and directory entry).
    fn create(dir: &Path, seq: u64) -> io::Result<Segment> {
        let path = segment_path(dir, seq);
        let file = File::options().read(true).write(true).create_new(true).open(&path)?;
        file.write_all_at(&segment_header(), 0)?;
        file.sync_all()?;
        sync_dir(dir)?;
        Ok(Segment { path, file: Arc::new(file), len: SEGMENT_HEADER_LEN })
    }
}

/// Why a record could not be read during recovery.
enum BadRecord {
    /// Fewer bytes than a frame, or a length pointing past the end of the file.
    Short(String),
    /// A complete record whose checksum or body is wrong.
    Damaged(String),
}

/// One valid record found by the recovery scan.
struct Scanned {
    /// Byte offset of the record frame in its segment.
    offset: u64,
    /// Length of the record body (checksum verified).
    body_len: u32,
    /// Log id stored in the body.
    log_id: LogId,
}

impl Inner {
    fn active_seq(&self) -> u64 {
        *self.segments.keys().next_back().expect("a log store always has an active segment")
    }

    fn last_index(&self) -> Option<u64> {
        if self.locs.is_empty() { None } else { Some(self.first_index + self.locs.len() as u64 - 1) }
    }

    fn last_log_id(&self) -> Option<LogId> {
        match self.locs.back() {
            Some(l) => Some(l.log_id(self.first_index + self.locs.len() as u64 - 1)),
            None => self.last_purged,
        }
    }

    fn loc(&self, index: u64) -> Option<&Loc> {
        index.checked_sub(self.first_index).and_then(|i| self.locs.get(i as usize))
    }

    /// Scans all segments and rebuilds the index (see the module docs for the rules).
    fn recover(&mut self) -> Result<()> {
        let dir = self.dir.clone();
        let mut seqs = Vec::new();
        for ent in std::fs::read_dir(&dir)? {
            let ent = ent?;
            let name = ent.file_name();
            let name = name.to_string_lossy();
            if let Some(stem) = name.strip_suffix(".seg")
                && let Ok(seq) = stem.parse::<u64>()
            {
                seqs.push(seq);
            } else if name.ends_with(".tmp") {
                std::fs::remove_file(ent.path()).ok();
            }
        }
        seqs.sort_unstable();

        let purged_index = self.last_purged.map(|p| p.index);
        // The torn tail of the last segment, if any: (segment, path, valid length, file length).
        let mut torn: Option<(u64, PathBuf, u64, u64)> = None;
        let n = seqs.len();
        for (i, seq) in seqs.into_iter().enumerate() {
            let is_last = i + 1 == n;
            let path = segment_path(&dir, seq);
            let file = File::options().read(true).write(true).open(&path)?;
            let file_len = file.metadata()?.len();
            let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
            let header_ok = file_len >= SEGMENT_HEADER_LEN && {
                file.read_exact_at(&mut header, 0)?;
                header[..8] == *SEGMENT_MAGIC
                    && crc32c::crc32c(&header[..12])
                        == u32::from_le_bytes([header[12], header[13], header[14], header[15]])
            };
            if !header_ok {
                if is_last && file_len <= SEGMENT_HEADER_LEN {
                    // A crash while the segment was being created: it holds no record.
                    tracing::warn!("removing torn new log segment {} ({file_len} bytes)", path.display());
                    drop(file);
                    std::fs::remove_file(&path)?;
                    sync_dir(&dir)?;
                    continue;
                }
                return Err(Error::corrupt(&path, "bad segment header"));
            }
            let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
            if version != LOG_FORMAT_VERSION {
                return Err(Error::corrupt(&path, format!("unsupported log format version {version}")));
            }

            let (records, valid_len) = scan_segment(&file, &path, file_len, is_last)?;
            if valid_len < file_len {
                // Truncated only once the whole log checked out (below): damage must stay on disk as found.
                torn = Some((seq, path.clone(), valid_len, file_len));
            }
            for r in records {
                let idx = r.log_id.index;
                if purged_index.is_some_and(|p| idx <= p) {
                    continue;
                }
                if let Some(last) = self.last_index()
                    && idx != last + 1
                {
                    return Err(Error::corrupt(
                        &path,
                        format!("log index {idx} at offset {} does not follow index {last}", r.offset),
                    ));
                }
                if self.locs.is_empty() {
                    self.first_index = idx;
                }
                self.locs.push_back(Loc {
                    seg: seq,
                    offset: r.offset,
                    body_len: r.body_len,
                    term: r.log_id.leader_id.term,
                    node: r.log_id.leader_id.node_id,
                });
            }
            self.segments.insert(seq, Segment { path, file: Arc::new(file), len: valid_len });
        }
        if self.segments.is_empty() {
            let seg = Segment::create(&dir, 1)?;
            self.segments.insert(1, seg);
        }

        // Segments holding only purged entries may survive a crash during purge: drop them now.
        let first_needed = self.locs.front().map(|l| l.seg).unwrap_or_else(|| self.active_seq());
        let stale: Vec<u64> = self.segments.range(..first_needed).map(|(s, _)| *s).collect();
        for s in stale {
            if let Some(seg) = self.segments.remove(&s) {
                std::fs::remove_file(&seg.path)?;
            }
        }

        // `committed` is written only after the entries it covers were fsynced (the I/O thread fsyncs an
        // append before it persists a later committed id), so a log that ends before it lost entries this
        // node acknowledged: that is corruption, not a torn write, whatever the damage looks like.
        if let Some(c) = self.committed {
            let last = self.last_log_id();
            if last.is_none_or(|l| c.index > l.index) {
                let last_index = last.map_or(0, |l| l.index);
                return Err(match &torn {
                    Some((_, path, valid, file_len)) => Error::corrupt(
                        path,
                        format!(
                            "damaged record at offset {valid} ({} bytes to the end of the file) would drop \
                             committed entries {}..={}: the log ends at index {last_index}",
                            file_len - valid,
                            last_index + 1,
                            c.index
                        ),
                    ),
                    None => Error::corrupt(
                        &dir,
                        format!(
                            "the log ends at index {last_index} but index {} was committed: segments are missing",
                            c.index
                        ),
                    ),
                });
            } else if let Some(loc) = self.loc(c.index)
                && loc.log_id(c.index) != c
            {
                tracing::warn!("saved committed {c} does not match the log in {}; ignoring it", dir.display());
                self.committed = None;
            }
        }
        if let Some((seq, path, valid_len, file_len)) = torn {
            tracing::warn!(
                "log segment {}: truncating a torn tail at offset {valid_len} ({} bytes, never acknowledged)",
                path.display(),
                file_len - valid_len
            );
            let seg = self.segments.get(&seq).expect("the torn segment was recovered");
            seg.file.set_len(valid_len)?;
            seg.file.sync_all()?;
        }
        Ok(())
    }

    /// Appends `entries` to the active segment (rolling as needed); returns the file to fsync.
    fn append(&mut self, entries: impl Iterator<Item = Entry>) -> io::Result<Arc<File>> {
        // Check the whole batch before writing any of it: a rejected batch changes nothing.
        let entries: Vec<Entry> = entries.collect();
        let mut expect = self.last_index().map(|l| l + 1);
        for entry in &entries {
            let idx = entry.log_id.index;
            if let Some(want) = expect {
                if idx != want {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("append of index {idx} where {want} is expected would leave a hole"),
                    ));
                }
            } else if let Some(p) = self.last_purged
                && idx <= p.index
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("append of index {idx} at or below the purged index {}", p.index),
                ));
            }
            if let EntryPayload::Normal(c) = &entry.payload
                && c.0.len() > u32::MAX as usize - BODY_HEAD_LEN
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("log entry {idx} is larger than 4 GiB"),
                ));
            }
            expect = Some(idx + 1);
        }

        let mut seq = self.active_seq();
        let mut w = BatchWriter::new(&self.segments[&seq]);
        for entry in entries {
            let idx = entry.log_id.index;
            if w.pos >= self.segment_bytes && w.pos > SEGMENT_HEADER_LEN {
                w.finish()?;
                self.segments.get_mut(&seq).expect("active segment").len = w.pos;
                seq = self.roll()?;
                w = BatchWriter::new(&self.segments[&seq]);
            }

            let membership_buf;
            let (kind, payload): (u8, &[u8]) = match &entry.payload {
                EntryPayload::Blank => (KIND_BLANK, &[]),
                EntryPayload::Normal(c) => (KIND_NORMAL, &c.0),
                EntryPayload::Membership(m) => {
                    let mut b = Vec::new();
                    Enc(&mut b).membership(m);
                    membership_buf = b;
                    (KIND_MEMBERSHIP, &membership_buf)
                }
            };
            let body_len = u32::try_from(BODY_HEAD_LEN + payload.len())
                .map_err(|_| io::Error::other("log record larger than 4 GiB"))?;
            let mut head = [0u8; FRAME_LEN + BODY_HEAD_LEN];
            head[0..4].copy_from_slice(&body_len.to_le_bytes());
            head[8] = kind;
            head[9..17].copy_from_slice(&entry.log_id.leader_id.term.to_le_bytes());
            head[17..25].copy_from_slice(&entry.log_id.leader_id.node_id.to_le_bytes());
            head[25..33].copy_from_slice(&idx.to_le_bytes());
            let crc = crc32c::crc32c_append(crc32c::crc32c(&head[FRAME_LEN..]), payload);
            head[4..8].copy_from_slice(&crc.to_le_bytes());

            let offset = w.pos;
            w.put(&head)?;
            w.put(payload)?;

            if self.locs.is_empty() {
                self.first_index = idx;
            }
            self.locs.push_back(Loc {
                seg: seq,
                offset,
                body_len,
                term: entry.log_id.leader_id.term,
                node: entry.log_id.leader_id.node_id,
            });
        }
        w.finish()?;
        let seg = self.segments.get_mut(&seq).expect("active segment");
        seg.len = w.pos;
        Ok(seg.file.clone())
    }

    /// Seals the active segment (fsync) and starts the next one; returns its sequence number.
    fn roll(&mut self) -> io::Result<u64> {
        let seq = self.active_seq();
        self.segments[&seq].file.sync_data()?;
        let next = seq + 1;
        let seg = Segment::create(&self.dir, next)?;
        self.segments.insert(next, seg);
        Ok(next)
    }

    /// Removes every entry after `last` (all of them for `None`), from the end backward.
    fn truncate_after(&mut self, last: Option<LogId>) -> io::Result<()> {
        let keep = match last {
            None => 0,
            Some(l) if self.locs.is_empty() || l.index < self.first_index => 0,
            Some(l) => ((l.index - self.first_index + 1) as usize).min(self.locs.len()),
        };
        if keep == self.locs.len() {
            return Ok(());
        }
        let cut = self.locs[keep];
        let later: Vec<u64> = self.segments.range(cut.seg + 1..).map(|(s, _)| *s).rev().collect();
        for s in &later {
            let seg = self.segments.remove(s).expect("segment listed above");
            std::fs::remove_file(&seg.path)?;
        }
        let seg = self.segments.get_mut(&cut.seg).expect("segment of an indexed entry");
        seg.file.set_len(cut.offset)?;
        seg.file.sync_all()?;
        seg.len = cut.offset;
        if !later.is_empty() {
            sync_dir(&self.dir)?;
        }
        self.locs.truncate(keep);
        Ok(())
    }

    /// Drops entries up to `upto` from the index and the segments left without entries; returns the
    /// paths of those segments, for the caller to delete (readers still holding one keep a valid handle).
    /// The caller has already persisted `upto` in the `purged` file.
    fn purge(&mut self, upto: LogId) -> Vec<PathBuf> {
        self.last_purged = Some(upto);
        while !self.locs.is_empty() && self.first_index <= upto.index {
            self.locs.pop_front();
            self.first_index += 1;
        }
        let first_needed = self.locs.front().map(|l| l.seg).unwrap_or_else(|| self.active_seq());
        let stale: Vec<u64> = self.segments.range(..first_needed).map(|(s, _)| *s).collect();
        stale.iter().map(|s| self.segments.remove(s).expect("segment listed above").path).collect()
    }

    /// Plans a read of `[start, end)`: the present entries of that range, at most `max_bytes`
    /// of bodies (but at least one entry).
    fn plan(&self, start: u64, end: u64, max_bytes: u64, max_entries: usize) -> Vec<(Arc<File>, Loc, u64)> {
        let mut out = Vec::new();
        if self.locs.is_empty() {
            return out;
        }
        let start = start.max(self.first_index);
        let end = end.min(self.first_index + self.locs.len() as u64);
        let mut bytes = 0u64;
        for index in start..end {
            let loc = self.locs[(index - self.first_index) as usize];
            if !out.is_empty()
                && (bytes.saturating_add(u64::from(loc.body_len)) > max_bytes || out.len() >= max_entries)
            {
                break;
            }
            bytes += u64::from(loc.body_len);
            out.push((self.segments[&loc.seg].file.clone(), loc, index));
        }
        out
    }
}

/// Scans the records of one segment; returns them and the length of the valid prefix.
fn scan_segment(file: &File, path: &Path, file_len: u64, is_last: bool) -> Result<(Vec<Scanned>, u64)> {
    let mut rd = BufReader::with_capacity(1 << 20, file);
    // Skip the header (already checked).
    let mut skip = [0u8; SEGMENT_HEADER_LEN as usize];
    rd.read_exact(&mut skip)?;
    let mut pos = SEGMENT_HEADER_LEN;
    let mut out = Vec::new();
    let mut body = Vec::new();
    while pos < file_len {
        match read_record(&mut rd, pos, file_len, &mut body) {
            Ok(log_id) => {
                let body_len = body.len() as u32;
                out.push(Scanned { offset: pos, body_len, log_id });
                pos += (FRAME_LEN + body.len()) as u64;
            }
            Err(bad) => {
                let (what, complete_len) = match &bad {
                    BadRecord::Short(w) => (w.clone(), None),
                    BadRecord::Damaged(w) => (w.clone(), Some(body.len() as u64)),
                };
                if !is_last {
                    return Err(Error::corrupt(path, format!("{what} at offset {pos} of a sealed segment")));
                }
                // A damaged record followed by a valid one is not a torn write but corruption
                // in the middle of the log: refuse to drop acknowledged entries after it.
                if let Some(len) = complete_len {
                    let next = pos + FRAME_LEN as u64 + len;
                    if next < file_len && valid_record_at(file, next, file_len) {
                        return Err(Error::corrupt(
                            path,
                            format!("{what} at offset {pos}, followed by a valid record at offset {next}"),
                        ));
                    }
                }
                tracing::warn!("log segment {}: {what} at offset {pos} (a torn tail?)", path.display());
                return Ok((out, pos));
            }
        }
    }
    Ok((out, pos))
}

/// Reads the record at `pos` into `body`; returns its log id.
fn read_record(rd: &mut impl Read, pos: u64, file_len: u64, body: &mut Vec<u8>) -> Result<LogId, BadRecord> {
    body.clear();
    if file_len - pos < FRAME_LEN as u64 {
        return Err(BadRecord::Short(format!("short record frame ({} bytes)", file_len - pos)));
    }
    let mut frame = [0u8; FRAME_LEN];
    rd.read_exact(&mut frame).map_err(|e| BadRecord::Short(format!("read error {e}")))?;
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as u64;
    let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    if len > file_len - pos - FRAME_LEN as u64 {
        return Err(BadRecord::Short(format!("record length {len} past the end of the file")));
    }
    body.resize(len as usize, 0);
    rd.read_exact(body).map_err(|e| BadRecord::Short(format!("read error {e}")))?;
    if crc32c::crc32c(body) != crc {
        return Err(BadRecord::Damaged("record checksum mismatch".into()));
    }
    let (log_id, _) = decode_head(body).map_err(BadRecord::Damaged)?;
    Ok(log_id)
}

/// Whether a complete record with a valid checksum and body starts at `pos`.
fn valid_record_at(file: &File, pos: u64, file_len: u64) -> bool {
    let mut frame = [0u8; FRAME_LEN];
    if file_len - pos < FRAME_LEN as u64 || file.read_exact_at(&mut frame, pos).is_err() {
        return false;
    }
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as u64;
    let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    if len < BODY_HEAD_LEN as u64 || len > file_len - pos - FRAME_LEN as u64 {
        return false;
    }
    let mut body = vec![0u8; len as usize];
    file.read_exact_at(&mut body, pos + FRAME_LEN as u64).is_ok()
        && crc32c::crc32c(&body) == crc
        && decode_head(&body).is_ok()
}

/// Decodes the fixed part of a record body: its log id and kind.
fn decode_head(body: &[u8]) -> Result<(LogId, u8), String> {
    if body.len() < BODY_HEAD_LEN {
        return Err(format!("record body of {} bytes is too short", body.len()));
    }
    let mut d = Dec::new(&body[..BODY_HEAD_LEN]);
    let kind = d.u8("kind")?;
    if kind > KIND_MEMBERSHIP {
        return Err(format!("unknown record kind {kind}"));
    }
    let log_id = d.log_id()?;
    if kind == KIND_BLANK && body.len() != BODY_HEAD_LEN {
        return Err("blank record with a payload".into());
    }
    Ok((log_id, kind))
}

/// Builds an entry from a checked record head and its payload (moved, not copied).
fn decode_entry(head: &[u8], payload: Vec<u8>) -> Result<Entry, String> {
    let (log_id, kind) = decode_head(head)?;
    let payload = match kind {
        KIND_BLANK => EntryPayload::Blank,
        KIND_NORMAL => EntryPayload::Normal(Command(payload)),
        _ => EntryPayload::Membership(Dec::new(&payload).membership()?),
    };
    Ok(Entry { log_id, payload })
}

/// Reads and checks the entry at `loc`, which must hold log index `index`.
fn read_entry(file: &File, loc: &Loc, index: u64, dir: &Path) -> io::Result<Entry> {
    let bad = |what: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("log {}: segment {} offset {}: {what}", dir.display(), loc.seg, loc.offset),
        )
    };
    let body_len = loc.body_len as usize;
    let mut head = [0u8; FRAME_LEN + BODY_HEAD_LEN];
    let payload = if body_len <= 64 << 10 {
        let mut buf = vec![0u8; FRAME_LEN + body_len];
        file.read_exact_at(&mut buf, loc.offset)?;
        head.copy_from_slice(&buf[..FRAME_LEN + BODY_HEAD_LEN]);
        buf[FRAME_LEN + BODY_HEAD_LEN..].to_vec()
    } else {
        file.read_exact_at(&mut head, loc.offset)?;
        let mut payload = vec![0u8; body_len - BODY_HEAD_LEN];
        file.read_exact_at(&mut payload, loc.offset + (FRAME_LEN + BODY_HEAD_LEN) as u64)?;
        payload
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len != loc.body_len {
        return Err(bad(format!("record length {len}, index says {}", loc.body_len)));
    }
    if crc32c::crc32c_append(crc32c::crc32c(&head[FRAME_LEN..]), &payload) != crc {
        return Err(bad("record checksum mismatch".into()));
    }
    let entry = decode_entry(&head[FRAME_LEN..], payload).map_err(bad)?;
    if entry.log_id != loc.log_id(index) {
        return Err(bad(format!(
            "record holds log id {}, expected {} (log changed during the read)",
            entry.log_id,
            loc.log_id(index)
        )));
    }
    Ok(entry)
}

/// Buffers small writes of one append batch; writes large payloads in place.
struct BatchWriter {
    /// The segment file.
    file: Arc<File>,
    /// Logical end of the written data, buffered bytes included.
    pos: u64,
    /// File offset where `buf` starts.
    buf_start: u64,
    /// Buffered bytes not yet written.
    buf: Vec<u8>,
}

impl BatchWriter {
    fn new(seg: &Segment) -> BatchWriter {
        BatchWriter { file: seg.file.clone(), pos: seg.len, buf_start: seg.len, buf: Vec::new() }
    }

    fn put(&mut self, data: &[u8]) -> io::Result<()> {
        if data.len() >= LARGE_PAYLOAD {
            self.flush_buf()?;
            self.file.write_all_at(data, self.pos)?;
            self.pos += data.len() as u64;
            self.buf_start = self.pos;
        } else {
            self.buf.extend_from_slice(data);
            self.pos += data.len() as u64;
            if self.buf.len() >= WRITE_BUFFER {
                self.flush_buf()?;
            }
        }
        Ok(())
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all_at(&self.buf, self.buf_start)?;
            self.buf_start += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.flush_buf()
    }
}

fn range_to_half_open(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => e.saturating_add(1),
        Bound::Excluded(e) => *e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl Shared {
    /// Reads the present entries of `[start, end)`, bounded by the given limits.
    fn read(&self, start: u64, end: u64, max_bytes: u64, max_entries: usize) -> io::Result<Vec<Entry>> {
        self.check()?;
        let plan = self.inner.read().plan(start, end, max_bytes, max_entries);
        plan.iter().map(|(file, loc, index)| read_entry(file, loc, *index, &self.dir)).collect()
    }

    /// Reads all present entries of `[start, end)`.
    fn read_all(&self, start: u64, end: u64) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        let mut next = start;
        while next < end {
            let chunk = self.read(next, end, u64::MAX, usize::MAX)?;
            match chunk.last() {
                None => break,
                Some(e) => next = e.index() + 1,
            }
            out.extend(chunk);
        }
        Ok(out)
    }

    fn vote(&self) -> Option<Vote> {
        self.inner.read().vote
    }
}

/// A stream of the entries of `[start, end)`, read from disk in bounded chunks.
fn chunked_stream(
    shared: Arc<Shared>,
    start: u64,
    end: u64,
    leader: Option<LeaderId>,
) -> impl Stream<Item = io::Result<Result<Entry, LeaderChanged<TypeConfig>>>> + Send + 'static {
    let chunks = futures::stream::unfold(Some(start), move |next| {
        let shared = shared.clone();
        async move {
            let next = next?;
            if next >= end {
                return None;
            }
            // With a leader: the vote must be that leader's committed vote before and after
            // the read, or the entries may have been truncated meanwhile.
            let leader_changed = |shared: &Shared| {
                let leader = leader?;
                let vote = shared.vote();
                match vote {
                    Some(v) if v.leader_id == leader && v.committed => None,
                    _ => Some(LeaderChanged::new(leader, vote)),
                }
            };
            if let Some(err) = leader_changed(&shared) {
                return Some((vec![Ok(Err(err))], None));
            }
            let res = shared.read(next, end, READ_CHUNK_BYTES, READ_CHUNK_ENTRIES);
            if let Some(err) = leader_changed(&shared) {
                return Some((vec![Ok(Err(err))], None));
            }
            match res {
                Ok(entries) if entries.is_empty() => None,
                Ok(entries) => {
                    let after = entries.last().map(|e| e.index() + 1);
                    Some((entries.into_iter().map(|e| Ok(Ok(e))).collect::<Vec<_>>(), after))
                }
                Err(e) => Some((vec![Err(e)], None)),
            }
        }
    });
    chunks.flat_map(futures::stream::iter)
}

impl LogReader {
    /// Closes the store this reader belongs to, like [`LogStore::close`].
    pub fn close(&self) {
        self.shared.close();
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let (start, end) = range_to_half_open(&range);
        self.shared.read_all(start, end)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        self.shared.check()?;
        Ok(self.shared.vote())
    }

    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> io::Result<Vec<Entry>> {
        self.shared.read(start, end, READ_CHUNK_BYTES, usize::MAX)
    }

    async fn entries_stream<RB>(&mut self, range: RB) -> impl Stream<Item = io::Result<Entry>> + OptionalSend
    where
        RB: RangeBounds<u64> + Clone + Debug + OptionalSend,
    {
        let (start, end) = range_to_half_open(&range);
        chunked_stream(self.shared.clone(), start, end, None).map(|r| match r {
            Ok(Ok(e)) => Ok(e),
            Ok(Err(changed)) => Err(io::Error::other(changed.to_string())),
            Err(e) => Err(e),
        })
    }

    async fn leader_bounded_stream<RB>(
        &mut self,
        leader: LeaderId,
        range: RB,
    ) -> impl Stream<Item = LeaderBoundedStreamResult<TypeConfig>> + OptionalSend
    where
        RB: RangeBounds<u64> + Clone + Debug + OptionalSend,
    {
        let (start, end) = range_to_half_open(&range);
        chunked_stream(self.shared.clone(), start, end, Some(leader)).map(|r| match r {
            Ok(Ok(e)) => Ok(e),
            Ok(Err(changed)) => Err(LeaderBoundedStreamError::LeaderChanged(changed)),
            Err(e) => Err(LeaderBoundedStreamError::IoError(e)),
        })
    }

    async fn get_key_log_ids(&mut self, range: RangeInclusive<LogId>) -> io::Result<Vec<LogId>> {
        // The last log id of each leader within `range`, from the in-memory index.
        let g = self.shared.inner.read();
        let (first, last) = (range.start().index, range.end().index);
        let mut out: Vec<LogId> = Vec::new();
        let mut prev: Option<LogId> = None;
        for index in first..=last {
            let Some(loc) = g.loc(index) else {
                return Err(io::Error::new(io::ErrorKind::NotFound, format!("log index {index} is not in the log")));
            };
            let id = loc.log_id(index);
            if let Some(p) = prev
                && p.leader_id != id.leader_id
            {
                out.push(p);
            }
            prev = Some(id);
        }
        out.extend(prev);
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        self.shared.check()?;
        let g = self.shared.inner.read();
        Ok(LogState { last_purged_log_id: g.last_purged, last_log_id: g.last_log_id() })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        self.shared.check()?;
        // Keep I/O ordered: the records appended before this vote are durable first.
        let active = {
            let g = self.shared.inner.read();
            g.segments[&g.active_seq()].file.clone()
        };
        let mut body = Vec::new();
        Enc(&mut body).vote(vote);
        let dir = self.shared.dir.clone();
        // fsyncs on the blocking pool: an async worker (often the node's only one) never waits for the disk.
        let res =
            off_async(move || active.sync_data().and_then(|()| write_state_file(&dir, "vote", STATE_VOTE, &body)))
                .await;
        if let Err(e) = &res {
            self.shared.health.fail(format!("saving vote: {e}"));
        }
        res?;
        self.shared.inner.write().vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        self.shared.check()?;
        self.shared.inner.write().committed = committed;
        self.shared.send(IoMsg::Committed(committed))
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        self.shared.check()?;
        Ok(self.shared.inner.read().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.shared.check()?;
        let res = self.shared.inner.write().append(entries.into_iter());
        match res {
            Ok(file) => self.shared.send(IoMsg::Flush { file, callback }),
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => Err(e),
            Err(e) => {
                self.shared.health.fail(format!("appending: {e}"));
                Err(e)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        self.shared.check()?;
        let shared = self.shared.clone();
        // On the blocking pool; the store's lock is held there (appends must not interleave), not on an async
        // worker.
        let res = off_async(move || shared.inner.write().truncate_after(last_log_id)).await;
        if let Err(e) = &res {
            self.shared.health.fail(format!("truncating: {e}"));
        }
        res
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        self.shared.check()?;
        if self.shared.inner.read().last_purged.is_some_and(|p| p >= log_id) {
            return Ok(());
        }
        let mut body = Vec::new();
        Enc(&mut body).opt_log_id(Some(&log_id));
        let shared = self.shared.clone();
        // The purge point is persisted, then the index updated under the lock (memory only), then the
        // segments left without entries deleted: the disk work runs on the blocking pool, without the lock.
        let res = off_async(move || {
            write_state_file(&shared.dir, "purged", STATE_PURGED, &body)?;
            let stale = shared.inner.write().purge(log_id);
            for path in &stale {
                std::fs::remove_file(path)?;
            }
            if !stale.is_empty() {
                sync_dir(&shared.dir)?;
            }
            Ok(())
        })
        .await;
        if let Err(e) = &res {
            self.shared.health.fail(format!("purging: {e}"));
        }
        res
    }
}

/// Runs blocking file work (fsyncs) on tokio's blocking pool.
async fn off_async<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(io::Error::other(format!("log store task failed: {e}"))),
    }
}

/// What [`salvage`] kept and dropped of a damaged log directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SalvageReport {
    /// Index of the last entry kept (the longest prefix of records that verify); `None` when none is.
    pub kept_last_index: Option<u64>,
    /// The first damage met: file, byte offset and what is wrong (`None`: the log verified whole).
    pub first_damage: Option<(PathBuf, u64, String)>,
    /// The highest index this node had saved as committed, if readable: entries above `kept_last_index`
    /// up to it were acknowledged and are lost.
    pub committed_index: Option<u64>,
    /// Bytes dropped from the damaged segment on, later segments included.
    pub dropped_bytes: u64,
    /// Segment files removed entirely (after the damaged one).
    pub removed_segments: Vec<PathBuf>,
    /// Whether an unreadable vote file was removed (the group elects anew).
    pub vote_reset: bool,
}

/// Salvages the log in `dir` in place (the caller backs it up first and holds no store on it): keeps the
/// longest prefix of consecutive records that verify, truncates the segment where the first damage is,
/// removes later segments, removes an unreadable vote file, and sets the saved commit point to the last
/// kept entry. Returns what was kept and lost. Never panics on any content.
pub fn salvage(dir: &Path) -> Result<SalvageReport> {
    let mut report = SalvageReport::default();
    let committed = read_state_file(&dir.join("committed"), STATE_COMMITTED)
        .ok()
        .flatten()
        .and_then(|b| Dec::new(&b).opt_log_id().ok().flatten());
    report.committed_index = committed.map(|c| c.index);
    if let Err(e) = read_state_file(&dir.join("vote"), STATE_VOTE)
        .and_then(|v| v.map(|b| Dec::new(&b).vote().map_err(|r| Error::corrupt(dir.join("vote"), r))).transpose())
    {
        tracing::warn!("salvage: removing the unreadable vote file: {e}");
        std::fs::remove_file(dir.join("vote"))?;
        report.vote_reset = true;
    }
    let purged = read_state_file(&dir.join("purged"), STATE_PURGED)?
        .map(|b| Dec::new(&b).opt_log_id().map_err(|r| Error::corrupt(dir.join("purged"), r)))
        .transpose()?
        .flatten();
    let mut seqs: Vec<u64> = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().strip_suffix(".seg").and_then(|s| s.parse().ok()))
        .collect();
    seqs.sort_unstable();
    let mut last: Option<LogId> = purged;
    let mut cut: Option<(usize, u64)> = None; // (position in seqs, valid length)
    'segments: for (i, &seq) in seqs.iter().enumerate() {
        let path = segment_path(dir, seq);
        let file = File::options().read(true).write(true).open(&path)?;
        let file_len = file.metadata()?.len();
        let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
        if file_len < SEGMENT_HEADER_LEN
            || file.read_exact_at(&mut header, 0).is_err()
            || header[..8] != *SEGMENT_MAGIC
            || crc32c::crc32c(&header[..12]) != u32::from_le_bytes([header[12], header[13], header[14], header[15]])
        {
            report.first_damage = Some((path, 0, "bad segment header".into()));
            cut = Some((i, 0));
            break;
        }
        let mut rd = BufReader::with_capacity(1 << 20, &file);
        let mut skip = [0u8; SEGMENT_HEADER_LEN as usize];
        rd.read_exact(&mut skip)?;
        let mut pos = SEGMENT_HEADER_LEN;
        let mut body = Vec::new();
        while pos < file_len {
            let why = match read_record(&mut rd, pos, file_len, &mut body) {
                Ok(id) if last.is_none_or(|l| id.index == l.index + 1) || last.is_some_and(|l| id.index <= l.index) => {
                    if last.is_none_or(|l| id.index > l.index) {
                        last = Some(id);
                    }
                    pos += (FRAME_LEN + body.len()) as u64;
                    continue;
                }
                Ok(id) => format!("log index {} does not follow index {}", id.index, last.map_or(0, |l| l.index)),
                Err(BadRecord::Short(w) | BadRecord::Damaged(w)) => w,
            };
            report.first_damage = Some((path, pos, why));
            cut = Some((i, pos));
            break 'segments;
        }
    }
    report.kept_last_index = last.map(|l| l.index);
    if let Some((i, valid)) = cut {
        let path = segment_path(dir, seqs[i]);
        let len = std::fs::metadata(&path)?.len();
        report.dropped_bytes += len - valid;
        if valid <= SEGMENT_HEADER_LEN {
            std::fs::remove_file(&path)?;
            report.removed_segments.push(path);
        } else {
            let f = File::options().write(true).open(&path)?;
            f.set_len(valid)?;
            f.sync_all()?;
        }
        for &seq in &seqs[i + 1..] {
            let p = segment_path(dir, seq);
            report.dropped_bytes += std::fs::metadata(&p)?.len();
            std::fs::remove_file(&p)?;
            report.removed_segments.push(p);
        }
    }
    if committed.is_some_and(|c| last.is_none_or(|l| c.index > l.index)) {
        let mut body = Vec::new();
        Enc(&mut body).opt_log_id(last.as_ref());
        write_state_file(dir, "committed", STATE_COMMITTED, &body)?;
    }
    sync_dir(dir)?;
    Ok(report)
}
