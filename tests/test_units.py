"""Pure-Python parts of the package: no node process needed."""

from __future__ import annotations

import numpy as np
import pytest

import shoal
from shoal import _convert as cv


def test_exception_hierarchy() -> None:
    assert issubclass(shoal.InvalidArgument, shoal.ShoalError)
    assert issubclass(shoal.InvalidArgument, ValueError)
    assert issubclass(shoal.CollectionNotFound, KeyError)
    assert issubclass(shoal.Timeout, TimeoutError)
    assert issubclass(shoal.NodeUnavailable, ConnectionError)
    for cls in (shoal.CollectionExists, shoal.ConsistencyError, shoal.Cancelled, shoal.ShardUnavailable):
        assert issubclass(cls, shoal.ShoalError)
    assert not issubclass(shoal.Cancelled, KeyboardInterrupt)
    # KeyError would quote the message; ours reads as written.
    assert str(shoal.CollectionNotFound("collection 'x' not found")) == "collection 'x' not found"


def test_errors_are_listed_once_and_exported() -> None:
    import shoal.errors as errors

    # errors.py defines the classes and lists them in __all__; shoal re-exports exactly that list.
    defined = {n for n, c in vars(errors).items() if isinstance(c, type) and issubclass(c, errors.ShoalError)}
    assert set(errors.__all__) == defined
    for name in errors.__all__:
        assert getattr(errors, name) is getattr(shoal, name)
        assert name in shoal.__all__


def test_connection_failure_chains_its_causes() -> None:
    """The native error's lower errors become __cause__: the gRPC transport status down to the OS error."""
    with pytest.raises(shoal.NodeUnavailable) as info:
        shoal.connect("127.0.0.1:1", connect_timeout=2)  # loopback port 1: nothing listens there
    chain = []
    cause = info.value.__cause__
    while cause is not None and len(chain) < 20:
        chain.append(cause)
        cause = cause.__cause__
    assert chain, "NodeUnavailable has no __cause__"
    assert "unavailable" in str(chain[0]).lower(), chain[0]  # the transport's status
    assert isinstance(chain[-1], ConnectionRefusedError), [type(c).__name__ for c in chain]


def test_hnsw_config() -> None:
    assert shoal.HNSW() == shoal.HNSW(m=16, ef_construction=200)
    with pytest.raises(shoal.InvalidArgument, match="m"):
        shoal.HNSW(m=1)
    with pytest.raises(shoal.InvalidArgument, match="ef_construction"):
        shoal.HNSW(ef_construction=0)
    from shoal.index import parse_index

    assert parse_index("flat") == shoal.Flat()
    assert parse_index("hnsw") == shoal.HNSW()
    with pytest.raises(shoal.InvalidArgument, match="ivf"):
        parse_index("ivf")


@pytest.mark.parametrize(
    "ids, fragment",
    [
        ([0, 1, 2, -1], "ids[3] is negative (-1)"),
        (np.array([5, -7]), "ids[1] is negative (-7)"),
        ([1, True], "ids[1] is a bool"),
        ([1, 2.0], "ids[1] has type float"),
        (np.array([1.0, 2.0]), "ids[0] has dtype float64"),
        (["a"], "ids[0] has type str"),
        ([2**63], "ids[0] is too large"),
        (np.array([2**63], dtype=np.uint64), "ids[0] is too large"),
    ],
)
def test_int_id_conversion_rejects(ids: object, fragment: str) -> None:
    with pytest.raises(shoal.InvalidArgument) as e:
        cv.as_ids(ids, "int")
    assert fragment in str(e.value)


def test_int_id_conversion_accepts() -> None:
    for ids in ([1, 2, 3], (1, 2, 3), range(1, 4), np.array([1, 2, 3], np.int32), np.array([1, 2, 3], np.uint64)):
        out = cv.as_ids(ids, "int")
        assert out.dtype == np.int64 and out.flags["C_CONTIGUOUS"]
        assert out.tolist() == [1, 2, 3]
    assert cv.as_ids(7, "int").tolist() == [7]
    assert cv.as_ids([], "int").shape == (0,)
    assert cv.as_ids(np.array([]), "int").shape == (0,)


def test_str_id_conversion() -> None:
    assert cv.as_ids(["a", "b"], "str") == ["a", "b"]
    assert cv.as_ids(np.array(["a", "b"]), "str") == ["a", "b"]
    assert cv.as_ids("solo", "str") == ["solo"]
    with pytest.raises(shoal.InvalidArgument, match=r"ids\[1\] has type int"):
        cv.as_ids(["a", 3], "str")


def test_matrix_conversion() -> None:
    c = np.ones((3, 4), np.float32)
    out, single = cv.as_matrix(c, 4)
    assert out is c and not single  # no copy when already C-contiguous float32
    f = np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4))
    out, _ = cv.as_matrix(f, 4)
    assert out.flags["C_CONTIGUOUS"] and out.dtype == np.float32
    np.testing.assert_array_equal(out, f.astype(np.float32))
    out, single = cv.as_matrix([1, 2, 3, 4], 4)
    assert out.shape == (1, 4) and single
    assert cv.as_matrix([], 4)[0].shape == (0, 4)
    with pytest.raises(shoal.InvalidArgument, match="dim 5"):
        cv.as_matrix(np.ones((2, 5)), 4)
    with pytest.raises(shoal.InvalidArgument, match="dim 3"):
        cv.as_matrix([1, 2, 3], 4)
    with pytest.raises(shoal.InvalidArgument, match="shape"):
        cv.as_matrix(np.ones((2, 2, 4)), 4)
    with pytest.raises(shoal.InvalidArgument, match="real numbers"):
        cv.as_matrix([["a", "b", "c", "d"]], 4)
    with pytest.raises(shoal.InvalidArgument, match="complex"):
        cv.as_matrix(np.ones((1, 4), complex), 4)


def test_finite_check_after_float32_cast() -> None:
    x = np.zeros((6, 4))
    x[5, 2] = 1e39  # finite in float64, inf in float32
    out, _ = cv.as_matrix(x, 4)
    with pytest.raises(shoal.InvalidArgument, match=r"vectors\[5\] contains inf"):
        cv.check_finite(out, "vectors")
    x[2, 0] = np.nan
    with pytest.raises(shoal.InvalidArgument, match=r"vectors\[2\] contains NaN"):
        cv.check_finite(cv.as_matrix(x, 4)[0], "vectors")


def test_payload_texts() -> None:
    texts = cv.payload_texts([{"a": np.int64(3), "b": np.float32(0.5), "c": np.array([1, 2])}, None], 2)
    assert texts == ['{"a":3,"b":0.5,"c":[1,2]}', "{}"]
    with pytest.raises(shoal.InvalidArgument, match=r"payloads\[1\] is not a JSON object"):
        cv.payload_texts([{}, [1, 2]], 2)
    with pytest.raises(shoal.InvalidArgument, match=r"payloads\[0\] is not valid JSON"):
        cv.payload_texts([{"x": float("nan")}], 1)
    with pytest.raises(shoal.InvalidArgument, match="2 items but ids has 3"):
        cv.payload_texts([{}, {}], 3)
    assert cv.payload_texts({"solo": 1}, 1) == ['{"solo":1}']


def test_parameter_checks() -> None:
    assert cv.check_int("k", 10, 1, cv.MAX_K) == 10
    for bad in (0, -1, 16385, 1.5, True, "3"):
        with pytest.raises(shoal.InvalidArgument, match="k"):
            cv.check_int("k", bad, 1, cv.MAX_K)
    for bad in (0, -1, float("nan"), float("inf"), "1"):
        with pytest.raises(shoal.InvalidArgument, match="timeout"):
            cv.check_timeout(bad)
    assert cv.check_timeout(None) is None and cv.check_timeout(2) == 2.0
    with pytest.raises(shoal.InvalidArgument, match="manhattan"):
        cv.check_metric("manhattan")
    with pytest.raises(shoal.InvalidArgument, match="linearizable"):
        cv.check_read_consistency("linearizable")


def test_search_result_objects() -> None:
    res = shoal.SearchResult(
        ids=np.array([[3, 1, -1], [-1, -1, -1]]),
        distances=np.array([[0.1, 0.2, np.inf], [np.inf] * 3], np.float32),
        payloads=[[{"a": 1}, {}, None], [None, None, None]],
    )
    assert len(res) == 2 and res.k == 3
    assert res.hits(0) == [(3, pytest.approx(0.1)), (1, pytest.approx(0.2))] and res.hits(1) == []
    df = res.to_pandas()
    assert list(df.columns) == ["query", "rank", "id", "distance", "payload"]
    assert df["id"].tolist() == [3, 1] and df["rank"].tolist() == [0, 1]
    assert "SearchResult(queries=2, k=3" in repr(res)
    assert "<table" in res._repr_html_()

    pts = shoal.Points(ids=np.array([1, 2]), vectors=np.zeros((2, 3), np.float32), payloads=[{}, {"x": 1}])
    assert len(pts) == 2 and "Points(n=2, dim=3" in repr(pts)
    assert pts.to_pandas()["payload"].tolist() == [{}, {"x": 1}]
    assert "<table" in pts._repr_html_()


def test_version_and_main(capsys: pytest.CaptureFixture[str]) -> None:
    from shoal.__main__ import main

    assert isinstance(shoal.__version__, str) and shoal.__version__
    assert main([]) == 0
    assert shoal.__version__ in capsys.readouterr().out
