"""Long-lived server services: rate limits, the change feed (SSE), Bulk export jobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from healthtwin.serve import queries
from healthtwin.serve.gateway import StoreGateway
from healthtwin.serve.settings import Settings
from healthtwin.twin.model import InboundRecord
from healthtwin.twin.store.base import BatchResult

_log = logging.getLogger(__name__)

#: glucose alert thresholds (mg/dL): ADA level 1 and level 2 hypoglycaemia, hyperglycaemia
ALERT_RULES = ((54.0, "low", "urgent-low"), (70.0, "low", "low"))
HIGH_RULES = ((250.0, "high", "very-high"), (180.0, "high", "high"))


class RateLimiter:
    """Token bucket per (principal, action): ``rate`` per second, ``burst`` at most."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}

    def take(self, key: tuple[str, str], now: float | None = None) -> float:
        """0 when allowed (one token taken), else the seconds until a token is available."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate if self.rate > 0 else math.inf


@dataclass
class Subscriber:
    """One SSE listener on a twin's subject with filters."""

    subject: str
    kinds: frozenset[str] | None
    codes: frozenset[str] | None
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(1000))
    dropped: int = 0

    def wants(self, note: dict[str, Any]) -> bool:
        if self.kinds is not None and note["event"] not in self.kinds:
            return False
        if self.codes is not None:
            return bool(self.codes & set(note.get("codes", ())))
        return True


class ChangeFeed:
    """Fan-out of committed changes and alerts to SSE subscribers.

    On DuckDB (one server process) notices are built from what the gateway commits
    (``on_commit``). On PostgreSQL (``from_journal``) they are built from the journal instead
    (``on_journal``, fed by :class:`CommitWatcher`), for every process's commits, this one's
    included: a subscriber on one worker sees the writes made through every other worker and
    by a CLI ingest, each once, in commit order.
    """

    def __init__(self, *, from_journal: bool = False) -> None:
        self._subs: dict[str, list[Subscriber]] = {}
        self.from_journal = from_journal
        #: the subscribed subjects, replaced (never mutated) on each change: another thread
        #: (the commit watcher) may read it at any time
        self.subjects: frozenset[str] = frozenset()

    def subscribe(self, sub: Subscriber) -> None:
        self._subs.setdefault(sub.subject, []).append(sub)
        self.subjects = frozenset(self._subs)

    def unsubscribe(self, sub: Subscriber) -> None:
        lst = self._subs.get(sub.subject, [])
        if sub in lst:
            lst.remove(sub)
        if not lst:
            self._subs.pop(sub.subject, None)
        self.subjects = frozenset(self._subs)

    def publish(self, subject: str, note: dict[str, Any]) -> None:
        for s in self._subs.get(subject, ()):
            if s.wants(note):
                try:
                    s.queue.put_nowait(note)
                except asyncio.QueueFull:
                    s.dropped += 1

    def on_commit(self, records: list[InboundRecord], res: BatchResult) -> None:
        """This process's committed batch (the gateway's listener)."""
        if self.from_journal or not self._subs:
            return
        when = res.recorded_at.replace(tzinfo=UTC).isoformat()
        for rec in records:
            subj = rec.rid if rec.rtype == "Patient" else rec.subject
            if subj is None or subj not in self._subs:
                continue
            ver = res.versions.get(rec.rid)
            if ver is not None and ver[1] != res.recorded_at:
                continue  # unchanged (the same content again): nothing was written
            facts = [
                (f.code, f.num, f.unit, f.num_canonical, f.unit_canonical, f.effective)
                for f in rec.facts
            ]
            self.publish_record(subj, rec.rid, rec.rtype, rec.deleted, facts, when, res.batch_id)

    def on_journal(self, changes: list[dict[str, Any]], facts: dict[tuple[str, int], Any]) -> None:
        """Record events read from the journal (``PostgresStore.changes_since``) and the facts
        of the versions they wrote, ``(rid, version) -> [(code, num, unit, num_canonical,
        unit_canonical, effective)]`` (read by the watcher for subscribed subjects only: a
        version without an entry, its subject subscribed since, predates the subscription)."""
        for c in changes:
            rec = record_change(c)
            if rec is None:
                continue
            subj, rid, rtype, version, deleted = rec
            values = facts.get((rid, version))
            if subj not in self._subs or (values is None and not deleted):
                continue
            when = _utc(c["recorded_at"]).isoformat()
            self.publish_record(subj, rid, rtype, deleted, values or [], when, c["batch_id"])

    def publish_record(
        self,
        subj: str,
        rid: str,
        rtype: str,
        deleted: bool,
        facts: list[tuple[Any, ...]],
        when: str,
        batch_id: str,
    ) -> None:
        """Publish one written record version (and its glucose alerts) to ``subj``'s
        subscribers. ``facts``: (code, num, unit, num_canonical, unit_canonical, effective)."""
        effective = [_utc(f[5]).isoformat() if f[5] is not None else None for f in facts]
        self.publish(
            subj,
            {
                "event": "record.deleted" if deleted else "record.changed",
                "rid": rid,
                "type": rtype,
                "codes": sorted({f[0] for f in facts}),
                "values": [
                    {
                        "code": f[0],
                        "value": f[3] if f[3] is not None else f[1],
                        "unit": f[4] or f[2],
                        "effective": eff,
                    }
                    for f, eff in zip(facts, effective, strict=True)
                ],
                "recorded_at": when,
                "batch_id": batch_id,
            },
        )
        for f, eff in zip(facts, effective, strict=True):
            code, v = f[0], f[3]
            if code not in queries.GLUCOSE_CODES or f[4] != "mg/dL" or v is None:
                continue
            level = next((lv for thr, _d, lv in ALERT_RULES if v < thr), None)
            if level is None:
                level = next((lv for thr, _d, lv in HIGH_RULES if v > thr), None)
            if level is not None:
                self.publish(
                    subj,
                    {
                        "event": "alert",
                        "level": level,
                        "rule": "glucose thresholds (mg/dL): <54 urgent-low, <70 low, "
                        ">180 high, >250 very-high",
                        "rid": rid,
                        "codes": [code],
                        "value": v,
                        "unit": "mg/dL",
                        "effective": eff,
                        "recorded_at": when,
                    },
                )


def _utc(ts: datetime) -> datetime:
    """A timestamp as aware UTC (the stores keep naive UTC)."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


_RECORD_KINDS = ("record.created", "record.updated", "record.deleted")


def record_change(c: dict[str, Any]) -> tuple[str, str, str, int, bool] | None:
    """(subject, rid, type, version, deleted) of a journal record event, else None (also
    when read without its payload: no one subscribed when the watcher read it)."""
    if c["kind"] not in _RECORD_KINDS or "payload" not in c:
        return None
    p = c["payload"]
    if isinstance(p, str):
        p = orjson.loads(p)
    rid, rtype = p["rid"], p["type"]
    subj = rid if rtype == "Patient" else c["subject"]
    if subj is None:
        return None
    return str(subj), str(rid), str(rtype), int(p["version"]), c["kind"] == "record.deleted"


class StateCache:
    """Serialized current state per twin (``at``/``as_of`` unset), invalidated on commit.

    Misses are loaded in batches (all twins missed meanwhile in one query, so many misses
    cost one DuckDB query, not one each) and the first ``preload`` twins are loaded at
    start-up in the background.

    Only valid where every write goes through this process's gateway (DuckDB: one process
    owns the file); off for PostgreSQL with several workers. An epoch counter (the
    epoch of each subject's last invalidation) keeps a read that raced a commit from caching
    what it read before the commit.
    """

    def __init__(self, max_items: int = 50_000) -> None:
        self._pending: dict[str, list[asyncio.Future[bytes | None]]] = {}
        self._loader: asyncio.Task[None] | None = None
        self.loads = 0
        self._data: dict[str, bytes] = {}
        self._gen: dict[str, int] = {}  # subject -> epoch of its last invalidation
        self._epoch = 0
        self._cleared = 0
        self._max = max_items
        self.hits = 0
        self.misses = 0

    def get(self, subject: str) -> bytes | None:
        v = self._data.get(subject)
        if v is None:
            self.misses += 1
        else:
            self.hits += 1
        return v

    async def load(self, gateway: StoreGateway, twin_id: str) -> bytes | None:
        """The serialized state of a twin, loaded with every other pending miss; None when
        the twin is not cacheable (absent, or its subject is not its own id)."""
        fut: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(twin_id, []).append(fut)
        if self._loader is None or self._loader.done():
            self._loader = asyncio.create_task(self._load_pending(gateway))
        return await fut

    async def _load_pending(self, gateway: StoreGateway) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            await self.fill(gateway, list(batch), batch)

    async def fill(
        self,
        gateway: StoreGateway,
        twin_ids: list[str] | None,
        waiters: dict[str, list[asyncio.Future[bytes | None]]] | None = None,
        limit: int = 0,
    ) -> None:
        from healthtwin.serve.models import TwinState
        from healthtwin.serve.routes.twins import state_value

        e0 = self.epoch()
        try:
            states = await gateway.read(queries.current_states, twin_ids, limit)
        except Exception as exc:
            for futs in (waiters or {}).values():
                for f in futs:
                    if not f.done():
                        f.set_exception(exc)
            return
        self.loads += 1
        for tid, rows in states.items():
            body = (
                TwinState(twin_id=tid, values=[state_value(r) for r in rows])
                .model_dump_json()
                .encode()
            )
            self.put(tid, e0, body)
            for f in (waiters or {}).pop(tid, []):
                if not f.done():
                    f.set_result(body)
        for futs in (waiters or {}).values():
            for f in futs:
                if not f.done():
                    f.set_result(None)

    def epoch(self) -> int:
        """Capture before reading the store; ``put`` refuses what a later commit changed."""
        return self._epoch

    def put(self, subject: str, epoch: int, body: bytes) -> None:
        if self._gen.get(subject, 0) > epoch or self._cleared > epoch:
            return  # a commit touched this twin after the read began: do not cache
        if len(self._data) >= self._max:
            self._data.pop(next(iter(self._data)))
        self._data[subject] = body

    def invalidate(self, subject: str) -> None:
        self._epoch += 1
        self._gen[subject] = self._epoch
        self._data.pop(subject, None)

    def on_commit(self, records: list[InboundRecord], res: BatchResult) -> None:
        for rec in records:
            subj = rec.rid if rec.rtype == "Patient" else rec.subject
            if subj is not None:
                self.invalidate(subj)
            if rec.rtype in ("Patient", "Organization"):
                self.invalidate(rec.rid)
        if any(st == "conditional" for r in records for _ref, _t, st in r.refs):
            # a conditional reference may move facts to another subject: drop everything
            self.clear()

    def clear(self) -> None:
        """Drop every entry (and refuse reads that began before now)."""
        self._epoch += 1
        self._cleared = self._epoch
        self._data.clear()


@dataclass
class ExportJob:
    """A Bulk Data export: who asked, for which compartment, and its files."""

    job_id: str
    owner: str
    patient: str | None
    types: list[str]
    since: datetime | None
    request_url: str
    folder: Path
    started: float = field(default_factory=time.time)
    done: bool = False
    error: str | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    transaction_time: datetime | None = None
    task: asyncio.Task[None] | None = None


class Exports:
    """Bulk Data ``$export`` jobs: files written in the background, kept until deleted.

    Each job's state is also a file, ``ROOT/JOB/job.json`` (written at the start and at the
    end, atomically), so that any process sharing ``root`` answers for it: with several
    server workers the status poll and the downloads may reach another worker than the
    kick-off, and with ``Settings.export_dir`` set, jobs outlive a restart. A job left
    unfinished by a process that has ended reports that it was interrupted.
    """

    def __init__(self, gateway: StoreGateway, root: Path) -> None:
        self.gateway = gateway
        self.root = root
        self.jobs: dict[str, ExportJob] = {}  # the jobs this process runs or ran

    def start(
        self,
        owner: str,
        patient: str | None,
        types: list[str],
        excluded: list[str],
        since: datetime | None,
        request_url: str,
    ) -> ExportJob:
        jid = uuid.uuid4().hex
        job = ExportJob(jid, owner, patient, types, since, request_url, self.root / jid)
        job.excluded = excluded
        job.transaction_time = datetime.now(UTC)
        job.folder.mkdir(parents=True, exist_ok=True)
        _save_job(job)
        self.jobs[jid] = job
        job.task = asyncio.create_task(self._run(job))
        return job

    def get(self, job_id: str) -> ExportJob | None:
        """The job, run here or by another process sharing ``root``; None if unknown."""
        job = self.jobs.get(job_id)
        if job is not None:
            if (job.folder / "job.json").exists():
                return job
            self.delete(job)  # deleted through another process
            return None
        return _load_job(self.root / job_id) if _JOB_ID.fullmatch(job_id) else None

    async def _run(self, job: ExportJob) -> None:
        try:
            for rtype in job.types:
                path = job.folder / f"{rtype}.ndjson"
                n = 0
                after = ""
                with path.open("w", encoding="utf-8") as fh:
                    while True:
                        rows = await self.gateway.read(
                            queries.export_rows,
                            rtype,
                            job.patient,
                            job.since,
                            after,
                            2000,
                        )
                        if not rows:
                            break
                        for _rid, raw in rows:
                            fh.write(raw.replace("\n", " ") if "\n" in raw else raw)
                            fh.write("\n")
                        n += len(rows)
                        after = rows[-1][0]
                if n:
                    job.files.append({"type": rtype, "name": path.name, "count": n})
                else:
                    path.unlink()
        except Exception as exc:  # reported to the client by the status endpoint
            job.error = f"{type(exc).__name__}: {exc}"
        job.done = True
        # not when deleted meanwhile (by another worker too: its folder may go at any time)
        with contextlib.suppress(FileNotFoundError):
            if job.folder.is_dir():
                _save_job(job)

    def delete(self, job: ExportJob) -> None:
        if job.task is not None and not job.task.done():
            job.task.cancel()
        shutil.rmtree(job.folder, ignore_errors=True)
        self.jobs.pop(job.job_id, None)


_JOB_ID = re.compile(r"[0-9a-f]{32}")
_INTERRUPTED = "the export was interrupted (its server process ended); start a new one"
_JOB_FIELDS = ("job_id", "owner", "patient", "types", "request_url", "done", "error", "files")


def _save_job(job: ExportJob) -> None:
    """Write ``job.json`` atomically (a reader sees the old or the new state, never half)."""
    state: dict[str, Any] = {k: getattr(job, k) for k in _JOB_FIELDS}
    state["excluded"] = job.excluded
    state["since"] = job.since.isoformat() if job.since else None
    state["transaction_time"] = job.transaction_time.isoformat() if job.transaction_time else None
    state["started"] = job.started
    state["pid"] = os.getpid()
    tmp = job.folder / f".job.{os.getpid()}.tmp"
    tmp.write_bytes(orjson.dumps(state))
    os.replace(tmp, job.folder / "job.json")


def _load_job(folder: Path) -> ExportJob | None:
    try:
        state = orjson.loads((folder / "job.json").read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        return None
    job = ExportJob(
        state["job_id"],
        state["owner"],
        state["patient"],
        list(state["types"]),
        datetime.fromisoformat(state["since"]) if state["since"] else None,
        state["request_url"],
        folder,
        started=float(state["started"]),
        done=bool(state["done"]),
        error=state["error"],
        files=list(state["files"]),
        excluded=list(state["excluded"]),
        transaction_time=(
            datetime.fromisoformat(state["transaction_time"]) if state["transaction_time"] else None
        ),
    )
    if not job.done and not _alive(int(state["pid"])):
        job.done = True
        job.error = _INTERRUPTED
    return job


def _alive(pid: int) -> bool:
    """Whether a process with this id runs (on this host: the workers share it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CommitWatcher:
    """Follows the commits of every process (PostgreSQL only): invalidates the state cache
    for commits made by other processes, and feeds the SSE change feed.

    A thread of its own listens on the store's commit channel (``PostgresStore.watch``, one
    NOTIFY per committed batch) with its own connection, reads what changed
    (``changes_since``) and, for the record events of subjects someone subscribed to, the
    facts of the versions written; then hands them to the event loop, in commit order. A
    change whose subject is unknown (a record without one) clears the whole cache. Reads are
    fresh again, and subscribers notified, once the notification has arrived (milliseconds
    on one host). A lost connection (database restart, network) is retried with backoff (up
    to 5 s) for as long as the server runs; ``last`` is kept, so nothing is missed.
    """

    def __init__(self, url: str, cache: StateCache, feed: ChangeFeed | None = None) -> None:
        self.url = url
        self.cache = cache
        self.feed = feed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.notified = 0
        self.errors = 0  # connection errors survived (each followed by a retry)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        from healthtwin.twin.store import open_store

        store: Any = open_store(self.url)
        rows = store.read_sql("SELECT coalesce(max(seq), 0) FROM journal")[1]
        last = int(rows[0][0])

        def subscribed() -> bool:
            return self.feed is not None and bool(self.feed.subjects)

        def catch_up() -> None:
            nonlocal last
            while True:  # a big ingest: pages
                # payloads (which record versions) only while someone subscribes to changes;
                # read again with them when a subscription came while the page was read (its
                # commits may be newer than the subscription)
                with_payload = subscribed()
                changes = store.changes_since(last, limit=10_000, payload=with_payload)
                if not with_payload and subscribed():
                    changes = store.changes_since(last, limit=10_000, payload=True)
                if not changes:
                    return
                last = max(int(c["seq"]) for c in changes)
                self.notified += 1
                facts = self._facts(store, changes)
                loop.call_soon_threadsafe(self._apply, changes, facts)

        def run() -> None:
            wait = 0.1
            try:
                while not self._stop.is_set():
                    try:
                        # listening from here on, then catch up: a commit made between two
                        # listens is read by the catch-up, a later one is notified
                        heads = store.watch(timeout=2.0)
                        catch_up()
                        for head in heads:
                            if head > last:
                                catch_up()
                            if self._stop.is_set():
                                break
                        wait = 0.1
                    except Exception as exc:  # the database went away: retry, never give up
                        # (``last`` is kept: the catch-up after reconnecting misses nothing)
                        self.errors += 1
                        _log.warning("commit watcher: %s; retrying in %.1f s", exc, wait)
                        self._stop.wait(wait)
                        wait = min(wait * 2, 5.0)
            finally:
                store.close()

        self._thread = threading.Thread(target=run, name="healthtwin-commit-watch", daemon=True)
        self._thread.start()

    def _facts(self, store: Any, changes: list[dict[str, Any]]) -> dict[tuple[str, int], Any]:
        """Facts of the record versions written for subscribed subjects (watcher thread)."""
        if self.feed is None or not self.feed.from_journal:
            return {}
        subjects = self.feed.subjects  # a frozen snapshot, replaced by the loop
        wanted = {
            (rc[1], rc[3])
            for c in changes
            if (rc := record_change(c)) is not None and rc[0] in subjects and not rc[4]
        }
        out: dict[tuple[str, int], list[tuple[Any, ...]]] = {k: [] for k in wanted}
        if not wanted:
            return out
        rows = store.read_sql(
            "SELECT rid, version, code, num, unit, num_canonical, unit_canonical, effective "
            "FROM facts WHERE rid = ANY(%s) ORDER BY rid, version, fkey",
            [sorted({rid for rid, _v in wanted})],
        )[1]
        for rid, version, *fact in rows:
            if (rid, int(version)) in wanted:
                out[(rid, int(version))].append(tuple(fact))
        return out

    def _apply(self, changes: list[dict[str, Any]], facts: dict[tuple[str, int], Any]) -> None:
        for c in changes:
            if c["kind"].startswith("record.") and c["subject"] is None and c["twin_id"] is None:
                self.cache.clear()
                break
            for key in {c["subject"], c["twin_id"]} - {None}:
                self.cache.invalidate(str(key))
        if self.feed is not None and self.feed.from_journal:
            self.feed.on_journal(changes, facts)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class Services:
    """What the routes share beyond the store gateway."""

    def __init__(self, settings: Settings, gateway: StoreGateway) -> None:
        self.settings = settings
        self.gateway = gateway
        self.limiter = RateLimiter(settings.sim_rate, settings.sim_burst)
        postgres = settings.store.startswith(("postgresql://", "postgres://"))
        # on PostgreSQL the feed follows the journal: every worker's commits (CommitWatcher)
        self.feed = ChangeFeed(from_journal=postgres)
        gateway.on_commit(self.feed.on_commit)
        self._preload: asyncio.Task[None] | None = None
        # The current-state cache: this process's commits invalidate it directly; on
        # PostgreSQL, other processes' commits (more server workers, a CLI ingest) invalidate
        # it through LISTEN/NOTIFY (``CommitWatcher``), within the notification's latency.
        self.state_cache: StateCache | None = StateCache()
        gateway.on_commit(self.state_cache.on_commit)
        self._watcher: CommitWatcher | None = None
        if postgres:
            self._watcher = CommitWatcher(settings.store, self.state_cache, self.feed)
        self._tmp: str | None = None
        root = settings.export_dir
        if root is None:
            self._tmp = tempfile.mkdtemp(prefix="healthtwin-export-")
            root = self._tmp
        self.exports = Exports(gateway, Path(root))
        self.started = datetime.now(UTC)

    async def start(self) -> None:
        if self._watcher is not None:
            self._watcher.start(asyncio.get_running_loop())
        if self.state_cache is not None and self.settings.state_preload > 0:
            self._preload = asyncio.create_task(
                self.state_cache.fill(self.gateway, None, None, self.settings.state_preload)
            )

    async def stop(self) -> None:
        if self._watcher is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._watcher.stop)
        if self._preload is not None:
            self._preload.cancel()
            with contextlib.suppress(BaseException):
                await self._preload
        for job in list(self.exports.jobs.values()):
            if job.task is not None and not job.task.done():
                job.task.cancel()
                with contextlib.suppress(BaseException):
                    await job.task
                if not job.done and job.folder.is_dir():
                    # said here: a restarted server may get this process's id again
                    job.done, job.error = True, _INTERRUPTED
                    _save_job(job)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    async def subject_of(self, rid: str) -> tuple[bool, str | None]:
        """(exists, patient compartment) of a current resource ``Type/id``."""
        return await self.gateway.read(queries.subject_of, rid)

    async def owner_of_job(self, job_id: str) -> tuple[str | None, str | None]:
        """(owner sub, patient compartment) of an export job, (None, None) if unknown."""
        job = self.exports.get(job_id)
        return (job.owner, job.patient) if job else (None, None)
