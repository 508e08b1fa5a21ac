"""The bulk path (duckdb_bulk: prepared Arrow chunks, optionally from a reader process) writes
the same store as ``write_batch`` on the same records: the oracle is the per-record path.

Every table is compared row for row, apart from what is random by design (event ids, batch
ids, and the hashes that cover them); the journals are compared event by event and both
chains must verify.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from helpers import Clock, glucose, ndjson, patient
from hypothesis import given
from hypothesis import strategies as st

from healthtwin.thread.fhir import ingest
from healthtwin.thread.fhir.paths import expand_paths
from healthtwin.twin.store.duckdb_store import DuckDBStore

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fhir"

_TABLES = {
    "records": "rid, version, rtype, content_sha256, raw, subject, seq, recorded_at, "
    "superseded_at, deleted, validation, source, locator",
    "facts": "*",
    "refs": "*",
    "identifiers": "*",
    "twins": "*",
    "quarantine": "qid, recorded_at, source, locator, line, entry, reason, raw, seq",
    "journal": "seq, recorded_at, kind, twin_id, subject, payload, provenance",
    "batches": "source, recorded_at, created, updated, deleted, unchanged, quarantined, "
    "first_seq, last_seq",
}


def _dump(store: DuckDBStore) -> dict[str, list[tuple[object, ...]]]:
    out = {}
    for table, cols in _TABLES.items():
        rows = store.con.execute(f"SELECT {cols} FROM {table}").fetchall()
        out[table] = sorted(rows, key=repr)
    return out


def _inputs(tmp_path: Path) -> list[list[str]]:
    """Three ingests: new data (with broken records), then updates, duplicates within one
    batch, an unchanged resource and a deletion, then the same again (all unchanged)."""
    first = tmp_path / "first.ndjson"
    first.write_text(
        ndjson(patient("p1"), glucose("g1", 100), glucose("g2", 5.5, unit="mmol/L"))
        + "{not json\n"
        + json.dumps({"resourceType": "Observation", "id": "bad"})
        + "\n"
    )
    second = tmp_path / "second.ndjson"
    second.write_text(
        ndjson(
            patient("p1", family="Roe"),  # updated
            glucose("g1", 100),  # unchanged
            glucose("g3", 120),
            glucose("g3", 121),  # two versions in one batch
        )
    )
    delete = tmp_path / "delete.json"
    delete.write_text(
        json.dumps(
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [{"request": {"method": "DELETE", "url": "Observation/g2"}}],
            }
        )
    )
    bulk = [str(p) for p in sorted((FIXTURES / "bulk").glob("*.ndjson"))]
    r4 = [str(p) for p in sorted((FIXTURES / "r4").glob("*.json"))]
    return [[str(first), *bulk, *r4], [str(second), str(delete)], [str(second), *bulk]]


class _PerRecord(DuckDBStore):
    """The DuckDB store without the bulk path: ``ingest_paths`` then uses write_batch."""

    write_prepared = None  # type: ignore[assignment]


def test_bulk_path_writes_what_write_batch_writes(tmp_path: Path) -> None:
    oracle = _PerRecord(tmp_path / "oracle.duckdb", clock=Clock())
    assert not callable(getattr(oracle, "write_prepared", None))
    oracle.close()
    stores = {}
    for mode in ("per-record", "bulk", "reader-1", "reader-3"):
        store = (
            _PerRecord(tmp_path / f"{mode}.duckdb", clock=Clock())
            if mode == "per-record"
            else DuckDBStore(tmp_path / f"{mode}.duckdb", clock=Clock())
        )
        for paths in _inputs(tmp_path):
            store._clock.tick(minutes=1)  # type: ignore[attr-defined]
            files = expand_paths(paths)
            if mode.startswith("reader-"):
                workers = int(mode.split("-")[1])
                with ingest.ReaderProcess(files, batch_size=3, workers=workers) as reader:
                    ingest.ingest_paths(store, files, batch_size=3, reader=reader)
            else:
                ingest.ingest_paths(store, files, batch_size=3)
        assert store.verify().ok, mode
        stores[mode] = _dump(store)
        store.close()
    want = stores["per-record"]
    assert want["records"] and want["facts"] and want["quarantine"] and want["refs"]
    assert any(r[9] for r in want["records"]), "a deletion is among the cases"
    assert any(r[1] == 3 for r in want["records"]), "a third version is among the cases"
    for mode in ("bulk", "reader-1", "reader-3"):
        for table in _TABLES:
            assert stores[mode][table] == want[table], (mode, table)


def test_reader_process_failure_is_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception in the reader process is raised in the parent with its traceback."""

    def boom(*a: object, **kw: object) -> None:
        raise RuntimeError("boom in the reader")

    monkeypatch.setattr(ingest, "_convert_input", boom)  # inherited by the forked child
    store = DuckDBStore(tmp_path / "s.duckdb")
    files = expand_paths([str(FIXTURES / "bulk")])
    with ingest.ReaderProcess(files) as reader, pytest.raises(RuntimeError, match="boom"):
        ingest.ingest_paths(store, files, reader=reader)
    assert store.stats()["versions"] == 0


def test_reader_process_killed_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A child that dies mid-way (here: SIGKILLs itself at its third chunk) is an error in the
    parent, never a silently short ingest."""
    import os
    import signal

    from healthtwin.thread.fhir import readers

    big = tmp_path / "big.ndjson"
    big.write_text(ndjson(patient("p1"), *(glucose(f"g{i}", 100 + i % 50) for i in range(4000))))
    sent = [0]
    send = readers._send_chunk

    def dies_at_third(*a: object) -> None:
        sent[0] += 1
        if sent[0] == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        send(*a)  # type: ignore[arg-type]

    monkeypatch.setattr(readers, "_send_chunk", dies_at_third)  # inherited by the fork
    store = DuckDBStore(tmp_path / "s.duckdb")
    files = [str(big)]
    with ingest.ReaderProcess(files, workers=1) as reader:
        with pytest.raises(RuntimeError, match="ended unexpectedly"):
            ingest.ingest_paths(store, files, reader=reader)
        assert reader._workers[0].proc.exitcode == -signal.SIGKILL
    assert store.stats()["versions"] == 0  # one 5,000-record batch: nothing half-written


def test_cli_readers_option(tmp_path: Path) -> None:
    """`healthtwin ingest --readers 2` (reader processes) reports and stores what `--readers 0`
    does."""
    import subprocess
    import sys

    out = {}
    for n in (0, 2):
        store = tmp_path / f"r{n}.duckdb"
        cmd = [sys.executable, "-m", "healthtwin", "ingest", str(FIXTURES / "bulk")]
        cmd += [str(FIXTURES / "r4"), "--store", str(store), "--readers", str(n)]
        done = subprocess.run([*cmd, "--format", "json"], capture_output=True, text=True)
        assert done.returncode in (0, 1), done.stderr  # 1: some records quarantined
        rep = json.loads(done.stdout)
        stats = subprocess.run(
            [sys.executable, "-m", "healthtwin", "stats", "--store", str(store)]
            + ["--format", "json"],
            capture_output=True,
            text=True,
            check=True,
        )
        out[n] = ({k: rep[k] for k in ("records", "created", "quarantined")}, stats.stdout)
    assert out[0] == out[2]
    assert out[0][0]["created"] > 100


@given(
    st.lists(st.lists(st.text(max_size=3), max_size=12), min_size=1, max_size=4),
    st.data(),
)
def test_kept_rows_are_the_filtered_rows(parts: list[list[str]], data: st.DataObject) -> None:
    """``_concat`` (zero-copy slices of the kept runs, or a filter) against a list filter."""
    from healthtwin.twin.store import arrowcols
    from healthtwin.twin.store.duckdb_bulk import _concat

    rows = [v for p in parts for v in p]
    keep = data.draw(st.lists(st.booleans(), min_size=len(rows), max_size=len(rows)))
    tables = [pa.Table.from_arrays([arrowcols.string_array(p)], names=["a"]) for p in parts]
    from unittest import mock

    from healthtwin.twin.store import duckdb_bulk

    limit = data.draw(st.sampled_from([duckdb_bulk._MAX_RUNS, 1]))  # 1: the filter path
    with mock.patch.object(duckdb_bulk, "_MAX_RUNS", limit):
        got = _concat(tables, np.array(keep, dtype=np.bool_)).column("a").to_pylist()
    assert got == [v for v, k in zip(rows, keep, strict=True) if k]


def test_reader_processes_on_every_backend(backend: Any) -> None:
    """Reader processes feed both backends (prepared chunks for DuckDB, records for
    PostgreSQL) and the store ends as the serial ingest leaves it."""
    files = expand_paths([str(FIXTURES / "bulk"), str(FIXTURES / "r4")])
    serial = backend.new()
    want = ingest.ingest_paths(serial, files)
    want_stats = serial.stats()
    serial.close()
    store = backend.new()
    with ingest.ReaderProcess(files, prepare=backend.name == "duckdb", workers=2) as reader:
        got = ingest.ingest_paths(store, files, reader=reader)
    assert (got.created, got.quarantined, got.records) == (
        want.created,
        want.quarantined,
        want.records,
    )
    assert store.stats() == want_stats
    assert store.verify().ok
    store.close()


def test_table_columns_are_the_duckdb_tables(tmp_path: Path) -> None:
    """``TABLE_COLUMNS`` (PostgreSQL's COPY and the bulk inserts, which insert by position)
    lists each DuckDB table's columns in table order."""
    from healthtwin.twin.store.common import TABLE_COLUMNS

    store = DuckDBStore(tmp_path / "c.duckdb")
    for table, cols in TABLE_COLUMNS.items():
        got = [r[0] for r in store.con.execute(f"DESCRIBE {table}").fetchall()]
        assert got == cols, table
    store.close()
