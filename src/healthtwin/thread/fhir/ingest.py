"""FHIR R4 ingestion: read -> validate -> resolve references -> normalise -> store in batches.

Every resource that passes validation is stored whole (its original text, byte-exact), typed
values are extracted from the ones the platform models, and every rejected piece of input goes
to the quarantine with its file, line or entry and the reason. One file (or up to
``batch_size`` records of a large NDJSON file) is one transaction.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import itertools
import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from healthtwin.thread.fhir.normalize import (
    facts_of,
    identifiers,
    references,
    subject_of,
)
from healthtwin.thread.fhir.paths import expand_paths
from healthtwin.thread.fhir.reader import Record, read_source_bytes, read_text
from healthtwin.thread.fhir.readers import ReaderProcess, _Input
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
