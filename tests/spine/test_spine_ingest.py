"""Ingestion end to end on real data (Synthea, official R4 examples) and on bad input."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from helpers import Clock, glucose, ndjson, patient, query

from healthtwin.thread.fhir.ingest import ingest_paths
from healthtwin.thread.fhir.reader import read_source, read_text
from healthtwin.twin.store.base import Store


def _originals(paths) -> dict[str, str]:
    """rid -> original text as it appears in the input files (last occurrence)."""
    out = {}
    for p in paths:
        src, text = read_source(str(p))
        for r in read_text(src, text, ndjson=str(p).endswith(".ndjson") or None):
            if r.obj is not None:
                out[f"{r.obj['resourceType']}/{r.obj['id']}"] = r.text
    return out


def _check_byte_exact(store: Store, originals: dict[str, str]) -> None:
    rows = dict(query(store, "SELECT rid, raw FROM records WHERE superseded_at IS NULL"))
    assert set(originals) <= set(rows)
    for rid, text in originals.items():
        assert rows[rid].encode() == text.encode(), rid


def test_fixture_bulk_ingest_stores_everything(fixtures, backend) -> None:
    store = backend.open()
    files = sorted((fixtures / "fhir/bulk").glob("*.ndjson"))
    rep = ingest_paths(store, [str(fixtures / "fhir/bulk")])
    n_lines = sum(1 for f in files for ln in f.read_text().splitlines() if ln.strip())
    assert rep.records == n_lines and rep.quarantined == 0
    _check_byte_exact(store, _originals(files))
    again = ingest_paths(store, [str(fixtures / "fhir/bulk")])
    assert again.unchanged == n_lines and again.created == again.updated == 0
    assert store.verify().ok


@pytest.mark.shared
def test_synthea_bundles_all_stored_none_quarantined_byte_exact(shared_data, backend) -> None:
    folder = shared_data / "fhir/synthea-bundles"
    files = sorted(folder.glob("*.json"))[:20]
    store = backend.open()
    rep = ingest_paths(store, [str(f) for f in files])
    entries = sum(len(json.loads(f.read_text())["entry"]) for f in files)
    assert rep.quarantined == 0
    assert rep.records == entries
    originals = _originals(files)
    assert rep.created == len(originals)  # repeated practitioners/organisations: unchanged
    _check_byte_exact(store, originals)
    st = store.stats()
    assert st["twins"]["patient"] == 20
    assert st["references"] == {"resolved": st["references"]["resolved"]}  # all resolved
    # every twin's observations landed with canonical units where the code has one
    bp = query(
        store,
        "SELECT count(*), count(*) FILTER (WHERE unit_canonical = 'mm[Hg]') FROM facts "
        "WHERE code = '8480-6'",
    )[0]
    assert bp[0] > 0 and bp[0] == bp[1]
    assert store.verify().ok


@pytest.mark.shared
def test_bulk_export_and_r4_examples(shared_data, backend) -> None:
    store = backend.open()
    bulk = sorted((shared_data / "fhir/synthea-bulk-10").glob("[A-Z]*.ndjson"))
    rep = ingest_paths(store, [str(f) for f in bulk])
    assert rep.quarantined == 0 and rep.created == 7160
    _check_byte_exact(store, _originals(bulk))
    # Bulk Data uses conditional references to practitioners: all resolved by identifier
    assert set(store.stats()["references"]) == {"resolved"}
    rep2 = ingest_paths(store, [str(shared_data / "fhir/r4-examples")])
    reasons = [q["reason"] for q in store.quarantine()]
    # the only R4 example we refuse is a conditional DELETE (Patient?identifier=...)
    assert rep2.quarantined == len(reasons) <= 2
    assert all("DELETE" in r or "reference" in r for r in reasons), reasons


def test_partly_bad_batch_keeps_good_records_and_says_where(tmp_path, backend) -> None:
    good = [patient(), glucose("g1", 95), glucose("g2", 5.5, "mmol/L")]
    lines = ndjson(*good).splitlines()
    bad = [
        '{"resourceType": "Observation", "id": "x1", "status": "final"',  # malformed JSON
        json.dumps({"resourceType": "Spaceship", "id": "s1"}),  # unknown type
        json.dumps({"resourceType": "Observation", "id": "x2", "status": "final"}),  # no code
        json.dumps({**glucose("x3", 90), "subject": {"reference": "urn:uuid:nowhere"}}),
        json.dumps({**glucose("x4", 90), "subject": {"reference": "not a reference"}}),
        json.dumps({**glucose("x5", 90), "effectiveDateTime": "yesterday"}),
    ]
    text = "\n".join([lines[0], bad[0], lines[1], *bad[1:], lines[2]]) + "\n"
    f = tmp_path / "mixed.ndjson"
    f.write_text(text)
    store = backend.open()
    rep = ingest_paths(store, [str(f)])
    assert rep.created == 3 and rep.quarantined == 6
    q = store.quarantine()
    assert [r["locator"] for r in q] == ["line 2", "line 4", "line 5", "line 6", "line 7", "line 8"]
    reasons = " | ".join(r["reason"] for r in q)
    for needle in [
        "malformed JSON",
        "unknown resourceType 'Spaceship'",
        "missing required element(s): code",
        "urn:uuid:nowhere",
        "not a valid FHIR reference",
        "yesterday",
    ]:
        assert needle in reasons
    assert all(r["source"] == str(f) for r in q)
    state = {r["code"]: r for r in store.state("p1")}
    assert state["2339-0"]["num_canonical"] == pytest.approx(5.5 * 180.156 / 10)


def test_amendment_as_of_and_entered_in_error(backend) -> None:
    clock = Clock(datetime(2024, 3, 1, 9))
    store = backend.open(clock=clock)
    ingest = lambda *r: store.write_batch(*_conv(ndjson(*r)))  # noqa: E731
    ingest(patient(), glucose("g", 180.0, when="2024-02-01T08:00:00Z"))
    t_first = clock.now
    clock.tick(days=2)
    ingest(glucose("g", 118.0, when="2024-02-01T08:00:00Z", status="amended"))
    now = {r["code"]: r for r in store.state("p1")}
    before = {r["code"]: r for r in store.state("p1", as_of=t_first)}
    assert now["2339-0"]["num_canonical"] == 118.0 and now["2339-0"]["status"] == "amended"
    assert before["2339-0"]["num_canonical"] == 180.0
    # as it was on a date before the observation: unknown
    assert "2339-0" not in {r["code"] for r in store.state("p1", at=datetime(2024, 1, 1))}
    clock.tick(days=1)
    ingest(glucose("g", 118.0, when="2024-02-01T08:00:00Z", status="entered-in-error"))
    assert "2339-0" not in {r["code"] for r in store.state("p1")}
    assert {r["code"]: r["num_canonical"] for r in store.state("p1", as_of=t_first)}[
        "2339-0"
    ] == 180.0
    versions = query(store, "SELECT count(*) FROM records WHERE rid = 'Observation/g'")[0][0]
    assert versions == 3  # corrections never delete


def test_conditional_reference_resolves_when_target_arrives(backend) -> None:
    store = backend.open()
    obs = {**glucose("g", 100), "subject": {"reference": "Patient?identifier=urn:mrn|12345"}}
    store.write_batch(*_conv(ndjson(obs)))
    assert store.stats()["references"].get("conditional") == 1
    p = {**patient("px"), "identifier": [{"system": "urn:mrn", "value": "12345"}]}
    store.write_batch(*_conv(ndjson(p)))
    assert store.stats()["references"] == {"resolved": 1}
    assert "2339-0" in {r["code"] for r in store.state("px")}


def test_transaction_bundle_urn_uuid_and_delete(backend) -> None:
    store = backend.open()
    text = json.dumps(
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": "urn:uuid:aaa",
                    "resource": patient("pp"),
                    "request": {"method": "POST", "url": "Patient"},
                },
                {
                    "fullUrl": "urn:uuid:bbb",
                    "resource": {**glucose("gg", 77), "subject": {"reference": "urn:uuid:aaa"}},
                    "request": {"method": "POST", "url": "Observation"},
                },
            ],
        },
        indent=2,
    )
    res = store.write_batch(*_conv(text))
    assert res.created == 2
    assert {r["code"] for r in store.state("pp")} >= {"2339-0"}
    delete = json.dumps(
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"request": {"method": "DELETE", "url": "Observation/gg"}}],
        }
    )
    res = store.write_batch(*_conv(delete))
    assert res.deleted == 1
    assert "2339-0" not in {r["code"] for r in store.state("pp")}


def test_strict_mode_rejects_what_fhir_resources_rejects() -> None:
    from healthtwin.thread.fhir.ingest import convert_records

    bad = {**patient("s1"), "gender": 12}  # wrong type: the fast path does not read it
    recs = list(read_text("x", ndjson(bad)))
    fast_ok, fast_rej = convert_records(recs)
    strict_ok, strict_rej = convert_records(recs, strict=True)
    assert len(fast_ok) == 1 and fast_ok[0].validation == "fast"
    assert not strict_ok and "strict R4B validation failed" in strict_rej[0].reason


def _conv(text: str):
    from healthtwin.thread.fhir.ingest import convert_records

    acc, rej = convert_records(list(read_text("t", text)))
    assert not rej, [r.reason for r in rej]
    return acc, rej


def test_gzipped_ndjson_is_read_transparently(tmp_path, backend) -> None:
    import gzip

    text = ndjson(patient("gz"), glucose("g1", 101, pid="gz"))
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "feed.ndjson.gz").write_bytes(gzip.compress(text.encode()))
    store = backend.open()
    rep = ingest_paths(store, [str(folder)])
    assert rep.created == 2 and rep.quarantined == 0
    assert sorted(store.originals("gz")) == sorted(text.splitlines())
