"""Collection management: create, get, list, drop, recreate, and their errors."""

from __future__ import annotations

import numpy as np
import pytest

import shoal


def test_create_list_get_drop_recreate(shoal_cluster: shoal.Cluster) -> None:
    c = shoal_cluster
    a = c.create_collection("alpha", dim=4)
    b = c.create_collection("beta", dim=8, metric="l2", id_type="str", index="flat")
    assert (a.name, a.dim, a.metric, a.id_type, a.index) == ("alpha", 4, "cosine", "int", shoal.HNSW())
    assert (b.dim, b.id_type, b.index) == (8, "str", shoal.Flat())
    assert c.list_collections() == ["alpha", "beta"]

    got = c.collection("beta")
    assert (got.dim, got.metric, got.id_type, got.index) == (8, "l2", "str", shoal.Flat())
    assert c["beta"] == got
    assert "Collection('beta', dim=8, metric='l2', id_type='str', index='flat')" == repr(got)

    a.upsert([1, 2, 3], np.eye(3, 4))
    assert a.count() == 3
    c.drop_collection("alpha")
    assert c.list_collections() == ["beta"]
    with pytest.raises(shoal.CollectionNotFound):
        c.collection("alpha")
    with pytest.raises(shoal.CollectionNotFound):
        a.count()  # a stale handle

    again = c.create_collection("alpha", dim=6, metric="dot")
    assert again.count() == 0, "a recreated collection starts empty"
    assert c.collection("alpha").dim == 6


def test_hnsw_parameters_round_trip(shoal_cluster: shoal.Cluster) -> None:
    coll = shoal_cluster.create_collection("p", dim=4, index=shoal.HNSW(m=8, ef_construction=64))
    assert coll.index == shoal.HNSW(m=8, ef_construction=64)
    assert shoal_cluster.collection("p").index == shoal.HNSW(m=8, ef_construction=64)
    assert shoal_cluster.create_collection("q", dim=4, index="hnsw").index == shoal.HNSW()


def test_collection_exists(shoal_cluster: shoal.Cluster) -> None:
    shoal_cluster.create_collection("dup", dim=4)
    with pytest.raises(shoal.CollectionExists) as e:
        shoal_cluster.create_collection("dup", dim=9)
    assert "dup" in str(e.value)
    assert shoal_cluster.collection("dup").dim == 4, "the existing collection is unchanged"


def test_collection_not_found_is_a_key_error(shoal_cluster: shoal.Cluster) -> None:
    with pytest.raises(KeyError) as e:
        shoal_cluster.collection("nope")
    assert isinstance(e.value, shoal.CollectionNotFound)
    assert "nope" in str(e.value)
    assert not str(e.value).startswith('"'), "a readable message, not a quoted repr"
    with pytest.raises(shoal.CollectionNotFound, match="nope"):
        shoal_cluster.drop_collection("nope")


def test_dim_limits(shoal_cluster: shoal.Cluster) -> None:
    for dim in (0, -3, 65537):
        with pytest.raises(shoal.InvalidArgument) as e:
            shoal_cluster.create_collection(f"d{abs(dim)}", dim=dim)
        assert "dim" in str(e.value) and str(dim) in str(e.value)
    with pytest.raises(shoal.InvalidArgument, match="dim"):
        shoal_cluster.create_collection("dstr", dim="8")  # type: ignore[arg-type]
    assert shoal_cluster.list_collections() == []
    big = shoal_cluster.create_collection("dmax", dim=65536)
    assert big.dim == 65536


def test_unknown_metric_id_type_index(shoal_cluster: shoal.Cluster) -> None:
    with pytest.raises(shoal.InvalidArgument, match="manhattan"):
        shoal_cluster.create_collection("m", dim=4, metric="manhattan")
    with pytest.raises(shoal.InvalidArgument, match="uuid"):
        shoal_cluster.create_collection("m", dim=4, id_type="uuid")
    with pytest.raises(shoal.InvalidArgument, match="ivf"):
        shoal_cluster.create_collection("m", dim=4, index="ivf")
    with pytest.raises(shoal.InvalidArgument, match="shards"):
        shoal_cluster.create_collection("m", dim=4, shards=0)
    assert shoal_cluster.list_collections() == []
