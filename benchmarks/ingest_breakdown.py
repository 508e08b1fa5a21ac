"""Where an ingest's CPU time goes, phase by phase (single thread, best of 3 after a warm-up).

Phases are timed around the real calls (reader, convert_records, duckdb_bulk.prepare, the
pickling that carries a chunk from the reader process to the store, DuckDBStore.write_prepared),
so the figures add up to one whole ingest run serially. In ``healthtwin ingest`` the phases up
to the pickling run in the reader process and the rest in the store's process, on two cores.
CPU seconds (process time).

    .venv/bin/python benchmarks/ingest_breakdown.py bundles   # ../shared Synthea Bundles
    .venv/bin/python benchmarks/ingest_breakdown.py ndjson    # ../shared Synthea Bulk NDJSON
"""

from __future__ import annotations

import collections
import gc
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from healthtwin.thread.fhir import ingest, reader
from healthtwin.twin.store import duckdb_bulk
from healthtwin.twin.store import duckdb_store as ds

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HEALTHTWIN_SHARED", REPO.parent / "shared")) / "data/fhir"


def main(which: str) -> None:
    if which == "ndjson":
        files = sorted(str(p) for p in (SHARED / "synthea-bulk-10").glob("[A-Z]*.ndjson"))
    else:
        files = sorted(str(p) for p in (SHARED / "synthea-bundles").glob("*.json"))
    warm = ds.DuckDBStore(":memory:")
    ingest.ingest_paths(warm, [str(REPO / "tests/fixtures/fhir/bulk")])
    pt = time.process_time
    gc.disable()  # as ingest_paths does during an ingest
    best: dict[str, float] = {}
    n = 0
    for _ in range(3):
        t: collections.Counter[str] = collections.Counter()
        c = pt()
        datas = [reader.read_source_bytes(f) for f in files]
        t["read files"] = pt() - c
        c = pt()
        recs = [
            list(reader.read_text(name, data, ndjson=True if f.endswith(".ndjson") else None))
            for (name, data), f in zip(datas, files, strict=True)
        ]
        t["reader: msgspec spans + fast-path view"] = pt() - c
        c = pt()
        chunks: list[tuple[list[Any], list[Any]]] = []
        for rs in recs:
            step = len(rs) if any(r.bundle for r in rs) else 1000
            for i in range(0, len(rs), max(step, 1)):
                chunks.append(ingest.convert_records(rs[i : i + step]))
        t["validation + references + normalisation"] = pt() - c
        c = pt()
        prepared = [duckdb_bulk.prepare(a, r) for a, r in chunks]
        t["prepare: Arrow columns (duckdb_bulk)"] = pt() - c
        c = pt()
        prepared = [
            pickle.loads(pickle.dumps(p, protocol=pickle.HIGHEST_PROTOCOL)) for p in prepared
        ]
        t["to the store process: pickle + unpickle"] = pt() - c
        # grouped into transactions of about 5,000 records, as ingest_paths does
        batches: list[list[Any]] = [[]]
        size = 0
        for p in prepared:
            if size and size + len(p) > 5000:
                batches.append([])
                size = 0
            batches[-1].append(p)
            size += len(p)
        c = pt()
        store = ds.DuckDBStore(Path(tempfile.mkdtemp()) / "b.duckdb")
        t["open store"] = pt() - c
        write = duckdb_bulk.write

        def timed_write(*a: Any, _f: Any = write, _t: Any = t) -> Any:
            c0 = pt()
            out = _f(*a)
            _t["_write"] += pt() - c0
            return out

        duckdb_bulk.write = timed_write  # type: ignore[assignment]
        c = pt()
        with duckdb_bulk.one_thread(store):
            for b in batches:
                store.write_prepared(b, source="bench")
        wb = pt() - c
        duckdb_bulk.write = write  # type: ignore[assignment]
        c = pt()
        store.close()
        t["close (checkpoint)"] = pt() - c
        t["store: chain, columns, DuckDB INSERTs"] = t.pop("_write")
        t["store: COMMIT (WAL, auto-checkpoints)"] = wb - t["store: chain, columns, DuckDB INSERTs"]
        t["total"] = sum(t.values())
        for k, v in t.items():
            best[k] = min(best.get(k, float("inf")), v)
        n = sum(len(r) for r in recs)
    print(f"{which}: {n} records, load average {os.getloadavg()[0]:.1f}; CPU, best of 3")
    for k, v in best.items():
        print(f"  {k:42s} {v:6.3f} s  {v / n * 1e6:6.1f} us/resource")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bundles")
