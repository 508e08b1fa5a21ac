"""Long-lived server services: rate limits, the change feed (SSE), Bulk export jobs."""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from healthtwin.serve import queries
from healthtwin.serve.gateway import StoreGateway
from healthtwin.serve.settings import Settings
from healthtwin.twin.model import InboundRecord
from healthtwin.twin.store.base import BatchResult

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
    """Fan-out of committed changes and alerts to SSE subscribers (this process).

    Notices are built from what the gateway commits. With several worker processes
    (PostgreSQL), a subscriber sees the writes made through its own worker only; see
    docs/server.md.
    """

    def __init__(self) -> None:
        self._subs: dict[str, list[Subscriber]] = {}

    def subscribe(self, sub: Subscriber) -> None:
        self._subs.setdefault(sub.subject, []).append(sub)

    def unsubscribe(self, sub: Subscriber) -> None:
        lst = self._subs.get(sub.subject, [])
        if sub in lst:
            lst.remove(sub)
        if not lst:
            self._subs.pop(sub.subject, None)

    def publish(self, subject: str, note: dict[str, Any]) -> None:
        for s in self._subs.get(subject, ()):
            if s.wants(note):
                try:
                    s.queue.put_nowait(note)
                except asyncio.QueueFull:
                    s.dropped += 1

    def on_commit(self, records: list[InboundRecord], res: BatchResult) -> None:
        if not self._subs:
            return
        when = res.recorded_at.replace(tzinfo=UTC).isoformat()
        for rec in records:
            subj = rec.rid if rec.rtype == "Patient" else rec.subject
            if subj is None or subj not in self._subs:
                continue
            codes = sorted({f.code for f in rec.facts})
            kind = "record.deleted" if rec.deleted else "record.changed"
            values = [
                {
                    "code": f.code,
                    "value": f.num_canonical if f.num_canonical is not None else f.num,
                    "unit": f.unit_canonical or f.unit,
                    "effective": f.effective.isoformat() if f.effective else None,
                }
                for f in rec.facts
            ]
            self.publish(
                subj,
                {
                    "event": kind,
                    "rid": rec.rid,
                    "type": rec.rtype,
                    "codes": codes,
                    "values": values,
                    "recorded_at": when,
                    "batch_id": res.batch_id,
                },
            )
            for f in rec.facts:
                if f.code not in queries.GLUCOSE_CODES or f.unit_canonical != "mg/dL":
                    continue
                v = f.num_canonical
                if v is None:
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
                            "rid": rec.rid,
                            "codes": [f.code],
                            "value": v,
                            "unit": "mg/dL",
                            "effective": f.effective.isoformat() if f.effective else None,
                            "recorded_at": when,
                        },
                    )


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
    """Bulk Data ``$export`` jobs: files written in the background, kept until deleted."""

    def __init__(self, gateway: StoreGateway, root: Path) -> None:
        self.gateway = gateway
        self.root = root
        self.jobs: dict[str, ExportJob] = {}

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
        self.jobs[jid] = job
        job.task = asyncio.create_task(self._run(job))
        return job

    async def _run(self, job: ExportJob) -> None:
        try:
            job.folder.mkdir(parents=True, exist_ok=True)
            for rtype in job.types:
                path = job.folder / f"{rtype}.ndjson"
                n = 0
                after = ""
                with path.open("w", encoding="utf-8") as fh:
                    while True:
                        rows = await self.gateway.call(
                            queries.export_rows,
                            self.gateway.store,
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

    def delete(self, job: ExportJob) -> None:
        if job.task is not None and not job.task.done():
            job.task.cancel()
        shutil.rmtree(job.folder, ignore_errors=True)
        self.jobs.pop(job.job_id, None)


class Services:
    """What the routes share beyond the store gateway."""

    def __init__(self, settings: Settings, gateway: StoreGateway) -> None:
        self.settings = settings
        self.gateway = gateway
        self.limiter = RateLimiter(settings.sim_rate, settings.sim_burst)
        self.feed = ChangeFeed()
        gateway.on_commit(self.feed.on_commit)
        self._tmp: str | None = None
        root = settings.export_dir
        if root is None:
            self._tmp = tempfile.mkdtemp(prefix="healthtwin-export-")
            root = self._tmp
        self.exports = Exports(gateway, Path(root))
        self.started = datetime.now(UTC)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for job in list(self.exports.jobs.values()):
            if job.task is not None and not job.task.done():
                job.task.cancel()
                with contextlib.suppress(BaseException):
                    await job.task
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    async def subject_of(self, rid: str) -> tuple[bool, str | None]:
        """(exists, patient compartment) of a current resource ``Type/id``."""
        return await self.gateway.call(queries.subject_of, self.gateway.store, rid)

    async def owner_of_job(self, job_id: str) -> tuple[str | None, str | None]:
        """(owner sub, patient compartment) of an export job, (None, None) if unknown."""
        job = self.exports.jobs.get(job_id)
        return (job.owner, job.patient) if job else (None, None)
