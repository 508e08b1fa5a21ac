"""The embedded default store: one DuckDB file, no server.

Tables: ``journal`` (append-only, hash-chained events), ``records`` (every version of every
inbound record with its exact original text), ``facts`` (the typed values, a projection of the
journal that can be rebuilt from it), ``refs`` / ``identifiers`` (reference resolution),
``twins``, ``quarantine``, ``batches``. Times are naive UTC ``TIMESTAMP``s.

A batch is one DuckDB transaction: a crash (even ``kill -9``) leaves the file as before or
after the batch, never half of it (DuckDB's write-ahead log replays only committed work).
"""

from __future__ import annotations

import hashlib
import operator
import os
import threading
import uuid
from collections.abc import Collection, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa

from healthtwin.twin.journal import GENESIS, SEP, VerifyReport, verify_chain
from healthtwin.twin.model import Event, InboundRecord, Rejected, SyncMode, TwinKind
from healthtwin.twin.store.arrowcols import array as _array
from healthtwin.twin.store.arrowcols import table as _table
from healthtwin.twin.store.base import BatchResult, Store, StoreError
from healthtwin.twin.store.common import (
    FACT_COLS,
    SCHEMA_VERSION,
    STATE_COLS,
    TWIN_KIND_OF_TYPE,
    naive,
    name_of,
    utcnow,
)

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR, value VARCHAR);
CREATE TABLE IF NOT EXISTS journal (
  seq BIGINT, event_id VARCHAR, recorded_at TIMESTAMP, kind VARCHAR, twin_id VARCHAR,
  subject VARCHAR, batch_id VARCHAR, payload VARCHAR, provenance VARCHAR,
  prev_hash VARCHAR, hash VARCHAR);
CREATE TABLE IF NOT EXISTS records (
  rid VARCHAR, version INTEGER, rtype VARCHAR, content_sha256 VARCHAR,
  raw VARCHAR USING COMPRESSION zstd,
  subject VARCHAR, seq BIGINT, recorded_at TIMESTAMP, superseded_at TIMESTAMP,
  deleted BOOLEAN, validation VARCHAR, source VARCHAR, locator VARCHAR, batch_id VARCHAR);
CREATE TABLE IF NOT EXISTS facts (
  rid VARCHAR, version INTEGER, fkey VARCHAR, subject VARCHAR, system VARCHAR, code VARCHAR,
  display VARCHAR, kind VARCHAR, num DOUBLE, unit VARCHAR, num_canonical DOUBLE,
  unit_canonical VARCHAR, unit_status VARCHAR, value_system VARCHAR, value_code VARCHAR,
  text VARCHAR, low DOUBLE, high DOUBLE, mean DOUBLE, sd DOUBLE, quantiles VARCHAR,
  effective TIMESTAMP, effective_text VARCHAR, status VARCHAR, recorded_at TIMESTAMP,
  superseded_at TIMESTAMP, seq BIGINT);
CREATE TABLE IF NOT EXISTS refs (
  rid VARCHAR, version INTEGER, reference VARCHAR, target VARCHAR, status VARCHAR);
CREATE TABLE IF NOT EXISTS identifiers (rid VARCHAR, system VARCHAR, value VARCHAR);
CREATE TABLE IF NOT EXISTS twins (
  twin_id VARCHAR, kind VARCHAR, subject VARCHAR, sync_mode VARCHAR, name VARCHAR,
  created_at TIMESTAMP, seq BIGINT);
CREATE TABLE IF NOT EXISTS quarantine (
  qid BIGINT, batch_id VARCHAR, recorded_at TIMESTAMP, source VARCHAR, locator VARCHAR,
  line INTEGER, entry INTEGER, reason VARCHAR, raw VARCHAR, seq BIGINT);
CREATE TABLE IF NOT EXISTS batches (
  batch_id VARCHAR, source VARCHAR, recorded_at TIMESTAMP, created INTEGER, updated INTEGER,
  deleted INTEGER, unchanged INTEGER, quarantined INTEGER, first_seq BIGINT, last_seq BIGINT);
-- ART index for the point lookups of a small batch's current versions (rid IN (...)): 3x
-- faster at 40k records and flat as the store grows; bulk ingest (hash joins) is unaffected
-- within noise (docs/PERFORMANCE.md "server")
CREATE INDEX IF NOT EXISTS records_rid ON records (rid);
"""

_FACT_COLS = FACT_COLS

_SEP = SEP
_ARROW_TYPES = {
    "VARCHAR": pa.string(),
    "BIGINT": pa.int64(),
    "INTEGER": pa.int32(),
    "DOUBLE": pa.float64(),
    "TIMESTAMP": pa.timestamp("us"),
    "BOOLEAN": pa.bool_(),
}
_EFFECTIVE_AT = _FACT_COLS.index("effective")
_fact_getter = operator.attrgetter(*_FACT_COLS)


def _fact_values(f: Any) -> tuple[Any, ...]:
    """The _FACT_COLS values of a Fact, with the effective time as naive UTC."""
    v = _fact_getter(f)
    eff = v[_EFFECTIVE_AT]
    if eff is None or eff.tzinfo is None:
        return v  # type: ignore[no-any-return]
    return (*v[:_EFFECTIVE_AT], _naive(eff), *v[_EFFECTIVE_AT + 1 :])


def _uuid4_hex(n: int) -> list[str]:
    """n random RFC 4122 version-4 UUIDs as 32-digit hex (as ``uuid.uuid4().hex``), in bulk."""
    b = np.frombuffer(os.urandom(16 * n), np.uint8).reshape(n, 16).copy()
    b[:, 6] = (b[:, 6] & 0x0F) | 0x40
    b[:, 8] = (b[:, 8] & 0x3F) | 0x80
    h = b.tobytes().hex()
    return [h[i : i + 32] for i in range(0, 32 * n, 32)]


_utcnow, _naive, _name_of = utcnow, naive, name_of
# Up to this many rids, the current versions are looked up with an IN list, not a joined
# Arrow table; up to _SMALL_INSERT rows, a table is appended by one multi-row INSERT ...
# VALUES, not through Arrow (measured: /tmp micro-benchmark in docs/PERFORMANCE.md "server").
_SMALL = 64
_SMALL_INSERT = 1


class _Chain:
    """A batch's events sealed into the hash chain, in order, with their journal rows.

    The hash is ``journal.seal``'s, computed inline (one SHA-256 per event; ``verify``
    recomputes it with ``journal.verify_chain``). Used by ``_write`` and by the bulk path.
    """

    __slots__ = ("first", "seq", "prev", "now", "now_iso", "batch_id", "eids", "rows")

    def __init__(self, last_seq: int, prev_hash: str, now: datetime, batch_id: str, n: int):
        self.first = self.seq = last_seq
        self.prev, self.now, self.now_iso, self.batch_id = prev_hash, now, now.isoformat(), batch_id
        self.eids = _uuid4_hex(n)  # event ids drawn in bulk: at most n events
        self.rows: list[tuple[Any, ...]] = []

    def seal(self, kind: str, p: str, pv: str, twin_id: str | None, subject: str | None) -> int:
        """Seal one event (payload ``p`` and provenance ``pv``: canonical JSON text); its seq."""
        self.seq = seq = self.seq + 1
        eid, prev = self.eids[seq - self.first - 1], self.prev
        h = hashlib.sha256(
            _SEP.join(
                (prev, str(seq), eid, self.now_iso, kind, twin_id or "", subject or "")
                + (self.batch_id, p, pv)
            ).encode()
        ).hexdigest()
        self.rows.append(
            (seq, eid, self.now, kind, twin_id, subject, self.batch_id, p, pv, prev, h)
        )
        self.prev = h
        return seq


class DuckDBStore(Store):
    """A healthtwin store in one DuckDB file (``path``; ``":memory:"`` for tests)."""

    def __init__(self, path: str | Path, *, read_only: bool = False, clock: Any = None) -> None:
        self.path = str(path)
        self._clock = clock or _utcnow
        self._lock = threading.RLock()
        self.con = duckdb.connect(self.path, read_only=read_only)
        self._schemas: dict[str, pa.Schema] = {}
        self._conditional_pending = 1  # checked on the first batch
        # A lower bound of the journal head's seq, advanced only after a COMMIT succeeded:
        # ``_head`` reads the head among rows with seq >= it (zonemap-pruned), so neither a
        # write by another connection nor a rolled-back batch can leave a stale head in use.
        self._head_hint = 0
        if not read_only:
            self.con.execute(_DDL)
            if not self.con.execute("SELECT 1 FROM meta WHERE key='schema'").fetchall():
                self.con.execute("INSERT INTO meta VALUES ('schema', ?)", [SCHEMA_VERSION])

    # ------------------------------------------------------------------ writing
    def _head(self) -> tuple[int, str, datetime | None]:
        rows: list[Any] = []
        if self._head_hint > 0:
            # the journal is appended in seq order: the row-group min/max statistics prune
            # every row group but the last (the literal, not a parameter, lets them prune);
            # arg_max (an aggregate) costs half of ORDER BY .. LIMIT 1 (a top-n) here
            rows = self.con.execute(
                "SELECT max(seq), arg_max(hash, seq), arg_max(recorded_at, seq) FROM journal "
                f"WHERE seq >= {int(self._head_hint)}"
            ).fetchall()
            if rows and rows[0][0] is None:
                rows = []
        if not rows:  # no hint yet, or the journal ends below it (never after a commit)
            rows = self.con.execute(
                "SELECT seq, hash, recorded_at FROM journal ORDER BY seq DESC LIMIT 1"
            ).fetchall()
        row = rows[0] if rows else None
        return (0, GENESIS, None) if row is None else (int(row[0]), str(row[1]), row[2])

    def _now(self, last: datetime | None) -> datetime:
        now = _naive(self._clock())
        assert now is not None
        return max(now, last) if last else now

    def write_batch(
        self,
        records: Sequence[InboundRecord],
        rejected: Sequence[Rejected] = (),
        events: Sequence[Event] = (),
        *,
        source: str = "",
        create_only: Collection[str] = (),
    ) -> BatchResult:
        with self._lock:
            con = self.con
            con.execute("BEGIN TRANSACTION")
            try:
                result, last = self._write(records, rejected, events, source, create_only)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            self._head_hint = last  # only once committed
            return result

    def write_prepared(self, chunks: Sequence[Any], *, source: str = "") -> BatchResult:
        """Write chunks made by ``duckdb_bulk.prepare`` as one batch (bulk ingest): the
        same rows and events as ``write_batch`` on their records."""
        from healthtwin.twin.store import duckdb_bulk

        with self._lock:
            con = self.con
            con.execute("BEGIN TRANSACTION")
            try:
                result, last = duckdb_bulk.write(self, chunks, source)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            self._head_hint = last
            return result

    def _write(
        self,
        records: Sequence[InboundRecord],
        rejected: Sequence[Rejected],
        extra: Sequence[Event],
        source: str,
        create_only: Collection[str] = (),
    ) -> tuple[BatchResult, int]:
        """The batch inside the caller's transaction: (result, last journal seq)."""
        con = self.con
        last_seq, prev_hash, last_time = self._head()
        now = self._now(last_time)
        batch_id = uuid.uuid4().hex
        res = BatchResult(batch_id=batch_id, recorded_at=now)

        rids = sorted({r.rid for r in records})
        found: list[tuple[Any, ...]] = []
        if rids:
            if len(rids) <= _SMALL:
                found = con.execute(
                    "SELECT rid, version, content_sha256, deleted, recorded_at FROM records "
                    f"WHERE superseded_at IS NULL AND rid IN ({','.join('?' * len(rids))})",
                    rids,
                ).fetchall()
            else:
                con.register("_batch_rids", _table({"rid": rids}))
                found = con.execute(
                    "SELECT r.rid, r.version, r.content_sha256, r.deleted, r.recorded_at "
                    "FROM records r JOIN _batch_rids b ON r.rid = b.rid "
                    "WHERE r.superseded_at IS NULL"
                ).fetchall()
                con.unregister("_batch_rids")
        # create-only conflicts are decided here, inside the transaction
        current, records = res.take_current(found, records, create_only)
        versions = res.versions
        existing_twins: set[str] = set()
        twin_candidates = [r.rid for r in records if r.rtype in TWIN_KIND_OF_TYPE]
        if twin_candidates:
            con.register("_tw", _table({"t": twin_candidates}))
            existing_twins = {
                t
                for (t,) in con.execute(
                    "SELECT twin_id FROM twins JOIN _tw ON twin_id = t"
                ).fetchall()
            }
            con.unregister("_tw")

        rec_rows: list[tuple[Any, ...]] = []
        fact_rows: list[tuple[Any, ...]] = []
        ref_rows: list[tuple[Any, ...]] = []
        id_rows: list[tuple[Any, ...]] = []
        twin_rows: list[tuple[Any, ...]] = []
        q_rows: list[tuple[Any, ...]] = []
        superseded: list[str] = []
        written: set[str] = set()  # rids with a version written by this batch
        dups: list[str] = []  # rids with more than one version in this batch
        chain = _Chain(
            last_seq, prev_hash, now, batch_id, 2 * len(records) + len(rejected) + len(extra) + 1
        )
        dumps, sort_keys = orjson.dumps, orjson.OPT_SORT_KEYS
        seal = chain.seal

        def emit(
            kind: str,
            payload: dict[str, Any],
            prov: dict[str, Any],
            twin_id: str | None,
            subject: str | None,
        ) -> int:
            """Seal one event with its payload and provenance as canonical JSON."""
            return seal(
                kind,
                dumps(payload, option=sort_keys).decode(),
                dumps(prov, option=sort_keys).decode(),
                twin_id,
                subject,
            )

        decide = res.decide
        twin_kind_of = TWIN_KIND_OF_TYPE
        fact_values = _fact_values
        for rec in records:
            rid, rtype = rec.rid, rec.rtype
            cur = current.get(rid)
            decided = decide(cur, rec.sha256, rec.deleted, rtype)
            if decided is None:
                continue
            kind, version = decided
            if cur is not None:
                superseded.append(rid)
                if rid in written:  # a second version within this batch
                    dups.append(rid)
            written.add(rid)
            tk = twin_kind_of.get(rtype)
            twin_id = rid if tk is not None else rec.subject
            s = emit(
                kind,
                {"rid": rid, "version": version, "sha256": rec.sha256, "type": rtype},
                {"source": rec.source, "locator": rec.locator, "validation": rec.validation},
                twin_id,
                rec.subject,
            )
            current[rid] = (version, rec.sha256, rec.deleted)
            versions[rid] = (version, now, rec.deleted)
            rec_rows.append(
                (
                    rid,
                    version,
                    rtype,
                    rec.sha256,
                    rec.raw,
                    rec.subject,
                    s,
                    now,
                    None,
                    rec.deleted,
                    rec.validation,
                    rec.source,
                    rec.locator,
                    batch_id,
                )
            )
            if rec.facts:
                subj = rid if rtype == "Patient" else rec.subject
                for f in rec.facts:
                    fact_rows.append((rid, version, f.key, subj, *fact_values(f), now, None, s))
            for ref, target, status in rec.refs:
                ref_rows.append((rid, version, ref, target, status))
                if status == "conditional":
                    self._conditional_pending += 1
            for system, value in rec.identifiers:
                id_rows.append((rid, system, value))
            if tk is not None and rid not in existing_twins and not rec.deleted:
                existing_twins.add(rid)
                ts = emit(
                    "twin.created",
                    {"twin_id": rid, "kind": tk.value, "sync_mode": SyncMode.SHADOW.value},
                    {"source": rec.source, "locator": rec.locator},
                    rid,
                    rid,
                )
                twin_rows.append(
                    (rid, tk.value, rid, SyncMode.SHADOW.value, _name_of(rec.raw), now, ts)
                )
                res.twins_created += 1

        q_base = 0
        if rejected:
            (q_base,) = con.execute("SELECT coalesce(max(qid), 0) FROM quarantine").fetchall()[0]
        for i, rj in enumerate(rejected):
            sha = hashlib.sha256(rj.raw.encode()).hexdigest()
            s = emit(
                "record.rejected",
                {"reason": rj.reason, "sha256": sha},
                {"source": rj.source, "locator": rj.locator},
                None,
                None,
            )
            q_rows.append(
                (
                    int(q_base) + i + 1,
                    batch_id,
                    now,
                    rj.source,
                    rj.locator,
                    rj.line,
                    rj.entry,
                    rj.reason,
                    rj.raw,
                    s,
                )
            )
        res.quarantined = len(rejected)
        for ev in extra:
            emit(ev.kind, ev.payload, ev.provenance, ev.twin_id, ev.subject)
        emit(
            "batch.committed",
            res.summary(source),
            {"source": source},
            None,
            None,
        )
        seq = chain.seq
        res.events = seq - last_seq

        self._supersede(superseded, now)
        self._insert("journal", chain.rows, 11)
        self._insert("records", rec_rows, 14)
        self._insert("facts", fact_rows, 27)
        self._insert("refs", ref_rows, 5)
        self._insert("identifiers", id_rows, 3)
        self._insert("twins", twin_rows, 7)
        self._insert("quarantine", q_rows, 10)
        self._close_batch(res, source, now, dups, last_seq + 1, seq)
        self._resolve_pending()
        return res, seq

    def _supersede(self, rids: list[str], now: datetime) -> None:
        """Mark the current versions (records and facts) of ``rids`` superseded at ``now``."""
        if not rids:
            return
        self.con.register("_sup", _table({"rid": rids}))
        for table in ("records", "facts"):
            self.con.execute(
                f"UPDATE {table} SET superseded_at = ? WHERE superseded_at IS NULL "
                "AND rid IN (SELECT rid FROM _sup)",
                [now],
            )
        self.con.unregister("_sup")

    def _close_batch(
        self,
        res: BatchResult,
        source: str,
        now: datetime,
        dups: list[str],
        first_seq: int,
        last_seq: int,
    ) -> None:
        """The batch's last rows: earlier versions of a rid written twice by this batch are
        superseded by its last one (``dups``), and the ``batches`` row."""
        con = self.con
        if dups:
            con.register("_dup", _table({"rid": sorted(set(dups))}))
            for table in ("records", "facts"):
                con.execute(
                    f"UPDATE {table} SET superseded_at = ? WHERE superseded_at IS NULL "
                    "AND rid IN (SELECT rid FROM _dup) AND version < (SELECT max(r.version) "
                    f"FROM records r WHERE r.rid = {table}.rid)",
                    [now],
                )
            con.unregister("_dup")
        counts = (res.created, res.updated, res.deleted, res.unchanged, res.quarantined)
        con.execute(
            "INSERT INTO batches VALUES (?,?,?,?,?,?,?,?,?,?)",
            [res.batch_id, source, now, *counts, first_seq, last_seq],
        )

    def _insert(self, table: str, rows: list[tuple[Any, ...]], ncols: int) -> None:
        """Append rows: one row by a parameterised ``INSERT ... VALUES``; more through one
        Arrow table (typed columns: no per-value conversion) inserted as a relation (no
        register/unregister: ~0.6 ms less per call). Measured
        (docs/PERFORMANCE.md "server"): VALUES costs ~0.25 ms per extra row of ``facts``.
        """
        if not rows:
            return
        if len(rows) <= _SMALL_INSERT:
            one = "(" + ",".join("?" * ncols) + ")"
            self.con.execute(
                f"INSERT INTO {table} VALUES " + ",".join([one] * len(rows)),
                [v for r in rows for v in r],
            )
            return
        schema = self._schemas.get(table)
        if schema is None:
            desc = self.con.execute(f"DESCRIBE {table}").fetchall()
            schema = pa.schema([(r[0], _ARROW_TYPES[str(r[1])]) for r in desc])
            self._schemas[table] = schema
        assert len(schema) == ncols, (table, schema)
        # built from buffers: ``pa.array`` on lists would import pandas (arrowcols docstring)
        columns = [
            _array(values, schema.field(i).type) for i, values in enumerate(zip(*rows, strict=True))
        ]
        # a replacement scan of the local Arrow table: ~0.2 ms less per call than
        # ``from_arrow(...).insert_into`` (which binds the relation first), measured on 16 rows
        _ht_rows = pa.Table.from_arrays(columns, schema=schema)  # noqa: F841 (read by the SQL)
        self.con.execute(f"INSERT INTO {table} SELECT * FROM _ht_rows")

    def _resolve_pending(self) -> None:
        """Resolve conditional references (Type?identifier=system|value) that now match.

        Plain ``Type/id`` references need no update: whether their target has arrived is a
        join at read time (``stats``), so resolution costs nothing per batch.
        """
        con = self.con
        # Conditional references (Type?identifier=system|value) matched by identifier.
        if not self._conditional_pending:
            return
        pend = con.execute(
            "SELECT DISTINCT reference FROM refs WHERE status = 'conditional'"
        ).fetchall()
        self._conditional_pending = len(pend)
        parsed = []
        for (ref,) in pend:
            rtype, _, query = ref.partition("?")
            if not query.startswith("identifier="):
                continue
            token = query[len("identifier=") :]
            system, bar, value = token.rpartition("|")
            parsed.append((ref, f"{rtype}/%", system if bar else "", value if bar else token))
        if not parsed:
            return
        con.register(
            "_cond",
            _table(
                {
                    name: [p[i] for p in parsed]
                    for i, name in enumerate(["ref", "pat", "sys", "val"])
                }
            ),
        )
        # Set-based: a conditional reference resolves when exactly one resource matches.
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _match AS SELECT c.ref, min(i.rid) AS target "
            "FROM _cond c JOIN identifiers i ON i.value = c.val AND (c.sys = '' OR "
            "i.system = c.sys) AND i.rid LIKE c.pat GROUP BY c.ref "
            "HAVING count(DISTINCT i.rid) = 1"
        )
        con.unregister("_cond")
        con.execute(
            "UPDATE refs SET status = 'resolved', target = m.target FROM _match m "
            "WHERE refs.reference = m.ref AND refs.status = 'conditional'"
        )
        for table in ("records", "facts"):
            con.execute(
                f"UPDATE {table} SET subject = m.target FROM _match m WHERE {table}.subject = m.ref"
            )
        con.execute("DROP TABLE _match")
        (left,) = con.execute("SELECT count(*) FROM refs WHERE status = 'conditional'").fetchall()[
            0
        ]
        self._conditional_pending = int(left)

    def append_events(self, events: Sequence[Event]) -> list[int]:
        with self._lock:
            res = self.write_batch([], [], events, source="api")
            last = self._head_hint  # this batch's last seq
        return list(range(last - res.events + 1, last))  # excludes the batch summary event

    # ------------------------------------------------------------------ reading
    def _resolve_twin(self, twin_id: str) -> dict[str, Any]:
        rows = self.con.execute(
            "SELECT twin_id, kind, subject, sync_mode, name, created_at FROM twins "
            "WHERE twin_id = ? OR twin_id LIKE ? ORDER BY twin_id",
            [twin_id, f"%/{twin_id}"],
        ).fetchall()
        if not rows:
            rows = self.con.execute(
                "SELECT twin_id, kind, subject, sync_mode, name, created_at FROM twins "
                "WHERE twin_id LIKE ? ORDER BY twin_id LIMIT 2",
                [f"%/{twin_id}%"],
            ).fetchall()
        if not rows:
            raise StoreError(f"no twin with id {twin_id!r} (see `healthtwin twins list`)")
        if len(rows) > 1:
            raise StoreError(f"twin id {twin_id!r} is ambiguous: {rows[0][0]}, {rows[1][0]}")
        keys = ("twin_id", "kind", "subject", "sync_mode", "name", "created_at")
        return dict(zip(keys, rows[0], strict=True))

    def twins(self, kind: str | None = None, search: str | None = None) -> list[dict[str, Any]]:
        q = (
            "SELECT t.twin_id, t.kind, t.sync_mode, t.name, t.created_at, "
            "coalesce(c.n, 0) AS resources FROM twins t LEFT JOIN ("
            " SELECT subject, count(*) AS n FROM records WHERE superseded_at IS NULL "
            " AND NOT deleted GROUP BY subject) c ON c.subject = t.subject "
            "WHERE (? IS NULL OR t.kind = ?) AND (? IS NULL OR "
            "t.twin_id ILIKE ? OR t.name ILIKE ?) "
            "ORDER BY CASE t.kind WHEN 'patient' THEN 0 WHEN 'cohort' THEN 1 ELSE 2 END, "
            "t.name, t.twin_id"
        )
        pat = f"%{search}%" if search else None
        rows = self.con.execute(q, [kind, kind, search, pat, pat]).fetchall()
        keys = ("twin_id", "kind", "sync_mode", "name", "created_at", "resources")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def twin(self, twin_id: str) -> dict[str, Any]:
        t = self._resolve_twin(twin_id)
        per_type = self.con.execute(
            "SELECT rtype, count(*) FROM records WHERE subject = ? AND superseded_at IS NULL "
            "AND NOT deleted GROUP BY rtype ORDER BY rtype",
            [t["subject"]],
        ).fetchall()
        t["resources"] = dict(per_type)
        (t["events"],) = self.con.execute(
            "SELECT count(*) FROM journal WHERE twin_id = ? OR subject = ?",
            [t["twin_id"], t["subject"]],
        ).fetchall()[0]
        return t

    def _atomic_events(self, events: list[Event], then: Any = None) -> None:
        """Append events and run ``then(con, last_seq, recorded_at)`` in one transaction."""
        with self._lock:
            self.con.execute("BEGIN TRANSACTION")
            try:
                res, seq = self._write([], [], events, "api")
                if then is not None:
                    then(self.con, seq, res.recorded_at)
                self.con.execute("COMMIT")
            except BaseException:
                self.con.execute("ROLLBACK")
                raise
            self._head_hint = seq

    def create_twin(
        self, kind: str, name: str, subject: str | None = None, sync_mode: str = "model"
    ) -> str:
        """Create a twin not tied to one inbound resource (e.g. a cohort); journaled."""
        TwinKind(kind)
        SyncMode(sync_mode)
        twin_id = f"{kind}/{uuid.uuid4().hex[:12]}"
        subj = subject or twin_id
        ev = Event(
            "twin.created",
            {"twin_id": twin_id, "kind": kind, "name": name, "sync_mode": sync_mode},
            {"source": "api"},
            twin_id,
            subj,
        )
        self._atomic_events(
            [ev],
            lambda con, seq, rec: con.execute(
                "INSERT INTO twins VALUES (?,?,?,?,?,?,?)",
                [twin_id, kind, subj, sync_mode, name, rec, seq],
            ),
        )
        return twin_id

    def set_sync_mode(self, twin_id: str, mode: str) -> None:
        t = self._resolve_twin(twin_id)
        SyncMode(mode)
        ev = Event(
            "twin.sync_mode",
            {"twin_id": t["twin_id"], "from": t["sync_mode"], "to": mode},
            {"source": "api"},
            t["twin_id"],
            t["subject"],
        )
        self._atomic_events(
            [ev],
            lambda con, seq, rec: con.execute(
                "UPDATE twins SET sync_mode=? WHERE twin_id=?", [mode, t["twin_id"]]
            ),
        )

    def state(
        self, twin_id: str, at: datetime | None = None, as_of: datetime | None = None
    ) -> list[dict[str, Any]]:
        t = self._resolve_twin(twin_id)
        at_, asof_ = _naive(at), _naive(as_of)
        cols = STATE_COLS
        sql = f"""
        SELECT {", ".join(cols)} FROM (
          SELECT *, row_number() OVER (PARTITION BY system, code
                 ORDER BY effective DESC NULLS LAST, seq DESC) AS rn
          FROM facts
          WHERE subject = ?
            AND (CAST(? AS TIMESTAMP) IS NULL OR recorded_at <= ?)
            AND (superseded_at IS NULL OR (CAST(? AS TIMESTAMP) IS NOT NULL
                 AND superseded_at > ?))
            AND (CAST(? AS TIMESTAMP) IS NULL OR effective IS NULL OR effective <= ?)
        ) WHERE rn = 1 AND status <> 'entered-in-error'
        ORDER BY system, code"""
        rows = self.con.execute(sql, [t["subject"], asof_, asof_, asof_, asof_, at_, at_])
        return [dict(zip(cols, r, strict=True)) for r in rows.fetchall()]

    def history(self, twin_id: str) -> list[dict[str, Any]]:
        t = self._resolve_twin(twin_id)
        rows = self.con.execute(
            "SELECT seq, recorded_at, kind, payload, provenance FROM journal "
            "WHERE twin_id = ? OR subject = ? ORDER BY seq",
            [t["twin_id"], t["subject"]],
        )
        keys = ("seq", "recorded_at", "kind", "payload", "provenance")
        out = []
        for r in rows.fetchall():
            d = dict(zip(keys, r, strict=True))
            d["payload"], d["provenance"] = (
                orjson.loads(d["payload"]),
                orjson.loads(d["provenance"]),
            )
            out.append(d)
        return out

    def events(self, kind: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The newest journal events (optionally of one kind, e.g. ``simulation.run``)."""
        rows = self.con.execute(
            "SELECT seq, recorded_at, kind, twin_id, payload, provenance, hash FROM journal "
            "WHERE (? IS NULL OR kind = ?) ORDER BY seq DESC LIMIT ?",
            [kind, kind, limit],
        ).fetchall()
        keys = ("seq", "recorded_at", "kind", "twin_id", "payload", "provenance", "hash")
        out = [dict(zip(keys, r, strict=True)) for r in reversed(rows)]
        for d in out:
            d["payload"], d["provenance"] = (
                orjson.loads(d["payload"]),
                orjson.loads(d["provenance"]),
            )
        return out

    def originals(self, twin_id: str | None = None, rtype: str | None = None) -> Iterator[str]:
        if twin_id is not None:
            t = self._resolve_twin(twin_id)
            cur = self.con.cursor().execute(
                "SELECT raw FROM records WHERE (subject = ? OR rid = ?) AND superseded_at "
                "IS NULL AND NOT deleted AND (? IS NULL OR rtype = ?) ORDER BY seq",
                [t["subject"], t["subject"], rtype, rtype],
            )
        else:
            cur = self.con.cursor().execute(
                "SELECT raw FROM records WHERE superseded_at IS NULL AND NOT deleted "
                "AND (? IS NULL OR rtype = ?) ORDER BY seq",
                [rtype, rtype],
            )
        while chunk := cur.fetchmany(2000):
            for (raw,) in chunk:
                yield raw

    def iter_resources(self, rtype: str) -> Iterator[dict[str, Any]]:
        for raw in self.originals(rtype=rtype):
            yield orjson.loads(raw)

    def quarantine(self) -> list[dict[str, Any]]:
        keys = ("qid", "recorded_at", "source", "locator", "reason", "raw")
        rows = self.con.execute(
            "SELECT qid, recorded_at, source, locator, reason, raw FROM quarantine ORDER BY qid"
        )
        return [dict(zip(keys, r, strict=True)) for r in rows.fetchall()]

    def stats(self) -> dict[str, Any]:
        c = self.con
        return {
            "resources": dict(
                c.execute(
                    "SELECT rtype, count(*) FROM records WHERE superseded_at IS NULL AND NOT "
                    "deleted GROUP BY rtype ORDER BY rtype"
                ).fetchall()
            ),
            "versions": (c.execute("SELECT count(*) FROM records").fetchall()[0])[0],
            "events": dict(
                c.execute(
                    "SELECT kind, count(*) FROM journal GROUP BY kind ORDER BY kind"
                ).fetchall()
            ),
            "facts": (c.execute("SELECT count(*) FROM facts").fetchall()[0])[0],
            "twins": dict(
                c.execute("SELECT kind, count(*) FROM twins GROUP BY kind ORDER BY kind").fetchall()
            ),
            "quarantined": (c.execute("SELECT count(*) FROM quarantine").fetchall()[0])[0],
            "references": dict(
                c.execute(
                    "SELECT CASE WHEN status = 'pending' AND target IN (SELECT rid FROM records "
                    "WHERE superseded_at IS NULL AND NOT deleted) THEN 'resolved' ELSE status END "
                    "AS st, count(*) FROM refs GROUP BY st ORDER BY st"
                ).fetchall()
            ),
            "validation": dict(
                c.execute(
                    "SELECT validation, count(*) FROM records WHERE superseded_at IS NULL "
                    "GROUP BY validation ORDER BY validation"
                ).fetchall()
            ),
            "units": dict(
                c.execute(
                    "SELECT unit_status, count(*) FROM facts WHERE unit_status IS NOT NULL "
                    "GROUP BY unit_status ORDER BY unit_status"
                ).fetchall()
            ),
        }

    def verify(self) -> VerifyReport:
        rep = VerifyReport()
        cur = self.con.execute(
            "SELECT seq, event_id, recorded_at, kind, twin_id, subject, batch_id, payload, "
            "provenance, prev_hash, hash FROM journal ORDER BY seq, rowid"
        )
        payload_of: dict[int, str] = {}

        def rows() -> Iterator[tuple[Any, ...]]:
            while chunk := cur.fetchmany(5000):
                for r in chunk:
                    if r[3].startswith("record.") and r[3] != "record.rejected":
                        payload_of[int(r[0])] = r[7]
                    yield r

        verify_chain(rows(), rep)
        n = 0
        rc = self.con.execute("SELECT rid, version, seq, content_sha256, raw FROM records")
        while chunk := rc.fetchmany(5000):
            for rid, version, seq, sha, raw in chunk:
                n += 1
                if hashlib.sha256(raw.encode()).hexdigest() != sha:
                    rep.problems.append(f"record {rid} v{version}: original text was altered")
                p = payload_of.get(int(seq))
                if p is None:
                    rep.problems.append(f"record {rid} v{version}: no journal event seq {seq}")
                    continue
                ev = orjson.loads(p)
                if (ev.get("rid"), ev.get("version"), ev.get("sha256")) != (rid, version, sha):
                    rep.problems.append(
                        f"record {rid} v{version}: does not match journal event seq {seq}"
                    )
        if n != len(payload_of):
            rep.problems.append(
                f"{len(payload_of)} record events but {n} stored records (a record was removed)"
            )
        return rep

    def close(self) -> None:
        self.con.close()
