"""Property-based checks of the engine (hypothesis): flow balance and capacity bounds."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from healthtwin.operations.engine import RunOptions, run_replication
from healthtwin.operations.spec import parse_spec


@given(
    rate=st.floats(0.5, 30.0),
    servers=st.integers(0, 6),
    mean=st.floats(1.0, 60.0),
    patience=st.one_of(st.none(), st.floats(1.0, 120.0)),
    max_queue=st.one_of(st.none(), st.integers(0, 5)),
    preemptive=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
@settings(max_examples=40, deadline=None)
def test_flow_balance_and_capacity(
    rate: float,
    servers: int,
    mean: float,
    patience: float | None,
    max_queue: int | None,
    preemptive: bool,
    seed: int,
) -> None:
    # Every arrival is, at the end, either gone (served, reneged or blocked) or still present;
    # busy servers never exceed the capacity; utilisation lies in [0, 1].
    cls = {
        "share": 0.5,
        "pathway": [
            {
                "name": "a",
                "station": "s",
                "service": {"dist": "exponential", "mean": mean},
                "next": {"b": 0.5, "exit": 0.5},
            },
            {
                "name": "b",
                "station": "s",
                "service": {"dist": "gamma", "mean": mean, "sd": mean / 2},
            },
        ],
    }
    hi = dict(cls, priority=1)
    lo = dict(cls, priority=2)
    if patience is not None:
        lo["patience"] = {"dist": "exponential", "mean": patience}
    station: dict = {"servers": servers, "preemptive": preemptive}
    if max_queue is not None:
        station["max_queue"] = max_queue
    spec = parse_spec(
        {
            "name": "prop",
            "horizon": 600.0,
            "stations": {"s": station},
            "classes": {"hi": hi, "lo": lo},
            "arrivals": {"profile": [rate, rate / 2]},
            "sample_every": 10.0,
        }
    )
    r = run_replication(spec, seed, 0, RunOptions(horizons=[600.0]))
    k = r.kpis
    n = k["arrivals[1]"]
    lost = (k["lwbs_fraction[1]"] + k["blocked_fraction[1]"]) * n if n else 0.0
    present = r.horizon_stats[600.0]["patients_present[1]"]
    assert np.isclose(k["throughput[1]"] + lost + present, n)
    assert (r.occupancy[:, 0] <= servers).all()
    if servers > 0:
        assert 0.0 <= k["utilisation/s[1]"] <= 1.0 + 1e-12
    else:
        assert k["throughput[1]"] == 0
