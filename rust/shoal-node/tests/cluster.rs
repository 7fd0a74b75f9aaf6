//! In-process multi-node tests (DESIGN §10 layer 3): three nodes started with `shoal_node::server::start`
//! in this process, each on its own temporary data dir and a free loopback port, node 1 founding the
//! cluster and nodes 2 and 3 joining through it. They check placement, leader failover, catch-up of a
//! restarted replica by log and by snapshot, the `strong` write level with a voter down, and a partition
//! made with the `Cluster/SetFaults` switch. Every wait polls with a deadline; nothing asserts a timing.
//!
//! The tests run one at a time (each starts three nodes with seven Raft groups apiece; on a small CI box
//! six clusters at once starve each other's heartbeats into spurious elections).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use shoal_client::v1::{self, cluster_client::ClusterClient, index_params::Kind};
use shoal_client::{Client, Error, ReadLevel, WriteLevel};
use shoal_core::PointId;
use shoal_node::NodeConfig;
use shoal_node::server::{RunningNode, ServeError, start};
use shoal_testkit::{Rng, random_vectors};
use tonic::transport::{Channel, Endpoint};

/// Deadline of ordinary client calls.
const T: Duration = Duration::from_secs(30);
/// Deadline of the calls that are expected to fail because a level cannot be met.
const SHORT: Duration = Duration::from_secs(2);
/// Bound on a call given [`SHORT`]: its timeout plus generous slack. Exceeding it means a hang, not slowness.
const SHORT_BOUND: Duration = Duration::from_secs(8);
/// How long the cluster may take to reach a state it is waited for (elections, catch-up, snapshots).
const CONVERGE: Duration = Duration::from_secs(60);
/// Upper bound of one whole test (not counting the wait for its turn).
const TEST_LIMIT: Duration = Duration::from_secs(240);
/// Vector dimension of every collection here.
const DIM: usize = 4;
/// Shards of every collection here.
const SHARDS: u32 = 6;
/// Collection name used by every test (each test has its own cluster).
const COLL: &str = "c";

// ---------------------------------------------------------------------------------------------------------
// Harness: watchdog, one test at a time, tracing
// ---------------------------------------------------------------------------------------------------------

/// Tests in progress, by test name (libtest names each test's thread after the test).
static RUNNING: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
/// Starts the process-wide watchdog once.
static WATCHDOG: Once = Once::new();
/// Lets one test run at a time (see the module comment). An async lock: no poisoning, held across awaits.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// Whole-binary limit: a node that deadlocks can keep a test's runtime from ever dropping (tokio waits for
/// its blocking tasks), which no per-test timeout can end; the watchdog turns that hang into a failure.
const PROCESS_LIMIT: Duration = Duration::from_secs(900);

/// Runs a test body alone and with an upper bound on its duration.
async fn bounded<F: Future<Output = ()>>(body: F) {
    WATCHDOG.call_once(|| {
        std::thread::spawn(|| {
            std::thread::sleep(PROCESS_LIMIT);
            let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner()).clone();
            eprintln!("cluster tests still running after {PROCESS_LIMIT:?} (a deadlock?): {running:?}");
            std::process::exit(101);
        });
    });
    let _turn = SERIAL.lock().await;
    init_tracing();
    let name = std::thread::current().name().unwrap_or("?").to_string();
    RUNNING.lock().unwrap_or_else(|e| e.into_inner()).insert(name.clone());
    let started = Instant::now();
    tokio::time::timeout(TEST_LIMIT, body).await.expect("test exceeded its time bound");
    eprintln!("{name}: {:.1} s", started.elapsed().as_secs_f64());
    RUNNING.lock().unwrap_or_else(|e| e.into_inner()).remove(&name);
}

fn init_tracing() {
    let filter = std::env::var("SHOAL_TEST_LOG").unwrap_or_else(|_| "warn,openraft=error".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}

/// Polls `probe` until it returns `Ok`, at most `limit`; panics with the last state it reported otherwise.
async fn wait_for<V, F, Fut>(what: &str, limit: Duration, mut probe: F) -> V
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<V, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let last = match probe().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            panic!("{what}: not reached within {limit:?}; last state: {last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------------------

fn ints(ids: impl IntoIterator<Item = u64>) -> v1::PointIds {
    v1::PointIds { ints: ids.into_iter().collect(), strs: vec![] }
}

/// What the test knows was acknowledged: id -> vector.
type Ledger = BTreeMap<u64, Vec<f32>>;

/// Upserts `ids` with fresh vectors at `level`; on success records them in `ledger`.
async fn write(
    c: &Client,
    rng: &mut Rng,
    ledger: &mut Ledger,
    ids: &[u64],
    level: WriteLevel,
    timeout: Duration,
) -> Result<(), Error> {
    let vecs = random_vectors(rng, ids.len(), DIM);
    let n = c.upsert(COLL, ints(ids.iter().copied()), &vecs, DIM, &[], level, timeout).await?;
    assert_eq!(n, ids.len() as u64, "upsert reports every point written");
    for (i, &id) in ids.iter().enumerate() {
        ledger.insert(id, vecs[i * DIM..(i + 1) * DIM].to_vec());
    }
    Ok(())
}

/// Writes `ids` at quorum in batches of `batch`, each of which must succeed.
async fn ingest(c: &Client, rng: &mut Rng, ledger: &mut Ledger, ids: &[u64], batch: usize) {
    for part in ids.chunks(batch) {
        write(c, rng, ledger, part, WriteLevel::Quorum, T)
            .await
            .unwrap_or_else(|e| panic!("quorum upsert of {} points from id {}: {e}", part.len(), part[0]));
    }
}

/// Checks with `level` reads through `c` that the collection holds exactly the points of `ledger`.
async fn assert_holds(c: &Client, ledger: &Ledger, level: ReadLevel, what: &str) {
    let count = c.count(COLL, level, T).await.unwrap_or_else(|e| panic!("{what}: count: {e}"));
    assert_eq!(count, ledger.len() as u64, "{what}: count at {level:?}");
    let ids: Vec<u64> = ledger.keys().copied().collect();
    for part in ids.chunks(1000) {
        let r = c
            .get(COLL, ints(part.iter().copied()), true, level, T)
            .await
            .unwrap_or_else(|e| panic!("{what}: get at {level:?}: {e}"));
        assert_eq!(r.found.len(), part.len(), "{what}: one found flag per id");
        let missing: Vec<u64> = part.iter().zip(&r.found).filter(|(_, f)| !**f).map(|(id, _)| *id).collect();
        assert!(missing.is_empty(), "{what}: acknowledged points missing at {level:?}: {missing:?}");
        assert_eq!(r.vectors.len(), part.len() * DIM, "{what}: one vector per point");
        for (j, id) in part.iter().enumerate() {
            assert_eq!(&r.vectors[j * DIM..(j + 1) * DIM], ledger[id].as_slice(), "{what}: vector of point {id}");
        }
    }
}

/// `per_shard` ids of every shard: `ids[s][i]` lies in shard `s`.
fn ids_by_shard(per_shard: usize, first: u64) -> Vec<Vec<u64>> {
    let mut out: Vec<Vec<u64>> = vec![Vec::new(); SHARDS as usize];
    let mut id = first;
    while out.iter().any(|v| v.len() < per_shard) {
        let s = PointId::Int(id).shard(SHARDS) as usize;
        if out[s].len() < per_shard {
            out[s].push(id);
        }
        id += 1;
    }
    out
}

// ---------------------------------------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------------------------------------

/// Three nodes (ids 1, 2, 3 at indexes 0, 1, 2), each with its own data dir; stopped ones are `None`.
struct Cluster {
    dirs: Vec<tempfile::TempDir>,
    nodes: Vec<Option<RunningNode>>,
    /// Address of each node (kept across restarts: a node restarts on the same port).
    addrs: Vec<String>,
}

fn config(dir: &Path, id: u64, listen: &str, join: Option<String>) -> NodeConfig {
    // In-process tests of the cluster logic over plain text (TLS and keys have their own tests).
    NodeConfig {
        data_dir: dir.to_path_buf(),
        listen: listen.into(),
        node_id: id,
        join,
        insecure: true,
        enable_fault_injection: true,
        ..Default::default()
    }
}

impl Cluster {
    /// Starts node 1 (a new cluster), then nodes 2 and 3 joining through it.
    async fn start() -> Cluster {
        let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let first = start(config(dirs[0].path(), 1, "127.0.0.1:0", None)).await.expect("node 1 starts");
        let seed = first.address().to_string();
        let mut nodes = vec![Some(first)];
        for (id, dir) in (2..=3).zip(&dirs[1..]) {
            let n = start(config(dir.path(), id, "127.0.0.1:0", Some(seed.clone())))
                .await
                .unwrap_or_else(|e| panic!("node {id} joins through {seed}: {e}"));
            nodes.push(Some(n));
        }
        let addrs = nodes.iter().map(|n| n.as_ref().unwrap().address().to_string()).collect();
        Cluster { dirs, nodes, addrs }
    }

    fn addr(&self, id: u64) -> String {
        self.addrs[id as usize - 1].clone()
    }

    fn data_dir(&self, id: u64) -> PathBuf {
        self.dirs[id as usize - 1].path().to_path_buf()
    }

    /// Ids of the running nodes.
    fn live(&self) -> Vec<u64> {
        (1..=3).filter(|&id| self.nodes[id as usize - 1].is_some()).collect()
    }

    /// A client of the running nodes other than `except`.
    async fn client_without(&self, except: &[u64]) -> Client {
        let addrs: Vec<String> =
            self.live().into_iter().filter(|n| !except.contains(n)).map(|n| self.addr(n)).collect();
        Client::connect(addrs, T).await.expect("client connects")
    }

    /// Graceful stop of node `id`.
    async fn stop(&mut self, id: u64) {
        let n = self.nodes[id as usize - 1].take().unwrap_or_else(|| panic!("node {id} is running"));
        n.shutdown().await;
    }

    /// Restarts node `id` on its data dir and its previous address (the port is retried while another
    /// socket still holds it).
    async fn restart(&mut self, id: u64) {
        assert!(self.nodes[id as usize - 1].is_none(), "node {id} is stopped");
        let join = (id != 1).then(|| self.addr(1));
        let cfg = config(&self.data_dir(id), id, &self.addr(id), join);
        let deadline = Instant::now() + Duration::from_secs(20);
        let node = loop {
            match start(cfg.clone()).await {
                Ok(n) => break n,
                Err(ServeError::Bind { addr, source }) if Instant::now() < deadline => {
                    tracing::warn!(%addr, error = %source, "port still taken; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("node {id} restarts on {}: {e}", self.addr(id)),
            }
        };
        assert_eq!(node.address(), self.addr(id), "node {id} is back on its address");
        self.nodes[id as usize - 1] = Some(node);
    }

    /// Stops every running node gracefully.
    async fn shutdown(mut self) {
        for id in self.live() {
            self.stop(id).await;
        }
    }
}

async fn create(c: &Client) {
    let req = v1::CreateCollectionRequest {
        name: COLL.into(),
        dim: DIM as u32,
        metric: "l2".into(),
        id_type: "int".into(),
        shards: SHARDS,
        replication_factor: 3,
        index: Some(v1::IndexParams { kind: Some(Kind::Flat(true)) }),
        on_disk: false,
    };
    let info = c.create_collection(req, T).await.expect("create collection");
    assert_eq!((info.shards, info.replication_factor), (SHARDS, 3), "created as asked");
}

/// The `Cluster` service of one node.
fn cluster_rpc(addr: &str) -> ClusterClient<Channel> {
    let ch = Endpoint::from_shared(format!("http://{addr}"))
        .expect("address")
        .connect_timeout(Duration::from_secs(1))
        .connect_lazy();
    ClusterClient::new(ch)
}

/// `Cluster/Shards` of the collection as node `addr` reports it.
async fn shards_via(addr: &str) -> Result<Vec<v1::ShardInfo>, String> {
    let mut req = tonic::Request::new(v1::ShardsRequest { collection: COLL.into() });
    req.set_timeout(Duration::from_secs(5));
    match tokio::time::timeout(Duration::from_secs(6), cluster_rpc(addr).shards(req)).await {
        Ok(Ok(r)) => Ok(r.into_inner().shards),
        Ok(Err(s)) => Err(format!("Shards via {addr}: {:?} {}", s.code(), s.message())),
        Err(_) => Err(format!("Shards via {addr}: no answer")),
    }
}

/// `Cluster/SetFaults` on node `addr`: it refuses and sends no traffic to `blocked` (empty heals).
async fn set_faults(addr: &str, blocked: &[u64]) {
    let mut req = tonic::Request::new(v1::SetFaultsRequest { blocked: blocked.to_vec() });
    req.set_timeout(Duration::from_secs(5));
    let r = tokio::time::timeout(Duration::from_secs(6), cluster_rpc(addr).set_faults(req))
        .await
        .unwrap_or_else(|_| panic!("SetFaults on {addr}: no answer"))
        .unwrap_or_else(|s| panic!("SetFaults on {addr}: {s}"))
        .into_inner();
    let want: BTreeSet<u64> = blocked.iter().copied().collect();
    assert_eq!(r.blocked.into_iter().collect::<BTreeSet<u64>>(), want, "SetFaults on {addr} reports its blocklist");
}

/// One line per shard, for failure messages.
fn describe(shards: &[v1::ShardInfo]) -> String {
    let mut s = String::new();
    for sh in shards {
        s.push_str(&format!("\n  shard {} leader {} count {}:", sh.id, sh.leader, sh.count));
        for r in &sh.replicas {
            s.push_str(&format!(
                " [node {} {} {} applied {} lag {} count {} digest {:x}]",
                r.node, r.role, r.state, r.applied_index, r.lag, r.count, r.digest
            ));
        }
    }
    s
}

/// Whether every shard has exactly one leader and three active replicas on nodes 1..=3, all at the leader's
/// applied index with no lag and with the leader's digest and count. `Err` says what is not there yet.
fn converged(shards: &[v1::ShardInfo]) -> Result<(), String> {
    if shards.len() != SHARDS as usize {
        return Err(format!("{} shards, want {SHARDS}", shards.len()));
    }
    for sh in shards {
        let nodes: BTreeSet<u64> = sh.replicas.iter().map(|r| r.node).collect();
        if sh.replicas.len() != 3 || nodes != BTreeSet::from([1, 2, 3]) {
            return Err(format!("shard {}: replicas on {nodes:?}, want one on each of nodes 1, 2, 3", sh.id));
        }
        let leaders: Vec<&v1::ReplicaInfo> = sh.replicas.iter().filter(|r| r.role == "leader").collect();
        let [leader] = leaders.as_slice() else {
            return Err(format!("shard {}: {} replicas claim leadership", sh.id, leaders.len()));
        };
        if sh.leader != leader.node {
            return Err(format!("shard {}: leader {} but node {} claims it", sh.id, sh.leader, leader.node));
        }
        for r in &sh.replicas {
            if r.state != "active" {
                return Err(format!("shard {}: replica on node {} is {}", sh.id, r.node, r.state));
            }
            if (r.applied_index, r.lag, r.digest, r.count) != (leader.applied_index, 0, leader.digest, leader.count) {
                return Err(format!(
                    "shard {}: replica on node {} at applied {} lag {} digest {:x} count {}; leader at applied {} \
                     digest {:x} count {}",
                    sh.id,
                    r.node,
                    r.applied_index,
                    r.lag,
                    r.digest,
                    r.count,
                    leader.applied_index,
                    leader.digest,
                    leader.count
                ));
            }
        }
    }
    Ok(())
}

/// Waits until `Cluster/Shards` through node `via` shows the collection converged (see [`converged`])
/// holding `points` points in all; returns the shards.
async fn wait_converged(c: &Cluster, via: u64, points: u64, what: &str) -> Vec<v1::ShardInfo> {
    let addr = c.addr(via);
    wait_for(what, CONVERGE, || async {
        let shards = shards_via(&addr).await?;
        converged(&shards).map_err(|e| format!("{e}{}", describe(&shards)))?;
        let total: u64 = shards.iter().map(|s| s.count).sum();
        if total != points {
            return Err(format!("{total} points over the shards, want {points}{}", describe(&shards)));
        }
        Ok(shards)
    })
    .await
}

/// Shard leaderships per node (nodes leading none included).
fn leaderships(shards: &[v1::ShardInfo]) -> BTreeMap<u64, usize> {
    let mut out: BTreeMap<u64, usize> = (1..=3).map(|n| (n, 0)).collect();
    for s in shards {
        *out.entry(s.leader).or_default() += 1;
    }
    out
}

/// Index of the newest snapshot of each shard of the collection under `data_dir` (`None`: no snapshot).
fn snapshot_indexes(data_dir: &Path) -> Vec<Option<u64>> {
    let mut out = vec![None; SHARDS as usize];
    let Ok(colls) = std::fs::read_dir(data_dir.join("shards")) else { return out };
    for coll in colls.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(&format!("{COLL}@"))) {
        for (s, slot) in out.iter_mut().enumerate() {
            let Ok(files) = std::fs::read_dir(coll.path().join(s.to_string()).join("snapshots")) else { continue };
            for f in files.flatten() {
                // snapshot-<index, 20 digits>-<term>-<node>.snap
                let name = f.file_name().to_string_lossy().to_string();
                let index = name
                    .strip_prefix("snapshot-")
                    .and_then(|r| r.strip_suffix(".snap"))
                    .and_then(|r| r.split('-').next())
                    .and_then(|i| i.parse::<u64>().ok());
                if let Some(i) = index {
                    *slot = Some(slot.map_or(i, |o: u64| o.max(i)));
                }
            }
        }
    }
    out
}

/// Per shard of the collection under `data_dir`: whether its Raft log was ever purged (a snapshot replaced
/// its head), i.e. whether `DIR/log/purged` exists.
fn purged_shards(data_dir: &Path) -> Vec<bool> {
    let mut out = vec![false; SHARDS as usize];
    let Ok(colls) = std::fs::read_dir(data_dir.join("shards")) else { return out };
    for coll in colls.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(&format!("{COLL}@"))) {
        for (s, slot) in out.iter_mut().enumerate() {
            *slot |= coll.path().join(s.to_string()).join("log").join("purged").is_file();
        }
    }
    out
}

/// Whether `r` is an error of one of the kinds a level that cannot be met may give.
fn is_level_failure(r: &Result<(), Error>, timeout_ok: bool) -> bool {
    matches!(r, Err(Error::Consistency(_))) || (timeout_ok && matches!(r, Err(Error::Timeout(_))))
}

// ---------------------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formation_and_placement() {
    bounded(async {
        let cluster = Cluster::start().await;
        let all: Vec<String> = cluster.addrs.clone();
        let c = Client::connect(all.clone(), T).await.expect("client connects");

        // Every node sees the three nodes, up, with one group-0 leader.
        for (i, addr) in all.iter().enumerate() {
            let one = Client::connect(vec![addr.clone()], T).await.expect("client connects");
            wait_for(&format!("node {} lists 3 up nodes", i + 1), CONVERGE, || async {
                let info = one.cluster_info(T).await.map_err(|e| e.to_string())?;
                let nodes: BTreeMap<u64, (String, String, String)> =
                    info.nodes.iter().map(|n| (n.id, (n.address.clone(), n.status.clone(), n.role.clone()))).collect();
                let want: BTreeMap<u64, String> = (1..=3).map(|id| (id, cluster.addr(id))).collect();
                let got: BTreeMap<u64, String> = nodes.iter().map(|(id, n)| (*id, n.0.clone())).collect();
                let roles: Vec<&str> = nodes.values().map(|n| n.2.as_str()).collect();
                let ok = info.node_id == i as u64 + 1
                    && got == want
                    && nodes.values().all(|n| n.1 == "up")
                    && roles.iter().filter(|r| **r == "leader").count() == 1
                    && roles.iter().filter(|r| **r == "follower").count() == 2
                    && info.meta_leader != 0;
                if ok { Ok(()) } else { Err(format!("{info:?}")) }
            })
            .await;
        }

        create(&c).await;
        let spec = c.get_collection(COLL, T).await.unwrap();
        assert_eq!((spec.shards, spec.replication_factor), (SHARDS, 3));

        // Placement: 6 shards x 3 replicas on distinct nodes, each with a leader, leaders spread.
        let shards = wait_for("placement with leaders spread over the nodes", CONVERGE, || async {
            let shards = shards_via(&all[0]).await?;
            converged(&shards).map_err(|e| format!("{e}{}", describe(&shards)))?;
            let leaders: BTreeSet<u64> = shards.iter().map(|s| s.leader).collect();
            if leaders.len() < 2 {
                return Err(format!("every leader on node(s) {leaders:?}{}", describe(&shards)));
            }
            Ok(shards)
        })
        .await;
        let ids: Vec<u32> = shards.iter().map(|s| s.id).collect();
        assert_eq!(ids, (0..SHARDS).collect::<Vec<_>>(), "shards numbered 0..{SHARDS}");
        // Every node reports the same placement.
        let placement = |shards: &[v1::ShardInfo]| -> Vec<BTreeSet<u64>> {
            shards.iter().map(|s| s.replicas.iter().map(|r| r.node).collect()).collect()
        };
        for addr in &all[1..] {
            let other = wait_for("Shards through another node", CONVERGE, || shards_via(addr)).await;
            assert_eq!(placement(&other), placement(&shards), "placement as {addr} reports it");
        }

        // Points land on their shards, replicated everywhere, readable through any node.
        let mut rng = Rng::new(1);
        let mut ledger = Ledger::new();
        let ids: Vec<u64> = (0..600).collect();
        ingest(&c, &mut rng, &mut ledger, &ids, 100).await;
        let shards = wait_converged(&cluster, 2, 600, "600 points replicated").await;
        for s in &shards {
            let want = ids.iter().filter(|&&id| PointId::Int(id).shard(SHARDS) == s.id).count() as u64;
            assert_eq!(s.count, want, "points of shard {}", s.id);
        }
        for addr in &all {
            let one = Client::connect(vec![addr.clone()], T).await.unwrap();
            assert_holds(&one, &ledger, ReadLevel::Strong, &format!("strong reads via {addr}")).await;
            assert_holds(&one, &ledger, ReadLevel::Eventual, &format!("eventual reads via {addr}")).await;
        }
        cluster.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover() {
    bounded(async {
        let mut cluster = Cluster::start().await;
        let c = cluster.client_without(&[]).await;
        create(&c).await;
        let mut rng = Rng::new(2);
        let mut ledger = Ledger::new();
        ingest(&c, &mut rng, &mut ledger, &(0..2000).collect::<Vec<u64>>(), 200).await;
        let shards = wait_converged(&cluster, 1, 2000, "2000 points replicated").await;

        let lead = leaderships(&shards);
        let victim = *lead.iter().max_by_key(|(n, k)| (**k, std::cmp::Reverse(**n))).unwrap().0;
        tracing::warn!(?lead, victim, "stopping the node that leads the most shards");
        let rest = cluster.client_without(&[victim]).await;
        cluster.stop(victim).await;

        // Quorum writes go on through the elections (the coordinator retries on the new leaders).
        ingest(&rest, &mut rng, &mut ledger, &(2000..2600).collect::<Vec<u64>>(), 50).await;
        // Overwrites of old points too: the newest version wins everywhere.
        ingest(&rest, &mut rng, &mut ledger, &(0..2000).step_by(10).collect::<Vec<u64>>(), 100).await;

        assert_holds(&rest, &ledger, ReadLevel::Strong, "strong reads after failover").await;
        for id in cluster.live() {
            let one = Client::connect(vec![cluster.addr(id)], T).await.unwrap();
            assert_holds(&one, &ledger, ReadLevel::Strong, &format!("strong reads via node {id}")).await;
        }
        // Every shard has a leader among the survivors.
        let addr = cluster.addr(cluster.live()[0]);
        wait_for("a surviving leader for every shard", CONVERGE, || async {
            let shards = shards_via(&addr).await?;
            match shards.iter().find(|s| s.leader == 0 || s.leader == victim) {
                None => Ok(()),
                Some(s) => Err(format!("shard {} led by {}{}", s.id, s.leader, describe(&shards))),
            }
        })
        .await;
        cluster.shutdown().await;
    })
    .await;
}

/// Picks the node to stop as a follower: not node 1 (the seed), leading as few shards as possible.
fn pick_follower(shards: &[v1::ShardInfo]) -> u64 {
    let lead = leaderships(shards);
    *[2u64, 3].iter().min_by_key(|n| (lead[n], **n)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_by_log() {
    bounded(async {
        let mut cluster = Cluster::start().await;
        let c = cluster.client_without(&[]).await;
        create(&c).await;
        let mut rng = Rng::new(3);
        let mut ledger = Ledger::new();
        ingest(&c, &mut rng, &mut ledger, &(0..300).collect::<Vec<u64>>(), 100).await;
        let shards = wait_converged(&cluster, 1, 300, "300 points replicated").await;
        let follower = pick_follower(&shards);
        let before: Vec<u64> =
            shards.iter().map(|s| s.replicas.iter().find(|r| r.node == follower).unwrap().applied_index).collect();

        let rest = cluster.client_without(&[follower]).await;
        cluster.stop(follower).await;
        // 500 more points in 20 batches (at most 20 log entries per shard: far below any snapshot).
        ingest(&rest, &mut rng, &mut ledger, &(300..800).collect::<Vec<u64>>(), 25).await;
        // Deletes and overwrites are replayed as well.
        let gone: Vec<u64> = (0..300).step_by(7).collect();
        rest.delete(COLL, ints(gone.iter().copied()), WriteLevel::Quorum, T).await.expect("delete");
        for id in &gone {
            ledger.remove(id);
        }
        ingest(&rest, &mut rng, &mut ledger, &(1..300).step_by(11).collect::<Vec<u64>>(), 100).await;
        let live_snapshots = snapshot_indexes(&cluster.data_dir(cluster.live()[0]));
        assert!(live_snapshots.iter().all(|s| s.is_none()), "no snapshot yet: {live_snapshots:?}");

        cluster.restart(follower).await;
        let shards = wait_converged(&cluster, follower, ledger.len() as u64, "the restarted replica caught up").await;
        for (s, b) in shards.iter().zip(&before) {
            let r = s.replicas.iter().find(|r| r.node == follower).unwrap();
            assert!(r.applied_index > *b, "shard {}: node {follower} applied {} after {b}", s.id, r.applied_index);
        }
        assert!(
            snapshot_indexes(&cluster.data_dir(follower)).iter().all(|s| s.is_none()),
            "caught up by log: no snapshot on node {follower}"
        );
        // Its own replicas serve the data: eventual reads through it alone are served locally.
        let own = Client::connect(vec![cluster.addr(follower)], T).await.unwrap();
        assert_holds(&own, &ledger, ReadLevel::Eventual, "eventual reads via the restarted node").await;
        assert_holds(&own, &ledger, ReadLevel::Strong, "strong reads via the restarted node").await;
        cluster.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_by_snapshot() {
    bounded(async {
        let mut cluster = Cluster::start().await;
        let c = cluster.client_without(&[]).await;
        create(&c).await;
        let mut rng = Rng::new(4);
        let mut ledger = Ledger::new();
        ingest(&c, &mut rng, &mut ledger, &(0..60).collect::<Vec<u64>>(), 60).await;
        let shards = wait_converged(&cluster, 1, 60, "60 points replicated").await;
        let follower = pick_follower(&shards);
        let before: u64 =
            shards.iter().map(|s| s.replicas.iter().find(|r| r.node == follower).unwrap().applied_index).max().unwrap();

        let rest = cluster.client_without(&[follower]).await;
        cluster.stop(follower).await;

        // 1300 batches of one point per shard: 1300 log entries on every shard, so the leaders snapshot
        // (every 1000 entries) and purge the log the stopped replica would need.
        const BATCHES: usize = 1300;
        const WRITERS: usize = 8;
        let by_shard = ids_by_shard(BATCHES, 1_000_000);
        let batches: Vec<Vec<u64>> = (0..BATCHES).map(|i| by_shard.iter().map(|ids| ids[i]).collect()).collect();
        let vecs: Vec<Vec<f32>> = batches.iter().map(|b| random_vectors(&mut rng, b.len(), DIM)).collect();
        let rest = &rest;
        let writers = (0..WRITERS).map(|w| {
            let mine: Vec<(&Vec<u64>, &Vec<f32>)> = batches.iter().zip(&vecs).skip(w).step_by(WRITERS).collect();
            async move {
                for (ids, v) in mine {
                    rest.upsert(COLL, ints(ids.iter().copied()), v, DIM, &[], WriteLevel::Quorum, T)
                        .await
                        .unwrap_or_else(|e| panic!("quorum upsert of batch from id {}: {e}", ids[0]));
                }
            }
        });
        futures::future::join_all(writers).await;
        for (ids, v) in batches.iter().zip(&vecs) {
            for (j, id) in ids.iter().enumerate() {
                ledger.insert(*id, v[j * DIM..(j + 1) * DIM].to_vec());
            }
        }

        // The survivors snapshot every shard (index >= 1000, far past the stopped replica's) and purge the
        // log before it down to the last 500 entries. A leader purges only while no replication to the
        // stopped node is in flight (between its retries), so wait for the purge itself: from then on the
        // stopped replica can only catch up by snapshot.
        assert!(
            snapshot_indexes(&cluster.data_dir(follower)).iter().all(|s| s.is_none()),
            "no snapshot on node {follower}"
        );
        assert!(purged_shards(&cluster.data_dir(follower)).iter().all(|p| !p), "no purge on node {follower}");
        let leader_snaps = wait_for("snapshots and purged logs on the surviving nodes", CONVERGE, || async {
            let snaps: Vec<Vec<Option<u64>>> =
                cluster.live().iter().map(|&n| snapshot_indexes(&cluster.data_dir(n))).collect();
            let purged: Vec<Vec<bool>> = cluster.live().iter().map(|&n| purged_shards(&cluster.data_dir(n))).collect();
            let min = snaps.iter().flatten().map(|s| s.unwrap_or(0)).min().unwrap_or(0);
            if min >= before + 900 && purged.iter().flatten().all(|p| *p) {
                Ok(min)
            } else {
                Err(format!("snapshot indexes {snaps:?}, purged {purged:?}"))
            }
        })
        .await;

        cluster.restart(follower).await;
        wait_converged(&cluster, follower, ledger.len() as u64, "the restarted replica caught up").await;
        let own = snapshot_indexes(&cluster.data_dir(follower));
        assert!(
            own.iter().all(|s| s.is_some_and(|i| i >= leader_snaps)),
            "node {follower} installed snapshots at >= {leader_snaps}: {own:?}"
        );
        let own = Client::connect(vec![cluster.addr(follower)], T).await.unwrap();
        assert_holds(&own, &ledger, ReadLevel::Eventual, "eventual reads via the restarted node").await;
        cluster.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strong_write_with_voter_down() {
    bounded(async {
        let mut cluster = Cluster::start().await;
        let c = cluster.client_without(&[]).await;
        create(&c).await;
        let mut rng = Rng::new(5);
        let mut ledger = Ledger::new();
        write(&c, &mut rng, &mut ledger, &(0..100).collect::<Vec<u64>>(), WriteLevel::Strong, T)
            .await
            .expect("strong write with every voter up");
        wait_converged(&cluster, 1, 100, "100 points replicated").await;

        let rest = cluster.client_without(&[3]).await;
        cluster.stop(3).await;

        // Every shard has node 3 as a voter: `strong` cannot be met, and says so within its timeout.
        let mut scratch = Ledger::new();
        let r = tokio::time::timeout(
            SHORT_BOUND,
            write(&rest, &mut rng, &mut scratch, &(100..160).collect::<Vec<u64>>(), WriteLevel::Strong, SHORT),
        )
        .await
        .expect("a strong write with a voter down returns within its timeout (no hang)");
        tracing::info!(?r, "strong write with a voter down");
        assert!(is_level_failure(&r, false), "strong write with a voter down: want Consistency, got {r:?}");

        // `quorum` is met by the two survivors.
        write(&rest, &mut rng, &mut ledger, &(200..260).collect::<Vec<u64>>(), WriteLevel::Quorum, T)
            .await
            .expect("quorum write with one voter down");
        let count = rest.count(COLL, ReadLevel::Strong, T).await.unwrap();
        assert!(
            (160..=220).contains(&count),
            "strong count {count}: 160 acknowledged, plus up to 60 of the failed strong write"
        );
        let got = rest.get(COLL, ints(ledger.keys().copied()), false, ReadLevel::Strong, T).await.unwrap();
        assert!(got.found.iter().all(|f| *f), "every acknowledged point is found");

        // With node 3 back (and caught up), `strong` is met again.
        cluster.restart(3).await;
        let c = cluster.client_without(&[]).await;
        // (Retried: the restarted voter may still be catching up when the first attempt's timeout ends.)
        let deadline = Instant::now() + CONVERGE;
        loop {
            let r =
                write(&c, &mut rng, &mut ledger, &(300..360).collect::<Vec<u64>>(), WriteLevel::Strong, SHORT).await;
            match r {
                Ok(()) => break,
                Err(Error::Consistency(_) | Error::Timeout(_)) if Instant::now() < deadline => {}
                Err(e) => panic!("strong write with every voter back: {e}"),
            }
        }
        let shards = wait_for("replicas converged", CONVERGE, || async {
            let shards = shards_via(&cluster.addr(3)).await?;
            converged(&shards).map_err(|e| format!("{e}{}", describe(&shards)))?;
            Ok(shards)
        })
        .await;
        let total: u64 = shards.iter().map(|s| s.count).sum();
        assert!((220..=280).contains(&total), "{total} points after the strong write");
        cluster.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition() {
    bounded(async {
        let cluster = Cluster::start().await;
        let c = cluster.client_without(&[]).await;
        create(&c).await;
        let mut rng = Rng::new(6);
        let mut ledger = Ledger::new();
        ingest(&c, &mut rng, &mut ledger, &(0..300).collect::<Vec<u64>>(), 100).await;
        wait_converged(&cluster, 1, 300, "300 points replicated").await;
        let via1 = Client::connect(vec![cluster.addr(1)], T).await.unwrap();
        let via2 = Client::connect(vec![cluster.addr(2)], T).await.unwrap();

        // Node 1 alone on one side, nodes 2 and 3 on the other.
        set_faults(&cluster.addr(1), &[2, 3]).await;
        set_faults(&cluster.addr(2), &[1]).await;
        set_faults(&cluster.addr(3), &[1]).await;

        // The minority side cannot commit: a quorum write through node 1 fails within its timeout.
        let mut scratch = Ledger::new();
        let r = tokio::time::timeout(
            SHORT_BOUND,
            write(&via1, &mut rng, &mut scratch, &(1000..1060).collect::<Vec<u64>>(), WriteLevel::Quorum, SHORT),
        )
        .await
        .expect("a quorum write on the minority side returns within its timeout (no hang)");
        tracing::info!(?r, "quorum write through the minority");
        assert!(
            is_level_failure(&r, true),
            "quorum write through the minority: want Consistency or Timeout, got {r:?}"
        );

        // The majority side elects leaders for node 1's shards and goes on.
        ingest(&via2, &mut rng, &mut ledger, &(300..500).collect::<Vec<u64>>(), 50).await;
        let got = via2.get(COLL, ints(300..500), false, ReadLevel::Strong, T).await.unwrap();
        assert!(got.found.iter().all(|f| *f), "the majority's writes are visible at strong");

        // Heal and converge: node 1's replicas catch up (and drop anything they had not committed).
        for id in 1..=3 {
            set_faults(&cluster.addr(id), &[]).await;
        }
        let addr1 = cluster.addr(1);
        let shards = wait_for("replicas converged after the heal", CONVERGE, || async {
            let shards = shards_via(&addr1).await?;
            converged(&shards).map_err(|e| format!("{e}{}", describe(&shards)))?;
            Ok(shards)
        })
        .await;
        let total: u64 = shards.iter().map(|s| s.count).sum();
        assert!(
            (500..=560).contains(&total),
            "{total} points after the heal: 500 acknowledged, plus up to 60 of the failed write"
        );
        let got = via1.get(COLL, ints(ledger.keys().copied()), true, ReadLevel::Strong, T).await.unwrap();
        assert!(got.found.iter().all(|f| *f), "every acknowledged point is found through node 1");
        let want: Vec<f32> = ledger.values().flatten().copied().collect();
        assert_eq!(got.vectors, want, "acknowledged vectors through node 1");
        cluster.shutdown().await;
    })
    .await;
}
