"""Spec validation: clear errors naming the field; bundled specs; distribution sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import healthtwin.operations as ops_pkg
from healthtwin.operations.spec import Dist, SpecError, bundled_specs, load_spec, parse_spec


def _base() -> dict:
    return {
        "name": "x",
        "horizon": 100,
        "stations": {"s": {"servers": 1}},
        "classes": {
            "a": {
                "share": 1.0,
                "pathway": [
                    {"name": "x", "station": "s", "service": {"dist": "exponential", "mean": 5}}
                ],
            }
        },
        "arrivals": {"profile": [1.0]},
    }


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["classes"]["a"]["pathway"][0].update(station="nope"),
            r"classes.a.pathway\[0\].station: unknown station 'nope'",
        ),
        (lambda d: d["stations"]["s"].update(servers=-2), r"stations.s.servers"),
        (lambda d: d["classes"]["a"].update(share=0.5), r"shares must sum to 1"),
        (
            lambda d: d["classes"]["a"]["pathway"][0]["service"].pop("mean"),
            r"exponential distribution needs mean",
        ),
        (
            lambda d: d["classes"]["a"]["pathway"][0].update(next={"x": 0.5, "exit": 0.2}),
            r"next: probabilities must sum to 1",
        ),
        (lambda d: d["classes"]["a"]["pathway"][0].update(next={"y": 1.0}), r"unknown step 'y'"),
        (lambda d: d.update(warmup=200), r"warmup \(200.0 min\) must be < horizon"),
        (lambda d: d["stations"]["s"].update(colour="red"), r"stations.s.colour: Extra inputs"),
        (
            lambda d: d.update(
                disruptions=[{"kind": "capacity", "start": 5, "end": 2, "station": "s"}]
            ),
            r"disruptions.0: Value error, end must be after start",
        ),
    ],
)
def test_errors_name_the_field(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    d = _base()
    mutate(d)
    with pytest.raises(SpecError, match=message):
        parse_spec(d, "test.yaml")


def test_yaml_errors(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="YAML syntax error"):
        load_spec(p)
    with pytest.raises(SpecError, match="file not found"):
        load_spec(tmp_path / "missing.yaml")


def test_profile_csv(tmp_path: Path) -> None:
    (tmp_path / "rates.csv").write_text("period,arrival_rate\n0-1,2.5\n1-2,4.0\n")
    d = _base()
    d["arrivals"] = {"profile_csv": "rates.csv"}
    assert parse_spec(d, "t", tmp_path).arrivals.profile == [2.5, 4.0]
    d["arrivals"] = {"profile_csv": "missing.csv"}
    with pytest.raises(SpecError, match="arrivals.profile_csv: .*missing.csv not found"):
        parse_spec(d, "t", tmp_path)
    (tmp_path / "bad.csv").write_text("period,arrival_rate\n0-1,-1\n")
    d["arrivals"] = {"profile_csv": "bad.csv"}
    with pytest.raises(SpecError, match="must hold rates >= 0"):
        parse_spec(d, "t", tmp_path)


def test_bundled_specs_load_and_digest() -> None:
    names = bundled_specs()
    assert {"ed", "ward", "primary_care", "treatment_centre"} <= set(names)
    for n in names:
        sp = load_spec(n)
        assert len(sp.digest()) == 64
    prof = pd.read_csv(Path(ops_pkg.__file__).parent / "specs" / "ed_arrivals.csv")
    assert np.allclose(load_spec("treatment_centre").arrivals.profile, prof["arrival_rate"])


@given(
    mean=st.floats(0.5, 500),
    cv=st.floats(0.05, 2.0),
    kind=st.sampled_from(["lognormal", "gamma", "exponential", "deterministic"]),
)
@settings(max_examples=40, deadline=None, derandomize=True)  # Monte Carlo: fixed examples
def test_dist_moments(mean: float, cv: float, kind: str) -> None:
    d = (
        Dist(dist=kind, mean=mean, sd=mean * cv)
        if kind in {"lognormal", "gamma"}
        else Dist(dist=kind, mean=mean)
    )
    x = d.sample(np.random.default_rng(0), 20000)
    sd = np.sqrt(d.second_moment() - d.expected() ** 2)
    # sample mean within 5 SE (SE = sd / sqrt(n)) of the stated mean
    assert abs(x.mean() - mean) <= 5 * sd / np.sqrt(x.size) + 1e-9 * mean
    assert (x >= 0).all()
