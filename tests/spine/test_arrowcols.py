"""The buffer-built Arrow columns (twin/store/arrowcols.py) against pyarrow.array (the oracle)."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from healthtwin.twin.store import arrowcols

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)


@given(st.lists(st.one_of(st.none(), texts), max_size=40))
def test_strings_match_pyarrow(values: list[str | None]) -> None:
    got = arrowcols.string_array(values)
    got.validate(full=True)
    assert got.equals(pa.array(values, pa.string()))


@given(st.lists(st.one_of(st.none(), st.text(alphabet="abc", max_size=5)), max_size=40))
def test_ascii_strings_match_pyarrow(values: list[str | None]) -> None:
    got = arrowcols.string_array(values)
    got.validate(full=True)
    assert got.equals(pa.array(values, pa.string()))


@given(st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), max_size=40))
def test_int64_match_pyarrow(values: list[int | None]) -> None:
    got = arrowcols.int64_array(values)
    got.validate(full=True)
    assert got.equals(pa.array(values, pa.int64()))


@given(st.lists(st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)), max_size=40))
def test_int32_match_pyarrow(values: list[int | None]) -> None:
    assert arrowcols.int32_array(values).equals(pa.array(values, pa.int32()))


@given(st.lists(st.one_of(st.none(), st.floats(allow_nan=True)), max_size=40))
def test_float64_match_pyarrow(values: list[float | None]) -> None:
    got = arrowcols.float64_array(values)
    want = pa.array(values, pa.float64(), from_pandas=False)  # NaN stays a value, not null
    assert got.is_null().equals(want.is_null())
    assert got.to_pylist() == want.to_pylist() or all(
        (a is None and b is None) or a == b or (a != a and b != b)
        for a, b in zip(got.to_pylist(), want.to_pylist(), strict=True)
    )


@given(st.lists(st.one_of(st.none(), st.booleans()), max_size=40))
def test_bool_match_pyarrow(values: list[bool | None]) -> None:
    got = arrowcols.bool_array(values)
    got.validate(full=True)
    assert got.equals(pa.array(values, pa.bool_()))


naive = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31))


@given(st.lists(st.one_of(st.none(), naive), max_size=40))
def test_timestamps_match_pyarrow(values: list[datetime | None]) -> None:
    got = arrowcols.timestamp_array(values)
    got.validate(full=True)
    assert got.equals(pa.array(values, pa.timestamp("us")))


@given(st.one_of(st.none(), naive), st.integers(1, 20))
def test_repeated_timestamp_matches_pyarrow(value: datetime | None, n: int) -> None:
    assert arrowcols.timestamp_array([value] * n).equals(pa.array([value] * n, pa.timestamp("us")))


def test_no_pandas_import() -> None:
    """The point of building from buffers: nothing here imports pandas (checked in a fresh
    interpreter, since the test process may have imported it already)."""
    import subprocess
    import sys

    code = (
        "import sys, duckdb\n"
        "from healthtwin.twin.store import arrowcols as a\n"
        "t = a.table({'s': ['x', None], 'i': [1, None]}, {'i': a.INT64})\n"
        "con = duckdb.connect(); con.execute('CREATE TABLE t (s VARCHAR, i BIGINT)')\n"
        "con.from_arrow(t).insert_into('t')\n"
        "assert con.execute('SELECT * FROM t ORDER BY s').fetchall() == [('x', 1), (None, None)]\n"
        "print('pandas' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@given(st.lists(st.one_of(st.none(), st.text(alphabet='ab{}"', min_size=200, max_size=600))))
def test_long_ascii_strings_match_pyarrow(values: list[str | None]) -> None:
    """Original texts (long, ASCII): the branch that encodes value by value."""
    got = arrowcols.string_array(values)
    got.validate(full=True)
    assert got.equals(pa.array(values, pa.string()))
