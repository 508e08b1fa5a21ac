"""The server's only way to the store: one store thread, group commit, buffered audit.

DuckDB allows one read-write process and one connection must not be used by two threads at
once, so every store call runs on a single dedicated thread (the event loop never blocks on
the store). Writes are group-committed: requests that arrive while a batch is being written
are written together as the next batch (one transaction, one fsync), and each request is
answered only after its batch has committed. Audit events of reads are buffered and written
at most ``audit_flush_s`` later (and on shutdown); audit events of writes are written in the
same transaction as the write.

Under load, a group can wait briefly for its siblings (``gather_s``, like PostgreSQL's
``commit_delay``/``commit_siblings``). Without it, closed-loop clients fall into a rhythm of
alternate groups of one write and of all the others (measured with 32 clients: groups of 1
and 31, each costing a whole commit): the lone write reaches an idle store just before the
other clients, answered by the last commit, send their next writes. So when fewer writes
wait than the last group held, the next group waits until as many wait, for at most
``gather_s`` (a group that then comes out smaller sets a smaller target for the next). A
write under no load (last group < 4 writes) never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from healthtwin.twin.model import Event, InboundRecord, Rejected
from healthtwin.twin.store.base import BatchResult, Store

T = TypeVar("T")


@dataclass
class Written:
    """A committed group: the batch result and the current version of each written rid."""

    batch: BatchResult
    versions: dict[str, tuple[int, datetime, bool]]
    conflicts: set[str] = field(default_factory=set)
    records: list[InboundRecord] = field(default_factory=list)


@dataclass
class _Write:
    records: Sequence[InboundRecord]
    rejected: Sequence[Rejected]
    events: Sequence[Event]
    source: str
    future: asyncio.Future[Written] = field(repr=False)
    create_only: bool = False


class StoreGateway:
    """Run store calls on one thread; group-commit writes; buffer audit events."""

    def __init__(
        self,
        store: Store,
        *,
        audit_flush_s: float = 0.05,
        max_group: int = 2000,
        gather_s: float = 0.004,
        reader: Callable[[], Store] | None = None,
        readers: int = 2,
    ):
        self.store = store
        self._exec = ThreadPoolExecutor(max_workers=1, thread_name_prefix="healthtwin-store")
        # reads on their own connections (DuckDB MVCC: they see committed data and never
        # wait for a write batch); without a reader factory they share the writer thread
        self._reader = reader
        self._local = threading.local()
        self._reader_stores: list[Store] = []
        self._rexec = (
            ThreadPoolExecutor(max_workers=readers, thread_name_prefix="healthtwin-read")
            if reader is not None
            else None
        )
        self._pending: list[_Write] = []
        self._audit: list[Event] = []
        self._writer: asyncio.Task[None] | None = None
        self._audit_task: asyncio.Task[None] | None = None
        self._audit_flush_s = audit_flush_s
        self._max_group = max_group
        self._gather_s = gather_s
        self._last_group = 0  # writes in the last group committed
        self._gathered: asyncio.Event | None = None  # set when ``_want`` writes wait
        self._want = 0
        self._listeners: list[Callable[[list[InboundRecord], BatchResult], None]] = []
        self.batches = 0

    # ------------------------------------------------------------------ reads
    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the store thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._exec, functools.partial(fn, *args, **kwargs))

    def _reader_store(self) -> Store:
        st: Store | None = getattr(self._local, "store", None)
        if st is None:
            assert self._reader is not None
            st = self._reader()
            self._local.store = st
            self._reader_stores.append(st)
        return st

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(store, *args, **kwargs)`` on a reader connection (read-only use)."""
        loop = asyncio.get_running_loop()
        if self._rexec is None:
            return await loop.run_in_executor(
                self._exec, functools.partial(fn, self.store, *args, **kwargs)
            )

        def run() -> T:
            return fn(self._reader_store(), *args, **kwargs)

        return await loop.run_in_executor(self._rexec, run)

    # ------------------------------------------------------------------ writes
    def on_commit(self, fn: Callable[[list[InboundRecord], BatchResult], None]) -> None:
        """Call ``fn(records, result)`` on the event loop after each committed batch."""
        self._listeners.append(fn)

    async def write(
        self,
        records: Sequence[InboundRecord],
        rejected: Sequence[Rejected] = (),
        events: Sequence[Event] = (),
        *,
        source: str = "api",
        create_only: bool = False,
    ) -> Written:
        """Write records atomically (grouped with concurrent writes); returns the group's result."""
        w = _Write(
            records,
            rejected,
            events,
            source,
            asyncio.get_running_loop().create_future(),
            create_only,
        )
        self._pending.append(w)
        if self._gathered is not None and len(self._pending) >= self._want:
            self._gathered.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        return await w.future

    def audit(self, event: Event) -> None:
        """Queue an audit event; it is journaled within ``audit_flush_s`` (or with a write)."""
        self._audit.append(event)
        if self._audit_task is None or self._audit_task.done():
            self._audit_task = asyncio.create_task(self._audit_later())

    async def _audit_later(self) -> None:
        await asyncio.sleep(self._audit_flush_s)
        if self._audit and (self._writer is None or self._writer.done()):
            self._writer = asyncio.create_task(self._drain())

    def _take_group(self) -> list[_Write]:
        group: list[_Write] = []
        seen: set[str] = set()
        n = 0
        while self._pending:
            w = self._pending[0]
            rids = {r.rid for r in w.records}
            # the same resource twice in one batch would need two versions: next batch
            if group and (rids & seen or n + len(w.records) > self._max_group):
                break
            seen |= rids
            n += len(w.records)
            group.append(self._pending.pop(0))
        return group

    async def _gather(self) -> None:
        """Under load, wait up to ``gather_s`` until as many writes wait as the last group
        held (see the module docstring)."""
        want = self._last_group
        if self._gather_s <= 0 or want < 4 or not self._pending or len(self._pending) >= want:
            return
        self._want, self._gathered = want, asyncio.Event()
        try:
            await asyncio.wait_for(self._gathered.wait(), self._gather_s)
        except TimeoutError:
            pass
        finally:
            self._gathered = None

    async def _drain(self) -> None:
        while self._pending or self._audit:
            await self._gather()
            if not self._pending and not self._audit:  # aclose drains too: taken meanwhile
                continue
            group = self._take_group()
            self._last_group = len(group)
            audit, self._audit = self._audit, []
            records = [r for w in group for r in w.records]
            create_only = {r.rid for w in group if w.create_only for r in w.records}
            rejected = [r for w in group for r in w.rejected]
            events = [e for w in group for e in w.events] + audit
            source = group[0].source if len(group) == 1 else f"api ({len(group)} requests)"
            if not group:
                source = "api audit"
            try:
                res = await self.call(
                    self._write_group, records, rejected, events, source, create_only
                )
            except Exception as exc:
                for w in group:
                    if not w.future.done():
                        w.future.set_exception(exc)
                if not group:  # audit only: keep the events for the next attempt
                    self._audit[:0] = audit
                    raise
                continue
            self.batches += 1
            for w in group:
                if not w.future.done():
                    w.future.set_result(res)
            for fn in self._listeners:
                with contextlib.suppress(Exception):
                    fn(res.records, res.batch)

    def _write_group(
        self,
        records: list[InboundRecord],
        rejected: list[Rejected],
        events: list[Event],
        source: str,
        create_only: set[str],
    ) -> Written:
        from healthtwin.serve.queries import versions

        # create-only rids are checked by the store inside the batch's transaction (no race
        # with another create, and no statement of its own)
        res = self.store.write_batch(
            records, rejected, events, source=source, create_only=create_only
        )
        conflicts = set(res.conflicts)
        records = [r for r in records if r.rid not in conflicts]
        vers: dict[str, tuple[int, datetime, bool]] = {}
        if records:
            rids = {r.rid for r in records}
            # the store reports the versions it wrote (no second query); a store that does
            # not (an empty ``versions``) is asked
            vers = {rid: res.versions[rid] for rid in rids if rid in res.versions}
            if not res.versions:
                vers = versions(self.store, sorted(rids))
        return Written(res, vers, conflicts, records)

    async def aclose(self) -> None:
        """Write what is pending (audit included) and stop the store thread."""
        if self._audit_task is not None:
            self._audit_task.cancel()
        if self._pending or self._audit:
            await self._drain()
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        self._exec.shutdown(wait=True)
        if self._rexec is not None:
            self._rexec.shutdown(wait=True)
            for st in self._reader_stores:
                with contextlib.suppress(Exception):
                    st.close()
            self._reader_stores.clear()
