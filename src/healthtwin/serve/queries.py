"""Read-model queries the Store interface does not offer (resource by id, keyset pages).

Plain SQL over the store's tables (the same schema on DuckDB and PostgreSQL; ``?``
placeholders are rewritten for drivers that use ``%s``). Run only on the gateway's store
thread. Pages are keyset-paginated (``WHERE key > last ORDER BY key LIMIT n``): a cursor
stays valid and stable while data is added, unlike OFFSET.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from healthtwin.twin.store.base import Store
from healthtwin.twin.store.common import STATE_COLS

#: LOINC codes the glucose twin reads (serum/plasma, blood, capillary, CGM interstitial)
GLUCOSE_CODES = ("2339-0", "2345-7", "41653-7", "14749-6", "15074-8", "99504-3")


def _rows(store: Store, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    con = store.con  # type: ignore[attr-defined]
    if getattr(store, "paramstyle", "qmark") == "format":
        sql = sql.replace("?", "%s")
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


def twin_page(
    store: Store,
    *,
    kind: str | None,
    search: str | None,
    only: str | None,
    after: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Twins ordered by id after ``after``; ``only`` confines to one twin (patient context)."""
    pat = f"%{search}%" if search else None
    rows = _rows(
        store,
        "SELECT twin_id, kind, sync_mode, name, created_at FROM twins "
        "WHERE (CAST(? AS VARCHAR) IS NULL OR kind = ?) "
        "AND (CAST(? AS VARCHAR) IS NULL OR twin_id ILIKE ? OR name ILIKE ?) "
        "AND (CAST(? AS VARCHAR) IS NULL OR twin_id = ?) "
        "AND twin_id > ? ORDER BY twin_id LIMIT ?",
        [kind, kind, pat, pat, pat, only, only, after or "", limit],
    )
    keys = ("twin_id", "kind", "sync_mode", "name", "created_at")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def twin_exact(store: Store, twin_id: str) -> dict[str, Any] | None:
    rows = _rows(
        store,
        "SELECT twin_id, kind, subject, sync_mode, name, created_at FROM twins WHERE twin_id = ?",
        [twin_id],
    )
    if not rows:
        return None
    keys = ("twin_id", "kind", "subject", "sync_mode", "name", "created_at")
    return dict(zip(keys, rows[0], strict=True))


def history_page(
    store: Store, twin_id: str, subject: str, after: int, limit: int
) -> list[dict[str, Any]]:
    rows = _rows(
        store,
        "SELECT seq, recorded_at, kind, payload, provenance FROM journal "
        "WHERE (twin_id = ? OR subject = ?) AND seq > ? ORDER BY seq LIMIT ?",
        [twin_id, subject, after, limit],
    )
    out = []
    for seq, rec, kind, p, pv in rows:
        out.append(
            {
                "seq": int(seq),
                "recorded_at": rec,
                "kind": kind,
                "payload": orjson.loads(p),
                "provenance": orjson.loads(pv),
            }
        )
    return out


def series(
    store: Store,
    subject: str,
    codes: list[str] | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Current facts of a subject in effective-time order (a timeline)."""
    code_sql = ""
    params: list[Any] = [subject, since, since, until, until]
    if codes:
        code_sql = f" AND code IN ({','.join('?' * len(codes))})"
        params += codes
    params.append(limit)
    rows = _rows(
        store,
        "SELECT system, code, display, num, unit, num_canonical, unit_canonical, unit_status, "
        "value_code, text, effective, recorded_at, rid, version FROM facts "
        "WHERE subject = ? AND superseded_at IS NULL AND status <> 'entered-in-error' "
        "AND (CAST(? AS TIMESTAMP) IS NULL OR effective >= ?) "
        "AND (CAST(? AS TIMESTAMP) IS NULL OR effective <= ?)" + code_sql + " "
        "ORDER BY effective NULLS FIRST, seq LIMIT ?",
        params,
    )
    keys = (
        "system",
        "code",
        "display",
        "num",
        "unit",
        "num_canonical",
        "unit_canonical",
        "unit_status",
        "value_code",
        "text",
        "effective",
        "recorded_at",
        "rid",
        "version",
    )
    return [dict(zip(keys, r, strict=True)) for r in rows]


def resource(store: Store, rid: str, version: int | None = None) -> dict[str, Any] | None:
    """The current (or a given) version of a resource: raw text, version, times, subject."""
    if version is None:
        sql = (
            "SELECT raw, version, recorded_at, deleted, subject, rtype FROM records "
            "WHERE rid = ? AND superseded_at IS NULL"
        )
        params: list[Any] = [rid]
    else:
        sql = (
            "SELECT raw, version, recorded_at, deleted, subject, rtype FROM records "
            "WHERE rid = ? AND version = ?"
        )
        params = [rid, version]
    rows = _rows(store, sql, params)
    if not rows:
        return None
    raw, ver, rec, deleted, subject, rtype = rows[0]
    return {
        "raw": raw,
        "version": int(ver),
        "recorded_at": rec,
        "deleted": bool(deleted),
        "subject": rid if rtype == "Patient" else subject,
    }


def versions(store: Store, rids: list[str]) -> dict[str, tuple[int, datetime, bool]]:
    """Current version, recorded time and deleted flag of each rid."""
    out: dict[str, tuple[int, datetime, bool]] = {}
    for i in range(0, len(rids), 500):
        chunk = rids[i : i + 500]
        rows = _rows(
            store,
            "SELECT rid, version, recorded_at, deleted FROM records WHERE superseded_at IS NULL "
            f"AND rid IN ({','.join('?' * len(chunk))})",
            list(chunk),
        )
        for rid, ver, rec, dele in rows:
            out[str(rid)] = (int(ver), rec, bool(dele))
    return out


def search(
    store: Store,
    rtype: str,
    *,
    patient: str | None,
    code: list[tuple[str | None, str]] | None,
    date_ge: datetime | None,
    date_le: datetime | None,
    after: str | None,
    limit: int,
) -> list[tuple[str, str, int, datetime]]:
    """Current resources of a type: (rid, raw, version, recorded_at) ordered by rid.

    ``patient`` filters by compartment (the subject; a Patient by its own id); ``code``
    (system or None, code) and the date bounds filter through the facts of the resource.
    """
    where = ["r.rtype = ?", "r.superseded_at IS NULL", "NOT r.deleted", "r.rid > ?"]
    params: list[Any] = [rtype, after or ""]
    if patient is not None:
        if rtype == "Patient":
            where.append("r.rid = ?")
        else:
            where.append("r.subject = ?")
        params.append(patient)
    fact_cond: list[str] = []
    if code:
        alts = []
        for system, c in code:
            if system:
                alts.append("(f.system = ? AND f.code = ?)")
                params_add: list[Any] = [system, c]
            else:
                alts.append("f.code = ?")
                params_add = [c]
            params.extend(params_add)
        fact_cond.append("(" + " OR ".join(alts) + ")")
    if date_ge is not None:
        fact_cond.append("f.effective >= ?")
        params.append(date_ge)
    if date_le is not None:
        fact_cond.append("f.effective <= ?")
        params.append(date_le)
    if fact_cond:
        where.append(
            "EXISTS (SELECT 1 FROM facts f WHERE f.rid = r.rid AND f.version = r.version AND "
            + " AND ".join(fact_cond)
            + ")"
        )
    params.append(limit)
    rows = _rows(
        store,
        "SELECT r.rid, r.raw, r.version, r.recorded_at FROM records r WHERE "
        + " AND ".join(where)
        + " ORDER BY r.rid LIMIT ?",
        params,
    )
    return [(str(a), str(b), int(c), d) for a, b, c, d in rows]


def export_rows(
    store: Store, rtype: str, patient: str | None, since: datetime | None, after: str, limit: int
) -> list[tuple[str, str]]:
    """(rid, raw) of current resources of a type for Bulk export, keyset by rid."""
    where = ["rtype = ?", "superseded_at IS NULL", "NOT deleted", "rid > ?"]
    params: list[Any] = [rtype, after]
    if patient is not None:
        where.append("rid = ?" if rtype == "Patient" else "subject = ?")
        params.append(patient)
    if since is not None:
        where.append("recorded_at > ?")
        params.append(since)
    params.append(limit)
    rows = _rows(
        store,
        "SELECT rid, raw FROM records WHERE " + " AND ".join(where) + " ORDER BY rid LIMIT ?",
        params,
    )
    return [(str(a), str(b)) for a, b in rows]


def resource_types(store: Store) -> list[str]:
    return [
        str(r[0])
        for r in _rows(
            store,
            "SELECT DISTINCT rtype FROM records WHERE superseded_at IS NULL AND NOT deleted "
            "ORDER BY rtype",
            [],
        )
    ]


def glucose_series(
    store: Store, subject: str, since: datetime | None
) -> list[tuple[datetime, float]]:
    """(effective, mg/dL) of the subject's current glucose facts, oldest first."""
    codes = ",".join("?" * len(GLUCOSE_CODES))
    rows = _rows(
        store,
        "SELECT effective, num_canonical, unit_canonical FROM facts WHERE subject = ? "
        "AND superseded_at IS NULL AND status <> 'entered-in-error' AND effective IS NOT NULL "
        f"AND num_canonical IS NOT NULL AND code IN ({codes}) "
        "AND (CAST(? AS TIMESTAMP) IS NULL OR effective >= ?) ORDER BY effective",
        [subject, *GLUCOSE_CODES, since, since],
    )
    # canonical unit of every glucose code is mg/dL (thread/terms/codes.py); others skipped
    return [(eff, float(v)) for eff, v, unit in rows if unit == "mg/dL"]


def current_states(
    store: Store, twin_ids: list[str] | None, limit: int = 0
) -> dict[str, list[dict[str, Any]]]:
    """The current state (``Store.state(t)`` with no cuts) of many twins in one query.

    Only twins whose subject is their own id (every twin made from a Patient or Organization
    resource). ``twin_ids=None`` takes the first ``limit`` twins by id (start-up preload).
    Same rule as ``Store.state``: per (system, code) the fact with the latest effective time
    (nulls last, then the highest journal sequence) among current facts, dropped when that
    fact is entered-in-error; tests check equality with ``Store.state`` for every twin.
    """
    if twin_ids is None:
        t_rows = _rows(
            store,
            "SELECT twin_id FROM twins WHERE subject = twin_id ORDER BY twin_id LIMIT ?",
            [limit],
        )
    else:
        t_rows = []
        for i in range(0, len(twin_ids), 500):
            chunk = twin_ids[i : i + 500]
            t_rows += _rows(
                store,
                "SELECT twin_id FROM twins WHERE subject = twin_id AND twin_id IN "
                f"({','.join('?' * len(chunk))})",
                list(chunk),
            )
    ids = [str(r[0]) for r in t_rows]
    out: dict[str, list[dict[str, Any]]] = {t: [] for t in ids}
    cols = ", ".join(STATE_COLS)
    for i in range(0, len(ids), 2000):
        chunk = ids[i : i + 2000]
        rows = _rows(
            store,
            f"SELECT subject, {cols} FROM ("
            f" SELECT subject, {cols}, row_number() OVER (PARTITION BY subject, system, code"
            "  ORDER BY effective DESC NULLS LAST, seq DESC) AS rn"
            " FROM facts WHERE superseded_at IS NULL AND subject IN "
            f"({','.join('?' * len(chunk))})"
            ") AS x WHERE rn = 1 AND status <> 'entered-in-error' "
            "ORDER BY subject, system, code",
            list(chunk),
        )
        for r in rows:
            out[str(r[0])].append(dict(zip(STATE_COLS, r[1:], strict=True)))
    return out
