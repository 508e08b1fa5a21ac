"""Reader processes for an ingest: reading and conversion on all cores.

This module is light on purpose (standard library only). ``healthtwin ingest`` imports the
parser and Arrow, forks the readers (which inherit them), and only then imports DuckDB and
opens the store, so that the readers convert while the parent does that. Each child runs
``ingest._local_inputs`` on its share of the inputs (and, for a DuckDB store,
``duckdb_bulk.prepare``) and sends every chunk, pickled, through an anonymous memory file.
"""

from __future__ import annotations

import ctypes
import gc
import mmap
import multiprocessing
import os
import pickle
import signal
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from multiprocessing import reduction
from typing import Any

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


# Chunks in flight between a reader process and the store (bounds the memory they hold).
_IN_FLIGHT = 8
_PARENT = [0]  # in a reader process: the pid of the store's process
_ALIGN = 64


def _send_chunk(conn: Any, slots: Any, chunk: Any, skipped: list[str]) -> None:
    """Send one converted chunk to the parent.

    Through a pipe, a chunk of several MB crosses in 64 KB pieces, each a hand-over between
    the two processes: on a busy machine every one of them can wait for a time slice (the
    parent was measured idle 70 % of an ingest). So the chunk is written to an anonymous
    memory file (``memfd_create``) whose descriptor is passed over the socket, and nothing is
    left behind if either process is killed. It is pickled with out-of-band buffers (pickle
    protocol 5): the Arrow columns go from their own memory into the file, once, and the
    parent maps the file and unpickles them in place (no copy on its side).
    """
    if not hasattr(os, "memfd_create"):
        conn.send(("chunk", chunk, skipped))
        return
    bufs: list[pickle.PickleBuffer] = []
    pieces = [memoryview(pickle.dumps(chunk, protocol=5, buffer_callback=bufs.append))]
    pieces += [b.raw() for b in bufs]
    _acquire(slots, _PARENT[0])  # released by the parent once it has mapped a chunk
    fd = os.memfd_create("healthtwin-ingest-chunk", os.MFD_CLOEXEC)
    try:
        sizes, pos = [], 0
        for piece in pieces:
            pad = -pos % _ALIGN  # each buffer starts 64-byte aligned, as Arrow prefers
            if pad:
                os.write(fd, bytes(pad))
                pos += pad
            view = piece.cast("B")
            sizes.append(len(view))
            while view:
                n = os.write(fd, view)
                view, pos = view[n:], pos + n
        conn.send(("chunk-fd", sizes, skipped))
        reduction.send_handle(conn, fd, os.getppid())
    finally:
        os.close(fd)


def _map_chunk(fd: int, sizes: list[int]) -> Any:
    """Unpickle a chunk from the memory file ``fd`` (layout of ``_send_chunk``), in place."""
    pos, spans = 0, []
    for size in sizes:
        pos += -pos % _ALIGN
        spans.append((pos, size))
        pos += size
    if pos == 0:
        raise RuntimeError("the ingest reader process sent an empty chunk")
    if os.fstat(fd).st_size < pos:
        raise RuntimeError("the ingest reader process sent a short chunk")
    view = memoryview(mmap.mmap(fd, pos, prot=mmap.PROT_READ))  # the buffers keep it alive
    (a, n), *rest = spans
    return pickle.loads(view[a : a + n], buffers=[view[a : a + n] for a, n in rest])


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
        # usually inherited from the parent (the CLI imports it before it forks)
        from healthtwin.thread.fhir.ingest import _local_inputs

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
                chunk = _map_chunk(fd, size)
            finally:
                os.close(fd)  # the mapping stays valid without the descriptor
                self.slots.release()
            return ("chunk", chunk, skipped)
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
