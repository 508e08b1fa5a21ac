"""Read-model queries the Store interface does not offer (resource by id, keyset pages).

Plain SQL over the store's tables (the same schema on DuckDB and PostgreSQL). Run only on
the gateway's store thread.
"""

from __future__ import annotations

from typing import Any

from healthtwin.twin.store.base import Store


def _rows(store: Store, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    con = store.con  # type: ignore[attr-defined]
    return list(con.execute(sql, params).fetchall())


def subject_of(store: Store, rid: str) -> tuple[bool, str | None]:
    """(exists, compartment): a Patient is its own compartment; else the record's subject."""
    rows = _rows(
        store,
        "SELECT rtype, subject FROM records WHERE rid = ? AND superseded_at IS NULL "
        "AND NOT deleted",
        [rid],
    )
    if not rows:
        return False, None
    rtype, subject = rows[0]
    return True, rid if rtype == "Patient" else subject
