//! End-to-end tests of one node through the Rust client: a node started in-process with
//! `shoal_node::server::start` (or, for crash recovery, the real `shoal-node` binary killed with SIGKILL),
//! each test on its own temporary data dir and a free loopback port. Results are checked against brute
//! force computed here; every test is bounded in time and asserts no timings.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shoal_client::v1::{self, index_params::Kind};
use shoal_client::{Client, Error, ReadLevel, WriteLevel};
use shoal_node::NodeConfig;
use shoal_node::server::{RunningNode, start};
use shoal_testkit::{Rng, random_vectors};

/// Deadline of every client call.
const T: Duration = Duration::from_secs(30);
/// Upper bound of one whole test.
const TEST_LIMIT: Duration = Duration::from_secs(150);
/// Tolerance on distances compared with brute force.
const EPS: f32 = 1e-4;

// ---------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------

/// Tests in progress, by test name (libtest names each test's thread after the test).
static RUNNING: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
/// Starts the process-wide watchdog once.
static WATCHDOG: Once = Once::new();
/// Whole-binary limit: a node that deadlocks can keep a test's runtime from ever dropping (tokio waits for
/// its blocking tasks), which no per-test timeout can end; the watchdog turns that hang into a failure.
const PROCESS_LIMIT: Duration = Duration::from_secs(600);

/// Runs a test body with an upper bound on its duration.
async fn bounded<F: std::future::Future<Output = ()>>(body: F) {
    WATCHDOG.call_once(|| {
        std::thread::spawn(|| {
            std::thread::sleep(PROCESS_LIMIT);
            let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner()).clone();
            eprintln!("node tests still running after {PROCESS_LIMIT:?} (a deadlock?): {running:?}");
            std::process::exit(101);
        });
    });
    let name = std::thread::current().name().unwrap_or("?").to_string();
    RUNNING.lock().unwrap_or_else(|e| e.into_inner()).insert(name.clone());
    tokio::time::timeout(TEST_LIMIT, body).await.expect("test exceeded its time bound");
    RUNNING.lock().unwrap_or_else(|e| e.into_inner()).remove(&name);
}

fn init_tracing() {
    let filter = std::env::var("SHOAL_TEST_LOG").unwrap_or_else(|_| "warn,openraft=error".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}

async fn start_node(dir: &Path) -> RunningNode {
    init_tracing();
    let cfg =
        NodeConfig { data_dir: dir.to_path_buf(), listen: "127.0.0.1:0".into(), insecure: true, ..Default::default() };
    start(cfg).await.expect("node starts")
}

async fn connect(addr: &str) -> Client {
    Client::connect(vec![addr.to_string()], T).await.expect("client connects")
}

fn ints(ids: impl IntoIterator<Item = u64>) -> v1::PointIds {
    v1::PointIds { ints: ids.into_iter().collect(), strs: vec![] }
}

fn flat() -> Option<v1::IndexParams> {
    Some(v1::IndexParams { kind: Some(Kind::Flat(true)) })
}

fn hnsw(m: u32, ef_construction: u32) -> Option<v1::IndexParams> {
    Some(v1::IndexParams { kind: Some(Kind::Hnsw(v1::HnswParams { m, ef_construction, ..Default::default() })) })
}

fn collection(
    name: &str,
    dim: u32,
    metric: &str,
    shards: u32,
    index: Option<v1::IndexParams>,
) -> v1::CreateCollectionRequest {
    v1::CreateCollectionRequest {
        name: name.into(),
        dim,
        metric: metric.into(),
        id_type: "int".into(),
        shards,
        replication_factor: 0,
        index,
        on_disk: false,
    }
}

fn texts(payloads: &[Value]) -> Vec<String> {
    payloads.iter().map(|p| p.to_string()).collect()
}

/// What the test believes the collection holds: id -> (vector, payload).
type Model = BTreeMap<u64, (Vec<f32>, Value)>;

/// Upserts `ids` (row-major `vectors`, JSON `payloads`) and records them in `model`.
async fn upsert(c: &Client, name: &str, model: &mut Model, ids: &[u64], vectors: &[f32], payloads: &[Value]) {
    let dim = vectors.len() / ids.len();
    let n = c
        .upsert(name, ints(ids.iter().copied()), vectors, dim, &texts(payloads), WriteLevel::Quorum, T)
        .await
        .expect("upsert");
    assert_eq!(n, ids.len() as u64, "upsert reports every point written");
    for (i, &id) in ids.iter().enumerate() {
        model.insert(id, (vectors[i * dim..(i + 1) * dim].to_vec(), payloads[i].clone()));
    }
}

/// One search request of `nq` queries; hits as (id, distance) per query.
async fn search(
    c: &Client,
    name: &str,
    queries: &[f32],
    k: u32,
    filter: Option<&Value>,
    ef: u32,
) -> Result<Vec<Vec<(u64, f32)>>, Error> {
    let req = v1::SearchRequest {
        collection: name.into(),
        queries: queries.to_vec(),
        k,
        filter: filter.map(|f| f.to_string()).unwrap_or_default(),
        ef,
        with_payload: false,
        consistency: ReadLevel::Unspecified as i32,
        session: Vec::new(),
        ..Default::default()
    };
    let resp = c.search(req, T).await?;
    let ids = resp.ids.unwrap_or_default().ints;
    assert_eq!(ids.len(), resp.distances.len(), "one distance per hit");
    assert_eq!(resp.counts.iter().map(|&n| n as usize).sum::<usize>(), ids.len(), "counts add up to the hits");
    let mut out = Vec::with_capacity(resp.counts.len());
    let mut at = 0;
    for &n in &resp.counts {
        let n = n as usize;
        out.push(ids[at..at + n].iter().copied().zip(resp.distances[at..at + n].iter().copied()).collect());
        at += n;
    }
    Ok(out)
}

/// Get by ids: per id, `Some((vector, payload))` when found (vector empty without `with_vectors`;
/// payload `Null` when none).
async fn get(c: &Client, name: &str, ids: &[u64], with_vectors: bool) -> Vec<Option<(Vec<f32>, Value)>> {
    let r = c.get(name, ints(ids.iter().copied()), with_vectors, ReadLevel::Unspecified, T).await.expect("get");
    assert_eq!(r.found.len(), ids.len(), "one found flag per id");
    let n_found = r.found.iter().filter(|&&f| f).count();
    assert_eq!(r.payloads.len(), n_found, "one payload per found point");
    let dim = if with_vectors && n_found > 0 { r.vectors.len() / n_found } else { 0 };
    if !with_vectors {
        assert!(r.vectors.is_empty(), "no vectors unless asked for");
    }
    let mut j = 0;
    r.found
        .iter()
        .map(|&f| {
            f.then(|| {
                let v = r.vectors.get(j * dim..(j + 1) * dim).unwrap_or_default().to_vec();
                let p = &r.payloads[j];
                let p = if p.is_empty() { Value::Null } else { serde_json::from_str(p).expect("payload is JSON") };
                j += 1;
                (v, p)
            })
        })
        .collect()
}

fn l2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum::<f64>() as f32
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    (1.0 - dot / (na * nb)) as f32
}

/// Exact top-`k` of `q` over the points of `model` whose payload satisfies `keep`.
fn brute(
    model: &Model,
    q: &[f32],
    k: usize,
    dist: fn(&[f32], &[f32]) -> f32,
    keep: impl Fn(&Value) -> bool,
) -> Vec<(u64, f32)> {
    let mut all: Vec<(u64, f32)> =
        model.iter().filter(|(_, (_, p))| keep(p)).map(|(&id, (v, _))| (id, dist(v, q))).collect();
    all.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

/// Asserts that `got` is an exact top-k: same length and distances as `want`, ids equal except where two
/// true distances tie within `EPS`, and every returned distance right for its id.
fn assert_exact(got: &[(u64, f32)], want: &[(u64, f32)], model: &Model, q: &[f32], dist: fn(&[f32], &[f32]) -> f32) {
    assert_eq!(got.len(), want.len(), "hit count: got {got:?}, want {want:?}");
    let distinct: BTreeSet<u64> = got.iter().map(|h| h.0).collect();
    assert_eq!(distinct.len(), got.len(), "hits are distinct: {got:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g.1 - w.1).abs() <= EPS, "hit {i}: distance {} vs brute force {} ({got:?} vs {want:?})", g.1, w.1);
        let (v, _) = model.get(&g.0).unwrap_or_else(|| panic!("hit {i}: id {} is not a live point", g.0));
        let truth = dist(v, q);
        assert!((g.1 - truth).abs() <= EPS, "hit {i}: id {} reported at {} but is at {truth}", g.0, g.1);
        if g.0 != w.0 {
            assert!((truth - w.1).abs() <= EPS, "hit {i}: id {} instead of {} ({got:?} vs {want:?})", g.0, w.0);
        }
    }
}

fn recall(got: &[(u64, f32)], want: &[(u64, f32)]) -> (usize, usize) {
    let truth: BTreeSet<u64> = want.iter().map(|h| h.0).collect();
    (got.iter().filter(|h| truth.contains(&h.0)).count(), truth.len())
}

/// Polls `index_status` until no live point is unindexed; returns the live point count.
async fn wait_indexed(c: &Client, name: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (points, unindexed) = c.index_status(name, T).await.expect("index_status");
        if unindexed == 0 {
            return points;
        }
        assert!(Instant::now() < deadline, "{unindexed} of {points} points still unindexed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn payload(i: u64) -> Value {
    json!({"i": i, "group": i % 5, "tag": if i.is_multiple_of(2) { "even" } else { "odd" }, "meta": {"x": i % 3}})
}

fn field(p: &Value, path: &str) -> Value {
    path.split('.').fold(p.clone(), |v, part| v.get(part).cloned().unwrap_or(Value::Null))
}

// ---------------------------------------------------------------------------------------------------------
// 1. Flat collection: exact search, filters, count, get, delete, update_payload
// ---------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flat_search_is_exact_and_point_ops_work() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let node = start_node(dir.path()).await;
        let c = connect(node.address()).await;
        let (name, dim, n) = ("docs", 16usize, 2000u64);
        let info = c.create_collection(collection(name, dim as u32, "l2", 2, flat()), T).await.unwrap();
        assert_eq!((info.name.as_str(), info.dim, info.metric.as_str(), info.shards), (name, 16, "l2", 2));
        assert_eq!(info.index, flat());

        let mut rng = Rng::new(1);
        let ids: Vec<u64> = (0..n).map(|i| 1000 + 3 * i).collect();
        let vectors = random_vectors(&mut rng, n as usize, dim);
        let payloads: Vec<Value> = ids.iter().map(|&id| payload(id)).collect();
        let mut model = Model::new();
        upsert(&c, name, &mut model, &ids, &vectors, &payloads).await;
        assert_eq!(c.count(name, ReadLevel::Unspecified, T).await.unwrap(), n);
        let listed = c.list_collections(T).await.unwrap();
        assert_eq!(listed.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), vec![name]);

        // Exact search, 8 queries in one request, with and without filters.
        let nq = 8;
        let queries = random_vectors(&mut rng, nq, dim);
        let check = |model: &Model, res: &[Vec<(u64, f32)>], k: usize, keep: &dyn Fn(&Value) -> bool| {
            assert_eq!(res.len(), nq, "one result row per query");
            for (qi, row) in res.iter().enumerate() {
                let q = &queries[qi * dim..(qi + 1) * dim];
                assert_exact(row, &brute(model, q, k, l2, keep), model, q, l2);
            }
        };
        let res = search(&c, name, &queries, 10, None, 0).await.unwrap();
        check(&model, &res, 10, &|_| true);
        let res = search(&c, name, &queries, 100, None, 0).await.unwrap();
        check(&model, &res, 100, &|_| true);

        let filter = json!({"group": {"$in": [1, 3]}, "meta.x": {"$ne": 0}, "tag": "odd"});
        let keep = |p: &Value| {
            [json!(1), json!(3)].contains(&field(p, "group")) && field(p, "meta.x") != json!(0) && p["tag"] == "odd"
        };
        assert!(model.values().filter(|(_, p)| keep(p)).count() > 50, "the filter matches enough points");
        let res = search(&c, name, &queries, 10, Some(&filter), 0).await.unwrap();
        check(&model, &res, 10, &keep);
        for row in &res {
            assert!(row.iter().all(|(id, _)| keep(&model[id].1)), "filtered hits match the filter");
        }
        // A filter matching fewer points than k returns just those.
        let few = json!({"$or": [{"i": {"$lt": 1006}}, {"i": 4000}]});
        let keep_few = |p: &Value| p["i"].as_u64().is_some_and(|i| i < 1006 || i == 4000);
        let res = search(&c, name, &queries, 10, Some(&few), 0).await.unwrap();
        assert!(res.iter().all(|r| r.len() == 3), "{res:?}");
        check(&model, &res, 10, &keep_few);
        // A filter matching nothing gives empty rows, not an error.
        let res = search(&c, name, &queries, 10, Some(&json!({"group": 99})), 0).await.unwrap();
        assert!(res.iter().all(|r| r.is_empty()));

        // Get returns vectors and payloads in request order; a missing id is reported as not found.
        let probe = [ids[5], 7, ids[1999], ids[0]];
        let got = get(&c, name, &probe, true).await;
        assert!(got[1].is_none(), "id 7 was never written");
        for (&id, g) in probe.iter().zip(&got) {
            if let Some((v, p)) = g {
                assert_eq!((v, p), (&model[&id].0, &model[&id].1), "get({id})");
            }
        }
        assert_eq!(got.iter().filter(|g| g.is_some()).count(), 3);
        let no_vec = get(&c, name, &[ids[5]], false).await;
        assert_eq!(no_vec[0].as_ref().map(|g| &g.1), Some(&payloads[5]));

        // Delete every 10th point: count, get and search reflect it.
        let gone: Vec<u64> = ids.iter().copied().step_by(10).collect();
        let deleted = c.delete(name, ints(gone.iter().copied()), WriteLevel::Quorum, T).await.unwrap();
        assert_eq!(deleted, gone.len() as u64);
        for id in &gone {
            model.remove(id);
        }
        assert_eq!(c.count(name, ReadLevel::Unspecified, T).await.unwrap(), n - gone.len() as u64);
        assert!(get(&c, name, &gone, true).await.iter().all(|g| g.is_none()), "deleted points are gone");
        let res = search(&c, name, &queries, 10, None, 0).await.unwrap();
        check(&model, &res, 10, &|_| true);
        // Searching for a deleted point's exact vector does not find it.
        let q_gone = &vectors[..dim];
        let res = search(&c, name, q_gone, 5, None, 0).await.unwrap();
        assert!(res[0].iter().all(|h| h.0 != ids[0]) && res[0][0].1 > 0.0, "{res:?}");

        // Re-upsert replaces vector and payload; count unchanged.
        let re_ids: Vec<u64> = ids[1..6].to_vec();
        let re_vecs = random_vectors(&mut rng, re_ids.len(), dim);
        let re_payloads: Vec<Value> = re_ids.iter().map(|&id| json!({"i": id, "replaced": true})).collect();
        upsert(&c, name, &mut model, &re_ids, &re_vecs, &re_payloads).await;
        assert_eq!(c.count(name, ReadLevel::Unspecified, T).await.unwrap(), model.len() as u64);
        let got = get(&c, name, &re_ids, true).await;
        for (&id, g) in re_ids.iter().zip(&got) {
            assert_eq!(g.as_ref(), Some(&model[&id]), "replaced point {id}");
        }
        let res = search(&c, name, &re_vecs[..dim], 1, None, 0).await.unwrap();
        assert_eq!(res[0][0].0, re_ids[0]);
        assert!(res[0][0].1.abs() <= EPS);

        // update_payload merges keys: new keys added, existing ones overwritten, the rest kept.
        let patched: Vec<u64> =
            ids.iter().copied().skip(1).step_by(97).filter(|id| model.contains_key(id)).take(20).collect();
        assert_eq!(patched.len(), 19);
        let patch = json!({"color": "red", "group": 42, "meta": {"y": 1}});
        let np = c
            .update_payload(name, ints(patched.iter().copied()), patch.to_string(), WriteLevel::Quorum, T)
            .await
            .unwrap();
        assert_eq!(np, patched.len() as u64);
        for id in &patched {
            let p = model.get_mut(id).unwrap().1.as_object_mut().unwrap();
            for (k, v) in patch.as_object().unwrap() {
                p.insert(k.clone(), v.clone());
            }
        }
        let got = get(&c, name, &patched, true).await;
        for (&id, g) in patched.iter().zip(&got) {
            let (v, p) = g.as_ref().expect("patched point still there");
            assert_eq!(v, &model[&id].0, "vector of {id} untouched by update_payload");
            assert_eq!(p, &model[&id].1, "payload of {id} merged");
            assert_eq!(p["color"], "red");
            assert_eq!(p["i"], json!(id), "keys not in the patch are kept");
        }
        let red = json!({"color": "red"});
        let res = search(&c, name, &queries, 50, Some(&red), 0).await.unwrap();
        check(&model, &res, 50, &|p| p["color"] == "red");
        assert!(res.iter().all(|r| r.len() == patched.len()));

        // Patching a deleted point does not bring it back.
        c.update_payload(name, ints([gone[3]]), json!({"color": "blue"}).to_string(), WriteLevel::Quorum, T)
            .await
            .unwrap();
        assert!(get(&c, name, &[gone[3]], true).await[0].is_none(), "a patch does not resurrect a deleted point");
        assert_eq!(c.count(name, ReadLevel::Unspecified, T).await.unwrap(), model.len() as u64);

        // Strong reads see the same data.
        assert_eq!(c.count(name, ReadLevel::Strong, T).await.unwrap(), model.len() as u64);

        node.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn str_ids_and_cosine() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let node = start_node(dir.path()).await;
        let c = connect(node.address()).await;
        let dim = 8;
        let mut req = collection("named", dim as u32, "cosine", 3, flat());
        req.id_type = "str".into();
        c.create_collection(req, T).await.unwrap();
        let mut rng = Rng::new(6);
        let names: Vec<String> = (0..60).map(|i| format!("doc-{i}")).collect();
        let vectors = random_vectors(&mut rng, names.len(), dim);
        let ids = v1::PointIds { ints: vec![], strs: names.clone() };
        let n = c.upsert("named", ids, &vectors, dim, &[], WriteLevel::Strong, T).await.unwrap();
        assert_eq!(n, 60);
        let q = random_vectors(&mut rng, 1, dim);
        let req = v1::SearchRequest {
            collection: "named".into(),
            queries: q.clone(),
            k: 5,
            with_payload: true,
            ..Default::default()
        };
        let resp = c.search(req, T).await.unwrap();
        let got = resp.ids.unwrap();
        assert!(got.ints.is_empty());
        assert_eq!(resp.payloads, vec![String::new(); 5], "no payload was written");
        let mut want: Vec<(String, f32)> =
            names.iter().enumerate().map(|(i, s)| (s.clone(), cosine(&vectors[i * dim..(i + 1) * dim], &q))).collect();
        want.sort_by(|a, b| a.1.total_cmp(&b.1));
        for (i, (id, d)) in got.strs.iter().zip(&resp.distances).enumerate() {
            assert!((d - want[i].1).abs() <= EPS, "hit {i}: {d} vs {}", want[i].1);
            let truth = names.iter().position(|s| s == id).map(|j| cosine(&vectors[j * dim..(j + 1) * dim], &q));
            assert!(truth.is_some_and(|t| (t - d).abs() <= EPS), "hit {i}: {id} at {d}");
        }
        let r = c
            .get(
                "named",
                v1::PointIds { ints: vec![], strs: vec!["doc-3".into(), "nope".into()] },
                true,
                ReadLevel::Strong,
                T,
            )
            .await
            .unwrap();
        assert_eq!(r.found, vec![true, false]);
        // Cosine vectors come back normalised (or as given); either way they point the same way.
        assert!(cosine(&r.vectors, &vectors[3 * dim..4 * dim]).abs() <= EPS);
        node.shutdown().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------------------
// 2. HNSW: searchable at once, indexed in the background, recall vs brute force
// ---------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hnsw_recall_and_immediate_visibility() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let node = start_node(dir.path()).await;
        let c = connect(node.address()).await;
        let (name, dim, n, batch) = ("vecs", 16usize, 5000u64, 1250u64);
        let info = c.create_collection(collection(name, dim as u32, "l2", 2, hnsw(16, 100)), T).await.unwrap();
        assert_eq!(info.index, hnsw(16, 100));

        let mut rng = Rng::new(2);
        let mut model = Model::new();
        for b in 0..n / batch {
            let ids: Vec<u64> = (b * batch..(b + 1) * batch).collect();
            let vectors = random_vectors(&mut rng, ids.len(), dim);
            let payloads: Vec<Value> = ids.iter().map(|&id| payload(id)).collect();
            upsert(&c, name, &mut model, &ids, &vectors, &payloads).await;
            // Every acknowledged point is searchable right away, indexed or not.
            let (_, unindexed) = c.index_status(name, T).await.unwrap();
            let probe: Vec<u64> = ids.iter().copied().step_by(311).collect();
            let queries: Vec<f32> = probe.iter().flat_map(|id| model[id].0.clone()).collect();
            let res = search(&c, name, &queries, 1, None, 0).await.unwrap();
            for (id, row) in probe.iter().zip(&res) {
                assert_eq!(row.len(), 1);
                assert_eq!(row[0].0, *id, "a point just upserted is found by its own vector ({unindexed} unindexed)");
                assert!(row[0].1.abs() <= EPS);
            }
        }
        assert_eq!(wait_indexed(&c, name).await, n);
        assert_eq!(c.count(name, ReadLevel::Unspecified, T).await.unwrap(), n);

        let nq = 100;
        let queries = random_vectors(&mut rng, nq, dim);
        let res = search(&c, name, &queries, 10, None, 100).await.unwrap();
        let (mut hit, mut total) = (0, 0);
        for (qi, row) in res.iter().enumerate() {
            let q = &queries[qi * dim..(qi + 1) * dim];
            let want = brute(&model, q, 10, l2, |_| true);
            assert_eq!(row.len(), 10);
            for (id, d) in row {
                assert!((d - l2(&model[id].0, q)).abs() <= EPS, "distance of {id} is right");
            }
            let (h, t) = recall(row, &want);
            hit += h;
            total += t;
        }
        let r = hit as f64 / total as f64;
        eprintln!("recall@10 {r:.3}");
        assert!(r >= 0.95, "recall@10 {r:.3} < 0.95");

        // Filtered HNSW search: only matching points, recall vs brute force over the matches.
        let filter = json!({"group": {"$in": [1, 2]}});
        let keep = |p: &Value| p["group"] == 1 || p["group"] == 2;
        let res = search(&c, name, &queries, 10, Some(&filter), 100).await.unwrap();
        let (mut hit, mut total) = (0, 0);
        for (qi, row) in res.iter().enumerate() {
            let q = &queries[qi * dim..(qi + 1) * dim];
            assert!(row.iter().all(|(id, _)| keep(&model[id].1)), "filtered hits match the filter");
            let (h, t) = recall(row, &brute(&model, q, 10, l2, keep));
            hit += h;
            total += t;
        }
        let r = hit as f64 / total as f64;
        eprintln!("filtered recall@10 {r:.3}");
        assert!(r >= 0.95, "filtered recall@10 {r:.3} < 0.95");

        // Delete after indexing: deleted points never come back from the graph.
        let gone: Vec<u64> = (0..n).step_by(3).collect();
        c.delete(name, ints(gone.iter().copied()), WriteLevel::Quorum, T).await.unwrap();
        for id in &gone {
            model.remove(id);
        }
        assert_eq!(c.count(name, ReadLevel::Unspecified, T).await.unwrap(), model.len() as u64);
        let res = search(&c, name, &queries, 10, None, 100).await.unwrap();
        for row in &res {
            assert!(row.iter().all(|(id, _)| model.contains_key(id)), "no deleted point in {row:?}");
        }
        node.shutdown().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------------------
// 3. Graceful restarts
// ---------------------------------------------------------------------------------------------------------

/// Everything observable about a collection, for before/after comparisons.
#[derive(Debug, PartialEq)]
struct Snapshot {
    count: u64,
    points: Vec<Option<(Vec<f32>, Value)>>,
    hits: Vec<Vec<(u64, f32)>>,
    filtered: Vec<Vec<(u64, f32)>>,
}

async fn snapshot(c: &Client, name: &str, ids: &[u64], queries: &[f32]) -> Snapshot {
    Snapshot {
        count: c.count(name, ReadLevel::Unspecified, T).await.unwrap(),
        points: get(c, name, ids, true).await,
        hits: search(c, name, queries, 10, None, 0).await.unwrap(),
        filtered: search(c, name, queries, 10, Some(&json!({"tag": "odd"})), 0).await.unwrap(),
    }
}

/// Number of shard directories of `collection` (any incarnation) under `DATA_DIR/shards` that still hold a
/// file; an empty directory holds no data.
fn shard_dirs(data_dir: &Path, collection: &str) -> usize {
    fn has_file(p: &Path) -> bool {
        std::fs::read_dir(p).map(|d| d.flatten().any(|e| e.path().is_file() || has_file(&e.path()))).unwrap_or(false)
    }
    std::fs::read_dir(data_dir.join("shards"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().to_string();
                    (n == collection || n.starts_with(&format!("{collection}@"))) && has_file(&e.path())
                })
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_everything() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let dim = 8;
        let mut rng = Rng::new(3);
        let queries = random_vectors(&mut rng, 4, dim);
        let mut keep = Model::new();
        let mut hn = Model::new();

        // Round 0: write, delete, patch.
        let node = start_node(dir.path()).await;
        let c = connect(node.address()).await;
        c.create_collection(collection("keep", dim as u32, "l2", 2, flat()), T).await.unwrap();
        c.create_collection(collection("hn", dim as u32, "l2", 1, hnsw(8, 64)), T).await.unwrap();
        let ids: Vec<u64> = (0..600).collect();
        let vecs = random_vectors(&mut rng, ids.len(), dim);
        let payloads: Vec<Value> = ids.iter().map(|&i| payload(i)).collect();
        upsert(&c, "keep", &mut keep, &ids, &vecs, &payloads).await;
        upsert(&c, "hn", &mut hn, &ids, &random_vectors(&mut rng, ids.len(), dim), &payloads).await;
        c.delete("keep", ints((0..600).step_by(7)), WriteLevel::Quorum, T).await.unwrap();
        c.update_payload(
            "keep",
            ints((1..600).step_by(13)),
            json!({"tag": "odd", "p": 1}).to_string(),
            WriteLevel::Quorum,
            T,
        )
        .await
        .unwrap();
        let probe: Vec<u64> = (0..700).collect();
        let before = snapshot(&c, "keep", &probe, &queries).await;
        assert_eq!(before.count, 600 - 86);
        let hn_before = get(&c, "hn", &probe, true).await;
        let specs_before = c.list_collections(T).await.unwrap();
        drop(c);
        node.shutdown().await;

        // Round 1: everything is back, identical.
        let node = start_node(dir.path()).await;
        let c = connect(node.address()).await;
        assert_eq!(c.list_collections(T).await.unwrap(), specs_before);
        assert_eq!(snapshot(&c, "keep", &probe, &queries).await, before, "state after a graceful restart");
        assert_eq!(get(&c, "hn", &probe, true).await, hn_before);
        assert_eq!(wait_indexed(&c, "hn").await, 600);
        let hn_queries: Vec<f32> = (0..600).step_by(37).flat_map(|i| hn[&i].0.clone()).collect();
        let res = search(&c, "hn", &hn_queries, 1, None, 0).await.unwrap();
        for (row, id) in res.iter().zip((0..600).step_by(37)) {
            assert_eq!(row[0].0, id, "HNSW finds point {id} after restart");
        }

        // More writes, a collection dropped and re-created under the same name.
        let more: Vec<u64> = (600..700).chain(0..10).collect();
        let more_vecs = random_vectors(&mut rng, more.len(), dim);
        let more_payloads: Vec<Value> = more.iter().map(|&i| payload(i + 1)).collect();
        upsert(&c, "keep", &mut keep, &more, &more_vecs, &more_payloads).await;
        c.create_collection(collection("tmp", dim as u32, "l2", 2, flat()), T).await.unwrap();
        let mut tmp = Model::new();
        upsert(&c, "tmp", &mut tmp, &ids[..50], &vecs[..50 * dim], &payloads[..50]).await;
        assert!(c.drop_collection("tmp", T).await.unwrap(), "tmp existed");
        assert!(!c.drop_collection("tmp", T).await.unwrap(), "tmp is gone");
        assert!(matches!(c.count("tmp", ReadLevel::Unspecified, T).await, Err(Error::CollectionNotFound(_))));
        c.create_collection(collection("tmp", 4, "dot", 1, flat()), T).await.unwrap();
        assert_eq!(c.count("tmp", ReadLevel::Unspecified, T).await.unwrap(), 0, "re-created collection is empty");
        assert!(get(&c, "tmp", &ids[..50], true).await.iter().all(|g| g.is_none()));
        assert!(search(&c, "tmp", &[1.0, 0.0, 0.0, 0.0], 5, None, 0).await.unwrap()[0].is_empty());
        let mut tmp = Model::new();
        upsert(
            &c,
            "tmp",
            &mut tmp,
            &[1, 2, 3],
            &[1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.5, 0.5, 0.0, 0.0],
            &[json!({}), json!({"a": 1}), json!({"b": [1, 2]})],
        )
        .await;
        assert_eq!(shard_dirs(dir.path(), "tmp"), 1, "the dropped collection's data is removed");
        let before = snapshot(&c, "keep", &probe, &queries).await;
        assert_eq!(before.count, 600 - 86 + 100 + 2);
        let tmp_before = get(&c, "tmp", &[1, 2, 3, 4], true).await;
        let specs_before = c.list_collections(T).await.unwrap();
        drop(c);
        node.shutdown().await;

        // Round 2.
        let node = start_node(dir.path()).await;
        let c = connect(node.address()).await;
        let specs = c.list_collections(T).await.unwrap();
        assert_eq!(specs, specs_before);
        let tmp_spec = specs.iter().find(|s| s.name == "tmp").expect("tmp listed");
        assert_eq!((tmp_spec.dim, tmp_spec.metric.as_str(), tmp_spec.shards), (4, "dot", 1));
        assert_eq!(snapshot(&c, "keep", &probe, &queries).await, before, "state after the second restart");
        let tmp_after = get(&c, "tmp", &[1, 2, 3, 4], true).await;
        assert_eq!(tmp_after, tmp_before);
        assert_eq!(tmp_after[0].as_ref().map(|p| p.0.clone()), Some(vec![1.0, 0.0, 0.0, 0.0]));
        assert_eq!(c.count("tmp", ReadLevel::Unspecified, T).await.unwrap(), 3, "only the new tmp's points");
        let res = search(&c, "tmp", &[0.0, 2.0, 0.0, 0.0], 3, None, 0).await.unwrap();
        assert_eq!(res[0].iter().map(|h| h.0).collect::<Vec<_>>(), vec![2, 3, 1], "dot: -dot ascending");
        assert!((res[0][0].1 + 2.0).abs() <= EPS);
        assert_eq!(shard_dirs(dir.path(), "tmp"), 1);
        node.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_is_locked_while_a_node_runs() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let node = start_node(dir.path()).await;
        assert!(dir.path().join("node.json").exists(), "node.json written when ready");
        let cfg = NodeConfig {
            data_dir: dir.path().to_path_buf(),
            listen: "127.0.0.1:0".into(),
            insecure: true,
            ..Default::default()
        };
        match start(cfg.clone()).await {
            Err(shoal_node::server::ServeError::Locked(_)) => {}
            other => panic!("a second node on the same data dir must fail with Locked, got {other:?}"),
        }
        assert!(dir.path().join("node.json").exists(), "a refused second start leaves the running node's node.json");
        let c = connect(node.address()).await;
        assert_eq!(c.list_collections(T).await.unwrap(), vec![], "the first node still serves");
        node.shutdown().await;
        assert!(!dir.path().join("node.json").exists(), "node.json removed on graceful stop");
        start(cfg).await.expect("the lock is released by shutdown").shutdown().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------------------
// 4. Crash recovery: the real binary, SIGKILLed
// ---------------------------------------------------------------------------------------------------------

/// A `shoal-node` child process; killed (SIGKILL) and reaped when dropped.
struct NodeProcess {
    child: Child,
    log: PathBuf,
    address: String,
}

impl NodeProcess {
    /// Starts the binary on `data_dir` and waits for its `node.json`.
    fn spawn(data_dir: &Path, log: &Path) -> NodeProcess {
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal-node"));
        cmd.arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0", "--log-level", "warn", "--insecure"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("SHOAL_")) {
            cmd.env_remove(k);
        }
        let mut child = cmd.spawn().expect("spawn shoal-node");
        let pid = child.id() as u64;
        let ready = data_dir.join("node.json");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("shoal-node exited early ({status}):\n{}", std::fs::read_to_string(log).unwrap_or_default());
            }
            // A node.json left by a killed process names another pid: wait for ours.
            let info: Option<Value> = std::fs::read_to_string(&ready).ok().and_then(|t| serde_json::from_str(&t).ok());
            if let Some(info) = info.filter(|i| i["pid"].as_u64() == Some(pid)) {
                let address = info["address"].as_str().expect("node.json has an address").to_string();
                return NodeProcess { child, log: log.to_path_buf(), address };
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("shoal-node not ready within 60 s:\n{}", std::fs::read_to_string(log).unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and reap.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- shoal-node log ---\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}

/// Checks that every point of `acked` is present with its vector and payload.
async fn assert_all_present(c: &Client, name: &str, acked: &Model) {
    let ids: Vec<u64> = acked.keys().copied().collect();
    let got = get(c, name, &ids, true).await;
    let missing: Vec<u64> = ids.iter().zip(&got).filter(|(_, g)| g.is_none()).map(|(id, _)| *id).collect();
    assert!(missing.is_empty(), "{} of {} acknowledged points lost: {missing:?}", missing.len(), ids.len());
    for (id, g) in ids.iter().zip(&got) {
        assert_eq!(g.as_ref(), Some(&acked[id]), "point {id} recovered intact");
    }
    let count = c.count(name, ReadLevel::Unspecified, T).await.unwrap();
    assert!(count >= acked.len() as u64, "count {count} < {} acknowledged", acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_write() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let log = tmp.path().join("node.log");
        let (name, dim, batch) = ("crash", 8usize, 20u64);

        let mut proc = NodeProcess::spawn(&data, &log);
        let c = Arc::new(connect(&proc.address).await);
        c.create_collection(collection(name, dim as u32, "l2", 2, flat()), T).await.unwrap();

        // Writer keeps upserting batches; the node is killed while writes are in flight.
        let acked_batches = Arc::new(AtomicUsize::new(0));
        let writer = {
            let (c, acked_batches) = (c.clone(), acked_batches.clone());
            tokio::spawn(async move {
                let mut rng = Rng::new(4);
                let mut acked = Model::new();
                for b in 0..5000u64 {
                    let ids: Vec<u64> = (b * batch..(b + 1) * batch).collect();
                    let vectors = random_vectors(&mut rng, ids.len(), dim);
                    let payloads: Vec<Value> = ids.iter().map(|&i| json!({"i": i, "b": b})).collect();
                    let r = c
                        .upsert(name, ints(ids.clone()), &vectors, dim, &texts(&payloads), WriteLevel::Quorum, T)
                        .await;
                    if r.is_err() {
                        return acked;
                    }
                    for (i, id) in ids.into_iter().enumerate() {
                        acked.insert(id, (vectors[i * dim..(i + 1) * dim].to_vec(), payloads[i].clone()));
                    }
                    acked_batches.fetch_add(1, Ordering::Release);
                }
                panic!("the writer never saw the node die");
            })
        };
        while acked_batches.load(Ordering::Acquire) < 40 {
            assert!(!writer.is_finished(), "writer stopped before the kill");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        proc.kill();
        let mut acked = writer.await.unwrap();
        assert!(acked.len() >= 40 * batch as usize);
        drop(c);

        // Restart on the same data dir: every acknowledged point is there.
        let mut proc = NodeProcess::spawn(&data, &log);
        let c = connect(&proc.address).await;
        let info = c.get_collection(name, T).await.expect("collection survives the crash");
        assert_eq!((info.dim, info.shards), (dim as u32, 2));
        assert_all_present(&c, name, &acked).await;

        // Second round: acknowledged writes (including deletes and patches) right before a kill.
        let mut rng = Rng::new(5);
        let ids: Vec<u64> = (1_000_000..1_000_300).collect();
        let vectors = random_vectors(&mut rng, ids.len(), dim);
        let payloads: Vec<Value> = ids.iter().map(|&i| json!({"i": i})).collect();
        upsert(&c, name, &mut acked, &ids, &vectors, &payloads).await;
        let gone: Vec<u64> = acked.keys().copied().step_by(5).collect();
        c.delete(name, ints(gone.iter().copied()), WriteLevel::Quorum, T).await.unwrap();
        for id in &gone {
            acked.remove(id);
        }
        let patched: Vec<u64> = acked.keys().copied().step_by(7).collect();
        c.update_payload(name, ints(patched.iter().copied()), json!({"p": true}).to_string(), WriteLevel::Quorum, T)
            .await
            .unwrap();
        for id in &patched {
            acked.get_mut(id).unwrap().1["p"] = json!(true);
        }
        proc.kill();
        drop(c);

        let proc = NodeProcess::spawn(&data, &log);
        let c = connect(&proc.address).await;
        assert_all_present(&c, name, &acked).await;
        assert!(get(&c, name, &gone, false).await.iter().all(|g| g.is_none()), "acknowledged deletes survive");
        // Search still works on the recovered data and agrees with brute force.
        let q = random_vectors(&mut rng, 1, dim);
        let res = search(&c, name, &q, 10, Some(&json!({"p": true})), 0).await.unwrap();
        assert_exact(&res[0], &brute(&acked, &q, 10, l2, |p| p["p"] == true), &acked, &q, l2);
        drop(proc);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------------------
// 5. Errors
// ---------------------------------------------------------------------------------------------------------

/// Asserts that the failed batch wrote nothing: count, the batch's new ids and every existing point.
async fn assert_unchanged(c: &Client, name: &str, model: &Model, fresh: &[u64]) {
    assert_eq!(c.count(name, ReadLevel::Unspecified, T).await.unwrap(), model.len() as u64, "count unchanged");
    assert!(get(c, name, fresh, false).await.iter().all(|g| g.is_none()), "no point of the batch written");
    let ids: Vec<u64> = model.keys().copied().collect();
    let got = get(c, name, &ids, true).await;
    for (id, g) in ids.iter().zip(&got) {
        assert_eq!(g.as_ref(), Some(&model[id]), "existing point {id} unchanged");
    }
}

#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(r: Result<T, Error>, needles: &[&str]) {
    match r {
        Err(Error::InvalidArgument(msg)) => {
            for n in needles {
                assert!(msg.contains(n), "message {msg:?} should mention {n:?}");
            }
        }
        other => panic!("expected InvalidArgument mentioning {needles:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_map_to_their_kinds_and_change_nothing() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let node = start_node(dir.path()).await;
        let c = connect(node.address()).await;
        let (name, dim) = ("e", 16usize);
        let w = WriteLevel::Quorum;
        let r = ReadLevel::Unspecified;

        // Unknown collection, for every call.
        let nf = |res: Result<(), Error>, what: &str| match res {
            Err(Error::CollectionNotFound(m)) => assert!(m.contains("nope"), "{what}: {m:?} names the collection"),
            other => panic!("{what}: expected CollectionNotFound, got {other:?}"),
        };
        nf(c.count("nope", r, T).await.map(drop), "count");
        nf(c.get_collection("nope", T).await.map(drop), "get_collection");
        nf(c.upsert("nope", ints([1]), &[0.0; 16], 16, &[], w, T).await.map(drop), "upsert");
        nf(c.get("nope", ints([1]), true, r, T).await.map(drop), "get");
        nf(c.delete("nope", ints([1]), w, T).await.map(drop), "delete");
        nf(c.update_payload("nope", ints([1]), "{\"a\":1}".into(), w, T).await.map(drop), "update_payload");
        nf(c.index_status("nope", T).await.map(drop), "index_status");
        nf(search(&c, "nope", &[0.0; 16], 1, None, 0).await.map(drop), "search");
        assert!(!c.drop_collection("nope", T).await.unwrap(), "dropping an unknown collection returns false");

        // Creating twice, even with other parameters.
        c.create_collection(collection(name, dim as u32, "l2", 2, flat()), T).await.unwrap();
        for again in [collection(name, dim as u32, "l2", 2, flat()), collection(name, 4, "cosine", 1, hnsw(8, 50))] {
            match c.create_collection(again, T).await {
                Err(Error::CollectionExists(m)) => assert!(m.contains(name), "{m:?}"),
                other => panic!("expected CollectionExists, got {other:?}"),
            }
        }
        assert_eq!(c.get_collection(name, T).await.unwrap().dim, 16, "the first definition stays");

        // Bad collection definitions.
        assert_invalid(c.create_collection(collection("d0", 0, "l2", 1, flat()), T).await, &["dim"]);
        assert_invalid(c.create_collection(collection("d1", 70_000, "l2", 1, flat()), T).await, &["dim"]);
        assert_invalid(c.create_collection(collection("m", 4, "manhattan", 1, flat()), T).await, &["manhattan"]);
        assert_invalid(c.create_collection(collection("bad/name", 4, "l2", 1, flat()), T).await, &["bad/name"]);
        assert_eq!(c.list_collections(T).await.unwrap().len(), 1, "failed creates leave nothing behind");

        // A valid base, then bad batches that must change nothing.
        let mut rng = Rng::new(7);
        let mut model = Model::new();
        let base: Vec<u64> = (0..100).collect();
        upsert(
            &c,
            name,
            &mut model,
            &base,
            &random_vectors(&mut rng, 100, dim),
            &base.iter().map(|&i| payload(i)).collect::<Vec<_>>(),
        )
        .await;
        let fresh: Vec<u64> = (500..508).collect();
        // The batch overwrites existing ids too, so a partial write would show.
        let mixed: Vec<u64> = fresh.iter().copied().chain([1, 2, 3]).collect();
        let n = mixed.len();
        let good = random_vectors(&mut rng, n, dim);

        // Wrong dim (the client sends rows of 15 values to a 16-d collection).
        let short = random_vectors(&mut rng, n, dim - 1);
        assert_invalid(c.upsert(name, ints(mixed.clone()), &short, dim - 1, &[], w, T).await, &["dim"]);
        assert_unchanged(&c, name, &model, &fresh).await;
        // Rows of 32 values: also a dim mismatch, not silently two points per row.
        let long = random_vectors(&mut rng, n, 2 * dim);
        assert_invalid(c.upsert(name, ints(mixed.clone()), &long, 2 * dim, &[], w, T).await, &[]);
        assert_unchanged(&c, name, &model, &fresh).await;

        // NaN / inf in one vector: named by its index.
        let mut nan = good.clone();
        nan[3 * dim + 5] = f32::NAN;
        assert_invalid(c.upsert(name, ints(mixed.clone()), &nan, dim, &[], w, T).await, &["vectors[3]", "NaN"]);
        assert_unchanged(&c, name, &model, &fresh).await;
        let mut inf = good.clone();
        inf[9 * dim] = f32::NEG_INFINITY;
        assert_invalid(c.upsert(name, ints(mixed.clone()), &inf, dim, &[], w, T).await, &["vectors[9]", "inf"]);
        assert_unchanged(&c, name, &model, &fresh).await;

        // Duplicate ids in one batch.
        let mut dup = mixed.clone();
        dup[6] = dup[2];
        assert_invalid(c.upsert(name, ints(dup), &good, dim, &[], w, T).await, &["ids[6]", "ids[2]"]);
        assert_unchanged(&c, name, &model, &fresh).await;

        // Negative ids (as the int64 the Python API would send).
        let mut neg = mixed.clone();
        neg[4] = -5i64 as u64;
        assert_invalid(c.upsert(name, ints(neg), &good, dim, &[], w, T).await, &["ids[4]", "out of range", "-5"]);
        assert_unchanged(&c, name, &model, &fresh).await;

        // String ids on an int collection.
        let strs = v1::PointIds { ints: vec![], strs: mixed.iter().map(|i| i.to_string()).collect() };
        assert_invalid(c.upsert(name, strs, &good, dim, &[], w, T).await, &["ids[0]", "int"]);
        assert_unchanged(&c, name, &model, &fresh).await;

        // Payloads: not an object, not JSON, too deep.
        let mut pl: Vec<String> = mixed.iter().map(|i| json!({"i": i}).to_string()).collect();
        pl[7] = "[1, 2]".into();
        assert_invalid(c.upsert(name, ints(mixed.clone()), &good, dim, &pl, w, T).await, &["payloads[7]", "object"]);
        assert_unchanged(&c, name, &model, &fresh).await;
        pl[7] = "{\"a\": ".into();
        assert_invalid(c.upsert(name, ints(mixed.clone()), &good, dim, &pl, w, T).await, &["payloads[7]", "JSON"]);
        assert_unchanged(&c, name, &model, &fresh).await;
        pl[7] = format!("{}1{}", "{\"a\":".repeat(40), "}".repeat(40));
        assert_invalid(c.upsert(name, ints(mixed.clone()), &good, dim, &pl, w, T).await, &["payloads[7]", "deep"]);
        assert_unchanged(&c, name, &model, &fresh).await;

        // Bad update_payload patches and mistyped ids on other calls.
        assert_invalid(c.update_payload(name, ints([1]), "[1]".into(), w, T).await, &["patch"]);
        assert_invalid(c.update_payload(name, ints([1]), "nope".into(), w, T).await, &["patch"]);
        assert_invalid(c.update_payload(name, ints([1, 2, 1]), "{\"a\":1}".into(), w, T).await, &["ids[2]"]);
        assert_invalid(c.delete(name, ints([4, 4]), w, T).await, &["ids[1]"]);
        let strs = v1::PointIds { ints: vec![], strs: vec!["x".into()] };
        assert_invalid(c.get(name, strs, true, r, T).await, &["ids[0]"]);
        assert_unchanged(&c, name, &model, &fresh).await;

        // Search arguments.
        let q = random_vectors(&mut rng, 2, dim);
        assert_invalid(search(&c, name, &q, 0, None, 0).await, &["k"]);
        assert_invalid(search(&c, name, &q, 16_385, None, 0).await, &["k"]);
        assert_invalid(search(&c, name, &q[..dim + 3], 5, None, 0).await, &["dim"]);
        assert_invalid(search(&c, name, &[], 5, None, 0).await, &["dim"]);
        let mut qnan = q.clone();
        qnan[dim + 1] = f32::NAN;
        assert_invalid(search(&c, name, &qnan, 5, None, 0).await, &["queries[1]", "NaN"]);

        // Malformed filters name the offending operator or part.
        for (filter, needle) in [
            (json!({"year": {"$foo": 1}}), "$foo"),
            (json!({"tags": {"$in": 3}}), "$in"),
            (json!({"$or": []}), "$or"),
            (json!({"$and": {"a": 1}}), "$and"),
            (json!({"year": {"$gt": [1]}}), "$gt"),
            (json!({"$bogus": [{"a": 1}]}), "$bogus"),
            (json!([1, 2]), "filter"),
        ] {
            assert_invalid(search(&c, name, &q, 5, Some(&filter), 0).await, &[needle]);
        }
        let req = v1::SearchRequest {
            collection: name.into(),
            queries: q.clone(),
            k: 5,
            filter: "{".into(),
            ..Default::default()
        };
        assert_invalid(c.search(req, T).await, &["filter"]);

        // After all of that the collection still answers normally.
        assert_unchanged(&c, name, &model, &fresh).await;
        let res = search(&c, name, &q, 5, Some(&json!({"group": 2})), 0).await.unwrap();
        for (qi, row) in res.iter().enumerate() {
            let qv = &q[qi * dim..(qi + 1) * dim];
            assert_exact(row, &brute(&model, qv, 5, l2, |p| p["group"] == 2), &model, qv, l2);
        }
        node.shutdown().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------------------
// 6. Concurrency
// ---------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_lose_nothing() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let node = start_node(dir.path()).await;
        let c = Arc::new(connect(node.address()).await);
        let (name, dim, tasks, batches, per) = ("conc", 8usize, 4u64, 5u64, 100u64);
        c.create_collection(collection(name, dim as u32, "l2", 2, hnsw(8, 50)), T).await.unwrap();

        // A reader runs alongside: the count only grows, and searches never fail.
        let done = Arc::new(AtomicUsize::new(0));
        let reader = {
            let (c, done) = (c.clone(), done.clone());
            tokio::spawn(async move {
                let mut last = 0;
                let mut reads = 0;
                while done.load(Ordering::Acquire) < tasks as usize {
                    let n = c.count(name, ReadLevel::Unspecified, T).await.expect("count during writes");
                    assert!(n >= last, "count went back from {last} to {n}");
                    last = n;
                    search(&c, name, &[0.5; 8], 5, None, 0).await.expect("search during writes");
                    reads += 1;
                    tokio::task::yield_now().await;
                }
                reads
            })
        };
        let writers: Vec<_> = (0..tasks)
            .map(|t| {
                // Half the writers share the reader's client, half have their own connection.
                let (shared, done, addr) = (c.clone(), done.clone(), node.address().to_string());
                tokio::spawn(async move {
                    let own = if t % 2 == 1 { Some(connect(&addr).await) } else { None };
                    let c: &Client = own.as_ref().unwrap_or(&*shared);
                    let mut rng = Rng::new(100 + t);
                    let mut model = Model::new();
                    for b in 0..batches {
                        let ids: Vec<u64> = (0..per).map(|j| t * 1_000_000 + b * per + j).collect();
                        let vectors = random_vectors(&mut rng, ids.len(), dim);
                        let payloads: Vec<Value> = ids.iter().map(|&i| json!({"t": t, "i": i})).collect();
                        upsert(c, name, &mut model, &ids, &vectors, &payloads).await;
                    }
                    done.fetch_add(1, Ordering::Release);
                    model
                })
            })
            .collect();
        let mut model = Model::new();
        for w in writers {
            model.extend(w.await.expect("writer task"));
        }
        let reads = reader.await.expect("reader task");
        assert!(reads > 0);
        let total = tasks * batches * per;
        assert_eq!(model.len() as u64, total);
        assert_eq!(c.count(name, ReadLevel::Unspecified, T).await.unwrap(), total);
        assert_all_present(&c, name, &model).await;
        for t in 0..tasks {
            let res = search(&c, name, &[0.0; 8], 2000, Some(&json!({"t": t})), 0).await.unwrap();
            assert_eq!(res[0].len() as u64, batches * per, "task {t}'s points all match its filter");
        }
        assert_eq!(wait_indexed(&c, name).await, total);
        node.shutdown().await;
    })
    .await;
}
