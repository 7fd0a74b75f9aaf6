//! State machine adapter: runs openraft's [`RaftStateMachine`] on top of an application's
//! [`StateMachineApp`], with snapshots stored as versioned, checksummed files.
//!
//! # Snapshot file (`DIR/snapshot-<index>-<term>-<node>.snap`)
//!
//! ```text
//! +-----------+-------------+-------------+-----------+-------------+----------------+
//! | magic[8]  | version u32 | meta_len u32| meta      | app_len u64 | header crc32c  |
//! | "SHOALSNP"|             |             | (codec)   |             | u32, of all    |
//! +-----------+-------------+-------------+-----------+-------------+ before it      |
//! | app bytes (app_len, written by StateMachineApp::snapshot)       +----------------+
//! +-----------------------------------------------------------------+----------------+
//! | app crc32c u32 (of the app bytes)                                                |
//! +----------------------------------------------------------------------------------+
//! ```
//!
//! `meta` is the snapshot's last log id and membership (see `crate::codec`). `DIR/LOCK` is
//! locked while a store is open on `DIR` (and while a snapshot build of it runs). A snapshot is
//! written to a `*.tmp` file, fsynced, renamed into place and the directory fsynced; then older
//! snapshots are deleted, so the directory holds one snapshot (plus, after a crash, leftovers that
//! the next open removes). The whole file is the unit openraft hands around as
//! [`SnapshotData`](crate::types::SnapshotData) and that followers install.
//!
//! # Consistency
//!
//! Applying entries and capturing the app's state for a snapshot both hold one lock, with the
//! applied log id and membership it protects, so a snapshot's meta always matches its data; the
//! capture is serialised into the file after the lock is released (see [`StateMachineApp::capture`]).
//! Application code runs on tokio's blocking pool, never on an async worker thread.

use std::fs::File;
use std::io;
use std::io::BufReader;
use std::io::BufWriter;
use std::io::Read;
use std::io::Seek;
use std::io::SeekFrom;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use futures::Stream;
use futures::StreamExt;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use openraft::storage::EntryResponder;
use openraft::storage::RaftStateMachine;
use parking_lot::Mutex;

use crate::codec::Dec;
use crate::codec::Enc;
use crate::codec::sync_dir;
use crate::error::Error;
use crate::error::Result;
use crate::types::EntryPayload;
use crate::types::LogId;
use crate::types::Reply;
use crate::types::Snapshot;
use crate::types::SnapshotData;
use crate::types::SnapshotMeta;
use crate::types::StoredMembership;
use crate::types::TypeConfig;

/// The application behind a Raft group: a deterministic state machine over opaque commands.
pub trait StateMachineApp: Send + Sync + 'static {
    /// Apply one committed command at `index`; deterministic; returns reply bytes.
    fn apply(&self, index: u64, command: &[u8]) -> Vec<u8>;
    /// Write a consistent snapshot of the whole state to `w`.
    fn snapshot(&self, w: &mut dyn std::io::Write) -> std::io::Result<()>;
    /// Capture the state for a snapshot. Called while no entry is applied (the snapshot's log id must match
    /// its data), so it must be quick; the returned writer serialises the capture afterwards, while entries
    /// keep being applied. The default serialises everything right here with `snapshot`: fine for a small
    /// state, a stall of writes for a large one.
    fn capture(&self) -> std::io::Result<Box<dyn SnapshotWriter>> {
        let mut buf = Vec::new();
        self.snapshot(&mut buf)?;
        Ok(Box::new(buf))
    }
    /// Replace the whole state with a snapshot previously written by `snapshot`; `index` is the log index
    /// the snapshot covers (0 = none), i.e. the state is as if every entry up to `index` had been applied.
    fn restore(&self, index: u64, r: &mut dyn std::io::Read) -> std::io::Result<()>;
}

/// Serialises a state captured by [`StateMachineApp::capture`].
pub trait SnapshotWriter {
    /// Writes the captured state (what `snapshot` would have written at capture time) to `w`.
    fn write_to(self: Box<Self>, w: &mut dyn std::io::Write) -> std::io::Result<()>;
}

impl SnapshotWriter for Vec<u8> {
    fn write_to(self: Box<Self>, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        w.write_all(&self)
    }
}

/// Magic bytes at the start of every snapshot file.
const SNAPSHOT_MAGIC: &[u8; 8] = b"SHOALSNP";
/// Version of the snapshot file format; bumped on any incompatible change.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;
/// I/O buffer size for snapshot files.
const IO_BUF: usize = 1 << 20;
/// Apply at most this many entries per trip to the blocking pool.
const APPLY_BATCH_ENTRIES: usize = 256;
/// Apply at most about this many command bytes per trip to the blocking pool.
const APPLY_BATCH_BYTES: usize = 16 << 20;

/// openraft's state machine for one group: the app, its applied position, its snapshots.
pub struct StateMachineStore {
    /// State shared with snapshot builders.
    shared: Arc<Shared>,
}

/// Builds a snapshot of a [`StateMachineStore`] (openraft runs it in its own task).
pub struct SnapshotBuilder {
    /// State shared with the store.
    shared: Arc<Shared>,
}

struct Shared {
    /// The snapshot directory.
    dir: PathBuf,
    /// The application.
    app: Arc<dyn StateMachineApp>,
    /// Applied position; locked while applying and while the app writes a snapshot, so the two
    /// never interleave.
    applied: Mutex<Applied>,
    /// The latest snapshot on disk, if any; locked while snapshot files are renamed or removed.
    current: Mutex<Option<CurrentSnapshot>>,
    /// Source of unique temporary file names.
    tmp_seq: AtomicU64,
    /// Held open (and locked) while this store or a snapshot build of it lives: one store per
    /// directory.
    _lock: File,
}

/// What the app's state reflects.
#[derive(Clone, Default)]
struct Applied {
    /// Last log id applied to the app (or restored from a snapshot).
    last_applied: Option<LogId>,
    /// Last membership applied (or restored).
    membership: StoredMembership,
}

/// The snapshot file currently serving as the group's snapshot.
struct CurrentSnapshot {
    /// Its metadata (as stored in its header).
    meta: SnapshotMeta,
    /// Its path.
    path: PathBuf,
}

impl StateMachineStore {
    /// Opens the snapshot directory `dir` (creating it): removes leftovers, and restores the
    /// latest snapshot into `app`, so that openraft re-applies only the log after it.
    /// Blocking (reads the whole snapshot): call it from a blocking context.
    pub fn open(dir: &Path, app: Arc<dyn StateMachineApp>) -> Result<StateMachineStore> {
        std::fs::create_dir_all(dir)?;
        let lock = File::options().read(true).write(true).create(true).truncate(false).open(dir.join("LOCK"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(Error::Locked(dir.to_path_buf())),
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        let mut found: Vec<(SnapshotMeta, PathBuf)> = Vec::new();
        for ent in std::fs::read_dir(dir)? {
            let path = ent?.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("tmp") => std::fs::remove_file(&path)?,
                Some("snap") => {
                    let mut r = BufReader::new(File::open(&path)?);
                    let (meta, _) = read_header(&mut r, &path)?;
                    found.push((meta, path));
                }
                _ => {}
            }
        }
        found.sort_by_key(|(meta, _)| meta.last_log_id);
        let latest = found.pop();
        for (_, old) in found {
            std::fs::remove_file(&old)?;
        }

        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            app,
            applied: Mutex::new(Applied::default()),
            current: Mutex::new(None),
            tmp_seq: AtomicU64::new(0),
            _lock: lock,
        });
        if let Some((meta, path)) = latest {
            let mut applied = shared.applied.lock();
            restore_app(&*shared.app, &path, &meta)?;
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership.clone();
            tracing::info!("restored snapshot {} (last log id {:?})", path.display(), meta.last_log_id);
            *shared.current.lock() = Some(CurrentSnapshot { meta, path });
        }
        Ok(StateMachineStore { shared })
    }

    /// Last log id applied to the app.
    pub fn last_applied(&self) -> Option<LogId> {
        self.shared.applied.lock().last_applied
    }

    /// Metadata of the latest snapshot on disk.
    pub fn current_snapshot_meta(&self) -> Option<SnapshotMeta> {
        self.shared.current.lock().as_ref().map(|c| c.meta.clone())
    }
}

impl Shared {
    fn tmp_path(&self, what: &str) -> PathBuf {
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{what}-{}-{n}.tmp", std::process::id()))
    }

    /// Makes the fsynced `tmp` (holding `meta`) the current snapshot, unless a snapshot at
    /// least as new is already current; returns the current snapshot.
    fn publish(&self, tmp: &Path, meta: &SnapshotMeta) -> io::Result<Snapshot> {
        let mut cur = self.current.lock();
        if let Some(c) = cur.as_ref()
            && c.meta.last_log_id >= meta.last_log_id
        {
            std::fs::remove_file(tmp)?;
            return Ok(Snapshot { meta: c.meta.clone(), snapshot: File::open(&c.path)? });
        }
        let name = match &meta.last_log_id {
            Some(l) => format!("snapshot-{:020}-{}-{}.snap", l.index, l.leader_id.term, l.leader_id.node_id),
            None => "snapshot-empty.snap".to_string(),
        };
        let path = self.dir.join(name);
        std::fs::rename(tmp, &path)?;
        sync_dir(&self.dir)?;
        if let Some(old) = cur.take()
            && old.path != path
        {
            std::fs::remove_file(&old.path)?;
        }
        *cur = Some(CurrentSnapshot { meta: meta.clone(), path: path.clone() });
        Ok(Snapshot { meta: meta.clone(), snapshot: File::open(&path)? })
    }

    /// Writes a snapshot of the app to a new file and publishes it.
    fn build(&self) -> io::Result<Snapshot> {
        let tmp = self.tmp_path("build");
        let res = (|| {
            let file = PacedFile::new(File::create(&tmp)?);
            let mut w = BufWriter::with_capacity(IO_BUF, file);
            // Applies pause only while the app captures its state (with the log id and membership it matches);
            // the capture is serialised afterwards while entries keep being applied.
            let t0 = std::time::Instant::now();
            let (meta, capture) = {
                let applied = self.applied.lock();
                let meta =
                    SnapshotMeta { last_log_id: applied.last_applied, last_membership: applied.membership.clone() };
                (meta, self.app.capture()?)
            };
            let captured = t0.elapsed();
            let (head, app_len, app_crc) = {
                let head = write_header_start(&mut w, &meta)?;
                let mut cw = CrcWriter { inner: &mut w, len: 0, crc: 0 };
                capture.write_to(&mut cw)?;
                (head, cw.len, cw.crc)
            };
            w.write_all(&app_crc.to_le_bytes())?;
            let mut file = w.into_inner().map_err(|e| e.into_error())?.into_inner();
            finish_header(&mut file, &head, app_len)?;
            let written = t0.elapsed();
            file.sync_all()?;
            tracing::info!(
                bytes = app_len,
                capture_ms = captured.as_millis() as u64,
                write_ms = (written - captured).as_millis() as u64,
                fsync_ms = (t0.elapsed() - written).as_millis() as u64,
                "snapshot written"
            );
            Ok(meta)
        })();
        match res {
            Ok(meta) => {
                let snap = self.publish(&tmp, &meta)?;
                tracing::info!("built snapshot at {:?}", snap.meta.last_log_id);
                Ok(snap)
            }
            Err(e) => {
                std::fs::remove_file(&tmp).ok();
                Err(e)
            }
        }
    }

    /// Installs a snapshot file received from a leader (or our own current one).
    fn install(&self, meta: &SnapshotMeta, mut data: SnapshotData) -> io::Result<()> {
        let same_as_current = {
            let cur = self.current.lock();
            cur.as_ref().filter(|c| c.meta == *meta).map(|c| c.path.clone())
        };
        if let Some(path) = same_as_current {
            let mut applied = self.applied.lock();
            restore_app(&*self.app, &path, meta).map_err(Error::into_io)?;
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership.clone();
            return Ok(());
        }

        let tmp = self.tmp_path("install");
        let res = (|| {
            data.seek(SeekFrom::Start(0))?;
            let mut out = File::create(&tmp)?;
            io::copy(&mut data, &mut out)?;
            out.sync_all()?;
            drop(out);
            let mut applied = self.applied.lock();
            restore_app(&*self.app, &tmp, meta).map_err(Error::into_io)?;
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership.clone();
            Ok(())
        })();
        match res {
            Ok(()) => {
                self.publish(&tmp, meta)?;
                tracing::info!("installed snapshot at {:?}", meta.last_log_id);
                Ok(())
            }
            Err(e) => {
                std::fs::remove_file(&tmp).ok();
                Err(e)
            }
        }
    }
}

/// Writes the header with placeholders for `app_len` and the header checksum; returns the
/// header bytes before `app_len`.
fn write_header_start(w: &mut impl Write, meta: &SnapshotMeta) -> io::Result<Vec<u8>> {
    let mut meta_bytes = Vec::new();
    Enc(&mut meta_bytes).snapshot_meta(meta);
    let mut head = Vec::with_capacity(16 + meta_bytes.len());
    head.extend_from_slice(SNAPSHOT_MAGIC);
    head.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    Enc(&mut head).bytes(&meta_bytes);
    w.write_all(&head)?;
    w.write_all(&[0u8; 12])?; // app_len u64 + header crc u32, filled in by finish_header
    Ok(head)
}

/// Fills in `app_len` and the header checksum (`head` = the header bytes before `app_len`).
fn finish_header(file: &mut File, head: &[u8], app_len: u64) -> io::Result<()> {
    let mut crc_input = head.to_vec();
    crc_input.extend_from_slice(&app_len.to_le_bytes());
    let crc = crc32c::crc32c(&crc_input);
    file.seek(SeekFrom::Start(head.len() as u64))?;
    file.write_all(&app_len.to_le_bytes())?;
    file.write_all(&crc.to_le_bytes())?;
    Ok(())
}

/// Reads and checks a snapshot header; returns the meta and the length of the app bytes.
fn read_header(r: &mut impl Read, path: &Path) -> Result<(SnapshotMeta, u64)> {
    let bad = |reason: String| Error::corrupt(path, reason);
    let mut fixed = [0u8; 16];
    r.read_exact(&mut fixed).map_err(|e| bad(format!("short header: {e}")))?;
    if fixed[..8] != *SNAPSHOT_MAGIC {
        return Err(bad("not a snapshot file (bad magic)".into()));
    }
    let version = u32::from_le_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]);
    if version != SNAPSHOT_FORMAT_VERSION {
        return Err(bad(format!("unsupported snapshot format version {version}")));
    }
    let meta_len = u32::from_le_bytes([fixed[12], fixed[13], fixed[14], fixed[15]]) as usize;
    if meta_len > 64 << 20 {
        return Err(bad(format!("implausible meta length {meta_len}")));
    }
    let mut rest = vec![0u8; meta_len + 12];
    r.read_exact(&mut rest).map_err(|e| bad(format!("short header: {e}")))?;
    let mut head = fixed.to_vec();
    head.extend_from_slice(&rest[..meta_len + 8]);
    let want = u32::from_le_bytes([rest[meta_len + 8], rest[meta_len + 9], rest[meta_len + 10], rest[meta_len + 11]]);
    if crc32c::crc32c(&head) != want {
        return Err(bad("header checksum mismatch".into()));
    }
    let mut d = Dec::new(&rest[..meta_len]);
    let meta = d.snapshot_meta().map_err(bad)?;
    let app_len = Dec::new(&rest[meta_len..meta_len + 8]).u64("app length").map_err(bad)?;
    Ok((meta, app_len))
}

/// Replaces the app's state with the snapshot in `path`, checking it holds `meta` and that its
/// app bytes are intact. The caller holds the `applied` lock.
fn restore_app(app: &dyn StateMachineApp, path: &Path, meta: &SnapshotMeta) -> Result<()> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut r = BufReader::with_capacity(IO_BUF, file);
    let (file_meta, app_len) = read_header(&mut r, path)?;
    if file_meta != *meta {
        return Err(Error::corrupt(path, format!("snapshot holds meta {file_meta}, expected {meta}")));
    }
    let header_len = r.stream_position()?;
    if header_len + app_len + 4 != file_len {
        return Err(Error::corrupt(
            path,
            format!("file is {file_len} bytes, header says {}", header_len + app_len + 4),
        ));
    }
    let mut cr = CrcReader { inner: &mut r, remaining: app_len, crc: 0 };
    // The app checks its own part; what it cannot read is damage of this file, not an I/O failure.
    app.restore(meta.last_log_id.map_or(0, |l| l.index), &mut cr).map_err(|e| match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => Error::corrupt(path, e.to_string()),
        _ => Error::Io(e),
    })?;
    io::copy(&mut cr, &mut io::sink())?;
    let crc = cr.crc;
    let mut trailer = [0u8; 4];
    r.read_exact(&mut trailer)?;
    if u32::from_le_bytes(trailer) != crc {
        return Err(Error::corrupt(path, "app data checksum mismatch"));
    }
    Ok(())
}

/// Checks a snapshot file without an app: header, length and the app section's checksum. Returns the index
/// of the last log entry it covers.
pub fn verify_snapshot_file(path: &Path) -> Result<u64> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut r = BufReader::with_capacity(IO_BUF, file);
    let (meta, app_len) = read_header(&mut r, path)?;
    let header_len = r.stream_position()?;
    if header_len + app_len + 4 != file_len {
        return Err(Error::corrupt(
            path,
            format!("file is {file_len} bytes, header says {}", header_len + app_len + 4),
        ));
    }
    let mut cr = CrcReader { inner: &mut r, remaining: app_len, crc: 0 };
    io::copy(&mut cr, &mut io::sink()).map_err(|e| Error::corrupt(path, format!("reading the app section: {e}")))?;
    let crc = cr.crc;
    let mut trailer = [0u8; 4];
    r.read_exact(&mut trailer).map_err(|e| Error::corrupt(path, format!("short trailer: {e}")))?;
    if u32::from_le_bytes(trailer) != crc {
        return Err(Error::corrupt(path, "app data checksum mismatch"));
    }
    Ok(meta.last_log_id.map_or(0, |l| l.index))
}

/// Bytes of a snapshot written between two writeback steps of [`PacedFile`].
const WRITEBACK_STEP: u64 = 8 << 20;

/// A file being written that is flushed to disk as it goes: after every [`WRITEBACK_STEP`] bytes the
/// previous step is written back (`sync_file_range`, Linux) before more is buffered. Without it a snapshot
/// of hundreds of MB piles up as dirty pages and its final fsync floods the disk, and every log fsync (the
/// writes being acknowledged) queues behind it; paced, the final fsync has little left to do.
struct PacedFile {
    /// The file.
    file: File,
    /// Bytes written so far.
    written: u64,
    /// Bytes already handed to writeback.
    synced: u64,
}

impl PacedFile {
    fn new(file: File) -> PacedFile {
        PacedFile { file, written: 0, synced: 0 }
    }

    fn into_inner(self) -> File {
        self.file
    }

    #[cfg(target_os = "linux")]
    fn write_back(&mut self) {
        use std::os::fd::AsRawFd;
        let (from, len) = (self.synced, self.written - self.synced);
        let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        // SAFETY: the descriptor is open for as long as `self.file` lives; the call only reads its arguments.
        // A failure is not an error here: the final fsync reports any, and covers the whole file anyway.
        unsafe {
            libc::sync_file_range(self.file.as_raw_fd(), from as libc::off64_t, len as libc::off64_t, flags);
        }
        self.synced = self.written;
    }

    #[cfg(not(target_os = "linux"))]
    fn write_back(&mut self) {}
}

impl Write for PacedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.synced >= WRITEBACK_STEP {
            self.write_back();
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for PacedFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

/// Counts and checksums what the app writes.
struct CrcWriter<'a, W: Write> {
    /// Where the bytes go.
    inner: &'a mut W,
    /// Bytes written so far.
    len: u64,
    /// crc32c of the bytes written so far.
    crc: u32,
}

impl<W: Write> Write for CrcWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Limits the app to its bytes and checksums what it reads.
struct CrcReader<'a, R: Read> {
    /// The snapshot file, positioned in the app bytes.
    inner: &'a mut R,
    /// App bytes not yet read; reads stop there.
    remaining: u64,
    /// crc32c of the app bytes read so far.
    crc: u32,
}

impl<R: Read> Read for CrcReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let max = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        if max == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "snapshot app data is truncated"));
        }
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Runs blocking work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(io::Error::other(format!("state machine task failed: {e}"))),
    }
}

impl StateMachineStore {
    /// Applies one batch on the blocking pool, under the `applied` lock.
    async fn apply_batch(&self, batch: Vec<EntryResponder<TypeConfig>>) -> io::Result<()> {
        let shared = self.shared.clone();
        blocking(move || {
            let mut applied = shared.applied.lock();
            for (entry, responder) in batch {
                let reply = match &entry.payload {
                    EntryPayload::Blank => Vec::new(),
                    EntryPayload::Normal(cmd) => shared.app.apply(entry.log_id.index, &cmd.0),
                    EntryPayload::Membership(m) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                        Vec::new()
                    }
                };
                applied.last_applied = Some(entry.log_id);
                if let Some(r) = responder {
                    r.send(Reply(reply));
                }
            }
            Ok(())
        })
        .await
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        let a = self.shared.applied.lock();
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        while let Some(item) = entries.next().await {
            let item = item?;
            if let EntryPayload::Normal(c) = &item.0.payload {
                bytes += c.0.len();
            }
            batch.push(item);
            if batch.len() >= APPLY_BATCH_ENTRIES || bytes >= APPLY_BATCH_BYTES {
                self.apply_batch(std::mem::take(&mut batch)).await?;
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            self.apply_batch(batch).await?;
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder { shared: self.shared.clone() }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotData) -> io::Result<()> {
        let shared = self.shared.clone();
        let meta = meta.clone();
        blocking(move || shared.install(&meta, snapshot)).await
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        let cur = self.shared.current.lock();
        match cur.as_ref() {
            None => Ok(None),
            Some(c) => Ok(Some(Snapshot { meta: c.meta.clone(), snapshot: File::open(&c.path)? })),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let shared = self.shared.clone();
        blocking(move || shared.build()).await
    }
}
