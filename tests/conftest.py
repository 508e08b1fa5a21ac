"""Shared test fixtures.

``shared_data`` points at ``../shared/data`` (or ``$HEALTHTWIN_SHARED/data``); tests that need
it skip with a visible reason when it is absent (a fresh clone elsewhere).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# No per-example deadline: a deadline is a timed assertion, and a loaded 2-core machine (or a
# first call that loads a parser) trips it without any defect. Speed lives in benchmarks/.
settings.register_profile("healthtwin", deadline=None)
settings.load_profile("healthtwin")

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


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    """A throwaway PostgreSQL cluster for this test session (one per xdist worker).

    Debian's ``postgresql`` server binaries are used (installed with apt-get when missing and
    running as root, as in CI); skips with the reason only when they can be neither found
    nor installed.
    """
    from healthtwin.twin.store.pgcluster import LocalCluster, find_bindir, install_postgres

    if find_bindir() is None and not install_postgres():
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) not found and cannot be installed "
            "here (needs root and apt-get): install Debian's `postgresql` package"
        )
    cluster = LocalCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
