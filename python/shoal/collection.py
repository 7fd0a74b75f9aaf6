"""A collection: points with a fixed dim, metric and id type (DESIGN §8)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _convert as cv
from .errors import InvalidArgument, Timeout
from .index import HNSW, Flat, index_from_info
from .results import Points, SearchResult, Shard, ShardList

if TYPE_CHECKING:  # pragma: no cover
    from . import _native
    from .cluster import Cluster

__all__ = ["Collection", "Query"]

# Points per upsert request unless ``batch_size`` says otherwise (the native client also keeps each request
# below the gRPC message limit, whatever the count).
DEFAULT_BATCH_ROWS = 10_000


class Collection:
    """A handle on a collection of a cluster. Get one from ``cluster.create_collection`` or ``cluster.collection``.

    Attributes: ``name``, ``dim``, ``metric`` ("cosine" | "l2" | "dot"), ``id_type`` ("int" | "str"),
    ``shard_count``, ``replication_factor``, ``index`` (``HNSW(...)`` or ``Flat()``), ``on_disk`` (vectors
    memory-mapped from each replica's directory instead of held in memory). ``payload_indexes()``
    lists the payload indexes; ``shards()`` reports the shards and the state of their replicas.
    """

    def __init__(self, cluster: Cluster, info: dict[str, Any]) -> None:
        self._cluster = cluster
        self.name: str = str(info["name"])
        self.dim: int = int(info["dim"])
        self.metric: str = str(info["metric"])
        self.id_type: str = str(info.get("id_type", "int"))
        self.shard_count: int = int(info.get("shards", 1) or 1)
        self.replication_factor: int = int(info.get("replication_factor", 1) or 1)
        self.index: HNSW | Flat = index_from_info(info)
        self.on_disk: bool = bool(info.get("on_disk", False))
        self._payload_indexes: dict[str, str] = dict(info.get("payload_indexes") or {})

    @property
    def _client(self) -> _native.Client:
        return self._cluster._c

    def __repr__(self) -> str:
        idx = "'flat'" if isinstance(self.index, Flat) else repr(self.index)
        return (
            f"Collection({self.name!r}, dim={self.dim}, metric={self.metric!r}, "
            f"id_type={self.id_type!r}, index={idx}{', on_disk=True' if self.on_disk else ''})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Collection) and other._cluster is self._cluster and other.name == self.name

    def __hash__(self) -> int:
        return hash((id(self._cluster), self.name))

    # --- writes -----------------------------------------------------------------------------------

    def upsert(
        self,
        ids: Any,
        vectors: Any,
        payloads: Any = None,
        consistency: str = "quorum",
        batch_size: int | None = None,
        progress: bool | None = None,
        timeout: float | None = None,
    ) -> int:
        """Inserts or replaces points; returns the number written.

        ``ids``: non-negative ints (int collections) or strs; ``vectors``: any array-like of real numbers
        of shape (n, dim), or (dim,) for one point (float64, lists and Fortran order are converted to
        contiguous float32); ``payloads``: one dict per point (or None). The whole batch is validated before
        anything is written; it is then sent in requests of at most ``batch_size`` points (default 10,000; fewer
        when that many would pass the gRPC message limit), each acknowledged at ``consistency`` ("eventual" |
        "quorum" | "strong"). ``progress=True`` shows a tqdm bar. If a request fails, the requests before it stay
        written: the exception's ``written`` attribute says how many points were. ``timeout`` applies to each
        request.
        """
        consistency = cv.check_write_consistency(consistency)
        timeout = cv.check_timeout(timeout)
        id_arr = cv.as_ids(ids, self.id_type)
        vecs, _ = cv.as_matrix(vectors, self.dim, "vectors", self.name)
        n = cv.ids_len(id_arr)
        if n != vecs.shape[0]:
            raise InvalidArgument(f"ids has {n} items but vectors has {vecs.shape[0]} rows")
        texts = cv.payload_texts(payloads, n)
        if n == 0:
            return 0
        rows = DEFAULT_BATCH_ROWS if batch_size is None else cv.check_int("batch_size", batch_size, 1)
        native = self._native()
        native.validate_upsert(id_arr, vecs, texts, self.dim, self.id_type)

        # The client splits the batch into requests (at most `rows` points each, below the gRPC message limit)
        # and reports each acknowledged one: the bar and the count of what was written follow its requests.
        bar = _progress_bar(progress, n, f"upsert {self.name}")
        written = 0

        def on_request(points: int, count: int) -> None:
            nonlocal written
            written += count
            if bar is not None:
                bar.update(points)

        try:
            self._client.upsert(
                self.name,
                self.id_type,
                id_arr,
                vecs,
                texts,
                consistency,
                timeout,
                batch_size=rows,
                on_request=on_request,
            )
        except BaseException as e:
            try:
                e.written = written  # type: ignore[attr-defined]
            except Exception:  # pragma: no cover
                pass
            raise
        finally:
            if bar is not None:
                bar.close()
        return written

    def delete(self, ids: Any, consistency: str = "quorum", timeout: float | None = None) -> int:
        """Deletes points by id (missing ids are ignored); returns the count the server reports."""
        consistency = cv.check_write_consistency(consistency)
        timeout = cv.check_timeout(timeout)
        id_arr = cv.as_ids(ids, self.id_type)
        if cv.ids_len(id_arr) == 0:
            return 0
        return int(self._client.delete(self.name, self.id_type, id_arr, consistency, timeout))

    def update_payload(self, ids: Any, patch: dict, consistency: str = "quorum", timeout: float | None = None) -> int:
        """Merges ``patch`` key by key into the payload of each point (a LWW map per key)."""
        consistency = cv.check_write_consistency(consistency)
        timeout = cv.check_timeout(timeout)
        id_arr = cv.as_ids(ids, self.id_type)
        if patch is None:
            raise InvalidArgument("patch must be a dict, got None")
        text = cv.payload_text(patch, "patch")
        if cv.ids_len(id_arr) == 0:
            return 0
        return int(self._client.update_payload(self.name, self.id_type, id_arr, text, consistency, timeout))

    # --- reads ------------------------------------------------------------------------------------

    def get(
        self,
        ids: Any,
        with_vectors: bool = True,
        consistency: str = "session",
        timeout: float | None = None,
    ) -> Points:
        """Reads points by id. Returns the found ones in request order; ``Points.missing`` lists the others."""
        consistency = cv.check_read_consistency(consistency)
        timeout = cv.check_timeout(timeout)
        id_arr = cv.as_ids(ids, self.id_type)
        n = cv.ids_len(id_arr)
        if n == 0:
            return Points(
                ids=_ids_array([], self.id_type),
                vectors=np.empty((0, self.dim), np.float32) if with_vectors else None,
                payloads=[],
            )
        found, vecs, texts = self._client.get(self.name, self.id_type, id_arr, bool(with_vectors), consistency, timeout)
        mask = np.asarray(found, dtype=bool)
        all_ids = _ids_array(id_arr, self.id_type)
        if with_vectors:
            vecs = (
                np.empty((0, self.dim), np.float32)
                if vecs is None
                else np.asarray(vecs, dtype=np.float32).reshape(-1, self.dim)
            )
        else:
            vecs = None
        payloads = [cv.parse_payload(t) or {} for t in texts]
        return Points(
            ids=all_ids[mask],
            vectors=vecs,
            payloads=payloads,
            missing=[_plain(x) for x in all_ids[~mask].tolist()],
        )

    def count(self, consistency: str = "session", timeout: float | None = None) -> int:
        """Number of live points."""
        consistency = cv.check_read_consistency(consistency)
        timeout = cv.check_timeout(timeout)
        return int(self._client.count(self.name, consistency, timeout))

    def search(
        self,
        queries: Any,
        k: int = 10,
        filter: dict | None = None,
        consistency: str = "session",
        timeout: float | None = None,
        allow_partial: bool = False,
        ef: int | None = None,
        load_balancing: str | None = None,
        with_payload: bool = False,
        with_vectors: bool = False,
        exact: bool = False,
        rescore: bool | None = None,
        oversampling: float | None = None,
    ) -> SearchResult:
        """k nearest neighbours of each query (smaller distance is better).

        ``queries``: (nq, dim) or (dim,) array-like; the result always has one row per query (many queries in
        one call are searched as one batch: one request per node). ``filter``: Mongo-style dict on payloads
        (``{"lang": "en", "year": {"$gte": 2020}}``). ``ef``: HNSW beam width for this query (default: chosen
        by the server's cost model). ``timeout``: seconds for the whole call (default 10).
        ``consistency``: "session" (default), "eventual" or "strong" (DESIGN §3).
        ``load_balancing``: how a replica is picked where the level leaves a choice: "least_loaded",
        "round_robin" or "locality" (default: the cluster's). ``allow_partial``: when some shards fail or miss
        the deadline, return what the others found with ``partial=True``, ``coverage`` (answered / all
        shards) and ``failed_shards``; without it such a search raises ``ShardUnavailable`` (no replica
        reachable) or ``Timeout``. Ctrl-C cancels the search on the nodes too. ``exact=True``: brute force
        instead of the graph (every live point matching the filter is compared; ``ef`` is ignored), still one
        replica per shard, merged: the exact answer to measure recall against (slow on large collections).
        Collections with ``HNSW(quantization="int8")``: the graph is walked on one-byte codes with a beam of
        ``max(ef, ceil(k * oversampling))`` (``oversampling`` 1..16, default 2.0) and every candidate of the
        beam is rescored with the float vectors, so distances are exact; ``rescore=False`` returns the best
        ``k`` code distances as they are.
        Both are ignored by unquantized collections (and by shards under 4,096 points, which search floats).
        """
        call = self._search_call(
            queries,
            k,
            filter,
            consistency,
            timeout,
            allow_partial,
            ef,
            load_balancing,
            with_payload,
            with_vectors,
            exact,
            rescore,
            oversampling,
        )
        if call.empty is not None:
            return call.empty
        return call.finish(self._client.search(call.request))

    def query(
        self,
        queries: Any,
        k: int = 10,
        filter: dict | None = None,
        consistency: str = "session",
        timeout: float | None = None,
        allow_partial: bool = False,
        ef: int | None = None,
        load_balancing: str | None = None,
        with_payload: bool = False,
        with_vectors: bool = False,
        exact: bool = False,
        rescore: bool | None = None,
        oversampling: float | None = None,
    ) -> Query:
        """Starts a search in the background and returns a ``Query`` at once: ``result(timeout=None)`` waits
        for the ``SearchResult``, ``done()`` polls, ``cancel()`` stops the search on every node it reached.
        Arguments as ``search``; bad arguments raise here, before anything is sent."""
        call = self._search_call(
            queries,
            k,
            filter,
            consistency,
            timeout,
            allow_partial,
            ef,
            load_balancing,
            with_payload,
            with_vectors,
            exact,
            rescore,
            oversampling,
        )
        if call.empty is not None:
            return Query(None, call)
        return Query(self._client.search_start(call.request), call)

    async def search_async(
        self,
        queries: Any,
        k: int = 10,
        filter: dict | None = None,
        consistency: str = "session",
        timeout: float | None = None,
        allow_partial: bool = False,
        ef: int | None = None,
        load_balancing: str | None = None,
        with_payload: bool = False,
        with_vectors: bool = False,
        exact: bool = False,
        rescore: bool | None = None,
        oversampling: float | None = None,
    ) -> SearchResult:
        """``search`` as a coroutine (asyncio, Jupyter's top-level ``await``): the search runs on the client's
        own runtime, so many can be in flight from one event loop; cancelling the awaiting task cancels the
        search on the nodes. Arguments as ``search``."""
        call = self._search_call(
            queries,
            k,
            filter,
            consistency,
            timeout,
            allow_partial,
            ef,
            load_balancing,
            with_payload,
            with_vectors,
            exact,
            rescore,
            oversampling,
        )
        if call.empty is not None:
            return call.empty
        reply = await self._client.search_async(call.request)
        if with_vectors:
            # Fetching the hits' vectors is one more (blocking) call: keep it off the event loop.
            import asyncio

            return await asyncio.get_running_loop().run_in_executor(None, call.finish, reply.arrays())
        return call.finish(reply.arrays())

    def _search_call(
        self,
        queries: Any,
        k: int,
        filter: dict | None,
        consistency: str,
        timeout: float | None,
        allow_partial: bool,
        ef: int | None,
        load_balancing: str | None,
        with_payload: bool,
        with_vectors: bool,
        exact: bool = False,
        rescore: bool | None = None,
        oversampling: float | None = None,
    ) -> _SearchCall:
        """Checks a search's arguments (nothing is sent when one is bad) and prepares the native call."""
        q, _ = cv.as_matrix(queries, self.dim, "queries", self.name)
        k = cv.check_int("k", k, 1, cv.MAX_K)
        if ef is not None:
            ef = cv.check_int("ef", ef, 1)
        timeout = cv.check_timeout(timeout)
        consistency = cv.check_read_consistency(consistency)
        if load_balancing is not None:
            cv.check_choice("load_balancing", load_balancing, cv.LOAD_BALANCING)
        if not isinstance(allow_partial, (bool, np.bool_)):
            raise InvalidArgument(f"allow_partial must be a bool, got {allow_partial!r}")
        if not isinstance(exact, (bool, np.bool_)):
            raise InvalidArgument(f"exact must be a bool, got {exact!r}")
        if rescore is not None and not isinstance(rescore, (bool, np.bool_)):
            raise InvalidArgument(f"rescore must be a bool or None, got {rescore!r}")
        if oversampling is not None and (
            isinstance(oversampling, (bool, np.bool_)) or not isinstance(oversampling, (int, float, np.number))
        ):
            raise InvalidArgument(f"oversampling must be a number or None, got {oversampling!r}")
        ftext = cv.filter_text(filter)
        cv.check_finite(q, "queries")
        request: _native.SearchArgs = {
            "collection": self.name,
            "id_type": self.id_type,
            "queries": q,
            "k": k,
            "filter": ftext,
            "ef": ef,
            "with_payload": bool(with_payload),
            "consistency": consistency,
            "timeout": timeout,
            "allow_partial": bool(allow_partial),
            "load_balancing": load_balancing,
            "exact": bool(exact),
            "rescore": None if rescore is None else bool(rescore),
            "oversampling": None if oversampling is None else float(oversampling),
        }
        call = _SearchCall(self, request, q.shape[0], bool(with_vectors))
        if q.shape[0] == 0:
            ids = np.empty((0, k), dtype=object if self.id_type == "str" else np.int64)
            call.empty = SearchResult(
                ids=ids,
                distances=np.empty((0, k), np.float32),
                payloads=[] if with_payload else None,
                vectors=np.empty((0, k, self.dim), np.float32) if with_vectors else None,
            )
        return call
        call.request = {
            "collection": self.name,
            "id_type": self.id_type,
            "queries": q,
            "k": k,
            "filter": ftext,
            "ef": ef,
            "with_payload": bool(with_payload),
            "consistency": consistency,
            "timeout": timeout,
            "allow_partial": bool(allow_partial),
            "load_balancing": load_balancing,
            "exact": bool(exact),
            "rescore": None if rescore is None else bool(rescore),
            "oversampling": None if oversampling is None else float(oversampling),
        }
        return call

    def scroll(
        self,
        batch_size: int = 1000,
        filter: dict | None = None,
        with_vectors: bool = False,
        consistency: str = "session",
        resume_token: bytes | None = None,
        timeout: float | None = None,
    ) -> Iterator[Points]:
        """Every live point (matching ``filter``) exactly once, as an iterator of :class:`Points` batches of
        ``batch_size`` points (1..=100000; the last batch may be shorter), streamed from the server.

        Order: shard by shard, ids ascending within a shard. Payloads are always returned, vectors with
        ``with_vectors=True`` (a batch holds at most 64 MiB of vectors, so very large dims get smaller
        batches). Each batch's ``resume_token`` (bytes) says where the scroll stands after it: pass it back as
        ``resume_token=`` (with the same ``filter``) to continue after a crash or a break; a token of a dropped
        and re-created collection raises ``InvalidArgument``. ``timeout`` (seconds, default 10) bounds opening
        the scroll and then each batch, not the whole scroll. Bad arguments (batch_size, filter, token) raise
        ``InvalidArgument`` before any batch; an unknown collection raises ``CollectionNotFound``.

        Writes during a scroll: a point present for the whole scroll and not modified is returned exactly
        once; a point inserted, deleted or re-upserted meanwhile may or may not be returned (with its old or
        new content); no point is ever returned twice. If the serving node fails, the scroll resumes from
        the last batch on another node; a failed replica of a shard is retried on another replica.

        The generator holds an open server stream until exhausted or closed (``close()``, ``break`` then
        garbage collection); Ctrl-C stops it.
        """
        batch_size = cv.check_int("batch_size", batch_size, 1, 100_000)
        consistency = cv.check_read_consistency(consistency)
        timeout = cv.check_timeout(timeout)
        ftext = cv.filter_text(filter)
        if resume_token is not None and not isinstance(resume_token, (bytes, bytearray)):
            raise InvalidArgument(f"resume_token must be bytes (a batch's resume_token), got {resume_token!r}")
        it = self._client.scroll(
            self.name,
            self.id_type,
            batch_size,
            ftext,
            bool(with_vectors),
            consistency,
            bytes(resume_token) if resume_token is not None else None,
            timeout,
        )
        return self._scroll_batches(it, bool(with_vectors))

    def _scroll_batches(self, it: Any, with_vectors: bool) -> Iterator[Points]:
        while True:
            batch = it.next_batch()
            if batch is None:
                return
            ids, vecs, texts, token = batch
            yield Points(
                ids=_ids_array(ids, self.id_type),
                vectors=np.asarray(vecs, dtype=np.float32).reshape(-1, self.dim) if with_vectors else None,
                payloads=[cv.parse_payload(t) or {} for t in texts],
                resume_token=bytes(token),
            )

    def tune(
        self,
        queries: Any,
        k: int = 10,
        target_recall: float = 0.95,
        efs: Iterable[int] | None = None,
        consistency: str = "session",
        timeout: float | None = None,
        latency_queries: int = 50,
    ) -> Any:
        """Which ``ef`` gives the recall you need, at what latency? Measures, for each beam width in ``efs``
        (default 10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512; values below ``k`` act as ``k``), the
        mean recall@k of ``queries`` against ``search(..., exact=True)``, the median latency of single-query
        searches (the first ``latency_queries`` queries, one call each) and the throughput of one batch call
        with every query. Returns a pandas DataFrame with columns ``ef``, ``recall``, ``p50_ms``, ``qps``,
        ``meets_target``; ``df.attrs["best_ef"]`` is the smallest ``ef`` whose recall reaches
        ``target_recall`` (None when none does). Pass it to ``search(..., ef=...)``. Use queries that look like
        yours (e.g. held-out vectors of the same data); timings come from this client's machine, so they
        include the network.
        """
        from .results import _pandas

        pd = _pandas()
        q, _ = cv.as_matrix(queries, self.dim, "queries", self.name)
        if q.shape[0] == 0:
            raise InvalidArgument("tune needs at least one query")
        k = cv.check_int("k", k, 1, cv.MAX_K)
        if isinstance(target_recall, bool) or not isinstance(target_recall, (int, float)) or not 0 < target_recall <= 1:
            raise InvalidArgument(f"target_recall must be a number in (0, 1], got {target_recall!r}")
        latency_queries = cv.check_int("latency_queries", latency_queries, 1)
        grid = [10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512] if efs is None else list(efs)
        if not grid:
            raise InvalidArgument("efs must name at least one ef")
        grid = sorted({cv.check_int("ef", e, 1) for e in grid})

        def found(ids: Any, row: int) -> set:
            return {x for x in ids[row] if x is not None and not (isinstance(x, (int, np.integer)) and x < 0)}

        truth = self.search(q, k, exact=True, consistency=consistency, timeout=timeout)
        want = [found(truth.ids, i) for i in range(q.shape[0])]
        rows = []
        for ef in grid:
            t0 = time.perf_counter()
            res = self.search(q, k, ef=ef, consistency=consistency, timeout=timeout)
            batch_s = time.perf_counter() - t0
            hits = [len(found(res.ids, i) & want[i]) / len(want[i]) for i in range(q.shape[0]) if want[i]]
            lat = []
            for i in range(min(latency_queries, q.shape[0])):
                t0 = time.perf_counter()
                self.search(q[i : i + 1], k, ef=ef, consistency=consistency, timeout=timeout)
                lat.append(time.perf_counter() - t0)
            recall = float(np.mean(hits)) if hits else 1.0
            rows.append(
                (ef, recall, float(np.median(lat)) * 1e3, q.shape[0] / batch_s if batch_s > 0 else float("inf"))
            )
        df = pd.DataFrame(rows, columns=["ef", "recall", "p50_ms", "qps"])
        df["meets_target"] = df["recall"] >= target_recall
        meets = df.loc[df["meets_target"], "ef"]
        df.attrs["best_ef"] = int(meets.iloc[0]) if len(meets) else None
        df.attrs["target_recall"] = float(target_recall)
        return df

    # --- payload indexes ---------------------------------------------------------------------------

    def create_payload_index(
        self, field: str, kind: str, wait: bool = True, timeout: float | None = None, progress: bool | None = None
    ) -> dict[str, str]:
        """Indexes payload field ``field`` (a dotted path, as in filters) so that filters on it are answered
        from inverted lists instead of each point's payload, with exact match counts for the query planner.

        ``kind``: ``"keyword"`` (strings: equality, ``$in``, ``$ne``/``$nin``, ranges), ``"integer"`` or
        ``"float"`` (numbers: equality, ``$in``, ranges), ``"bool"``. Values of another type are not indexed;
        a filter comparing the field with another type is evaluated per point, as without an index. Creating
        an index that exists with another kind replaces it; with the same kind it is a no-op.

        Every replica builds the index in the background (filters work meanwhile, unindexed). ``wait=True``
        returns once every replica has built it (``wait_indexed``; ``progress=True`` shows a bar). Returns
        the collection's payload indexes, ``{field: kind}``."""
        timeout = cv.check_timeout(timeout)
        info = self._client.set_payload_index(self.name, field, kind, timeout)
        self._payload_indexes = dict(info.get("payload_indexes") or {})
        if wait:
            self.wait_indexed(timeout=timeout, progress=progress)
        return dict(self._payload_indexes)

    def drop_payload_index(self, field: str, timeout: float | None = None) -> dict[str, str]:
        """Drops the payload index of ``field`` (a no-op when there is none); filters on it are then evaluated
        per point. Returns the remaining payload indexes, ``{field: kind}``."""
        timeout = cv.check_timeout(timeout)
        info = self._client.set_payload_index(self.name, field, None, timeout)
        self._payload_indexes = dict(info.get("payload_indexes") or {})
        return dict(self._payload_indexes)

    def payload_indexes(self, timeout: float | None = None) -> dict[str, str]:
        """The collection's payload indexes as the cluster has them now, ``{field: kind}``."""
        timeout = cv.check_timeout(timeout)
        info = self._client.get_collection(self.name, timeout)
        self._payload_indexes = dict(info.get("payload_indexes") or {})
        return dict(self._payload_indexes)

    def index_status(self, timeout: float | None = None) -> tuple[int, int]:
        """(live points, live points not yet covered by every index: the vector index and the payload
        indexes)."""
        timeout = cv.check_timeout(timeout)
        points, unindexed = self._client.index_status(self.name, timeout)
        return int(points), int(unindexed)

    def shards(self, timeout: float | None = None) -> ShardList:
        """The shards of this collection, sorted by id, each with its leader (None while there is none) and
        the state of every replica (role, state, applied index, lag, count, digest). A list of ``Shard`` that
        Jupyter shows as one table; ``.to_pandas()`` gives a DataFrame with a row per replica."""
        timeout = cv.check_timeout(timeout)
        shards = [Shard.from_dict(d) for d in self._client.shards(self.name, timeout)]
        return ShardList(sorted(shards, key=lambda s: s.id))

    def rebalance(
        self, timeout: float | None = None, progress: bool | None = None, wait: float | None = None
    ) -> list[dict]:
        """Starts the replica moves that balance this collection over the cluster's nodes (replica and
        leader counts per node, zones; never below the replication factor) and returns them as dicts
        ``{collection, shard, from, to}``. Moves run in the background: each adds the target as a learner
        (snapshot, then log), promotes it, then removes the source; watch ``shards()`` for progress. Moves
        are started a few at a time; call again (or let the cluster do it after ``add_node``) for more. A move
        whose ``from`` and ``to`` both already hold the shard only changes its preferred leader (the current
        leader hands over).

        ``progress=True`` waits for the started moves and shows a tqdm bar of moves finished (a move is
        finished when its target holds an active replica and its source none); ``wait`` bounds that wait in
        seconds (default 600; ``shoal.Timeout`` after it, the moves go on in the background)."""
        timeout = cv.check_timeout(timeout)
        moves = list(self._client.rebalance(self.name, timeout))
        bar = _progress_bar(progress, len(moves), f"rebalance {self.name}", unit="move")
        if bar is None:
            return moves
        limit = 600.0 if wait is None else float(cv.check_timeout(wait) or 600.0)
        deadline = time.monotonic() + limit
        try:
            while True:
                by_shard = {s.id: s for s in self.shards(timeout=timeout)}
                done = 0
                for m in moves:
                    sh = by_shard.get(int(m["shard"]))
                    if sh is None:
                        continue
                    states = {r.node: r.state for r in sh.replicas}
                    target_ok = states.get(int(m["to"])) == "active"
                    source_gone = int(m["from"]) == int(m["to"]) or int(m["from"]) not in states
                    done += int(target_ok and source_gone)
                bar.update(done - bar.n)
                if done == len(moves):
                    return moves
                if time.monotonic() >= deadline:
                    raise Timeout(f"collection {self.name!r}: {done} of {len(moves)} moves finished after {limit:g} s")
                time.sleep(0.2)
        finally:
            bar.close()

    def wait_indexed(
        self, timeout: float | None = None, poll_interval: float = 0.05, progress: bool | None = None
    ) -> int:
        """Blocks until the index covers every point; returns the number of live points.

        Raises ``shoal.Timeout`` when ``timeout`` seconds pass first (None: wait as long as it takes).
        Interruptible with Ctrl-C. ``progress=True`` shows a tqdm bar of indexed points.
        """
        bar = _progress_bar(progress, 0, f"index {self.name}")
        try:
            return self._wait_indexed(timeout, poll_interval, bar)
        finally:
            if bar is not None:
                bar.close()

    def _wait_indexed(self, timeout: float | None, poll_interval: float, bar: Any) -> int:
        timeout = cv.check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = min(max(float(poll_interval), 0.001), 1.0)
        status = "the index status was not known yet"
        while True:
            rpc_timeout = None if deadline is None else max(0.05, min(10.0, deadline - time.monotonic()))
            try:
                points, unindexed = self.index_status(timeout=rpc_timeout)
            except Timeout as e:
                if deadline is not None and time.monotonic() >= deadline:
                    raise Timeout(f"collection {self.name!r}: not indexed after {timeout:g} s ({status})") from e
                continue
            if bar is not None:
                bar.total = points
                bar.update(points - unindexed - bar.n)
            if unindexed == 0:
                return points
            status = f"{unindexed} of {points} points still not indexed"
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise Timeout(f"collection {self.name!r}: {status} after {timeout:g} s")
            sleep = interval if deadline is None else min(interval, max(0.0, deadline - now))
            time.sleep(sleep)
            interval = min(interval * 1.5, 0.5)

    # --- helpers ----------------------------------------------------------------------------------

    def _native(self) -> Any:
        from ._loader import native

        return native()

    def _hit_vectors(self, ids: np.ndarray, consistency: str, timeout: float | None) -> np.ndarray:
        nq, k = ids.shape
        out = np.full((nq, k, self.dim), np.nan, dtype=np.float32)
        uniq: list[Any] | np.ndarray
        if self.id_type == "str":
            flat = [x for x in ids.ravel().tolist() if x is not None]
            uniq = list(dict.fromkeys(flat))
        else:
            uniq = np.unique(ids[ids >= 0])
        if len(uniq) == 0:
            return out
        pts = self.get(uniq, with_vectors=True, consistency=consistency, timeout=timeout)
        assert pts.vectors is not None
        row_of = {_plain(x): i for i, x in enumerate(pts.ids.tolist())}
        for (qi, j), x in np.ndenumerate(ids):
            r = row_of.get(_plain(x)) if x is not None else None
            if r is not None:
                out[qi, j] = pts.vectors[r]
        return out


def _plain(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x


def _ids_array(ids: Any, id_type: str) -> np.ndarray:
    if id_type == "str":
        arr = np.empty(len(ids), dtype=object)
        arr[:] = list(ids)
        return arr
    return np.asarray(ids, dtype=np.int64)


class _SearchCall:
    """One checked search: the native call's argument and how to turn its answer into a SearchResult."""

    def __init__(self, coll: Collection, request: _native.SearchArgs, nq: int, with_vectors: bool) -> None:
        self.coll, self.nq, self.k = coll, nq, request["k"]
        self.consistency, self.timeout = request["consistency"], request.get("timeout")
        self.with_payload, self.with_vectors = request.get("with_payload", False), with_vectors
        #: The native call's one argument (``SearchArgs`` in shoal/_native.pyi).
        self.request = request
        #: The answer when there is nothing to ask the cluster (no queries).
        self.empty: SearchResult | None = None

    def finish(self, arrays: tuple) -> SearchResult:
        """The SearchResult of the native answer (ids, distances, payload texts, failed shards, shards)."""
        ids, dists, ptexts, failed, shards = arrays
        coll, nq, k = self.coll, self.nq, self.k
        ids = np.asarray(ids)
        if coll.id_type != "str":
            ids = ids.astype(np.int64, copy=False)
        ids = ids.reshape(nq, k)
        dists = np.asarray(dists, dtype=np.float32).reshape(nq, k)
        payloads = _search_payloads(ids, ptexts, coll.id_type) if self.with_payload else None
        vectors = coll._hit_vectors(ids, self.consistency, self.timeout) if self.with_vectors else None
        failed = [int(s) for s in failed]
        shards = int(shards) or coll.shard_count
        return SearchResult(
            ids=ids,
            distances=dists,
            payloads=payloads,
            vectors=vectors,
            partial=bool(failed),
            coverage=(shards - len(failed)) / shards if shards else 1.0,
            failed_shards=failed,
        )


class Query:
    """A search running in the background (``Collection.query``).

    ``result(timeout=None)``: waits for the ``SearchResult`` (``timeout`` seconds at most, then
    ``shoal.Timeout`` while the search keeps running); raises the search's own error, or ``shoal.Cancelled``
    after ``cancel()``. Ctrl-C while waiting cancels the search. ``cancel()``: stops the search on every node
    (their work stops within milliseconds); True when it was still running. ``done()``: finished or not.
    """

    def __init__(self, pending: Any, call: _SearchCall) -> None:
        self._pending = pending
        self._call = call
        self._result: SearchResult | None = call.empty

    def result(self, timeout: float | None = None) -> SearchResult:
        if self._result is None:
            timeout = cv.check_timeout(timeout)
            self._result = self._call.finish(self._pending.result(timeout))
        return self._result

    def cancel(self) -> bool:
        return False if self._pending is None else bool(self._pending.cancel())

    def done(self) -> bool:
        return self._pending is None or bool(self._pending.done())

    def __repr__(self) -> str:
        state = "done" if self.done() else "running"
        return f"Query({self._call.coll.name!r}, nq={self._call.nq}, k={self._call.k}, {state})"


def _search_payloads(ids: np.ndarray, ptexts: Any, id_type: str) -> list[list[dict | None]]:
    """Per query, per slot: the payload dict of the hit (None for padding)."""
    nq, k = ids.shape
    rows: list[list[dict | None]] = []
    for i in range(nq):
        row_ids = ids[i]
        hit = [(x is not None) if id_type == "str" else (int(x) >= 0) for x in row_ids.tolist()]
        texts = list(ptexts[i]) if ptexts is not None and i < len(ptexts) else []
        out: list[dict | None] = []
        if len(texts) == k:  # one text per slot
            for j in range(k):
                out.append((cv.parse_payload(texts[j]) or {}) if hit[j] else None)
        else:  # one text per hit
            it = iter(texts)
            for j in range(k):
                out.append((cv.parse_payload(next(it, "")) or {}) if hit[j] else None)
        rows.append(out)
    return rows


def _progress_bar(progress: Any, total: int, desc: str, unit: str = "pt") -> Any:
    if progress is None or progress is False:
        return None
    if progress is not True:
        raise InvalidArgument(f"progress must be True, False or None, got {progress!r}")
    try:
        from tqdm.auto import tqdm
    except ImportError as e:
        raise ImportError("progress=True needs tqdm: pip install tqdm (or shoal[tqdm])") from e
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "pt", leave=True)
