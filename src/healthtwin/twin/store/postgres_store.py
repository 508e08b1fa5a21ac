"""The server store: PostgreSQL through psycopg 3, for several writers at once.

Same tables and semantics as the embedded ``DuckDBStore`` (``journal``, ``records``,
``facts``, ``refs``, ``identifiers``, ``twins``, ``quarantine``, ``batches``, ``meta``);
times are naive UTC ``timestamp``; text columns use the ``"C"`` collation so that ordering
and ``LIKE`` behave as in DuckDB (byte order).

Concurrency (several server worker processes, each with its own ``PostgresStore``):

* **One total order for the journal.** Every write transaction first takes a
  transaction-scoped advisory lock (``pg_advisory_xact_lock``, key derived from the schema
  name), then reads the chain head, seals its events and appends them. Writers to one store
  are serialised; the lock is released at commit or rollback, so a crashed client never
  holds it. It is the only lock a healthtwin writer waits for before touching rows, so two
  writers cannot deadlock. Readers take no locks (MVCC).
* **Idempotence.** Under the lock a writer sees every batch committed before it (READ
  COMMITTED takes a new snapshot per statement), so re-ingesting the same resource
  concurrently yields one version and ``unchanged`` for the others. Unique constraints are
  the backstop: ``journal(seq)``, ``records(rid, version)``, one current version per ``rid``
  (partial unique index), ``twins(twin_id)``, ``quarantine(qid)``, ``batches(batch_id)``;
  a writer that bypassed the lock would fail and roll back, never duplicate.
* **Bulk writes** use ``COPY ... FROM STDIN`` (``cursor.copy``), one per table per batch.

A schema other than the connection's default can be chosen with ``schema=`` or a
``?schema=NAME`` query parameter on the URL (created when missing).
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Collection, Iterator, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
import psycopg
from psycopg import sql

from healthtwin.twin.journal import GENESIS, VerifyReport, seal, verify_chain
from healthtwin.twin.model import Event, InboundRecord, Rejected, SyncMode, TwinKind
from healthtwin.twin.store import is_postgres_url, mask_password  # re-exported
from healthtwin.twin.store.base import BatchResult, Store, StoreError
from healthtwin.twin.store.common import (
    FACT_COLS,
    SCHEMA_VERSION,
    STATE_COLS,
    TABLE_COLUMNS,
    TWIN_KIND_OF_TYPE,
    canonical_json,
    naive,
    name_of,
    parse_conditional,
    utcnow,
)

_T = 'text COLLATE "C"'
_DDL = f"""
CREATE TABLE IF NOT EXISTS meta (key {_T} PRIMARY KEY, value text);
CREATE TABLE IF NOT EXISTS journal (
  seq bigint PRIMARY KEY, event_id {_T} NOT NULL, recorded_at timestamp NOT NULL,
  kind {_T} NOT NULL, twin_id {_T}, subject {_T}, batch_id {_T}, payload text NOT NULL,
  provenance text NOT NULL, prev_hash {_T} NOT NULL, hash {_T} NOT NULL);
CREATE INDEX IF NOT EXISTS journal_twin ON journal (twin_id);
CREATE INDEX IF NOT EXISTS journal_subject ON journal (subject);
CREATE INDEX IF NOT EXISTS journal_kind ON journal (kind, seq);
CREATE TABLE IF NOT EXISTS records (
  rid {_T} NOT NULL, version integer NOT NULL, rtype {_T} NOT NULL,
  content_sha256 {_T} NOT NULL, raw text NOT NULL, subject {_T}, seq bigint NOT NULL,
  recorded_at timestamp NOT NULL, superseded_at timestamp, deleted boolean NOT NULL,
  validation {_T}, source text, locator text, batch_id {_T},
  PRIMARY KEY (rid, version));
CREATE UNIQUE INDEX IF NOT EXISTS records_current ON records (rid) WHERE superseded_at IS NULL;
CREATE INDEX IF NOT EXISTS records_subject ON records (subject);
CREATE INDEX IF NOT EXISTS records_seq ON records (seq);
CREATE TABLE IF NOT EXISTS facts (
  rid {_T} NOT NULL, version integer NOT NULL, fkey {_T}, subject {_T}, system {_T},
  code {_T}, display text, kind {_T}, num double precision, unit {_T},
  num_canonical double precision, unit_canonical {_T}, unit_status {_T},
  value_system {_T}, value_code {_T}, text text, low double precision,
  high double precision, mean double precision, sd double precision, quantiles text,
  effective timestamp, effective_text text, status {_T}, recorded_at timestamp NOT NULL,
  superseded_at timestamp, seq bigint NOT NULL);
CREATE INDEX IF NOT EXISTS facts_subject ON facts (subject, system, code);
CREATE INDEX IF NOT EXISTS facts_current ON facts (rid) WHERE superseded_at IS NULL;
CREATE TABLE IF NOT EXISTS refs (
  rid {_T} NOT NULL, version integer NOT NULL, reference {_T}, target {_T}, status {_T});
CREATE INDEX IF NOT EXISTS refs_conditional ON refs (reference) WHERE status = 'conditional';
CREATE TABLE IF NOT EXISTS identifiers (rid {_T} NOT NULL, system {_T}, value {_T});
CREATE INDEX IF NOT EXISTS identifiers_value ON identifiers (value);
CREATE TABLE IF NOT EXISTS twins (
  twin_id {_T} PRIMARY KEY, kind {_T} NOT NULL, subject {_T}, sync_mode {_T} NOT NULL,
  name text, created_at timestamp NOT NULL, seq bigint NOT NULL);
CREATE INDEX IF NOT EXISTS twins_short_id ON twins (split_part(twin_id, '/', 2));
CREATE TABLE IF NOT EXISTS quarantine (
  qid bigint PRIMARY KEY, batch_id {_T}, recorded_at timestamp NOT NULL, source text,
  locator text, line integer, entry integer, reason text, raw bytea, seq bigint NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
  batch_id {_T} PRIMARY KEY, source text, recorded_at timestamp NOT NULL, created integer,
  updated integer, deleted integer, unchanged integer, quarantined integer,
  first_seq bigint, last_seq bigint);
"""

_COLUMNS = TABLE_COLUMNS
_EFFECTIVE = FACT_COLS.index("effective")

# Conditional references (Type?identifier=system|value) resolved in one statement: a
# reference resolves when exactly one resource of that type carries the identifier.
_RESOLVE = """
WITH c(ref, pat, sys, val) AS (
  SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])),
m AS (
  SELECT c.ref, min(i.rid) AS target FROM c JOIN identifiers i
    ON i.value = c.val AND (c.sys = '' OR i.system = c.sys) AND i.rid LIKE c.pat
  GROUP BY c.ref HAVING count(DISTINCT i.rid) = 1),
u_refs AS (
  UPDATE refs SET status = 'resolved', target = m.target FROM m
  WHERE refs.reference = m.ref AND refs.status = 'conditional' RETURNING 1),
u_records AS (
  UPDATE records SET subject = m.target FROM m WHERE records.subject = m.ref RETURNING 1),
u_facts AS (
  UPDATE facts SET subject = m.target FROM m WHERE facts.subject = m.ref RETURNING 1)
SELECT (SELECT count(*) FROM u_refs), (SELECT count(*) FROM u_records),
       (SELECT count(*) FROM u_facts)
"""


def split_schema(dsn: str) -> tuple[str, str | None]:
    """Remove a ``schema=NAME`` query parameter from a URL: (dsn for libpq, schema or None)."""
    if not is_postgres_url(dsn):
        return dsn, None
    parts = urlsplit(dsn)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = None
    rest = []
    for k, v in query:
        if k == "schema":
            schema = v
        else:
            rest.append((k, v))
    return urlunsplit(parts._replace(query=urlencode(rest))), schema


def _lock_key(schema: str) -> int:
    """The advisory-lock key (signed 64 bit) that serialises journal appends of one schema."""
    digest = hashlib.sha256(f"healthtwin.journal:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _clean(text: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL: show it escaped (quarantine reasons, locators)."""
    return text.replace("\x00", "\\u0000") if text and "\x00" in text else text


class PostgresStore(Store):
    """A healthtwin store in a PostgreSQL database (``dsn``: a libpq URL or conninfo).

    ``schema``: the PostgreSQL schema holding the tables (default: the connection's
    ``search_path``; also ``?schema=NAME`` on a URL). ``read_only``: no DDL, every
    transaction read-only. ``clock``: a callable returning naive UTC now (tests).
    """

    #: DB-API parameter style of ``con`` (for callers that run their own SQL)
    paramstyle = "format"

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        read_only: bool = False,
        clock: Any = None,
        connect_timeout: int = 10,
    ) -> None:
        self.url = dsn  # as given (schema included): what opens the same store again
        dsn, url_schema = split_schema(dsn)
        self._dsn, self._connect_timeout = dsn, connect_timeout
        self.location = mask_password(dsn)
        self.read_only = read_only
        self._clock = clock or utcnow
        self._lock = threading.RLock()
        try:
            self.conn = psycopg.connect(dsn, autocommit=True, connect_timeout=connect_timeout)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL at {self.location}: {exc}") from exc
        # times are naive UTC: comparisons with aware parameters must not shift by a zone
        self.conn.execute("SET TIME ZONE 'UTC'")
        schema = schema or url_schema
        if schema:
            if not read_only:
                with self.conn.transaction():
                    self.conn.execute("SELECT pg_advisory_xact_lock(%s)", [_lock_key(schema)])
                    self.conn.execute(
                        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
                    )
            self.conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        row = self.conn.execute("SELECT current_schema()").fetchone()
        if row is None or row[0] is None:
            self.conn.close()
            raise StoreError(
                f"PostgreSQL store {self.location}: schema {schema!r} does not exist (run "
                "`healthtwin ingest` first)"
                if schema
                else f"PostgreSQL store {self.location}: no schema on the search_path"
            )
        self.schema = str(row[0])
        self.channel = f"healthtwin_journal_{self._channel_suffix(self.schema)}"
        self._session_sql = [
            "SET TIME ZONE 'UTC'",
            sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)).as_string(None),
        ]
        self._key = _lock_key(self.schema)
        if read_only:
            exists = self.conn.execute("SELECT to_regclass('journal') IS NOT NULL").fetchone()
            if not (exists and exists[0]):
                self.conn.close()
                raise StoreError(
                    f"PostgreSQL store {self.location} (schema {self.schema}) holds no "
                    "healthtwin store yet (run `healthtwin ingest` first)"
                )
            self.conn.execute("SET default_transaction_read_only = on")
            self._session_sql.append("SET default_transaction_read_only = on")
        else:
            with self.conn.transaction():
                self.conn.execute("SELECT pg_advisory_xact_lock(%s)", [self._key])
                self.conn.execute(_DDL)
                self.conn.execute(
                    "INSERT INTO meta VALUES ('schema', %s) ON CONFLICT (key) DO NOTHING",
                    [SCHEMA_VERSION],
                )

    @staticmethod
    def _channel_suffix(schema: str) -> str:
        return hashlib.sha256(schema.encode()).hexdigest()[:16]

    def watch(self, timeout: float | None = None) -> Iterator[int]:
        """The journal head (``seq``) after every commit to this store, by any process.

        PostgreSQL LISTEN/NOTIFY on its own connection, listening when ``watch`` returns:
        each committed batch notifies its last ``seq`` at commit (a rolled-back batch never
        does). Iterating blocks until the next
        commit; ends after ``timeout`` seconds without one (None: never). Run it on its own
        thread; ``changes_since(seq)`` then says what changed (e.g. to invalidate caches or
        feed live updates in every server worker).
        """
        conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=self._connect_timeout)
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))

        def heads() -> Iterator[int]:  # listening already when watch() returns
            try:
                for note in conn.notifies(timeout=timeout):
                    yield int(note.payload)
            finally:
                conn.close()

        return heads()

    def changes_since(
        self, seq: int, limit: int = 10_000, *, payload: bool = True
    ) -> list[dict[str, Any]]:
        """Journal events after ``seq`` (oldest first, at most ``limit``): seq, kind,
        twin_id, subject, batch_id, recorded_at and (with ``payload``) payload (canonical JSON
        text); what a ``watch`` listener reads after a notification."""
        keys: tuple[str, ...] = ("seq", "kind", "twin_id", "subject", "batch_id", "recorded_at")
        if payload:
            keys += ("payload",)
        rows = self._all(
            f"SELECT {', '.join(keys)} FROM journal WHERE seq > %s ORDER BY seq LIMIT %s",
            [seq, limit],
        )
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def _live(self) -> psycopg.Connection[Any]:
        """The connection, re-opened (same schema and mode) when the old one broke, e.g. after
        a server restart. A statement that failed is not retried; the next call reconnects."""
        if self.conn.broken or self.conn.closed:
            if self.conn.closed and not self.conn.broken:
                raise StoreError(f"{self!r} is closed")
            try:
                conn = psycopg.connect(
                    self._dsn, autocommit=True, connect_timeout=self._connect_timeout
                )
            except psycopg.Error as exc:
                raise StoreError(
                    f"cannot reconnect to PostgreSQL at {self.location}: {exc}"
                ) from exc
            for stmt in self._session_sql:
                conn.execute(stmt)
            self.conn = conn
        return self.conn

    @property
    def con(self) -> psycopg.Connection[Any]:
        """The live psycopg connection (autocommit; ``%s`` placeholders), for read-model SQL
        the Store interface does not offer; as ``DuckDBStore.con``, one thread at a time."""
        return self._live()

    def __repr__(self) -> str:
        return f"PostgresStore({self.location!r}, schema={self.schema!r})"

    # ------------------------------------------------------------------ writing
    def _head(self, cur: psycopg.Cursor[Any]) -> tuple[int, str, datetime | None]:
        row = cur.execute(
            "SELECT seq, hash, recorded_at FROM journal ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return (0, GENESIS, None) if row is None else (int(row[0]), str(row[1]), row[2])

    def _now(self, last: datetime | None) -> datetime:
        now = naive(self._clock())
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
        with self._lock, self._live().transaction(), self.conn.cursor() as cur:
            return self._write(cur, records, rejected, events, source, create_only)[0]

    def _write(
        self,
        cur: psycopg.Cursor[Any],
        records: Sequence[InboundRecord],
        rejected: Sequence[Rejected],
        extra: Sequence[Event],
        source: str,
        create_only: Collection[str] = (),
    ) -> tuple[BatchResult, int]:
        """The batch inside the caller's transaction: (result, last journal seq)."""
        for rec in records:
            if "\x00" in rec.raw:
                raise StoreError(f"{rec.rid} ({rec.source} {rec.locator}): NUL character in text")
        # The journal's total order: one writer at a time per store, until commit.
        cur.execute("SELECT pg_advisory_xact_lock(%s)", [self._key])
        last_seq, prev_hash, last_time = self._head(cur)
        now = self._now(last_time)
        batch_id = uuid.uuid4().hex
        res = BatchResult(batch_id=batch_id, recorded_at=now)

        rids = sorted({r.rid for r in records})
        found: list[tuple[Any, ...]] = []
        if rids:
            found = cur.execute(
                "SELECT rid, version, content_sha256, deleted, recorded_at FROM records "
                "WHERE superseded_at IS NULL AND rid = ANY(%s)",
                [rids],
            ).fetchall()
        # create-only conflicts are decided under the journal lock
        current, records = res.take_current(found, records, create_only)
        versions = res.versions
        existing_twins: set[str] = set()
        twin_candidates = [r.rid for r in records if r.rtype in TWIN_KIND_OF_TYPE]
        if twin_candidates:
            existing_twins = {
                t
                for (t,) in cur.execute(
                    "SELECT twin_id FROM twins WHERE twin_id = ANY(%s)", [twin_candidates]
                ).fetchall()
            }

        j_rows: list[tuple[Any, ...]] = []
        rec_rows: list[list[Any]] = []
        fact_rows: list[list[Any]] = []
        ref_rows: list[tuple[Any, ...]] = []
        id_rows: list[tuple[Any, ...]] = []
        twin_rows: list[tuple[Any, ...]] = []
        q_rows: list[tuple[Any, ...]] = []
        superseded: list[str] = []
        # rid -> (index in rec_rows, fact rows slice) of a version written in this batch
        in_batch: dict[str, tuple[int, int, int]] = {}
        seq = last_seq

        def emit(
            kind: str,
            payload: dict[str, Any],
            prov: dict[str, Any],
            twin_id: str | None,
            subject: str | None,
        ) -> int:
            nonlocal seq, prev_hash
            seq += 1
            eid = uuid.uuid4().hex
            p, pv = canonical_json(payload), canonical_json(prov)
            h = seal(prev_hash, seq, eid, now, kind, twin_id, subject, batch_id, p, pv)
            j_rows.append((seq, eid, now, kind, twin_id, subject, batch_id, p, pv, prev_hash, h))
            prev_hash = h
            return seq

        for rec in records:
            cur_v = current.get(rec.rid)
            decided = res.decide(cur_v, rec.sha256, rec.deleted, rec.rtype)
            if decided is None:
                continue
            kind, version = decided
            if cur_v is not None:
                superseded.append(rec.rid)
                earlier = in_batch.get(rec.rid)
                if earlier is not None:  # a second version within this batch
                    rec_rows[earlier[0]][8] = now
                    for fr in fact_rows[earlier[1] : earlier[2]]:
                        fr[-2] = now
            twin_id = rec.rid if rec.rtype in TWIN_KIND_OF_TYPE else rec.subject
            s = emit(
                kind,
                {"rid": rec.rid, "version": version, "sha256": rec.sha256, "type": rec.rtype},
                {"source": rec.source, "locator": rec.locator, "validation": rec.validation},
                twin_id,
                rec.subject,
            )
            current[rec.rid] = (version, rec.sha256, rec.deleted)
            versions[rec.rid] = (version, now, rec.deleted)
            rec_rows.append(
                [
                    rec.rid,
                    version,
                    rec.rtype,
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
                ]
            )
            first_fact = len(fact_rows)
            subj = rec.rid if rec.rtype == "Patient" else rec.subject
            for f in rec.facts:
                vals = [getattr(f, c) for c in FACT_COLS]
                vals[_EFFECTIVE] = naive(f.effective)
                fact_rows.append([rec.rid, version, f.key, subj, *vals, now, None, s])
            in_batch[rec.rid] = (len(rec_rows) - 1, first_fact, len(fact_rows))
            for ref, target, status in rec.refs:
                ref_rows.append((rec.rid, version, ref, target, status))
            for system, value in rec.identifiers:
                id_rows.append((rec.rid, system, value))
            tk = TWIN_KIND_OF_TYPE.get(rec.rtype)
            if tk is not None and rec.rid not in existing_twins and not rec.deleted:
                existing_twins.add(rec.rid)
                ts = emit(
                    "twin.created",
                    {"twin_id": rec.rid, "kind": tk.value, "sync_mode": SyncMode.SHADOW.value},
                    {"source": rec.source, "locator": rec.locator},
                    rec.rid,
                    rec.rid,
                )
                twin_rows.append(
                    (rec.rid, tk.value, rec.rid, SyncMode.SHADOW.value, name_of(rec.raw), now, ts)
                )
                res.twins_created += 1

        if rejected:
            row = cur.execute("SELECT coalesce(max(qid), 0) FROM quarantine").fetchone()
            q_base = int(row[0]) if row else 0
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
                        q_base + i + 1,
                        batch_id,
                        now,
                        _clean(rj.source),
                        _clean(rj.locator),
                        rj.line,
                        rj.entry,
                        _clean(rj.reason),
                        rj.raw.encode("utf-8", "surrogateescape"),
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
        res.events = seq - last_seq

        if superseded:
            sup = sorted(set(superseded))
            cur.execute(
                "UPDATE records SET superseded_at = %s WHERE superseded_at IS NULL "
                "AND rid = ANY(%s)",
                [now, sup],
            )
            cur.execute(
                "UPDATE facts SET superseded_at = %s WHERE superseded_at IS NULL AND rid = ANY(%s)",
                [now, sup],
            )
        self._copy(cur, "journal", j_rows)
        self._copy(cur, "records", rec_rows)
        self._copy(cur, "facts", fact_rows)
        self._copy(cur, "refs", ref_rows)
        self._copy(cur, "identifiers", id_rows)
        self._copy(cur, "twins", twin_rows)
        self._copy(cur, "quarantine", q_rows)
        # One round trip: the batch row, the commit notification (delivered to listeners at
        # commit only, never for a rolled-back batch) and the pending conditional references.
        row = cur.execute(
            "WITH b AS (INSERT INTO batches VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING 1) "
            "SELECT (SELECT count(*) FROM b), pg_notify(%s, %s), "
            "ARRAY(SELECT DISTINCT reference FROM refs WHERE status = 'conditional')",
            [
                batch_id,
                source,
                now,
                res.created,
                res.updated,
                res.deleted,
                res.unchanged,
                res.quarantined,
                last_seq + 1,
                seq,
                self.channel,
                str(seq),
            ],
        ).fetchone()
        assert row is not None and row[0] == 1
        self._resolve_pending(cur, row[2])
        return res, seq

    @staticmethod
    def _copy(cur: psycopg.Cursor[Any], table: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, _COLUMNS[table]))
        )
        with cur.copy(stmt) as cp:
            for r in rows:
                cp.write_row(r)

    def _resolve_pending(self, cur: psycopg.Cursor[Any], pending: Sequence[str]) -> None:
        """Resolve conditional references (Type?identifier=system|value) that now match.

        ``pending``: the distinct conditional references still unresolved, read on every
        batch (another worker may have written one); the partial index ``refs_conditional``
        makes that read free when none is pending.
        """
        parsed = [p for ref in pending if (p := parse_conditional(ref)) is not None]
        if not parsed:
            return
        cols = [list(c) for c in zip(*parsed, strict=True)]
        cur.execute(_RESOLVE, cols)

    def append_events(self, events: Sequence[Event]) -> list[int]:
        with self._lock, self._live().transaction(), self.conn.cursor() as cur:
            res, last = self._write(cur, [], [], events, "api")
        return list(range(last - res.events + 1, last))  # excludes the batch summary event

    def _atomic_events(self, events: list[Event], then: Any = None) -> None:
        """Append events and run ``then(cur, last_seq, recorded_at)`` in one transaction."""
        with self._lock, self._live().transaction(), self.conn.cursor() as cur:
            res, last = self._write(cur, [], [], events, "api")
            if then is not None:
                then(cur, last, res.recorded_at)

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
            lambda cur, seq, rec: cur.execute(
                "INSERT INTO twins VALUES (%s,%s,%s,%s,%s,%s,%s)",
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
            lambda cur, seq, rec: cur.execute(
                "UPDATE twins SET sync_mode = %s WHERE twin_id = %s", [mode, t["twin_id"]]
            ),
        )

    # ------------------------------------------------------------------ reading
    def _all(self, query: Any, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Rows of one read; retried once on a fresh connection when the old one broke."""
        with self._lock:
            try:
                with self._live().cursor() as cur:
                    return cur.execute(query, params).fetchall()
            except psycopg.OperationalError:
                if not self.conn.broken:
                    raise
            with self._live().cursor() as cur:
                return cur.execute(query, params).fetchall()

    def read_sql(
        self, query: str, params: Sequence[Any] | dict[str, Any] | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """(column names, rows) of one read-only query, for analytics modules that need SQL
        the Store interface does not offer (e.g. ``research.cohort_data``)."""
        with self._lock, self._live().transaction(), self.conn.cursor() as cur:
            cur.execute("SET TRANSACTION READ ONLY")
            cur.execute(query, params)
            cols = [d.name for d in cur.description or []]
            return cols, cur.fetchall()

    def _resolve_twin(self, twin_id: str) -> dict[str, Any]:
        cols = "twin_id, kind, subject, sync_mode, name, created_at"
        # exact id, or the id after the type ("p1" for "Patient/p1"), both by index
        rows = self._all(
            f"SELECT {cols} FROM twins WHERE twin_id = %s OR split_part(twin_id, '/', 2) = %s "
            "ORDER BY twin_id",
            [twin_id, twin_id],
        )
        if not rows:
            rows = self._all(
                f"SELECT {cols} FROM twins WHERE twin_id LIKE %s ORDER BY twin_id LIMIT 2",
                [f"%/{twin_id}%"],
            )
        if not rows:
            raise StoreError(f"no twin with id {twin_id!r} (see `healthtwin twins list`)")
        if len(rows) > 1:
            raise StoreError(f"twin id {twin_id!r} is ambiguous: {rows[0][0]}, {rows[1][0]}")
        keys = ("twin_id", "kind", "subject", "sync_mode", "name", "created_at")
        return dict(zip(keys, rows[0], strict=True))

    def twins(self, kind: str | None = None, search: str | None = None) -> list[dict[str, Any]]:
        where, params = [], []
        if kind is not None:
            where.append("t.kind = %s")
            params.append(kind)
        if search is not None:
            where.append("(t.twin_id ILIKE %s OR t.name ILIKE %s)")
            params += [f"%{search}%"] * 2
        q = (
            "SELECT t.twin_id, t.kind, t.sync_mode, t.name, t.created_at, "
            "coalesce(c.n, 0) AS resources FROM twins t LEFT JOIN ("
            " SELECT subject, count(*) AS n FROM records WHERE superseded_at IS NULL "
            " AND NOT deleted GROUP BY subject) c ON c.subject = t.subject "
            + ("WHERE " + " AND ".join(where) + " " if where else "")
            + "ORDER BY CASE t.kind WHEN 'patient' THEN 0 WHEN 'cohort' THEN 1 ELSE 2 END, "
            "t.name, t.twin_id"
        )
        keys = ("twin_id", "kind", "sync_mode", "name", "created_at", "resources")
        return [dict(zip(keys, r, strict=True)) for r in self._all(q, params)]

    def twin(self, twin_id: str) -> dict[str, Any]:
        t = self._resolve_twin(twin_id)
        per_type = self._all(
            "SELECT rtype, count(*) FROM records WHERE subject = %s AND superseded_at IS NULL "
            "AND NOT deleted GROUP BY rtype ORDER BY rtype",
            [t["subject"]],
        )
        t["resources"] = dict(per_type)
        t["events"] = self._all(
            "SELECT count(*) FROM journal WHERE twin_id = %s OR subject = %s",
            [t["twin_id"], t["subject"]],
        )[0][0]
        return t

    def state(
        self, twin_id: str, at: datetime | None = None, as_of: datetime | None = None
    ) -> list[dict[str, Any]]:
        t = self._resolve_twin(twin_id)
        at_, asof_ = naive(at), naive(as_of)
        where = ["subject = %s"]
        params: list[Any] = [t["subject"]]
        if asof_ is None:
            where.append("superseded_at IS NULL")
        else:
            where.append("recorded_at <= %s AND (superseded_at IS NULL OR superseded_at > %s)")
            params += [asof_, asof_]
        if at_ is not None:
            where.append("(effective IS NULL OR effective <= %s)")
            params.append(at_)
        q = f"""
        SELECT {", ".join(STATE_COLS)} FROM (
          SELECT *, row_number() OVER (PARTITION BY system, code
                 ORDER BY effective DESC NULLS LAST, seq DESC) AS rn
          FROM facts WHERE {" AND ".join(where)}
        ) AS f WHERE rn = 1 AND status <> 'entered-in-error'
        ORDER BY system, code"""
        return [dict(zip(STATE_COLS, r, strict=True)) for r in self._all(q, params)]

    def history(self, twin_id: str) -> list[dict[str, Any]]:
        t = self._resolve_twin(twin_id)
        rows = self._all(
            "SELECT seq, recorded_at, kind, payload, provenance FROM journal "
            "WHERE twin_id = %s OR subject = %s ORDER BY seq",
            [t["twin_id"], t["subject"]],
        )
        keys = ("seq", "recorded_at", "kind", "payload", "provenance")
        out = []
        for r in rows:
            d = dict(zip(keys, r, strict=True))
            d["payload"] = orjson.loads(d["payload"])
            d["provenance"] = orjson.loads(d["provenance"])
            out.append(d)
        return out

    def events(self, kind: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The newest journal events (optionally of one kind, e.g. ``simulation.run``)."""
        cols = "seq, recorded_at, kind, twin_id, payload, provenance, hash"
        if kind is None:
            rows = self._all(f"SELECT {cols} FROM journal ORDER BY seq DESC LIMIT %s", [limit])
        else:
            rows = self._all(
                f"SELECT {cols} FROM journal WHERE kind = %s ORDER BY seq DESC LIMIT %s",
                [kind, limit],
            )
        keys = ("seq", "recorded_at", "kind", "twin_id", "payload", "provenance", "hash")
        out = [dict(zip(keys, r, strict=True)) for r in reversed(rows)]
        for d in out:
            d["payload"] = orjson.loads(d["payload"])
            d["provenance"] = orjson.loads(d["provenance"])
        return out

    def originals(self, twin_id: str | None = None, rtype: str | None = None) -> Iterator[str]:
        """Current originals in journal order, fetched in pages (keyset on ``seq``) so that
        no cursor or lock is held between pages."""
        where = ["superseded_at IS NULL", "NOT deleted", "seq > %s"]
        params: list[Any] = []
        if twin_id is not None:
            subject = self._resolve_twin(twin_id)["subject"]
            where.append("(subject = %s OR rid = %s)")
            params += [subject, subject]
        if rtype is not None:
            where.append("rtype = %s")
            params.append(rtype)
        q = f"SELECT seq, raw FROM records WHERE {' AND '.join(where)} ORDER BY seq LIMIT 2000"
        last = 0
        while True:
            page = self._all(q, [last, *params])
            for _seq, raw in page:
                yield raw
            if len(page) < 2000:
                return
            last = int(page[-1][0])

    def iter_resources(self, rtype: str) -> Iterator[dict[str, Any]]:
        for raw in self.originals(rtype=rtype):
            yield orjson.loads(raw)

    def quarantine(self) -> list[dict[str, Any]]:
        keys = ("qid", "recorded_at", "source", "locator", "reason", "raw")
        rows = self._all(
            "SELECT qid, recorded_at, source, locator, reason, raw FROM quarantine ORDER BY qid"
        )
        out = []
        for r in rows:
            d = dict(zip(keys, r, strict=True))
            d["raw"] = bytes(d["raw"]).decode("utf-8", "surrogateescape")
            out.append(d)
        return out

    def stats(self) -> dict[str, Any]:
        queries = {
            "resources": "SELECT rtype, count(*) FROM records WHERE superseded_at IS NULL AND "
            "NOT deleted GROUP BY rtype ORDER BY rtype",
            "versions": "SELECT count(*) FROM records",
            "events": "SELECT kind, count(*) FROM journal GROUP BY kind ORDER BY kind",
            "facts": "SELECT count(*) FROM facts",
            "twins": "SELECT kind, count(*) FROM twins GROUP BY kind ORDER BY kind",
            "quarantined": "SELECT count(*) FROM quarantine",
            "references": "SELECT CASE WHEN status = 'pending' AND target IN (SELECT rid FROM "
            "records WHERE superseded_at IS NULL AND NOT deleted) THEN 'resolved' ELSE status "
            "END AS st, count(*) FROM refs GROUP BY st ORDER BY st",
            "validation": "SELECT validation, count(*) FROM records WHERE superseded_at IS NULL "
            "GROUP BY validation ORDER BY validation",
            "units": "SELECT unit_status, count(*) FROM facts WHERE unit_status IS NOT NULL "
            "GROUP BY unit_status ORDER BY unit_status",
        }
        out: dict[str, Any] = {}
        with self._lock, self._live().transaction(), self.conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            for key, q in queries.items():
                rows = cur.execute(q).fetchall()
                out[key] = rows[0][0] if key in ("versions", "facts", "quarantined") else dict(rows)
        return out

    def verify(self) -> VerifyReport:
        """Check the chain and every stored original against it, in one snapshot."""
        rep = VerifyReport()
        payload_of: dict[int, str] = {}
        with self._lock, self._live().transaction():
            self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            with self.conn.cursor(name="healthtwin_verify_journal") as jc:
                jc.itersize = 5000
                jc.execute(
                    "SELECT seq, event_id, recorded_at, kind, twin_id, subject, batch_id, "
                    "payload, provenance, prev_hash, hash FROM journal ORDER BY seq"
                )

                def rows() -> Iterator[tuple[Any, ...]]:
                    for r in jc:
                        if r[3].startswith("record.") and r[3] != "record.rejected":
                            payload_of[int(r[0])] = r[7]
                        yield r

                verify_chain(rows(), rep)
            n = 0
            with self.conn.cursor(name="healthtwin_verify_records") as rc:
                rc.itersize = 5000
                rc.execute("SELECT rid, version, seq, content_sha256, raw FROM records")
                for rid, version, seq, sha, raw in rc:
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
        self.conn.close()
