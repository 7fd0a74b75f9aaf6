"""Filtered search compared with a Python evaluation of the same filter on the same payloads."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

import shoal
from testlib import clustered, exact_topk, matches, random_payloads, recall

N, DIM = 2000, 16

FILTERS = {
    "eq": {"lang": "en"},
    "eq_op": {"lang": {"$eq": "de"}},
    "ne": {"lang": {"$ne": "en"}},
    "gte": {"year": {"$gte": 2020}},
    "range": {"score": {"$gt": 0.25, "$lte": 0.75}},
    "lt_float_vs_int": {"year": {"$lt": 2015.5}},
    "implicit_and": {"lang": "en", "year": {"$gte": 2018}},
    "in": {"lang": {"$in": ["de", "fr"]}},
    "nin": {"lang": {"$nin": ["de", "es"]}},
    "bool": {"flag": True},
    "dotted": {"meta.source": "book"},
    "dotted_range": {"meta.rank": {"$gte": 7}},
    "and": {"$and": [{"meta.source": "web"}, {"meta.rank": {"$lt": 3}}]},
    "or": {"$or": [{"lang": "fr"}, {"year": {"$lte": 2011}}]},
    "not": {"$not": {"lang": "en"}},
    "field_not": {"year": {"$not": {"$gte": 2015}}},
    "exists": {"opt": {"$exists": True}},
    "not_exists": {"opt": {"$exists": False}},
    "missing_ne": {"opt": {"$ne": 1}},
    "array_any": {"tags": "rust"},
    "array_in": {"tags": {"$in": ["ml", "ops"]}},
    "array_index": {"tags.0": "db"},
    "nested_logic": {
        "$or": [
            {"$and": [{"lang": "en"}, {"$not": {"flag": True}}]},
            {"$and": [{"meta.rank": {"$in": [1, 2]}}, {"opt": {"$exists": True}}]},
        ]
    },
    "string_range": {"lang": {"$gte": "es"}},
    "none": {"lang": "xx"},
    "empty": {},
}


@pytest.fixture(scope="module")
def dataset() -> tuple[np.ndarray, list[dict]]:
    return clustered(N, DIM, seed=21), random_payloads(N, seed=22)


@pytest.fixture(scope="module")
def flat(module_cluster: shoal.Cluster, dataset: tuple) -> Iterator[shoal.Collection]:
    v, p = dataset
    coll = module_cluster.create_collection("filters_flat", dim=DIM, metric="l2", index="flat")
    coll.upsert(np.arange(N), v, payloads=p)
    yield coll


@pytest.fixture(scope="module")
def hnsw(module_cluster: shoal.Cluster, dataset: tuple) -> Iterator[shoal.Collection]:
    v, p = dataset
    coll = module_cluster.create_collection("filters_hnsw", dim=DIM, metric="cosine")
    coll.upsert(np.arange(N), v, payloads=p)
    coll.wait_indexed(timeout=120)
    yield coll


@pytest.mark.parametrize("name", list(FILTERS))
def test_filter_selects_exactly_the_matching_points(flat: shoal.Collection, dataset: tuple, name: str) -> None:
    v, payloads = dataset
    flt = FILTERS[name]
    expected = {i for i, p in enumerate(payloads) if matches(p, flt)}
    res = flat.search(v[0], k=N, filter=flt, with_payload=True)
    got = res.ids[0][res.ids[0] >= 0].tolist()
    assert len(got) == len(set(got))
    assert set(got) == expected, f"{name}: {len(set(got) ^ expected)} points differ"
    assert res.payloads is not None
    for pid, payload in zip(got, res.payloads[0]):
        assert payload == payloads[pid]


def test_filters_are_not_trivial(dataset: tuple) -> None:
    """Each filter keeps some but not all points (so the comparisons above mean something)."""
    _, payloads = dataset
    for name, flt in FILTERS.items():
        n = sum(matches(p, flt) for p in payloads)
        if name == "none":
            assert n == 0
        elif name == "empty":
            assert n == N
        else:
            assert 0 < n < N, name


@pytest.mark.parametrize("name", ["eq", "gte", "implicit_and", "in", "or", "not", "dotted", "array_any"])
def test_filtered_hnsw_search(hnsw: shoal.Collection, dataset: tuple, name: str) -> None:
    v, payloads = dataset
    flt = FILTERS[name]
    rows = np.array([i for i, p in enumerate(payloads) if matches(p, flt)])
    queries = v[:50] + 0.1
    res = hnsw.search(queries, k=10, filter=flt, ef=128)
    hits = res.ids[res.ids >= 0]
    assert all(matches(payloads[i], flt) for i in hits.tolist()), "every hit matches the filter"
    idx, _ = exact_topk(v[rows], queries, 10, "cosine")
    truth = rows[idx]
    assert recall(res.ids, truth) >= 0.9
