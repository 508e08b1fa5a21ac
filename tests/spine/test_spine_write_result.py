"""The write path's shortcuts: the versions a batch reports, and DuckDB's journal-head hint.

Oracles: an independent SQL query on the stored records (``BatchResult.versions``), and
``verify()`` plus the stored journal itself (the chain after writes by another connection and
after a rolled-back batch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import Clock, glucose, ndjson, patient, query

from healthtwin.thread.fhir.ingest import convert_records
from healthtwin.thread.fhir.reader import read_text
from healthtwin.twin.model import Event, InboundRecord
from healthtwin.twin.store.duckdb_store import DuckDBStore


def _records(*resources: dict[str, Any]) -> list[InboundRecord]:
    acc, rej = convert_records(list(read_text("t.ndjson", ndjson(*resources), ndjson=True)))
    assert not rej
    return acc


def _current(store: Any, rids: list[str]) -> dict[str, tuple[int, Any, bool]]:
    """The independent oracle: current version, recorded time, deleted flag per rid."""
    quoted = ",".join("'" + r.replace("'", "''") + "'" for r in rids)
    rows = query(
        store,
        "SELECT rid, version, recorded_at, deleted FROM records "
        f"WHERE superseded_at IS NULL AND rid IN ({quoted})",
    )
    return {str(r[0]): (int(r[1]), r[2], bool(r[3])) for r in rows}


def test_batch_versions_match_the_stored_records(backend: Any) -> None:
    clock = Clock()
    store = backend.new(clock=clock)
    try:
        first = store.write_batch(
            _records(patient("p1"), glucose("o1", 100), glucose("o2", 110)), source="a"
        )
        clock.tick(minutes=1)
        # o1 unchanged, o2 updated, o3 created, o3 updated again in the same batch,
        # p1 unchanged; a delete of a never-seen rid changes nothing
        recs = _records(
            patient("p1"), glucose("o1", 100), glucose("o2", 111), glucose("o3", 90)
        ) + _records(glucose("o3", 91))
        gone = _records(glucose("o9", 1))[0]
        gone.deleted = True
        second = store.write_batch([*recs, gone], source="b")
        rids = sorted({r.rid for r in recs} | {gone.rid})
        oracle = _current(store, rids)
        assert second.versions == oracle
        assert oracle["Observation/o1"][1] == first.recorded_at  # unchanged: the old time
        assert oracle["Observation/o2"][0] == 2 and oracle["Observation/o3"][0] == 2
        assert gone.rid not in second.versions
        assert store.verify().ok
    finally:
        store.close()


def test_create_only_skips_existing_rids_inside_the_batch(backend: Any) -> None:
    """FHIR create (POST): a rid with a current version, deleted or not, is a conflict; the
    other records of the batch are written; the stored rows and the chain are the oracle."""
    store = backend.new()
    try:
        store.write_batch(_records(patient("p1"), glucose("o1", 100), glucose("o2", 1)))
        gone = _records(glucose("o2", 1))[0]
        gone.deleted = True
        store.write_batch([gone], source="delete o2")
        before = _current(store, ["Observation/o1", "Observation/o2"])
        recs = _records(glucose("o1", 120), glucose("o2", 130), glucose("o3", 140))
        res = store.write_batch(
            recs, source="api", create_only={"Observation/o1", "Observation/o2", "Observation/o3"}
        )
        assert res.conflicts == {"Observation/o1", "Observation/o2"}
        assert (res.created, res.updated, res.unchanged) == (1, 0, 0)
        after = _current(store, ["Observation/o1", "Observation/o2", "Observation/o3"])
        assert {k: after[k] for k in before} == before  # not a new version
        assert after["Observation/o3"][0] == 1
        assert res.versions == {"Observation/o3": after["Observation/o3"]}
        # without create_only the same record is an update
        upd = store.write_batch(_records(glucose("o1", 120)), source="api PUT")
        assert (upd.updated, upd.conflicts) == (1, set())
        rep = store.verify()
        assert rep.ok, rep.problems
    finally:
        store.close()


def test_head_hint_follows_writes_by_another_connection(tmp_path: Path) -> None:
    path = tmp_path / "two.duckdb"
    a = DuckDBStore(path)
    b = DuckDBStore(path)  # a second connection to the same database, in this process
    try:
        a.write_batch(_records(patient("p1"), glucose("o1", 100)), source="a")
        b.write_batch(_records(glucose("o2", 101)), source="b")
        b.append_events([Event("audit.access", {"n": 1}, {"source": "b"}, None, None)])
        res = a.write_batch(_records(glucose("o3", 102)), source="a")  # a's hint is stale
        assert res.versions == _current(a, ["Observation/o3"])
        b.write_batch(_records(glucose("o4", 103)), source="b")
        for st in (a, b):
            rep = st.verify()
            assert rep.ok, rep.problems
        seqs = [r[0] for r in query(a, "SELECT seq FROM journal ORDER BY seq")]
        assert seqs == list(range(1, len(seqs) + 1))
    finally:
        a.close()
        b.close()


def test_head_hint_survives_a_rolled_back_batch(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "rb.duckdb")
    try:
        store.write_batch(_records(patient("p1")), source="a")
        before = query(store, "SELECT count(*), max(seq) FROM journal")[0]
        bad = Event("audit.access", {"x": object()}, {"source": "t"}, None, None)
        # fails after the batch's journal rows are sealed (the payload is not JSON)
        with pytest.raises(TypeError):
            store.write_batch(_records(glucose("o1", 100)), [], [bad], source="bad")
        assert query(store, "SELECT count(*), max(seq) FROM journal")[0] == before
        store.write_batch(_records(glucose("o1", 100)), source="again")
        rep = store.verify()
        assert rep.ok, rep.problems
    finally:
        store.close()
