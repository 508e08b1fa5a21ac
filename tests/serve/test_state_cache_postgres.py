"""On PostgreSQL the server's current-state cache follows commits made by OTHER processes
(another server worker, a CLI ingest) through LISTEN/NOTIFY: a state read after such a commit
shows it once the notification has arrived, never the cached old value for long."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient
from serve_helpers import SECRET, _obs, auth, live_server, write_fixture_ndjson

from healthtwin.serve.app import create_app
from healthtwin.serve.auth import mint_token
from healthtwin.serve.settings import Settings
from healthtwin.thread.fhir.ingest import convert_records, ingest_paths
from healthtwin.thread.fhir.reader import read_text
from healthtwin.twin.store import open_store


def _glucose(client: TestClient, tok: str) -> float:
    r = client.get("/twins/Patient/pat-a/state", headers=auth(tok))
    assert r.status_code == 200, r.text
    return next(v["value"] for v in r.json()["values"] if v["code"] == "2339-0")


def _seeded(pg_cluster: Any, tmp_path: Path, name: str) -> tuple[str, Settings]:
    """A fresh schema holding the two-patient fixture, and server settings on it."""
    url = f"{pg_cluster.url}?schema={name}_{uuid.uuid4().hex[:8]}"
    write_fixture_ndjson(tmp_path)
    with open_store(url) as st:
        ingest_paths(st, [str(tmp_path / "two-patients.ndjson")])
    return url, Settings(store=url, jwt_secret=SECRET, audit_flush_s=0.01)


def _write_elsewhere(url: str, oid: str, value: float, when: str) -> None:
    """A glucose Observation of pat-a written by another "process": its own connection, not
    the server's gateway (as another worker or a CLI ingest would write)."""
    obs = _obs(oid, "pat-a", "2339-0", value, "mg/dL", when)
    acc, rej = convert_records(list(read_text("other", json.dumps(obs), ndjson=True)))
    assert not rej
    with open_store(url) as other:
        other.write_batch(acc, source="other process")


def _wait_glucose(client: TestClient, tok: str, value: float) -> float:
    """The glucose the server reports once it shows ``value`` (or after 10 s)."""
    deadline = time.monotonic() + 10.0
    seen = _glucose(client, tok)
    while seen != value and time.monotonic() < deadline:
        time.sleep(0.05)
        seen = _glucose(client, tok)
    return seen


def test_cache_follows_another_process_commit(pg_cluster, tmp_path) -> None:
    url, settings = _seeded(pg_cluster, tmp_path, "cache")
    tok = mint_token(SECRET, sub="t", scope="user/*.cruds")
    with TestClient(create_app(settings)) as client:
        services = client.app.state.services
        cache = services.state_cache
        assert cache is not None
        assert _glucose(client, tok) == 120.0
        assert _glucose(client, tok) == 120.0
        assert cache.hits >= 1  # the second read came from the cache
        _write_elsewhere(url, "obs-a-new", 222.0, "2025-06-01T08:00:00Z")
        assert _wait_glucose(client, tok, 222.0) == 222.0
        assert services._watcher is not None and services._watcher.notified >= 1


def test_sse_sees_every_process_commit_once(pg_cluster, tmp_path) -> None:
    """A subscriber on one worker gets the writes of another process (here a second
    connection, as another worker or a CLI ingest would write) and of its own worker, each
    exactly once and in commit order, with the alerts of the other process's values."""
    url, settings = _seeded(pg_cluster, tmp_path, "sse")
    tok = mint_token(SECRET, sub="t", scope="patient/*.cruds", patient="pat-a")

    got: list[tuple[str, dict]] = []
    with (
        live_server(create_app(settings)) as base,
        httpx.Client(base_url=base, timeout=20) as c,
        c.stream("GET", "/twins/Patient/pat-a/events", headers=auth(tok)) as resp,
    ):
        assert resp.status_code == 200
        event = None
        deadline = time.monotonic() + 30.0  # checked at each line (keep-alives: 15 s)
        for line in resp.iter_lines():
            if time.monotonic() > deadline:
                break
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
                continue
            if not (line.startswith("data:") and event):
                continue
            data = json.loads(line[5:])
            got.append((event, data))
            if event == "ready":
                _write_elsewhere(url, "sse-other-low", 45.0, "2025-06-01T08:00:00Z")  # urgent low
            elif data.get("rid") == "Observation/sse-other-low" and event == "alert":
                own = _obs("sse-own", "pat-a", "2339-0", 100.0, "mg/dL", "2025-06-01T09:00:00Z")
                r = httpx.post(
                    f"{base}/fhir/Observation",
                    content=json.dumps(own),
                    headers={**auth(tok), "Content-Type": "application/fhir+json"},
                )
                assert r.status_code == 201, r.text
                _write_elsewhere(url, "sse-sentinel", 110.0, "2025-06-01T08:00:00Z")
            elif data.get("rid") == "Observation/sse-sentinel":
                break
    seen = [(k, d.get("rid")) for k, d in got]
    assert seen == [
        ("ready", None),
        ("record.changed", "Observation/sse-other-low"),
        ("alert", "Observation/sse-other-low"),
        ("record.changed", "Observation/sse-own"),
        ("record.changed", "Observation/sse-sentinel"),
    ], seen
    low = got[1][1]
    assert low["values"] == [
        {"code": "2339-0", "value": 45.0, "unit": "mg/dL", "effective": "2025-06-01T08:00:00+00:00"}
    ]
    assert got[2][1]["level"] == "urgent-low"


def test_a_subscription_made_while_the_watcher_reads_gets_no_empty_notice(
    pg_cluster, tmp_path
) -> None:
    """The watcher reads a page, then the facts for the subjects subscribed then; a subject
    subscribed after that (before the page reaches the event loop) must not get a notice
    for that page without its values (the commits predate its subscription)."""
    from healthtwin.serve.services import ChangeFeed, CommitWatcher, StateCache, Subscriber

    url = f"{pg_cluster.url}?schema=race_{uuid.uuid4().hex[:8]}"
    write_fixture_ndjson(tmp_path)
    with open_store(url) as st:
        ingest_paths(st, [str(tmp_path / "two-patients.ndjson")])
        feed = ChangeFeed(from_journal=True)
        watcher = CommitWatcher(url, StateCache(), feed)
        other_sub = Subscriber("Patient/pat-b", None, None)
        feed.subscribe(other_sub)  # someone subscribes: the watcher reads payloads
        last = int(st.read_sql("SELECT max(seq) FROM journal")[1][0][0])
        obs = _obs("race-low", "pat-a", "2339-0", 45.0, "mg/dL", "2025-06-01T08:00:00Z")
        acc, rej = convert_records(list(read_text("other", json.dumps(obs), ndjson=True)))
        assert not rej
        st.write_batch(acc, source="other process")
        # the watcher thread's steps, in order, with the subscription falling between them
        changes = st.changes_since(last, payload=bool(feed.subjects))
        facts = watcher._facts(st, changes)
        late = Subscriber("Patient/pat-a", None, None)
        feed.subscribe(late)
        watcher._apply(changes, facts)  # on the event loop, later
    notes = []
    while not late.queue.empty():
        notes.append(late.queue.get_nowait())
    changed = [n for n in notes if n["event"] == "record.changed"]
    assert all(n["values"] for n in changed), notes
    assert other_sub.queue.empty()


def test_watcher_survives_a_dropped_connection(pg_cluster, tmp_path) -> None:
    """The watcher's listening connection is killed on the server side (as a database restart
    or a network drop would): it retries, and the cache again follows other processes."""
    url, settings = _seeded(pg_cluster, tmp_path, "drop")
    tok = mint_token(SECRET, sub="t", scope="user/*.cruds")
    with TestClient(create_app(settings)) as client:
        watcher = client.app.state.services._watcher
        assert watcher is not None
        assert _glucose(client, tok) == 120.0
        with open_store(url) as admin:
            killed: list = []
            for _ in range(100):  # the watcher listens within moments of start-up
                killed = admin.read_sql(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE query ILIKE 'LISTEN%%' AND pid <> pg_backend_pid()"
                )[1]
                if killed:
                    break
                time.sleep(0.05)
            assert killed, "no listening connection found"
        deadline = time.monotonic() + 10.0
        while watcher.errors == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watcher.errors >= 1
        _write_elsewhere(url, "obs-a-drop", 333.0, "2025-07-01T08:00:00Z")
        assert _wait_glucose(client, tok, 333.0) == 333.0
