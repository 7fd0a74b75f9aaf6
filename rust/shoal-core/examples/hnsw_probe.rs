//! Per-query cost of one shard's graph search, single-threaded, by shard size and `ef` (a probe for the
//! query-path benchmark: how much of a search is fixed cost and how much grows with the beam).
//!
//! `cargo run --release -p shoal-core --example hnsw_probe [points...]` (default 33334 100000). With
//! `SHOAL_PROBE_DATA=X.f32` and `SHOAL_PROBE_QUERIES=Q.f32` (raw little-endian f32, 128-d rows) it uses
//! those instead of its own clustered data; `SHOAL_PROBE_SHARDS=S` splits the points over S shards by
//! id mod S and searches every shard per query, as a node holding them would.

use std::time::Instant;

use shoal_core::hlc::Version;
use shoal_core::store::{ShardStore, WriteBatch, WriteOp};
use shoal_core::{IdType, IndexConfig, Metric, PointId, ShardConfig};
use shoal_testkit::Rng;

fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![33_334, 100_000] } else { sizes };
    let dim = 128;
    let mut rng = Rng::new(42);
    // 100 clusters, like the shared harness's synthetic set.
    let centres: Vec<Vec<f32>> = (0..100).map(|_| (0..dim).map(|_| rng.signed()).collect()).collect();
    let point = |rng: &mut Rng| -> Vec<f32> {
        let c = &centres[(rng.f32() * 100.0) as usize % 100];
        c.iter().map(|x| x + (rng.f32() - 0.5) * 0.6).collect()
    };
    let read = |var: &str| -> Option<Vec<f32>> {
        let bytes = std::fs::read(std::env::var(var).ok()?).expect("read the probe data");
        Some(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    };
    let data = read("SHOAL_PROBE_DATA");
    let queries: Vec<f32> =
        read("SHOAL_PROBE_QUERIES").unwrap_or_else(|| (0..1000).flat_map(|_| point(&mut rng)).collect());
    let shards: usize = std::env::var("SHOAL_PROBE_SHARDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    for n in sizes {
        let cfg = ShardConfig {
            dim,
            metric: Metric::Cosine,
            id_type: IdType::Int,
            index: IndexConfig::Hnsw { m: 16, ef_construction: 200, quantization: Default::default() },
            on_disk: false,
        };
        let stores: Vec<ShardStore> = (0..shards).map(|_| ShardStore::new(cfg.clone())).collect();
        for (sh, s) in stores.iter().enumerate() {
            let ops = (0..n)
                .filter(|i| i % shards == sh)
                .map(|i| WriteOp::Upsert {
                    id: PointId::Int(i as u64),
                    version: Version::new(1, 1),
                    vector: match &data {
                        Some(d) => d[i * dim..(i + 1) * dim].to_vec(),
                        None => point(&mut rng),
                    },
                    payload: None,
                })
                .collect();
            s.apply(&WriteBatch::new(ops));
        }
        let t = Instant::now();
        for s in &stores {
            while s.index_step(10_000) > 0 {}
        }
        println!("{n} points in {shards} shard(s): indexed in {:.1} s", t.elapsed().as_secs_f64());
        for ef in [10, 16, 18, 24, 36, 40, 64] {
            let t = Instant::now();
            for q in queries.chunks_exact(dim) {
                for s in &stores {
                    std::hint::black_box(s.search(q, 1, 10, None, Some(ef), false));
                }
            }
            let us = t.elapsed().as_secs_f64() * 1e6 / (queries.len() / dim) as f64;
            println!("  ef {ef:>3}: {us:6.1} us/query over {shards} shard(s) (one thread, one query per call)");
        }
    }
}
