"""Python columns -> Arrow arrays, built from buffers (NumPy), for DuckDB's Arrow scan.

Why by hand: ``pyarrow.array(list)`` asks pyarrow's pandas shim whether the list is
"array-like", and that first question imports pandas (about 0.2 s with pandas 2.x, pyarrow
26): more than a whole small ingest. Arrays assembled with ``Array.from_buffers`` never ask,
and DuckDB's Arrow scan of them imports nothing either. The buffers are built with NumPy and
one join per string column; per value this costs about what ``pyarrow.array`` costs once
pandas is loaded (docs/PERFORMANCE.md "spine"). ``tests/spine/test_arrowcols.py`` checks
every builder against ``pyarrow.array`` (the oracle) on hypothesis-generated columns.

Types handled: the ones the stores' tables use (string, int32, int64, float64, bool and
timestamp[us] from naive ``datetime``); ``None`` is null.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from itertools import repeat
from operator import is_not
from typing import Any

import numpy as np
import pyarrow as pa

STRING, INT32, INT64 = pa.string(), pa.int32(), pa.int64()
FLOAT64, BOOL, TIMESTAMP_US = pa.float64(), pa.bool_(), pa.timestamp("us")
_I32_MAX = 2**31 - 1
_SHORT = 256  # mean characters per value below which a string column is joined as text


def _validity(values: Sequence[Any], n: int) -> tuple[pa.Buffer | None, int]:
    """(validity bitmap or None, null count) of a column where ``None`` is null."""
    if None not in values:  # C-speed scan
        return None, 0
    valid = np.fromiter(map(is_not, values, repeat(None, n)), dtype=np.bool_, count=n)
    return pa.py_buffer(np.packbits(valid, bitorder="little")), n - int(valid.sum())


def _all_null(values: Sequence[Any], n: int) -> bool:
    return n > 0 and values[0] is None and values.count(None) == n


def string_array(values: Sequence[str | None]) -> pa.Array:
    """A ``string`` array (``large_string`` beyond 2 GiB of text)."""
    n = len(values)
    if _all_null(values, n):
        return pa.nulls(n, STRING)
    validity, nulls = _validity(values, n)
    vals: Sequence[str] = (
        values  # type: ignore[assignment]  # no None in it (null count 0)
        if not nulls
        else ["" if v is None else v for v in values]
    )
    if all(map(str.isascii, vals)):  # O(1) per value: CPython keeps an ASCII flag
        lens = np.fromiter(map(len, vals), dtype=np.int64, count=n)  # characters = bytes
        if int(lens.sum()) < _SHORT * n:  # short values: one join, no bytes object each
            data = "".join(vals).encode("ascii")
        else:  # long ones (original texts): measured faster encoded one by one
            data = b"".join(map(str.encode, vals))
    else:  # each value encoded once (joining mixed text would widen it to UCS-2/4 first)
        enc = list(map(str.encode, vals))
        data = b"".join(enc)
        lens = np.fromiter(map(len, enc), dtype=np.int64, count=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    typ, off = (
        (STRING, offsets.astype(np.int32))
        if len(data) <= _I32_MAX
        else (pa.large_string(), offsets)
    )
    return pa.Array.from_buffers(
        typ, n, [validity, pa.py_buffer(off), pa.py_buffer(data)], null_count=nulls
    )


def _numeric(values: Sequence[Any], typ: pa.DataType, dtype: Any) -> pa.Array:
    n = len(values)
    if _all_null(values, n):
        return pa.nulls(n, typ)
    validity, nulls = _validity(values, n)
    if dtype is np.float64:  # None -> NaN in C (masked by the validity bitmap)
        arr = np.array(values, dtype=np.float64)
    else:
        vals = values if not nulls else [0 if v is None else v for v in values]
        arr = np.fromiter(vals, dtype=dtype, count=n)
    return pa.Array.from_buffers(typ, n, [validity, pa.py_buffer(arr)], null_count=nulls)


def int64_array(values: Sequence[int | None]) -> pa.Array:
    return _numeric(values, INT64, np.int64)


def int32_array(values: Sequence[int | None]) -> pa.Array:
    return _numeric(values, INT32, np.int32)


def float64_array(values: Sequence[float | None]) -> pa.Array:
    return _numeric(values, FLOAT64, np.float64)


def bool_array(values: Sequence[bool | None]) -> pa.Array:
    n = len(values)
    validity, nulls = _validity(values, n)
    bits = np.fromiter((bool(v) for v in values), dtype=np.bool_, count=n)
    data = pa.py_buffer(np.packbits(bits, bitorder="little"))
    return pa.Array.from_buffers(BOOL, n, [validity, data], null_count=nulls)


def timestamp_array(values: Sequence[datetime | None]) -> pa.Array:
    """``timestamp[us]`` from naive datetimes (UTC wall time, as the stores keep them)."""
    n = len(values)
    first = values[0] if n else None
    if n and values.count(first) == n:  # a batch's recorded time: one value, repeated
        if first is None:
            return pa.nulls(n, TIMESTAMP_US)
        one = np.array([first], dtype="datetime64[us]").view(np.int64)[0]
        arr = np.full(n, one, dtype=np.int64)
        return pa.Array.from_buffers(TIMESTAMP_US, n, [None, pa.py_buffer(arr)], null_count=0)
    dt = np.array(values, dtype="datetime64[us]")  # None -> NaT
    nat = np.isnat(dt)
    nulls = int(nat.sum())
    validity = pa.py_buffer(np.packbits(~nat, bitorder="little")) if nulls else None
    return pa.Array.from_buffers(
        TIMESTAMP_US, n, [validity, pa.py_buffer(dt.view(np.int64))], null_count=nulls
    )


BUILDERS: dict[pa.DataType, Any] = {
    STRING: string_array,
    INT32: int32_array,
    INT64: int64_array,
    FLOAT64: float64_array,
    BOOL: bool_array,
    TIMESTAMP_US: timestamp_array,
}


def array(values: Sequence[Any], typ: pa.DataType) -> pa.Array:
    """The Arrow array of ``values`` (a Python column) of type ``typ``."""
    return BUILDERS[typ](values)


def table(
    columns: dict[str, Sequence[Any]], types: dict[str, pa.DataType] | None = None
) -> pa.Table:
    """An Arrow table of Python columns (all ``string`` unless ``types`` says otherwise)."""
    types = types or {}
    names = list(columns)
    arrays = [array(columns[k], types.get(k, STRING)) for k in names]
    return pa.Table.from_arrays(arrays, names=names)
