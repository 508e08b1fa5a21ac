"""kill -9 during ingest: no committed batch lost, no half batch left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import glucose, patient

from healthtwin.twin.store.duckdb_store import DuckDBStore


def _running_on(store: object) -> list[str]:
    """Processes whose command line names ``store`` (the ingest and its readers)."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if str(store).encode() in f.read():
                        out.append(pid)
            except OSError:
                continue
    return out


@pytest.mark.slow
def test_kill_9_mid_ingest_leaves_whole_batches(tmp_path) -> None:
    data = tmp_path / "big.ndjson"
    with data.open("w") as f:
        for p in range(400):
            f.write(json.dumps(patient(f"p{p}")) + "\n")
            for k in range(99):
                f.write(json.dumps(glucose(f"g{p}-{k}", 80 + k, pid=f"p{p}")) + "\n")
    store = tmp_path / "crash.duckdb"
    cmd = [
        sys.executable,
        "-m",
        "healthtwin",
        "ingest",
        str(data),
        "--store",
        str(store),
        "--batch-size",
        "1000",
        "--quiet",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # wait until at least one batch has committed, then kill mid-way
    deadline = time.time() + 60
    while time.time() < deadline:
        time.sleep(0.2)
        if store.exists() and os.path.getsize(store) > 200_000:
            break
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if sys.platform.startswith("linux"):  # its reader processes die with it (PDEATHSIG)
        deadline = time.time() + 10
        while _running_on(store) and time.time() < deadline:
            time.sleep(0.1)
        assert not _running_on(store)
    s = DuckDBStore(store)
    batches = s.con.execute("SELECT batch_id, created FROM batches").fetchall()
    n_records = s.con.execute("SELECT count(*) FROM records").fetchall()[0][0]
    assert n_records == sum(c for _, c in batches)  # whole batches only
    assert n_records % 1000 == 0 and n_records < 40_000  # it really was interrupted
    orphans = s.con.execute(
        "SELECT count(*) FROM records WHERE batch_id NOT IN (SELECT batch_id FROM batches)"
    ).fetchall()[0][0]
    assert orphans == 0
    assert s.verify().ok
    s.close()
    # a re-run completes the job; what was committed is reported unchanged
    done = subprocess.run(cmd + ["--format", "json"], capture_output=True, text=True)
    out = json.loads(done.stdout)
    assert out["unchanged"] == n_records and out["created"] == 40_000 - n_records
    s = DuckDBStore(store, read_only=True)
    assert s.con.execute("SELECT count(*) FROM records").fetchall()[0][0] == 40_000
    assert s.verify().ok
