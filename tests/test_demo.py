"""`make demo` smoke mode: load, serve, stream synthetic CGM readings, see them live, stop.

Runs ``python -m healthtwin.demo --duration`` on the CC0 fixtures (no shared data) and a free
port; the demo itself checks that every acknowledged reading is in the twin and arrived over
SSE (exit 1 otherwise); here we check the exit, the printed URL/token and the store it leaves.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
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
        # stops after 3 acknowledged readings (count-based, so a loaded machine only makes
        # it slower); --duration is the time limit
        + ["--readings", "3", "--duration", "120", "--interval", "0.5"],
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
    assert acked == 3
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
    # the backfill carries the virtual patient's meals, boluses, weight and basal: the glucose
    # twin's thread reads them as inputs
    from healthtwin.care.glucose.thread import read_inputs

    with DuckDBStore(store) as st:
        kinds = {i.kind for i in read_inputs(st, "Patient/demo-cgm").items}
    assert {"cgm", "carbs", "bolus", "basal", "weight"} <= kinds


def test_device_stream_is_the_glucose_twins_physiological_stream() -> None:
    from datetime import UTC, timedelta

    import numpy as np

    from healthtwin.care.glucose.stream import stream_patient
    from healthtwin.demo_feed import BACKFILL_H, LEAD_H, backfill_times, device_stream

    origin = datetime(2026, 5, 4, 9, 30, 12, 500000, tzinfo=UTC)
    start = origin - timedelta(hours=LEAD_H)
    # oracle: the glucose twin's stream, noiseless, 1-min readings = subcutaneous glucose
    ref = list(stream_patient("adult#001", start, 60 * 40, 3, patient_id="p",
                              cgm_every_min=1, include_patient=False, noise=False))  # fmt: skip
    gs = {r["effectiveDateTime"]: r["valueQuantity"]["value"] for r in ref
          if r["resourceType"] == "Observation" and r["code"]["coding"][0]["code"] == "99504-3"}  # fmt: skip
    back = list(device_stream("p", backfill_times(origin, BACKFILL_H), 3, origin=origin))
    live_t = [origin + timedelta(seconds=7.5 * i) for i in range(40)]
    live_t += [origin + timedelta(minutes=20 * i) for i in range(1, 80)]
    live = list(device_stream("p", iter(live_t), 3, origin=origin))
    cgm = [r for r in back + live if r["id"].startswith("cgm-")]
    # honest times: one reading at each time asked for, dated exactly then
    want = [*backfill_times(origin, BACKFILL_H), *live_t]
    assert [r["effectiveDateTime"] for r in cgm] == [t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                                                     for t in want]  # fmt: skip
    # values: the simulated glucose (interpolated) + Dexcom noise (heavy-tailed, sd ~ 15)
    res = []
    for r, t in zip(cgm, want, strict=True):
        m = (t - start).total_seconds() / 60
        k = int(m)
        g = [gs[(start + timedelta(minutes=j)).strftime("%Y-%m-%dT%H:%M:%SZ")] for j in (k, k + 1)]
        res.append(r["valueQuantity"]["value"] - (g[0] + (m - k) * (g[1] - g[0])))
    assert abs(float(np.median(res))) < 10.0 and float(np.max(np.abs(res))) < 100.0
    # readings 7.5 s apart move smoothly (glucose and sensor noise are continuous in time)
    fast = [r["valueQuantity"]["value"] for r in cgm[72 : 72 + 40]]
    assert float(np.max(np.abs(np.diff(fast)))) < 3.0
    # every meal, bolus (from 6 h before the start), weight and basal exactly once
    others = [r for r in back + live if not r["id"].startswith("cgm-")]
    cut = (origin - timedelta(hours=BACKFILL_H)).replace(microsecond=0)
    last = live_t[-1].replace(microsecond=0)
    expect = [r["id"] for r in ref if r["resourceType"] != "Observation"
              or r["code"]["coding"][0]["code"] != "99504-3"]  # fmt: skip
    expect = [i for i in expect
              if i.endswith(("-weight", "-basal")) or cut <= _when(ref, i) <= last]  # fmt: skip
    assert sorted(r["id"] for r in others) == sorted(expect)
    assert any("-bolus-" in i for i in expect) and any("-carbs-" in i for i in expect)
    assert len(back) > 72


def _when(rows: list[dict], rid: str) -> datetime:
    r = next(x for x in rows if x["id"] == rid)
    return datetime.fromisoformat(r["effectiveDateTime"].replace("Z", "+00:00"))
