"""FHIR R4 ingestion: read -> validate -> resolve references -> normalise -> store in batches.

Every resource that passes validation is stored whole (its original text, byte-exact), typed
values are extracted from the ones the platform models, and every rejected piece of input goes
to the quarantine with its file, line or entry and the reason. One file (or up to
``batch_size`` records of a large NDJSON file) is one transaction.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import hashlib
import itertools
import multiprocessing
import os
import pickle
import queue
import re
import signal
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing import reduction
from typing import Any

from healthtwin.thread.fhir.normalize import (
    facts_of,
    identifiers,
    references,
    subject_of,
)
from healthtwin.thread.fhir.reader import Record, expand_paths, read_source_bytes, read_text
from healthtwin.thread.fhir.validate import R4_RESOURCE_TYPES, fast_check, strict_check
from healthtwin.twin.model import InboundRecord, Rejected
from healthtwin.twin.store.base import BatchResult, Store

_REL_REF = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]+)?$")
_ABS_REF = re.compile(r"^https?://\S+/([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/\S+)?$")


@dataclass
class IngestReport:
    files: int = 0
    records: int = 0
    created: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    quarantined: int = 0
    twins_created: int = 0
    batches: int = 0
    per_type: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def add(self, res: BatchResult) -> None:
        self.batches += 1
        self.created += res.created
        self.updated += res.updated
        self.deleted += res.deleted
        self.unchanged += res.unchanged
        self.quarantined += res.quarantined
        self.twins_created += res.twins_created
        for k, v in res.per_type.items():
            self.per_type[k] = self.per_type.get(k, 0) + v


class _Broken(ValueError):
    pass


def _classify(ref: str, urls: dict[str, str]) -> tuple[str, str | None, str] | None:
    """(reference, target rid, status) or None for a contained reference; raises _Broken."""
    if ref.startswith("#"):
        return None
    if ref in urls:
        return (ref, urls[ref], "resolved")
    if ref.startswith(("urn:uuid:", "urn:oid:")):
        raise _Broken(f"reference {ref!r} points to no entry of this Bundle")
    m = _REL_REF.match(ref)
    if m:
        if m.group(1) not in R4_RESOURCE_TYPES:
            raise _Broken(f"reference {ref!r} names unknown resource type {m.group(1)!r}")
        return (ref, f"{m.group(1)}/{m.group(2)}", "pending")
    if "?" in ref:
        rtype = ref.split("?", 1)[0]
        if rtype not in R4_RESOURCE_TYPES:
            raise _Broken(f"conditional reference {ref!r} names unknown resource type")
        return (ref, None, "conditional")
    m = _ABS_REF.match(ref)
    if m:
        return (ref, f"{m.group(1)}/{m.group(2)}", "external")
    if ref.startswith(("http://", "https://")):
        return (ref, None, "external")
    raise _Broken(f"reference {ref!r} is not a valid FHIR reference")


def _bundle_urls(recs: list[Record]) -> dict[str, str]:
    urls: dict[str, str] = {}
    for r in recs:
        if r.view is None or not r.full_url:
            continue
        rid = _rid(r)
        if rid:
            urls[r.full_url] = rid
    return urls


def _rid(r: Record) -> str | None:
    obj = r.view
    if obj is None:
        return None
    rtype, fid = obj.get("resourceType"), obj.get("id")
    if not fid and r.full_url and r.full_url.startswith("urn:uuid:"):
        fid = r.full_url[len("urn:uuid:") :]
    if not fid:
        # No id at all: a content-derived id keeps re-ingestion idempotent.
        fid = "h-" + hashlib.sha256(r.text.encode()).hexdigest()[:40]
    return f"{rtype}/{fid}"


def convert_records(
    recs: list[Record], *, strict: bool = False, skipped: list[str] | None = None
) -> tuple[list[InboundRecord], list[Rejected]]:
    """Turn reader records (one input's worth) into accepted and rejected records.

    Bundle entries that carry no resource by design (GET/HEAD requests, responses) are not
    data: they are listed in ``skipped`` (reported by the CLI), never silently dropped.
    """
    skipped = skipped if skipped is not None else []
    accepted: list[InboundRecord] = []
    rejected: list[Rejected] = []
    groups: dict[str | None, list[Record]] = {}
    for r in recs:
        groups.setdefault(
            f"{r.bundle}@{r.line}" if r.bundle and r.locator.startswith("line") else r.bundle, []
        ).append(r)
    for bundle_key, group in groups.items():
        urls = _bundle_urls(group) if bundle_key else {}
        memo: dict[str, tuple[str, str | None, str] | str | None] = {}
        for r in group:
            rej = _convert_one(r, urls, strict, accepted, skipped, memo)
            if rej is not None:
                rejected.append(Rejected(r.source, r.locator, rej, r.text, r.line, r.entry))
    return accepted, rejected


def _classify_memo(
    ref: str, urls: dict[str, str], memo: dict[str, tuple[str, str | None, str] | str | None]
) -> tuple[str, str | None, str] | None:
    """``_classify`` remembered per Bundle/file (the same references recur on every entry)."""
    try:
        c = memo[ref]
    except KeyError:
        try:
            c = _classify(ref, urls)
        except _Broken as exc:
            c = str(exc)
        memo[ref] = c
    if isinstance(c, str):
        raise _Broken(c)
    return c


def _convert_one(
    r: Record,
    urls: dict[str, str],
    strict: bool,
    out: list[InboundRecord],
    skipped: list[str],
    memo: dict[str, tuple[str, str | None, str] | str | None] | None = None,
) -> str | None:
    memo = {} if memo is None else memo
    if r.error:
        return r.error
    if r.view is None and "skip" in r.extra:
        skipped.append(f"{r.source} {r.locator}: {r.extra['skip']}")
        return None
    if r.view is None:
        url = r.extra.get("delete")
        m = _REL_REF.match(str(url or "").split("?")[0])
        if not m:
            return f"DELETE entry with unsupported url {url!r}"
        raw = r.text
        out.append(
            InboundRecord(
                f"{m.group(1)}/{m.group(2)}",
                m.group(1),
                raw,
                hashlib.sha256(raw.encode()).hexdigest(),
                r.source,
                r.locator,
                deleted=True,
            )
        )
        return None
    obj = r.view  # the fast-path view: only the elements read here are decoded
    reason = fast_check(obj)
    if reason:
        return reason
    validation = "fast"
    if strict:
        assert r.obj is not None
        reason = strict_check(r.obj)
        if reason:
            return reason
        validation = "strict"
    rid = _rid(r)
    assert rid is not None
    refs: list[tuple[str, str | None, str]] = []
    try:
        for ref in references(r.text):
            c = _classify_memo(ref, urls, memo)
            if c is not None:
                refs.append(c)
        subj_ref = subject_of(obj)
        subject = None
        if subj_ref is not None:
            c = _classify_memo(subj_ref, urls, memo)
            subject = None if c is None else (c[1] or c[0])
    except _Broken as exc:
        return str(exc)
    facts, err = facts_of(obj)
    if err:
        return err
    text = r.text
    out.append(
        InboundRecord(
            rid=rid,
            rtype=str(obj["resourceType"]),
            raw=text,
            sha256=hashlib.sha256(text.encode()).hexdigest(),
            source=r.source,
            locator=r.locator,
            subject=subject,
            facts=facts,
            refs=refs,
            identifiers=identifiers(obj),
            validation=validation,
        )
    )
    return None


def _convert_input(
    source: str,
    text: str | bytes,
    *,
    strict: bool,
    batch_size: int,
    ndjson: bool | None,
    skipped: list[str] | None = None,
) -> Iterator[tuple[list[InboundRecord], list[Rejected]]]:
    recs = list(read_text(source, text, ndjson=ndjson))
    # A Bundle is resolved as a whole (urn:uuid references), so it is never split.
    step = len(recs) if any(r.bundle for r in recs) else batch_size
    for i in range(0, len(recs), max(step, 1)):
        yield convert_records(recs[i : i + step], strict=strict, skipped=skipped)


# Plain NDJSON is converted in chunks of this many records (a reader process sends each chunk
# as soon as it is ready); transactions are still made of about ``batch_size`` records.
_CHUNK = 1000
# A reader process pays for itself (fork, pickling) from about this much input.
_PARALLEL_MIN_BYTES = 1 << 20


@dataclass
class _Input:
    """One input's converted chunks, in order, or why it could not be read (``error``)."""

    path: str
    source: str
    size: int
    chunks: Iterable[Any]  # (accepted, rejected) pairs, or duckdb_bulk.Prepared chunks
    error: str | None = None


def _local_inputs(
    paths: list[str], strict: bool, batch_size: int, skipped: list[str]
) -> Iterator[_Input]:
    """Read and convert each input in this process (lazily, chunk by chunk)."""
    chunk = max(1, min(batch_size, _CHUNK))
    for path in paths:
        try:
            source, text = read_source_bytes(path)
            nd = True if path.endswith((".ndjson", ".jsonl", ".ndjson.gz")) else None
            chunks = _convert_input(
                source, text, strict=strict, batch_size=chunk, ndjson=nd, skipped=skipped
            )
            first = next(chunks, None)  # reads the whole input: decoding errors surface here
        except (OSError, UnicodeDecodeError) as exc:
            yield _Input(path, path, 0, (), error=str(exc))
            continue
        yield _Input(
            path, source, len(text), itertools.chain([] if first is None else [first], chunks)
        )


# Chunks in flight between a reader process and the store (bounds the memory they hold).
_IN_FLIGHT = 8
_PARENT = [0]  # in a reader process: the pid of the store's process


def _send_chunk(conn: Any, slots: Any, chunk: Any, skipped: list[str]) -> None:
    """Send one converted chunk to the parent.

    Through a pipe, a chunk of several MB crosses in 64 KB pieces, each a hand-over between
    the two processes: on a busy machine every one of them can wait for a time slice (the
    parent was measured idle 70 % of an ingest). So the pickled chunk is written to an
    anonymous memory file (``memfd_create``) whose descriptor is passed over the socket: one
    copy, no hand-overs, and nothing left behind if either process is killed.
    """
    data = pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL)
    if not hasattr(os, "memfd_create"):
        conn.send(("chunk", chunk, skipped))
        return
    _acquire(slots, _PARENT[0])  # released by the parent once it has read a chunk
    fd = os.memfd_create("healthtwin-ingest-chunk", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        conn.send(("chunk-fd", len(data), skipped))
        reduction.send_handle(conn, fd, os.getppid())
    finally:
        os.close(fd)


def _die_with_parent() -> None:
    """Have the kernel kill this process when its parent dies (Linux ``PR_SET_PDEATHSIG``):
    a reader blocked on a full socket would otherwise outlive an ingest killed with -9."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the slot wait below still times out
        return
    if os.getppid() == 1:  # the parent died before the call
        os._exit(1)


def _acquire(slots: Any, parent: int) -> None:
    """Wait for a free slot, giving up if the parent is gone (no PR_SET_PDEATHSIG)."""
    while not slots.acquire(timeout=1.0):
        if os.getppid() != parent:
            os._exit(1)


def _reader_main(
    conn: Any, slots: Any, paths: list[str], strict: bool, batch_size: int, prepare: bool
) -> None:
    """The reader process: every input's chunks, in order, to ``conn``; with ``prepare``,
    each chunk already as the DuckDB store's columns (``duckdb_bulk.prepare``)."""
    gc.disable()  # as in ingest_paths: what is made here is freed by reference counting
    _PARENT[0] = os.getppid()
    _die_with_parent()
    send = conn.send
    try:
        if prepare:
            from healthtwin.twin.store.duckdb_bulk import prepare as prep
        skipped: list[str] = []
        for inp in _local_inputs(paths, strict, batch_size, skipped):
            send(("input", inp.path, inp.source, inp.size, inp.error))
            if inp.error is not None:
                continue
            for acc, rej in inp.chunks:
                _send_chunk(conn, slots, prep(acc, rej) if prepare else (acc, rej), skipped[:])
                skipped.clear()
            send(("end",))
        send(("done",))
    except BaseException:  # reported to the parent, which raises it
        send(("crash", traceback.format_exc()))
    finally:
        conn.close()


class _Worker:
    """One reader process and its end of the socket pair."""

    def __init__(self, ctx: Any, paths: list[str], strict: bool, batch_size: int, prepare: bool):
        self.conn, child = ctx.Pipe(duplex=True)  # a socket pair: it can pass descriptors
        self.slots = ctx.BoundedSemaphore(_IN_FLIGHT)
        self.proc = ctx.Process(
            target=_reader_main,
            args=(child, self.slots, paths, strict, batch_size, prepare),
            name="healthtwin-ingest-reader",
            daemon=True,
        )
        self.proc.start()
        child.close()

    def _died(self) -> RuntimeError:
        self.proc.join()
        return RuntimeError(
            f"the ingest reader process ended unexpectedly (exit code {self.proc.exitcode})"
        )

    def recv(self) -> tuple[Any, ...]:
        try:
            msg: tuple[Any, ...] = self.conn.recv()
        except EOFError:
            raise self._died() from None
        if msg[0] == "crash":
            raise RuntimeError(f"the ingest reader process failed:\n{msg[1]}")
        if msg[0] == "chunk-fd":
            _, size, skipped = msg
            try:
                fd = reduction.recv_handle(self.conn)
            except (EOFError, OSError):
                raise self._died() from None
            try:
                data = bytearray(size)
                view, got = memoryview(data), 0
                while got < size:
                    n = os.preadv(fd, [view[got:]], got)
                    if n <= 0:
                        raise RuntimeError("the ingest reader process sent a short chunk")
                    got += n
            finally:
                os.close(fd)
                self.slots.release()
            return ("chunk", pickle.loads(data), skipped)
        return msg

    def close(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()
        self.proc.join()
        self.conn.close()


def _assign(paths: list[str], workers: int) -> list[int]:
    """The worker of each input: largest inputs first, each to the least loaded worker (by
    bytes), so that the workers finish together."""
    sizes = [os.path.getsize(p) for p in paths]
    load = [0] * workers
    owner = [0] * len(paths)
    for i in sorted(range(len(paths)), key=lambda i: -sizes[i]):
        w = min(range(workers), key=load.__getitem__)
        owner[i] = w
        load[w] += sizes[i]
    return owner


class ReaderProcess:
    """Reads and converts the inputs in forked child processes, so that the store's work
    (journal chain, inserts, commits) and the parsing run on all cores at once.

    Each of ``workers`` children converts its share of the inputs (balanced by size), in
    order; the parent takes the inputs in the original order, so the results are exactly
    those of the serial path: the same chunks in the same order, the same transactions and
    journal. Start it before the store is opened (the children then start converting while
    the parent imports and opens the store), pass it to :func:`ingest_paths`, and close it
    (or use it as a context manager).
    """

    def __init__(
        self,
        paths: list[str],
        *,
        strict: bool = False,
        batch_size: int = 5000,
        prepare: bool = True,
        workers: int | None = None,
    ):
        ctx = multiprocessing.get_context("fork")
        self.paths = list(paths)
        self.prepare = prepare  # chunks come as duckdb_bulk.Prepared (for a DuckDB store)
        n = workers if workers is not None else self.default_workers(self.paths)
        n = max(1, min(n, len(self.paths)))
        self._owner = _assign(self.paths, n)
        self._workers = [
            _Worker(
                ctx,
                [p for p, o in zip(self.paths, self._owner, strict=True) if o == w],
                strict,
                batch_size,
                prepare,
            )
            for w in range(n)
        ]

    @staticmethod
    def default_workers(paths: list[str]) -> int:
        """Reader processes for an ingest: as many as the cores (the store's process shares
        them: it waits while the readers work, and they wait while it commits)."""
        return max(1, min(os.cpu_count() or 1, len(paths)))

    @staticmethod
    def wanted(paths: list[str]) -> bool:
        """Whether a reader process is worth it: 2+ cores, files only, 1 MB of input or more."""
        if (os.cpu_count() or 1) < 2 or "-" in paths:
            return False
        return sum(os.path.getsize(p) for p in paths) >= _PARALLEL_MIN_BYTES

    def inputs(self, skipped: list[str]) -> Iterator[_Input]:
        """The inputs in order; each one's chunks must be read before the next."""
        for i, path in enumerate(self.paths):
            w = self._workers[self._owner[i]]
            msg = w.recv()
            if msg[0] != "input" or msg[1] != path:
                raise RuntimeError(f"the ingest reader process sent {msg[0]!r} for {path}")
            _, path, source, size, error = msg
            yield _Input(path, source, size, () if error else self._chunks(w, skipped), error)
        for w in self._workers:
            if w.recv()[0] != "done":
                raise RuntimeError("the ingest reader process sent more than it was asked for")

    @staticmethod
    def _chunks(w: _Worker, skipped: list[str]) -> Iterator[Any]:
        while (msg := w.recv())[0] != "end":
            skipped.extend(msg[2])
            yield msg[1]

    def close(self) -> None:
        """Stop the children (those still running) and release the sockets."""
        for w in self._workers:
            w.close()

    def __enter__(self) -> ReaderProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ingest_paths(
    store: Store,
    paths: Iterable[str],
    *,
    strict: bool = False,
    batch_size: int = 5000,
    progress: Callable[[str, int], Any] | None = None,
    pipeline: bool = True,
    reader: ReaderProcess | None = None,
) -> IngestReport:
    """Ingest files, folders (recursively: .json, .ndjson, .jsonl, .gz) and '-' (stdin).

    Small inputs are grouped so that a transaction holds about ``batch_size`` records; a
    Bundle or file is never split across transactions except NDJSON beyond ``batch_size``.
    With ``pipeline`` (the default) batch N is committed on a writer thread while batch N+1
    is read and normalised (see ``_Writer``); without it, everything runs in the caller.
    With ``reader`` (a :class:`ReaderProcess` started on the same paths), reading and
    conversion happen in that process instead of this one.
    """
    files = expand_paths(list(paths))
    report = IngestReport()
    # A store that takes prepared chunks (DuckDB) gets them: the store-independent columns
    # are built as each chunk is read (in the reader process, when there is one).
    takes_prepared = callable(getattr(store, "write_prepared", None))
    bulk = takes_prepared
    if reader is not None and reader.prepare and not takes_prepared:
        raise ValueError("the reader process prepares DuckDB chunks; this store cannot take them")
    prep: Callable[..., Any] | None = None
    if bulk and (reader is None or not reader.prepare):
        from healthtwin.twin.store.duckdb_bulk import prepare as prep
    batch = _Batch(store, report, _Writer(store, report) if pipeline else None, bulk)
    # The cyclic garbage collector would rescan every live record, view and row of the batch
    # again and again while millions of short-lived containers are made (15-20 % of the CPU
    # time of an ingest); what ingestion allocates is freed by reference counting, so the
    # collector is paused for the ingest and restored after it.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    modes = contextlib.ExitStack()
    try:
        if bulk and reader is not None:
            from healthtwin.twin.store import duckdb_bulk

            modes.enter_context(duckdb_bulk.one_thread(store))  # type: ignore[arg-type]
        if reader is not None:
            if reader.paths != files:
                raise ValueError("the reader process was started on other inputs")
            inputs = reader.inputs(report.skipped)
        else:
            inputs = _local_inputs(files, strict, batch_size, report.skipped)
        for inp in inputs:
            if inp.error is not None:
                report.problems.append(f"{inp.path}: {inp.error}")
                batch.reject(Rejected(inp.path, "file", f"unreadable input: {inp.error}", ""))
                batch.sources.append(inp.path)
                continue
            report.files += 1
            source = inp.source
            for item in inp.chunks:
                if prep is not None:
                    item = prep(*item)
                n = len(item) if bulk else len(item[0])
                if batch.size and batch.size + n > batch_size:
                    batch.flush()
                batch.add(item, n)
                if source not in batch.sources:
                    batch.sources.append(source)
                if batch.size >= batch_size:
                    batch.flush()
            if progress is not None:
                progress(inp.path, inp.size)
        batch.flush()
    finally:
        try:
            if batch.writer is not None:
                batch.writer.close()
        finally:
            try:
                modes.close()
            finally:
                if gc_was_enabled:
                    gc.enable()
    return report


def _commit(store: Store, report: IngestReport, item: tuple[Any, ...], label: str) -> None:
    """Commit one transaction: ``(accepted, rejected)`` or ``(prepared chunks,)``."""
    if len(item) == 1:
        res = store.write_prepared(item[0], source=label)  # type: ignore[attr-defined]
    else:
        res = store.write_batch(item[0], item[1], source=label)
    report.add(res)
    report.records += res.created + res.updated + res.deleted + res.unchanged + res.quarantined


class _Batch:
    """The records of the transaction being filled, and how it is committed: as accepted and
    rejected records (``write_batch``) or, for a ``bulk`` store, as prepared chunks
    (``write_prepared``)."""

    def __init__(
        self, store: Store, report: IngestReport, writer: _Writer | None, bulk: bool = False
    ) -> None:
        self.store, self.report, self.writer, self.bulk = store, report, writer, bulk
        self.acc: list[InboundRecord] = []
        self.rej: list[Rejected] = []
        self.chunks: list[Any] = []
        self.sources: list[str] = []
        self.size = 0  # records in the batch

    def add(self, item: Any, n: int) -> None:
        if self.bulk:
            self.chunks.append(item)
        else:
            self.acc.extend(item[0])
            self.rej.extend(item[1])
        self.size += n

    def reject(self, rej: Rejected) -> None:
        if self.bulk:
            from healthtwin.twin.store.duckdb_bulk import prepare

            self.chunks.append(prepare([], [rej]))
        else:
            self.rej.append(rej)

    def flush(self) -> None:
        if not (self.acc or self.rej or self.chunks or self.sources):
            return
        src = self.sources
        label = src[0] if len(src) == 1 else f"{src[0]} (+{len(src) - 1} more)"
        item: tuple[Any, ...] = (self.chunks,) if self.bulk else (self.acc, self.rej)
        if self.writer is not None:
            self.writer.submit(item, label)
        else:
            _commit(self.store, self.report, item, label)
        self.acc, self.rej, self.chunks, self.sources = [], [], [], []
        self.size = 0


class _Writer:
    """Commits batches on a background thread while the caller converts the next ones.

    DuckDB releases the GIL while it inserts and commits, so the store's disk work overlaps
    the next batch's parsing and normalisation. Batches are committed one by one, in order,
    each in its own transaction (a kill -9 still leaves whole batches only); at most one batch
    waits in the queue. The first error stops the writer and is raised to the caller.
    """

    def __init__(self, store: Store, report: IngestReport) -> None:
        self.store, self.report = store, report
        self.queue: queue.Queue[tuple[tuple[Any, ...], str] | None] = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="healthtwin-ingest-writer")
        self.thread.start()

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:
                try:
                    _commit(self.store, self.report, *item)
                except BaseException as exc:  # re-raised in the caller's thread
                    self.error = exc

    def submit(self, item: tuple[Any, ...], label: str) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((item, label))

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
