"""Load on the HTTP API: twin-state reads and observation writes over loopback.

Phases: ``health`` (the peer), ``first`` (each twin's state read once, right after start:
served from the state the server preloads at start-up, up to ``Settings.state_preload``),
``read`` (random twins: the current state is cached per twin and invalidated by writes),
``write`` (new Observations via ``POST /fhir/Observation``), ``read2`` (after the writes).

Starts ``healthtwin serve`` in another process (one worker on DuckDB), drives it from this
process with keep-alive HTTP/1.1 connections (asyncio, a minimal client), and prints throughput and
latency percentiles (p50/p95/p99) per phase, the error count, and the count of acknowledged
writes found in the store afterwards. The "peer" is the same server's ``/health`` (no store,
no auth): the ceiling of this client + uvicorn + FastAPI on this machine, so the ratio says
what the store, auth and audit cost.

    .venv/bin/python benchmarks/api.py                       # DuckDB, temporary store
    .venv/bin/python benchmarks/api.py --store postgresql://...   # once the backend exists

Targets (issue 6, 2 cores): >= 2,000 reads/s and >= 1,000 writes/s, p99 < 50 ms, no errors,
every acknowledged write present.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _patients_ndjson(path: Path, n: int, obs_per: int) -> list[str]:
    rows, ids = [], []
    for i in range(n):
        pid = f"bench-{i:05d}"
        ids.append(pid)
        rows.append({"resourceType": "Patient", "id": pid, "name": [{"family": f"B{i}"}]})
        for k in range(obs_per):
            rows.append(
                {
                    "resourceType": "Observation",
                    "id": f"seed-{i}-{k}",
                    "status": "final",
                    "code": {
                        "coding": [
                            {
                                "system": "http://loinc.org",
                                "code": ["2339-0", "8867-4", "8480-6"][k % 3],
                            }
                        ]
                    },
                    "subject": {"reference": f"Patient/{pid}"},
                    "effectiveDateTime": f"2024-01-{1 + k % 28:02d}T08:00:00Z",
                    "valueQuantity": {
                        "value": 90 + k,
                        "unit": "mg/dL",
                        "system": "http://unitsofmeasure.org",
                        "code": "mg/dL",
                    },
                }
            )
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return ids


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _obs(pid: str, oid: str, v: float) -> bytes:
    return json.dumps(
        {
            "resourceType": "Observation",
            "id": oid,
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]},
            "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": "2024-03-01T08:00:00Z",
            "valueQuantity": {
                "value": v,
                "unit": "mg/dL",
                "system": "http://unitsofmeasure.org",
                "code": "mg/dL",
            },
        }
    ).encode()


class _Conn:
    """A minimal keep-alive HTTP/1.1 client connection (the benchmark's load generator).

    Hand-written because httpx's per-request CPU cost on a 2-core machine capped the load
    below what the server can answer; it sends pre-built requests and reads status and
    Content-Length bodies, nothing more.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    async def open(self) -> None:
        self.r, self.w = await asyncio.open_connection(self.host, self.port)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.w.write(raw)
        head = await self.r.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        n = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                n = int(line[15:])
        body = await self.r.readexactly(n) if n else b""
        return status, body

    def close(self) -> None:
        self.w.close()


def _req(method: str, path: str, token: str | None, body: bytes = b"") -> bytes:
    h = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if token:
        h.append(f"Authorization: Bearer {token}")
    if body or method == "POST":
        h += ["Content-Type: application/fhir+json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(h) + "\r\n\r\n").encode() + body


async def _phase(
    port: int, token: str, kind: str, ids: list[str], conc: int, seconds: float, max_n: int
) -> tuple[list[float], int, list[str]]:
    lat: list[float] = []
    errors = 0
    acked: list[str] = []
    deadline = time.perf_counter() + seconds
    counter = iter(range(max_n))
    reads = [_req("GET", f"/twins/Patient/{pid}/state", token) for pid in ids]
    health = _req("GET", "/health", None)

    async def worker(w: int) -> None:
        nonlocal errors
        c = _Conn("127.0.0.1", port)
        await c.open()
        rng = np.random.default_rng(w)
        try:
            for i in counter:
                if time.perf_counter() > deadline:
                    return
                k = int(rng.integers(len(ids)))
                if kind == "first":  # each twin once
                    if i >= len(ids):
                        return
                    raw = reads[i]
                elif kind == "read":
                    raw = reads[k]
                elif kind == "health":
                    raw = health
                else:
                    oid = f"w{w}-{i}"
                    raw = _req("POST", "/fhir/Observation", token, _obs(ids[k], oid, 100 + i % 50))
                t0 = time.perf_counter()
                status, _body = await c.request(raw)
                lat.append(time.perf_counter() - t0)
                if status >= 300:
                    errors += 1
                elif kind == "write":
                    acked.append(f"Observation/{oid}")
        finally:
            c.close()

    await asyncio.gather(*(worker(w) for w in range(conc)))
    return lat, errors, acked


def _report(name: str, lat: list[float], errors: int, wall: float) -> dict[str, float]:
    a = np.array(lat) * 1000
    p50, p95, p99 = np.percentile(a, [50, 95, 99]) if a.size else (np.nan,) * 3
    rate = len(lat) / wall
    print(
        f"{name:8s} {len(lat):7d} req  {rate:8.0f} /s  p50 {p50:6.2f} ms  p95 {p95:6.2f} ms  "
        f"p99 {p99:6.2f} ms  errors {errors}  load {os.getloadavg()[0]:.2f}"
    )
    return {"rate": rate, "p50": p50, "p95": p95, "p99": p99, "errors": errors}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", default=None, help="DuckDB path or postgresql:// URL")
    ap.add_argument("--patients", type=int, default=500)
    ap.add_argument("--obs", type=int, default=20, help="seed observations per patient")
    ap.add_argument("--seconds", type=float, default=8.0, help="per phase")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max", type=int, default=200_000, help="requests per phase at most")
    ap.add_argument(
        "--workers", type=int, default=1, help="server worker processes (PostgreSQL only)"
    )
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ht-bench-"))
    store = args.store or str(tmp / "bench.duckdb")
    nd = tmp / "seed.ndjson"
    ids = _patients_ndjson(nd, args.patients, args.obs)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "HEALTHTWIN_JWT_SECRET": secrets.token_urlsafe(48),
    }
    hc = [sys.executable, "-m", "healthtwin"]
    subprocess.run(
        [*hc, "ingest", "--store", store, str(nd)], check=True, env=env, capture_output=True
    )
    port = _port()
    print(
        f"load before: {os.getloadavg()}  cores: {os.cpu_count()}  store: {store.split('@')[-1]}"
        f"  concurrency: {args.concurrency}  workers: {args.workers}"
    )
    srv = subprocess.Popen(
        [*hc, "serve", "--store", store, "--port", str(port), "--workers", str(args.workers)],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        from healthtwin.serve.auth import mint_token

        tok = mint_token(
            env["HEALTHTWIN_JWT_SECRET"], sub="bench", scope="user/*.cruds", role="clinician"
        )
        results = {}
        acked: list[str] = []
        # interleaved: peer ceiling, first reads, reads, writes, reads again
        for name, kind in (
            ("health", "health"),
            ("first", "first"),
            ("read", "read"),
            ("write", "write"),
            ("read2", "read"),
        ):
            t0 = time.perf_counter()
            lat, err, ack = asyncio.run(
                _phase(port, tok, kind, ids, args.concurrency, args.seconds, args.max)
            )
            results[name] = _report(name, lat, err, time.perf_counter() - t0)
            acked += ack
    finally:
        srv.terminate()
        srv.wait(30)
    present = 0
    if not store.startswith("postgres"):
        import duckdb

        con = duckdb.connect(store, read_only=True)
        con.execute("CREATE TEMP TABLE ack (rid VARCHAR)")
        con.executemany("INSERT INTO ack VALUES (?)", [(a,) for a in acked])
        present = con.execute(
            "SELECT count(DISTINCT a.rid) FROM ack a JOIN records r ON r.rid = a.rid"
        ).fetchone()[0]
        audits = con.execute("SELECT count(*) FROM journal WHERE kind = 'audit.access'").fetchone()[
            0
        ]
        con.close()
        print(
            f"acknowledged writes {len(acked)}, present in the store {present}; audit events {audits}"
        )
    else:
        from healthtwin.twin.store import open_store

        pg = open_store(store)
        try:
            _, rows = pg.read_sql(
                "SELECT count(DISTINCT rid) FROM records WHERE rid = ANY(%s)", [list(acked)]
            )
            present = int(rows[0][0])
            _, rows = pg.read_sql("SELECT count(*) FROM journal WHERE kind = 'audit.access'")
            audits = int(rows[0][0])
        finally:
            pg.close()
        print(
            f"acknowledged writes {len(acked)}, present in the store {present}; audit events {audits}"
        )
    r, w, h = results["read"], results["write"], results["health"]
    print(
        f"ratio state-read/health {r['rate'] / h['rate']:.2f}, write/health {w['rate'] / h['rate']:.2f}; "
        f"targets: reads >= 2000/s {'met' if r['rate'] >= 2000 else 'NOT met'}, "
        f"writes >= 1000/s {'met' if w['rate'] >= 1000 else 'NOT met'}, "
        f"p99 < 50 ms {'met' if max(r['p99'], w['p99']) < 50 else 'NOT met'}"
    )
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
