//! Rebuilding a damaged group 0 from the other members. A node whose group-0 files are damaged (or gone
//! although the node was a member) must not vote or acknowledge with a log it no longer has: Raft's safety
//! rests on members never forgetting. So the node sets its files aside, asks the group-0 leader to remove it
//! from the membership, and only then serves an empty group 0 and joins again as a new learner that receives
//! the leader's snapshot and log, then is promoted (the join path). The shard replicas on its disk are not
//! touched: once the catalog is back they open as before.
//!
//! ```text
//!   open: meta/ corrupt, or missing while DATA_DIR/replicas or DATA_DIR/peers say the node was a member,
//!         or meta/REBUILDING left by an unfinished rebuild
//!     |
//!     v
//!   set aside: meta/ -> damaged/meta-<ms>; new meta/ with REBUILDING; empty group, NOT on the transport
//!     |        (no peers known and no --join: refuse to start, naming the damage)
//!     v
//!   forget: Join{forget} to a known peer -> group-0 leader removes the node (joint consensus)
//!     |       retried over the known peers until the start deadline
//!     v
//!   rejoin: group 0 on the transport; Join -> learner -> caught up -> voter
//!     |
//!     v
//!   done: REBUILDING removed (a crash before this repeats the whole rebuild)
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use shoal_api::internal::JoinRequest;

use crate::error::{Detail, Error, Result};
use crate::meta_plane::MetaPlane;

/// Marker file inside `meta/` while a rebuild has not finished.
const REBUILDING: &str = "REBUILDING";
/// Longest wait for one forget attempt through one peer.
const FORGET_ATTEMPT: Duration = Duration::from_secs(10);

/// Why group 0 in `meta_dir` must be rebuilt before it is opened, if it must: an earlier rebuild did not
/// finish, or the directory is gone although `was_member` (the node holds replicas or knows peers).
pub fn unfinished_or_missing(meta_dir: &Path, was_member: bool) -> Option<String> {
    if meta_dir.join(REBUILDING).exists() {
        return Some(format!("an earlier rebuild of group 0 in {} did not finish", meta_dir.display()));
    }
    if was_member && !meta_dir.join("log").exists() {
        return Some(format!(
            "{} is missing although this node was a cluster member (it lists replicas or peers)",
            meta_dir.join("log").display()
        ));
    }
    None
}

/// Moves the damaged `DATA_DIR/meta` to `DATA_DIR/damaged/meta-<ms>` and leaves an empty `meta/` holding the
/// rebuild marker. Refuses (a [`Error::Storage`] naming the damage) when no peer is known to rebuild from.
pub fn set_aside(data_dir: &Path, node_id: u64, reason: &str, have_seeds: bool) -> Result<()> {
    if !have_seeds {
        return Err(Error::Storage(
            format!(
                "group 0 (the cluster catalog) of node {node_id} is damaged: {reason}. No other member is known to \
             rebuild it from ({} is empty or missing): restart with --join HOST:PORT of a live member, or restore \
             {} from a backup",
                data_dir.join("peers").display(),
                data_dir.join("meta").display()
            )
            .into(),
        ));
    }
    let meta = data_dir.join("meta");
    let io = |what: &str, e: std::io::Error| {
        Error::Storage(Detail::caused_by(format!("rebuilding group 0 of node {node_id}: {what}: {e}"), e))
    };
    if meta.exists() && !meta.join(REBUILDING).exists() {
        let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let dest = data_dir.join("damaged").join(format!("meta-{ms}"));
        std::fs::create_dir_all(data_dir.join("damaged")).map_err(|e| io("creating damaged/", e))?;
        std::fs::rename(&meta, &dest).map_err(|e| io(&format!("moving {} aside", meta.display()), e))?;
        tracing::warn!(node = node_id, reason, kept = %dest.display(), "group 0 is damaged: files kept aside");
    } else if meta.exists() {
        // An unfinished rebuild: its partial copy is worth nothing, start again.
        std::fs::remove_dir_all(&meta).map_err(|e| io(&format!("removing {}", meta.display()), e))?;
    }
    std::fs::create_dir_all(&meta).map_err(|e| io("creating meta/", e))?;
    let marker = meta.join(REBUILDING);
    std::fs::File::create(&marker)
        .and_then(|f| f.sync_all())
        .and_then(|()| std::fs::File::open(&meta)?.sync_all())
        .and_then(|()| std::fs::File::open(data_dir)?.sync_all())
        .map_err(|e| io("writing the rebuild marker", e))?;
    Ok(())
}

impl MetaPlane {
    /// Runs the forget and rejoin steps (see the diagram above); group 0 is served to peers from the
    /// rejoin on. Errors when no peer could take the node out of group 0 before `deadline`.
    pub(crate) async fn rebuild_meta(&self, reason: &str, deadline: Instant) -> Result<()> {
        let me = self.cfg.node_id;
        tracing::warn!(node = me, reason, "group 0 is damaged: rebuilding it from the other members");
        let mut seeds: Vec<(u64, String)> = self.known_peers.get().into_iter().filter(|(id, _)| *id != me).collect();
        if let Some(j) = &self.cfg.join {
            seeds.push((0, j.clone()));
        }
        let req = JoinRequest {
            node_id: me,
            address: self.cfg.advertise.clone(),
            zone: self.cfg.zone.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            forget: true,
        };
        let mut last_error = String::from("no peer tried");
        let mut through = None;
        'forget: while Instant::now() < deadline {
            for (id, addr) in &seeds {
                let left = deadline.saturating_duration_since(Instant::now()).min(FORGET_ATTEMPT);
                match self.peers.join(*id, addr, req.clone(), left).await {
                    Ok(()) => {
                        through = Some(addr.clone());
                        break 'forget;
                    }
                    Err(e) => {
                        tracing::info!(peer = id, %addr, error = %e, "asking to leave group 0 (will retry)");
                        last_error = format!("{addr}: {e}");
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let Some(seed) = through else {
            return Err(Error::Storage(format!(
                "group 0 of node {me} is damaged ({reason}) and no member could remove this node from it before the \
                 start deadline (last: {last_error}); it stays out of service"
            ).into()));
        };
        self.transport.register("meta", &self.group);
        self.join_through(&seed, deadline).await?;
        let meta = self.cfg.data_dir.join("meta");
        std::fs::remove_file(meta.join(REBUILDING))
            .and_then(|()| std::fs::File::open(&meta)?.sync_all())
            .map_err(|e| Error::Storage(Detail::caused_by(format!("finishing the rebuild of group 0: {e}"), e)))?;
        *self.meta_rebuild.lock() = None;
        tracing::info!(node = me, through = %seed, "group 0 rebuilt from the other members");
        Ok(())
    }

    /// On the group-0 leader: removes node `id`, which lost its group-0 files, from group 0 (voter and
    /// learner) so that it cannot vote with what it forgot; it joins again afterwards.
    pub(crate) async fn forget_member(&self, id: u64, deadline: Instant) -> Result<()> {
        let (voters, learners) = self.group.members().await?;
        if !voters.contains(&id) && !learners.contains(&id) {
            return Ok(());
        }
        tracing::warn!(node = id, "node lost its group-0 files: removing it from group 0 until it has rebuilt them");
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(left, self.group.remove_members([id].into()))
            .await
            .map_err(|_| Error::Timeout(format!("removing node {id} from group 0 timed out").into()))??;
        Ok(())
    }

    /// Records the registry's other members in `DATA_DIR/peers` (when this node is registered itself).
    pub(crate) fn note_peers(&self) {
        let me = self.cfg.node_id;
        let nodes = self.catalog.nodes();
        if !nodes.iter().any(|n| n.id == me) {
            return;
        }
        let peers = nodes.into_iter().filter(|n| n.id != me).map(|n| (n.id, n.address)).collect();
        if let Err(e) = self.known_peers.update(peers) {
            tracing::warn!(error = %e, "cannot write the known-peers file");
        }
    }
}

#[cfg(test)]
mod tests {
    use shoal_testkit::TempDir;

    use super::*;

    #[test]
    fn a_missing_or_unfinished_group_zero_is_rebuilt_only_for_a_member() {
        let tmp = TempDir::new("meta-rebuild");
        let dir = tmp.path();
        let meta = dir.join("meta");
        assert!(unfinished_or_missing(&meta, false).is_none(), "a new node");
        assert!(unfinished_or_missing(&meta, true).unwrap().contains("missing"));
        let err = set_aside(dir, 2, "gone", false).unwrap_err().to_string();
        assert!(err.contains("node 2") && err.contains("--join"), "{err}");
        std::fs::create_dir_all(meta.join("log")).unwrap();
        assert!(unfinished_or_missing(&meta, true).is_none());
        set_aside(dir, 2, "flipped byte", true).unwrap();
        assert!(unfinished_or_missing(&meta, false).unwrap().contains("did not finish"));
        assert!(!meta.join("log").exists());
        let kept: Vec<_> = std::fs::read_dir(dir.join("damaged")).unwrap().collect();
        assert_eq!(kept.len(), 1);
        // A second attempt starts over without moving the partial copy aside again.
        std::fs::create_dir_all(meta.join("log")).unwrap();
        set_aside(dir, 2, "again", true).unwrap();
        assert!(!meta.join("log").exists() && meta.join(REBUILDING).exists());
        assert_eq!(std::fs::read_dir(dir.join("damaged")).unwrap().count(), 1);
    }
}
