"""Ingestion speed: `healthtwin ingest` end to end vs fhir.resources (R4B) parsing alone.

Both run on the same files in one run, interleaved, best of ``--repeat`` rounds (default 3).
healthtwin's figure is end to end: the real CLI in a fresh process reads the files, parses,
validates on the fast path, resolves references, normalises (UCUM conversion), seals every
event into the hash-chained journal and commits each batch to a fresh DuckDB store, which it
closes. The time is the command's own (``seconds``/``cpu_seconds`` of `ingest --format json`:
from the start of the command, its imports included, to the closed store); the interpreter
start-up is left out of the ratio (it is printed too).
The peers only parse and validate, nothing is stored:

* fhir.resources R4B ``model_validate_json`` on each resource (compact JSON text), and
* for Bundle input, fhir.resources ``Bundle.model_validate_json`` on each whole file.

The ratio is taken against the faster peer. The machine may be shared: the load average is
printed with every round, and CPU time (user + system, of the ingest process and its threads;
in-process for the peers; for healthtwin, its reader processes included) beside every wall
time, so the figures can be read under load.

    .venv/bin/python benchmarks/ingest.py            # ../shared/data Synthea (bulk + bundles)
    .venv/bin/python benchmarks/ingest.py PATH...    # your own files
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HEALTHTWIN_SHARED", REPO.parent / "shared")) / "data/fhir"


@dataclass
class Run:
    wall: float
    cpu: float
    n: int

    @property
    def rate(self) -> float:
        return self.n / self.wall


def _inputs(argv: list[str]) -> dict[str, list[str]]:
    if argv:
        return {"given": argv}
    if SHARED.is_dir():
        return {
            "Synthea Bulk NDJSON (10 patients)": [
                str(p) for p in sorted((SHARED / "synthea-bulk-10").glob("[A-Z]*.ndjson"))
            ],
            "Synthea transaction Bundles, pretty-printed (56 patients)": [
                str(p) for p in sorted((SHARED / "synthea-bundles").glob("*.json"))
            ],
        }
    fx = REPO / "tests/fixtures/fhir/bulk"
    return {"fixture NDJSON": [str(p) for p in sorted(fx.glob("*.ndjson"))]}


def _child_cpu() -> float:  # user + system of finished children
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _timed_child(cmd: list[str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    c0, t0 = _child_cpu(), time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return time.perf_counter() - t0, _child_cpu() - c0, out


def _healthtwin(files: list[str]) -> tuple[Run, float]:
    """The real CLI (`healthtwin ingest`) into a fresh store: (the CLI's own timing of the
    whole command after start-up, outer wall time including interpreter start-up)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "bench.duckdb"
        cmd = [sys.executable, "-m", "healthtwin", "ingest", *files, "--store", str(store)]
        wall, _cpu, out = _timed_child([*cmd, "--quiet", "--format", "json"])
        if out.returncode not in (0, 1):
            raise SystemExit(f"healthtwin ingest failed:\n{out.stderr}")
        rep = json.loads(out.stdout)
        return Run(float(rep["seconds"]), float(rep["cpu_seconds"]), int(rep["records"])), wall


def _resource_texts(files: list[str]) -> list[tuple[str, str]]:
    from healthtwin.thread.fhir.reader import read_source, read_text

    out = []
    for f in files:
        src, text = read_source(f)
        for r in read_text(src, text, ndjson=f.endswith(".ndjson") or None):
            if r.obj is not None:
                out.append((r.obj["resourceType"], json.dumps(r.obj)))
    return out


def _fhir_resources(texts: list[tuple[str, str]]) -> Run:
    """fhir.resources R4B ``model_validate_json`` on each resource."""
    from fhir.resources.R4B import get_fhir_model_class

    models = {t: get_fhir_model_class(t) for t, _ in texts}
    c0, t0 = time.process_time(), time.perf_counter()
    for t, text in texts:
        models[t].model_validate_json(text)
    return Run(time.perf_counter() - t0, time.process_time() - c0, len(texts))


def _fhir_bundles(files: list[str]) -> Run | None:
    """fhir.resources R4B ``Bundle.model_validate_json`` on each whole Bundle file."""
    from fhir.resources.R4B.bundle import Bundle

    texts = [Path(f).read_text(encoding="utf-8") for f in files if not f.endswith(".ndjson")]
    if not texts or not all('"Bundle"' in t[:200] for t in texts):
        return None
    n = 0
    c0, t0 = time.process_time(), time.perf_counter()
    for text in texts:
        b = Bundle.model_validate_json(text)
        n += sum(1 for e in b.entry or [] if e.resource is not None)
    return Run(time.perf_counter() - t0, time.process_time() - c0, n)


def _best(runs: list[Run]) -> Run:
    return min(runs, key=lambda r: r.wall)


def _line(label: str, r: Run) -> str:
    return (
        f"  {label:44s} {r.rate:9,.0f} resources/s  ({r.wall:.2f} s wall, "
        f"{r.cpu:.2f} s CPU = {r.n / max(r.cpu, 1e-9):,.0f} resources per CPU-second)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"ingest benchmark ({os.cpu_count()} cores, best of {args.repeat} interleaved rounds)")
    for name, files in _inputs(args.paths).items():
        texts = _resource_texts(files)
        ours: list[Run] = []
        outer: list[float] = []
        per_resource: list[Run] = []
        bundles: list[Run] = []
        print(f"{name}:")
        for k in range(args.repeat):
            load = os.getloadavg()
            run, wall = _healthtwin(files)
            ours.append(run)
            outer.append(wall)
            per_resource.append(_fhir_resources(texts))
            b = _fhir_bundles(files)
            if b is not None:
                bundles.append(b)
            print(
                f"  round {k + 1}: load average {load[0]:.1f} -> {os.getloadavg()[0]:.1f}; "
                f"healthtwin {ours[-1].rate:,.0f}/s, fhir.resources {per_resource[-1].rate:,.0f}/s"
                + (f", Bundle {bundles[-1].rate:,.0f}/s" if bundles else "")
            )
        h, f = _best(ours), _best(per_resource)
        print(f"  {h.n} resources")
        print(_line("healthtwin ingest (end to end, stored):", h))
        print(
            f"  {'':44s} (whole command with interpreter start-up: {min(outer):.2f} s wall, "
            f"{h.n / min(outer):,.0f} resources/s)"
        )
        print(_line("fhir.resources R4B, each resource:", f))
        peers = [f]
        if bundles:
            fb = _best(bundles)
            peers.append(fb)
            print(_line("fhir.resources R4B, whole Bundles:", fb))
        faster = max(peers, key=lambda r: r.rate)
        print(
            f"  ratio healthtwin / faster fhir.resources: {h.rate / faster.rate:5.1f}x wall, "
            f"{(h.n / h.cpu) / max(p.n / p.cpu for p in peers):5.1f}x per CPU-second "
            "(targets: >= 20,000 resources/s and >= 15x)"
        )


if __name__ == "__main__":
    main()
