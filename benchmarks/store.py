"""Store backends side by side: PostgreSQL (``PostgresStore``) vs DuckDB (``DuckDBStore``).

One run, same inputs, interleaved rounds (DuckDB, PostgreSQL, DuckDB, ...) on a throwaway
PostgreSQL cluster with PostgreSQL's durable defaults (fsync on, synchronous commit):

* **ingest**: Synthea Bulk NDJSON (``../shared/data``; the test fixtures otherwise), already
  converted to records, written in batches of 1,000 (records/s);
* **small writes**: one event per transaction (``append_events``), as an audited API does
  (transactions/s);
* **concurrent small writes** (PostgreSQL only: DuckDB allows one writing process): N
  processes appending at once (transactions/s summed), then the chain is verified.

    .venv/bin/python benchmarks/store.py [--rounds 3] [--workers 4]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from healthtwin.thread.fhir.ingest import convert_records
from healthtwin.thread.fhir.reader import read_source, read_text
from healthtwin.twin.model import Event
from healthtwin.twin.store.duckdb_store import DuckDBStore
from healthtwin.twin.store.pgcluster import LocalCluster
from healthtwin.twin.store.postgres_store import PostgresStore

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HEALTHTWIN_SHARED", REPO.parent / "shared")) / "data/fhir"


def _records() -> tuple[str, list[Any]]:
    folder = SHARED / "synthea-bulk-10"
    name = "Synthea Bulk NDJSON (10 patients)"
    if not folder.is_dir():
        folder, name = REPO / "tests/fixtures/fhir/bulk", "fixture NDJSON"
    acc: list[Any] = []
    for f in sorted(folder.glob("[A-Z]*.ndjson")):
        src, text = read_source(str(f))
        a, _rej = convert_records(list(read_text(src, text, ndjson=True)))
        acc += a
    return name, acc


def _ingest(store: Any, records: list[Any]) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(records), 1000):
        store.write_batch(records[i : i + 1000], source="bench")
    return time.perf_counter() - t0


def _small(store: Any, n: int) -> float:
    ev = Event("audit.read", {"who": "bench", "what": "state"}, {"source": "bench"}, "Patient/x")
    t0 = time.perf_counter()
    for _ in range(n):
        store.append_events([ev])
    return time.perf_counter() - t0


def _worker(url: str, n: int, barrier: Any, out: Any) -> None:
    store = PostgresStore(url)
    barrier.wait()
    out.put(_small(store, n))
    store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--small", type=int, default=300, help="transactions per small-write run")
    args = ap.parse_args()
    name, records = _records()
    print(f"input: {name}, {len(records)} records; load {os.getloadavg()}")
    res: dict[str, list[float]] = {}
    with LocalCluster(durable=True) as pg, tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for backend in ("duckdb", "postgres"):
                if backend == "duckdb":
                    store: Any = DuckDBStore(Path(tmp) / f"b{r}.duckdb")
                else:
                    store = PostgresStore(f"{pg.url}?schema=b{r}")
                res.setdefault(f"ingest {backend}", []).append(
                    len(records) / _ingest(store, records)
                )
                res.setdefault(f"small {backend}", []).append(
                    args.small / _small(store, args.small)
                )
                assert store.verify().ok
                store.close()
        ctx = mp.get_context("fork")
        for r in range(args.rounds):
            url = f"{pg.url}?schema=c{r}"
            PostgresStore(url).close()
            barrier, out = ctx.Barrier(args.workers), ctx.Queue()
            procs = [
                ctx.Process(target=_worker, args=(url, args.small, barrier, out))
                for _ in range(args.workers)
            ]
            for p in procs:
                p.start()
            times = [out.get() for _ in procs]
            for p in procs:
                p.join()
            res.setdefault(f"small postgres x{args.workers} processes", []).append(
                args.workers * args.small / max(times)
            )
            with PostgresStore(url, read_only=True) as s:
                assert s.verify().ok
    print(f"load after: {os.getloadavg()}")
    med = {k: statistics.median(v) for k, v in res.items()}
    for k, v in med.items():
        unit = "records/s" if k.startswith("ingest") else "transactions/s"
        print(f"{k:38s} {v:10.0f} {unit}  (rounds: {', '.join(f'{x:.0f}' for x in res[k])})")
    print(f"ratio ingest postgres/duckdb: {med['ingest postgres'] / med['ingest duckdb']:.2f}")
    print(f"ratio small  postgres/duckdb: {med['small postgres'] / med['small duckdb']:.2f}")


if __name__ == "__main__":
    main()
