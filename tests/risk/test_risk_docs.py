"""The worked examples in docs/models-risk.md and docs/models-evaluation.md run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize("page", ["models-risk.md", "models-evaluation.md"])
def test_risk_docs_examples_run(page: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = (DOCS / page).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, f"{page} has no python example"
    for code in blocks:
        exec(compile(code, f"{page}:example", "exec"), {"__name__": "__docs__"})
    out = capsys.readouterr().out
    if page == "models-risk.md":
        assert "[2.1 3.  5.4 6.1]" in out and "10.48" in out
