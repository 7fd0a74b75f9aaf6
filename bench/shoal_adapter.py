"""Shoal adapter for ../shared/bench/peers.py: the full stack (Python -> gRPC -> node process).

    .venv/bin/python ../shared/bench/peers.py --extra-adapters bench/shoal_adapter.py \
        --systems shoal,shoal-int8,hnswlib --out bench/peers-100k.json

"build" = ingest through Collection.upsert in batches of 10k plus wait_indexed (until every point is in
the HNSW graph). Searches go through Collection.search, exactly what a user calls.
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared" / "bench"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "shared" / "bench"))
from peers import Adapter  # noqa: E402

import shoal  # noqa: E402


class ShoalAdapter(Adapter):
    name = "shoal"
    tunable_ef = True

    def version(self):
        return shoal.__version__

    def config(self):
        return "1 local node, 1 shard, HNSW M=16 efC=200, via gRPC"

    def prepare(self):
        self.cluster = shoal.Cluster.local(nodes=1, data_dir=str(self.workdir / "shoal-data"))
        self.ef = None

    def disk_path(self):
        return self.workdir / "shoal-data"

    quantization = "none"

    def build(self, X):
        index = shoal.HNSW(m=16, ef_construction=200, quantization=self.quantization)
        self.col = self.cluster.create_collection("bench", dim=self.dim, metric=self.metric, shards=1, index=index)
        ids = np.arange(X.shape[0], dtype=np.int64)
        self.col.upsert(ids, X, batch_size=10_000)
        self.col.wait_indexed(timeout=3600)

    def set_ef(self, ef):
        self.ef = int(ef)

    def search_one(self, q, k):
        return self.col.search(q, k=k, ef=self.ef).ids[0]

    def search_batch(self, Q, k):
        return self.col.search(Q, k=k, ef=self.ef, timeout=600).ids

    def close(self):
        self.cluster.close()


class ShoalInt8Adapter(ShoalAdapter):
    """The same with HNSW(quantization="int8"): traversal on byte codes, the beam rescored with floats."""

    name = "shoal-int8"
    quantization = "int8"

    def config(self):
        return "1 local node, 1 shard, HNSW M=16 efC=200 int8, beam rescored with floats, via gRPC"


ADAPTERS = {ShoalAdapter.name: ShoalAdapter, ShoalInt8Adapter.name: ShoalInt8Adapter}
