"""Resident memory per vector of one local node: RSS growth of the node process across create + ingest +
wait_indexed, divided by the number of vectors, against the raw float32 size.

    .venv/bin/python bench/memory.py [--n 100000] [--dim 128] [--quantization int8] [--on-disk]

The node is a separate process (python -m shoal.node), so its baseline (interpreter, numpy, the extension)
is measured after the cluster starts and subtracted. RSS is split as /proc/<pid>/status does: anonymous
(heap: what the node must keep) and file-backed (pages of mapped files, i.e. `--on-disk` vectors, which the
kernel may evict and read again).
"""

import argparse
import tempfile
import time

import numpy as np
import psutil

import shoal


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--quantization", default=None)
    ap.add_argument("--on-disk", action="store_true")
    a = ap.parse_args()
    X = np.random.default_rng(1).standard_normal((a.n, a.dim)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        cluster = shoal.Cluster.local(nodes=1, data_dir=tmp)
        try:
            procs = psutil.Process().children(recursive=True)

            def rss():
                """(anonymous, file-backed) resident bytes of the node processes."""
                anon = file = 0
                for p in procs:
                    for line in open(f"/proc/{p.pid}/status"):
                        if line.startswith("RssAnon:"):
                            anon += int(line.split()[1]) * 1024
                        elif line.startswith("RssFile:"):
                            file += int(line.split()[1]) * 1024
                return anon, file

            kw = {}
            if a.quantization:
                kw["quantization"] = a.quantization
            r0 = rss()
            col = cluster.create_collection(
                "mem",
                dim=a.dim,
                metric="cosine",
                shards=1,
                index=shoal.HNSW(m=16, ef_construction=200, **kw),
                on_disk=a.on_disk,
            )
            col.upsert(np.arange(a.n, dtype=np.int64), X, batch_size=10_000)
            col.wait_indexed(timeout=3600)
            time.sleep(1)
            r1 = rss()
            # recall after rescoring at ef 64 against exact results, on 200 of the stored vectors as queries
            q = X[:: max(1, a.n // 200)][:200] + 0.01
            exact = col.search(q, 10, exact=True).ids
            got = col.search(q, 10, ef=64).ids
            recall = float(np.mean([len(set(g) & set(e)) / 10 for g, e in zip(got.tolist(), exact.tolist())]))
        finally:
            cluster.close()
    raw = a.n * a.dim * 4
    anon, file = r1[0] - r0[0], r1[1] - r0[1]
    print(
        f"n={a.n} dim={a.dim} quantization={a.quantization} on_disk={a.on_disk}: node RSS growth "
        f"anon {anon / 2**20:.1f} MiB ({anon / raw:.2f}x raw, {anon / a.n:.0f} B/vector), "
        f"file-backed {file / 2**20:.1f} MiB ({file / raw:.2f}x raw), total {(anon + file) / raw:.2f}x raw "
        f"of {raw / 2**20:.1f} MiB float32; recall@10 ef64 {recall:.3f}"
    )


if __name__ == "__main__":
    main()
