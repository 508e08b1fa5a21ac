"""The worked examples in docs/cohort-*.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = sorted(DOCS.glob("cohort-*.md"))


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_python_examples_run(page: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, f"{page.name} has no worked example"
    for code in blocks:
        exec(compile(code, str(page), "exec"), {"__name__": "__doc_example__"})


def test_pages_reference_existing_images() -> None:
    assert PAGES
    for page in PAGES:
        for img in re.findall(r"\]\((img/[^)]+)\)", page.read_text(encoding="utf-8")):
            assert (DOCS / img).is_file(), f"{page.name}: missing {img}"
