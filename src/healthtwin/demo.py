"""`make demo`: ingest the sample data into a fresh store and show twins from the CLI.

Uses ../shared/data (Synthea) when present, else the small CC0 fixtures shipped in the repo.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    print(f"\n$ healthtwin {' '.join(args)}", flush=True)
    res = subprocess.run(
        [sys.executable, "-m", "healthtwin", *args], text=True, capture_output=True, check=False
    )
    print(res.stdout, end="")
    if res.stderr:
        print(res.stderr, end="", file=sys.stderr)
    if check and res.returncode not in (0, 1):
        raise SystemExit(res.returncode)
    return res


def main() -> None:
    shared = Path(os.environ.get("HEALTHTWIN_SHARED", REPO.parent / "shared")) / "data/fhir"
    if (shared / "synthea-bundles").is_dir():
        inputs = [str(shared / "synthea-bundles"), str(shared / "synthea-bulk-10")]
    else:
        print(f"(no shared data at {shared}: using the CC0 fixtures in tests/fixtures)")
        inputs = [str(REPO / "tests/fixtures/fhir")]
    store = REPO / "demo.duckdb"
    for suffix in ("", ".wal"):
        Path(f"{store}{suffix}").unlink(missing_ok=True)
    os.environ["HEALTHTWIN_STORE"] = str(store)
    _run("ingest", *inputs, "--quiet")
    _run("stats")
    twins = _run("twins", "list", "--kind", "patient", "--format", "json")
    import json

    listed = sorted(json.loads(twins.stdout), key=lambda t: -int(t["resources"]))
    ids = [t["twin_id"] for t in listed]  # show the twin with the most data
    if ids:
        _run("twin", "show", ids[0])
        _run("state", ids[0])
        _run("history", ids[0], "--limit", "8")
    _run("verify")
    _run(
        "risk",
        "ascvd",
        "--age",
        "55",
        "--sex",
        "female",
        "--race",
        "white",
        "--total-chol",
        "213",
        "--hdl",
        "50",
        "--sbp",
        "120",
        "--bp-treated",
        "no",
        "--smoker",
        "no",
        "--diabetes",
        "no",
    )
    print(f"\nstore: {store}  (try: HEALTHTWIN_STORE={store} .venv/bin/healthtwin twins list)")


if __name__ == "__main__":
    main()
