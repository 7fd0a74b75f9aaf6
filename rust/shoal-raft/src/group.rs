//! [`RaftGroup`]: one Raft group (group 0 or a shard) stored in one directory, as the node uses
//! it: open/recover, write, linearizable read barrier, leadership, shutdown.
//!
//! ```text
//! DIR/log/         the LogStore (segments, vote, committed, purged)
//! DIR/snapshots/   the StateMachineStore's snapshot file
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use std::collections::BTreeSet;

use openraft::BasicNode;
use openraft::Config;
use openraft::ReadPolicy;
use openraft::ServerState;
use openraft::SnapshotPolicy;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::InitializeError;
use openraft::errors::RaftError;
use openraft::network::NetSnapshot;
use openraft::network::RaftNetworkFactory;

use crate::error::Error;
use crate::error::Result;
use crate::log_store::LogReader;
use crate::log_store::LogStore;
use crate::log_store::LogStoreOptions;
use crate::network::NoPeersNetwork;
use crate::purge_guard::{Observation, PurgeGuard};
use crate::state_machine::StateMachineApp;
use crate::state_machine::StateMachineStore;
use crate::types::Command;
use crate::types::Raft;
use crate::types::SnapshotData;
use crate::types::TypeConfig;

/// How long [`RaftGroup::open`] waits for a previous instance to release the directory.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Tuning of a [`RaftGroup`].
#[derive(Debug, Clone)]
pub struct GroupOptions {
    /// Leader heartbeat interval in ms; > 0 and < `election_timeout_min_ms`.
    pub heartbeat_ms: u64,
    /// Minimum election timeout in ms; > `heartbeat_ms`.
    pub election_timeout_min_ms: u64,
    /// Maximum election timeout in ms; > `election_timeout_min_ms`.
    pub election_timeout_max_ms: u64,
    /// Build a snapshot once this many entries were applied since the last one (> 0); the log
    /// it covers is then purged, keeping a tail of `min(snapshot_every / 2, 1000)` entries for
    /// followers that lag a little.
    pub snapshot_every: u64,
    /// Whether [`RaftGroup::open`] initialises a new, empty directory as a single-voter group
    /// `{node_id: addr}`. `false` leaves a new group uninitialised, waiting for a leader to add it.
    pub bootstrap_single: bool,
    /// Size in bytes at which a log segment file is sealed and a new one started (> 0).
    pub log_segment_bytes: u64,
    /// Deadline in ms of sending one whole snapshot to a follower and its install there (a
    /// snapshot can be tens of MB, and installing it rebuilds the follower's state).
    pub snapshot_timeout_ms: u64,
}

/// A learner this close to the leader's last log index counts as caught up (ready to become a voter).
pub const LEARNER_CAUGHT_UP_ENTRIES: u64 = 16;

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions {
            heartbeat_ms: 50,
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            snapshot_every: 1000,
            bootstrap_single: true,
            log_segment_bytes: crate::log_store::DEFAULT_SEGMENT_BYTES,
            snapshot_timeout_ms: 60_000,
        }
    }
}

impl GroupOptions {
    fn to_config(&self) -> Result<Config> {
        if self.snapshot_every == 0 {
            return Err(Error::InvalidArgument("snapshot_every must be > 0".into()));
        }
        let config = Config {
            cluster_name: "shoal".to_string(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            install_snapshot_timeout: self.snapshot_timeout_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            // What `add_learner(blocking)` waits for: the learner within this many entries of the leader's
            // log. openraft's default (5000) let a learner of a shard with a shorter log count as caught up
            // before it received anything; promoted, it then stalled every write of the group until its
            // snapshot was installed or its log replayed (seconds for a 100 MB shard).
            replication_lag_threshold: LEARNER_CAUGHT_UP_ENTRIES,
            // Purging is ours (`purge_guard.rs`, driven by `run_purge_guard`): openraft's rule would purge
            // the log a member catching up under sustained writes still needs. This turns its rule off.
            max_in_snapshot_log_to_keep: u64::MAX,
            // A restarted leader must win a new election (and commit a blank entry in its new
            // term) before serving: our `committed` file may lag, so a restored leader could
            // otherwise serve reads from a state machine behind acknowledged writes.
            enable_leader_restore: Some(false),
            // A node that was partitioned or paused must not disrupt a healthy leader by campaigning
            // with a higher term when it comes back: it first asks whether it could win.
            enable_pre_vote: Some(true),
            // A follower whose disk lost the tail of its log (a torn record truncated at start-up, an
            // fsync the disk did not honour) answers the leader with a conflict below what it had
            // acknowledged. Without this the leader keeps probing above the lost entries and the
            // replica stays behind for as long as that leader lives (the fault matrix's `damage`
            // scenario: a 6-byte truncated segment left a replica 462 entries behind for 90 s+).
            // With it the leader restarts its search for the follower's last matching entry and
            // re-sends what is missing; a quorum-accepted commit point is never lowered.
            allow_log_reversion: Some(true),
            ..Default::default()
        };
        config.validate().map_err(|e| Error::InvalidArgument(format!("raft config: {e}")))
    }
}

/// One Raft group of this node: its log, its state machine and the openraft instance.
pub struct RaftGroup {
    /// The openraft handle.
    raft: Raft,
    /// This node's id in the group.
    node_id: u64,
    /// The group's directory.
    dir: PathBuf,
    /// A reader of the group's log store, kept to close the store (join its I/O thread, release
    /// its directory lock) at shutdown.
    log: LogReader,
    /// Set when the group is shut down or dropped: ends its purge task.
    stopped: Arc<AtomicBool>,
    /// When a leader last reached this node for the group (see [`RaftGroup::leader_contact_age`]).
    contact: ContactClock,
}

/// When a leader of a group last reached this node: touched by the transport on each append request this
/// node answers; starts at the group's open (a group just opened has not missed its leader yet).
#[derive(Debug, Clone)]
pub struct ContactClock {
    /// The reference instant.
    base: Instant,
    /// Milliseconds from `base` to the last contact.
    last_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl ContactClock {
    fn new() -> ContactClock {
        ContactClock { base: Instant::now(), last_ms: Arc::default() }
    }

    /// Records a contact now.
    pub fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Time since the last contact (or since the group opened).
    pub fn age(&self) -> Duration {
        self.base.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

impl Drop for RaftGroup {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Release);
    }
}

/// One group's Raft state as this node sees it ([`RaftGroup::status`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupStatus {
    /// "leader", "follower", "learner" or "candidate".
    pub role: &'static str,
    /// The current term.
    pub term: u64,
    /// Index of the last entry a quorum granted as committed, as this node knows it (0 = none).
    pub committed: u64,
    /// Index of the last entry applied here (0 = none).
    pub applied: u64,
    /// Index of the last entry in this node's log (0 = none).
    pub last_log: u64,
    /// The leader's node id (0 = none known).
    pub leader: u64,
    /// On the leader: (member, entries it is behind this node's log); empty elsewhere.
    pub lags: Vec<(u64, u64)>,
}

/// How often a group's purge task looks at the group.
const PURGE_EVERY: Duration = Duration::from_millis(250);

impl GroupOptions {
    /// Entries kept after the newest snapshot for followers that lag a little.
    fn purge_keep(&self) -> u64 {
        (self.snapshot_every / 2).min(1000)
    }

    /// The most entries kept behind the fixed tail for a member catching up (`purge_guard.rs`).
    fn purge_cap(&self) -> u64 {
        self.snapshot_every.saturating_mul(4).max(4096)
    }

    /// Purge only when at least this many entries go (each purge persists the purge point: two fsyncs).
    fn purge_batch(&self) -> u64 {
        (self.snapshot_every / 4).clamp(1, 256)
    }
}

/// Purges the group's log as far as [`PurgeGuard`] allows, every [`PURGE_EVERY`], until `stopped` or the
/// Raft core stops.
async fn run_purge_guard(raft: Raft, stopped: Arc<AtomicBool>, keep: u64, cap: u64, batch: u64) {
    let mut guard = PurgeGuard::default();
    loop {
        tokio::time::sleep(PURGE_EVERY).await;
        if stopped.load(Ordering::Acquire) {
            return;
        }
        let obs = {
            let m = raft.metrics().borrow_watched().clone();
            if m.running_state.is_err() {
                return;
            }
            Observation {
                snapshot: m.snapshot.map(|l| l.index),
                purged: m.purged.map(|l| l.index),
                last_log: m.last_log_index.unwrap_or(0),
                matched: m.replication.as_ref().map(|rep| {
                    rep.iter()
                        .filter(|(id, _)| **id != m.id)
                        .map(|(id, l)| (*id, l.as_ref().map(|l| l.index)))
                        .collect()
                }),
            }
        };
        if let Some(upto) = guard.next(Instant::now(), &obs, keep, cap, batch)
            && raft.trigger().purge_log(upto).await.is_err()
        {
            return;
        }
    }
}

/// What the log says about the snapshot and the reverse (DESIGN §6: a file the node's own state says must
/// exist is missing = corruption): a log purged up to index P needs a snapshot covering P (it is the only
/// copy of those entries), and a snapshot needs the log and vote it was taken from.
fn check_log_and_snapshot(dir: &Path, log: &LogStore, sm: &StateMachineStore) -> Result<()> {
    let (purged, vote, last) = log.recovered();
    let snap = sm.current_snapshot_meta().and_then(|m| m.last_log_id).map(|l| l.index);
    if let Some(p) = purged
        && snap.is_none_or(|s| s < p.index)
    {
        return Err(Error::corrupt(
            dir.join("snapshots"),
            format!(
                "the log was purged up to index {} but no snapshot covers it (latest snapshot: {})",
                p.index,
                snap.map_or("none".to_string(), |s| format!("index {s}"))
            ),
        ));
    }
    if let Some(s) = snap
        && purged.is_none()
        && vote.is_none()
        && last.is_none()
    {
        return Err(Error::corrupt(
            dir.join("log"),
            format!("a snapshot at index {s} exists but the log it was taken from (vote and entries) is gone"),
        ));
    }
    Ok(())
}

impl RaftGroup {
    /// Opens (or creates) the group stored in `dir` (log in `dir/log`, snapshots in
    /// `dir/snapshots`). When the group is new and `opts.bootstrap_single` is set, initialises a
    /// single-voter membership `{node_id: addr}`. Recovers after a clean stop and after a crash
    /// (kill -9: a torn log tail is truncated). When this node is the only voter it campaigns at
    /// once instead of waiting for an election timeout. Has no network: for single-voter groups
    /// (see [`RaftGroup::open_with_network`]).
    pub async fn open(
        dir: &Path,
        node_id: u64,
        addr: String,
        app: Arc<dyn StateMachineApp>,
        opts: GroupOptions,
    ) -> Result<RaftGroup> {
        Self::open_with_network(dir, node_id, addr, app, opts, NoPeersNetwork).await
    }

    /// [`RaftGroup::open`] with the network `network` to reach the group's peers (e.g. a
    /// [`crate::GrpcNetworkFactory`]). With `opts.bootstrap_single = false` a new group waits
    /// uninitialised until [`RaftGroup::initialize`] or a leader adds this node.
    pub async fn open_with_network<N>(
        dir: &Path,
        node_id: u64,
        addr: String,
        app: Arc<dyn StateMachineApp>,
        opts: GroupOptions,
        network: N,
    ) -> Result<RaftGroup>
    where
        N: RaftNetworkFactory<TypeConfig>,
        N::Network: NetSnapshot<TypeConfig, SnapshotData = SnapshotData>,
    {
        let config = Arc::new(opts.to_config()?);
        let log_dir = dir.join("log");
        let snap_dir = dir.join("snapshots");
        let log_opts = LogStoreOptions { segment_bytes: opts.log_segment_bytes };
        let (log, sm) = tokio::task::spawn_blocking(move || -> Result<(LogStore, StateMachineStore)> {
            // A group dropped without `shutdown` stops in the background and releases its
            // directory locks shortly after: give it a moment before reporting `Locked`.
            let deadline = std::time::Instant::now() + LOCK_WAIT;
            loop {
                let opened = LogStore::open_with(&log_dir, log_opts.clone()).and_then(|log| {
                    let sm = StateMachineStore::open(&snap_dir, app.clone())?;
                    Ok((log, sm))
                });
                match opened {
                    Err(Error::Locked(_)) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    r => return r,
                }
            }
        })
        .await
        .map_err(|e| Error::Fatal(format!("opening the group failed: {e}")))??;
        check_log_and_snapshot(dir, &log, &sm)?;
        let reader = log.reader();

        let raft = match Raft::new(node_id, config, network, log, sm).await {
            Ok(r) => r,
            Err(e) => {
                reader.close();
                return Err(e.into());
            }
        };
        let stopped = Arc::new(AtomicBool::new(false));
        tokio::spawn(run_purge_guard(
            raft.clone(),
            stopped.clone(),
            opts.purge_keep(),
            opts.purge_cap(),
            opts.purge_batch(),
        ));
        let group =
            RaftGroup { raft, node_id, dir: dir.to_path_buf(), log: reader, stopped, contact: ContactClock::new() };

        if !group.raft.is_initialized().await? {
            if opts.bootstrap_single {
                let members = BTreeMap::from([(node_id, BasicNode::new(addr))]);
                match group.raft.initialize(members).await {
                    Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                    Err(RaftError::APIError(e)) => return Err(Error::Rejected(e.to_string())),
                    Err(RaftError::Fatal(f)) => return Err(f.into()),
                }
            }
        } else {
            let voters = group
                .raft
                .with_raft_state(|st| st.membership_state.effective().voter_ids().collect::<Vec<_>>())
                .await?;
            if voters == [node_id] {
                group.raft.trigger().elect(false).await?;
            }
        }
        Ok(group)
    }

    /// Whether the group has a membership (was initialised here or joined through a leader).
    pub async fn is_initialized(&self) -> Result<bool> {
        Ok(self.raft.is_initialized().await?)
    }

    /// Initialises a new group with the voters `members` (node id -> address); call it on one
    /// node only (the others start uninitialised and learn the membership from the leader).
    /// [`Error::Rejected`] when this node's group is already initialised.
    pub async fn initialize(&self, members: BTreeMap<u64, String>) -> Result<()> {
        let members: BTreeMap<u64, BasicNode> = members.into_iter().map(|(id, a)| (id, BasicNode::new(a))).collect();
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(e)) => Err(Error::Rejected(e.to_string())),
            Err(RaftError::Fatal(f)) => Err(f.into()),
        }
    }

    /// Adds node `node_id` at `addr` as a learner (on the leader) and returns once the leader
    /// believes its log is up to date (within [`LEARNER_CAUGHT_UP_ENTRIES`] of the leader's), i.e.
    /// ready to be promoted by [`RaftGroup::change_membership`]. It catches up by log or by snapshot.
    pub async fn add_learner(&self, node_id: u64, addr: String) -> Result<()> {
        self.raft.add_learner(node_id, BasicNode::new(addr), true).await?;
        Ok(())
    }

    /// Makes `voters` the group's voters (on the leader), through a joint consensus; members
    /// that are not voters any more are removed. Every voter must already be a member
    /// (see [`RaftGroup::add_learner`]).
    pub async fn change_membership(&self, voters: BTreeSet<u64>) -> Result<()> {
        self.raft.change_membership(voters, false).await?;
        Ok(())
    }

    /// Removes `ids` from the group (on the leader): voters through a joint consensus (not kept as
    /// learners), then learners.
    pub async fn remove_members(&self, ids: BTreeSet<u64>) -> Result<()> {
        let (voters, learners) = self.members().await?;
        let v: BTreeSet<u64> = ids.intersection(&voters).copied().collect();
        if !v.is_empty() {
            self.raft.change_membership(openraft::ChangeMembers::RemoveVoters(v), false).await?;
        }
        let l: BTreeSet<u64> = ids.intersection(&learners).copied().collect();
        if !l.is_empty() {
            self.raft.change_membership(openraft::ChangeMembers::RemoveNodes(l), false).await?;
        }
        Ok(())
    }

    /// Asks the group (on the leader) to hand leadership to voter `to`: the leader stops
    /// extending its lease and `to` campaigns once its log is up to date. Returns at once; watch
    /// [`RaftGroup::leader_id`] for the outcome. Used before a graceful stop (DESIGN §5).
    pub async fn transfer_leader(&self, to: u64) -> Result<()> {
        self.raft.trigger().transfer_leader(to).await?;
        Ok(())
    }

    /// Whether this node starts elections when it stops hearing from a leader (default: yes). A node that
    /// is about to stop turns it off, so that it does not take back the leadership it handed off.
    pub fn set_campaigning(&self, on: bool) {
        self.raft.runtime_config().elect(on);
    }

    /// The voter ids of the group's effective membership, read from the Raft core (unlike
    /// [`RaftGroup::voter_ids`], not from metrics that may trail a just-applied change).
    pub async fn effective_voters(&self) -> Result<Vec<u64>> {
        Ok(self.raft.with_raft_state(|st| st.membership_state.effective().voter_ids().collect::<Vec<_>>()).await?)
    }

    /// The (voters, learners) of the group's effective membership, read from the Raft core.
    pub async fn members(&self) -> Result<(BTreeSet<u64>, BTreeSet<u64>)> {
        Ok(self
            .raft
            .with_raft_state(|st| {
                let m = st.membership_state.effective().membership();
                (m.voter_ids().collect::<BTreeSet<u64>>(), m.learner_ids().collect::<BTreeSet<u64>>())
            })
            .await?)
    }

    /// The current voter ids of the group (as this node knows them).
    pub fn voter_ids(&self) -> Vec<u64> {
        self.raft.voter_ids().collect()
    }

    /// Proposes `command`; returns the app's reply once it is committed and applied on this
    /// node (the leader). Errors: [`Error::NotLeader`] (with the leader when known),
    /// [`Error::CommitUnknown`], [`Error::Shutdown`], [`Error::Storage`]/[`Error::Fatal`].
    /// Timeouts are the caller's (`tokio::time::timeout`).
    pub async fn write(&self, command: Vec<u8>) -> Result<Vec<u8>> {
        let resp = self.raft.client_write(Command(command)).await?;
        Ok(resp.data.0)
    }

    /// [`RaftGroup::write`] that also returns the log index of the entry (a session token).
    pub async fn write_indexed(&self, command: Vec<u8>) -> Result<(Vec<u8>, u64)> {
        let resp = self.raft.client_write(Command(command)).await?;
        Ok((resp.data.0, resp.log_id.index))
    }

    /// Hands `command` to this node as leader and returns as soon as the leader accepted it into
    /// its log, without waiting for replication or commit (the `eventual` write level). Returns an
    /// upper bound of the entry's log index (the leader's last log index right after accepting it).
    /// [`Error::NotLeader`] when this node is not the leader; an entry accepted by a leader that
    /// loses its leadership before replicating it is lost.
    pub async fn write_accepted(&self, command: Vec<u8>) -> Result<u64> {
        if !self.raft.is_leader() {
            return Err(Error::NotLeader { leader: self.leader_id(), leader_addr: None });
        }
        self.raft.client_write_ff(Command(command), None).await.map_err(|f| Error::Fatal(f.to_string()))?;
        // Requests to the Raft core are handled in order: by the time this one runs the write
        // above has been appended (or refused because leadership was lost meanwhile).
        let (leader, last) = self
            .raft
            .with_raft_state(|st| (st.server_state == ServerState::Leader, st.log_ids.last().map_or(0, |l| l.index)))
            .await
            .map_err(|f| Error::Fatal(f.to_string()))?;
        if !leader {
            return Err(Error::NotLeader { leader: self.leader_id(), leader_addr: None });
        }
        Ok(last)
    }

    /// On the leader: waits until every current voter has replicated the log up to `index`.
    /// Returns the voters still behind when `timeout` passes first (empty on success).
    pub async fn wait_replicated(&self, index: u64, timeout: Duration) -> Vec<u64> {
        let behind = |m: &openraft::RaftMetrics<TypeConfig>| -> Vec<u64> {
            let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
            match &m.replication {
                Some(rep) => voters
                    .into_iter()
                    .filter(|v| *v != m.id && rep.get(v).and_then(|l| l.as_ref()).is_none_or(|l| l.index < index))
                    .collect(),
                None => voters.into_iter().filter(|v| *v != m.id).collect(),
            }
        };
        let waited = self
            .raft
            .wait(Some(timeout))
            .metrics(move |m| behind(m).is_empty(), "every voter replicated the entry")
            .await;
        match waited {
            Ok(_) => Vec::new(),
            Err(_) => behind(&self.raft.metrics().borrow_watched().clone()),
        }
    }

    /// On the leader: waits until member `node` (a learner) has acknowledged the log up to this leader's
    /// last index at the time of the call; false after `timeout`. A learner that never answered is not caught
    /// up, whatever openraft's lag threshold says about a short log (a join naming an unreachable address
    /// must not become a voter: with a single voter it would leave the group without a majority).
    pub async fn wait_member_replicated(&self, node: u64, timeout: Duration) -> bool {
        let target = self.role_and_last_index().1;
        self.raft
            .wait(Some(timeout))
            .metrics(
                move |m| {
                    m.replication
                        .as_ref()
                        .and_then(|rep| rep.get(&node))
                        .and_then(|l| l.as_ref())
                        .is_some_and(|l| l.index >= target)
                },
                "the member replicated the log",
            )
            .await
            .is_ok()
    }

    /// This node's role and log position: (role, last log index), role being `leader`,
    /// `follower`, `learner` or `candidate`.
    pub fn role_and_last_index(&self) -> (&'static str, u64) {
        let m = self.raft.metrics().borrow_watched().clone();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Learner => "learner",
            ServerState::Candidate => "candidate",
            _ => {
                if m.membership_config.membership().voter_ids().any(|v| v == self.node_id) {
                    "follower"
                } else {
                    "learner"
                }
            }
        };
        (role, m.last_log_index.unwrap_or(0))
    }

    /// The group's Raft state as this node sees it (for metrics).
    pub fn status(&self) -> GroupStatus {
        let (role, last_log) = self.role_and_last_index();
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let lags = m
            .replication
            .as_ref()
            .map(|rep| {
                rep.iter()
                    .filter(|(id, _)| **id != m.id)
                    .map(|(id, l)| (*id, last_log.saturating_sub(l.as_ref().map_or(0, |l| l.index))))
                    .collect()
            })
            .unwrap_or_default();
        GroupStatus {
            role,
            term: m.current_term,
            committed: m.cluster_committed.as_ref().map_or(0, |l| l.index),
            applied: m.last_applied.as_ref().map_or(0, |l| l.index),
            last_log,
            leader: m.current_leader.unwrap_or(0),
            lags,
        }
    }

    /// Linearizable read barrier: returns once this node is the leader (confirmed by a quorum)
    /// and has applied everything committed before the call.
    pub async fn ensure_linearizable(&self) -> Result<()> {
        self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await?;
        Ok(())
    }

    /// Index of the last entry applied to the state machine on this node (0 before any; index 0
    /// is the group's initial membership entry).
    pub fn applied_index(&self) -> u64 {
        self.raft.metrics().borrow_watched().last_applied.map_or(0, |l| l.index)
    }

    /// Whether this node currently is the leader.
    pub fn is_leader(&self) -> bool {
        self.raft.is_leader()
    }

    /// The leader this node knows of.
    pub fn leader_id(&self) -> Option<u64> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The group's leader-contact clock (the transport touches it).
    pub fn contact_clock(&self) -> ContactClock {
        self.contact.clone()
    }

    /// How long this node has been without a working leader for the group: on the leader, the time since a
    /// quorum last acknowledged it; elsewhere, since a leader's last append request reached this node (both
    /// count from the group's open at most). A node cut off from the majority sees it grow without bound.
    pub fn leader_contact_age(&self) -> Duration {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        match (m.state, &m.last_quorum_acked) {
            (ServerState::Leader, Some(at)) => openraft::Instant::elapsed(&**at),
            _ => self.contact.age(),
        }
    }

    /// The group's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The openraft handle (for membership changes and metrics).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Waits until this node is the leader and its state machine has applied every entry
    /// committed before (its new term's first entry included), e.g. after a restart.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<()> {
        let id = self.node_id;
        let waited = self
            .raft
            .wait(Some(timeout))
            .metrics(move |m| m.state == ServerState::Leader && m.current_leader == Some(id), "this node is leader")
            .await;
        if let Err(e) = waited {
            return Err(match e {
                openraft::metrics::WaitError::ShuttingDown => Error::Shutdown,
                e => Error::Timeout(format!("waiting for leadership of node {id}: {e}")),
            });
        }
        match tokio::time::timeout(timeout, self.ensure_linearizable()).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout(format!("waiting for node {id} to apply its log"))),
        }
    }

    /// Stops the group: openraft shuts down, then the log store flushes and releases its
    /// directory. The group can be reopened afterwards. Idempotent.
    pub async fn shutdown(&self) -> Result<()> {
        self.stopped.store(true, Ordering::Release);
        let res = self.raft.shutdown().await;
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || log.close())
            .await
            .map_err(|e| Error::Fatal(format!("closing the log store failed: {e}")))?;
        res.map_err(|e| Error::Fatal(format!("raft task failed: {e}")))
    }
}
