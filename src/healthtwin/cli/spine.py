"""Spine commands: ingest, stats, twins, twin, state, history, verify, quarantine, export."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from healthtwin.twin.store.base import StoreError

FORMAT = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)


def _store_option(f: Any) -> Any:
    return click.option(
        "--store",
        "store_path",
        default=lambda: os.environ.get("HEALTHTWIN_STORE", "healthtwin.duckdb"),
        show_default="$HEALTHTWIN_STORE or ./healthtwin.duckdb",
        help="DuckDB store file, or a PostgreSQL URL (postgresql://user@host:port/db"
        "[?schema=NAME]).",
    )(f)


def _open(path: str, read_only: bool = False) -> Any:
    from healthtwin.twin.store import mask_password, open_store

    try:
        return open_store(path, read_only=read_only)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:  # duckdb.IOException: locked, corrupt
        raise click.ClickException(f"cannot open store {mask_password(path)!r}: {exc}") from exc


def _children_cpu() -> float:
    """User + system CPU seconds of this process's finished (and reaped) children."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _shown(path: str) -> str:
    """The store location for messages (a PostgreSQL password masked)."""
    from healthtwin.twin.store import mask_password

    return mask_password(path)


def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 date or date-time (e.g. 2020-01-31 or "
            "2020-01-31T12:00:00Z)",
            param_hint=name,
        ) from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


def _default(o: Any) -> Any:
    if isinstance(o, datetime):
        return o.isoformat()
    return str(o)


def _emit(rows: Any, fmt: str, title: str | None = None, columns: list[str] | None = None) -> None:
    if fmt == "json":
        click.echo(json.dumps(rows, default=_default, indent=2))
        return
    console = Console()
    if isinstance(rows, dict):
        table = Table(title=title, show_header=True)
        table.add_column("key")
        table.add_column("value")
        for k, v in rows.items():
            table.add_row(
                str(k), json.dumps(v, default=_default) if isinstance(v, (dict, list)) else str(v)
            )
        console.print(table)
        return
    if not rows:
        console.print(f"[dim]{title or 'nothing'}: none[/dim]")
        return
    cols = columns or list(rows[0].keys())
    table = Table(title=title)
    for c in cols:
        table.add_column(c)
    for r in rows:
        table.add_row(*("" if r.get(c) is None else str(r.get(c)) for c in cols))
    console.print(table)


@click.command()
@click.argument("paths", nargs=-1, required=True)
@_store_option
@click.option("--strict", is_flag=True, help="Validate every resource with fhir.resources (R4B).")
@click.option("--batch-size", default=5000, show_default=True, help="Records per transaction.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--readers",
    type=click.IntRange(min=0),
    default=None,
    help="Processes that read and convert while this one stores; 0: all in this process "
    "[default: one per core for 1 MB of input or more, else 0].",
)
@FORMAT
def ingest(
    paths: tuple[str, ...],
    store_path: str,
    strict: bool,
    batch_size: int,
    quiet: bool,
    readers: int | None,
    fmt: str,
) -> None:
    """Ingest FHIR R4 Bundles / NDJSON from files, folders or '-' (stdin).

    Exits 1 when any record was quarantined (see `healthtwin quarantine`).
    """
    t0, c0 = time.perf_counter(), time.process_time()  # all of the ingest, store close included
    k0 = _children_cpu()
    # light modules first: the readers fork before DuckDB is imported and the store opened
    from healthtwin.thread.fhir.paths import expand_paths
    from healthtwin.thread.fhir.readers import ReaderProcess

    try:
        files = expand_paths(list(paths))
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    total = sum(Path(f).stat().st_size for f in files if f != "-")
    # Forked before the store is opened: the readers convert while this process imports
    # DuckDB and opens the store (and nothing threaded is running yet when they fork).
    if readers is None:
        readers = ReaderProcess.default_workers(files) if ReaderProcess.wanted(files) else 0
    if readers:
        # what the readers run, imported once here and inherited by them through fork
        # (measured: less CPU and sooner done than each reader importing it)
        import healthtwin.thread.fhir.ingest  # noqa: F401
        import healthtwin.twin.store.duckdb_bulk  # noqa: F401
    reader = (
        ReaderProcess(
            files,
            strict=strict,
            batch_size=batch_size,
            prepare=not store_path.startswith(("postgresql:", "postgres:")),
            workers=readers,
        )
        if readers and files and "-" not in files
        else None
    )
    try:
        store = _open(store_path)
    except BaseException:
        if reader is not None:
            reader.close()
        raise
    show = not quiet and sys.stderr.isatty()
    with Progress(
        TextColumn("ingest"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not show,
    ) as prog:
        task = prog.add_task("ingest", total=total or 1)
        from healthtwin.thread.fhir.ingest import ingest_paths

        try:
            report = ingest_paths(
                store,
                files,
                strict=strict,
                batch_size=batch_size,
                progress=lambda p, n: prog.update(
                    task, advance=Path(p).stat().st_size if p != "-" else 0
                ),
                reader=reader,
            )
        finally:
            if reader is not None:
                reader.close()
    store.close()
    # CPU: this process (all threads) and its reader processes (reaped by reader.close())
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0 + _children_cpu() - k0
    summary = {
        "files": report.files,
        "records": report.records,
        "created": report.created,
        "updated": report.updated,
        "deleted": report.deleted,
        "unchanged": report.unchanged,
        "quarantined": report.quarantined,
        "skipped": len(report.skipped),
        "twins_created": report.twins_created,
        "batches": report.batches,
        "validation": "strict (fhir.resources R4B)"
        if strict
        else "fast path (run `healthtwin validate` for strict R4B validation)",
        "seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),  # user + system: this process and its readers
    }
    _emit(summary, fmt, title=f"ingest into {_shown(store_path)}")
    err = Console(stderr=True)
    for s in report.skipped[:20]:
        err.print(f"skipped: {s}")
    if report.quarantined:
        err.print(
            f"[red]{report.quarantined} record(s) quarantined[/red]: "
            f"see `healthtwin quarantine --store {_shown(store_path)}`"
        )
        sys.exit(1)


@click.command()
@_store_option
@FORMAT
def stats(store_path: str, fmt: str) -> None:
    """Resources, events, twins, references, units and validation counts."""
    store = _open(store_path, read_only=True)
    _emit(store.stats(), fmt, title="healthtwin store")
    store.close()


@click.group()
def twins() -> None:
    """List twins."""


@twins.command("list")
@_store_option
@click.option("--kind", type=click.Choice(["patient", "facility", "cohort"]))
@click.option("--search", help="Substring of the twin id or name.")
@FORMAT
def twins_list(store_path: str, kind: str | None, search: str | None, fmt: str) -> None:
    """List twins (patient, facility, cohort) with their sync mode and resource count."""
    store = _open(store_path, read_only=True)
    _emit(store.twins(kind, search), fmt, title="twins")
    store.close()


@twins.command("create")
@click.option("--kind", type=click.Choice(["patient", "facility", "cohort"]), required=True)
@click.option("--name", required=True)
@click.option("--subject", help="FHIR reference of the subject (e.g. Group/abc), if any.")
@click.option(
    "--sync-mode",
    type=click.Choice(["model", "shadow", "twin"]),
    default="model",
    show_default=True,
)
@_store_option
def twins_create(
    kind: str, name: str, subject: str | None, sync_mode: str, store_path: str
) -> None:
    """Create a twin not tied to an ingested resource (e.g. a cohort); journaled."""
    store = _open(store_path)
    try:
        click.echo(store.create_twin(kind, name, subject, sync_mode))
    finally:
        store.close()


@click.group()
def twin() -> None:
    """Show or change one twin."""


@twin.command("show")
@click.argument("twin_id")
@_store_option
@FORMAT
def twin_show(twin_id: str, store_path: str, fmt: str) -> None:
    """A twin's identity, subject, sync mode and resources per type."""
    store = _open(store_path, read_only=True)
    try:
        _emit(store.twin(twin_id), fmt, title=f"twin {twin_id}")
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()


@twin.command("sync")
@click.argument("twin_id")
@click.option("--mode", type=click.Choice(["model", "shadow", "twin"]), required=True)
@_store_option
def twin_sync(twin_id: str, mode: str, store_path: str) -> None:
    """Set how a twin follows its subject (model / shadow / twin); journaled."""
    store = _open(store_path)
    try:
        store.set_sync_mode(twin_id, mode)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()
    click.echo(f"{twin_id}: sync mode {mode}")


@click.command()
@click.argument("twin_id")
@_store_option
@click.option("--at", "at", help="Effective time: the state as it was then (ISO 8601, UTC).")
@click.option("--as-of", "as_of", help="Recorded time: the state as we knew it then.")
@click.option("--code", "codes", multiple=True, help="Only these codes (repeatable).")
@FORMAT
def state(
    twin_id: str,
    store_path: str,
    at: str | None,
    as_of: str | None,
    codes: tuple[str, ...],
    fmt: str,
) -> None:
    """A twin's state: the latest value per code (bitemporal: --at and --as-of)."""
    store = _open(store_path, read_only=True)
    try:
        rows = store.state(twin_id, at=_time(at, "--at"), as_of=_time(as_of, "--as-of"))
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()
    if codes:
        rows = [r for r in rows if r["code"] in codes]
    if fmt == "table":
        out = []
        for r in rows:
            if r["num_canonical"] is not None:
                value = f"{r['num_canonical']:.6g} {r['unit_canonical']}"
            elif r["num"] is not None:
                value = f"{r['num']:.6g} {r['unit'] or ''} [{r['unit_status'] or r['kind']}]"
            else:
                value = r["text"] or r["value_code"] or ""
            out.append(
                {
                    "code": f"{r['code']}",
                    "display": (r["display"] or "")[:40],
                    "value": value,
                    "status": r["status"],
                    "effective": r["effective"],
                    "recorded": r["recorded_at"],
                }
            )
        _emit(out, fmt, title=f"state of {twin_id}")
    else:
        _emit(rows, fmt)


@click.command()
@click.argument("twin_id")
@_store_option
@click.option("--limit", default=0, help="Only the last N events (0: all).")
@FORMAT
def history(twin_id: str, store_path: str, limit: int, fmt: str) -> None:
    """A twin's journal events, oldest first, with provenance."""
    store = _open(store_path, read_only=True)
    try:
        rows = store.history(twin_id)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()
    if limit:
        rows = rows[-limit:]
    if fmt == "table":
        rows = [
            {
                "seq": r["seq"],
                "recorded": r["recorded_at"],
                "kind": r["kind"],
                "what": r["payload"].get("rid") or r["payload"].get("twin_id") or "",
                "version": r["payload"].get("version", ""),
                "source": f"{r['provenance'].get('source', '')} {r['provenance'].get('locator', '')}",
            }
            for r in rows
        ]
    _emit(rows, fmt, title=f"history of {twin_id}")


@click.command()
@_store_option
@click.option("--kind", help="Only events of this kind (e.g. simulation.run, record.rejected).")
@click.option("--limit", default=50, show_default=True, help="The newest N events.")
@FORMAT
def journal(store_path: str, kind: str | None, limit: int, fmt: str) -> None:
    """The newest journal events of the whole store (simulations, reports, audit, ...)."""
    store = _open(store_path, read_only=True)
    rows = store.events(kind, limit)
    store.close()
    if fmt == "table":
        rows = [
            {
                "seq": r["seq"],
                "recorded": r["recorded_at"],
                "kind": r["kind"],
                "twin": r["twin_id"] or "",
                "payload": json.dumps(r["payload"], default=_default)[:80],
            }
            for r in rows
        ]
    _emit(rows, fmt, title="journal")


@click.command()
@_store_option
@click.option("--expect-head", help="Also check the chain ends at this hash (external anchor).")
def verify(store_path: str, expect_head: str | None) -> None:
    """Check the journal's hash chain and every stored original against it."""
    store = _open(store_path, read_only=True)
    rep = store.verify()
    store.close()
    if expect_head and rep.head != expect_head:
        rep.problems.append(f"head is {rep.head}, expected {expect_head} (events were truncated?)")
    if rep.ok:
        click.echo(f"ok: {rep.events} events, chain intact; head {rep.head}")
        return
    for p in rep.problems:
        click.echo(f"FAIL: {p}", err=True)
    click.echo(f"{len(rep.problems)} problem(s) in {rep.events} events", err=True)
    sys.exit(1)


@click.command()
@_store_option
@click.option("--raw", is_flag=True, help="Also print the rejected text.")
@FORMAT
def quarantine(store_path: str, raw: bool, fmt: str) -> None:
    """Rejected records: file, line or entry, reason."""
    store = _open(store_path, read_only=True)
    rows = store.quarantine()
    store.close()
    if not raw:
        for r in rows:
            r.pop("raw")
    _emit(rows, fmt, title="quarantine")


@click.command()
@click.argument("twin_id", required=False)
@_store_option
@click.option("--type", "rtype", help="Only resources of this type.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="File (default stdout).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["ndjson", "json-seq"]),
    default="ndjson",
    show_default=True,
    help="ndjson: one resource per line; json-seq: RFC 7464 records, byte-exact for "
    "originals that span several lines.",
)
def export(
    twin_id: str | None, store_path: str, rtype: str | None, output: str | None, fmt: str
) -> None:
    """Re-emit a twin's (or the whole store's) original FHIR resources as they arrived.

    NDJSON lines are the original text byte for byte when it arrived on one line (Bulk Data,
    minified Bundles). A resource that arrived pretty-printed inside a Bundle cannot be one
    NDJSON line: its line breaks (and the indentation after them) are removed, which is all
    that changes, and the count is reported; --format json-seq keeps every byte.
    """
    store = _open(store_path, read_only=True)
    out = open(output, "wb") if output else sys.stdout.buffer  # noqa: SIM115
    folded = n = 0
    try:
        for raw in store.originals(twin_id, rtype):
            n += 1
            if fmt == "json-seq":
                out.write(b"\x1e" + raw.encode() + b"\n")
                continue
            if "\n" in raw or "\r" in raw:
                folded += 1
                raw = _fold(raw)
            out.write(raw.encode() + b"\n")
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        if output:
            out.close()
        else:
            out.flush()
        store.close()
    if folded:
        click.echo(
            f"{folded} of {n} resources arrived on several lines: line breaks removed "
            "for NDJSON (use --format json-seq for byte-exact originals)",
            err=True,
        )


def _fold(raw: str) -> str:
    """Remove line breaks and the indentation after them (JSON whitespace only)."""
    import re

    return re.sub(r"[\r\n]+[ \t]*", "", raw)


@click.command()
@_store_option
@FORMAT
def validate(store_path: str, fmt: str) -> None:
    """Validate every stored resource strictly with fhir.resources (R4B); journaled."""
    import orjson

    from healthtwin.thread.fhir.validate import strict_check
    from healthtwin.twin.model import Event

    store = _open(store_path)
    failures = []
    n = 0
    for raw in store.originals():
        n += 1
        obj = orjson.loads(raw)
        reason = strict_check(obj)
        if reason:
            failures.append({"rid": f"{obj.get('resourceType')}/{obj.get('id')}", "reason": reason})
    store.append_events(
        [
            Event(
                "validation.strict",
                {"checked": n, "failed": len(failures), "failures": failures[:1000]},
                {"validator": "fhir.resources R4B"},
            )
        ]
    )
    store.close()
    _emit(failures or [], fmt, title=f"strict validation: {n} checked, {len(failures)} failed")
    if failures:
        sys.exit(1)


def register(group: click.Group) -> None:
    for cmd in (
        ingest,
        stats,
        twins,
        twin,
        state,
        history,
        journal,
        verify,
        quarantine,
        export,
        validate,
    ):
        group.add_command(cmd)
