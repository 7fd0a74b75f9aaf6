//! The node's Prometheus metrics: request counts and latencies recorded by the admission layer as calls
//! finish, and the engine's state (Raft groups, shards, work counters, data dir) read at each scrape. Served in
//! the OpenMetrics text format by `metrics_listener.rs` on `--metrics-listen`. Every metric is documented in
//! the README ("Metrics"); label values come only from bounded sets (known methods, status codes, this node's
//! groups), never from raw client input.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use shoal_cluster::MetricsView;

/// Distinct `method` label values kept; calls to further methods count under "other".
const MAX_METHODS: usize = 64;

/// Labels of a finished call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// The gRPC path, e.g. `/shoal.v1.Points/Search` (or "other").
    pub method: String,
    /// The gRPC status code name, e.g. "OK", "INVALID_ARGUMENT".
    pub status: String,
}

/// Labels naming a method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// The gRPC path (or "other").
    pub method: String,
}

/// Labels naming why a call was refused before it started.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// One of the fixed reasons of [`Rejection`].
    pub reason: String,
}

/// Labels of a Raft group.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    /// "meta" or `<collection>@<uid>/<shard>`.
    pub group: String,
    /// The collection ("" for group 0).
    pub collection: String,
    /// The shard number ("" for group 0).
    pub shard: String,
}

/// Labels of a member of a Raft group led by this node.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberLabels {
    /// As [`GroupLabels::group`].
    pub group: String,
    /// The member's node id.
    pub member: String,
}

/// Why the admission layer refused a call before it reached a service.
#[derive(Clone, Copy, Debug)]
pub enum Rejection {
    /// No or an unknown API key, no node certificate.
    Unauthenticated,
    /// The caller's role does not allow the method, or a peer spoke for another node.
    PermissionDenied,
    /// A method that does not exist here (e.g. fault injection without its flag).
    Unimplemented,
    /// A `grpc-timeout` header that does not parse.
    BadTimeout,
    /// Too many public calls in flight.
    Overloaded,
    /// The node is draining (stopping).
    Draining,
}

impl Rejection {
    fn as_str(self) -> &'static str {
        match self {
            Rejection::Unauthenticated => "unauthenticated",
            Rejection::PermissionDenied => "permission_denied",
            Rejection::Unimplemented => "unimplemented",
            Rejection::BadTimeout => "bad_timeout",
            Rejection::Overloaded => "overloaded",
            Rejection::Draining => "draining",
        }
    }
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~3.3 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// The log store's fsync latency histogram, read from shoal-raft's process-wide counters at encode time.
#[derive(Debug, Default)]
struct FsyncHistogram;

impl prometheus_client::encoding::EncodeMetric for FsyncHistogram {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder) -> Result<(), std::fmt::Error> {
        let s = shoal_raft::io_stats::IO_STATS.snapshot();
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            s.fsync_seconds,
            s.fsyncs,
            &s.fsync_buckets,
            None,
        )
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }
}

/// The node's metrics. Cheap to record into from any thread.
pub struct NodeMetrics {
    /// Every metric below, for encoding.
    registry: Registry,
    /// The data dir whose size is reported.
    data_dir: PathBuf,
    /// Method label values seen so far (at most [`MAX_METHODS`]).
    methods: Mutex<HashSet<String>>,
    /// Calls finished, by method and status.
    calls: Family<CallLabels, Counter>,
    /// Call latency in seconds, by method.
    latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    /// Calls refused by admission, by reason.
    rejections: Family<ReasonLabels, Counter>,
    /// Per group: term, commit index, applied index, last log index, leader id, whether this node leads it.
    term: Family<GroupLabels, Gauge>,
    committed: Family<GroupLabels, Gauge>,
    applied: Family<GroupLabels, Gauge>,
    last_log: Family<GroupLabels, Gauge>,
    leader: Family<GroupLabels, Gauge>,
    is_leader: Family<GroupLabels, Gauge>,
    /// Leader changes seen at scrapes, per group.
    leader_changes: Family<GroupLabels, Counter>,
    /// The leader last seen per group (for `leader_changes`).
    last_leader: Mutex<HashMap<String, u64>>,
    /// On groups this node leads: entries each member is behind.
    lag: Family<MemberLabels, Gauge>,
    /// Per shard replica: live points, points not yet indexed, bytes of the snapshot being received.
    points: Family<GroupLabels, Gauge>,
    unindexed: Family<GroupLabels, Gauge>,
    snapshot_bytes: Family<GroupLabels, Gauge>,
    /// Work counters of the engine (set from its atomics at each scrape).
    searches: Counter,
    reads: Counter,
    writes: Counter,
    hedged: Counter,
    cancelled: Counter,
    /// Snapshot bytes this node sent to peers (set from shoal-raft's counter at each scrape).
    snapshot_sent: Counter,
    /// Requests executing now; replicas quarantined; bytes under the data dir.
    in_flight: Gauge,
    quarantined: Gauge,
    data_dir_bytes: Gauge,
}

impl std::fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeMetrics").field("data_dir", &self.data_dir).finish_non_exhaustive()
    }
}

impl NodeMetrics {
    /// Metrics of a node whose data lives in `data_dir`.
    pub fn new(data_dir: &Path) -> NodeMetrics {
        let mut registry = Registry::with_prefix("shoal");
        let m = NodeMetrics {
            registry: Registry::default(),
            data_dir: data_dir.to_path_buf(),
            methods: Mutex::default(),
            calls: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            rejections: Family::default(),
            term: Family::default(),
            committed: Family::default(),
            applied: Family::default(),
            last_log: Family::default(),
            leader: Family::default(),
            is_leader: Family::default(),
            leader_changes: Family::default(),
            last_leader: Mutex::default(),
            lag: Family::default(),
            points: Family::default(),
            unindexed: Family::default(),
            snapshot_bytes: Family::default(),
            searches: Counter::default(),
            reads: Counter::default(),
            writes: Counter::default(),
            hedged: Counter::default(),
            cancelled: Counter::default(),
            snapshot_sent: Counter::default(),
            in_flight: Gauge::default(),
            quarantined: Gauge::default(),
            data_dir_bytes: Gauge::default(),
        };
        let r = &mut registry;
        r.register("requests", "gRPC calls finished, by method and status", m.calls.clone());
        r.register("request_duration_seconds", "gRPC call latency, by method", m.latency.clone());
        r.register("admission_rejections", "calls refused before they started, by reason", m.rejections.clone());
        r.register("raft_term", "current Raft term, per group", m.term.clone());
        r.register("raft_commit_index", "last committed log index known here, per group", m.committed.clone());
        r.register("raft_applied_index", "last log index applied here, per group", m.applied.clone());
        r.register("raft_last_log_index", "last log index in this node's log, per group", m.last_log.clone());
        r.register("raft_leader", "node id of the group's leader as known here (0 = none)", m.leader.clone());
        r.register("raft_is_leader", "1 when this node leads the group", m.is_leader.clone());
        r.register("raft_leader_changes", "leader changes seen between scrapes, per group", m.leader_changes.clone());
        r.register(
            "raft_replication_lag_entries",
            "on groups this node leads: entries a member is behind",
            m.lag.clone(),
        );
        r.register("shard_points", "live points of each local shard replica", m.points.clone());
        r.register("shard_unindexed_points", "live points not yet in the replica's graph", m.unindexed.clone());
        r.register(
            "snapshot_received_bytes",
            "bytes of the snapshot being (or last) received",
            m.snapshot_bytes.clone(),
        );
        r.register("searches", "searches run on this node's replicas", m.searches.clone());
        r.register("reads", "gets, counts and scans served by this node's replicas", m.reads.clone());
        r.register("writes", "write requests this node coordinated", m.writes.clone());
        r.register("hedged_requests", "hedged shard requests sent as coordinator", m.hedged.clone());
        r.register("cancelled_searches", "replica searches stopped by a cancel or their deadline", m.cancelled.clone());
        r.register("in_flight_requests", "requests executing now (client and node-to-node)", m.in_flight.clone());
        r.register("quarantined_replicas", "replicas quarantined on this node", m.quarantined.clone());
        r.register("data_dir_bytes", "bytes of the files under the data dir", m.data_dir_bytes.clone());
        r.register("snapshot_sent_bytes", "snapshot bytes sent to peers", m.snapshot_sent.clone());
        r.register("fsync_duration_seconds", "latency of the Raft logs' fsyncs (batched appends)", FsyncHistogram);
        for why in [
            Rejection::Unauthenticated,
            Rejection::PermissionDenied,
            Rejection::Unimplemented,
            Rejection::BadTimeout,
            Rejection::Overloaded,
            Rejection::Draining,
        ] {
            // Every reason is listed from the start (at 0), so a dashboard sees the series before the first refusal.
            let _ = m.rejections.get_or_create(&ReasonLabels { reason: why.as_str().into() });
        }
        NodeMetrics { registry, ..m }
    }

    /// Records a finished call of `method` (a gRPC path) with gRPC status `code` after `took`.
    pub fn record_call(&self, method: &str, code: tonic::Code, took: Duration) {
        let method = self.method_label(method);
        self.calls.get_or_create(&CallLabels { method: method.clone(), status: code_name(code).into() }).inc();
        self.latency.get_or_create(&MethodLabels { method }).observe(took.as_secs_f64());
    }

    /// Records a call refused by admission.
    pub fn record_rejection(&self, why: Rejection) {
        self.rejections.get_or_create(&ReasonLabels { reason: why.as_str().into() }).inc();
    }

    fn method_label(&self, method: &str) -> String {
        let mut seen = self.methods.lock();
        if seen.contains(method) {
            return method.to_string();
        }
        let plausible = method.len() <= 96 && method.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._".contains(&b));
        if plausible && seen.len() < MAX_METHODS {
            seen.insert(method.to_string());
            return method.to_string();
        }
        "other".into()
    }

    /// The metrics in the OpenMetrics text format, after reading `view` (the engine's state now).
    pub fn encode(&self, view: &MetricsView) -> String {
        self.refresh(view);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    fn refresh(&self, view: &MetricsView) {
        for f in [
            &self.term,
            &self.committed,
            &self.applied,
            &self.last_log,
            &self.leader,
            &self.is_leader,
            &self.points,
            &self.unindexed,
            &self.snapshot_bytes,
        ] {
            f.clear();
        }
        self.lag.clear();
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let mut last = self.last_leader.lock();
        for g in &view.groups {
            let l = GroupLabels { group: g.group.clone(), collection: g.collection.clone(), shard: g.shard.clone() };
            let s = &g.status;
            self.term.get_or_create(&l).set(gauge(s.term));
            self.committed.get_or_create(&l).set(gauge(s.committed));
            self.applied.get_or_create(&l).set(gauge(s.applied));
            self.last_log.get_or_create(&l).set(gauge(s.last_log));
            self.leader.get_or_create(&l).set(gauge(s.leader));
            self.is_leader.get_or_create(&l).set(i64::from(s.role == "leader"));
            let before = last.insert(g.group.clone(), s.leader);
            if before.is_some_and(|b| b != s.leader) && s.leader != 0 {
                self.leader_changes.get_or_create(&l).inc();
            } else {
                let _ = self.leader_changes.get_or_create(&l);
            }
            for &(member, behind) in &s.lags {
                self.lag
                    .get_or_create(&MemberLabels { group: g.group.clone(), member: member.to_string() })
                    .set(gauge(behind));
            }
            if g.group != "meta" {
                self.points.get_or_create(&l).set(gauge(g.points));
                self.unindexed.get_or_create(&l).set(gauge(g.unindexed));
                self.snapshot_bytes.get_or_create(&l).set(gauge(g.snapshot_bytes));
            }
        }
        last.retain(|k, _| view.groups.iter().any(|g| &g.group == k));
        drop(last);
        self.searches.inner().store(view.searches, Ordering::Relaxed);
        self.reads.inner().store(view.reads, Ordering::Relaxed);
        self.writes.inner().store(view.writes, Ordering::Relaxed);
        self.hedged.inner().store(view.hedged, Ordering::Relaxed);
        self.cancelled.inner().store(view.cancelled, Ordering::Relaxed);
        self.snapshot_sent
            .inner()
            .store(shoal_raft::io_stats::IO_STATS.snapshot().snapshot_bytes_sent, Ordering::Relaxed);
        self.in_flight.set(gauge(view.in_flight));
        self.quarantined.set(gauge(view.quarantined));
        self.data_dir_bytes.set(gauge(dir_bytes(&self.data_dir, 0)));
    }
}

/// Bytes of the regular files under `dir` (symlinks not followed; at most 16 levels deep).
fn dir_bytes(dir: &Path, depth: u32) -> u64 {
    if depth > 16 {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path(), depth + 1),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// The canonical name of a gRPC status code.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_bounded() {
        let m = NodeMetrics::new(Path::new("/nonexistent"));
        for i in 0..200 {
            m.record_call(&format!("/x.Y/M{i}"), tonic::Code::Ok, Duration::from_millis(1));
        }
        m.record_call("/evil\n{label=\"x\"}", tonic::Code::Ok, Duration::from_millis(1));
        let view = MetricsView {
            groups: Vec::new(),
            searches: 3,
            reads: 0,
            writes: 0,
            in_flight: 0,
            cancelled: 0,
            hedged: 0,
            quarantined: 0,
        };
        let text = m.encode(&view);
        assert!(text.contains("method=\"other\""), "{text}");
        assert!(!text.contains("evil"));
        assert!(text.contains("shoal_searches_total 3"), "{text}");
        assert!(text.ends_with("# EOF\n"));
        let methods = text.lines().filter(|l| l.starts_with("shoal_requests_total{")).count();
        assert_eq!(methods, MAX_METHODS + 1);
    }
}
