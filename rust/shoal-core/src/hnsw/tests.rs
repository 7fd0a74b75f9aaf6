//! Tests of the HNSW graph: recall against brute force, concurrency, filters, cancellation, persistence.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use rayon::prelude::*;
use shoal_testkit::{Rng, random_vectors};

use super::persist::{FORMAT_VERSION, MAGIC};
use super::segment::{locate, segment_capacity};
use super::*;
use crate::arena::VectorArena;
use crate::cancel::CancelToken;
use crate::cand::Cand;
use crate::distance::{distance, prepare};
use crate::{Error, Metric};

/// `n` vectors uniform in [-1, 1)^dim, prepared for `metric`.
fn uniform_vectors(rng: &mut Rng, n: usize, dim: usize, metric: Metric) -> Vec<Vec<f32>> {
    random_vectors(rng, n, dim)
        .chunks_exact(dim)
        .map(|row| {
            let mut v = row.to_vec();
            prepare(metric, &mut v);
            v
        })
        .collect()
}

/// Gaussian blobs around `clusters` random centres.
fn clustered_vectors(rng: &mut Rng, n: usize, dim: usize, clusters: usize, metric: Metric) -> Vec<Vec<f32>> {
    let centres: Vec<Vec<f32>> = (0..clusters).map(|_| (0..dim).map(|_| rng.gauss()).collect()).collect();
    (0..n)
        .map(|_| {
            let c = &centres[(rng.next_u64() % clusters as u64) as usize];
            let mut v: Vec<f32> = c.iter().map(|&x| x + 0.5 * rng.gauss()).collect();
            prepare(metric, &mut v);
            v
        })
        .collect()
}

fn arena_of(vs: &[Vec<f32>]) -> VectorArena {
    let mut a = VectorArena::new(vs[0].len());
    for v in vs {
        a.push(v);
    }
    a
}

fn brute_force(metric: Metric, arena: &VectorArena, q: &[f32], k: usize, accept: &dyn Fn(u32) -> bool) -> Vec<u32> {
    let mut all: Vec<Cand> = (0..arena.len() as u32)
        .filter(|&s| accept(s))
        .map(|s| Cand { d: distance(metric, q, arena.get(s)), id: s })
        .collect();
    all.sort_unstable();
    all.truncate(k);
    all.into_iter().map(|c| c.id).collect()
}

fn recall(
    g: &Hnsw,
    arena: &VectorArena,
    queries: &[Vec<f32>],
    k: usize,
    ef: usize,
    accept: &(dyn Fn(u32) -> bool + Sync),
) -> f64 {
    let hits: usize = queries
        .par_iter()
        .map(|q| {
            let got = g.search(q, k, ef, arena, accept);
            assert!(got.len() <= k);
            assert!(got.windows(2).all(|w| w[0].0 <= w[1].0), "results not ascending");
            assert!(got.iter().all(|&(_, s)| accept(s)), "non-accepted slot returned");
            let want = brute_force(g.metric(), arena, q, k, accept);
            got.iter().filter(|(_, s)| want.contains(s)).count()
        })
        .sum();
    hits as f64 / (queries.len() * k) as f64
}

const TEST_PARAMS: HnswParams = HnswParams { m: 16, ef_construction: 100 };
const ALL: &dyn Fn(u32) -> bool = &|_| true;
fn all() -> &'static (dyn Fn(u32) -> bool + Sync) {
    &|_| true
}

fn build_sequential(arena: &VectorArena, metric: Metric) -> Hnsw {
    let g = Hnsw::new(TEST_PARAMS, metric);
    for s in 0..arena.len() as u32 {
        g.insert(s, arena);
    }
    g
}

#[test]
fn recall_per_metric_sequential() {
    for (i, metric) in [Metric::Cosine, Metric::L2, Metric::Dot].into_iter().enumerate() {
        let mut rng = Rng::new(1000 + i as u64);
        let data = uniform_vectors(&mut rng, 5000, 32, metric);
        let queries = uniform_vectors(&mut rng, 200, 32, metric);
        let arena = arena_of(&data);
        let g = build_sequential(&arena, metric);
        assert_eq!(g.len(), 5000);
        assert!(!g.is_empty());
        let r = recall(&g, &arena, &queries, 10, 64, all());
        println!("{metric}: recall@10 {r}");
        assert!(r >= 0.95, "{metric}: recall@10 {r}");
    }
    let _ = ALL;
}

#[test]
fn concurrent_insert_and_search() {
    let metric = Metric::Cosine;
    let mut rng = Rng::new(77);
    let data = uniform_vectors(&mut rng, 5000, 32, metric);
    let queries = uniform_vectors(&mut rng, 200, 32, metric);
    let arena = arena_of(&data);
    let g = Hnsw::new(TEST_PARAMS, metric);
    let done = AtomicBool::new(false);
    let searches = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        // Searches racing the inserts (on their own thread, not a rayon worker): results stay sorted,
        // accepted and inside the arena.
        scope.spawn(|| {
            let (mut i, mut nonempty) = (0, 0);
            while !done.load(AtOrd::Acquire) {
                let got = g.search(&queries[i % queries.len()], 10, 32, &arena, &|s| s % 3 != 0);
                nonempty += usize::from(!got.is_empty());
                assert!(got.windows(2).all(|w| w[0].0 <= w[1].0));
                assert!(got.iter().all(|&(_, s)| s % 3 != 0 && (s as usize) < arena.len()));
                i += 1;
            }
            searches.store(nonempty, AtOrd::Release);
        });
        // Shuffled order, all rayon threads.
        let mut order: Vec<u32> = (0..5000).collect();
        let mut r = Rng::new(5);
        for i in (1..order.len()).rev() {
            order.swap(i, (r.next_u64() % (i as u64 + 1)) as usize);
        }
        order.par_iter().for_each(|&s| g.insert(s, &arena));
        // The same slot raced from many threads is inserted once.
        (0..64).into_par_iter().for_each(|_| g.insert(order[0], &arena));
        done.store(true, AtOrd::Release);
    });
    assert_eq!(g.len(), 5000);
    assert!((0..5000).all(|s| g.contains(s)));
    let r = recall(&g, &arena, &queries, 10, 64, all());
    println!("concurrent build: recall@10 {r}, {} non-empty racing searches", searches.load(AtOrd::Acquire));
    assert!(r >= 0.95, "concurrent build recall@10 {r}");
}

#[test]
fn accept_predicate_filters_results() {
    let metric = Metric::L2;
    let mut rng = Rng::new(31);
    let data = uniform_vectors(&mut rng, 5000, 32, metric);
    let queries = uniform_vectors(&mut rng, 200, 32, metric);
    let arena = arena_of(&data);
    let g = Hnsw::new(TEST_PARAMS, metric);
    (0..5000u32).into_par_iter().for_each(|s| g.insert(s, &arena));
    let even: &(dyn Fn(u32) -> bool + Sync) = &|s| s % 2 == 0;
    let r = recall(&g, &arena, &queries, 10, 64, even);
    println!("filtered: recall@10 {r}");
    assert!(r >= 0.9, "filtered recall@10 {r}");
    let none: &(dyn Fn(u32) -> bool + Sync) = &|_| false;
    assert!(g.search(&queries[0], 10, 64, &arena, none).is_empty());
}

#[test]
fn search_cancellable_stops_or_matches_search() {
    let metric = Metric::L2;
    let mut rng = Rng::new(41);
    let data = uniform_vectors(&mut rng, 3000, 16, metric);
    let arena = arena_of(&data);
    let g = build_sequential(&arena, metric);
    let live = CancelToken::new();
    for q in &data[..50] {
        let want = g.search(q, 10, 200, &arena, all());
        assert_eq!(g.search_cancellable(q, 10, 200, &arena, all(), &live).unwrap(), want);
        assert_eq!(g.search_cancellable(q, 10, 200, &arena, all(), &CancelToken::never()).unwrap(), want);
    }
    live.cancel();
    let r = g.search_cancellable(&data[0], 10, 3000, &arena, all(), &live);
    assert!(matches!(r, Err(Error::Cancelled)));
    // the thread's scratch is left clean for the next search
    assert_eq!(g.search(&data[0], 1, 10, &arena, all()), vec![(0.0, 0)]);
}

#[test]
fn empty_graph_and_degenerate_queries() {
    let arena = arena_of(&[vec![1.0, 0.0]]);
    let g = Hnsw::new(HnswParams::default(), Metric::L2);
    assert!(g.is_empty());
    assert_eq!(g.len(), 0);
    assert!(!g.contains(0));
    assert!(g.search(&[1.0, 0.0], 10, 10, &arena, all()).is_empty());
    g.insert(0, &arena);
    assert_eq!(g.search(&[1.0, 0.0], 10, 10, &arena, all()), vec![(0.0, 0)]);
    assert!(g.search(&[1.0, 0.0], 0, 10, &arena, all()).is_empty());
    assert!(g.search(&[1.0], 1, 10, &arena, all()).is_empty(), "wrong dimension");
    // Parameters are clamped.
    let p = Hnsw::new(HnswParams { m: 0, ef_construction: 0 }, Metric::L2).params();
    assert_eq!(p, HnswParams { m: 2, ef_construction: 1 });
}

#[test]
fn k_larger_than_len_returns_all_accepted() {
    let metric = Metric::Dot;
    let mut rng = Rng::new(3);
    let data = uniform_vectors(&mut rng, 60, 8, metric);
    let arena = arena_of(&data);
    let g = build_sequential(&arena, metric);
    let q = &data[7];
    let got = g.search(q, 100, 10, &arena, all());
    assert_eq!(got.len(), 60);
    let want = brute_force(metric, &arena, q, 100, ALL);
    assert_eq!(got.iter().map(|x| x.1).collect::<Vec<_>>(), want);
    let odd = g.search(q, 100, 10, &arena, &|s| s % 2 == 1);
    assert_eq!(odd.len(), 30);
    assert!(odd.iter().all(|&(_, s)| s % 2 == 1));
}

#[test]
fn sparse_out_of_order_slots_and_double_insert() {
    let metric = Metric::Cosine;
    let mut rng = Rng::new(11);
    let data = uniform_vectors(&mut rng, 3000, 16, metric);
    let arena = arena_of(&data);
    let g = Hnsw::new(TEST_PARAMS, metric);
    // Only multiples of 3, descending, crossing several segments.
    for s in (0..3000u32).rev().filter(|s| s % 3 == 0) {
        g.insert(s, &arena);
    }
    g.insert(0, &arena);
    g.insert(2997, &arena);
    assert_eq!(g.len(), 1000);
    assert!(g.contains(2997) && !g.contains(2998) && !g.contains(1_000_000));
    let got = g.search(&data[1], 50, 64, &arena, all());
    assert_eq!(got.len(), 50);
    assert!(got.iter().all(|&(_, s)| s % 3 == 0));
    let want = brute_force(metric, &arena, &data[1], 10, &|s| s % 3 == 0);
    let hits = got[..10].iter().filter(|(_, s)| want.contains(s)).count();
    assert!(hits >= 8, "sparse recall {hits}/10");
}

#[test]
fn segment_layout() {
    assert_eq!(locate(0), (0, 0));
    assert_eq!(locate(1023), (0, 1023));
    assert_eq!(locate(1024), (1, 0));
    assert_eq!(locate(3071), (1, 2047));
    assert_eq!(locate(3072), (2, 0));
    let (seg, off) = locate(u32::MAX);
    assert!(seg < SEGMENTS && off < segment_capacity(seg));
    // Levels are deterministic and geometric-ish.
    let g = Hnsw::new(HnswParams::default(), Metric::L2);
    let levels: Vec<usize> = (0..100_000).map(|s| g.random_level(s)).collect();
    assert_eq!(levels, (0..100_000).map(|s| g.random_level(s)).collect::<Vec<_>>());
    let upper = levels.iter().filter(|&&l| l >= 1).count();
    assert!((5000..7500).contains(&upper), "{upper} nodes above layer 0 (expect ~1/16)");
}

fn serialize(g: &Hnsw) -> Vec<u8> {
    let mut buf = Vec::new();
    g.write_to(&mut buf).unwrap();
    buf
}

#[test]
fn write_read_round_trip() {
    let metric = Metric::Cosine;
    let mut rng = Rng::new(8);
    let data = uniform_vectors(&mut rng, 2000, 24, metric);
    let queries = uniform_vectors(&mut rng, 50, 24, metric);
    let arena = arena_of(&data);
    let g = Hnsw::new(HnswParams { m: 8, ef_construction: 64 }, metric);
    (0..2000u32).into_par_iter().filter(|s| s % 5 != 1).for_each(|s| g.insert(s, &arena));
    let bytes = serialize(&g);
    let h = Hnsw::read_from(&mut bytes.as_slice(), metric).unwrap();
    assert_eq!(h.len(), g.len());
    assert_eq!(h.params(), g.params());
    assert!(!h.contains(1) && h.contains(2));
    for q in &queries {
        assert_eq!(g.search(q, 10, 40, &arena, all()), h.search(q, 10, 40, &arena, all()));
    }
    assert_eq!(serialize(&h), bytes, "re-serialisation is byte-identical");
    // Reading consumes exactly the written bytes.
    let mut with_tail = bytes.clone();
    with_tail.extend_from_slice(b"tail");
    let mut r = with_tail.as_slice();
    Hnsw::read_from(&mut r, metric).unwrap();
    assert_eq!(r, b"tail");
    // The loaded graph keeps accepting inserts.
    h.insert(1, &arena);
    assert!(h.contains(1));
    // Empty graph round trip.
    let e = Hnsw::new(HnswParams::default(), Metric::L2);
    let e2 = Hnsw::read_from(&mut serialize(&e).as_slice(), Metric::L2).unwrap();
    assert!(e2.is_empty());
    assert!(e2.search(&data[0], 5, 5, &arena, all()).is_empty());
}

#[test]
fn corrupt_input_is_rejected_without_panic() {
    let metric = Metric::L2;
    let mut rng = Rng::new(9);
    let data = uniform_vectors(&mut rng, 300, 8, metric);
    let arena = arena_of(&data);
    let g = Hnsw::new(HnswParams { m: 4, ef_construction: 16 }, metric);
    for s in 0..300u32 {
        g.insert(s, &arena);
    }
    let bytes = serialize(&g);
    for len in 0..bytes.len() {
        let err = Hnsw::read_from(&mut &bytes[..len], metric).unwrap_err();
        assert!(matches!(err, Error::Corrupt(_)), "truncated at {len}: {err}");
    }
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 1 << (i % 8);
        assert!(Hnsw::read_from(&mut b.as_slice(), metric).is_err(), "bit flip at byte {i} accepted");
    }
    for seed in 1..200u64 {
        let mut r = Rng::new(seed);
        let len = (r.next_u64() % 4096) as usize;
        let mut junk: Vec<u8> = (0..len).map(|_| r.next_u64() as u8).collect();
        if seed % 2 == 0 && junk.len() >= 12 {
            junk[..8].copy_from_slice(&MAGIC);
            junk[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        }
        assert!(Hnsw::read_from(&mut junk.as_slice(), metric).is_err());
    }
    assert!(matches!(Hnsw::read_from(&mut bytes.as_slice(), Metric::Cosine), Err(Error::Corrupt(_))));
    let mut wrong_version = bytes.clone();
    wrong_version[8] = 99;
    let err = Hnsw::read_from(&mut wrong_version.as_slice(), metric).unwrap_err();
    assert!(err.to_string().contains("version 99"), "{err}");
}

/// User + system CPU seconds of this process (Linux; NaN elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    let Some(rest) = stat.rsplit(')').next() else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(f64::NAN);
    (ticks(11) + ticks(12)) / 100.0 // utime, stime (fields 14, 15) in USER_HZ = 100
}

/// Hand-run timing (never an assertion): `SHOAL_HNSW_BENCH=1 cargo test --release -p shoal-core --lib
/// hnsw::tests::bench -- --nocapture`. `SHOAL_HNSW_BENCH_N` overrides the 100k points.
#[test]
fn bench() {
    if std::env::var("SHOAL_HNSW_BENCH").is_err() {
        return;
    }
    let n: usize = std::env::var("SHOAL_HNSW_BENCH_N").ok().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let dim = 128;
    let metric = Metric::Cosine;
    println!("kernel={} threads={}", crate::distance::kernel_name(), rayon::current_num_threads());
    let kinds = std::env::var("SHOAL_HNSW_BENCH_KIND").unwrap_or_else(|_| "clustered,uniform".into());
    for kind in kinds.split(',') {
        let mut rng = Rng::new(2024);
        let (data, queries) = if kind == "clustered" {
            let all = clustered_vectors(&mut rng, n + 10_000, dim, 1000, metric);
            let (d, q) = all.split_at(n);
            (d.to_vec(), q.to_vec())
        } else {
            (uniform_vectors(&mut rng, n, dim, metric), uniform_vectors(&mut rng, 10_000, dim, metric))
        };
        let arena = arena_of(&data);
        let g = Hnsw::new(HnswParams { m: 16, ef_construction: 200 }, metric);
        let (t, c) = (Instant::now(), cpu_seconds());
        (0..n as u32).into_par_iter().for_each(|s| g.insert(s, &arena));
        let (secs, cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
        println!(
            "[{kind}] build {n} x {dim}: {secs:.2}s wall = {:.0} vectors/s; {cpu:.2} cpu-s = {:.0} vectors/cpu-s",
            n as f64 / secs,
            n as f64 / cpu
        );
        let truth: Vec<Vec<u32>> = queries[..500].par_iter().map(|q| brute_force(metric, &arena, q, 10, ALL)).collect();
        for ef in [10, 16, 32, 48, 64, 100, 128, 200] {
            let (t, c) = (Instant::now(), cpu_seconds());
            let res: Vec<Vec<(f32, u32)>> = queries.par_iter().map(|q| g.search(q, 10, ef, &arena, all())).collect();
            let qps = queries.len() as f64 / t.elapsed().as_secs_f64();
            let per_cpu = queries.len() as f64 / (cpu_seconds() - c);
            let hits: usize =
                res[..500].iter().zip(&truth).map(|(r, t)| r.iter().filter(|(_, s)| t.contains(s)).count()).sum();
            println!(
                "[{kind}] ef={ef:4} recall@10={:.4} qps={qps:.0} (wall) {per_cpu:.0} (per cpu-s)",
                hits as f64 / 5000.0
            );
        }
    }
}
