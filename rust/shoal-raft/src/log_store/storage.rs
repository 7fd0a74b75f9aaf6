//! openraft's [`RaftLogStorage`] on [`LogStore`]: log state, vote, commit point, append, truncate, purge.

use std::io;

use openraft::LogState;
use openraft::OptionalSend;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;

use super::IoMsg;
use super::LogReader;
use super::LogStore;
use super::STATE_PURGED;
use super::STATE_VOTE;
use crate::codec::Enc;
use crate::codec::sync_dir;
use crate::codec::write_state_file;
use crate::types::Entry;
use crate::types::LogId;
use crate::types::TypeConfig;
use crate::types::Vote;

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
