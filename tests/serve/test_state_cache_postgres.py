"""On PostgreSQL the server's current-state cache follows commits made by OTHER processes
(another server worker, a CLI ingest) through LISTEN/NOTIFY: a state read after such a commit
shows it once the notification has arrived, never the cached old value for long."""

from __future__ import annotations

import json
import time
import uuid

from fastapi.testclient import TestClient
from serve_helpers import SECRET, _obs, auth, write_fixture_ndjson

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


def test_cache_follows_another_process_commit(pg_cluster, tmp_path) -> None:
    url = f"{pg_cluster.url}?schema=cache_{uuid.uuid4().hex[:8]}"
    write_fixture_ndjson(tmp_path)
    with open_store(url) as st:
        ingest_paths(st, [str(tmp_path / "two-patients.ndjson")])
    settings = Settings(store=url, jwt_secret=SECRET, audit_flush_s=0.01)
    tok = mint_token(SECRET, sub="t", scope="user/*.cruds")
    with TestClient(create_app(settings)) as client:
        services = client.app.state.services
        cache = services.state_cache
        assert cache is not None
        assert _glucose(client, tok) == 120.0
        assert _glucose(client, tok) == 120.0
        assert cache.hits >= 1  # the second read came from the cache
        # another "process": its own connection, not the server's gateway
        other = open_store(url)
        try:
            newer = _obs("obs-a-new", "pat-a", "2339-0", 222.0, "mg/dL", "2025-06-01T08:00:00Z")
            acc, rej = convert_records(list(read_text("other", json.dumps(newer), ndjson=True)))
            assert not rej
            other.write_batch(acc, source="other process")
        finally:
            other.close()
        deadline = time.monotonic() + 10.0
        seen = _glucose(client, tok)
        while seen != 222.0 and time.monotonic() < deadline:
            time.sleep(0.05)
            seen = _glucose(client, tok)
        assert seen == 222.0
        assert services._watcher is not None and services._watcher.notified >= 1
