//! Query planning as pure functions (DESIGN §4): which replica serves each shard of a read, how the
//! shards group into one request per node, and when a slow replica gets a hedged request. No I/O: the
//! executor (executor.rs, driven by read_path.rs) feeds in what it knows (placement, leader hints, load
//! figures) and runs the plan.
//!
//! ```text
//!   level      eligible replicas                          choice among them
//!   strong     the leader (known or hinted), else any     the leader; others answer with a hint
//!   session    with a token for the shard: the local      local replica, else the leader
//!              replica (it can wait for the token), else
//!              the leader; without a token: every replica  the strategy
//!   eventual   every replica                              the strategy
//!
//!   strategy      round_robin   rotate over the eligible replicas
//!                 least_loaded  fewest requests in flight from this coordinator, then lowest latency EWMA
//!                 locality      this node, then a node of this node's zone, then any (rotating within a tier)
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use crate::levels::{LoadBalancing, ReadLevel};

/// What the coordinator knows of one node's recent service, for `least_loaded` and hedging.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NodeLoad {
    /// Requests this coordinator sent to the node that have not answered yet.
    pub in_flight: u32,
    /// Exponentially weighted moving average of the node's answer latency in ms per work unit (one query
    /// on one shard); 0 = no sample yet.
    pub ewma_ms: f64,
    /// 95th percentile of the node's recent latencies in ms per work unit; `None` below [`MIN_SAMPLES`].
    pub p95_ms: Option<f64>,
}

/// What the planner needs to know about one shard of the read.
#[derive(Clone, Debug, Default)]
pub struct ShardSituation {
    /// The shard's replica nodes, in placement order (never empty for a placed shard).
    pub replicas: Vec<u64>,
    /// The shard's leader as known or hinted, if any.
    pub leader: Option<u64>,
    /// Whether this node holds an open replica of the shard.
    pub local: bool,
    /// Whether the client holds a session token for the shard (its writes must be visible).
    pub has_token: bool,
}

/// The coordinator's fixed context of a plan.
#[derive(Clone, Copy, Debug)]
pub struct PlanContext<'a> {
    /// This (the coordinating) node.
    pub me: u64,
    /// Zone of every known node ("" = none); nodes missing from the map have no zone.
    pub zones: &'a HashMap<u64, String>,
    /// Load figures per node; missing nodes count as idle and unmeasured.
    pub loads: &'a HashMap<u64, NodeLoad>,
    /// The read level.
    pub level: ReadLevel,
    /// The strategy among eligible replicas.
    pub strategy: LoadBalancing,
    /// A rotating counter (the caller advances it per plan) to spread equal choices.
    pub turn: usize,
}

/// The node to read `shard` from, avoiding `excluded`; `None` when every replica is excluded.
pub fn choose_replica(ctx: &PlanContext<'_>, shard: &ShardSituation, excluded: &HashSet<u64>) -> Option<u64> {
    let ok = |n: &u64| !excluded.contains(n) && shard.replicas.contains(n);
    let leader = shard.leader.filter(ok);
    let first = || shard.replicas.iter().copied().find(ok);
    let local = (shard.local && ok(&ctx.me)).then_some(ctx.me);
    match ctx.level {
        ReadLevel::Strong => leader.or_else(first),
        ReadLevel::Session if shard.has_token => local.or(leader).or_else(first),
        ReadLevel::Session | ReadLevel::Eventual => {
            let candidates: Vec<u64> = shard.replicas.iter().copied().filter(ok).collect();
            pick(ctx, &candidates, shard.local)
        }
    }
}

/// The strategy's choice among `candidates` (all eligible).
fn pick(ctx: &PlanContext<'_>, candidates: &[u64], local_open: bool) -> Option<u64> {
    if candidates.is_empty() {
        return None;
    }
    let rotate = |c: &[u64]| c[ctx.turn % c.len()];
    match ctx.strategy {
        LoadBalancing::RoundRobin => Some(rotate(candidates)),
        LoadBalancing::Locality => {
            if local_open && candidates.contains(&ctx.me) {
                return Some(ctx.me);
            }
            let my_zone = ctx.zones.get(&ctx.me).map(String::as_str).unwrap_or("");
            let same: Vec<u64> = candidates
                .iter()
                .copied()
                .filter(|n| !my_zone.is_empty() && ctx.zones.get(n).map(String::as_str) == Some(my_zone))
                .collect();
            Some(if same.is_empty() { rotate(candidates) } else { rotate(&same) })
        }
        LoadBalancing::LeastLoaded => {
            let load = |n: &u64| ctx.loads.get(n).copied().unwrap_or_default();
            let min_flight = candidates.iter().map(|n| load(n).in_flight).min()?;
            let idle: Vec<u64> = candidates.iter().copied().filter(|n| load(n).in_flight == min_flight).collect();
            // Among the least busy, the fastest; nodes within 20 % of the best latency (or unmeasured) rotate,
            // so a small latency edge does not pin every read on one replica.
            let best = idle.iter().map(|n| load(n).ewma_ms).filter(|&l| l > 0.0).fold(f64::INFINITY, f64::min);
            let close: Vec<u64> = idle
                .iter()
                .copied()
                .filter(|n| {
                    let l = load(n).ewma_ms;
                    l <= 0.0 || !best.is_finite() || l <= best * 1.2 + 0.05
                })
                .collect();
            Some(rotate(if close.is_empty() { &idle } else { &close }))
        }
    }
}

/// One request per node: the shards each node serves in this round, ascending. Shards no replica can
/// serve (all excluded) come back in the second list.
pub fn plan_nodes(
    ctx: &PlanContext<'_>,
    shards: &BTreeMap<u32, ShardSituation>,
    excluded: &HashMap<u32, HashSet<u64>>,
) -> (BTreeMap<u64, Vec<u32>>, Vec<u32>) {
    let none = HashSet::new();
    let mut plan: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    let mut unserved = Vec::new();
    for (&s, sit) in shards {
        let ex = excluded.get(&s).unwrap_or(&none);
        match choose_replica(ctx, sit, ex) {
            Some(n) => plan.entry(n).or_default().push(s),
            None => unserved.push(s),
        }
    }
    (plan, unserved)
}

/// Splits a round's plan into requests: one per node, except that each shard in `solo` goes alone (its
/// last request failed together with other shards, so which one the error was about is unknown).
pub fn requests(plan: BTreeMap<u64, Vec<u32>>, solo: &HashSet<u32>) -> Vec<(u64, Vec<u32>)> {
    let mut out = Vec::new();
    for (node, shards) in plan {
        let (alone, together): (Vec<u32>, Vec<u32>) = shards.into_iter().partition(|s| solo.contains(s));
        if !together.is_empty() {
            out.push((node, together));
        }
        out.extend(alone.into_iter().map(|s| (node, vec![s])));
    }
    out
}

/// What a failed read request says about its shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The node failed as a whole (unreachable), or the request held one shard: the error is about each of
    /// its shards (exclude the node for them, follow the leader hint).
    EachShard,
    /// One of several shards failed (e.g. "not the leader" of one of them): which one is unknown, so no
    /// shard's leader guess changes and no replica is excluded; the shards are retried one per request.
    Unknown,
}

/// Whom a failed request of `shards` shards blames; `node_down` when the node could not be reached.
pub fn blame(shards: usize, node_down: bool) -> Blame {
    if node_down || shards <= 1 { Blame::EachShard } else { Blame::Unknown }
}

/// Samples a node needs before its p95 is trusted for hedging.
pub const MIN_SAMPLES: usize = 8;
/// Never hedge sooner than this: below it the second request costs more than it can save.
pub const MIN_HEDGE_DELAY: Duration = Duration::from_millis(2);
/// Hedge delay for a node without enough samples.
pub const DEFAULT_HEDGE_DELAY: Duration = Duration::from_millis(50);
/// Longest hedge delay (a request this slow is past any deadline a client would set).
pub const MAX_HEDGE_DELAY: Duration = Duration::from_secs(60);

/// When a request of `units` work units (queries x shards) to a node with `load` should get a hedged twin:
/// the node's p95 per unit times the units (at least [`MIN_HEDGE_DELAY`]), or [`DEFAULT_HEDGE_DELAY`] times
/// the units before enough samples. Scaling by the units keeps a big batch from being hedged by the
/// latency of single queries (batches run their units in parallel, so this errs on the late side).
pub fn hedge_delay(load: &NodeLoad, units: usize) -> Duration {
    let units = units.max(1) as f64;
    let secs = match load.p95_ms {
        Some(p) => p * units / 1000.0,
        None => DEFAULT_HEDGE_DELAY.as_secs_f64() * units,
    };
    // A p95 that is NaN, negative or absurd (it is measured, never trusted to be sane) must not panic
    // `Duration::from_secs_f64`: clamp into [MIN_HEDGE_DELAY, MAX_HEDGE_DELAY].
    Duration::try_from_secs_f64(secs).unwrap_or(MAX_HEDGE_DELAY).clamp(MIN_HEDGE_DELAY, MAX_HEDGE_DELAY)
}

/// Whether a read at `level` may go to another replica than the planned one (hedging): not for
/// `strong` (only the leader can answer) nor for a `session` shard with a token (local or leader only).
pub fn can_hedge(level: ReadLevel, shard: &ShardSituation) -> bool {
    match level {
        ReadLevel::Strong => false,
        ReadLevel::Session => !shard.has_token,
        ReadLevel::Eventual => true,
    }
}

/// The 95th percentile of `samples` (nearest rank); `None` when fewer than [`MIN_SAMPLES`]. Reorders
/// `samples` (a selection, not a sort: this runs on every hedgeable read).
pub fn p95(samples: &mut [f64]) -> Option<f64> {
    if samples.len() < MIN_SAMPLES {
        return None;
    }
    let rank = ((samples.len() as f64) * 0.95).ceil() as usize;
    let (_, &mut nth, _) = samples.select_nth_unstable_by(rank.clamp(1, samples.len()) - 1, f64::total_cmp);
    Some(nth)
}

/// The EWMA after one more sample (weight 0.2 on the new one; the first sample sets it).
pub fn ewma(prev: f64, sample: f64) -> f64 {
    if prev <= 0.0 { sample } else { prev * 0.8 + sample * 0.2 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hedge_delays_never_panic_on_a_strange_p95() {
        for p in [f64::NAN, f64::INFINITY, -1.0, 1e300, 0.0] {
            let d = hedge_delay(&NodeLoad { p95_ms: Some(p), ..Default::default() }, 3);
            assert!((MIN_HEDGE_DELAY..=MAX_HEDGE_DELAY).contains(&d), "p95 {p}: {d:?}");
        }
        assert_eq!(hedge_delay(&NodeLoad::default(), usize::MAX), MAX_HEDGE_DELAY);
        assert_eq!(hedge_delay(&NodeLoad::default(), 2), DEFAULT_HEDGE_DELAY * 2);
    }

    fn sit(replicas: &[u64], leader: Option<u64>, local: bool, has_token: bool) -> ShardSituation {
        ShardSituation { replicas: replicas.to_vec(), leader, local, has_token }
    }

    struct Env {
        zones: HashMap<u64, String>,
        loads: HashMap<u64, NodeLoad>,
    }

    impl Env {
        fn new() -> Env {
            Env { zones: HashMap::new(), loads: HashMap::new() }
        }
        fn ctx(&self, level: ReadLevel, strategy: LoadBalancing, turn: usize) -> PlanContext<'_> {
            PlanContext { me: 1, zones: &self.zones, loads: &self.loads, level, strategy, turn }
        }
    }

    #[test]
    fn solo_shards_get_their_own_request() {
        let plan: BTreeMap<u64, Vec<u32>> = [(1, vec![0, 1, 2]), (2, vec![3])].into_iter().collect();
        assert_eq!(requests(plan.clone(), &HashSet::new()), vec![(1, vec![0, 1, 2]), (2, vec![3])]);
        let solo: HashSet<u32> = [0, 2, 3].into_iter().collect();
        assert_eq!(requests(plan, &solo), vec![(1, vec![1]), (1, vec![0]), (1, vec![2]), (2, vec![3])]);
    }

    #[test]
    fn a_failure_of_several_shards_blames_none_of_them() {
        // Strong reads of shards 0 (led by node 1) and 1 (led by node 2) sent together to node 1: "not the
        // leader (leader: 2)" is about shard 1 only; applied to both, it sends shard 0 to node 2, which answers
        // "leader: 1", and the two guesses chase each other until the deadline.
        assert_eq!(blame(2, false), Blame::Unknown);
        assert_eq!(blame(1, false), Blame::EachShard);
        assert_eq!(blame(3, true), Blame::EachShard, "an unreachable node fails every shard it holds");
    }

    #[test]
    fn strong_goes_to_the_leader_and_falls_back_to_any_replica() {
        let env = Env::new();
        let c = env.ctx(ReadLevel::Strong, LoadBalancing::RoundRobin, 7);
        let s = sit(&[1, 2, 3], Some(3), true, false);
        assert_eq!(choose_replica(&c, &s, &HashSet::new()), Some(3));
        assert_eq!(choose_replica(&c, &s, &HashSet::from([3])), Some(1));
        assert_eq!(choose_replica(&c, &s, &HashSet::from([1, 2, 3])), None);
        // A hinted leader that is not a replica (stale hint) is ignored.
        assert_eq!(choose_replica(&c, &sit(&[2, 3], Some(9), false, false), &HashSet::new()), Some(2));
    }

    #[test]
    fn session_with_a_token_reads_local_then_leader() {
        let env = Env::new();
        let c = env.ctx(ReadLevel::Session, LoadBalancing::RoundRobin, 1);
        assert_eq!(choose_replica(&c, &sit(&[1, 2, 3], Some(2), true, true), &HashSet::new()), Some(1));
        assert_eq!(choose_replica(&c, &sit(&[2, 3, 4], Some(3), false, true), &HashSet::new()), Some(3));
        assert_eq!(choose_replica(&c, &sit(&[1, 2, 3], Some(2), true, true), &HashSet::from([1])), Some(2));
    }

    #[test]
    fn round_robin_rotates_over_every_eligible_replica() {
        let env = Env::new();
        let s = sit(&[1, 2, 3], Some(2), true, false);
        let mut seen = Vec::new();
        for turn in 0..6 {
            seen.push(choose_replica(
                &env.ctx(ReadLevel::Eventual, LoadBalancing::RoundRobin, turn),
                &s,
                &HashSet::new(),
            ));
        }
        assert_eq!(seen, [1, 2, 3, 1, 2, 3].map(Some));
        // Session without a token is load-balanced too; excluded replicas are skipped.
        let c = env.ctx(ReadLevel::Session, LoadBalancing::RoundRobin, 1);
        assert_eq!(choose_replica(&c, &s, &HashSet::from([2])), Some(3));
    }

    #[test]
    fn locality_prefers_this_node_then_its_zone() {
        let mut env = Env::new();
        env.zones = HashMap::from([(1, "a".into()), (2, "b".into()), (3, "a".into()), (4, "b".into())]);
        let c = |turn| env.ctx(ReadLevel::Eventual, LoadBalancing::Locality, turn);
        assert_eq!(choose_replica(&c(0), &sit(&[1, 2, 3], None, true, false), &HashSet::new()), Some(1));
        for turn in 0..4 {
            assert_eq!(choose_replica(&c(turn), &sit(&[2, 3, 4], None, false, false), &HashSet::new()), Some(3));
        }
        // Nothing in the zone: any replica, rotating.
        let picks: HashSet<_> =
            (0..4).filter_map(|t| choose_replica(&c(t), &sit(&[2, 4], None, false, false), &HashSet::new())).collect();
        assert_eq!(picks, HashSet::from([2, 4]));
        // The local replica excluded (it failed): same zone next.
        assert_eq!(choose_replica(&c(0), &sit(&[1, 2, 3], None, true, false), &HashSet::from([1])), Some(3));
    }

    #[test]
    fn least_loaded_avoids_busy_and_slow_nodes() {
        let mut env = Env::new();
        env.loads.insert(1, NodeLoad { in_flight: 3, ewma_ms: 0.5, p95_ms: None });
        env.loads.insert(2, NodeLoad { in_flight: 0, ewma_ms: 9.0, p95_ms: None });
        env.loads.insert(3, NodeLoad { in_flight: 0, ewma_ms: 1.0, p95_ms: None });
        let s = sit(&[1, 2, 3], None, true, false);
        for turn in 0..5 {
            let c = env.ctx(ReadLevel::Eventual, LoadBalancing::LeastLoaded, turn);
            assert_eq!(choose_replica(&c, &s, &HashSet::new()), Some(3));
        }
        // Equally fast idle nodes share the work.
        env.loads.insert(2, NodeLoad { in_flight: 0, ewma_ms: 1.05, p95_ms: None });
        let picks: HashSet<_> = (0..4)
            .filter_map(|t| {
                choose_replica(&env.ctx(ReadLevel::Eventual, LoadBalancing::LeastLoaded, t), &s, &HashSet::new())
            })
            .collect();
        assert_eq!(picks, HashSet::from([2, 3]));
        // Unmeasured nodes are tried (they may be fast).
        let fresh = sit(&[3, 4], None, false, false);
        let picks: HashSet<_> = (0..4)
            .filter_map(|t| {
                choose_replica(&env.ctx(ReadLevel::Eventual, LoadBalancing::LeastLoaded, t), &fresh, &HashSet::new())
            })
            .collect();
        assert_eq!(picks, HashSet::from([3, 4]));
    }

    #[test]
    fn one_request_per_node_and_unservable_shards_reported() {
        let env = Env::new();
        let c = env.ctx(ReadLevel::Strong, LoadBalancing::RoundRobin, 0);
        let shards = BTreeMap::from([
            (0, sit(&[1, 2], Some(2), true, false)),
            (1, sit(&[2, 3], Some(2), false, false)),
            (2, sit(&[3], Some(3), false, false)),
            (3, sit(&[3], Some(3), false, false)),
        ]);
        let excluded = HashMap::from([(3, HashSet::from([3]))]);
        let (plan, unserved) = plan_nodes(&c, &shards, &excluded);
        assert_eq!(plan, BTreeMap::from([(2, vec![0, 1]), (3, vec![2])]));
        assert_eq!(unserved, vec![3]);
    }

    #[test]
    fn hedging_rules() {
        let s = sit(&[1, 2], Some(2), true, false);
        assert!(!can_hedge(ReadLevel::Strong, &s));
        assert!(can_hedge(ReadLevel::Eventual, &s));
        assert!(can_hedge(ReadLevel::Session, &s));
        assert!(!can_hedge(ReadLevel::Session, &sit(&[1, 2], Some(2), true, true)));
        assert_eq!(hedge_delay(&NodeLoad::default(), 1), DEFAULT_HEDGE_DELAY);
        let l = NodeLoad { p95_ms: Some(0.3), ..Default::default() };
        assert_eq!(hedge_delay(&l, 1), MIN_HEDGE_DELAY);
        assert_eq!(hedge_delay(&l, 100), Duration::from_millis(30), "a batch waits in proportion");
        let l = NodeLoad { p95_ms: Some(12.0), ..Default::default() };
        assert_eq!(hedge_delay(&l, 0), Duration::from_millis(12));
    }

    #[test]
    fn percentile_and_ewma() {
        assert_eq!(p95(&mut [1.0; 5]), None);
        let mut v: Vec<f64> = (1..=20).rev().map(f64::from).collect();
        assert_eq!(p95(&mut v), Some(19.0));
        let mut v: Vec<f64> = (1..=100).map(|i| f64::from((i * 37) % 100 + 1)).collect();
        assert_eq!(p95(&mut v), Some(95.0));
        assert_eq!(ewma(0.0, 4.0), 4.0);
        assert!((ewma(4.0, 9.0) - 5.0).abs() < 1e-9);
    }

    #[test]
    fn strategies_parse() {
        assert_eq!(LoadBalancing::parse("", LoadBalancing::Locality).unwrap(), LoadBalancing::Locality);
        assert_eq!(
            LoadBalancing::parse("least_loaded", LoadBalancing::RoundRobin).unwrap(),
            LoadBalancing::LeastLoaded
        );
        assert!(LoadBalancing::parse("random", LoadBalancing::RoundRobin).unwrap_err().to_string().contains("random"));
        for s in [LoadBalancing::RoundRobin, LoadBalancing::LeastLoaded, LoadBalancing::Locality] {
            assert_eq!(LoadBalancing::from_proto(s.to_proto() as i32, LoadBalancing::RoundRobin), s);
            assert_eq!(LoadBalancing::parse(s.as_str(), LoadBalancing::RoundRobin).unwrap(), s);
        }
    }
}
