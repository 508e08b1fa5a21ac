"""Ingestion speed: `healthtwin ingest` end to end vs fhir.resources (R4B) parsing alone.

Both run on the same files in one run. healthtwin's figure is end to end (read, parse, fast
validation, reference resolution, normalisation with UCUM conversion, hash-chained journal,
DuckDB commit); fhir.resources' is parsing + model validation only, nothing stored.

    .venv/bin/python benchmarks/ingest.py            # ../shared/data Synthea (bulk + bundles)
    .venv/bin/python benchmarks/ingest.py PATH...    # your own files
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HEALTHTWIN_SHARED", REPO.parent / "shared")) / "data/fhir"


def _inputs(argv: list[str]) -> dict[str, list[str]]:
    if argv:
        return {"given": argv}
    if SHARED.is_dir():
        return {
            "Synthea Bulk NDJSON (10 patients)": [
                str(p) for p in sorted((SHARED / "synthea-bulk-10").glob("[A-Z]*.ndjson"))
            ],
            "Synthea transaction Bundles (56 patients)": [
                str(p) for p in sorted((SHARED / "synthea-bundles").glob("*.json"))
            ],
        }
    fx = REPO / "tests/fixtures/fhir/bulk"
    return {"fixture NDJSON": [str(p) for p in sorted(fx.glob("*.ndjson"))]}


def _healthtwin(files: list[str]) -> tuple[float, int]:
    """Wall time of the real CLI (`healthtwin ingest`) into a fresh store, and records."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "bench.duckdb"
        t0 = time.perf_counter()
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "healthtwin",
                "ingest",
                *files,
                "--store",
                str(store),
                "--quiet",
                "--format",
                "json",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        dt = time.perf_counter() - t0
        report = json.loads(out.stdout)
        # subtract interpreter + import start-up, measured separately
        t1 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "healthtwin", "--version"], capture_output=True, check=True
        )
        startup = time.perf_counter() - t1
        return dt - startup, int(report["records"])


def _fhir_resources(files: list[str]) -> tuple[float, int]:
    from fhir.resources.R4B import get_fhir_model_class

    from healthtwin.thread.fhir.reader import read_source, read_text

    objs = []
    for f in files:
        src, text = read_source(f)
        objs.extend(
            r.obj
            for r in read_text(src, text, ndjson=f.endswith(".ndjson") or None)
            if r.obj is not None
        )
    models = {o["resourceType"]: get_fhir_model_class(o["resourceType"]) for o in objs}
    texts = [json.dumps(o) for o in objs]
    t0 = time.perf_counter()
    for o, t in zip(objs, texts, strict=True):
        models[o["resourceType"]].model_validate_json(t)
    return time.perf_counter() - t0, len(objs)


def main(argv: list[str]) -> None:
    print(f"ingest benchmark ({os.cpu_count()} cores)")
    for name, files in _inputs(argv).items():
        t_h, n_h = _healthtwin(files)
        t_f, n_f = _fhir_resources(files)
        rh, rf = n_h / t_h, n_f / t_f
        print(f"{name}: {n_h} resources")
        print(f"  healthtwin ingest (end to end, stored): {rh:10,.0f} resources/s ({t_h:.2f} s)")
        print(f"  fhir.resources R4B parse only:          {rf:10,.0f} resources/s ({t_f:.2f} s)")
        print(
            f"  ratio healthtwin / fhir.resources:      {rh / rf:10.1f}x   "
            "(targets: >= 20,000 resources/s and >= 15x)"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
