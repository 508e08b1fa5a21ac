from __future__ import annotations

from serve_helpers import PAT_A, PAT_B, auth


def test_state_own_patient_and_cross_patient(client, token, store) -> None:
    tok = token("patient/*.rs", patient=PAT_A)
    r = client.get(f"/twins/{PAT_A}/state", headers=auth(tok))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["twin_id"] == PAT_A
    glucose = [v for v in body["values"] if v["code"] == "2339-0"]
    assert glucose and glucose[0]["value"] == 120.0
    r = client.get(f"/twins/{PAT_B}/state", headers=auth(tok))
    assert r.status_code == 403
    r = client.get(f"/twins/{PAT_B}/state")
    assert r.status_code == 401


def test_audit_events_for_allowed_and_denied(client, token, store) -> None:
    tok = token("patient/*.rs", patient=PAT_A, sub="alice")
    assert client.get(f"/twins/{PAT_A}/state", headers=auth(tok)).status_code == 200
    assert client.get(f"/twins/{PAT_B}/state", headers=auth(tok)).status_code == 403
    client.portal.call(client.app.state.gateway.aclose)  # flush the audit buffer
    evs = [e["payload"] for e in store.events("audit.access", limit=50)]
    outcomes = {(e["who"], e["target"], e["outcome"], e["status"]) for e in evs}
    assert ("alice", PAT_A, "allowed", 200) in outcomes
    assert ("alice", PAT_B, "denied", 403) in outcomes


def test_own_process_app_freezes_the_gc_after_the_preload(settings, store) -> None:
    """``healthtwin serve`` (own_process) moves what is alive after the state preload out of
    the cyclic GC's reach until it stops; an app embedded in another process (tests) leaves
    the GC alone."""
    import gc
    import time

    from fastapi.testclient import TestClient

    from healthtwin.serve.app import create_app

    gc.unfreeze()
    try:
        with TestClient(create_app(settings, store=store)) as c:
            assert c.get("/health").status_code == 200
            assert gc.get_freeze_count() == 0
        with TestClient(create_app(settings, store=store, own_process=True)) as c:
            assert c.get("/health").status_code == 200
            for _ in range(200):  # the freeze follows the preload task (bounded wait)
                if gc.get_freeze_count() > 0:
                    break
                time.sleep(0.05)
            assert gc.get_freeze_count() > 0
            assert c.app.state.services._preload.done()
        # and thawed at shutdown: frozen objects are never freed at interpreter exit, and
        # DuckDB's bindings then print "nanobind: leaked ..." when `serve` stops
        assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()


def test_served_duckdb_store_runs_one_thread_per_query(settings, store_file, tmp_path) -> None:
    """A DuckDB store the app opens itself gets ``duckdb_threads`` (default 1); 0 keeps
    DuckDB's default (one per core)."""
    from dataclasses import replace

    import duckdb
    from fastapi.testclient import TestClient

    from healthtwin.serve.app import create_app

    default = duckdb.connect().execute("SELECT current_setting('threads')").fetchone()[0]
    for threads, expected in ((1, 1), (0, default)):
        p = tmp_path / f"own{threads}.duckdb"
        p.write_bytes(store_file.read_bytes())
        app = create_app(replace(settings, store=str(p), duckdb_threads=threads))
        with TestClient(app) as c:
            assert c.get("/health").status_code == 200
            con = c.app.state.gateway.store.con
            assert con.execute("SELECT current_setting('threads')").fetchone()[0] == expected
