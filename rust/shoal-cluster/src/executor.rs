//! The coordinator's request loops as sans-IO state machines: `ReadRound` owns a read's decisions (which
//! node gets which shards, when a slow request gets a hedged twin, when a failed shard is retried, backed off
//! or given up, when the read is over), `WriteAttempts` those of one shard's part of a write.
//! They send nothing, await nothing and read no clock: their drivers (`read_shards` in read_path.rs,
//! `shard_write` in write_path.rs) pass the time, the load figures and every answer in, and run the
//! requests they emit.
//!
//! ```text
//!   each shard of the read (one request may carry several shards of one node):
//!
//!                   plan: a replica not excluded for it         first answer
//!   start --> waiting ------------------------------> flying -------------> done
//!              ^  |  ^   (one request per node,        |  |  ^   (later answers are ignored)
//!              |  |  |    solo shards alone)           |  |  |
//!              |  +--+ every replica excluded: forget  |  +--+ hedge timer fired while flying:
//!              |       the exclusions, plan again      |       a twin request on another replica
//!              |       after the backoff (5 ms,        |
//!              |       doubling up to 200 ms)          |
//!              +------ retryable failure, no request --+
//!                      of the shard left (EachShard: exclude the node, follow the leader hint;
//!                      Unknown: the shard goes solo)
//!
//!   flying ----------> failed   every replica was unreachable twice (allow_partial; else the read fails)
//!   waiting, flying -> failed   the deadline passed (allow_partial; else the read fails)
//! ```
//!
//! The driver's loop: `ReadRound::plan` (when `ReadRound::plan_due`), stop once `ReadRound::is_over`,
//! wait for an answer or `ReadRound::next_wake`, feed it to `ReadRound::on_answer` or
//! `ReadRound::on_failure` (an `Err` is the read's failure), then `ReadRound::hedge` (when
//! `ReadRound::hedges_due`); at the end `ReadRound::finish` gives the failed shards or the read's error.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use shoal_core::dedup::RETRY_SPAN_MS;

use crate::levels::{FIRST_BACKOFF, LoadBalancing, MAX_BACKOFF, ReadLevel, WriteLevel};
use crate::planner::{self, NodeLoad, PlanContext, ShardSituation};
use crate::{Error, Result};

/// The fixed parameters of one read.
#[derive(Clone, Debug)]
pub(crate) struct RoundConfig {
    /// The collection's name (for error messages).
    pub(crate) collection: String,
    /// This (the coordinating) node.
    pub(crate) me: u64,
    /// Zone of every known node ("" = none).
    pub(crate) zones: HashMap<u64, String>,
    /// The read level.
    pub(crate) level: ReadLevel,
    /// The strategy among eligible replicas.
    pub(crate) strategy: LoadBalancing,
    /// Whether the node hedges slow requests at all.
    pub(crate) hedging: bool,
    /// Whether shards that fail or miss the deadline are reported instead of failing the read.
    pub(crate) allow_partial: bool,
    /// When the read must be answered.
    pub(crate) deadline: Instant,
    /// Work units of one shard of a request (the queries of a search, 1 otherwise): a request's hedge delay
    /// scales with its units.
    pub(crate) units_per_shard: usize,
}

/// A request the driver must send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Launch {
    /// The node asked.
    pub(crate) node: u64,
    /// The shards it reads: ascending in a planned request; in a twin, by slow request, then ascending.
    pub(crate) shards: Vec<u32>,
    /// Whether this is the hedged twin of a slow request (never hedged itself).
    pub(crate) hedge: bool,
}

/// A hedge timer: when it fires, the shards still flying get a twin request on another replica.
#[derive(Clone, Debug)]
struct HedgeTimer {
    /// When the request is late (its launch plus `planner::hedge_delay`).
    at: Instant,
    /// The node the slow request went to (not asked again by the twin).
    node: u64,
    /// The request's shards that may be read elsewhere (`planner::can_hedge`).
    shards: Vec<u32>,
}

/// The state of one read over its shards (see the module doc for the per-shard states).
#[derive(Debug)]
pub(crate) struct ReadRound {
    /// The read's fixed parameters.
    cfg: RoundConfig,
    /// Every shard of the read and what the planner knows of it; the keys never change, the leader guesses do.
    shards: BTreeMap<u32, ShardSituation>,
    /// Shards answered: keys of `shards`, never in `failed`, never leave.
    done: BTreeSet<u32>,
    /// Shards given up before the deadline (only with `allow_partial`): keys of `shards`, never in `done`,
    /// never leave.
    failed: BTreeSet<u32>,
    /// Shards to plan: neither done nor failed, and no request of theirs in flight.
    waiting: BTreeSet<u32>,
    /// Requests in flight per shard (missing = 0), twins included: a failed shard is re-planned only when its
    /// last request is over.
    flying: HashMap<u32, u32>,
    /// Replicas that failed a shard in this read, not asked for it again; emptied for a shard when it holds
    /// every replica (then the backoff starts).
    excluded: HashMap<u32, HashSet<u64>>,
    /// Unreachable answers per shard and node: a shard fails as soon as every replica gave two.
    unreachable: HashMap<u32, HashMap<u64, u32>>,
    /// Shards read one per request from now on: a request holding them with others failed, which shard the
    /// error was about is unknown (`planner::Blame::Unknown`). Only grows.
    solo: HashSet<u32>,
    /// No planning before this instant (a backoff runs while it is ahead of the time).
    retry_at: Instant,
    /// The next backoff: `FIRST_BACKOFF`, doubled each time one starts, at most `MAX_BACKOFF`.
    backoff: Duration,
    /// Hedge timers of the requests launched by `plan`, in launch order (only when hedging is on).
    hedges: Vec<HedgeTimer>,
    /// The last retryable error of a request, reported if shards are still pending at the deadline.
    last: Option<Error>,
}

impl ReadRound {
    /// A read of `shards` (their situations as known now), starting at `now` with every shard waiting.
    pub(crate) fn new(cfg: RoundConfig, shards: BTreeMap<u32, ShardSituation>, now: Instant) -> ReadRound {
        ReadRound {
            waiting: shards.keys().copied().collect(),
            shards,
            cfg,
            done: BTreeSet::new(),
            failed: BTreeSet::new(),
            flying: HashMap::new(),
            excluded: HashMap::new(),
            unreachable: HashMap::new(),
            solo: HashSet::new(),
            retry_at: now,
            backoff: FIRST_BACKOFF,
            hedges: Vec::new(),
            last: None,
        }
    }

    /// Whether the load figures `plan` gets need the p95 latencies (its requests may be hedged).
    pub(crate) fn needs_p95(&self) -> bool {
        self.cfg.hedging && self.cfg.level != ReadLevel::Strong
    }

    /// Whether [`ReadRound::plan`] has work at `now`: shards wait and no backoff runs.
    pub(crate) fn plan_due(&self, now: Instant) -> bool {
        !self.waiting.is_empty() && now >= self.retry_at
    }

    /// Plans the waiting shards at `now`, with the nodes' `loads` and the rotation `turn`: one request per
    /// node (solo shards alone), each with a hedge timer when hedging applies. Shards no replica can serve
    /// (all excluded) forget their exclusions and wait for the backoff. Nothing when not [`Self::plan_due`].
    pub(crate) fn plan(&mut self, now: Instant, loads: &HashMap<u64, NodeLoad>, turn: usize) -> Vec<Launch> {
        if !self.plan_due(now) {
            return Vec::new();
        }
        let subset: BTreeMap<u32, ShardSituation> =
            self.waiting.iter().filter_map(|s| self.shards.get(s).map(|sit| (*s, sit.clone()))).collect();
        let ctx = self.context(loads, turn);
        let (plan, unserved) = planner::plan_nodes(&ctx, &subset, &self.excluded);
        for s in unserved {
            // Every replica failed once: start over after a backoff.
            self.excluded.remove(&s);
            self.retry_at = self.after(now, self.backoff);
        }
        if self.retry_at > now {
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        }
        let mut out = Vec::new();
        for (node, shards) in planner::requests(plan, &self.solo) {
            for s in &shards {
                self.waiting.remove(s);
                let f = self.flying.entry(*s).or_default();
                *f = f.saturating_add(1);
            }
            let hedgeable: Vec<u32> = shards
                .iter()
                .copied()
                .filter(|s| self.shards.get(s).is_some_and(|sit| planner::can_hedge(self.cfg.level, sit)))
                .collect();
            if self.cfg.hedging && !hedgeable.is_empty() {
                let units = self.cfg.units_per_shard.max(1).saturating_mul(shards.len().max(1));
                let delay = planner::hedge_delay(&loads.get(&node).copied().unwrap_or_default(), units);
                self.hedges.push(HedgeTimer { at: self.after(now, delay), node, shards: hedgeable });
            }
            out.push(Launch { node, shards, hedge: false });
        }
        out
    }

    /// Whether the read is over at `now`: every shard done or failed, or the deadline reached.
    pub(crate) fn is_over(&self, now: Instant) -> bool {
        self.pending() == 0 || now >= self.cfg.deadline
    }

    /// Shards neither done nor failed.
    pub(crate) fn pending(&self) -> usize {
        self.shards.len().saturating_sub(self.done.len() + self.failed.len())
    }

    /// When the driver must call again if no answer comes: the deadline, the end of a running backoff while
    /// shards wait, the first hedge timer.
    pub(crate) fn next_wake(&self) -> Instant {
        let mut wake = self.cfg.deadline;
        if !self.waiting.is_empty() {
            wake = wake.min(self.retry_at);
        }
        if let Some(h) = self.hedges.iter().map(|h| h.at).min() {
            wake = wake.min(h);
        }
        wake
    }

    /// A request for `shards` answered: returns the shards whose answer counts (not done nor failed before:
    /// the first answer wins), which are done from now on.
    pub(crate) fn on_answer(&mut self, shards: &[u32]) -> Vec<u32> {
        self.landed(shards);
        let accepted: Vec<u32> = shards.iter().copied().filter(|s| self.is_open(*s)).collect();
        for s in shards {
            if self.shards.contains_key(s) && !self.failed.contains(s) {
                self.done.insert(*s);
            }
            self.waiting.remove(s);
        }
        accepted
    }

    /// A request to `node` for `shards` failed with `error`; `cut_off` is this node's cut-off error (see
    /// `Engine::cut_off`), if it is cut off from the cluster's majority. `Err` is the read's failure: the
    /// error is not one to retry, or the node is cut off and the local replicas will not do (an eventual
    /// read of local shards only), or a shard has no reachable replica and partial results are not allowed.
    /// Otherwise the shards go back to waiting (once their last request is over): without the node, after
    /// its leader hint, or alone in their next request when the error may be about any of them.
    pub(crate) fn on_failure(&mut self, node: u64, shards: &[u32], error: Error, cut_off: Option<Error>) -> Result<()> {
        self.landed(shards);
        if !(error.is_retryable() || matches!(error, Error::Timeout(_) | Error::Consistency(_))) {
            return Err(error);
        }
        // Cut off from the majority: a read this node cannot serve from its own replicas fails over (reads
        // change nothing) to a node that may reach the others. An eventual read of a shard held here is
        // retried on the local replica as usual.
        let local_will_do = self.cfg.level == ReadLevel::Eventual
            && shards.iter().all(|s| self.shards.get(s).is_some_and(|sit| sit.local));
        if !local_will_do && let Some(cut) = cut_off {
            let name = &self.cfg.collection;
            return Err(cut.context(&format!("reading collection {name:?}: {error}")));
        }
        let down = matches!(error, Error::NodeUnavailable(_));
        let open: Vec<u32> = shards.iter().copied().filter(|s| self.is_open(*s)).collect();
        if planner::blame(open.len(), down) == planner::Blame::Unknown {
            for s in open {
                self.solo.insert(s);
                self.wait_if_idle(s);
            }
            self.last = Some(error);
            return Ok(());
        }
        for &s in shards {
            if !self.is_open(s) {
                continue;
            }
            let Some(sit) = self.shards.get_mut(&s) else { continue };
            self.excluded.entry(s).or_default().insert(node);
            match error.leader_hint() {
                Some(l) if l != node => sit.leader = Some(l),
                _ if sit.leader == Some(node) => sit.leader = None,
                _ => {}
            }
            if down {
                let u = self.unreachable.entry(s).or_default();
                let n = u.entry(node).or_default();
                *n = n.saturating_add(1);
                if sit.replicas.iter().all(|r| u.get(r).copied().unwrap_or(0) >= 2) {
                    let name = &self.cfg.collection;
                    let msg = format!(
                        "shard {s} of collection {name:?} has no reachable replica (nodes {:?}): {error}",
                        sit.replicas
                    );
                    if !self.cfg.allow_partial {
                        return Err(Error::ShardUnavailable(msg.into()));
                    }
                    tracing::debug!("{msg}");
                    self.failed.insert(s);
                    self.waiting.remove(&s);
                    continue;
                }
            }
            self.wait_if_idle(s);
        }
        self.last = Some(error);
        Ok(())
    }

    /// Hedge timers that fired by `now` ([`ReadRound::hedge`] uses one rotation turn for each).
    pub(crate) fn hedges_due(&self, now: Instant) -> usize {
        self.hedges.iter().filter(|h| h.at <= now).count()
    }

    /// Fires the hedge timers due at `now`: each shard of theirs still flying gets a twin request on another
    /// replica than the slow one (none left: no twin), one request per node. `first_turn` is the first of
    /// [`ReadRound::hedges_due`] consecutive rotation turns, one per timer.
    pub(crate) fn hedge(&mut self, now: Instant, loads: &HashMap<u64, NodeLoad>, first_turn: usize) -> Vec<Launch> {
        let (due, later): (Vec<HedgeTimer>, Vec<HedgeTimer>) = self.hedges.drain(..).partition(|h| h.at <= now);
        self.hedges = later;
        let mut twins: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        for (i, timer) in due.into_iter().enumerate() {
            let ctx = self.context(loads, first_turn.wrapping_add(i));
            for s in timer.shards {
                if !self.is_open(s) || self.flying.get(&s).copied().unwrap_or(0) == 0 {
                    continue;
                }
                let Some(sit) = self.shards.get(&s) else { continue };
                let mut ex = self.excluded.get(&s).cloned().unwrap_or_default();
                ex.insert(timer.node);
                if let Some(other) = planner::choose_replica(&ctx, sit, &ex) {
                    twins.entry(other).or_default().push(s);
                }
            }
        }
        let mut out = Vec::with_capacity(twins.len());
        for (node, shards) in twins {
            for s in &shards {
                let f = self.flying.entry(*s).or_default();
                *f = f.saturating_add(1);
            }
            out.push(Launch { node, shards, hedge: true });
        }
        out
    }

    /// The end of the read: the failed shards, ascending (only with `allow_partial`; the shards not done
    /// join them), or the read's error when shards are not done: `Consistency` when the last error was one
    /// or the read was strong (no leader confirmed), else `Timeout`.
    pub(crate) fn finish(self) -> Result<Vec<u32>> {
        let mut failed = self.failed;
        let pending: Vec<u32> =
            self.shards.keys().copied().filter(|s| !self.done.contains(s) && !failed.contains(s)).collect();
        if !pending.is_empty() {
            let why = self.last.as_ref().map_or_else(|| "no replica answered".to_string(), |e| e.to_string());
            let (name, level) = (&self.cfg.collection, self.cfg.level);
            let msg = format!(
                "shards {pending:?} of collection {name:?} could not be read at level {level:?} within the timeout: {why}"
            );
            if !self.cfg.allow_partial {
                // A strong read that no leader could confirm did not meet its level (DESIGN §3): that is a
                // ConsistencyError, whatever the last replica said (often "not the leader").
                return Err(match self.last {
                    Some(Error::Consistency(_)) => Error::Consistency(msg.into()),
                    _ if level == ReadLevel::Strong => Error::Consistency(msg.into()),
                    _ => Error::Timeout(msg.into()),
                });
            }
            failed.extend(pending);
        }
        Ok(failed.into_iter().collect())
    }

    /// The planner's context with `loads` and `turn`.
    fn context<'a>(&'a self, loads: &'a HashMap<u64, NodeLoad>, turn: usize) -> PlanContext<'a> {
        PlanContext {
            me: self.cfg.me,
            zones: &self.cfg.zones,
            loads,
            level: self.cfg.level,
            strategy: self.cfg.strategy,
            turn,
        }
    }

    /// `now + d`, or the deadline when that is past the clock's range.
    fn after(&self, now: Instant, d: Duration) -> Instant {
        now.checked_add(d).unwrap_or(self.cfg.deadline.max(now))
    }

    /// Whether `s` is a shard of the read still to answer.
    fn is_open(&self, s: u32) -> bool {
        self.shards.contains_key(&s) && !self.done.contains(&s) && !self.failed.contains(&s)
    }

    /// One request of each of `shards` is over.
    fn landed(&mut self, shards: &[u32]) {
        for s in shards {
            if let Some(f) = self.flying.get_mut(s) {
                *f = f.saturating_sub(1);
            }
        }
    }

    /// Puts `s` back to waiting when no request of it is in flight.
    fn wait_if_idle(&mut self, s: u32) {
        if self.flying.get(&s).copied().unwrap_or(0) == 0 {
            self.waiting.insert(s);
        }
    }
}

/// What the write driver does next for one shard's part (see [`WriteAttempts::next`]).
#[derive(Debug)]
pub(crate) enum WriteStep {
    /// Send the part to `target`, waiting at most `left` for its answer.
    Send {
        /// The node asked (a replica of the shard).
        target: u64,
        /// Time left for this attempt (until the deadline or the end of re-sending).
        left: Duration,
    },
    /// Every replica failed: sleep this long (a backoff), then ask for the next step.
    Sleep(Duration),
    /// Give up: the write was not acknowledged in time.
    Fail(Error),
}

/// What follows a failed attempt (see [`WriteAttempts::on_failure`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// The node named another leader: the driver records it as the shard's leader hint, and the next
    /// step (at once) asks it.
    FollowLeader(u64),
    /// Sleep this long (a backoff), then ask for the next step.
    Sleep(Duration),
}

/// The attempts at writing one shard's part on its leader, following leader changes until the deadline
/// (`shard_write` in write_path.rs is its driver). Sans-IO like [`ReadRound`]: one attempt at a time.
///
/// ```text
///   next --> Send(target) --answer--> done (the driver records target as the shard's leader)
///    ^ |          |
///    | |          +-- failure naming another leader --> FollowLeader(l): l is asked next, at once
///    | |          +-- other retryable failure --------> Sleep(backoff); target not asked again
///    | |          +-- not retryable, or cut off ------> the write's error
///    | +-- every replica failed: forget them, Sleep(backoff)
///    +---- after each Sleep
///   next --> Fail (Consistency)   the deadline, or the end of re-sending, passed
/// ```
#[derive(Debug)]
pub(crate) struct WriteAttempts {
    /// The collection's name (for error messages).
    collection: String,
    /// The shard written.
    shard: u32,
    /// The write level (for error messages).
    level: WriteLevel,
    /// The shard's replicas: the only nodes ever asked.
    replicas: Vec<u64>,
    /// When the write must be acknowledged.
    deadline: Instant,
    /// No attempt starts after this (`RETRY_SPAN_MS` after the first, inside the shards' dedup window).
    resend_until: Instant,
    /// Nodes that failed the part, not asked again until every replica is in it (then it is emptied).
    failed: HashSet<u64>,
    /// The leader named by the last failure, asked first by the next attempt (then forgotten); never in `failed`.
    hint: Option<u64>,
    /// The next backoff: `FIRST_BACKOFF`, doubled after each use, at most `MAX_BACKOFF`.
    backoff: Duration,
    /// The last retryable error, reported when the write gives up.
    last: Option<Error>,
    /// Attempts sent so far (one may have been applied even though it failed).
    attempts: u32,
}

impl WriteAttempts {
    /// The attempts at writing `shard` of `collection` (on `replicas`) at `level`, starting at `now`.
    pub(crate) fn new(
        collection: &str,
        shard: u32,
        level: WriteLevel,
        replicas: Vec<u64>,
        deadline: Instant,
        now: Instant,
    ) -> WriteAttempts {
        WriteAttempts {
            collection: collection.to_string(),
            shard,
            level,
            replicas,
            deadline,
            resend_until: now.checked_add(Duration::from_millis(RETRY_SPAN_MS)).unwrap_or(deadline),
            failed: HashSet::new(),
            hint: None,
            backoff: FIRST_BACKOFF,
            last: None,
            attempts: 0,
        }
    }

    /// The next step at `now`; `guess` is the shard's likely leader as this node knows it (asked after the
    /// hint, before the other replicas in placement order).
    pub(crate) fn next(&mut self, now: Instant, guess: Option<u64>) -> WriteStep {
        let left = self.deadline.min(self.resend_until).saturating_duration_since(now);
        if left.is_zero() {
            let why = self.last.as_ref().map_or_else(|| "no attempt finished".to_string(), |e| e.to_string());
            let may = if self.attempts > 0 { " It may still have been applied." } else { "" };
            return WriteStep::Fail(Error::Consistency(
                format!(
                    "{} write to shard {} of collection {:?} not acknowledged within the timeout (no leader with a \
                 majority of its replicas reachable?): {why}.{may}",
                    self.level.as_str(),
                    self.shard,
                    self.collection
                )
                .into(),
            ));
        }
        let target = [self.hint.take(), guess]
            .into_iter()
            .flatten()
            .chain(self.replicas.iter().copied())
            .find(|n| !self.failed.contains(n) && self.replicas.contains(n));
        let Some(target) = target else {
            self.failed.clear();
            return WriteStep::Sleep(self.take_backoff(left));
        };
        self.attempts = self.attempts.saturating_add(1);
        WriteStep::Send { target, left }
    }

    /// The attempt on `target` failed at `now` with `error`; `cut_off` is this node's cut-off error (see
    /// `Engine::cut_off`), if it is cut off from the cluster's majority. `Err` is the write's failure: the
    /// error is not one to retry, or this node is cut off (the client fails over and re-sends with the
    /// same write id, which cannot apply twice).
    pub(crate) fn on_failure(
        &mut self,
        now: Instant,
        target: u64,
        error: Error,
        cut_off: Option<Error>,
    ) -> Result<Retry> {
        if !(error.is_retryable() || matches!(error, Error::Timeout(_))) {
            return Err(error);
        }
        if let Some(cut) = cut_off {
            // Another node may reach the leader: the client fails over on NodeUnavailable and re-sends with
            // the same write id, which cannot apply twice.
            return Err(cut.context(&format!(
                "{} write to shard {} of collection {:?} (it may have been applied: {error})",
                self.level.as_str(),
                self.shard,
                self.collection
            )));
        }
        self.failed.insert(target);
        let hint = error.leader_hint().filter(|l| *l != target);
        self.last = Some(error);
        if let Some(l) = hint {
            // A fresh hint: try it at once.
            self.hint = Some(l);
            self.failed.remove(&l);
            return Ok(Retry::FollowLeader(l));
        }
        Ok(Retry::Sleep(self.take_backoff(self.deadline.saturating_duration_since(now))))
    }

    /// The backoff to sleep now (at most `left`); the next one is twice as long, up to `MAX_BACKOFF`.
    fn take_backoff(&mut self, left: Duration) -> Duration {
        let d = self.backoff.min(left);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHARD_0_ONLY: &[u32] = &[0];

    fn sit(replicas: &[u64], leader: Option<u64>, local: bool) -> ShardSituation {
        ShardSituation { replicas: replicas.to_vec(), leader, local, has_token: false }
    }

    fn ms(t: Instant, n: u64) -> Instant {
        t + Duration::from_millis(n)
    }

    /// A read at `t0` on coordinator 1 (round robin, hedging on, deadline after 1 s).
    fn round(t0: Instant, level: ReadLevel, allow_partial: bool, shards: &[(u32, ShardSituation)]) -> ReadRound {
        let cfg = RoundConfig {
            collection: "c".into(),
            me: 1,
            zones: HashMap::new(),
            level,
            strategy: LoadBalancing::RoundRobin,
            hedging: true,
            allow_partial,
            deadline: ms(t0, 1000),
            units_per_shard: 1,
        };
        ReadRound::new(cfg, shards.iter().cloned().collect(), t0)
    }

    fn launch(node: u64, shards: &[u32]) -> Vec<Launch> {
        vec![Launch { node, shards: shards.to_vec(), hedge: false }]
    }

    fn twin(node: u64, shards: &[u32]) -> Vec<Launch> {
        vec![Launch { node, shards: shards.to_vec(), hedge: true }]
    }

    fn unavailable() -> Error {
        Error::ShardUnavailable("replica not open".into())
    }

    fn down() -> Error {
        Error::NodeUnavailable("connection refused".into())
    }

    #[test]
    fn a_slow_request_is_hedged_on_another_replica_and_the_first_answer_wins() {
        let t0 = Instant::now();
        let none = HashMap::new();
        let mut r = round(t0, ReadLevel::Eventual, false, &[(0, sit(&[2, 3], None, false))]);
        assert_eq!(r.plan(t0, &none, 0), launch(2, SHARD_0_ONLY));
        // No p95 for node 2 yet: the default delay.
        let due = t0 + planner::DEFAULT_HEDGE_DELAY;
        assert_eq!(r.next_wake(), due);
        assert_eq!(r.hedges_due(due - Duration::from_millis(1)), 0);
        assert_eq!(r.hedges_due(due), 1);
        assert_eq!(r.hedge(due, &none, 0), twin(3, SHARD_0_ONLY), "the twin avoids the slow node");
        assert_eq!(r.next_wake(), ms(t0, 1000), "a timer fires once");
        // The twin answers first; the slow request's answer, and its failure, change nothing after it.
        assert_eq!(r.on_answer(&[0]), vec![0]);
        assert!(r.is_over(ms(t0, 60)));
        assert_eq!(r.on_answer(&[0]), Vec::<u32>::new());
        assert!(r.on_failure(2, &[0], down(), None).is_ok());
        assert!(r.plan(ms(t0, 70), &none, 0).is_empty());
        assert_eq!(r.finish().unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn hedges_follow_the_nodes_p95_and_skip_answered_shards_and_strong_reads() {
        let t0 = Instant::now();
        let loads = HashMap::from([(2, NodeLoad { p95_ms: Some(3.0), ..Default::default() })]);
        let shards = [(0, sit(&[2, 3], None, false)), (1, sit(&[2, 4], None, false))];
        let mut r = round(t0, ReadLevel::Eventual, false, &shards);
        assert_eq!(r.plan(t0, &loads, 0), launch(2, &[0, 1]));
        // Two shards of one query: 2 units of 3 ms.
        assert_eq!(r.next_wake(), ms(t0, 6));
        // Shard 1 answered by another request in the meantime (a request for it alone): only shard 0 is hedged.
        assert_eq!(r.on_answer(&[1]), vec![1]);
        assert_eq!(r.hedge(ms(t0, 6), &loads, 0), twin(3, SHARD_0_ONLY));

        // Strong reads only go to the leader: no hedge timer.
        let mut r = round(t0, ReadLevel::Strong, false, &[(0, sit(&[2, 3], Some(2), false))]);
        assert_eq!(r.plan(t0, &loads, 0), launch(2, SHARD_0_ONLY));
        assert_eq!(r.next_wake(), ms(t0, 1000));
        assert_eq!(r.hedges_due(ms(t0, 999)), 0);
        // No replica but the slow one: no twin.
        let mut r = round(t0, ReadLevel::Eventual, false, &[(0, sit(&[2], None, false))]);
        assert_eq!(r.plan(t0, &loads, 0), launch(2, SHARD_0_ONLY));
        assert!(r.hedge(ms(t0, 6), &loads, 0).is_empty());
    }

    #[test]
    fn a_retryable_failure_moves_the_shard_to_another_replica() {
        let t0 = Instant::now();
        let none = HashMap::new();
        let mut r = round(t0, ReadLevel::Eventual, false, &[(0, sit(&[2, 3, 4], None, false))]);
        assert_eq!(r.plan(t0, &none, 0), launch(2, SHARD_0_ONLY));
        r.on_failure(2, &[0], unavailable(), None).unwrap();
        let t1 = ms(t0, 1);
        assert!(r.plan_due(t1), "no backoff while a replica is left");
        assert_eq!(r.plan(t1, &none, 0), launch(3, SHARD_0_ONLY), "node 2 is excluded");
        r.on_failure(3, &[0], unavailable(), None).unwrap();
        assert_eq!(r.plan(t1, &none, 0), launch(4, SHARD_0_ONLY));
        assert_eq!(r.on_answer(&[0]), vec![0]);
        assert_eq!(r.finish().unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn a_strong_read_follows_the_leader_hint() {
        let t0 = Instant::now();
        let none = HashMap::new();
        let mut r = round(t0, ReadLevel::Strong, false, &[(0, sit(&[2, 3, 4], Some(2), false))]);
        assert_eq!(r.plan(t0, &none, 0), launch(2, SHARD_0_ONLY));
        r.on_failure(2, &[0], Error::not_leader(Some(4)), None).unwrap();
        assert_eq!(r.plan(t0, &none, 0), launch(4, SHARD_0_ONLY));
        // A node that was guessed leader and fails without a hint loses the guess: the first replica left.
        r.on_failure(4, &[0], unavailable(), None).unwrap();
        assert_eq!(r.plan(t0, &none, 0), launch(3, SHARD_0_ONLY));
    }

    #[test]
    fn every_replica_failed_once_means_a_backoff_doubling_to_the_max() {
        let t0 = Instant::now();
        let none = HashMap::new();
        // Strong (no hedge timers): the first replica not excluded.
        let mut r = round(t0, ReadLevel::Strong, false, &[(0, sit(&[2, 3], None, false))]);
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..8 {
            assert!(r.plan_due(now));
            assert_eq!(r.plan(now, &none, 0), launch(2, SHARD_0_ONLY));
            r.on_failure(2, &[0], unavailable(), None).unwrap();
            assert_eq!(r.plan(now, &none, 0), launch(3, SHARD_0_ONLY));
            r.on_failure(3, &[0], unavailable(), None).unwrap();
            // Both excluded: nothing to send, the exclusions are forgotten and a backoff starts.
            assert!(r.plan(now, &none, 0).is_empty());
            let wake = r.next_wake();
            assert!(!r.plan_due(wake - Duration::from_nanos(1)));
            assert!(r.plan(wake - Duration::from_nanos(1), &none, 0).is_empty());
            waits.push(wake - now);
            now = wake;
        }
        let ms = Duration::from_millis;
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 200, 200].map(ms));
        assert_eq!(waits[0], FIRST_BACKOFF);
        assert!(!r.is_over(now));
    }

    #[test]
    fn a_shard_unreachable_twice_on_every_replica_fails_at_once() {
        let t0 = Instant::now();
        let none = HashMap::new();
        let shards = [(0, sit(&[2, 3], None, false)), (1, sit(&[4], None, false))];
        for allow_partial in [false, true] {
            let mut r = round(t0, ReadLevel::Eventual, allow_partial, &shards);
            assert_eq!(r.plan(t0, &none, 0), [launch(2, &[0]), launch(4, &[1])].concat());
            assert_eq!(r.on_answer(&[1]), vec![1]);
            r.on_failure(2, &[0], down(), None).unwrap();
            assert_eq!(r.plan(t0, &none, 0), launch(3, SHARD_0_ONLY));
            r.on_failure(3, &[0], down(), None).unwrap();
            assert!(r.plan(t0, &none, 0).is_empty(), "backoff");
            let t1 = r.next_wake();
            assert_eq!(r.plan(t1, &none, 0), launch(2, SHARD_0_ONLY));
            r.on_failure(2, &[0], down(), None).unwrap();
            assert_eq!(r.plan(t1, &none, 0), launch(3, SHARD_0_ONLY));
            let res = r.on_failure(3, &[0], down(), None);
            if !allow_partial {
                let e = res.unwrap_err();
                assert!(matches!(e, Error::ShardUnavailable(_)), "{e}");
                assert!(
                    e.to_string().contains(
                        "shard 0 of collection \"c\" has no reachable replica (nodes [2, 3]): node unavailable: \
                         connection refused"
                    ),
                    "{e}"
                );
                continue;
            }
            res.unwrap();
            assert!(r.is_over(t1), "well before the deadline");
            assert_eq!(r.on_answer(&[0]), Vec::<u32>::new(), "a failed shard takes no late answer");
            assert_eq!(r.finish().unwrap(), vec![0]);
        }
    }

    #[test]
    fn unreachable_counts_only_when_the_node_is_down() {
        let t0 = Instant::now();
        let none = HashMap::new();
        let mut r = round(t0, ReadLevel::Eventual, false, &[(0, sit(&[2], None, false))]);
        for _ in 0..4 {
            let now = r.next_wake().max(t0);
            assert_eq!(r.plan(now, &none, 0), launch(2, SHARD_0_ONLY));
            r.on_failure(2, &[0], unavailable(), None).unwrap();
            assert!(r.plan(now, &none, 0).is_empty());
        }
        assert_eq!(r.pending(), 1);
    }

    #[test]
    fn at_the_deadline_the_pending_shards_fail() {
        let t0 = Instant::now();
        let none = HashMap::new();
        let deadline = ms(t0, 1000);
        let shards = [(0, sit(&[2], None, false)), (1, sit(&[3], None, false)), (2, sit(&[3], None, false))];
        let start = |level, allow_partial| {
            let mut r = round(t0, level, allow_partial, &shards);
            assert_eq!(r.plan(t0, &none, 0), [launch(2, &[0]), launch(3, &[1, 2])].concat());
            assert_eq!(r.on_answer(&[0]), vec![0]);
            r
        };
        // With allow_partial: what answered, the rest listed.
        let r = start(ReadLevel::Eventual, true);
        assert!(!r.is_over(deadline - Duration::from_millis(1)));
        assert!(r.is_over(deadline));
        assert_eq!(r.finish().unwrap(), vec![1, 2]);
        // Without: a timeout naming the shards and the last error.
        let mut r = start(ReadLevel::Eventual, false);
        r.on_failure(3, &[1, 2], unavailable(), None).unwrap();
        let e = r.finish().unwrap_err();
        assert!(matches!(e, Error::Timeout(_)), "{e}");
        assert!(
            e.to_string().contains(
                "shards [1, 2] of collection \"c\" could not be read at level Eventual within the timeout: shard \
                 unavailable: replica not open"
            ),
            "{e}"
        );
        let r = start(ReadLevel::Eventual, false);
        assert!(r.finish().unwrap_err().to_string().ends_with("within the timeout: no replica answered"));
        // A strong read, or a last error about consistency, misses its level.
        let r = start(ReadLevel::Strong, false);
        assert!(matches!(r.finish(), Err(Error::Consistency(_))));
        let mut r = start(ReadLevel::Eventual, false);
        r.on_failure(3, &[1, 2], Error::Consistency("leadership not confirmed".into()), None).unwrap();
        assert!(matches!(r.finish(), Err(Error::Consistency(_))));
    }

    #[test]
    fn answers_count_once_per_shard() {
        let t0 = Instant::now();
        let none = HashMap::new();
        let shards = [(0, sit(&[2], None, false)), (1, sit(&[2], None, false))];
        let mut r = round(t0, ReadLevel::Eventual, false, &shards);
        assert_eq!(r.plan(t0, &none, 0), launch(2, &[0, 1]));
        assert_eq!(r.on_answer(&[1]), vec![1]);
        assert_eq!(r.pending(), 1);
        assert_eq!(r.on_answer(&[0, 1]), vec![0], "shard 1 was answered already");
        assert_eq!(r.on_answer(&[0, 1, 7]), Vec::<u32>::new(), "shard 7 is not part of the read");
        assert_eq!(r.pending(), 0);
        assert!(r.is_over(t0));
        assert_eq!(r.finish().unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn a_failure_of_several_shards_sends_each_alone_without_blaming_the_node() {
        let t0 = Instant::now();
        let none = HashMap::new();
        let shards = [(0, sit(&[2, 3], Some(2), false)), (1, sit(&[2, 3], Some(2), false))];
        let mut r = round(t0, ReadLevel::Strong, false, &shards);
        assert_eq!(r.plan(t0, &none, 0), launch(2, &[0, 1]));
        // "Not the leader (leader: 3)" about one of the two: no leader guess changes, node 2 is not excluded.
        r.on_failure(2, &[0, 1], Error::not_leader(Some(3)), None).unwrap();
        assert!(r.plan_due(t0), "no backoff");
        assert_eq!(r.plan(t0, &none, 0), [launch(2, &[0]), launch(2, &[1])].concat());
        // Alone, the error is about its shard: the hint is followed.
        r.on_failure(2, &[1], Error::not_leader(Some(3)), None).unwrap();
        assert_eq!(r.plan(t0, &none, 0), launch(3, &[1]));
        assert_eq!(r.on_answer(&[0]), vec![0]);
        assert_eq!(r.on_answer(&[1]), vec![1]);
        assert_eq!(r.finish().unwrap(), Vec::<u32>::new());

        // An unreachable node is blamed for each of its shards (they all move on at once).
        let mut r = round(t0, ReadLevel::Strong, false, &shards);
        assert_eq!(r.plan(t0, &none, 0), launch(2, &[0, 1]));
        r.on_failure(2, &[0, 1], down(), None).unwrap();
        assert_eq!(r.plan(t0, &none, 0), launch(3, &[0, 1]));
    }

    #[test]
    fn a_shard_is_replanned_only_when_its_last_request_is_over() {
        let t0 = Instant::now();
        let none = HashMap::new();
        let mut r = round(t0, ReadLevel::Eventual, false, &[(0, sit(&[2, 3, 4], None, false))]);
        assert_eq!(r.plan(t0, &none, 0), launch(2, SHARD_0_ONLY));
        let due = t0 + planner::DEFAULT_HEDGE_DELAY;
        assert_eq!(r.hedge(due, &none, 0), twin(3, SHARD_0_ONLY));
        r.on_failure(2, &[0], unavailable(), None).unwrap();
        assert!(!r.plan_due(due), "the twin is still out");
        r.on_failure(3, &[0], unavailable(), None).unwrap();
        assert_eq!(r.plan(due, &none, 0), launch(4, SHARD_0_ONLY), "neither failed node is asked again");
    }

    #[test]
    fn errors_that_are_not_retried_end_the_read() {
        let t0 = Instant::now();
        let none = HashMap::new();
        let mut r = round(t0, ReadLevel::Eventual, false, &[(0, sit(&[2, 3], None, false))]);
        r.plan(t0, &none, 0);
        let e = r.on_failure(2, &[0], Error::InvalidArgument("bad filter".into()), None).unwrap_err();
        assert_eq!(e.to_string(), "bad filter");
    }

    #[test]
    fn a_cut_off_node_fails_the_read_unless_its_own_replicas_will_do() {
        let t0 = Instant::now();
        let none = HashMap::new();
        let cut = || Some(Error::NodeUnavailable("node 1 is cut off".into()));
        // An eventual read of a shard held here retries on the local replica.
        let mut r = round(t0, ReadLevel::Eventual, false, &[(0, sit(&[1, 2], None, true))]);
        assert_eq!(r.plan(t0, &none, 1), launch(2, SHARD_0_ONLY));
        r.on_failure(2, &[0], unavailable(), cut()).unwrap();
        assert_eq!(r.plan(t0, &none, 0), launch(1, SHARD_0_ONLY));
        // Any other read fails over to another node.
        let mut r = round(t0, ReadLevel::Session, false, &[(0, sit(&[1, 2], None, true))]);
        assert_eq!(r.plan(t0, &none, 1), launch(2, SHARD_0_ONLY));
        let e = r.on_failure(2, &[0], unavailable(), cut()).unwrap_err();
        assert!(matches!(e, Error::NodeUnavailable(_)), "{e}");
        assert_eq!(
            e.to_string(),
            "node unavailable: reading collection \"c\": shard unavailable: replica not open: node 1 is cut off"
        );
    }

    #[test]
    fn no_shards_or_unknown_shards_are_no_trouble() {
        let t0 = Instant::now();
        let none = HashMap::new();
        let mut r = round(t0, ReadLevel::Eventual, false, &[]);
        assert!(r.is_over(t0));
        assert!(!r.plan_due(t0));
        assert!(r.plan(t0, &none, 0).is_empty());
        assert_eq!(r.next_wake(), ms(t0, 1000));
        r.on_failure(5, &[3, 4], down(), None).unwrap();
        r.on_failure(5, &[3], Error::not_leader(Some(9)), None).unwrap();
        assert!(r.on_answer(&[3]).is_empty());
        assert_eq!(r.hedges_due(ms(t0, 5000)), 0);
        assert_eq!(r.finish().unwrap(), Vec::<u32>::new());
        // A shard without replicas (not placed) backs off until the deadline.
        let mut r = round(t0, ReadLevel::Strong, false, &[(0, sit(&[], None, false))]);
        assert!(r.plan(t0, &none, usize::MAX).is_empty());
        assert_eq!(r.next_wake(), ms(t0, 5));
        assert!(matches!(r.finish(), Err(Error::Consistency(_))));
    }

    fn send(step: WriteStep) -> u64 {
        match step {
            WriteStep::Send { target, .. } => target,
            o => panic!("expected a send, got {o:?}"),
        }
    }

    fn sleep(step: WriteStep) -> Duration {
        match step {
            WriteStep::Sleep(d) => d,
            o => panic!("expected a sleep, got {o:?}"),
        }
    }

    fn write(t0: Instant, timeout_ms: u64) -> WriteAttempts {
        WriteAttempts::new("c", 3, WriteLevel::Quorum, vec![2, 3, 4], ms(t0, timeout_ms), t0)
    }

    #[test]
    fn a_write_asks_the_hint_then_the_guess_then_the_replicas_in_order() {
        let t0 = Instant::now();
        let mut w = write(t0, 1000);
        assert_eq!(send(w.next(t0, Some(3))), 3, "the guessed leader first");
        let not_leader = |l| Error::not_leader(Some(l));
        assert_eq!(w.on_failure(t0, 3, not_leader(4), None).unwrap(), Retry::FollowLeader(4));
        assert_eq!(send(w.next(t0, Some(3))), 4, "the hint before the (stale) guess");
        // A hint naming the node itself is no hint: a backoff, and the next replica not failed.
        assert_eq!(w.on_failure(t0, 4, not_leader(4), None).unwrap(), Retry::Sleep(FIRST_BACKOFF));
        assert_eq!(send(w.next(t0, Some(3))), 2);
        // A hint outside the shard's replicas is not followed.
        assert_eq!(w.on_failure(t0, 2, not_leader(9), None).unwrap(), Retry::FollowLeader(9));
        assert_eq!(sleep(w.next(t0, None)), 2 * FIRST_BACKOFF, "2, 3 and 4 failed: start over");
        assert_eq!(send(w.next(t0, None)), 2);
    }

    #[test]
    fn write_backoffs_double_up_to_the_max_and_stop_at_the_deadline() {
        let t0 = Instant::now();
        let mut w = write(t0, 1000);
        let mut slept = Vec::new();
        for _ in 0..3 {
            let target = send(w.next(t0, None));
            slept.push(match w.on_failure(t0, target, unavailable(), None).unwrap() {
                Retry::Sleep(d) => d,
                o => panic!("{o:?}"),
            });
        }
        slept.push(sleep(w.next(t0, None)));
        assert_eq!(slept, [5, 10, 20, 40].map(Duration::from_millis), "the last one: every replica failed");
        for _ in 0..3 {
            let target = send(w.next(t0, None));
            w.on_failure(t0, target, unavailable(), None).unwrap();
        }
        assert_eq!(sleep(w.next(t0, None)), MAX_BACKOFF);
        // Never past the deadline.
        let target = send(w.next(ms(t0, 950), None));
        assert_eq!(w.on_failure(ms(t0, 950), target, unavailable(), None).unwrap(), Retry::Sleep(ms_dur(50)));
        match w.next(ms(t0, 1000), None) {
            WriteStep::Fail(Error::Consistency(m)) => assert_eq!(
                m.message(),
                "quorum write to shard 3 of collection \"c\" not acknowledged within the timeout (no leader with a \
                 majority of its replicas reachable?): shard unavailable: replica not open. It may still have \
                 been applied."
            ),
            o => panic!("{o:?}"),
        }
    }

    fn ms_dur(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_write_stops_re_sending_at_the_end_of_the_retry_span() {
        let t0 = Instant::now();
        let span = RETRY_SPAN_MS;
        let mut w = write(t0, 10 * span);
        assert_eq!(send(w.next(ms(t0, span - 1), None)), 2);
        assert!(matches!(w.next(ms(t0, span), None), WriteStep::Fail(Error::Consistency(_))));
        // Nothing sent: no "may have been applied".
        let mut w = write(t0, 0);
        match w.next(t0, None) {
            WriteStep::Fail(e) => assert!(e.to_string().ends_with("reachable?): no attempt finished."), "{e}"),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn a_write_fails_on_errors_not_retried_and_when_cut_off() {
        let t0 = Instant::now();
        let mut w = write(t0, 1000);
        let target = send(w.next(t0, None));
        let e = w.on_failure(t0, target, Error::Storage("disk full".into()), None).unwrap_err();
        assert!(matches!(e, Error::Storage(_)));
        let cut = Some(Error::NodeUnavailable("node 1 is cut off".into()));
        let e = w.on_failure(t0, target, Error::Timeout("slow".into()), cut).unwrap_err();
        assert_eq!(
            e.to_string(),
            "node unavailable: quorum write to shard 3 of collection \"c\" (it may have been applied: deadline \
             exceeded: slow): node 1 is cut off"
        );
        // A consistency error is not retried by a write.
        let e = w.on_failure(t0, target, Error::Consistency("expired".into()), None).unwrap_err();
        assert!(matches!(e, Error::Consistency(_)));
    }
}
