"""The worked examples in the dynamics docs pages run (each ```python block, in order)."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = ["models-trajectory.md", "models-markov.md", "models-sde.md"]


@pytest.mark.parametrize("page", PAGES)
def test_doc_examples_run(page: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = (DOCS / page).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, f"{page} has no python example"
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"{page}[block {i}]", "exec"), {"__name__": "__doc__"})
        except Exception as exc:  # pragma: no cover - the message names the block
            raise AssertionError(f"{page} example {i} failed: {exc!r}") from exc
