"""The server's batched current-state query equals ``Store.state`` (the oracle) for every twin,
including superseded versions, a code changed by an update and entered-in-error."""

from __future__ import annotations

import json

from healthtwin.serve import queries
from healthtwin.thread.fhir.ingest import convert_records
from healthtwin.thread.fhir.reader import read_text


def _write(store, objs) -> None:
    text = "\n".join(json.dumps(o) for o in objs)
    acc, rej = convert_records(list(read_text("t", text, ndjson=True)))
    assert not rej, rej
    store.write_batch(acc, source="t")


def _obs(oid, pid, code, value, when, status="final"):
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": status,
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when,
        "valueQuantity": {
            "value": value,
            "unit": "mg/dL",
            "system": "http://unitsofmeasure.org",
            "code": "mg/dL",
        },
    }


def test_current_states_equal_store_state(store) -> None:
    # an update that changes the code, a newer value, an entered-in-error latest value
    _write(store, [_obs("obs-a-g2", "pat-a", "2345-7", 150, "2024-01-03T08:00:00Z")])
    _write(store, [_obs("late-b", "pat-b", "2339-0", 300, "2024-06-01T08:00:00Z")])
    _write(
        store, [_obs("err-b", "pat-b", "8867-4", 999, "2025-01-01T00:00:00Z", "entered-in-error")]
    )
    twins = [t["twin_id"] for t in store.twins()]
    got = queries.current_states(store, twins)
    pre = queries.current_states(store, None, limit=10_000)
    assert got == pre
    checked = 0
    for tid in twins:
        t = store.twin(tid)
        if t["subject"] != tid:
            assert tid not in got
            continue
        assert got[tid] == store.state(tid), tid
        checked += 1
    assert checked >= 3
    a = {r["code"]: r["num"] for r in got["Patient/pat-a"]}
    assert a["2339-0"] == 110 and a["2345-7"] == 150  # obs-a-g2 moved to another code
    b = {r["code"]: r["num"] for r in got["Patient/pat-b"]}
    assert b["2339-0"] == 300 and "8867-4" not in b  # the latest heart rate is in error
