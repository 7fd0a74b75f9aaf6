//! The log's background I/O thread: group-committed fsyncs of appends and coalesced writes of the
//! `committed` file.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Instant;

use openraft::storage::IOFlushed;

use super::COMMITTED_INTERVAL;
use super::Health;
use super::STATE_COMMITTED;
use crate::codec::Enc;
use crate::codec::write_state_file;
use crate::types::LogId;
use crate::types::TypeConfig;

/// A request to the I/O thread.
pub(super) enum IoMsg {
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

/// The I/O thread: fsyncs for appends (group commit) and lazy `committed` persistence.
pub(super) fn io_loop(rx: mpsc::Receiver<IoMsg>, dir: PathBuf, health: Arc<Health>) {
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
