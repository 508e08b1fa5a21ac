"""The worked examples in docs/models-bayesnet.md and docs/models-mdp.md run, and say what they claim."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _run_blocks(page: str) -> dict[str, object]:
    text = (DOCS / page).read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, f"{page}: no python example"
    ns: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, page, "exec"), ns)  # noqa: S102 - our own documentation
    return ns


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_bayesnet_page_example_runs() -> None:
    ns = _run_blocks("models-bayesnet.md")
    post = ns["post"]
    assert post["lung"].shape == (3, 2)  # type: ignore[index]
    low, high = ns["low"], ns["high"]
    assert np.all(np.asarray(low) <= np.asarray(high))


def test_mdp_page_example_runs_and_fqi_matches_exact_policy() -> None:
    ns = _run_blocks("models-mdp.md")
    exact, approx, fqi = ns["exact"], ns["approx"], ns["fqi"]
    v = exact.V  # type: ignore[attr-defined]
    assert np.all(approx.V_lower <= v + 1e-9) and np.all(v <= approx.V_upper + 1e-9)  # type: ignore[attr-defined]
    states = np.arange(5, dtype=float)[:, None]
    np.testing.assert_array_equal(fqi.predict(states), exact.policy)  # type: ignore[attr-defined]
