"""Where a single query's time goes (issue 14 item 5): one local node, 100k x 128-d clustered, ef 40, k 10.
Prints the end-to-end p50 of Collection.search, the node's own mean handler time for the same calls (from its
/metrics histogram), the Python argument check alone, the native call alone (the same query repeated), a
k=1 ef=1 search (the RPC floor) and count() for comparison.

    .venv/bin/python bench/latency_floor.py secure|insecure
"""
import sys, time, tempfile, urllib.request, re, numpy as np, shoal
secure = sys.argv[1] == "secure"
n, d = 100_000, 128
rng = np.random.default_rng(42)
C = rng.standard_normal((100, d)).astype(np.float32) * 3
X = (C[rng.integers(0, 100, n)] + rng.standard_normal((n, d))).astype(np.float32)
Q = (C[rng.integers(0, 100, 500)] + rng.standard_normal((500, d))).astype(np.float32)
def p50(f, reps=500):
    ts = []
    for i in range(reps):
        t = time.perf_counter(); f(i); ts.append(time.perf_counter() - t)
    return np.median(ts) * 1e3
def server_mean(addr, method):
    txt = urllib.request.urlopen(f"http://{addr}/metrics").read().decode()
    s = float(re.search(r'request_duration_seconds_sum\{method="%s"\} (\S+)' % method, txt).group(1))
    c = float(re.search(r'request_duration_seconds_count\{method="%s"\} (\S+)' % method, txt).group(1))
    return s, c
with tempfile.TemporaryDirectory() as dd:
    c = shoal.Cluster.local(nodes=1, data_dir=dd, secure=secure)
    col = c.create_collection("b", dim=d, metric="cosine", shards=1)
    col.upsert(np.arange(n), X, batch_size=10_000); col.wait_indexed(timeout=600)
    for _ in range(200): col.search(Q[0], k=10, ef=40)
    maddr = c.nodes()[0].metrics_address
    print("methods:", sorted(set(re.findall(r'request_duration_seconds_count\{method="([^"]+)"', urllib.request.urlopen(f"http://{maddr}/metrics").read().decode()))))
    m = [k for k in re.findall(r'request_duration_seconds_count\{method="([^"]+)"', urllib.request.urlopen(f"http://{maddr}/metrics").read().decode()) if "earch" in k][0]
    s0, c0 = server_mean(maddr, m)
    print(f"secure={secure}")
    print(f"search e2e p50     {p50(lambda i: col.search(Q[i % 500], k=10, ef=40)):.3f} ms")
    s1, c1 = server_mean(maddr, m)
    print(f"  server mean      {(s1 - s0) / (c1 - c0) * 1e3:.3f} ms ({m})")
    print(f"_search_call only  {p50(lambda i: col._search_call(Q[i % 500], 10, None, 'session', None, False, 40, None, False, False)):.3f} ms")
    print(f"count() e2e p50    {p50(lambda i: col.count()):.3f} ms")
    print(f"count eventual     {p50(lambda i: col.count(consistency='eventual')):.3f} ms")
    print(f"search eventual    {p50(lambda i: col.search(Q[i % 500], k=10, ef=40, consistency='eventual')):.3f} ms")
    call = col._search_call(Q[0], 10, None, 'session', None, False, 40, None, False, False)
    print(f"native search only {p50(lambda i: col._client.search(call.request)):.3f} ms")
    raw = col._client.search(call.request)
    print(f"finish only        {p50(lambda i: call.finish(raw)):.3f} ms")
    call1 = col._search_call(Q[0], 1, None, 'eventual', None, False, 1, None, False, False)
    print(f"native k=1 ef=1    {p50(lambda i: col._client.search(call1.request)):.3f} ms")
    c.close()
