"""The worked example in docs/glucose-twin.md runs and does what the page says."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

DOC = Path(__file__).resolve().parents[2] / "docs" / "glucose-twin.md"


def test_docs_worked_example_runs() -> None:
    code = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert code, "no python example in the docs page"
    ns: dict[str, object] = {}
    exec(compile(code[0], str(DOC), "exec"), ns)  # noqa: S102 - our own docs page
    res = ns["res"]
    assert res.simulated  # type: ignore[attr-defined]
    # a 50 g meal with its CR bolus raises subcutaneous glucose by more than 10 mg/dL
    assert np.all(res.gsub.max(axis=1) > res.gsub[:, 0] + 10)  # type: ignore[attr-defined]
