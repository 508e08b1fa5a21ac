"""The CLI as a user runs it (a real subprocess, a real DuckDB file or PostgreSQL database)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from helpers import glucose, ndjson, patient

EXE = [sys.executable, "-m", "healthtwin"]


def ht(*args: str, store: Path | str, input: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HEALTHTWIN_STORE": str(store)}
    return subprocess.run(
        [*EXE, *args], capture_output=True, text=True, input=input, env=env, timeout=120
    )


def test_ingest_state_as_of_verify_export_quarantine(tmp_path, backend) -> None:
    store = backend.location
    first = tmp_path / "first.ndjson"
    first.write_text(ndjson(patient(), glucose("g", 200, when="2024-01-02T07:00:00Z")))
    r = ht("ingest", str(first), "--format", "json", store=store)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["created"] == 2
    time.sleep(0.05)
    cutoff = ht("history", "p1", "--format", "json", store=store)
    t_known = json.loads(cutoff.stdout)[-1]["recorded_at"]
    time.sleep(0.05)
    # an amendment and a broken record arrive from stdin
    amended = ndjson(glucose("g", 112, when="2024-01-02T07:00:00Z", status="amended"))
    r = ht("ingest", "-", "--format", "json", store=store, input=amended + "{oops\n")
    assert r.returncode == 1 and "1 record(s) quarantined" in r.stderr
    out = json.loads(r.stdout)
    assert out["updated"] == 1 and out["quarantined"] == 1
    q = json.loads(ht("quarantine", "--format", "json", store=store).stdout)
    assert q[0]["source"] == "<stdin>" and q[0]["locator"] == "line 2"
    now = json.loads(ht("state", "p1", "--format", "json", store=store).stdout)
    then = json.loads(ht("state", "p1", "--as-of", t_known, "--format", "json", store=store).stdout)
    val = {r["code"]: r["num_canonical"] for r in now}
    val_then = {r["code"]: r["num_canonical"] for r in then}
    assert val["2339-0"] == 112 and val_then["2339-0"] == 200
    table = ht("state", "p1", store=store)
    assert table.returncode == 0 and "mg/dL" in table.stdout
    # export re-emits the originals byte for byte
    exp = ht("export", "p1", store=store)
    assert exp.returncode == 0
    lines = exp.stdout.splitlines()
    assert amended.strip() in lines and ndjson(patient()).strip() in lines
    assert ht("verify", store=store).returncode == 0
    for cmd in (["stats"], ["twins", "list"], ["twin", "show", "p1"], ["history", "p1"]):
        res = ht(*cmd, store=store)
        assert res.returncode == 0, (cmd, res.stderr)
    # an edited journal row is caught
    backend.sql("UPDATE journal SET payload = payload || ' ' WHERE seq = 2")
    bad = ht("verify", store=store)
    assert bad.returncode == 1 and "altered" in bad.stderr


def test_clear_errors(tmp_path) -> None:
    store = tmp_path / "e.duckdb"
    r = ht("ingest", str(tmp_path / "missing.json"), store=store)
    assert r.returncode != 0 and "input not found" in r.stderr
    ht("ingest", "-", store=store, input=ndjson(patient()))
    r = ht("state", "nobody", store=store)
    assert r.returncode != 0 and "no twin with id 'nobody'" in r.stderr
    r = ht("state", "p1", "--at", "last tuesday", store=store)
    assert r.returncode != 0 and "ISO 8601" in r.stderr


def test_export_json_seq_is_byte_exact_for_pretty_bundles(tmp_path) -> None:
    store = tmp_path / "b.duckdb"
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:1", "resource": patient("pb")},
            {"fullUrl": "urn:uuid:2", "resource": glucose("gb", 99, pid="pb")},
        ],
    }
    f = tmp_path / "b.json"
    text = json.dumps(bundle, indent=3)
    f.write_text(text)
    assert ht("ingest", str(f), store=store).returncode == 0
    seq = ht("export", "pb", "--format", "json-seq", store=store)
    records = [r.rstrip("\n") for r in seq.stdout.split("\x1e") if r]
    assert len(records) == 2 and all(r in text for r in records)
    nd = ht("export", "pb", store=store)
    assert "line breaks removed" in nd.stderr
    assert [json.loads(x) for x in nd.stdout.splitlines()] == [json.loads(r) for r in records]


def test_journal_lists_events_by_kind(tmp_path) -> None:
    store = tmp_path / "j.duckdb"
    ht("ingest", "-", store=store, input=ndjson(patient(), glucose("g", 90)) + "[]\n")
    out = json.loads(
        ht("journal", "--kind", "record.rejected", "--format", "json", store=store).stdout
    )
    assert len(out) == 1 and "not an object" in out[0]["payload"]["reason"]
    allev = json.loads(ht("journal", "--format", "json", store=store).stdout)
    assert [e["seq"] for e in allev] == sorted(e["seq"] for e in allev)
    assert {"record.created", "twin.created", "batch.committed"} <= {e["kind"] for e in allev}
