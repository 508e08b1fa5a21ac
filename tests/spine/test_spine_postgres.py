"""PostgreSQL specifics: several writer processes at once; URLs, schemas, odd bytes.

Store semantics shared with DuckDB are tested on both backends in the other spine tests
(the ``backend`` fixture); here is what only a server database has to get right.
"""

from __future__ import annotations

import multiprocessing as mp
import random
from collections import Counter
from typing import Any

import pytest
from helpers import glucose, ndjson, patient, query

from healthtwin.thread.fhir.ingest import convert_records, ingest_paths
from healthtwin.thread.fhir.reader import read_text
from healthtwin.twin.model import Rejected
from healthtwin.twin.store import open_store
from healthtwin.twin.store.base import StoreError
from healthtwin.twin.store.postgres_store import PostgresStore, mask_password, split_schema

N_WORKERS = 4
N_PATIENTS = 12
N_OBS = 8  # per patient
N_CONTENDED = 4  # resources every worker writes in its own version
BATCH = 9


def _shared() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in range(N_PATIENTS):
        out.append(patient(f"p{p}", family=f"F{p}"))
        for k in range(N_OBS):
            out.append(glucose(f"o{p}-{k}", 70 + 3 * k + p, pid=f"p{p}"))
    return out


def _batches(w: int) -> list[str]:
    """Worker ``w``'s input: every shared resource (its own order and batching), its own
    version of each contended resource, and one malformed line."""
    res = _shared()
    random.Random(w).shuffle(res)
    res += [glucose(f"c{k}", 200 + w, pid=f"p{k}") for k in range(N_CONTENDED)]
    texts = [ndjson(*res[i : i + BATCH]) for i in range(0, len(res), BATCH)]
    texts[len(texts) // 2] += '{"resourceType": "Observation", "id": \n'
    return texts


def _worker(url: str, w: int, barrier: Any, out: Any) -> None:
    try:
        barrier.wait(timeout=120)  # all open the (new) store at once: DDL races too
        store = PostgresStore(url)
        tot: Counter[str] = Counter()
        for text in _batches(w):
            acc, rej = convert_records(list(read_text(f"worker{w}", text)))
            res = store.write_batch(acc, rej, source=f"worker{w}")
            for k in ("created", "updated", "unchanged", "quarantined", "events"):
                tot[k] += getattr(res, k)
            tot["twins_created"] += res.twins_created
            tot["batches"] += 1
        store.close()
        out.put((w, dict(tot), None))
    except BaseException as exc:  # reported to the parent, which fails the test
        out.put((w, None, f"{type(exc).__name__}: {exc}"))


def test_concurrent_writers_lose_nothing_and_duplicate_nothing(pg_cluster) -> None:
    url = f"{pg_cluster.url}?schema=concurrent"
    convert_records(list(read_text("warm-up", _batches(0)[0])))  # unit caches, before fork
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(N_WORKERS), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, w, barrier, out)) for w in range(N_WORKERS)]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    errors = [e for _, _, e in results if e]
    assert not errors, errors
    tot: Counter[str] = Counter()
    for _, t, _ in results:
        tot.update(t)

    n_shared = N_PATIENTS * (1 + N_OBS)
    # each shared resource created once, reported unchanged to every other worker
    assert tot["created"] == n_shared + N_CONTENDED
    assert tot["unchanged"] == n_shared * (N_WORKERS - 1)
    # every worker's version of a contended resource is a new version
    assert tot["updated"] == N_CONTENDED * (N_WORKERS - 1)
    assert tot["twins_created"] == N_PATIENTS
    assert tot["quarantined"] == N_WORKERS

    store = PostgresStore(url, read_only=True)
    versions = {
        rid: (n, lo, hi, cur)
        for rid, n, lo, hi, cur in query(
            store,
            "SELECT rid, count(*), min(version), max(version), "
            "count(*) FILTER (WHERE superseded_at IS NULL) FROM records GROUP BY rid",
        )
    }
    assert len(versions) == n_shared + N_CONTENDED
    for rid, v in versions.items():
        want = (N_WORKERS, 1, N_WORKERS, 1) if rid.startswith("Observation/c") else (1, 1, 1, 1)
        assert v == want, rid
    n_events, max_seq = query(store, "SELECT count(*), max(seq) FROM journal")[0]
    assert n_events == max_seq == tot["events"]  # one gap-free total order
    st = store.stats()
    assert st["events"]["batch.committed"] == tot["batches"]
    assert st["events"]["twin.created"] == N_PATIENTS == st["twins"]["patient"]
    assert st["events"]["record.rejected"] == N_WORKERS == st["quarantined"]
    assert [q["qid"] for q in store.quarantine()] == list(range(1, N_WORKERS + 1))
    record_events = sum(st["events"].get(k, 0) for k in ("record.created", "record.updated"))
    assert record_events == st["versions"] == tot["created"] + tot["updated"]
    # the facts follow the records: one current glucose per shared observation
    n_current = query(
        store, "SELECT count(*) FROM facts WHERE superseded_at IS NULL AND code = '2339-0'"
    )[0][0]
    assert n_current == N_PATIENTS * N_OBS + N_CONTENDED
    assert {r["code"] for r in store.state("p0")} >= {"2339-0", "gender"}
    rep = store.verify()
    assert rep.ok, rep.problems
    assert rep.events == tot["events"]


def test_url_schema_and_password_handling(pg_cluster) -> None:
    dsn, schema = split_schema("postgresql://u:secret@h:5/db?schema=s1&sslmode=disable")
    assert schema == "s1" and "schema" not in dsn and "sslmode=disable" in dsn
    assert mask_password("postgresql://u:secret@h:5/db") == "postgresql://u:***@h:5/db"
    assert mask_password("postgres://h/db?password=secret&schema=x") == (
        "postgres://h/db?password=***&schema=x"
    )
    with pytest.raises(StoreError, match="does not exist"):
        open_store(f"{pg_cluster.url}?schema=nothing_here", read_only=True)
    with pytest.raises(StoreError, match="cannot connect"):
        open_store("postgresql://nobody:pw@127.0.0.1:1/x", connect_timeout=2)
    a = open_store(f"{pg_cluster.url}?schema=tenant_a")
    b = open_store(f"{pg_cluster.url}?schema=tenant_b")
    a.write_batch(*convert_records(list(read_text("a", ndjson(patient("pa"))))))
    assert [t["twin_id"] for t in a.twins()] == ["Patient/pa"] and b.twins() == []
    ro = open_store(f"{pg_cluster.url}?schema=tenant_a", read_only=True)
    assert ro.stats()["resources"] == {"Patient": 1}
    with pytest.raises(Exception, match="read-only"):
        ro.create_twin("cohort", "not allowed")
    for s in (a, b, ro):
        s.close()


def test_quarantine_keeps_any_bytes(backend) -> None:
    """NUL and other control characters in rejected input come back byte for byte."""
    raw = '{"resourceType": "Observation", "id": "x\x00y", \x01\x7f "é"'
    store = backend.open()
    store.write_batch([], [Rejected("feed\x00.ndjson", "line 1", "malformed JSON", raw, line=1)])
    q = store.quarantine()
    assert [r["raw"] for r in q] == [raw]
    assert store.verify().ok


@pytest.mark.parametrize("backend", ["duckdb", "postgres"], indirect=True)
def test_two_versions_in_one_batch_leave_one_current(backend) -> None:
    store = backend.open()
    text = ndjson(patient(), glucose("g", 100), glucose("g", 120))
    res = store.write_batch(*convert_records(list(read_text("x", text))))
    assert (res.created, res.updated) == (2, 1)
    cur = query(
        store, "SELECT version FROM records WHERE rid = 'Observation/g' AND superseded_at IS NULL"
    )
    assert cur == [(2,)]
    assert store.stats()["resources"] == {"Observation": 1, "Patient": 1}
    assert {r["code"]: r["num"] for r in store.state("p1")}["2339-0"] == 120.0
    assert store.verify().ok


def test_kill_9_mid_ingest_leaves_whole_batches_and_no_lock(pg_cluster, tmp_path) -> None:
    """A writer killed mid-transaction: its batch vanishes, the journal lock is free again."""
    import json
    import signal
    import subprocess
    import sys
    import time

    n_pat, per = 50, 99
    data = tmp_path / "big.ndjson"
    with data.open("w") as f:
        for p in range(n_pat):
            f.write(json.dumps(patient(f"p{p}")) + "\n")
            for k in range(per):
                f.write(json.dumps(glucose(f"g{p}-{k}", 80 + k, pid=f"p{p}")) + "\n")
    total = n_pat * (1 + per)
    url = f"{pg_cluster.url}?schema=crash"
    cmd = [sys.executable, "-m", "healthtwin", "ingest", str(data), "--store", url]
    cmd += ["--batch-size", "500", "--quiet"]
    watcher = PostgresStore(url)  # creates the schema; counts committed batches
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if query(watcher, "SELECT count(*) FROM batches")[0][0] >= 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    batches = query(watcher, "SELECT created FROM batches")
    n_records = query(watcher, "SELECT count(*) FROM records")[0][0]
    assert n_records == sum(c for (c,) in batches)  # whole batches only
    assert n_records % 500 == 0 and 0 < n_records < total  # it really was interrupted
    assert watcher.verify().ok
    watcher.close()
    # the lock died with the killed transaction: a re-run proceeds and completes the job
    with PostgresStore(url) as s:
        rep = ingest_paths(s, [str(data)], batch_size=500)
    assert rep.unchanged == n_records and rep.created == total - n_records
    with PostgresStore(url, read_only=True) as s:
        assert query(s, "SELECT count(*) FROM records")[0][0] == total
        assert s.verify().ok


def test_store_reconnects_after_its_connection_is_killed(pg_cluster) -> None:
    import psycopg

    url = f"{pg_cluster.url}?schema=reconnect"
    store = PostgresStore(url)
    store.write_batch(*convert_records(list(read_text("a", ndjson(patient())))))
    pid = store.conn.info.backend_pid
    with psycopg.connect(pg_cluster.url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    assert [t["twin_id"] for t in store.twins()] == ["Patient/p1"]  # read retried once
    assert store.conn.info.backend_pid != pid
    with psycopg.connect(pg_cluster.url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [store.conn.info.backend_pid])
    with pytest.raises(psycopg.OperationalError):  # a write is never retried blindly
        store.write_batch(*convert_records(list(read_text("b", ndjson(glucose("g", 90))))))
    res = store.write_batch(*convert_records(list(read_text("b", ndjson(glucose("g", 90))))))
    assert res.created == 1 and store.verify().ok
    store.close()


def test_watch_notifies_every_commit_and_no_rollback(pg_cluster) -> None:
    import threading

    from healthtwin.twin.model import Event

    url = f"{pg_cluster.url}?schema=watch"
    a, b = PostgresStore(url), PostgresStore(url)  # two writers, e.g. two server workers
    seen: list[int] = []
    heads_it = a.watch(timeout=30)  # listening from here on

    def listen() -> None:
        for head in heads_it:
            seen.append(head)
            if len(seen) == 2:
                return

    t = threading.Thread(target=listen)
    t.start()
    r1 = b.write_batch(*convert_records(list(read_text("b", ndjson(patient("w1"))))))

    def boom(cur: Any, seq: int, rec: Any) -> None:
        raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):  # a rolled-back batch notifies nobody
        b._atomic_events([Event("x.y", {}, {})], boom)
    a.append_events([Event("audit.read", {"who": "t"}, {"source": "t"}, "Patient/w1")])
    t.join(timeout=30)
    heads_it.close()  # closes the listening connection
    heads = [r[0] for r in query(a, "SELECT last_seq FROM batches ORDER BY last_seq")]
    assert seen == heads  # both commits, in order, nothing for the rollback
    changed = b.changes_since(seen[0] - r1.events)
    assert [c["kind"] for c in changed][:3] == ["record.created", "twin.created", "batch.committed"]
    assert {c["twin_id"] for c in changed} >= {"Patient/w1"}
    a.close()
    b.close()


def test_aware_times_mean_the_same_instant_whatever_the_server_zone(pg_cluster) -> None:
    """Aware times on a server whose default zone is not UTC mean the same instant as naive UTC."""
    from datetime import UTC, datetime, timedelta, timezone

    import psycopg

    with psycopg.connect(pg_cluster.url, autocommit=True) as admin:
        admin.execute("ALTER DATABASE postgres SET timezone TO 'Pacific/Kiritimati'")  # UTC+14
    try:
        store = PostgresStore(f"{pg_cluster.url}?schema=zones")
        text = ndjson(patient(), glucose("g1", 90, when="2024-01-01T08:00:00Z"))
        store.write_batch(*convert_records(list(read_text("z", text))))
        cut = datetime(2024, 1, 1, 8, 30)  # naive UTC: after the observation
        aware = cut.replace(tzinfo=UTC).astimezone(timezone(timedelta(hours=-10)))
        got = {r["code"] for r in store.state("p1", at=aware)}
        assert "2339-0" in got and got == {r["code"] for r in store.state("p1", at=cut)}
        early = datetime(2024, 1, 1, 7, 30, tzinfo=UTC)
        assert "2339-0" not in {r["code"] for r in store.state("p1", at=early)}
        # the caller's own SQL (server read model) with an aware parameter: the session is UTC
        n = store.con.execute(
            "SELECT count(*) FROM facts WHERE code = '2339-0' AND effective <= %s", [early]
        ).fetchone()
        assert n == (0,)
        row = query(store, "SELECT effective FROM facts WHERE code = '2339-0'")[0][0]
        assert row == datetime(2024, 1, 1, 8, 0)  # stored as naive UTC
        store.close()
    finally:
        with psycopg.connect(pg_cluster.url, autocommit=True) as admin:
            admin.execute("ALTER DATABASE postgres RESET timezone")
