"""The journal: state rebuilt from any event sequence; any tampering detected."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from helpers import Clock, glucose, ndjson, patient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healthtwin.thread.fhir.ingest import convert_records
from healthtwin.thread.fhir.reader import read_text

CODES = ["2339-0", "8480-6", "8867-4"]
UNITS = {"2339-0": "mg/dL", "8480-6": "mm[Hg]", "8867-4": "/min"}

# One step: (observation slot, code index, value, effective day, status, ticks to wait)
steps = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.integers(0, 2),
        st.integers(40, 300),
        st.integers(0, 9),
        st.sampled_from(["final", "final", "amended", "entered-in-error"]),
        st.integers(1, 3),
    ),
    min_size=1,
    max_size=12,
)


def _oracle(history: list[dict], at: datetime | None, as_of: datetime | None) -> dict:
    """Reference fold over the event history: latest version known at as_of, then latest
    effective value per code at `at` (ties: later event)."""
    latest: dict[str, dict] = {}
    for ev in history:
        if as_of is None or ev["recorded"] <= as_of:
            latest[ev["oid"]] = ev
    best: dict[str, dict] = {}
    for ev in latest.values():
        if at is not None and ev["effective"] > at:
            continue
        cur = best.get(ev["code"])
        if cur is None or (ev["effective"], ev["seq"]) > (cur["effective"], cur["seq"]):
            best[ev["code"]] = ev
    return {c: e["value"] for c, e in best.items() if e["status"] != "entered-in-error"}


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(steps, st.integers(0, 12), st.integers(0, 40))
def test_any_event_sequence_rebuilds_the_same_state(backend, steps, at_day, as_of_tick) -> None:
    clock = Clock(datetime(2024, 1, 1))
    store = backend.new(clock=clock)  # a fresh, empty store per example
    store.write_batch(*convert_records(list(read_text("p", ndjson(patient())))))
    history: list[dict] = []
    seq = 0
    for slot, ci, value, day, status, wait in steps:
        clock.tick(minutes=wait)
        code = CODES[ci]
        when = datetime(2023, 6, 1) + timedelta(days=day)
        obs = glucose(f"o{slot}", value, UNITS[code], when.isoformat() + "Z", status, code=code)
        acc, rej = convert_records(list(read_text("s", ndjson(obs))))
        assert not rej
        res = store.write_batch(acc, rej)
        if res.created or res.updated:
            seq += 1
            history.append(
                {
                    "oid": f"o{slot}",
                    "code": code,
                    "value": float(value),
                    "effective": when,
                    "status": status,
                    "recorded": clock.now,
                    "seq": seq,
                }
            )
    at = datetime(2023, 6, 1) + timedelta(days=at_day)
    as_of = datetime(2024, 1, 1) + timedelta(minutes=as_of_tick)
    for a, k in [(None, None), (at, None), (None, as_of), (at, as_of)]:
        got = {
            r["code"]: r["num_canonical"]
            for r in store.state("p1", at=a, as_of=k)
            if r["code"] in CODES
        }
        assert got == _oracle(history, a, k), (a, k)
    assert store.verify().ok
    store.close()


def _store_with_data(backend) -> None:
    store = backend.open()
    text = ndjson(patient(), *[glucose(f"o{i}", 90 + i) for i in range(5)])
    store.write_batch(*convert_records(list(read_text("d.ndjson", text))))
    store.write_batch(*convert_records(list(read_text("e.ndjson", ndjson(glucose("o1", 150))))))
    assert store.verify().ok
    store.close()


# Edits an intruder could make with SQL; each runs unchanged on DuckDB and PostgreSQL
# (a reorder takes two statements because PostgreSQL's journal has a primary key on seq).
TAMPERING = {
    "edit payload": "UPDATE journal SET payload = replace(payload, 'Observation', 'Observatio') "
    "WHERE seq = 4",
    "edit time": "UPDATE journal SET recorded_at = recorded_at + INTERVAL '1 second' WHERE seq = 3",
    "delete event": "DELETE FROM journal WHERE seq = 3",
    "reorder events": "UPDATE journal SET seq = -seq WHERE seq IN (3, 4); "
    "UPDATE journal SET seq = CASE seq WHEN -3 THEN 4 WHEN -4 THEN 3 END WHERE seq IN (-3, -4)",
    "edit original": "UPDATE records SET raw = replace(raw, '92', '29') WHERE rid = "
    "'Observation/o2'",
    "delete record": "DELETE FROM records WHERE rid = 'Observation/o3'",
    # (flip the first hex digit: a fixed 'f' would change nothing for 1 hash in 16)
    "rewrite hash chain tail": "UPDATE journal SET hash = CASE WHEN substr(hash, 1, 1) = 'f' "
    "THEN 'e' ELSE 'f' END || substr(hash, 2) WHERE seq = (SELECT max(seq) - 1 FROM journal)",
}


@pytest.mark.parametrize("name", sorted(TAMPERING))
def test_verify_detects_tampering(backend, name: str) -> None:
    _store_with_data(backend)
    backend.sql(TAMPERING[name])
    store = backend.open(read_only=True)
    rep = store.verify()
    assert not rep.ok, name
    assert rep.problems


def test_journal_provenance_names_file_and_place(backend) -> None:
    store = backend.open()
    store.write_batch(
        *convert_records(list(read_text("feed.ndjson", ndjson(patient(), glucose("g", 101)))))
    )
    hist = store.history("p1")
    created = [h for h in hist if h["kind"] == "record.created"]
    assert {h["provenance"]["locator"] for h in created} == {"line 1", "line 2"}
    assert all(h["provenance"]["source"] == "feed.ndjson" for h in created)
    assert all(len(h["payload"]["sha256"]) == 64 for h in created)
    assert json.dumps(hist, default=str)


def test_twin_creation_and_sync_mode_are_journaled(backend) -> None:
    store = backend.open()
    store.write_batch(*convert_records(list(read_text("p", ndjson(patient())))))
    cid = store.create_twin("cohort", "HbA1c > 8 study", sync_mode="model")
    store.set_sync_mode("p1", "twin")
    listed = {t["twin_id"]: t for t in store.twins()}
    assert listed[cid]["kind"] == "cohort" and listed["Patient/p1"]["sync_mode"] == "twin"
    kinds = [h["kind"] for h in store.history("p1")]
    assert kinds.count("twin.sync_mode") == 1
    assert [h["payload"]["name"] for h in store.history(cid) if h["kind"] == "twin.created"] == [
        "HbA1c > 8 study"
    ]
    with pytest.raises(ValueError):
        store.set_sync_mode("p1", "mirror")
    assert store.verify().ok
