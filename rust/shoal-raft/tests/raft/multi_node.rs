//! In-process multi-node tests of the gRPC Raft transport: three nodes in one process, each with
//! its own tonic server on 127.0.0.1:0, one replicated KV group: election, replication,
//! leadership transfer, leader failover, catch-up by snapshot after a partition (Blocklist), catch-up by log after a
//! restart, and the transport's error cases.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shoal_raft::Blocklist;
use shoal_raft::Error;
use shoal_raft::GroupOptions;
use shoal_raft::GrpcNetwork;
use shoal_raft::GrpcNetworkOptions;
use shoal_raft::RaftGroup;
use shoal_raft::RaftTransportService;
use shoal_raft::openraft::BasicNode;
use shoal_raft::openraft::async_runtime::WatchReceiver;
use shoal_raft::openraft::errors::RPCError;
use shoal_raft::openraft::network::RPCOption;
use shoal_raft::openraft::network::RaftNetworkFactory;
use shoal_raft::openraft::network::v2::RaftNetworkV2;
use shoal_raft::openraft::raft::VoteRequest;
use shoal_raft::types::Vote;
use shoal_testkit::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::KvApp;
use super::expected;
use super::key;
use super::kv_command;
use super::value;

/// The group every test replicates (a shard-style group id).
const GROUP: &str = "kv@1/0";
/// Deadline of every wait in these tests.
const WAIT: Duration = Duration::from_secs(20);

/// Election timeouts with room for a loaded 2-core machine running other tests in parallel.
fn cluster_opts(snapshot_every: u64) -> GroupOptions {
    GroupOptions {
        heartbeat_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        snapshot_every,
        bootstrap_single: false,
        log_segment_bytes: 16 << 10,
        ..GroupOptions::default()
    }
}

/// One node: its transport server, its network and (when open) its replica of [`GROUP`].
struct Node {
    /// Node id.
    id: u64,
    /// The server's address.
    addr: String,
    /// The replica's directory.
    dir: PathBuf,
    /// The node's fault switch (shared by its network and its service).
    blocklist: Blocklist,
    /// Client side of the transport.
    net: GrpcNetwork,
    /// Server side of the transport.
    service: RaftTransportService,
    /// Stops the server.
    stop: Option<oneshot::Sender<()>>,
    /// The server task.
    server: Option<JoinHandle<()>>,
    /// The open replica and its app.
    group: Option<(RaftGroup, Arc<KvApp>)>,
}

impl Node {
    async fn start(id: u64, root: &TempDir, net_opts: GrpcNetworkOptions) -> Node {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr").to_string();
        let blocklist = Blocklist::new();
        let service = RaftTransportService::new(id, blocklist.clone());
        let net = GrpcNetwork::new(id, blocklist.clone(), net_opts);
        let (stop, stopped) = oneshot::channel::<()>();
        let svc = service.clone().into_server();
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), async {
                    stopped.await.ok();
                })
                .await
                .expect("transport server");
        });
        let dir = root.path().join(format!("node{id}"));
        Node { id, addr, dir, blocklist, net, service, stop: Some(stop), server: Some(server), group: None }
    }

    /// Opens (or reopens from its directory) the replica, with a fresh app.
    async fn open(&mut self, opts: GroupOptions) {
        let app = Arc::new(KvApp::default());
        let g = RaftGroup::open_with_network(
            &self.dir,
            self.id,
            self.addr.clone(),
            app.clone(),
            opts,
            self.net.factory(GROUP),
        )
        .await
        .expect("open group");
        self.service.register(GROUP, &g);
        self.group = Some((g, app));
    }

    /// Shuts the replica down (the server keeps running: peers get "not open").
    async fn close(&mut self) {
        if let Some((g, _)) = self.group.take() {
            assert!(self.service.deregister(GROUP));
            g.shutdown().await.expect("shutdown");
        }
    }

    /// Closes the replica and stops the server.
    async fn kill(&mut self) {
        self.close().await;
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        if let Some(server) = self.server.take() {
            let abort = server.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), server).await.is_err() {
                abort.abort();
            }
        }
    }

    fn group(&self) -> &RaftGroup {
        &self.group.as_ref().expect("group open").0
    }

    fn map(&self) -> BTreeMap<String, Vec<u8>> {
        self.group.as_ref().expect("group open").1.snapshot_map()
    }
}

async fn start_cluster(root: &TempDir, opts: GroupOptions, net_opts: GrpcNetworkOptions) -> Vec<Node> {
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let mut n = Node::start(id, root, net_opts.clone()).await;
        n.open(opts.clone()).await;
        nodes.push(n);
    }
    for n in &nodes {
        assert!(!n.group().is_initialized().await.unwrap());
    }
    let members: BTreeMap<u64, String> = nodes.iter().map(|n| (n.id, n.addr.clone())).collect();
    nodes[0].group().initialize(members.clone()).await.expect("initialize");
    assert!(matches!(nodes[0].group().initialize(members).await, Err(Error::Rejected(_))));
    nodes
}

/// Waits until one open replica is the leader and a majority of the three (itself included)
/// follows it (a partitioned replica may not know it); returns its index in `nodes`.
async fn wait_leader(nodes: &[Node]) -> usize {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let open: Vec<(usize, &RaftGroup)> =
            nodes.iter().enumerate().filter_map(|(i, n)| n.group.as_ref().map(|(g, _)| (i, g))).collect();
        if let Some(&(i, leader)) = open.iter().find(|(_, g)| g.is_leader())
            && open.iter().filter(|(_, g)| g.leader_id() == Some(leader.node_id())).count() >= 2
        {
            return i;
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader agreed on within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes keys `range` through the current leader, retrying on leader changes (the KV writes
/// are idempotent, so a `CommitUnknown` retry is safe).
async fn write_range(nodes: &[Node], range: std::ops::Range<u64>) {
    for i in range {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let leader = wait_leader(nodes).await;
            match nodes[leader].group().write(kv_command(&key(i), &value(i))).await {
                Ok(_) => break,
                Err(Error::NotLeader { .. } | Error::CommitUnknown { .. }) => {
                    assert!(tokio::time::Instant::now() < deadline, "write {i} kept failing over");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("write {i}: {e}"),
            }
        }
    }
}

/// Waits until every open replica's app holds exactly `want`.
async fn wait_converged(nodes: &[Node], want: &BTreeMap<String, Vec<u8>>) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let lagging: Vec<u64> = nodes.iter().filter(|n| n.group.is_some() && n.map() != *want).map(|n| n.id).collect();
        if lagging.is_empty() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            let sizes: Vec<(u64, usize)> =
                nodes.iter().filter(|n| n.group.is_some()).map(|n| (n.id, n.map().len())).collect();
            let metrics: Vec<String> = nodes
                .iter()
                .filter(|n| n.group.is_some())
                .map(|n| format!("{:?}", n.group().raft().metrics().borrow_watched()))
                .collect();
            panic!("replicas {lagging:?} did not converge to {} keys: {sizes:?}\n{}", want.len(), metrics.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stop_cluster(nodes: &mut [Node]) {
    for n in nodes.iter_mut() {
        n.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_replicate_and_fail_over() {
    let root = TempDir::new("raft");
    let mut nodes = start_cluster(&root, cluster_opts(1_000_000), GrpcNetworkOptions::default()).await;
    let leader = wait_leader(&nodes).await;
    assert_eq!(nodes[leader].group().voter_ids(), vec![1, 2, 3]);

    write_range(&nodes, 0..500).await;
    wait_converged(&nodes, &expected(0..500)).await;
    // Content converged; the applied index may still trail by a non-data entry (blank/membership) for a
    // moment, so wait for it rather than sampling once.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let applied: Vec<u64> = nodes.iter().map(|n| n.group().applied_index()).collect();
        if applied.iter().all(|a| *a == applied[0] && *a >= 500) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "applied indexes {applied:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Hand leadership to a chosen follower (the graceful-stop path), then write through it.
    let target = (leader + 1) % 3;
    nodes[leader].group().transfer_leader(nodes[target].id).await.expect("transfer leader");
    let deadline = tokio::time::Instant::now() + WAIT;
    while wait_leader(&nodes).await != target {
        assert!(tokio::time::Instant::now() < deadline, "leadership did not move to node {}", nodes[target].id);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    write_range(&nodes, 500..510).await;
    let leader = wait_leader(&nodes).await;

    // Kill the leader (replica and server): the other two elect a new one and writes continue.
    let old = nodes[leader].id;
    nodes[leader].kill().await;
    let new = wait_leader(&nodes).await;
    assert_ne!(nodes[new].id, old);
    write_range(&nodes, 510..600).await;
    wait_converged(&nodes, &expected(0..600)).await;
    nodes[new].group().ensure_linearizable().await.expect("linearizable read with 2 of 3 voters");
    stop_cluster(&mut nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitioned_follower_catches_up_by_snapshot() {
    let root = TempDir::new("raft");
    // Tiny chunks: the snapshot crosses the wire in many chunks.
    let net_opts = GrpcNetworkOptions { snapshot_chunk_bytes: 1024, ..GrpcNetworkOptions::default() };
    let mut nodes = start_cluster(&root, cluster_opts(100), net_opts).await;
    let leader = wait_leader(&nodes).await;
    write_range(&nodes, 0..50).await;
    wait_converged(&nodes, &expected(0..50)).await;

    // Partition a follower, from its own side only: its outgoing RPCs fail on the client side,
    // the leader's RPCs to it are refused by its server.
    let f = (leader + 1) % 3;
    let fid = nodes[f].id;
    for n in &nodes {
        if n.id != fid {
            nodes[f].blocklist.block(n.id);
        }
    }
    let f_last = nodes[f].group().raft().metrics().borrow_watched().last_log_index.unwrap_or(0);
    write_range(&nodes, 50..600).await;
    let leader = wait_leader(&nodes).await;
    assert_ne!(nodes[leader].id, fid);
    nodes[leader]
        .group()
        .raft()
        .wait(Some(WAIT))
        .metrics(
            move |m| m.snapshot.is_some_and(|s| s.index >= 500) && m.purged.is_some_and(|p| p.index > f_last + 100),
            "leader snapshotted and purged past the partitioned follower",
        )
        .await
        .expect("snapshot and purge on the leader");
    assert!(nodes[f].map().len() <= 50, "the partitioned follower received nothing new");

    for n in &nodes {
        nodes[f].blocklist.unblock(n.id);
    }
    wait_converged(&nodes, &expected(0..600)).await;
    let snap = nodes[f].group().raft().metrics().borrow_watched().snapshot;
    assert!(snap.is_some_and(|s| s.index >= 500), "follower caught up by installing a snapshot ({snap:?})");

    write_range(&nodes, 600..620).await;
    wait_converged(&nodes, &expected(0..620)).await;
    stop_cluster(&mut nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_follower_catches_up_by_log() {
    let root = TempDir::new("raft");
    let opts = cluster_opts(1_000_000);
    let mut nodes = start_cluster(&root, opts.clone(), GrpcNetworkOptions::default()).await;
    let leader = wait_leader(&nodes).await;
    write_range(&nodes, 0..100).await;
    wait_converged(&nodes, &expected(0..100)).await;

    let f = (leader + 2) % 3;
    nodes[f].close().await;
    write_range(&nodes, 100..400).await;
    nodes[f].open(opts).await;
    wait_converged(&nodes, &expected(0..400)).await;
    let m = nodes[f].group().raft().metrics().borrow_watched().clone();
    assert_eq!(m.snapshot, None, "caught up by log, no snapshot involved");
    assert!(m.purged.is_none());
    write_range(&nodes, 400..420).await;
    wait_converged(&nodes, &expected(0..420)).await;
    stop_cluster(&mut nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_errors_are_clear() {
    let root = TempDir::new("raft");
    let mut a = Node::start(1, &root, GrpcNetworkOptions::default()).await;
    let mut b = Node::start(2, &root, GrpcNetworkOptions::default()).await;
    let opt = || RPCOption::new(Duration::from_secs(5));
    let rpc = VoteRequest::new(Vote::new(1, 1), None);
    let mut factory = a.net.factory("no-such-group");
    let node_b = BasicNode::new(b.addr.clone());

    let err_of = |r: Result<_, RPCError<_>>| match r {
        Err(e @ RPCError::Unreachable(_)) => e.to_string(),
        Err(e) => panic!("expected Unreachable, got {e}"),
        Ok(v) => panic!("expected an error, got {v:?}"),
    };
    let mut peer = factory.new_client(2, &node_b).await;
    let msg = err_of(peer.vote(rpc.clone(), opt()).await);
    assert!(msg.contains("no-such-group") && msg.contains("is not open on node 2"), "{msg}");

    let mut wrong = factory.new_client(3, &node_b).await;
    let msg = err_of(wrong.vote(rpc.clone(), opt()).await);
    assert!(msg.contains("request for node 3 reached node 2"), "{msg}");

    a.blocklist.block(2);
    let msg = err_of(peer.vote(rpc.clone(), opt()).await);
    assert!(msg.contains("blocked by this node's blocklist"), "{msg}");
    a.blocklist.unblock(2);

    b.blocklist.block(1);
    let msg = err_of(peer.vote(rpc.clone(), opt()).await);
    assert!(msg.contains("node 2 blocks node 1"), "{msg}");
    b.blocklist.clear();

    // A registered group answers.
    b.open(cluster_opts(1_000_000)).await;
    let mut to_group = a.net.factory(GROUP).new_client(2, &node_b).await;
    to_group.vote(rpc.clone(), opt()).await.expect("vote answered");

    // A stopped server is unreachable.
    let addr_b = b.addr.clone();
    b.kill().await;
    let mut gone = a.net.factory(GROUP).new_client(2, &BasicNode::new(addr_b)).await;
    err_of(gone.vote(rpc, opt()).await);
    a.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn learners_join_are_promoted_and_the_first_voter_leaves() {
    let root = TempDir::new("raft");
    let opts = cluster_opts(1_000_000);
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let mut n = Node::start(id, &root, GrpcNetworkOptions::default()).await;
        n.open(opts.clone()).await;
        nodes.push(n);
    }
    // A single-voter group on node 1, as the first node of a cluster starts.
    nodes[0].group().initialize(BTreeMap::from([(1, nodes[0].addr.clone())])).await.expect("initialize");
    nodes[0].group().wait_leader(WAIT).await.expect("node 1 leads");
    for i in 0..100 {
        nodes[0].group().write(kv_command(&key(i), &value(i))).await.expect("write");
    }

    // Moving a replica (DESIGN §5): learners catch up, get promoted, then the source leaves.
    for n in &nodes[1..] {
        nodes[0].group().add_learner(n.id, n.addr.clone()).await.expect("add learner");
        let deadline = tokio::time::Instant::now() + WAIT;
        while n.map() != expected(0..100) {
            assert!(tokio::time::Instant::now() < deadline, "learner {} did not catch up", n.id);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    nodes[0].group().change_membership([1, 2, 3].into()).await.expect("promote");
    assert_eq!(nodes[0].group().voter_ids(), vec![1, 2, 3]);
    write_range(&nodes, 100..200).await;
    wait_converged(&nodes, &expected(0..200)).await;

    let leader = wait_leader(&nodes).await;
    nodes[leader].group().change_membership([2, 3].into()).await.expect("remove node 1");
    nodes[0].close().await;
    let leader = wait_leader(&nodes).await;
    assert_ne!(nodes[leader].id, 1);
    assert_eq!(nodes[leader].group().voter_ids(), vec![2, 3]);
    write_range(&nodes, 200..250).await;
    wait_converged(&nodes, &expected(0..250)).await;
    stop_cluster(&mut nodes).await;
}

/// A transfer to a follower that cannot take over (cut off, or its log behind) must not wedge the group:
/// the transferring leader refuses writes and stops its heartbeats, so another follower's election timer
/// fires and it takes over; writes go on, and the cut-off follower catches up once reachable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfer_to_a_lagging_follower_does_not_wedge_the_group() {
    let root = TempDir::new("raft");
    let mut nodes = start_cluster(&root, cluster_opts(1000), GrpcNetworkOptions::default()).await;
    let leader = wait_leader(&nodes).await;
    write_range(&nodes, 0..20).await;
    wait_converged(&nodes, &expected(0..20)).await;

    let lagging = (leader + 1) % 3;
    let lid = nodes[lagging].id;
    for n in &nodes {
        if n.id != lid {
            nodes[lagging].blocklist.block(n.id);
        }
    }
    write_range(&nodes, 20..60).await;
    nodes[leader].group().transfer_leader(lid).await.expect("transfer leader");
    write_range(&nodes, 60..80).await;
    let now = wait_leader(&nodes).await;
    assert_ne!(nodes[now].id, lid, "the cut-off follower cannot lead");

    for n in &nodes {
        nodes[lagging].blocklist.unblock(n.id);
    }
    wait_converged(&nodes, &expected(0..80)).await;
    stop_cluster(&mut nodes).await;
}
