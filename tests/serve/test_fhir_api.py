"""FHIR endpoints: create through the ingestion path (quarantine, journal, byte-exact),
search, $export confined to the permitted patient, and SSE updates on a real server."""

from __future__ import annotations

import json
import time

import httpx
from serve_helpers import PAT_A, PAT_B, auth, live_server, on_store

from healthtwin.serve.app import create_app

OBS = (
    '{"resourceType": "Observation",  "id": "new-a-1", "status": "final",\n'
    ' "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]},\n'
    ' "subject": {"reference": "Patient/pat-a"}, "effectiveDateTime": "2024-02-01T08:00:00Z",\n'
    ' "valueQuantity": {"value": 5.5, "unit": "mmol/L", "system": "http://unitsofmeasure.org",'
    ' "code": "mmol/L"}}'
)
FHIR = {"Content-Type": "application/fhir+json"}


def test_create_keeps_the_original_byte_exact_and_journals(client, token, store) -> None:
    tok = token("patient/*.cruds", patient=PAT_A)
    r = client.post("/fhir/Observation", content=OBS, headers={**auth(tok), **FHIR})
    assert r.status_code == 201, r.text
    assert r.headers["ETag"] == 'W/"1"'
    assert r.headers["Location"].endswith("/fhir/Observation/new-a-1/_history/1")
    got = client.get("/fhir/Observation/new-a-1", headers=auth(tok))
    assert got.text == OBS  # byte-exact, odd spacing and newlines included
    # the state converted mmol/L to the canonical mg/dL (same normaliser as the CLI)
    st = client.get(f"/twins/{PAT_A}/state", headers=auth(tok)).json()
    g = next(v for v in st["values"] if v["code"] == "2339-0")
    assert g["source"] == "Observation/new-a-1/_history/1"
    assert abs(g["value_canonical"] - 5.5 * 18.0156) < 0.1
    # POST of an existing id is a conflict; PUT makes version 2
    assert (
        client.post("/fhir/Observation", content=OBS, headers={**auth(tok), **FHIR}).status_code
        == 409
    )
    v2 = OBS.replace("5.5", "6.1")
    r = client.put("/fhir/Observation/new-a-1", content=v2, headers={**auth(tok), **FHIR})
    assert r.status_code == 200 and r.headers["ETag"] == 'W/"2"'
    assert client.get("/fhir/Observation/new-a-1/_history/1", headers=auth(tok)).text == OBS
    kinds = [e["kind"] for e in on_store(client, store.history, PAT_A)]
    assert "record.created" in kinds and "record.updated" in kinds
    assert on_store(client, store.verify).ok


def test_bad_resource_goes_to_quarantine_like_the_cli(client, token, store) -> None:
    tok = token("user/*.cruds", role="clinician")
    bad = json.dumps(
        {
            "resourceType": "Observation",
            "id": "bad-1",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]},
            "subject": {"reference": "Patient/pat-a"},
        }
    )  # no status: R4 requires it
    r = client.post("/fhir/Observation", content=bad, headers={**auth(tok), **FHIR})
    assert r.status_code == 422
    oo = r.json()
    assert oo["resourceType"] == "OperationOutcome"
    assert (
        "status" in oo["issue"][0]["diagnostics"] and "quarantined" in oo["issue"][0]["diagnostics"]
    )
    q = on_store(client, store.quarantine)
    assert q[-1]["raw"] == bad and "status" in q[-1]["reason"]
    assert client.get("/fhir/Observation/bad-1", headers=auth(tok)).status_code == 404
    # wrong type in the URL, unsupported media type
    r = client.post("/fhir/Patient", content=OBS, headers={**auth(tok), **FHIR})
    assert r.status_code == 400
    r = client.post(
        "/fhir/Observation", content=OBS, headers={**auth(tok), "Content-Type": "text/plain"}
    )
    assert r.status_code == 415


def test_confined_token_cannot_write_into_another_compartment(client, token) -> None:
    tok = token("patient/*.cruds", patient=PAT_A)
    other = OBS.replace("Patient/pat-a", "Patient/pat-b").replace("new-a-1", "new-b-1")
    assert (
        client.post("/fhir/Observation", content=other, headers={**auth(tok), **FHIR}).status_code
        == 403
    )
    admin = token("user/*.rs", role="admin")
    assert client.get("/fhir/Observation/new-b-1", headers=auth(admin)).status_code == 404


def test_search_by_code_date_and_paging(client, token) -> None:
    tok = token("user/*.rs", role="clinician")
    r = client.get(
        "/fhir/Observation",
        params={
            "patient": "pat-a",
            "code": "http://loinc.org|2339-0",
            "date": ["ge2024-01-02", "le2024-01-03"],
        },
        headers=auth(tok),
    )
    ids = sorted(e["resource"]["id"] for e in r.json()["entry"])
    assert ids == ["obs-a-g1", "obs-a-g2"]
    seen, url = [], "/fhir/Observation?patient=pat-a&_count=2"
    while url:
        b = client.get(url, headers=auth(tok)).json()
        seen += [e["resource"]["id"] for e in b["entry"]]
        nxt = [lk["url"] for lk in b["link"] if lk["relation"] == "next"]
        url = nxt[0].replace("http://testserver", "") if nxt else None
    assert sorted(seen) == ["obs-a-g0", "obs-a-g1", "obs-a-g2", "obs-a-hr"]
    assert client.get("/fhir/Observation?nonsense=1", headers=auth(tok)).status_code == 400


def _export(client, tok: str, path: str = "/fhir/$export") -> dict[str, list[dict]]:
    r = client.get(path, headers={**auth(tok), "Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    status = r.headers["Content-Location"].replace("http://testserver", "")
    for _ in range(500):
        s = client.get(status, headers=auth(tok))
        if s.status_code == 200:
            break
        assert s.status_code == 202
        time.sleep(0.01)
    out: dict[str, list[dict]] = {}
    for f in s.json()["output"]:
        body = client.get(f["url"].replace("http://testserver", ""), headers=auth(tok))
        assert body.headers["content-type"].startswith("application/fhir+ndjson")
        rows = [json.loads(x) for x in body.text.splitlines()]
        assert len(rows) == f["count"]
        out[f["type"]] = rows
    return out


def test_export_contains_only_the_permitted_patient(client, token) -> None:
    tok = token("patient/*.rs", patient=PAT_A, sub="a")
    out = _export(client, tok)
    assert [p["id"] for p in out["Patient"]] == ["pat-a"]
    assert {o["subject"]["reference"] for o in out["Observation"]} == {PAT_A}
    assert "Organization" not in out  # not in A's compartment
    admin = token("system/*.rs", role="service", sub="svc")
    full = _export(client, admin)
    assert {p["id"] for p in full["Patient"]} >= {"pat-a", "pat-b"}
    # another principal cannot poll A's job
    r = client.get("/fhir/$export", headers={**auth(tok), "Prefer": "respond-async"})
    job = r.headers["Content-Location"].rsplit("/", 1)[1]
    assert client.get(f"/fhir/$export-status/{job}", headers=auth(admin)).status_code == 403


def test_capability_statement_and_openapi(client) -> None:
    cs = client.get("/fhir/metadata").json()
    assert cs["resourceType"] == "CapabilityStatement" and cs["fhirVersion"] == "4.0.1"
    from fhir.resources.R4B.capabilitystatement import CapabilityStatement

    CapabilityStatement.model_validate(cs)  # an independent R4 model accepts it
    spec = client.get("/openapi.json").json()
    assert "/twins/{prefix}/{id}/state" in spec["paths"]
    assert "Error" in spec["components"]["schemas"]


def test_sse_receives_an_update_after_an_ingest(settings, store, token) -> None:
    with live_server(create_app(settings, store=store)) as base:
        tok = token("patient/*.cruds", patient=PAT_A)
        got: list[tuple[str, dict]] = []
        with (
            httpx.Client(base_url=base, timeout=10) as c,
            c.stream(
                "GET", f"/twins/{PAT_A}/events", params={"code": "2339-0"}, headers=auth(tok)
            ) as resp,
        ):
            assert resp.status_code == 200
            lines = resp.iter_lines()
            event = None
            for line in lines:
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event:
                    got.append((event, json.loads(line[5:])))
                    if event == "ready":
                        low = OBS.replace("new-a-1", "sse-1").replace("5.5", "2.5")
                        r = httpx.post(
                            f"{base}/fhir/Observation", content=low, headers={**auth(tok), **FHIR}
                        )
                        assert r.status_code == 201
                        hr = OBS.replace("new-a-1", "sse-2").replace("2339-0", "8867-4")
                        httpx.post(
                            f"{base}/fhir/Observation", content=hr, headers={**auth(tok), **FHIR}
                        )
                    if event == "alert":
                        break
        kinds = [k for k, _ in got]
        assert kinds[:3] == ["ready", "record.changed", "alert"], kinds
        assert got[1][1]["rid"] == "Observation/sse-1"
        # 2.5 mmol/L x 18.0156 (mg/dL per mmol/L of glucose) = 45.0 mg/dL < 54: urgent low
        assert got[2][1]["level"] == "urgent-low"
        assert abs(got[2][1]["value"] - 2.5 * 180.156 / 10) < 0.01
        # the heart-rate observation was filtered out by code
        assert all(d.get("rid") != "Observation/sse-2" for _, d in got)


def test_sse_cross_patient_is_403(client, token) -> None:
    tok = token("patient/*.rs", patient=PAT_A)
    assert client.get(f"/twins/{PAT_B}/events", headers=auth(tok)).status_code == 403


def test_cached_state_follows_every_write(client, token) -> None:
    tok = token("patient/*.cruds", patient=PAT_A)
    svc = client.app.state.services
    first = client.get(f"/twins/{PAT_A}/state", headers=auth(tok)).json()
    again = client.get(f"/twins/{PAT_A}/state", headers=auth(tok)).json()
    assert first == again and svc.state_cache.hits >= 1
    newer = (
        OBS.replace("new-a-1", "later-1").replace("2024-02-01", "2025-06-01").replace("5.5", "7.0")
    )
    assert (
        client.post("/fhir/Observation", content=newer, headers={**auth(tok), **FHIR}).status_code
        == 201
    )
    after = client.get(f"/twins/{PAT_A}/state", headers=auth(tok)).json()
    g = next(v for v in after["values"] if v["code"] == "2339-0")
    assert g["source"] == "Observation/later-1/_history/1" and g["value"] == 7.0
    # the bitemporal view (as_of before the write) bypasses the cache and still sees the old value
    old = client.get(
        f"/twins/{PAT_A}/state",
        params={"as_of": g["recorded_at"].replace("Z", "")[:19] + "Z"},
        headers=auth(tok),
    )
    assert old.status_code == 200


def test_sse_sends_nothing_for_an_unchanged_resubmission(settings, store, token) -> None:
    """PUT of the same content again is reported unchanged and journaled as nothing, so no
    subscriber hears of it (as on PostgreSQL, where the feed follows the journal)."""
    tok = token("patient/*.cruds", patient=PAT_A)
    obs = OBS.replace("new-a-1", "same-1")
    sentinel = OBS.replace("new-a-1", "after-1")
    got: list[tuple[str, str | None]] = []
    with (
        live_server(create_app(settings, store=store)) as base,
        httpx.Client(base_url=base, timeout=10) as c,
        c.stream("GET", f"/twins/{PAT_A}/events", headers=auth(tok)) as resp,
    ):
        event = None
        for line in resp.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
                continue
            if not (line.startswith("data:") and event):
                continue
            rid = json.loads(line[5:]).get("rid")
            got.append((event, rid))
            if event == "ready":
                h = {**auth(tok), **FHIR}
                assert (
                    httpx.post(f"{base}/fhir/Observation", content=obs, headers=h).status_code
                    == 201
                )
                r = httpx.put(f"{base}/fhir/Observation/same-1", content=obs, headers=h)
                assert r.status_code == 200, r.text
                assert (
                    httpx.post(f"{base}/fhir/Observation", content=sentinel, headers=h).status_code
                    == 201
                )
            elif rid == "Observation/after-1":
                break
    changed = [rid for ev, rid in got if ev == "record.changed"]
    assert changed == ["Observation/same-1", "Observation/after-1"], got
