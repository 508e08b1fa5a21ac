"""`make demo`: load the sample data, start the server, stream synthetic device readings.

1. A fresh DuckDB store (``demo.duckdb``) gets the sample data: ../shared/data (Synthea) when
   present, else the small CC0 fixtures in tests/fixtures; plus a virtual patient
   (UVA/Padova adult#001 with CGM, meals and insulin: the glucose twin's physiological
   stream) with the 6 h before the start, and a synthetic emergency department census
   (healthtwin.demo_feed).
2. ``healthtwin serve`` starts on 127.0.0.1 with a random signing key for this run only.
3. The URL and demo tokens are printed (a login link carries the clinician token in its
   fragment, which never reaches the server).
4. The virtual patient's CGM posts a reading every ``--interval`` s of wall-clock time (its
   glucose at that time, never time-compressed), and its meals and boluses when their minute
   passes, through the FHIR API (the same ingestion path as any client): the patient page
   updates live over SSE.

Ctrl-C (or ``--duration S``) stops the stream and the server cleanly. ``--duration`` is the
non-interactive smoke mode: at the end it checks that every acknowledged reading is in the
twin and that the SSE stream delivered them, and exits non-zero otherwise; ``--readings N``
ends it after N acknowledged readings instead (``--duration`` is then the time limit).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEMO_PATIENT = "demo-cgm"
DEMO_ED = "demo-ed"


def _inputs() -> list[str]:
    shared = Path(os.environ.get("HEALTHTWIN_SHARED", REPO.parent / "shared")) / "data/fhir"
    if (shared / "synthea-bundles").is_dir():
        return [str(shared / "synthea-bundles")]
    print(f"(no shared data at {shared}: using the CC0 fixtures in tests/fixtures)", flush=True)
    return [str(REPO / "tests/fixtures/fhir")]


def load(store_path: Path, now: datetime, seed: int) -> dict[str, int]:
    """A fresh store with the sample data, the CGM patient's backfill and the ED census."""
    import orjson

    from healthtwin.demo_feed import backfill_times, demo_patient, device_stream, ed_census
    from healthtwin.thread.fhir.ingest import ingest_paths
    from healthtwin.twin.store.duckdb_store import DuckDBStore

    for suffix in ("", ".wal"):
        Path(f"{store_path}{suffix}").unlink(missing_ok=True)
    synth = store_path.with_suffix(".synthetic.ndjson")
    rows = [demo_patient(DEMO_PATIENT)]
    rows += list(device_stream(DEMO_PATIENT, backfill_times(now, 6.0), seed, origin=now))
    rows += ed_census(DEMO_ED, now, seed=seed)
    synth.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    t0 = time.perf_counter()
    with DuckDBStore(store_path) as st:
        ingest_paths(st, [*_inputs(), str(synth)])
        stats = st.stats()
    synth.unlink(missing_ok=True)
    counts = stats.get("resources", {}) if isinstance(stats, dict) else {}
    total = sum(int(v) for v in counts.values()) if isinstance(counts, dict) else 0
    print(f"loaded {total} resources in {time.perf_counter() - t0:.1f} s into {store_path}")
    return {str(k): int(v) for k, v in counts.items()} if isinstance(counts, dict) else {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    import httpx

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(
                f"the server exited with {proc.returncode} before it was ready "
                '(port in use? make demo DEMO_ARGS="--port 8001")'
            )
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server at {url} was not ready within {timeout_s:.0f} s")


def wall_clock(interval_s: float, stop: threading.Event) -> Iterator[datetime]:
    """Now, then every ``interval_s`` s until ``stop`` is set."""
    while not stop.is_set():
        yield datetime.now(UTC)
        stop.wait(interval_s)


class SseCounter(threading.Thread):
    """Counts ``record.changed`` events of the demo patient's SSE stream (smoke check)."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.url, self.token = url, token
        self.ready = threading.Event()
        self.changes = 0
        self.error: str | None = None

    def run(self) -> None:
        import httpx

        try:
            with httpx.stream(
                "GET",
                f"{self.url}/twins/Patient/{DEMO_PATIENT}/events",
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=httpx.Timeout(5.0, read=None),
            ) as r:
                for line in r.iter_lines():
                    if line.startswith("event: ready"):
                        self.ready.set()
                    elif line.startswith("event: record.changed"):
                        self.changes += 1
        except Exception as exc:  # reported by the smoke check
            self.error = f"{type(exc).__name__}: {exc}"
            self.ready.set()


def stream(
    url: str,
    token: str,
    interval_s: float,
    seed: int,
    stop: threading.Event,
    acked: list[str],
    server: subprocess.Popen[bytes] | None = None,
    origin: datetime | None = None,
    max_readings: int | None = None,
) -> None:
    """Post device records until ``stop`` (or the server exits); acknowledged CGM reading ids
    -> ``acked``. ``origin``: the demo's start, the same as the backfill's (demo_feed)."""
    import httpx

    from healthtwin.demo_feed import device_stream

    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c:
        origin = origin or datetime.now(UTC)
        for obs in device_stream(DEMO_PATIENT, wall_clock(interval_s, stop), seed, origin):
            cgm = obs["resourceType"] == "Observation" and obs["id"].startswith("cgm-")
            try:
                r = c.put(
                    f"/fhir/{obs['resourceType']}/{obs['id']}",
                    json=obs,
                    headers={"Content-Type": "application/fhir+json"},
                    timeout=10.0,
                )
            except httpx.HTTPError as exc:
                if stop.is_set():
                    break
                if server is not None and server.poll() is not None:
                    print(f"the server exited ({server.returncode}): stopping", file=sys.stderr)
                    stop.set()
                    break
                print(f"device stream: {exc}", file=sys.stderr)
                continue
            if r.status_code in (200, 201) and not cgm:
                print(f"  device record: {obs['resourceType']}/{obs['id']} -> {r.status_code}")
            elif r.status_code in (200, 201):
                acked.append(obs["id"])
                v = obs["valueQuantity"]["value"]
                print(
                    f"  device reading {len(acked):4d}: {v:6.1f} mg/dL  -> {r.status_code}",
                    flush=True,
                )
                if max_readings is not None and len(acked) >= max_readings:
                    stop.set()
                    break
            else:
                print(f"device stream: {r.status_code} {r.text[:200]}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="healthtwin.demo", description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=8000, help="0 = any free port (default 8000)")
    ap.add_argument("--store", default=str(REPO / "demo.duckdb"), help="DuckDB file (replaced)")
    ap.add_argument("--interval", type=float, default=3.0, help="seconds between readings")
    ap.add_argument(
        "--duration", type=float, default=None, help="smoke mode: stop after S seconds and check"
    )
    ap.add_argument(
        "--readings",
        type=int,
        default=None,
        help="smoke mode: stop after N acknowledged readings (--duration is then the time limit)",
    )
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)

    from healthtwin.serve.auth import mint_token

    now = datetime.now(UTC)
    store = Path(args.store).resolve()
    load(store, now, args.seed)
    port = free_port() if args.port == 0 else args.port
    url = f"http://127.0.0.1:{port}"
    secret = secrets.token_urlsafe(48)
    env = dict(os.environ, HEALTHTWIN_JWT_SECRET=secret, PYTHONUNBUFFERED="1")
    server = subprocess.Popen(
        [sys.executable, "-m", "healthtwin", "serve", "--store", str(store), "--port", str(port)],
        env=env,
        # its own session: a terminal's Ctrl-C reaches the demo only, which then stops the
        # server with exactly one SIGINT (a second one would make uvicorn skip its shutdown)
        start_new_session=True,
    )
    stop = threading.Event()
    acked: list[str] = []
    counter: SseCounter | None = None
    interrupted = False

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    try:
        wait_ready(url, server)
        ttl = 12 * 3600
        clin = mint_token(
            secret, sub="demo-clinician", scope="user/*.cruds", role="clinician", ttl_s=ttl
        )
        pat = mint_token(
            secret, sub="demo-patient", scope="patient/*.rs", patient=DEMO_PATIENT, ttl_s=ttl
        )
        ops = mint_token(secret, sub="demo-ops", scope="user/*.rs", role="operations", ttl_s=ttl)
        dev = mint_token(
            secret,
            sub="demo-cgm-device",
            scope="system/Observation.cu system/MedicationAdministration.cu",
            role="service",
            ttl_s=ttl,
        )
        page = f"/ui/twins/Patient/{DEMO_PATIENT}"
        print(
            "\n"
            "healthtwin demo is running (synthetic data; a random key for this run only)\n"
            f"  open:   {url}/login?next={page}#token={clin}\n"
            f"          (signs in as a clinician; then watch the CGM twin update every {args.interval:g} s)\n"
            f"  twins:  {url}/ui/twins        facility: {url}/ui/twins/Organization/{DEMO_ED}\n"
            f"  API:    {url}/docs\n"
            f"  tokens (paste on {url}/login or use as 'Authorization: Bearer ...'):\n"
            f"    clinician:  {clin}\n"
            f"    operations: {ops}\n"
            f"    patient {DEMO_PATIENT} only: {pat}\n"
            "Ctrl-C stops the stream and the server.\n",
            flush=True,
        )
        if args.duration is not None:
            counter = SseCounter(url, clin)
            counter.start()
            counter.ready.wait(10.0)
            timer = threading.Timer(args.duration, stop.set)
            timer.daemon = True
            timer.start()
        stream(
            url,
            dev,
            args.interval,
            args.seed,
            stop,
            acked,
            server,
            origin=now,
            max_readings=args.readings,
        )
    except KeyboardInterrupt:
        interrupted = True
        stop.set()
        print("\nstopping…", flush=True)
    finally:
        stop.set()
        ok = args.duration is None or interrupted or _smoke_check(url, secret, acked, counter)
        _stop_server(server)
    print(f"stopped: {len(acked)} device readings acknowledged; store kept at {store}")
    return 0 if ok else 1


def _smoke_check(url: str, secret: str, acked: list[str], counter: SseCounter | None) -> bool:
    """Every acknowledged reading is in the twin's series, and SSE delivered them live."""
    import httpx

    from healthtwin.serve.auth import mint_token

    tok = mint_token(secret, sub="demo-smoke", scope="user/*.rs", role="clinician")
    r = httpx.get(
        f"{url}/twins/Patient/{DEMO_PATIENT}/series",
        params={"code": "99504-3", "limit": 20000},
        headers={"Authorization": f"Bearer {tok}"},
        timeout=30.0,
    )
    r.raise_for_status()
    sources = {p["source"].split("/_history/")[0] for p in r.json()["points"]}
    missing = [a for a in acked if f"Observation/{a}" not in sources]
    time.sleep(0.5)
    live = counter.changes if counter else 0
    print(
        f"smoke: {len(acked)} readings acknowledged, {len(acked) - len(missing)} in the twin, "
        f"{live} delivered live over SSE"
        + (f" (SSE error: {counter.error})" if counter and counter.error else "")
    )
    return bool(acked) and not missing and live >= len(acked)


def _stop_server(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)


if __name__ == "__main__":
    raise SystemExit(main())
