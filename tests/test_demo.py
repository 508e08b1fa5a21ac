"""`make demo` smoke mode: load, serve, stream synthetic CGM readings, see them live, stop.

Runs ``python -m healthtwin.demo --duration`` on the CC0 fixtures (no shared data) and a free
port; the demo itself checks that every acknowledged reading is in the twin and arrived over
SSE (exit 1 otherwise); here we check the exit, the printed URL/token and the store it leaves.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from healthtwin.twin.store.duckdb_store import DuckDBStore

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.xdist_group("demo")
def test_demo_smoke_mode(tmp_path: Path) -> None:
    store = tmp_path / "demo.duckdb"
    env = dict(
        os.environ, HEALTHTWIN_SHARED=str(tmp_path / "no-shared"), PYTHONPATH=str(REPO / "src")
    )
    res = subprocess.run(
        [sys.executable, "-m", "healthtwin.demo", "--port", "0", "--store", str(store)]
        + ["--duration", "4", "--interval", "0.5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    assert "/login?next=/ui/twins/Patient/demo-cgm#token=ey" in out
    line = next(x for x in out.splitlines() if x.startswith("smoke:"))
    acked = int(line.split()[1])
    assert acked >= 2
    assert f"{acked} in the twin, {acked} delivered live over SSE" in line
    # the store the demo leaves: the backfill (6 h every 5 min) plus the live readings
    with DuckDBStore(store) as st:
        n = st.con.execute(
            "SELECT count(*) FROM facts WHERE subject = 'Patient/demo-cgm' AND code = '99504-3' "
            "AND superseded_at IS NULL"
        ).fetchone()[0]
        assert n == 72 + acked
        twins = dict(st.con.execute("SELECT kind, count(*) FROM twins GROUP BY kind").fetchall())
        assert twins.get("patient", 0) >= 2 and twins.get("facility", 0) >= 1
