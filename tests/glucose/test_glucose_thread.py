"""The glucose twin's two-way thread on a real DuckDB store (no mocks of our components).

Oracles: fhir.resources R4B (validation), hashlib (the Provenance input hash, recomputed
from the stored originals), ``GlucoseEnKF.fit`` (the batch filter: the streaming updates must
give the same ensemble), ``simulate_uva_padova`` (the stream's noiseless CGM), UCUM factors.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from healthtwin.care.glucose import codes as C
from healthtwin.care.glucose import thread as T
from healthtwin.care.glucose.personalize import GlucoseEnKF
from healthtwin.care.glucose.stream import stream_patient, to_bundle, to_ndjson
from healthtwin.cli import main
from healthtwin.thread.fhir.ingest import ingest_paths
from healthtwin.twin.store.duckdb_store import DuckDBStore

START = datetime(2026, 1, 1, tzinfo=UTC)
PID = "vp-adult-001-s1"
TWIN = f"Patient/{PID}"


def _r4b(res: dict[str, Any]) -> None:
    from fhir.resources.R4B import get_fhir_model_class

    get_fhir_model_class(res["resourceType"]).model_validate(res)


def _write(path: Path, resources: Any) -> str:
    path.write_text("".join(to_ndjson(resources)))
    return str(path)


def _cgm(oid: str, minute: int, value: Any, unit: str, code: str = "99504-3") -> dict[str, Any]:
    return {
        "resourceType": "Observation", "id": oid, "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": TWIN},
        "effectiveDateTime": (START + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org",
                          "code": unit},
    }  # fmt: skip


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("thread")
    part_a = list(stream_patient("adult#001", START, 600, 1))
    part_b = list(stream_patient("adult#001", START, 900, 1, first_minute=600))
    bad = [
        _cgm("bad-nonnumeric", 302, "high", "mg/dL"),  # rejected by the spine
        _cgm("bad-unit", 303, 150.0, "mg per dL"),  # kept by the spine (flagged), skipped by us
    ]
    return {
        "dir": d, "a": part_a, "b": part_b,
        "a_path": _write(d / "a.ndjson", part_a + bad), "b_path": _write(d / "b.ndjson", part_b),
    }  # fmt: skip


def _ingest(store: DuckDBStore, path: str) -> Any:
    return ingest_paths(store, [path])


def _provenances(store: DuckDBStore) -> list[dict[str, Any]]:
    return list(store.iter_resources("Provenance"))


def _recompute_hash(store: DuckDBStore, entity_refs: list[str], prev: str | None) -> str:
    """The documented input hash, recomputed from the store's original texts with hashlib."""
    raw_by_rid = {}
    for raw in store.originals(TWIN):
        obj = json.loads(raw)
        raw_by_rid[f"{obj['resourceType']}/{obj['id']}"] = raw
    lines = ["healthtwin-glucose-thread/1", f"prev {prev or 'none'}"]
    lines += sorted(
        f"{r} {hashlib.sha256(raw_by_rid[r].encode()).hexdigest()}" for r in entity_refs
    )
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def test_two_way_loop_on_a_real_store(streams: dict[str, Any], tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "s.duckdb")
    rep_in = _ingest(store, streams["a_path"])
    # the spine quarantines the non-numeric CGM value; the rest is stored
    assert rep_in.quarantined == 1 and rep_in.created == len(streams["a"]) + 1
    q = store.quarantine()
    assert len(q) == 1 and "not a number" in q[0]["reason"] and "line" in q[0]["locator"]
    assert store.twin(TWIN)["sync_mode"] == "shadow"

    rep = T.sync(store, TWIN, write_back_enabled=True)
    assert rep.updated and rep.sync_mode == "twin" and store.twin(TWIN)["sync_mode"] == "twin"
    n_cgm = sum(1 for r in streams["a"] if r["id"].startswith(f"{PID}-cgm-"))
    assert rep.new["cgm"] == n_cgm and rep.new["basal"] == 1 and rep.new["weight"] == 1
    # the record with a non-UCUM unit is skipped with its reason, never silently
    assert [s.rid for s in rep.skipped] == ["Observation/bad-unit"]
    assert "mg per dL" in rep.skipped[0].reason
    # written back: forecasts, risk, care plan proposal, provenance; all valid R4B
    types = sorted(w.split("/")[0] for w in rep.written)
    assert types.count("Observation") == 3
    assert {"RiskAssessment", "CarePlan", "Provenance"} <= set(types)
    written = {}
    for rtype in set(types):
        for res in store.iter_resources(rtype):
            if f"{rtype}/{res['id']}" in rep.written:
                written[f"{rtype}/{res['id']}"] = res
    assert set(written) == set(rep.written)
    for res in written.values():
        _r4b(res)
        tags = {t["code"] for t in res["meta"]["tag"] if t["system"] == C.TAG_SYSTEM}
        assert "simulated" in tags
    forecasts = [r for r in written.values() if r["resourceType"] == "Observation"]
    assert all(r["status"] == "preliminary" and "predicted" in json.dumps(r["meta"])
               for r in forecasts)  # fmt: skip
    careplan = next(r for r in written.values() if r["resourceType"] == "CarePlan")
    assert careplan["intent"] == "proposal" and careplan["subject"]["reference"] == TWIN
    # written through the ingestion path: journaled record events, byte-exact originals
    hist = store.history(TWIN)
    created = {e["payload"]["rid"] for e in hist if e["kind"] == "record.created"}
    assert {w for w in rep.written if not w.startswith("Provenance")} <= created
    assert store.verify().ok
    # Provenance names the model and version and the hash of exactly the consumed inputs
    (prov,) = _provenances(store)
    assert {t["reference"] for t in prov["target"]} == set(rep.written) - {
        f"Provenance/{prov['id']}"
    }
    assert T.MODEL_NAME in prov["agent"][0]["who"]["display"]
    assert T.MODEL_VERSION in prov["agent"][0]["who"]["display"]
    refs = [e["what"]["reference"] for e in prov["entity"] if "reference" in e["what"]]
    assert "Observation/bad-unit" not in refs and f"Observation/{PID}-cgm-000000" in refs
    assert f"MedicationStatement/{PID}-basal" in refs
    h = prov["entity"][-1]["what"]["identifier"]["value"]
    assert h == f"sha-256;{_recompute_hash(store, refs, None)}" == f"sha-256;{rep.input_hash}"
    # journal: state and simulation run, labelled simulated, carrying the same hashes
    (state,) = store.events("twin.state")
    (sim,) = store.events("simulation.run")
    assert state["twin_id"] == sim["twin_id"] == TWIN
    assert state["payload"]["input_hash"] == sim["payload"]["inputs_sha256"] == rep.input_hash
    assert sim["payload"]["label"] == "simulated" and sim["payload"]["seed"] == 0
    assert sim["payload"]["spec_sha256"] == T.spec_hash(sim["payload"]["spec"])
    assert any(e["kind"] == "twin.sync_mode" and e["payload"]["to"] == "twin" for e in hist)

    # a predicted Observation is never read back as a measurement
    inputs = T.read_inputs(store, TWIN)
    assert inputs.twin_outputs == 3
    assert not {i.rid for i in inputs.items} & set(rep.written)
    assert sum(i.kind == "cgm" for i in inputs.items) == n_cgm

    # idempotent: no new data -> nothing new in the store
    before = store.stats()
    again = T.sync(store, TWIN, write_back_enabled=True)
    assert not again.updated and not again.written and store.stats() == before

    # new data -> one new update from where the twin stopped, chained to the previous state
    _ingest(store, streams["b_path"])
    rep2 = T.sync(store, TWIN, write_back_enabled=True)
    assert rep2.updated and rep2.minutes[0] == rep.minutes[1] and rep2.minutes[1] == 895
    assert rep2.new.get("cgm") == sum(1 for r in streams["b"] if "-cgm-" in r["id"])
    prov2 = next(p for p in _provenances(store) if p["id"] != prov["id"])
    refs2 = [e["what"]["reference"] for e in prov2["entity"] if "reference" in e["what"]]
    assert not set(refs2) & set(refs)  # only the new inputs
    h2 = prov2["entity"][-1]["what"]["identifier"]["value"]
    assert h2 == f"sha-256;{_recompute_hash(store, refs2, state['payload']['state_hash'])}"
    assert len(store.events("twin.state")) == 2 and store.verify().ok
    store.close()


def _grid(resources: list[dict[str, Any]], minutes: int) -> tuple[np.ndarray, ...]:
    """Minute-grid arrays built straight from the FHIR dicts (independent of thread.py)."""
    y = np.full((1, minutes), np.nan)
    basal = next(r for r in resources if r["resourceType"] == "MedicationStatement")
    rate = basal["dosage"][0]["doseAndRate"][0]["rateQuantity"]["value"] / 60.0
    ins = np.full((1, minutes), rate)
    cho = np.zeros((1, minutes))
    for r in resources:
        if r["resourceType"] not in ("Observation", "MedicationAdministration"):
            continue
        k = int((datetime.fromisoformat(r["effectiveDateTime"]) - START).total_seconds() // 60)
        if k >= minutes:
            continue
        if "-cgm-" in r["id"]:
            y[0, k] = r["valueQuantity"]["value"]
        elif "-carbs-" in r["id"]:
            cho[0, k] += r["valueQuantity"]["value"]
        elif "-bolus-" in r["id"]:
            ins[0, k] += r["dosage"]["dose"]["value"]
    return y, ins, cho, np.array([rate])


def test_streaming_updates_equal_the_batch_filter(streams: dict[str, Any], tmp_path: Path) -> None:
    """Two syncs (persisted state in between) == GlucoseEnKF.fit over the whole history."""
    store = DuckDBStore(tmp_path / "s.duckdb")
    _ingest(store, _write(tmp_path / "a.ndjson", streams["a"]))
    r1 = T.sync(store, TWIN, n_members=20, seed=3)
    _ingest(store, streams["b_path"])
    r2 = T.sync(store, TWIN, n_members=20, seed=3)
    assert not r1.written and not r2.written  # shadow: no write-back
    assert store.twin(TWIN)["sync_mode"] == "shadow"
    tw, payload = T.load_twin(store, TWIN)
    store.close()
    m_end = r2.minutes[1]
    y, ins, cho, ub = _grid(streams["a"] + streams["b"], m_end + 1)
    bw = next(r for r in streams["a"] if r["id"].endswith("-weight"))["valueQuantity"]["value"]
    ref = GlucoseEnKF(n_members=20, seed=3).fit(y, ins, cho, np.array([bw]), ub)
    assert tw.t_ == ref.t_ == m_end
    np.testing.assert_allclose(tw.ens_, ref.ens_, rtol=1e-12, atol=1e-12)
    assert tw.rng_.bit_generator.state == ref.rng_.bit_generator.state
    assert payload["prev_state_hash"] is not None


def test_stream_matches_the_simulator_and_validates() -> None:
    from healthtwin.models.physiology.uva_padova import UVAPadovaParams, simulate_uva_padova

    res = list(stream_patient("child#003", START, 360, 7, noise=False))
    for r in res:
        _r4b(r)
    _r4b(to_bundle(res, "transaction"))
    y, ins, cho, _ = _grid(res, 360)
    meals = cho.copy()
    sim = simulate_uva_padova(UVAPadovaParams.from_names(["child#003"]), meals, ins)
    k = np.flatnonzero(np.isfinite(y[0]))
    assert np.array_equal(k, np.arange(0, 360, 5))
    np.testing.assert_allclose(y[0, k], np.clip(sim.gsub[0, k], 39, 600), atol=0.051)
    # deterministic, and pieces add up to the whole
    noisy = list(stream_patient("child#003", START, 360, 7))
    assert noisy == list(stream_patient("child#003", START, 360, 7))
    tail = list(stream_patient("child#003", START, 360, 7, first_minute=200))
    assert tail == [r for r in noisy if r["id"].split("-")[-1].isdigit()
                    and int(r["id"].split("-")[-1]) >= 200]  # fmt: skip
    with pytest.raises(ValueError, match="timezone-aware"):
        next(stream_patient("adult#001", datetime(2026, 1, 1), 10))


def test_late_data_is_reported_and_not_assimilated(streams: dict[str, Any], tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "s.duckdb")
    _ingest(store, _write(tmp_path / "a.ndjson", streams["a"]))
    T.sync(store, TWIN)
    _ingest(
        store, _write(tmp_path / "late.ndjson", [_cgm("late-1", 100, 7.0, "mmol/L", "14745-4")])
    )
    before = store.stats()
    rep = T.sync(store, TWIN)
    assert not rep.updated and [s.rid for s in rep.late] == ["Observation/late-1"]
    assert "rebuild" in rep.late[0].reason and store.stats() == before
    rebuilt = T.sync(store, TWIN, rebuild=True)  # re-runs the whole history, late value included
    assert rebuilt.updated and rebuilt.new["cgm"] == rep.new.get("cgm", 0) + 121
    store.close()


@settings(max_examples=60, deadline=None)
@given(
    value=st.floats(1.0, 30.0, allow_nan=False),
    unit=st.sampled_from(["mmol/L", "mg/dL", "g/L", "umol/mL"]),
    code=st.sampled_from(sorted(C.GLUCOSE_CODES)),
)
def test_glucose_units_convert_to_mg_dl(value: float, unit: str, code: str) -> None:
    factor = {"mmol/L": 18.0156, "mg/dL": 1.0, "g/L": 100.0, "umol/mL": 18.0156}[unit]
    item = T.classify(_cgm("x", 0, value, unit, code), "Observation/x", "0" * 64)
    expect = value * factor
    if 20.0 <= expect <= 600.0:
        assert isinstance(item, T.InputItem) and item.kind in ("cgm", "bg")
        assert item.value == pytest.approx(expect, rel=1e-9)
    else:
        assert isinstance(item, T.SkippedInput) and "plausible range" in item.reason


def test_insulin_and_carbohydrate_records_are_read() -> None:
    subj = {"reference": TWIN}
    ins = {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "5856"}]}
    cases: list[tuple[dict[str, Any], Any]] = [
        ({"resourceType": "MedicationAdministration", "id": "a", "status": "completed",
          "medicationCodeableConcept": ins, "subject": subj,
          "effectiveDateTime": "2026-01-01T08:00:00Z",
          "dosage": {"dose": {"value": 4, "unit": "U", "system": C.UCUM, "code": "U"}}},
         ("bolus", 4.0)),
        ({"resourceType": "MedicationStatement", "id": "b", "status": "active",
          "medicationCodeableConcept": {"text": "Insulin aspart pump"}, "subject": subj,
          "effectivePeriod": {"start": "2026-01-01T00:00:00Z"},
          "dosage": [{"doseAndRate": [{"rateQuantity": {"value": 0.02, "system": C.UCUM,
                                                        "code": "[IU]/min"}}]}]},
         ("basal", 1.2)),
        ({"resourceType": "MedicationRequest", "id": "c", "status": "active", "intent": "order",
          "medicationCodeableConcept": ins, "subject": subj, "authoredOn": "2026-01-01",
          "dosageInstruction": [{"doseAndRate": [{"rateQuantity": {"value": 0.9, "system": C.UCUM,
                                                                   "code": "U/h"}}]}]},
         ("basal", 0.9)),
        ({"resourceType": "MedicationRequest", "id": "d", "status": "draft", "intent": "proposal",
          "medicationCodeableConcept": ins, "subject": subj},
         "not an active order"),
        ({"resourceType": "MedicationAdministration", "id": "e", "status": "completed",
          "medicationCodeableConcept": {"text": "metformin"}, "subject": subj,
          "effectiveDateTime": "2026-01-01T08:00:00Z"}, None),
        ({"resourceType": "Observation", "id": "f", "status": "final",
          "code": {"coding": [{"system": "http://loinc.org", "code": "9059-7"}]}, "subject": subj,
          "effectiveDateTime": "2026-01-01T08:00:00Z",
          "valueQuantity": {"value": 0.06, "system": C.UCUM, "code": "kg"}}, ("carbs", 60.0)),
        ({**_cgm("g", 0, 120.0, "mg/dL"), "status": "entered-in-error"}, "not a measurement"),
        ({**_cgm("h", 0, 120.0, "mg/dL"), "valueQuantity": {"value": 120, "system": "http://x",
                                                              "code": "mg/dL"}}, "not UCUM"),
    ]  # fmt: skip
    for obj, want in cases:
        _r4b(obj)
        got = T.classify(obj, f"{obj['resourceType']}/{obj['id']}", "0" * 64)
        if want is None:
            assert got is None
        elif isinstance(want, str):
            assert isinstance(got, T.SkippedInput) and want in got.reason, (obj["id"], got)
        else:
            assert isinstance(got, T.InputItem), (obj["id"], got)
            assert (got.kind, round(got.value, 9)) == want


def test_write_back_is_byte_exact_and_rejects_invalid(tmp_path: Path) -> None:
    from healthtwin.care.glucose import fhir as F

    store = DuckDBStore(tmp_path / "s.duckdb")
    model = F.ModelRef(T.MODEL_NAME, T.MODEL_VERSION, "ab" * 32)
    obs = F.forecast_observation("Patient/p1", START, 30, 120.0, 100.0, 140.0, 0.9, model)
    T.write_back(store, [obs], [], "test")
    (raw,) = list(store.originals(rtype="Observation"))
    assert raw == orjson.dumps(obs).decode()
    bad = {**obs, "id": "other", "issued": "yesterday"}
    with pytest.raises(T.WriteBackError, match="issued") as err:
        T.write_back(store, [bad], [], "test")
    del err  # the traceback holds the store's frames (duckdb objects alive at exit otherwise)
    assert len(list(store.originals(rtype="Observation"))) == 1
    store.close()


def test_cli_stream_sync_whatif_journal(tmp_path: Path) -> None:
    run = CliRunner().invoke
    s, nd = str(tmp_path / "s.duckdb"), str(tmp_path / "d.json")  # a transaction Bundle
    r = run(main, ["glucose", "stream", "--patient", "adult#002", "--minutes", "300", "--seed",
                   "2", "--format", "transaction", "-o", nd])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(Path(nd).read_text())["type"] == "transaction"
    assert run(main, ["ingest", nd, "--store", s, "--quiet"]).exit_code == 0
    r = run(main, ["glucose", "sync", "vp-adult-002-s2", "--store", s, "--write-back", "--format",
                   "json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["updated"] and out["sync_mode"] == "twin" and out["simulated"]
    assert len(out["forecast"]) == 3 and any(w.startswith("Provenance/") for w in out["written"])
    r = run(main, ["glucose", "sync", "vp-adult-002-s2", "--store", s, "--write-back"])
    assert r.exit_code == 0 and "nothing written" in r.output
    spec = tmp_path / "w.yaml"
    spec.write_text("name: lunch\nhours: 3\nmeals: [[30, 50]]\nboluses: [[30, auto]]\n")
    r = run(main, ["glucose", "whatif", "--store", s, "--twin", "vp-adult-002-s2", "--scenario",
                   str(spec), "--seed", "4"])  # fmt: skip
    assert r.exit_code == 0, r.output
    r = run(main, ["journal", "--store", s, "--kind", "simulation.run", "--format", "json"])
    runs = json.loads(r.output)
    assert [e["payload"]["spec"]["kind"] for e in runs] == ["glucose.sync", "glucose.whatif"]
    what = runs[-1]["payload"]
    assert what["seed"] == 4 and what["label"] == "simulated" and what["scenario"] == "lunch"
    state = json.loads(run(main, ["journal", "--store", s, "--kind", "twin.state", "--format",
                                  "json"]).output)[-1]["payload"]  # fmt: skip
    assert what["inputs_sha256"] == state["state_hash"]
    r = run(main, ["glucose", "sync", "nobody", "--store", s])
    assert r.exit_code != 0 and "no twin" in r.output


def _series(pid: str, values: dict[int, float]) -> list[dict[str, Any]]:
    out = []
    for k, v in values.items():
        r = _cgm(f"{pid}-g{k}", k, v, "mg/dL")
        r["subject"] = {"reference": f"Patient/{pid}"}
        out.append(r)
    return out


def test_alerts_and_proposals_are_written_back(tmp_path: Path) -> None:
    """Rising glucose -> hyper alert + correction proposal; sensor gap/failure; low -> hypo."""
    pid = "p-alerts"
    head = [r for r in stream_patient("adult#003", START, 5, 0, patient_id=pid)
            if r["resourceType"] != "Observation" or r["id"].endswith("-weight")]  # fmt: skip
    store = DuckDBStore(tmp_path / "s.duckdb")
    rising = {k: 120.0 + min(max(0, k - 60), 80) * 2.5 for k in range(0, 240, 5)}  # to 320 mg/dL
    _ingest(store, _write(tmp_path / "a.ndjson", head + _series(pid, rising)))
    rep = T.sync(store, pid, write_back_enabled=True, seed=1)
    kinds = {a.kind for a in rep.alerts}
    assert "hyper-predicted" in kinds and rep.forecast[1]["median_mg_dl"] > 180
    medreq = [w for w in rep.written if w.startswith("MedicationRequest/")]
    issues = [w for w in rep.written if w.startswith("DetectedIssue/")]
    assert len(medreq) == 1 and len(issues) == len(rep.alerts)
    # gap of 40 min, then a reading at the sensor's low limit, then a steady low
    low = {280: 120.0, 285: 39.0, **{k: 55.0 for k in range(290, 480, 5)}}
    _ingest(store, _write(tmp_path / "b.ndjson", _series(pid, low)))
    rep2 = T.sync(store, pid, write_back_enabled=True, seed=1)
    kinds2 = [a.kind for a in rep2.alerts]
    assert {"sensor-gap", "sensor-failure", "hypo-predicted"} <= set(kinds2)
    assert rep2.p_hypo_30 > 0.5 and not any(
        w.startswith("MedicationRequest/") for w in rep2.written
    )
    for rtype in ("DetectedIssue", "MedicationRequest", "RiskAssessment"):
        for res in store.iter_resources(rtype):
            _r4b(res)
            if rtype == "MedicationRequest":
                assert res["intent"] == "proposal" and res["status"] == "draft"
    risk = [r for r in store.iter_resources("RiskAssessment")
            if f"RiskAssessment/{r['id']}" in rep2.written]  # fmt: skip
    assert risk[0]["prediction"][0]["probabilityDecimal"] == pytest.approx(rep2.p_hypo_30, abs=1e-4)
    store.close()


def test_docs_two_way_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    doc = Path(__file__).resolve().parents[2] / "docs" / "glucose-twin.md"
    section = doc.read_text().split("## 10. Two-way thread", 1)[1]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)[:1]
    monkeypatch.chdir(tmp_path)
    ns: dict[str, Any] = {}
    exec(compile(code, str(doc), "exec"), ns)  # noqa: S102 - our own docs page
    assert ns["report"].updated and ns["again"].updated is False
