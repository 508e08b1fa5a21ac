"""The gateway's group commit on a real DuckDB store: which writes share a transaction.

Group membership is read from the store's own answer (each write's ``batch_id``) and the
``batches`` table, never from timings.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from healthtwin.serve.gateway import StoreGateway, Written
from healthtwin.thread.fhir.ingest import convert_records
from healthtwin.thread.fhir.reader import read_text
from healthtwin.twin.store.duckdb_store import DuckDBStore


def _obs(i: int) -> Any:
    text = json.dumps(
        {
            "resourceType": "Observation",
            "id": f"gw-{i}",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": "Patient/gw-p"},
            "valueQuantity": {
                "value": 60 + i,
                "unit": "/min",
                "system": "http://unitsofmeasure.org",
                "code": "/min",
            },
        }
    )
    acc, rej = convert_records(list(read_text(f"test {i}", text, ndjson=False)))
    assert not rej
    return acc


@pytest.fixture
def store(tmp_path: Path) -> Any:
    st = DuckDBStore(tmp_path / "gw.duckdb")
    yield st
    st.close()


async def _load(gw: StoreGateway, first: int, n: int) -> list[Written]:
    """``n`` concurrent writes, all queued before the store thread takes a group."""
    return list(await asyncio.gather(*(gw.write(_obs(first + i)) for i in range(n))))


def _run(coro: Any) -> Any:
    """Run a coroutine on a fresh event loop in a thread of its own (another test in this
    process, e.g. Playwright's sync API, may have left a loop marked running in this one)."""
    with ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, coro).result()


def _batches(store: DuckDBStore) -> int:
    (n,) = store.con.execute("SELECT count(*) FROM batches").fetchall()[0]
    return int(n)


def test_a_lone_write_after_a_big_group_waits_for_its_siblings(store: DuckDBStore) -> None:
    """The closed-loop rhythm (a group of 1, then of all others) is broken: after a group of
    8, one write waits (gather_s is long here) until 8 are queued, and all 8 commit as one."""

    async def run() -> tuple[list[Written], list[Written]]:
        gw = StoreGateway(store, gather_s=60.0)
        try:
            first = await _load(gw, 0, 8)
            lone = asyncio.ensure_future(gw.write(_obs(100)))
            for _ in range(20):  # let the store thread take a group, were it to take one
                await asyncio.sleep(0.005)
            assert not lone.done(), "a lone write after a group of 8 did not wait"
            rest = await _load(gw, 101, 7)
            return first, [await lone, *rest]
        finally:
            await gw.aclose()

    first, second = _run(run())
    assert len({w.batch.batch_id for w in first}) == 1
    assert len({w.batch.batch_id for w in second}) == 1
    assert second[0].batch.created == 8
    assert _batches(store) == 2
    (n,) = store.con.execute(
        "SELECT count(*) FROM records WHERE rid LIKE 'Observation/gw-%'"
    ).fetchall()[0]
    assert n == 16


def test_the_wait_is_bounded(store: DuckDBStore) -> None:
    """No siblings come: the lone write commits alone once ``gather_s`` has passed."""

    async def run() -> Written:
        gw = StoreGateway(store, gather_s=0.05)
        try:
            await _load(gw, 0, 8)
            return await asyncio.wait_for(gw.write(_obs(100)), 30)
        finally:
            await gw.aclose()

    w = _run(run())
    assert w.batch.created == 1
    assert _batches(store) == 2


@pytest.mark.parametrize("gather_s", [60.0, 0.0])
def test_no_wait_without_load_or_when_off(store: DuckDBStore, gather_s: float) -> None:
    """After small groups (< 4 writes), or with ``gather_s=0``, a write never waits: with a
    60 s window it would not finish within the 30 s given here."""

    async def run() -> list[Written]:
        gw = StoreGateway(store, gather_s=gather_s)
        try:
            out = [await asyncio.wait_for(gw.write(_obs(i)), 30) for i in range(3)]
            if not gather_s:  # off: not even after a big group
                await _load(gw, 10, 8)
                out.append(await asyncio.wait_for(gw.write(_obs(100)), 30))
            return out
        finally:
            await gw.aclose()

    out = _run(run())
    assert all(w.batch.created == 1 for w in out)
    assert _batches(store) == (3 if gather_s else 5)


def test_closing_while_a_write_gathers_writes_no_empty_batch(store: DuckDBStore) -> None:
    """``aclose`` while the store task waits for siblings: the pending write commits once,
    and the closing drain, finding nothing left, writes no empty batch of its own."""

    async def run() -> Written:
        gw = StoreGateway(store, gather_s=0.2)
        await _load(gw, 0, 8)
        lone = asyncio.ensure_future(gw.write(_obs(100)))
        for _ in range(5):  # the store task is now gathering (waiting for 8)
            await asyncio.sleep(0)
        assert not lone.done()
        await gw.aclose()
        return await lone

    w = _run(run())
    assert w.batch.created == 1
    (empty,) = store.con.execute(
        "SELECT count(*) FROM batches WHERE created + updated + deleted + unchanged "
        "+ quarantined = 0"
    ).fetchall()[0]
    assert empty == 0
    assert _batches(store) == 2
