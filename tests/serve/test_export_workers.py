"""Bulk Data export with several server workers (PostgreSQL): the kick-off, the status poll,
the downloads and the delete may reach different workers; a job outlives its worker's restart
when ``export_dir`` is set, and one left unfinished by a dead process says so."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import orjson
from fastapi.testclient import TestClient
from serve_helpers import SECRET, auth, write_fixture_ndjson

from healthtwin.serve.app import create_app
from healthtwin.serve.auth import mint_token
from healthtwin.serve.settings import Settings
from healthtwin.thread.fhir.ingest import ingest_paths
from healthtwin.twin.store import open_store

ASYNC = {"Prefer": "respond-async"}


def _settings(pg_cluster, tmp_path: Path) -> Settings:
    url = f"{pg_cluster.url}?schema=exp_{uuid.uuid4().hex[:8]}"
    write_fixture_ndjson(tmp_path)
    with open_store(url) as st:
        ingest_paths(st, [str(tmp_path / "two-patients.ndjson")])
    exports = tmp_path / "exports"
    exports.mkdir()
    return Settings(
        store=url, jwt_secret=SECRET, audit_flush_s=0.01, export_dir=str(exports), state_preload=0
    )


def _poll(client: TestClient, status: str, tok: str) -> dict:
    for _ in range(1000):
        s = client.get(status, headers=auth(tok))
        if s.status_code == 200:
            return s.json()
        assert s.status_code == 202, s.text
        time.sleep(0.01)
    raise AssertionError("export did not complete")


def test_a_job_started_on_one_worker_is_served_by_another(pg_cluster, tmp_path) -> None:
    settings = _settings(pg_cluster, tmp_path)
    tok = mint_token(SECRET, sub="a", scope="patient/*.rs", patient="pat-a")
    other = mint_token(SECRET, sub="svc", scope="system/*.rs", role="service")
    with TestClient(create_app(settings)) as w1, TestClient(create_app(settings)) as w2:
        r = w1.get("/fhir/$export", headers={**auth(tok), **ASYNC})
        assert r.status_code == 202, r.text
        status = r.headers["Content-Location"].replace("http://testserver", "")
        job = status.rsplit("/", 1)[1]
        manifest = _poll(w2, status, tok)  # polled on the other worker
        rows: dict[str, list[dict]] = {}
        for f in manifest["output"]:
            body = w2.get(f["url"].replace("http://testserver", ""), headers=auth(tok))
            assert body.status_code == 200, body.text
            rows[f["type"]] = [json.loads(x) for x in body.text.splitlines()]
            assert len(rows[f["type"]]) == f["count"]
        assert [p["id"] for p in rows["Patient"]] == ["pat-a"]
        assert {o["subject"]["reference"] for o in rows["Observation"]} == {"Patient/pat-a"}
        # the owner check holds on the other worker too
        assert w2.get(status, headers=auth(other)).status_code == 403
        # deleted through the other worker: gone on both (an unconfined token learns that it
        # is unknown: 404 where it was 403; a patient-confined one gets 403 either way)
        assert w2.delete(status, headers=auth(tok)).status_code == 202
        assert w1.get(status, headers=auth(other)).status_code == 404
        assert w2.get(status, headers=auth(other)).status_code == 404
        assert w1.get(status, headers=auth(tok)).status_code == 403
        assert not (Path(settings.export_dir or "") / job).exists()
        # a malformed job id is unknown, never a path outside the folder
        assert w2.get("/fhir/$export-status/..%2F..%2Fetc", headers=auth(other)).status_code == 404


def test_jobs_outlive_a_restart_and_an_interrupted_one_says_so(pg_cluster, tmp_path) -> None:
    settings = _settings(pg_cluster, tmp_path)
    tok = mint_token(SECRET, sub="a", scope="patient/*.rs", patient="pat-a")
    with TestClient(create_app(settings)) as w1:
        r = w1.get("/fhir/$export", headers={**auth(tok), **ASYNC})
        status = r.headers["Content-Location"].replace("http://testserver", "")
        first = _poll(w1, status, tok)
    with TestClient(create_app(settings)) as w1_again:  # the worker restarted
        assert _poll(w1_again, status, tok)["output"] == first["output"]
        # a job whose process died before it finished
        dead = subprocess.Popen(["true"])
        dead.wait()
        job = status.rsplit("/", 1)[1]
        folder = Path(settings.export_dir or "") / job
        state = orjson.loads((folder / "job.json").read_bytes())
        state.update(job_id="0" * 32, done=False, files=[], pid=dead.pid)
        (Path(settings.export_dir or "") / ("0" * 32)).mkdir()
        (Path(settings.export_dir or "") / ("0" * 32) / "job.json").write_bytes(orjson.dumps(state))
        s = w1_again.get(f"/fhir/$export-status/{'0' * 32}", headers=auth(tok))
        assert s.status_code == 500
        assert "interrupted" in s.text


def test_serve_with_two_workers_shares_export_jobs(pg_cluster, tmp_path) -> None:
    """``healthtwin serve --workers 2``: one export folder for both workers (the CLI makes
    it), so polls and downloads on fresh connections succeed whichever worker takes them."""
    import os
    import socket
    import sys

    import httpx

    settings = _settings(pg_cluster, tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {**os.environ, "HEALTHTWIN_JWT_SECRET": SECRET}
    env.pop("HEALTHTWIN_EXPORT_DIR", None)
    srv = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "healthtwin",
            "serve",
            "--store",
            settings.store,
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    tok = mint_token(SECRET, sub="a", scope="patient/*.rs", patient="pat-a")
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        statuses = []
        for _ in range(6):  # several jobs, each kicked off and polled on fresh connections
            r = httpx.get(f"{base}/fhir/$export", headers={**auth(tok), **ASYNC}, timeout=10)
            assert r.status_code == 202, r.text
            statuses.append(r.headers["Content-Location"])
        for status in statuses:
            for _ in range(500):
                s = httpx.get(status, headers=auth(tok), timeout=10)
                if s.status_code == 200:
                    break
                assert s.status_code == 202, s.text
                time.sleep(0.01)
            assert s.status_code == 200
            for f in s.json()["output"]:
                for _ in range(3):  # each download on a fresh connection too
                    body = httpx.get(f["url"], headers=auth(tok), timeout=10)
                    assert body.status_code == 200, body.text
                    assert len(body.text.splitlines()) == f["count"]
    finally:
        srv.terminate()
        srv.wait(30)


def test_a_job_stopped_at_shutdown_says_so_after_a_restart_with_the_same_pid(tmp_path) -> None:
    """A server stopped while its export runs, then started again in a process with the
    same id (a container's PID 1; here: this process): the job reports that it was
    interrupted, never "in progress" for ever (the dead-process check cannot see it)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from healthtwin.serve.gateway import StoreGateway
    from healthtwin.serve.services import Exports, Services
    from healthtwin.twin.store.duckdb_store import DuckDBStore

    write_fixture_ndjson(tmp_path)
    exports = tmp_path / "exports"
    exports.mkdir()
    st = DuckDBStore(tmp_path / "x.duckdb")
    ingest_paths(st, [str(tmp_path / "two-patients.ndjson")])
    settings = Settings(store=str(tmp_path / "x.duckdb"), export_dir=str(exports))

    async def first_run() -> str:
        gw = StoreGateway(st)
        svc = Services(settings, gw)
        await svc.start()
        job = svc.exports.start("a", None, ["Patient", "Observation"], [], None, "u")
        await asyncio.sleep(0)  # the export task has begun
        await svc.stop()  # shutdown: the running export is cancelled
        await gw.aclose()
        return job.job_id

    async def restarted(job_id: str) -> tuple[bool, str | None]:
        gw = StoreGateway(st)
        try:
            j = Exports(gw, exports).get(job_id)
            assert j is not None
            return j.done, j.error
        finally:
            await gw.aclose()

    with ThreadPoolExecutor(1) as ex:
        job_id = ex.submit(asyncio.run, first_run()).result()
        done, error = ex.submit(asyncio.run, restarted(job_id)).result()
    st.close()
    assert done
    assert error is not None and "interrupted" in error
