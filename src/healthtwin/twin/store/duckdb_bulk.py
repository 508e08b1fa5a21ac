"""Bulk writes to the DuckDB store: records prepared as Arrow columns ahead of the store.

``DuckDBStore.write_batch`` takes :class:`InboundRecord` objects and builds every row in the
store's thread. For a bulk ingest most of that work does not depend on the store at all: the
original text, the typed values, references and identifiers of each record are known before
anyone asks which version it becomes. :func:`prepare` turns records into :class:`Prepared`
chunks -- Arrow columns for all of that, plus one small tuple per record -- and can run in
another process (``thread.fhir.ingest.ReaderProcess``: Arrow tables pickle as buffers).
:func:`write` then does, in the store's transaction, only what needs the store: the current
versions, the hash chain (one event per record, sealed in order), and the state-dependent
columns (version, journal seq, recorded time, batch), added to the prepared columns with NumPy.

The result is the same store, row for row, as ``write_batch`` on the same records (tested:
tests/spine/test_bulk_write.py compares every table). ``write_batch`` stays the path for
small writes (the server) and for the PostgreSQL backend.
"""

from __future__ import annotations

import hashlib
import operator
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa

from healthtwin.twin.model import InboundRecord, Rejected, SyncMode
from healthtwin.twin.store import arrowcols as ac
from healthtwin.twin.store.base import BatchResult
from healthtwin.twin.store.common import (
    FACT_COLS,
    TABLE_COLUMNS,
    TWIN_KIND_OF_TYPE,
    naive,
    name_of,
)

if TYPE_CHECKING:
    from healthtwin.twin.store.duckdb_store import DuckDBStore

_FACT_TYPES = {
    "num": ac.FLOAT64,
    "num_canonical": ac.FLOAT64,
    "low": ac.FLOAT64,
    "high": ac.FLOAT64,
    "mean": ac.FLOAT64,
    "sd": ac.FLOAT64,
    "effective": ac.TIMESTAMP_US,
}
_fact_getter = operator.attrgetter(*FACT_COLS)
_EFF = FACT_COLS.index("effective")
_dumps, _SORT = orjson.dumps, orjson.OPT_SORT_KEYS


@dataclass
class Prepared:
    """One chunk of records, prepared for :func:`write`.

    ``meta``: per record (rid, rtype, sha256, deleted, subject, provenance JSON, twin name,
    facts, references, identifiers, conditional references). The tables hold the
    store-independent columns of the records, facts, refs and identifiers rows, in record
    order.
    """

    meta: list[tuple[Any, ...]]
    records: pa.Table  # rid, rtype, content_sha256, raw, subject, validation, source, locator
    facts: pa.Table  # rid, fkey, subject, *FACT_COLS
    refs: pa.Table  # rid, reference, target, status
    identifiers: pa.Table  # rid, system, value
    rejected: list[Rejected]

    def __len__(self) -> int:
        return len(self.meta)


def prepare(records: Sequence[InboundRecord], rejected: Sequence[Rejected] = ()) -> Prepared:
    """The store-independent part of ``write_batch``'s rows, as Arrow columns."""
    meta: list[tuple[Any, ...]] = []
    f_rows: list[tuple[Any, ...]] = []
    ref_rows: list[tuple[Any, ...]] = []
    id_rows: list[tuple[Any, ...]] = []
    twin_kind_of = TWIN_KIND_OF_TYPE
    # provenance JSON: canonical (sorted keys, compact) as store.canonical would write it;
    # the source and validation parts repeat, so their JSON is made once
    js: dict[str, str] = {}

    def j(text: str) -> str:
        out = js.get(text)
        if out is None:
            out = js[text] = _dumps(text).decode()
        return out

    f_append, r_append, i_append, m_append = (
        f_rows.append,
        ref_rows.append,
        id_rows.append,
        meta.append,
    )
    for rec in records:
        rid, rtype = rec.rid, rec.rtype
        prov = (
            f'{{"locator":{_dumps(rec.locator).decode()},"source":{j(rec.source)},'
            f'"validation":{j(rec.validation)}}}'
        )
        facts = rec.facts
        if facts:
            subj = rid if rtype == "Patient" else rec.subject
            for f in facts:
                v = _fact_getter(f)
                eff = v[_EFF]
                if eff is not None and eff.tzinfo is not None:
                    v = (*v[:_EFF], naive(eff), *v[_EFF + 1 :])
                f_append((rid, f.key, subj, *v))
        cond = 0
        for ref, target, status in rec.refs:
            r_append((rid, ref, target, status))
            if status == "conditional":
                cond += 1
        for system, ident in rec.identifiers:
            i_append((rid, system, ident))
        m_append(
            (
                rid,
                rtype,
                rec.sha256,
                rec.deleted,
                rec.subject,
                prov,
                name_of(rec.raw) if rtype in twin_kind_of and not rec.deleted else None,
                len(facts),
                len(rec.refs),
                len(rec.identifiers),
                cond,
                rec.source,
                rec.locator,
            )
        )
    rec_table = ac.table(
        {
            "rid": [m[0] for m in meta],
            "rtype": [m[1] for m in meta],
            "content_sha256": [m[2] for m in meta],
            "raw": [r.raw for r in records],
            "subject": [m[4] for m in meta],
            "validation": [r.validation for r in records],
            "source": [m[11] for m in meta],
            "locator": [m[12] for m in meta],
        }
    )
    return Prepared(
        meta,
        rec_table,
        _rows_table(f_rows, ["rid", "fkey", "subject", *FACT_COLS], _FACT_TYPES),
        _rows_table(ref_rows, ["rid", "reference", "target", "status"], {}),
        _rows_table(id_rows, ["rid", "system", "value"], {}),
        list(rejected),
    )


def _rows_table(
    rows: list[tuple[Any, ...]], names: list[str], types: dict[str, pa.DataType]
) -> pa.Table:
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    return ac.table(dict(zip(names, cols, strict=True)), types)


def _repeat(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return np.repeat(values, counts) if len(values) else values


def _np_array(arr: np.ndarray, typ: pa.DataType) -> pa.Array:
    return pa.Array.from_buffers(typ, len(arr), [None, pa.py_buffer(arr)], null_count=0)


def _const(value: Any, n: int, typ: pa.DataType) -> pa.Array:
    return ac.array([value] * n, typ)


_MAX_RUNS = 64  # more kept runs than this: one filter instead of slices


def _concat(tables: list[pa.Table], keep: np.ndarray | None) -> pa.Table:
    """The rows of ``tables`` (in order) where ``keep`` is true.

    Usually nearly every row is kept (a re-sent Practitioner here and there): the kept runs
    are then taken as zero-copy slices, where ``Table.filter`` would copy every original text
    (measured: 8 us per record on the Synthea Bundles, for 72 rows dropped of 17,399)."""
    t = pa.concat_tables(tables) if len(tables) != 1 else tables[0]
    if keep is None:
        return t
    edges = np.flatnonzero(np.diff(np.concatenate(([0], keep.view(np.int8), [0]))))
    starts, ends = edges[0::2], edges[1::2]  # the kept runs [start, end)
    if len(starts) > _MAX_RUNS:
        return t.filter(ac.bool_array(keep.tolist()))
    if not len(starts):
        return t.slice(0, 0)
    return pa.concat_tables([t.slice(a, b - a) for a, b in zip(starts, ends, strict=True)])


@contextmanager
def one_thread(store: DuckDBStore) -> Iterator[None]:
    """DuckDB on one thread for the duration: when a reader process keeps the other core
    busy, DuckDB's second worker thread only adds hand-over costs (measured: ~15 % less CPU
    per record written, docs/PERFORMANCE.md "spine")."""
    (before,) = store.con.execute("SELECT current_setting('threads')").fetchall()[0]
    store.con.execute("SET threads = 1")
    try:
        yield
    finally:
        store.con.execute(f"SET threads = {int(before)}")


def write(store: DuckDBStore, chunks: Sequence[Prepared], source: str) -> tuple[BatchResult, int]:
    """Write prepared chunks inside the caller's transaction: (result, last journal seq)."""
    from healthtwin.twin.store.duckdb_store import _Chain

    con = store.con
    last_seq, prev_hash, last_time = store._head()
    now = store._now(last_time)
    batch_id = uuid.uuid4().hex
    res = BatchResult(batch_id=batch_id, recorded_at=now)
    meta = [m for c in chunks for m in c.meta]
    rejected = [r for c in chunks for r in c.rejected]
    n = len(meta)

    found: list[tuple[Any, ...]] = []
    if n:
        rids = sorted({m[0] for m in meta})
        con.register("_batch_rids", ac.table({"rid": rids}))
        found = con.execute(
            "SELECT r.rid, r.version, r.content_sha256, r.deleted, r.recorded_at "
            "FROM records r JOIN _batch_rids b ON r.rid = b.rid WHERE r.superseded_at IS NULL"
        ).fetchall()
        con.unregister("_batch_rids")
    current, _ = res.take_current(found, (), ())
    versions = res.versions
    existing_twins: set[str] = set()
    twin_candidates = [m[0] for m in meta if m[1] in TWIN_KIND_OF_TYPE]
    if twin_candidates:
        con.register("_tw", ac.table({"t": twin_candidates}))
        existing_twins = {
            t
            for (t,) in con.execute("SELECT twin_id FROM twins JOIN _tw ON twin_id = t").fetchall()
        }
        con.unregister("_tw")

    twin_rows: list[tuple[Any, ...]] = []
    q_rows: list[tuple[Any, ...]] = []
    superseded: list[str] = []
    written: set[str] = set()
    dups: list[str] = []
    keep = np.ones(n, dtype=np.bool_)
    ver_arr = np.zeros(n, dtype=np.int32)
    seq_arr = np.zeros(n, dtype=np.int64)
    chain = _Chain(last_seq, prev_hash, now, batch_id, 2 * n + len(rejected) + 1)
    seal = chain.seal

    decide = res.decide
    twin_kind_of = TWIN_KIND_OF_TYPE
    conditional = 0
    for i, m in enumerate(meta):
        rid, rtype, sha, deleted, subject, prov, name = m[:7]
        cur = current.get(rid)
        decided = decide(cur, sha, deleted, rtype)
        if decided is None:
            keep[i] = False
            continue
        kind, version = decided
        if cur is not None:
            superseded.append(rid)
            if rid in written:
                dups.append(rid)
        written.add(rid)
        tk = twin_kind_of.get(rtype)
        twin_id = rid if tk is not None else subject
        # canonical JSON (sorted keys, compact) of {"rid", "sha256", "type", "version"}: the
        # hex digest and the type name need no escaping
        payload = (
            f'{{"rid":{_dumps(rid).decode()},"sha256":"{sha}","type":"{rtype}",'
            f'"version":{version}}}'
        )
        s = seal(kind, payload, prov, twin_id, subject)
        current[rid] = (version, sha, deleted)
        versions[rid] = (version, now, deleted)
        ver_arr[i] = version
        seq_arr[i] = s
        conditional += m[10]
        if tk is not None and rid not in existing_twins and not deleted:
            existing_twins.add(rid)
            ts = seal(
                "twin.created",
                _dumps(
                    {"twin_id": rid, "kind": tk.value, "sync_mode": SyncMode.SHADOW.value},
                    option=_SORT,
                ).decode(),
                _dumps({"source": m[11], "locator": m[12]}, option=_SORT).decode(),
                rid,
                rid,
            )
            twin_rows.append((rid, tk.value, rid, SyncMode.SHADOW.value, name, now, ts))
            res.twins_created += 1
    store._conditional_pending += conditional

    q_base = 0
    if rejected:
        (q_base,) = con.execute("SELECT coalesce(max(qid), 0) FROM quarantine").fetchall()[0]
    for i, rj in enumerate(rejected):
        sha = hashlib.sha256(rj.raw.encode()).hexdigest()
        s = seal(
            "record.rejected",
            _dumps({"reason": rj.reason, "sha256": sha}, option=_SORT).decode(),
            _dumps({"source": rj.source, "locator": rj.locator}, option=_SORT).decode(),
            None,
            None,
        )
        q_rows.append(
            (int(q_base) + i + 1, batch_id, now, rj.source, rj.locator, rj.line, rj.entry)
            + (rj.reason, rj.raw, s)
        )
    res.quarantined = len(rejected)
    seal(
        "batch.committed",
        _dumps(res.summary(source), option=_SORT).decode(),
        _dumps({"source": source}, option=_SORT).decode(),
        None,
        None,
    )
    seq = chain.seq
    res.events = seq - last_seq

    store._supersede(superseded, now)
    store._insert("journal", chain.rows, 11)
    if n:
        _insert_prepared(store, chunks, meta, keep, ver_arr, seq_arr, now, batch_id)
    store._insert("twins", twin_rows, 7)
    store._insert("quarantine", q_rows, 10)
    store._close_batch(res, source, now, dups, last_seq + 1, seq)
    # Conditional references can only resolve when new ones or new identifiers arrive.
    if conditional or any(m[9] for m, k in zip(meta, keep.tolist(), strict=True) if k):
        store._resolve_pending()
    return res, seq


def _insert_prepared(
    store: DuckDBStore,
    chunks: Sequence[Prepared],
    meta: list[tuple[Any, ...]],
    keep: np.ndarray,
    ver_arr: np.ndarray,
    seq_arr: np.ndarray,
    now: Any,
    batch_id: str,
) -> None:
    """Append the prepared rows of the records written (``keep``), with their versions and
    journal seqs, to records, facts, refs and identifiers."""
    con = store.con
    all_kept = bool(keep.all())
    kmask = None if all_kept else keep
    vers, seqs = ver_arr[keep], seq_arr[keep]
    deleted = np.fromiter((m[3] for m in meta), dtype=np.bool_, count=len(meta))[keep]
    nk = int(keep.sum())
    if nk:
        r = _concat([c.records for c in chunks], kmask)
        cols = r.columns
        table = pa.Table.from_arrays(
            [
                cols[0],
                _np_array(vers, ac.INT32),
                cols[1],
                cols[2],
                cols[3],
                cols[4],
                _np_array(seqs, ac.INT64),
                _const(now, nk, ac.TIMESTAMP_US),
                pa.nulls(nk, ac.TIMESTAMP_US),
                ac.bool_array(deleted.tolist()),
                cols[5],
                cols[6],
                cols[7],
                _const(batch_id, nk, ac.STRING),
            ],
            names=TABLE_COLUMNS["records"],
        )
        con.from_arrow(table).insert_into("records")
    for name, idx in (("facts", 7), ("refs", 8), ("identifiers", 9)):
        counts = np.fromiter((m[idx] for m in meta), dtype=np.int64, count=len(meta))
        if not counts.sum():
            continue
        per_row_keep = None if all_kept else _repeat(keep, counts)
        t = _concat([getattr(c, name) for c in chunks], per_row_keep)
        if not t.num_rows:
            continue
        kc = counts[keep]
        m = t.num_rows
        cols = t.columns
        if name == "facts":
            arrays = [
                cols[0],
                _np_array(_repeat(vers, kc).astype(np.int32), ac.INT32),
                *cols[1:],
                _const(now, m, ac.TIMESTAMP_US),
                pa.nulls(m, ac.TIMESTAMP_US),
                _np_array(_repeat(seqs, kc).astype(np.int64), ac.INT64),
            ]
        elif name == "refs":
            arrays = [cols[0], _np_array(_repeat(vers, kc).astype(np.int32), ac.INT32), *cols[1:]]
        else:
            arrays = list(cols)
        con.from_arrow(pa.Table.from_arrays(arrays, names=TABLE_COLUMNS[name])).insert_into(name)
