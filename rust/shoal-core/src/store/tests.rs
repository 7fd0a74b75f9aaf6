//! Tests of the shard store.

use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use serde_json::Value;

use super::search::FILTER_SAMPLE;
use super::snapshot::SNAPSHOT_MAGIC;
use super::*;
use crate::cancel::CancelToken;
use crate::cost::{AccessPath, ShardShape, exact_cost};
use crate::dedup::WriteId;
use crate::distance;
use crate::filter::Filter;
use crate::hlc::Version;
use crate::payload_index::IndexKind;
use crate::quantizer::TRAIN_ROWS;
use crate::quantizer::{Quantization, Rescore};
use crate::{Error, IdType, IndexConfig, Metric, PointId, ShardConfig};
use serde_json::json;
use shoal_testkit::Rng;
use shoal_testkit::TempDir;
use std::collections::HashSet;

/// Sum of four uniforms in [0, 1), centred: close enough to normal for test data (standard deviation ~0.58).
fn gauss(rng: &mut Rng) -> f32 {
    (0..4).map(|_| rng.f32()).sum::<f32>() - 2.0
}

/// `n` vectors around `clusters` random centres.
fn clustered(rng: &mut Rng, n: usize, dim: usize, clusters: usize) -> Vec<f32> {
    let centres: Vec<f32> = (0..clusters * dim).map(|_| gauss(rng) * 3.0).collect();
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let c = (rng.next_u64() % clusters as u64) as usize;
        out.extend((0..dim).map(|j| centres[c * dim + j] + gauss(rng)));
    }
    out
}

fn cfg(dim: usize, metric: Metric, index: IndexConfig) -> ShardConfig {
    ShardConfig { dim, metric, id_type: IdType::Int, index, on_disk: false }
}

fn hnsw_cfg(dim: usize, metric: Metric) -> ShardConfig {
    cfg(dim, metric, IndexConfig::Hnsw { m: 12, ef_construction: 100, quantization: Quantization::None })
}

fn v(hlc: u64) -> Version {
    Version::new(hlc, 1)
}

fn up(id: u64, version: u64, vector: Vec<f32>, payload: Option<Value>) -> WriteOp {
    WriteOp::Upsert {
        id: PointId::Int(id),
        version: v(version),
        vector,
        payload: payload.map(|p| match p {
            Value::Object(m) => m,
            _ => panic!("payload must be an object"),
        }),
    }
}

fn del(id: u64, version: u64) -> WriteOp {
    WriteOp::Delete { id: PointId::Int(id), version: v(version) }
}

fn patch(id: u64, version: u64, p: Value) -> WriteOp {
    let Value::Object(patch) = p else { panic!("patch must be an object") };
    WriteOp::PatchPayload { id: PointId::Int(id), version: v(version), patch }
}

fn batch(ops: Vec<WriteOp>) -> WriteBatch {
    WriteBatch::new(ops)
}

/// Loads `data` as ids 0..n with payload {"i": i, "even": i % 2 == 0, "bucket": i % 10}.
fn load(store: &ShardStore, data: &[f32]) {
    let dim = store.config().dim;
    let ops: Vec<WriteOp> = data
        .chunks_exact(dim)
        .enumerate()
        .map(|(i, x)| up(i as u64, 10, x.to_vec(), Some(json!({"i": i, "even": i % 2 == 0, "bucket": i % 10}))))
        .collect();
    for c in ops.chunks(500) {
        let out = store.apply(&batch(c.to_vec()));
        assert_eq!(out.applied, c.len());
    }
}

/// Exact answer: (distance, id) of the k nearest of `data` (ids = row numbers) accepted by `keep`.
fn brute(
    metric: Metric,
    data: &[f32],
    dim: usize,
    q: &[f32],
    k: usize,
    keep: &dyn Fn(usize) -> bool,
) -> Vec<(f32, u64)> {
    let mut qq = q.to_vec();
    distance::prepare(metric, &mut qq);
    let mut all: Vec<(f32, u64)> = data
        .chunks_exact(dim)
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(i, x)| {
            let mut xx = x.to_vec();
            distance::prepare(metric, &mut xx);
            (distance::distance(metric, &qq, &xx), i as u64)
        })
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    all.truncate(k);
    all
}

fn ids_of(hits: &[Hit]) -> Vec<u64> {
    hits.iter()
        .map(|h| match h.id {
            PointId::Int(i) => i,
            _ => panic!("int ids only"),
        })
        .collect()
}

fn recall(store: &ShardStore, data: &[f32], queries: &[f32], k: usize, ef: Option<usize>) -> f64 {
    let dim = store.config().dim;
    let nq = queries.len() / dim;
    let res = store.search(queries, nq, k, None, ef, false);
    let mut found = 0;
    for (q, hits) in queries.chunks_exact(dim).zip(&res) {
        assert_eq!(hits.len(), k);
        let truth: HashSet<u64> =
            brute(store.config().metric, data, dim, q, k, &|_| true).into_iter().map(|x| x.1).collect();
        found += ids_of(hits).iter().filter(|i| truth.contains(i)).count();
    }
    found as f64 / (nq * k) as f64
}

fn snapshot_bytes(store: &ShardStore) -> Vec<u8> {
    let mut b = Vec::new();
    store.write_snapshot(&mut b).unwrap();
    b
}

#[test]
fn store_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<ShardStore>();
}

#[test]
fn lww_newer_wins_older_is_skipped() {
    let s = ShardStore::new(cfg(2, Metric::L2, IndexConfig::Flat));
    let out = s.apply(&batch(vec![up(1, 10, vec![1.0, 0.0], Some(json!({"a": 1})))]));
    assert_eq!((out.applied, out.skipped_stale), (1, 0));
    let out = s.apply(&batch(vec![up(1, 5, vec![9.0, 9.0], None)]));
    assert_eq!((out.applied, out.skipped_stale), (0, 1));
    let out = s.apply(&batch(vec![up(1, 10, vec![9.0, 9.0], None)]));
    assert_eq!((out.applied, out.skipped_stale), (0, 1), "an equal version is a retry");
    let r = s.get(&[PointId::Int(1)], true).pop().unwrap().unwrap();
    assert_eq!((r.vector, r.version), (vec![1.0, 0.0], v(10)));
    s.apply(&batch(vec![up(1, 20, vec![2.0, 0.0], None)]));
    let r = s.get(&[PointId::Int(1)], true).pop().unwrap().unwrap();
    assert_eq!((r.vector, r.payload, r.version), (vec![2.0, 0.0], None, v(20)));
    assert_eq!(s.count(), 1);
    assert_eq!(s.max_version(), v(20));
    // a higher node id breaks an hlc tie
    let tie =
        WriteOp::Upsert { id: PointId::Int(1), version: Version::new(20, 2), vector: vec![3.0, 0.0], payload: None };
    assert_eq!(s.apply(&batch(vec![tie])).applied, 1);
    // a wrong-dim vector is skipped, not applied
    assert_eq!(s.apply(&batch(vec![up(2, 30, vec![1.0], None)])).skipped_invalid, 1);
    assert_eq!(s.count(), 1);
}

#[test]
fn deletes_leave_tombstones() {
    let s = ShardStore::new(cfg(2, Metric::L2, IndexConfig::Flat));
    s.apply(&batch(vec![up(1, 10, vec![1.0, 0.0], None), up(2, 10, vec![0.0, 1.0], None)]));
    assert_eq!(s.apply(&batch(vec![del(1, 5)])).skipped_stale, 1, "older delete loses");
    assert_eq!(s.count(), 2);
    assert_eq!(s.apply(&batch(vec![del(1, 20)])).applied, 1);
    assert_eq!(s.count(), 1);
    assert!(s.get(&[PointId::Int(1)], false)[0].is_none());
    // an older upsert arriving late stays deleted
    assert_eq!(s.apply(&batch(vec![up(1, 15, vec![5.0, 5.0], None)])).skipped_stale, 1);
    assert_eq!(s.count(), 1);
    // a newer upsert revives
    assert_eq!(s.apply(&batch(vec![up(1, 25, vec![5.0, 5.0], None)])).applied, 1);
    assert_eq!(s.count(), 2);
    assert_eq!(s.stats().tombstones, 0, "the revived id needs no tombstone");
    // deleting an id never seen still blocks its older upsert
    assert_eq!(s.apply(&batch(vec![del(7, 30)])).applied, 1);
    assert_eq!(s.apply(&batch(vec![up(7, 29, vec![5.0, 5.0], None)])).skipped_stale, 1);
    assert_eq!(s.apply(&batch(vec![del(7, 30)])).skipped_stale, 1);
    // search never returns deleted points
    let hits = s.search(&[1.0, 0.0], 1, 10, None, None, false);
    assert_eq!(ids_of(&hits[0]), vec![2, 1]);
    // gc drops old tombstones only
    s.apply(&batch(vec![del(2, 40)]));
    assert_eq!(s.stats().tombstones, 2);
    assert_eq!(s.gc_tombstones(v(35)), 1);
    assert_eq!(s.stats().tombstones, 1);
    assert_eq!(s.apply(&batch(vec![up(2, 39, vec![5.0, 5.0], None)])).skipped_stale, 1);
}

#[test]
fn reordered_and_retried_writes_converge() {
    // Applied first in every run: a patch of a point that does not exist yet is skipped by design.
    let prefix = vec![up(1, 10, vec![1.0, 0.0], Some(json!({"a": 1, "b": 1})))];
    let ops = vec![
        up(1, 30, vec![2.0, 0.0], Some(json!({"a": 3}))),
        patch(1, 40, json!({"b": 4})),
        patch(1, 20, json!({"c": 2})),
        patch(1, 35, json!({"a": 35, "d": 35})),
        del(2, 25),
        up(2, 15, vec![0.0, 1.0], None),
        up(3, 5, vec![1.0, 1.0], None),
        del(3, 6),
        up(3, 7, vec![3.0, 3.0], Some(json!({"z": true}))),
        patch(4, 50, json!({"x": 1})),
    ];
    let ids = [1, 2, 3, 4].map(PointId::Int);
    let mut first: Option<(u64, Vec<Option<PointRecord>>)> = None;
    let mut rng = Rng::new(7);
    for round in 0..60 {
        let mut order = ops.clone();
        if round > 0 {
            for i in (1..order.len()).rev() {
                let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                order.swap(i, j);
            }
        }
        let s = ShardStore::new(cfg(2, Metric::L2, IndexConfig::Flat));
        s.apply(&batch(prefix.clone()));
        for op in &order {
            s.apply(&batch(vec![op.clone()]));
        }
        // retrying everything changes nothing
        let before = s.digest();
        let out = s.apply(&batch(prefix.iter().chain(&order).cloned().collect()));
        assert_eq!(out.applied, 0, "retries must be no-ops");
        assert_eq!(s.digest(), before);
        let state = (s.digest(), s.get(&ids, true));
        match &first {
            None => first = Some(state),
            Some(f) => assert_eq!(&state, f, "order {order:?} diverged"),
        }
    }
    let (_, got) = first.unwrap();
    assert_eq!(got[0].as_ref().unwrap().payload, Some(json!({"a": 35, "b": 4, "d": 35}).as_object().unwrap().clone()));
    assert_eq!(got[0].as_ref().unwrap().version, v(30));
    assert!(got[1].is_none());
    assert_eq!(got[2].as_ref().unwrap().version, v(7));
    assert!(got[3].is_none());
}

fn logged(ops: Vec<WriteOp>, id: u128) -> WriteBatch {
    WriteBatch { ops, write_id: Some(WriteId(id)) }
}

fn ms(ms: u64) -> u64 {
    Version::from_parts(ms, 0, 1).hlc
}

#[test]
fn logged_writes_apply_once_per_write_id() {
    let s = ShardStore::new(cfg(2, Metric::L2, IndexConfig::Flat));
    let first = s.apply_logged(logged(vec![up(1, ms(1_000), vec![1.0, 0.0], Some(json!({"v": 1})))], 7));
    assert_eq!((first.applied, first.duplicate), (1, false));
    // another writer's newer write, acknowledged
    s.apply_logged(logged(vec![up(1, ms(2_000), vec![2.0, 0.0], Some(json!({"v": 2})))], 8));
    // the first write retried through another coordinator: a fresh, newer stamp, the same write id
    let retry = s.apply_logged(logged(vec![up(1, ms(3_000), vec![1.0, 0.0], Some(json!({"v": 1})))], 7));
    assert_eq!((retry.applied, retry.duplicate), (1, true), "the original's outcome, nothing changed");
    let r = s.get(&[PointId::Int(1)], false).pop().unwrap().unwrap();
    assert_eq!(r.payload, Some(json!({"v": 2}).as_object().unwrap().clone()));
    assert_eq!(s.dedup_len(), 2);
    // a batch without a write id is never deduplicated
    assert_eq!(s.apply_logged(batch(vec![del(1, ms(4_000))])).applied, 1);
    assert_eq!(s.apply_logged(batch(vec![up(1, ms(4_000), vec![3.0, 0.0], None)])).applied, 1);
    assert_eq!(s.count(), 1);
    assert_eq!(s.apply_logged(batch(vec![])), ApplyOutcome::default());
}

#[test]
fn logged_writes_follow_log_order_whatever_the_stamps() {
    // A coordinator whose clock runs ahead stamps v1 far in the future; a later entry stamped by a
    // coordinator with a correct clock still wins, because it comes later in the log.
    let s = ShardStore::new(cfg(2, Metric::L2, IndexConfig::Flat));
    s.apply_logged(logged(vec![up(1, ms(60_000), vec![1.0, 0.0], Some(json!({"v": 1})))], 1));
    let out = s.apply_logged(logged(vec![up(1, ms(1_000), vec![2.0, 0.0], Some(json!({"v": 2})))], 2));
    assert_eq!((out.applied, out.skipped_stale), (1, 0));
    let r = s.get(&[PointId::Int(1)], true).pop().unwrap().unwrap();
    assert_eq!(r.vector, vec![2.0, 0.0]);
    assert!(r.version > Version::from_parts(60_000, 0, 1), "applied after the newest version");
    assert_eq!(s.max_version(), r.version);
    // deletes and patches too
    s.apply_logged(logged(vec![del(1, ms(500))], 3));
    assert_eq!(s.count(), 0);
    s.apply_logged(logged(vec![up(1, ms(400), vec![1.0, 1.0], Some(json!({"a": 1})))], 4));
    s.apply_logged(logged(vec![patch(1, ms(300), json!({"a": 2}))], 5));
    let r = s.get(&[PointId::Int(1)], false).pop().unwrap().unwrap();
    assert_eq!(r.payload, Some(json!({"a": 2}).as_object().unwrap().clone()));
    // replicas applying the same log end identical
    let t = ShardStore::new(cfg(2, Metric::L2, IndexConfig::Flat));
    t.apply_logged(logged(vec![up(1, ms(60_000), vec![1.0, 0.0], Some(json!({"v": 1})))], 1));
    t.apply_logged(logged(vec![up(1, ms(1_000), vec![2.0, 0.0], Some(json!({"v": 2})))], 2));
    t.apply_logged(logged(vec![del(1, ms(500))], 3));
    t.apply_logged(logged(vec![up(1, ms(400), vec![1.0, 1.0], Some(json!({"a": 1})))], 4));
    t.apply_logged(logged(vec![patch(1, ms(300), json!({"a": 2}))], 5));
    assert_eq!(s.digest(), t.digest());
    assert_eq!(snapshot_bytes(&s), snapshot_bytes(&t));
}

#[test]
fn logged_writes_expire_from_the_dedup_window() {
    use crate::dedup::DEDUP_WINDOW_MS;
    let s = ShardStore::new(cfg(2, Metric::L2, IndexConfig::Flat));
    s.apply_logged(logged(vec![up(1, ms(1_000), vec![1.0, 0.0], None)], 1));
    s.apply_logged(logged(vec![up(2, ms(2_000 + DEDUP_WINDOW_MS), vec![1.0, 0.0], None)], 2));
    assert_eq!(s.dedup_len(), 1, "write 1 left the window");
    // write 1 again: it can no longer be told from a duplicate, so it is refused as expired
    let out = s.apply_logged(logged(vec![up(1, ms(1_000), vec![9.0, 0.0], None)], 1));
    assert_eq!((out.applied, out.expired, out.duplicate), (0, true, false));
    assert_eq!(s.get(&[PointId::Int(1)], true)[0].as_ref().unwrap().vector, vec![1.0, 0.0]);
    // a write stamped within the window (behind shard time, but not by more than the window) applies
    let out = s.apply_logged(logged(vec![up(1, ms(3_000), vec![5.0, 0.0], None)], 3));
    assert_eq!((out.applied, out.expired), (1, false));
    // an id at the very top of the clock cannot be followed: refused, no panic
    let top = WriteOp::Upsert {
        id: PointId::Int(3),
        version: Version::new(u64::MAX, 1),
        vector: vec![0.0, 1.0],
        payload: None,
    };
    assert_eq!(s.apply_logged(logged(vec![top], 9)).applied, 1);
    let out = s.apply_logged(logged(vec![up(3, ms(4_000), vec![0.0, 2.0], None)], 10));
    assert!(out.expired && out.applied == 0);
}

#[test]
fn dedup_table_survives_snapshots() {
    let s = ShardStore::new(cfg(2, Metric::L2, IndexConfig::Flat));
    s.apply_logged(logged(vec![up(1, ms(1_000), vec![1.0, 0.0], None), up(2, ms(1_000), vec![0.0, 1.0], None)], 11));
    s.apply_logged(logged(vec![up(1, ms(2_000), vec![2.0, 0.0], None)], 12));
    let bytes = snapshot_bytes(&s);
    let t = ShardStore::read_snapshot(s.config().clone(), &mut bytes.as_slice()).unwrap();
    assert_eq!(t.dedup_len(), 2);
    let again = t.apply_logged(logged(vec![up(1, ms(3_000), vec![1.0, 0.0], None)], 11));
    assert_eq!((again.duplicate, again.applied), (true, 2));
    assert_eq!(t.get(&[PointId::Int(1)], true)[0].as_ref().unwrap().vector, vec![2.0, 0.0]);
    assert_eq!(snapshot_bytes(&t), bytes);
}

#[test]
fn format_1_snapshots_are_still_read() {
    let s = ShardStore::new(cfg(2, Metric::L2, IndexConfig::Flat));
    s.apply(&batch(vec![up(1, 10, vec![1.0, 0.0], Some(json!({"a": 1}))), del(2, 11)]));
    let v2 = snapshot_bytes(&s);
    // Format 1 is format 2 without the dedup section (an empty table: its u64 count at META's end).
    let meta_len = u64::from_le_bytes(v2[12..20].try_into().unwrap()) as usize;
    let mut body = Vec::new();
    body.extend_from_slice(&((meta_len - 8) as u64).to_le_bytes());
    body.extend_from_slice(&v2[20..20 + meta_len - 8]);
    body.extend_from_slice(&v2[20 + meta_len..v2.len() - 4]);
    let mut v1 = Vec::new();
    v1.extend_from_slice(SNAPSHOT_MAGIC);
    v1.extend_from_slice(&1u32.to_le_bytes());
    v1.extend_from_slice(&body);
    v1.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    let t = ShardStore::read_snapshot(s.config().clone(), &mut v1.as_slice()).unwrap();
    assert_eq!((t.digest(), t.dedup_len()), (s.digest(), 0));
    assert_eq!(snapshot_bytes(&t), v2, "re-written in the current format");
    let mut v3 = v2.clone();
    v3[8..12].copy_from_slice(&3u32.to_le_bytes());
    let err = ShardStore::read_snapshot(s.config().clone(), &mut v3.as_slice()).unwrap_err().to_string();
    assert!(err.contains("unsupported format version 3"), "{err}");
}

#[test]
fn a_capture_is_the_state_at_capture_time() {
    let s = ShardStore::new(hnsw_cfg(2, Metric::L2));
    s.apply(&batch((0..50).map(|i| up(i, 10, vec![i as f32, 1.0], Some(json!({"i": i})))).collect()));
    s.index_step(usize::MAX);
    let expected = snapshot_bytes(&s);
    let cap = s.capture().unwrap();
    // writes go on while the capture is held: upserts, a delete, a patch, a new point
    s.apply(&batch(vec![up(3, 20, vec![9.0, 9.0], None), del(4, 20), patch(5, 20, json!({"p": 1}))]));
    s.apply(&batch(vec![up(99, 20, vec![0.5, 0.5], None)]));
    let mut got = Vec::new();
    cap.write(&s, &mut got).unwrap();
    drop(cap);
    assert_eq!(got, expected, "the snapshot holds the captured state, not the later writes");
    assert_ne!(snapshot_bytes(&s), expected);
    let r = ShardStore::read_snapshot(s.config().clone(), &mut got.as_slice()).unwrap();
    assert_eq!(r.count(), 50);
}

#[test]
fn the_incremental_digest_follows_content_not_history() {
    let a = ShardStore::new(cfg(2, Metric::L2, IndexConfig::Flat));
    let mut rng = Rng::new(11);
    for round in 0..300u64 {
        let id = rng.next_u64() % 40;
        let op = match rng.next_u64() % 4 {
            0 => del(id, 10 + round),
            1 => patch(id, 10 + round, json!({"k": round % 3, "nested": {"a": [1, 2.5, "x"]}})),
            _ => up(id, 10 + round, vec![rng.f32(), rng.f32()], Some(json!({"r": round}))),
        };
        a.apply(&batch(vec![op]));
    }
    // a copy through a snapshot (slots compacted, hashes recomputed) has the same digest
    let bytes = snapshot_bytes(&a);
    let b = ShardStore::read_snapshot(a.config().clone(), &mut bytes.as_slice()).unwrap();
    assert_eq!(a.digest(), b.digest());
    // the same points written in another order, through other slots: same digest
    let c = ShardStore::new(cfg(2, Metric::L2, IndexConfig::Flat));
    let recs: Vec<PointRecord> = a.scroll(None, usize::MAX, None, true);
    for r in recs.iter().rev() {
        c.apply(&batch(vec![WriteOp::Upsert {
            id: r.id.clone(),
            version: r.version,
            vector: r.vector.clone(),
            payload: r.payload.clone(),
        }]));
    }
    assert_eq!(c.count(), a.count());
    assert_eq!(c.digest(), a.digest());
    // any difference in a payload value, a vector or a version shows
    let some = recs[0].clone();
    let d = ShardStore::read_snapshot(a.config().clone(), &mut bytes.as_slice()).unwrap();
    d.apply(&batch(vec![WriteOp::PatchPayload {
        id: some.id.clone(),
        version: Version::new(some.version.hlc + 1, 0),
        patch: json!({"r": -1}).as_object().unwrap().clone(),
    }]));
    assert_ne!(d.digest(), a.digest());
    assert_ne!(ShardStore::new(cfg(2, Metric::L2, IndexConfig::Flat)).digest(), a.digest());
}

#[test]
fn patch_payload_merges_per_key() {
    let s = ShardStore::new(cfg(2, Metric::L2, IndexConfig::Flat));
    s.apply(&batch(vec![up(1, 10, vec![1.0, 0.0], Some(json!({"a": 1, "b": 1}))), up(2, 10, vec![1.0, 0.0], None)]));
    // two writers patch different keys: both win, in either order
    let o = s.apply(&batch(vec![patch(1, 30, json!({"b": 3})), patch(1, 20, json!({"c": 2}))]));
    assert_eq!(o.applied, 2);
    // an older patch of an already newer key loses
    let o = s.apply(&batch(vec![patch(1, 25, json!({"b": 25}))]));
    assert_eq!((o.applied, o.skipped_stale), (0, 1));
    // a patch older than the upsert loses
    assert_eq!(s.apply(&batch(vec![patch(1, 5, json!({"d": 1}))])).skipped_stale, 1);
    // a patch on a missing or deleted point is skipped
    assert_eq!(s.apply(&batch(vec![patch(9, 50, json!({"d": 1}))])).skipped_missing, 1);
    // an empty patch changes nothing (not even a missing payload)
    assert_eq!(s.apply(&batch(vec![patch(2, 30, json!({}))])).skipped_stale, 1);
    assert_eq!(s.get(&[PointId::Int(2)], false)[0].as_ref().unwrap().payload, None);
    // a point without payload gets one
    s.apply(&batch(vec![patch(2, 30, json!({"n": null}))]));
    let got = s.get(&[PointId::Int(1), PointId::Int(2)], false);
    assert_eq!(
        got[0].as_ref().unwrap().payload.as_ref().unwrap(),
        json!({"a": 1, "b": 3, "c": 2}).as_object().unwrap()
    );
    assert_eq!(got[0].as_ref().unwrap().version, v(10), "patches do not change the point version");
    assert_eq!(got[1].as_ref().unwrap().payload.as_ref().unwrap(), json!({"n": null}).as_object().unwrap());
    // an upsert between the patches replaces the payload but keeps keys patched after it
    s.apply(&batch(vec![up(1, 22, vec![0.0, 1.0], Some(json!({"a": 9, "c": 9})))]));
    let got = s.get(&[PointId::Int(1)], true);
    let r = got[0].as_ref().unwrap();
    assert_eq!(r.payload.as_ref().unwrap(), json!({"a": 9, "b": 3, "c": 9}).as_object().unwrap());
    assert_eq!(r.vector, vec![0.0, 1.0]);
    // a newer upsert replaces everything
    s.apply(&batch(vec![up(1, 60, vec![0.0, 1.0], None)]));
    assert_eq!(s.get(&[PointId::Int(1)], false)[0].as_ref().unwrap().payload, None);
    s.apply(&batch(vec![del(2, 70)]));
    assert_eq!(s.apply(&batch(vec![patch(2, 80, json!({"x": 1}))])).skipped_missing, 1);
}

#[test]
fn get_count_scroll() {
    let s = ShardStore::new(cfg(3, Metric::Cosine, IndexConfig::Flat));
    s.apply(&batch((0..10).map(|i| up(i, 1, vec![3.0, 4.0, i as f32 * 0.0], Some(json!({"i": i})))).collect()));
    s.apply(&batch(vec![del(3, 2), del(4, 2)]));
    assert_eq!(s.count(), 8);
    let got = s.get(&[PointId::Int(0), PointId::Int(3), PointId::Int(42)], true);
    let r = got[0].as_ref().unwrap();
    assert_eq!(r.vector, vec![0.6, 0.8, 0.0], "cosine vectors are stored normalised");
    assert_eq!(r.payload.as_ref().unwrap()["i"], json!(0));
    assert!(got[1].is_none() && got[2].is_none());
    assert!(s.get(&[PointId::Int(0)], false)[0].as_ref().unwrap().vector.is_empty());
    let f = Filter::parse(&json!({"i": {"$gte": 5}})).unwrap();
    assert_eq!(s.count_matching(&f), 5);
    // scroll in id order, pages of 3
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s.scroll(after.as_ref(), 3, None, false);
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        after = Some(page.last().unwrap().id.clone());
        seen.extend(page.into_iter().map(|r| r.id));
    }
    assert_eq!(seen, [0, 1, 2, 5, 6, 7, 8, 9].map(PointId::Int).to_vec());
    let page = s.scroll(None, 100, Some(&f), true);
    assert_eq!(page.len(), 5);
    assert_eq!(page[0].vector.len(), 3);
    assert!(s.scroll(None, 0, None, false).is_empty());
}

#[test]
fn scroll_pages_with_and_without_writes_between() {
    // String ids sort byte-wise: "p10" < "p2". Writes between pages drop the cached id order; pages of a
    // quiet store reuse it. Either way every page continues exactly after the last id returned.
    let s = ShardStore::new(ShardConfig { id_type: IdType::Str, ..cfg(2, Metric::L2, IndexConfig::Flat) });
    let sid = |i: usize| PointId::Str(format!("p{i}"));
    let write = |i: usize, ver: u64| {
        s.apply(&batch(vec![WriteOp::Upsert {
            id: sid(i),
            version: v(ver),
            vector: vec![i as f32, 0.0],
            payload: Some(json!({"odd": i % 2 == 1}).as_object().unwrap().clone()),
        }]))
    };
    for i in 0..50 {
        write(i, 1);
    }
    let odd = Filter::parse(&json!({"odd": true})).unwrap();
    for (filter, writes_between) in [(None, false), (None, true), (Some(&odd), false), (Some(&odd), true)] {
        let (mut seen, mut after, mut page_no) = (Vec::new(), None, 0u64);
        loop {
            let page = s.scroll(after.as_ref(), 4, filter, false);
            if page.is_empty() {
                break;
            }
            if writes_between {
                // Re-upsert a point already returned (same content, newer version).
                page_no += 1;
                let PointId::Str(first) = &page[0].id else { unreachable!() };
                write(first[1..].parse().unwrap(), 100 + page_no);
            }
            after = Some(page.last().unwrap().id.clone());
            seen.extend(page.into_iter().map(|r| r.id));
        }
        let mut want: Vec<PointId> = (0..50).filter(|i| filter.is_none() || i % 2 == 1).map(sid).collect();
        want.sort();
        assert_eq!(seen, want, "filter {:?}, writes between pages {writes_between}", filter.is_some());
    }
}

#[test]
fn string_ids() {
    let s = ShardStore::new(ShardConfig {
        dim: 2,
        metric: Metric::L2,
        id_type: IdType::Str,
        index: IndexConfig::Flat,
        on_disk: false,
    });
    let id = |x: &str| PointId::Str(x.into());
    s.apply(&batch(vec![
        WriteOp::Upsert { id: id("a"), version: v(1), vector: vec![0.0, 0.0], payload: None },
        WriteOp::Upsert { id: id("b"), version: v(1), vector: vec![1.0, 0.0], payload: None },
    ]));
    s.apply_owned(batch(vec![WriteOp::Upsert { id: id("a"), version: v(2), vector: vec![5.0, 0.0], payload: None }]));
    let hits = s.search(&[0.9, 0.0], 1, 5, None, None, false);
    assert_eq!(hits[0].iter().map(|h| h.id.clone()).collect::<Vec<_>>(), vec![id("b"), id("a")]);
    let snap = snapshot_bytes(&s);
    let r = ShardStore::read_snapshot(s.config().clone(), &mut snap.as_slice()).unwrap();
    assert_eq!(r.digest(), s.digest());
    assert!(ShardStore::read_snapshot(cfg(2, Metric::L2, IndexConfig::Flat), &mut snap.as_slice()).is_err());
}

#[test]
fn flat_search_equals_brute_force() {
    for metric in [Metric::L2, Metric::Cosine, Metric::Dot] {
        let dim = 7;
        let mut rng = Rng::new(metric as u64 + 1);
        let data = clustered(&mut rng, 3000, dim, 5);
        let s = ShardStore::new(cfg(dim, metric, IndexConfig::Flat));
        load(&s, &data);
        let queries = clustered(&mut rng, 20, dim, 3);
        for k in [1, 10, 3500] {
            let res = s.search(&queries, 20, k, None, None, true);
            assert_eq!(res.len(), 20);
            for (q, hits) in queries.chunks_exact(dim).zip(&res) {
                let truth = brute(metric, &data, dim, q, k, &|_| true);
                assert_eq!(hits.len(), truth.len().min(k));
                assert_eq!(ids_of(hits), truth.iter().map(|x| x.1).collect::<Vec<_>>(), "{metric} k={k}");
                for (h, t) in hits.iter().zip(&truth) {
                    assert!((h.distance - t.0).abs() <= 1e-4 * (1.0 + t.0.abs()));
                }
                assert_eq!(hits[0].payload.as_ref().unwrap()["i"], json!(ids_of(hits)[0]));
            }
        }
        // a single query takes the chunk-parallel path
        let res = s.search(&queries[..dim], 1, 5, None, None, false);
        let truth = brute(metric, &data, dim, &queries[..dim], 5, &|_| true);
        assert_eq!(ids_of(&res[0]), truth.iter().map(|x| x.1).collect::<Vec<_>>());
        assert!(res[0][0].payload.is_none());
    }
}

#[test]
fn search_edge_cases() {
    let s = ShardStore::new(hnsw_cfg(2, Metric::L2));
    assert_eq!(s.search(&[0.0, 0.0], 1, 5, None, None, false), vec![Vec::<Hit>::new()]);
    s.apply(&batch(vec![up(1, 1, vec![0.0, 0.0], None)]));
    assert_eq!(s.search(&[0.0, 0.0], 1, 0, None, None, false), vec![Vec::<Hit>::new()]);
    // short query buffer: the incomplete query gets nothing
    let r = s.search(&[0.0, 0.0, 1.0], 2, 3, None, None, false);
    assert_eq!((r.len(), r[0].len(), r[1].len()), (2, 1, 0));
    assert_eq!(s.search(&[], 0, 3, None, None, false).len(), 0);
}

#[test]
fn hnsw_recall_and_pending_scan() {
    let dim = 16;
    let mut rng = Rng::new(42);
    let data = clustered(&mut rng, 6000, dim, 30);
    let queries = clustered(&mut rng, 100, dim, 30);
    let s = ShardStore::new(hnsw_cfg(dim, Metric::L2));
    load(&s, &data);
    assert_eq!(s.unindexed(), 6000);
    // searchable before indexing: the pending scan is exact
    assert_eq!(recall(&s, &data, &queries, 10, None), 1.0);
    // half indexed: graph + pending scan, no duplicates
    assert_eq!(s.index_step(3000), 3000);
    assert_eq!(s.unindexed(), 3000);
    let res = s.search(&queries, 100, 10, None, None, false);
    for hits in &res {
        let ids: HashSet<u64> = ids_of(hits).into_iter().collect();
        assert_eq!(ids.len(), 10, "duplicate ids in {hits:?}");
        assert!(hits.windows(2).all(|w| w[0].distance <= w[1].distance));
    }
    assert!(recall(&s, &data, &queries, 10, None) >= 0.95);
    while s.index_step(1000) > 0 {}
    assert_eq!(s.unindexed(), 0);
    let r = recall(&s, &data, &queries, 10, None);
    assert!(r >= 0.95, "recall {r}");
    assert!(recall(&s, &data, &queries, 10, Some(200)) >= r - 0.01);
    // updates move points to new slots; old slots are never returned
    let check_current = |s: &ShardStore| {
        for (q, hits) in queries.chunks_exact(dim).zip(s.search(&queries, 100, 20, None, None, false)) {
            for h in hits {
                let cur = s.get(std::slice::from_ref(&h.id), true).pop().unwrap().unwrap().vector;
                assert_eq!(h.distance, distance::distance(Metric::L2, q, &cur), "stale slot of {:?}", h.id);
            }
        }
    };
    let moved: Vec<WriteOp> = (0..3000)
        .map(|i| {
            let row = &data[(i as usize + 1) * dim..(i as usize + 2) * dim];
            up(i, 20, row.iter().map(|x| x + 0.5).collect(), None)
        })
        .collect();
    s.apply(&batch(moved));
    assert_eq!(s.count(), 6000);
    check_current(&s);
    while s.index_step(1000) > 0 {}
    check_current(&s);
    // delete most points: k is still honoured exactly
    s.apply(&batch((0..5990).map(|i| del(i, 30)).collect()));
    let res = s.search(&queries, 100, 20, None, None, false);
    assert!(res.iter().all(|h| h.len() == 10));
}

#[test]
fn filtered_search_both_paths() {
    let dim = 12;
    let mut rng = Rng::new(5);
    let data = clustered(&mut rng, 8000, dim, 20);
    let queries = clustered(&mut rng, 40, dim, 20);
    for index in
        [IndexConfig::Flat, IndexConfig::Hnsw { m: 12, ef_construction: 100, quantization: Quantization::None }]
    {
        let s = ShardStore::new(cfg(dim, Metric::L2, index));
        load(&s, &data);
        while s.index_step(4000) > 0 {}
        // selective: exact path, must equal brute force with the filter
        let f = Filter::parse(&json!({"bucket": 3, "even": false})).unwrap();
        let res = s.search(&queries, 40, 10, Some(&f), None, true);
        for (q, hits) in queries.chunks_exact(dim).zip(&res) {
            let truth = brute(Metric::L2, &data, dim, q, 10, &|i| i % 10 == 3);
            assert_eq!(ids_of(hits), truth.iter().map(|x| x.1).collect::<Vec<_>>());
        }
        // broad (50%): graph path for HNSW; all hits match, k honoured, high recall
        let f = Filter::parse(&json!({"even": true})).unwrap();
        let res = s.search(&queries, 40, 10, Some(&f), None, true);
        let mut found = 0;
        for (q, hits) in queries.chunks_exact(dim).zip(&res) {
            assert_eq!(hits.len(), 10);
            assert!(hits.iter().all(|h| h.payload.as_ref().unwrap()["even"] == json!(true)));
            let truth: HashSet<u64> =
                brute(Metric::L2, &data, dim, q, 10, &|i| i % 2 == 0).into_iter().map(|x| x.1).collect();
            found += ids_of(hits).iter().filter(|i| truth.contains(i)).count();
        }
        let r = found as f64 / 400.0;
        assert!(r >= 0.95, "{index:?}: filtered recall {r}");
        // fewer matches than k: exactly the matches
        let f = Filter::parse(&json!({"i": {"$in": [5, 17, 4000]}})).unwrap();
        let res = s.search(&queries, 40, 10, Some(&f), None, false);
        assert!(res.iter().all(|h| h.len() == 3));
        let none = Filter::parse(&json!({"i": -1})).unwrap();
        assert!(s.search(&queries, 40, 10, Some(&none), None, false).iter().all(|h| h.is_empty()));
        // one query at a time: the filter is evaluated lazily on visited nodes (HNSW)
        let f = Filter::parse(&json!({"even": true})).unwrap();
        let mut found = 0;
        for q in queries.chunks_exact(dim) {
            let hits = s.search(q, 1, 10, Some(&f), None, true).pop().unwrap();
            assert_eq!(hits.len(), 10);
            assert!(hits.iter().all(|h| h.payload.as_ref().unwrap()["even"] == json!(true)));
            let truth: HashSet<u64> =
                brute(Metric::L2, &data, dim, q, 10, &|i| i % 2 == 0).into_iter().map(|x| x.1).collect();
            found += ids_of(&hits).iter().filter(|i| truth.contains(i)).count();
        }
        let r = found as f64 / 400.0;
        assert!(r >= 0.95, "{index:?}: lazily filtered recall {r}");
        // filter + pending points: newly written points match immediately
        s.apply(&batch(vec![up(9000, 20, queries[..dim].to_vec(), Some(json!({"even": true, "new": 1})))]));
        let f = Filter::parse(&json!({"even": true})).unwrap();
        let res = s.search(&queries[..dim], 1, 1, Some(&f), None, false);
        assert_eq!(ids_of(&res[0]), vec![9000]);
    }
}

#[test]
fn filter_estimate_off_still_honours_k() {
    // The selectivity sample sees slots step/2, step/2 + step, ...: mark exactly those, so the estimate
    // says "everything matches" while only 1/step of the points do, and ask for more hits than match.
    let dim = 6;
    let mut rng = Rng::new(21);
    let n = 40_000;
    let data = clustered(&mut rng, n, dim, 10);
    let step = n / FILTER_SAMPLE;
    let sampled = |i: usize| i >= step / 2 && (i - step / 2).is_multiple_of(step);
    let s = ShardStore::new(cfg(
        dim,
        Metric::L2,
        IndexConfig::Hnsw { m: 8, ef_construction: 32, quantization: Quantization::None },
    ));
    let ops: Vec<WriteOp> = data
        .chunks_exact(dim)
        .enumerate()
        .map(|(i, x)| up(i as u64, 1, x.to_vec(), Some(json!({ "sampled": sampled(i) }))))
        .collect();
    s.apply(&batch(ops));
    while s.index_step(n) > 0 {}
    let f = Filter::parse(&json!({"sampled": true})).unwrap();
    let q = &data[..dim];
    let truth = brute(Metric::L2, &data, dim, q, 5000, &sampled);
    assert!(truth.len() > EXACT_SCAN_MAX / 2 && truth.len() < 1100);
    let truth_ids: Vec<u64> = truth.iter().map(|x| x.1).collect();
    // the graph (misled by the estimate) finds too few; the exact fallback answers
    assert_eq!(s.plan(Some(&f), 1100, None), AccessPath::Graph { ef: 1100 });
    let hits = s.search(q, 1, 1100, Some(&f), None, false).pop().unwrap();
    assert_eq!(ids_of(&hits), truth_ids);
    // a beam as wide as the shard: an exact scan
    assert_eq!(s.plan(Some(&f), 5000, None), AccessPath::Exact);
    let hits = s.search(q, 1, 5000, Some(&f), None, false).pop().unwrap();
    assert_eq!(ids_of(&hits), truth_ids);
    // small k: the lazy path; every hit matches and k is honoured
    assert_eq!(s.plan(Some(&f), 50, None), AccessPath::Graph { ef: DEFAULT_EF });
    let hits = s.search(q, 1, 50, Some(&f), None, false).pop().unwrap();
    assert_eq!(hits.len(), 50);
    assert!(ids_of(&hits).into_iter().all(|i| sampled(i as usize)));
}

#[test]
fn snapshot_round_trip() {
    let dim = 8;
    let mut rng = Rng::new(9);
    let data = clustered(&mut rng, 3000, dim, 10);
    let queries = clustered(&mut rng, 20, dim, 10);
    for config in [cfg(dim, Metric::Cosine, IndexConfig::Flat), hnsw_cfg(dim, Metric::Cosine)] {
        let s = ShardStore::new(config.clone());
        load(&s, &data);
        s.index_step(2000); // partly indexed: the rest stays pending after restore
        s.apply(&batch(vec![
            del(5, 20),
            del(77777, 20),
            up(6, 20, vec![1.0; dim], None),
            patch(7, 30, json!({"p": 1})),
        ]));
        let snap = snapshot_bytes(&s);
        let r = ShardStore::read_snapshot(config.clone(), &mut snap.as_slice()).unwrap();
        assert_eq!(r.digest(), s.digest());
        assert_eq!(r.count(), s.count());
        assert_eq!(r.stats(), s.stats());
        assert_eq!(r.max_version(), s.max_version());
        let again = snapshot_bytes(&r);
        let diff = (0..snap.len().min(again.len())).find(|&i| snap[i] != again[i]);
        assert!(
            diff.is_none() && again.len() == snap.len(),
            "re-snapshot differs at {diff:?}, lengths {} / {}",
            snap.len(),
            again.len()
        );
        let f = Filter::parse(&json!({"even": true})).unwrap();
        assert_eq!(r.search(&queries, 20, 10, None, None, true), s.search(&queries, 20, 10, None, None, true));
        assert_eq!(r.search(&queries, 20, 10, Some(&f), None, true), s.search(&queries, 20, 10, Some(&f), None, true));
        let ids: Vec<PointId> = (0..3000).map(PointId::Int).collect();
        assert_eq!(r.get(&ids, true), s.get(&ids, true));
        // tombstones survive: an old upsert of a deleted id stays deleted
        assert_eq!(
            r.apply(&batch(vec![up(5, 15, vec![1.0; dim], None), up(77777, 15, vec![1.0; dim], None)])).skipped_stale,
            2
        );
        // the restored store keeps working
        while r.index_step(1000) > 0 {}
        assert_eq!(r.unindexed(), 0);
        assert!(recall(&r, &data, &queries, 5, Some(100)) > 0.0);
    }
    // an HNSW collection restoring a flat snapshot re-indexes
    let flat = ShardStore::new(cfg(dim, Metric::L2, IndexConfig::Flat));
    load(&flat, &data[..100 * dim]);
    let snap = snapshot_bytes(&flat);
    let r = ShardStore::read_snapshot(hnsw_cfg(dim, Metric::L2), &mut snap.as_slice()).unwrap();
    assert_eq!(r.unindexed(), 100);
    assert_eq!(r.index_step(1000), 100);
    // the wrong collection is refused
    let e = ShardStore::read_snapshot(cfg(dim + 1, Metric::L2, IndexConfig::Flat), &mut snap.as_slice()).unwrap_err();
    assert!(matches!(e, Error::Corrupt(_)), "{e}");
    assert!(ShardStore::read_snapshot(cfg(dim, Metric::Dot, IndexConfig::Flat), &mut snap.as_slice()).is_err());
    // an empty store round-trips
    let empty = ShardStore::new(hnsw_cfg(dim, Metric::L2));
    let snap = snapshot_bytes(&empty);
    let r = ShardStore::read_snapshot(hnsw_cfg(dim, Metric::L2), &mut snap.as_slice()).unwrap();
    assert_eq!((r.count(), r.digest()), (0, empty.digest()));
}

#[test]
fn corrupted_snapshots_are_rejected() {
    let dim = 3;
    let mut rng = Rng::new(11);
    let data = clustered(&mut rng, 40, dim, 3);
    let config = hnsw_cfg(dim, Metric::L2);
    let s = ShardStore::new(config.clone());
    load(&s, &data);
    s.index_step(30);
    s.apply(&batch(vec![del(3, 20), del(99, 20), patch(4, 30, json!({"p": [1, {"q": "x"}]}))]));
    let snap = snapshot_bytes(&s);
    assert!(ShardStore::read_snapshot(config.clone(), &mut snap.as_slice()).is_ok());
    for i in 0..snap.len() {
        for flip in [0x01u8, 0x80, 0xFF] {
            let mut bad = snap.clone();
            bad[i] ^= flip;
            let r = ShardStore::read_snapshot(config.clone(), &mut bad.as_slice());
            assert!(matches!(r, Err(Error::Corrupt(_))), "flip {flip:#x} at byte {i} accepted");
        }
    }
    for len in 0..snap.len() {
        let r = ShardStore::read_snapshot(config.clone(), &mut &snap[..len]);
        assert!(matches!(r, Err(Error::Corrupt(_))), "truncation to {len} bytes accepted");
    }
    // garbage and a future format version
    assert!(ShardStore::read_snapshot(config.clone(), &mut &b"hello world, not a snapshot"[..]).is_err());
    let mut future = snap.clone();
    future[8] = 9;
    let e = ShardStore::read_snapshot(config, &mut future.as_slice()).unwrap_err();
    assert!(e.to_string().contains("format version 9"), "{e}");
}

#[test]
fn concurrent_apply_index_search_snapshot() {
    let dim = 8;
    let mut rng = Rng::new(3);
    let data = clustered(&mut rng, 4000, dim, 10);
    let s = std::sync::Arc::new(ShardStore::new(hnsw_cfg(dim, Metric::Dot)));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let indexer = {
        let (s, stop) = (s.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                if s.index_step(256) == 0 {
                    std::thread::yield_now();
                }
            }
        })
    };
    let searcher = {
        let (s, stop) = (s.clone(), stop.clone());
        let q = data[..4 * dim].to_vec();
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(Ordering::Acquire) || rounds < 5 {
                for hits in s.search(&q, 4, 10, None, None, false) {
                    let ids: HashSet<_> = hits.iter().map(|h| h.id.clone()).collect();
                    assert_eq!(ids.len(), hits.len());
                }
                let mut b = Vec::new();
                s.write_snapshot(&mut b).unwrap();
                let r = ShardStore::read_snapshot(s.config().clone(), &mut b.as_slice()).unwrap();
                assert!(r.count() <= 4000);
                rounds += 1;
            }
        })
    };
    for (c, chunk) in data.chunks(200 * dim).enumerate() {
        let ops = chunk
            .chunks_exact(dim)
            .enumerate()
            .map(|(i, x)| up((c * 200 + i) as u64, 1 + c as u64, x.to_vec(), None))
            .collect();
        s.apply(&batch(ops));
    }
    stop.store(true, Ordering::Release);
    indexer.join().unwrap();
    searcher.join().unwrap();
    while s.index_step(1000) > 0 {}
    assert_eq!((s.count(), s.unindexed()), (4000, 0));
    let res = s.search(&data[..dim], 1, 4000, None, Some(4000), false);
    assert_eq!(res[0].len(), 4000);
}

/// Loads `n` uniform random vectors of `dim` as ids 0..n with payload {"even": i % 2 == 0}, in chunks.
fn load_random(store: &ShardStore, rng: &mut Rng, n: usize) {
    let dim = store.config().dim;
    for lo in (0..n).step_by(10_000) {
        let ops = (lo..(lo + 10_000).min(n))
            .map(|i| up(i as u64, 1, (0..dim).map(|_| rng.f32()).collect(), Some(json!({"even": i % 2 == 0}))))
            .collect();
        store.apply_owned(batch(ops));
    }
}

/// Runs `search` on this thread while another cancels `token` after `after`; returns the search's
/// result and how long after the cancel it returned.
fn cancel_during<T: Send>(
    token: &CancelToken,
    after: std::time::Duration,
    search: impl FnOnce() -> T + Send,
) -> (T, std::time::Duration) {
    use std::time::Instant;
    let cancelled_at: OnceLock<Instant> = OnceLock::new();
    let (out, done) = std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(after);
            cancelled_at.get_or_init(Instant::now);
            token.cancel();
        });
        let out = search();
        (out, Instant::now())
    });
    let at = *cancelled_at.get().expect("the canceller ran");
    (out, done.saturating_duration_since(at))
}

#[test]
fn cancelled_token_stops_before_any_work() {
    let dim = 8;
    let mut rng = Rng::new(17);
    let data = clustered(&mut rng, 3000, dim, 5);
    let f = Filter::parse(&json!({"even": true})).unwrap();
    for config in [cfg(dim, Metric::Cosine, IndexConfig::Flat), hnsw_cfg(dim, Metric::Cosine)] {
        let s = ShardStore::new(config);
        load(&s, &data);
        s.index_step(3000);
        let t = CancelToken::new();
        t.cancel();
        let expired = CancelToken::with_deadline(std::time::Instant::now());
        for token in [&t, &expired] {
            for filter in [None, Some(&f)] {
                let r = s.search_cancellable(&data[..4 * dim], 4, 5, filter, None, true, token);
                assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
            }
            // even an empty request reports the cancellation
            assert!(matches!(s.search_cancellable(&[], 0, 5, None, None, false, token), Err(Error::Cancelled)));
        }
        let e = s.search_cancellable(&data[..dim], 1, 5, None, None, false, &t).unwrap_err();
        assert!(e.to_string().contains("cancelled") && e.to_string().contains("deadline"), "{e}");
    }
}

#[test]
fn uncancelled_search_cancellable_equals_search() {
    let dim = 12;
    let mut rng = Rng::new(23);
    let data = clustered(&mut rng, 8000, dim, 20);
    let queries = clustered(&mut rng, 64, dim, 20);
    let far = std::time::Instant::now() + std::time::Duration::from_secs(3600);
    let filters = [
        None,
        Some(Filter::parse(&json!({"even": true})).unwrap()),
        Some(Filter::parse(&json!({"bucket": 3})).unwrap()),
        Some(Filter::parse(&json!({"i": {"$in": [5, 17, 4000]}})).unwrap()),
    ];
    for index in
        [IndexConfig::Flat, IndexConfig::Hnsw { m: 12, ef_construction: 100, quantization: Quantization::None }]
    {
        let s = ShardStore::new(cfg(dim, Metric::L2, index));
        load(&s, &data);
        s.index_step(6000); // some points pending: graph + pending scan
        for f in &filters {
            for (nq, ef) in [(1, None), (64, None), (64, Some(300)), (3, Some(20))] {
                let q = &queries[..nq * dim];
                let want = s.search(q, nq, 10, f.as_ref(), ef, true);
                for token in [CancelToken::new(), CancelToken::with_deadline(far), CancelToken::never()] {
                    let got = s.search_cancellable(q, nq, 10, f.as_ref(), ef, true, &token).unwrap();
                    assert_eq!(got, want, "{index:?} {f:?} nq={nq} ef={ef:?}");
                }
            }
        }
    }
}

#[test]
fn plan_reports_the_access_path() {
    let dim = 12;
    let mut rng = Rng::new(29);
    let data = clustered(&mut rng, 8000, dim, 20);
    let flat = ShardStore::new(cfg(dim, Metric::L2, IndexConfig::Flat));
    load(&flat, &data);
    assert_eq!(flat.plan(None, 10, None), AccessPath::Exact);
    let s = ShardStore::new(hnsw_cfg(dim, Metric::L2));
    assert_eq!(s.plan(None, 10, None), AccessPath::Exact); // empty
    load(&s, &data);
    assert_eq!(s.plan(None, 10, None), AccessPath::Exact); // nothing indexed yet
    let unindexed_cost = s.search_cost(None, 10, None);
    assert_eq!(unindexed_cost, exact_cost(&ShardShape { live: 8000, indexed: 0, dim, m: 12 }, 1.0));
    while s.index_step(4000) > 0 {}
    assert_eq!(s.plan(None, 10, None), AccessPath::Graph { ef: DEFAULT_EF });
    // The work estimate follows the chosen path: a graph walk is cheaper than the scan it replaced,
    // and a wider beam costs more.
    let graph_cost = s.search_cost(None, 10, None);
    assert!(graph_cost > 0.0 && graph_cost < unindexed_cost, "{graph_cost} vs {unindexed_cost}");
    assert!(s.search_cost(None, 10, Some(40)) < graph_cost);
    assert_eq!(flat.search_cost(None, 10, None), unindexed_cost);
    assert_eq!(s.plan(None, 10, Some(40)), AccessPath::Graph { ef: 40 });
    assert_eq!(s.plan(None, 60, Some(40)), AccessPath::Graph { ef: 60 });
    let broad = Filter::parse(&json!({"even": true})).unwrap();
    assert_eq!(s.plan(Some(&broad), 10, None), AccessPath::Graph { ef: DEFAULT_EF });
    let selective = Filter::parse(&json!({"bucket": 3})).unwrap();
    assert_eq!(s.plan(Some(&selective), 10, None), AccessPath::Exact);
    // a match-all filter is no filter
    let all = Filter::parse(&json!({})).unwrap();
    assert_eq!(s.plan(Some(&all), 10, None), s.plan(None, 10, None));
    // a small shard is scanned
    let small = ShardStore::new(hnsw_cfg(dim, Metric::L2));
    load(&small, &data[..1000 * dim]);
    small.index_step(1000);
    assert_eq!(small.plan(None, 10, None), AccessPath::Exact);
}

#[test]
fn large_exact_search_stops_soon_after_cancel() {
    let (n, dim, nq) = (200_000, 128, 64);
    let mut rng = Rng::new(31);
    let s = ShardStore::new(cfg(dim, Metric::L2, IndexConfig::Flat));
    load_random(&s, &mut rng, n);
    let queries: Vec<f32> = (0..nq * dim).map(|_| rng.f32()).collect();
    let even = Filter::parse(&json!({"even": true})).unwrap();
    for filter in [None, Some(&even)] {
        assert_eq!(s.plan(filter, 10, None), AccessPath::Exact);
        let token = CancelToken::new();
        let (r, late) = cancel_during(&token, std::time::Duration::from_millis(20), || {
            s.search_cancellable(&queries, nq, 10, filter, None, false, &token)
        });
        assert!(matches!(r, Err(Error::Cancelled)), "{filter:?}: {:?}", r.map(|h| h.len()));
        println!("filtered={}: returned {late:?} after the cancel", filter.is_some());
        // nominally within milliseconds; generous for a loaded machine
        // `Cancelled` (not the full result) is the proof it stopped; how soon is a timing, for bench/, not here.
    }
    // a deadline works the same way
    let token = CancelToken::with_deadline(std::time::Instant::now() + std::time::Duration::from_millis(20));
    let r = s.search_cancellable(&queries, nq, 10, None, None, false, &token);
    assert!(matches!(r, Err(Error::Cancelled)));
}

#[test]
fn int8_store_rescores_to_exact_distances_and_survives_a_snapshot() {
    let (n, dim, nq, k) = (8_000, 32, 40, 10);
    for metric in [Metric::Cosine, Metric::L2] {
        let mut rng = Rng::new(91);
        let config =
            cfg(dim, metric, IndexConfig::Hnsw { m: 12, ef_construction: 64, quantization: Quantization::Int8 });
        let s = ShardStore::new(config.clone());
        load_random(&s, &mut rng, n);
        while s.index_step(n) > 0 {}
        assert!(s.inner.read().arena.quantizer().is_some(), "trained once {TRAIN_ROWS} rows exist");
        let queries: Vec<f32> = (0..nq * dim).map(|_| rng.f32()).collect();
        let never = CancelToken::never();
        let exact = s.search_exact_cancellable(&queries, nq, k, None, false, &never).unwrap();
        let search =
            |rescore: Rescore| s.search_impl(&queries, nq, k, None, Some(64), false, false, rescore, &never).unwrap();
        let rescored = search(Rescore::default());
        let raw = search(Rescore { enabled: false, oversampling: 1.0 });
        let (mut hit, mut hit_raw) = (0, 0);
        for ((e, r), w) in exact.iter().zip(&rescored).zip(&raw) {
            assert_eq!(r.len(), k);
            assert_eq!(w.len(), k);
            let want: HashSet<&PointId> = e.iter().map(|h| &h.id).collect();
            hit += r.iter().filter(|h| want.contains(&h.id)).count();
            hit_raw += w.iter().filter(|h| want.contains(&h.id)).count();
            // Rescored distances are the float distances of the same points.
            for h in r {
                if let Some(x) = e.iter().find(|x| x.id == h.id) {
                    assert!((x.distance - h.distance).abs() < 1e-5, "{metric:?}: {} vs {}", x.distance, h.distance);
                }
            }
        }
        let (recall, recall_raw) = (hit as f64 / (nq * k) as f64, hit_raw as f64 / (nq * k) as f64);
        // The same graph parameters on floats: the bar quantized traversal is held to.
        let plain = ShardStore::new(cfg(
            dim,
            metric,
            IndexConfig::Hnsw { m: 12, ef_construction: 64, quantization: Quantization::None },
        ));
        load_random(&plain, &mut Rng::new(91), n);
        while plain.index_step(n) > 0 {}
        let floats =
            plain.search_impl(&queries, nq, k, None, Some(64), false, false, Rescore::default(), &never).unwrap();
        let hit_float: usize =
            exact.iter().zip(&floats).map(|(e, f)| f.iter().filter(|h| e.iter().any(|x| x.id == h.id)).count()).sum();
        let recall_float = hit_float as f64 / (nq * k) as f64;
        println!("{metric:?}: recall@{k} rescored {recall:.3}, codes only {recall_raw:.3}, floats {recall_float:.3}");
        assert!(recall >= recall_float - 0.02, "{metric:?}: rescored recall {recall} vs floats {recall_float}");
        assert!(recall >= recall_raw, "{metric:?}: rescoring lowered recall");
        // A snapshot carries no codes; the restored store trains the same quantizer from the same rows.
        let mut buf = Vec::new();
        s.write_snapshot(&mut buf).unwrap();
        let back = ShardStore::read_snapshot(config, &mut buf.as_slice()).unwrap();
        assert_eq!(back.inner.read().arena.quantizer(), s.inner.read().arena.quantizer());
        let again =
            back.search_impl(&queries, nq, k, None, Some(64), false, false, Rescore::default(), &never).unwrap();
        let ids = |r: &Vec<Vec<Hit>>| {
            r.iter().map(|l| l.iter().map(|h| h.id.clone()).collect::<Vec<_>>()).collect::<Vec<_>>()
        };
        assert_eq!(ids(&again), ids(&rescored), "{metric:?}: same graph and codes after the snapshot");
    }
}

#[test]
fn on_disk_stores_answer_like_memory_stores_and_restore_onto_disk() {
    let (n, dim, nq, k) = (6_000, 24, 20, 10);
    let tmp = TempDir::new("store-on-disk");
    let dir = tmp.path().to_path_buf();
    for quantization in [Quantization::None, Quantization::Int8] {
        let index = IndexConfig::Hnsw { m: 12, ef_construction: 64, quantization };
        let mem = ShardStore::new(cfg(dim, Metric::Cosine, index));
        let config = ShardConfig { on_disk: true, ..cfg(dim, Metric::Cosine, index) };
        let disk = ShardStore::with_vector_dir(config.clone(), Some(dir.clone()));
        for s in [&mem, &disk] {
            load_random(s, &mut Rng::new(17), n);
            while s.index_step(n) > 0 {}
        }
        let (heap, mapped) = disk.inner.read().arena.chunk_bytes();
        assert!(heap == 0 && mapped >= n * dim * 4, "{quantization:?}: heap {heap}, mapped {mapped}");
        assert_eq!(mem.inner.read().arena.chunk_bytes().1, 0);
        let mut rng = Rng::new(3);
        let queries: Vec<f32> = (0..nq * dim).map(|_| rng.f32()).collect();
        let never = CancelToken::never();
        let run = |s: &ShardStore| {
            s.search_impl(&queries, nq, k, None, Some(48), false, false, Rescore::default(), &never).unwrap()
        };
        // Exact answers are the same; graph answers (each store draws its own levels) are as good.
        let exact = |s: &ShardStore| s.search_exact_cancellable(&queries, nq, k, None, false, &never).unwrap();
        let truth = exact(&mem);
        assert_eq!(exact(&disk), truth, "{quantization:?}: the same vectors");
        assert_eq!(disk.digest(), mem.digest());
        let want = run(&disk);
        let hits: usize =
            truth.iter().zip(&want).map(|(t, r)| r.iter().filter(|h| t.iter().any(|x| x.id == h.id)).count()).sum();
        assert!(hits as f64 >= 0.9 * (nq * k) as f64, "{quantization:?}: recall {hits}/{}", nq * k);
        // A snapshot of the disk store restores onto disk (streamed) and answers the same again.
        let mut buf = Vec::new();
        disk.write_snapshot(&mut buf).unwrap();
        let back = ShardStore::read_snapshot_with(config.clone(), Some(dir.clone()), &mut buf.as_slice()).unwrap();
        assert_eq!(back.inner.read().arena.chunk_bytes().0, 0, "restored rows are mapped");
        assert_eq!(run(&back), want, "{quantization:?}: the same graph and vectors after a restore");
        assert_eq!(back.inner.read().arena.quantizer(), mem.inner.read().arena.quantizer());
    }
    // Scratch files are unlinked at once: the directory stays empty.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}

#[test]
fn small_int8_store_searches_floats_until_trained() {
    let dim = 8;
    let mut rng = Rng::new(5);
    let s = ShardStore::new(cfg(
        dim,
        Metric::L2,
        IndexConfig::Hnsw { m: 8, ef_construction: 32, quantization: Quantization::Int8 },
    ));
    load_random(&s, &mut rng, TRAIN_ROWS - 1);
    while s.index_step(TRAIN_ROWS) > 0 {}
    assert!(s.inner.read().arena.quantizer().is_none());
    let q: Vec<f32> = (0..dim).map(|_| rng.f32()).collect();
    let got = s.search(&q, 1, 5, None, None, false);
    let want = s.search_exact_cancellable(&q, 1, 5, None, false, &CancelToken::never()).unwrap();
    assert_eq!(got[0].len(), 5);
    assert_eq!(got[0][0].id, want[0][0].id);
    load_random(&s, &mut rng, TRAIN_ROWS); // ids 0.. again: updates append new slots
    assert!(s.inner.read().arena.quantizer().is_some());
    assert_eq!(s.inner.read().arena.code_bytes(), s.inner.read().arena.len() * dim);
}

#[test]
fn large_graph_search_stops_soon_after_cancel() {
    let (n, dim, nq) = (20_000, 32, 4_000);
    let mut rng = Rng::new(37);
    let s = ShardStore::new(cfg(
        dim,
        Metric::L2,
        IndexConfig::Hnsw { m: 12, ef_construction: 64, quantization: Quantization::None },
    ));
    load_random(&s, &mut rng, n);
    while s.index_step(n) > 0 {}
    let queries: Vec<f32> = (0..nq * dim).map(|_| rng.f32()).collect();
    let even = Filter::parse(&json!({"even": true})).unwrap();
    // unfiltered with a large beam; filtered (bitset for this batch) with a beam the model still sends to
    // the graph
    for (filter, ef) in [(None, 500), (Some(&even), 200)] {
        assert_eq!(s.plan(filter, 10, Some(ef)), AccessPath::Graph { ef }, "{filter:?}");
        let token = CancelToken::new();
        let (r, late) = cancel_during(&token, std::time::Duration::from_millis(20), || {
            s.search_cancellable(&queries, nq, 10, filter, Some(ef), false, &token)
        });
        assert!(matches!(r, Err(Error::Cancelled)), "{filter:?}: {:?}", r.map(|h| h.len()));
        println!("filtered={}: returned {late:?} after the cancel", filter.is_some());
        // `Cancelled` (not the full result) is the proof it stopped; how soon is a timing, for bench/, not here.
    }
    // lazily filtered single query: cancelled before it starts
    let token = CancelToken::new();
    token.cancel();
    let r = s.search_cancellable(&queries[..dim], 1, 10, Some(&even), Some(200), false, &token);
    assert!(matches!(r, Err(Error::Cancelled)));
}

#[test]
fn payload_indexes_answer_exactly_what_the_filter_evaluation_answers() {
    // Random payloads, updates, patches and deletes; every filter gives the same counts, scroll pages
    // and search results with the indexes as without, before and after a partial build.
    let dim = 8;
    let langs = ["en", "fr", "de", "es"];
    let mut rng = Rng::new(11);
    let plain = ShardStore::new(hnsw_cfg(dim, Metric::L2));
    let indexed = ShardStore::new(hnsw_cfg(dim, Metric::L2));
    let wanted = vec![
        ("lang".to_string(), IndexKind::Keyword),
        ("year".to_string(), IndexKind::Integer),
        ("score".to_string(), IndexKind::Float),
        ("ok".to_string(), IndexKind::Bool),
        ("meta.tag".to_string(), IndexKind::Keyword),
    ];
    let mut ver = 1;
    let step = |ops: Vec<WriteOp>| {
        plain.apply(&batch(ops.clone()));
        indexed.apply(&batch(ops));
    };
    for round in 0..4 {
        let mut ops = Vec::new();
        for _ in 0..600 {
            let id = rng.next_u64() % 1500;
            ver += 1;
            let vector: Vec<f32> = (0..dim).map(|_| gauss(&mut rng)).collect();
            let lang = langs[(rng.next_u64() % 4) as usize];
            let payload = match rng.next_u64() % 6 {
                0 => None,
                1 => Some(json!({"lang": [lang, "xx"], "year": 2000 + (rng.next_u64() % 25) as i64})),
                2 => Some(json!({"lang": 7, "year": 2010.5, "ok": "yes"})),
                _ => Some(json!({
                    "lang": lang,
                    "year": 2000 + (rng.next_u64() % 25) as i64,
                    "score": rng.f32() as f64,
                    "ok": rng.next_u64().is_multiple_of(2),
                    "meta": {"tag": format!("t{}", rng.next_u64() % 30)},
                })),
            };
            ops.push(match rng.next_u64() % 10 {
                0 => del(id, ver),
                1 => patch(id, ver, json!({"lang": "fr", "year": 1999})),
                _ => up(id, ver, vector, payload),
            });
        }
        step(ops);
        if round == 0 {
            // an index created on a store with points starts unbuilt
            assert!(indexed.set_payload_indexes(&wanted));
            assert!(indexed.payload_indexes().iter().all(|i| !i.ready && i.built == 0));
        }
        if round == 1 {
            // half built: the indexes answer nothing yet (the filters are evaluated) and results agree
            indexed.build_payload_indexes(300);
            assert!(indexed.payload_indexes().iter().all(|i| !i.ready));
        }
        if round >= 2 {
            while !indexed.build_payload_indexes(500) {}
            assert!(indexed.payload_indexes().iter().all(|i| i.ready && i.built == i.slots));
        }
        plain.index_step(usize::MAX);
        indexed.index_step(usize::MAX);
        let filters = [
            json!({"lang": "en"}),
            json!({"lang": {"$in": ["fr", "de"]}}),
            json!({"lang": {"$ne": "en"}}),
            json!({"lang": {"$nin": ["en", "xx"]}}),
            json!({"lang": {"$gte": "en", "$lt": "f"}}),
            json!({"year": {"$gte": 2010, "$lt": 2015}}),
            json!({"year": 2010.5}),
            json!({"year": {"$gt": 2010}, "lang": "en"}),
            json!({"score": {"$lt": 0.1}}),
            json!({"ok": true}),
            json!({"ok": {"$ne": false}}),
            json!({"meta.tag": "t3"}),
            json!({"$or": [{"lang": "de"}, {"year": 2001}]}),
            json!({"$or": [{"lang": "de"}, {"unindexed": 1}]}),
            json!({"$not": {"lang": "en"}}),
            json!({"lang": "en", "ok": {"$exists": true}}),
            json!({"lang": 7}),
            json!({"year": {"$gt": "a"}}),
        ];
        let queries: Vec<f32> = (0..3 * dim).map(|_| gauss(&mut rng)).collect();
        for fj in &filters {
            let f = Filter::parse(fj).unwrap();
            assert_eq!(indexed.count_matching(&f), plain.count_matching(&f), "count of {fj}");
            let ids = |st: &ShardStore| -> Vec<PointId> {
                st.scroll(None, 100_000, Some(&f), false).into_iter().map(|r| r.id).collect()
            };
            assert_eq!(ids(&indexed), ids(&plain), "scroll of {fj}");
            let exact = |st: &ShardStore| -> Vec<Vec<PointId>> {
                st.search_exact_cancellable(&queries, 3, 10, Some(&f), false, &CancelToken::never())
                    .unwrap()
                    .into_iter()
                    .map(|h| h.into_iter().map(|h| h.id).collect())
                    .collect()
            };
            assert_eq!(exact(&indexed), exact(&plain), "exact search with {fj}");
            let approx = indexed.search(&queries, 3, 10, Some(&f), Some(200), false);
            let want = exact(&plain);
            for (got, want) in approx.iter().zip(&want) {
                assert_eq!(got.len(), want.len(), "filtered search returns every match up to k: {fj}");
                let hit = got.iter().filter(|h| want.contains(&h.id)).count();
                assert!(hit * 10 >= want.len() * 9, "recall {hit}/{} with {fj}", want.len());
            }
        }
    }
}
