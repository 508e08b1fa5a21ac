"""Chunked population engine: same seed, same results, in-process and on a local Ray cluster."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from healthtwin.research.engine import simulate_chunk, simulate_population


def test_chunk_seeds_do_not_depend_on_order_or_count() -> None:
    run = simulate_population(10_000, n_visits=52, seed=7, chunk_size=1000)
    # recompute chunks in reverse order, as independent workers would
    parts = [simulate_chunk(7, c, c * 1000, (c + 1) * 1000, 53, 100.0) for c in reversed(range(10))]
    y = np.concatenate([p["y"] for p in reversed(parts)])
    np.testing.assert_array_equal(run.y, y)
    assert run.y.shape == (10_000,) and run.label == "simulated"


def test_known_average_effect() -> None:
    run = simulate_population(10_000, seed=1, chunk_size=2500)
    ate, se = run.ate()
    # ITE = −Emax·d/(ED50+d)·(1 + 0.2 z), E[z] ≈ 0 → −1.2·100/150 = −0.8 %; the mean of
    # z adds ≤ 0.2·0.8·|E z| with |E z| < 0.05 (clipping of age/BMI), tolerance 4 SE + 0.01
    assert abs(ate + 0.8) < 4 * se + 0.01
    with pytest.raises(ValueError, match="engine"):
        simulate_population(10, engine="spark")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.xdist_group("ray")
def test_ray_equals_in_process(ray_cluster: None) -> None:
    a = simulate_population(20_000, seed=3, chunk_size=3000, engine="ray")
    b = simulate_population(20_000, seed=3, chunk_size=3000, engine="inprocess")
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.treated, b.treated)
    np.testing.assert_array_equal(a.mean_trajectory_treated, b.mean_trajectory_treated)
    assert a.engine == "ray"
