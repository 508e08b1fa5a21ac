"""Shared test fixtures.

``shared_data`` points at ``../shared/data`` (or ``$HEALTHTWIN_SHARED/data``); tests that need
it skip with a visible reason when it is absent (a fresh clone elsewhere).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _shared_root() -> Path:
    env = os.environ.get("HEALTHTWIN_SHARED")
    return Path(env) if env else REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = _shared_root() / "data"
    if not root.is_dir():
        pytest.skip(f"shared reference data not found at {root} (set HEALTHTWIN_SHARED)")
    return root


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES
