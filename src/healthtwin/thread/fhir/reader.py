"""Read FHIR R4 JSON from files, folders and stdin, keeping each resource's original text.

Supported inputs: Bulk Data NDJSON (one resource per line), Bundles of any type (transaction,
batch, collection, searchset, history, document, message) and single resources.

Each resource is yielded with its exact original text (``Record.text``): for NDJSON, the line;
inside a Bundle, the precise span of ``entry[i].resource`` in the file. Spans are found by
walking the Bundle's structure with the C-accelerated ``json.JSONDecoder.raw_decode`` (which
parses one value at an offset and returns where it ends) instead of a hand-written scanner, so
finding the byte-exact original costs no more than parsing.
"""

from __future__ import annotations

import gzip
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_decoder = json.JSONDecoder()
_WS = " \t\n\r"
SUFFIXES = (".json", ".ndjson", ".jsonl", ".json.gz", ".ndjson.gz")


@dataclass(slots=True)
class Record:
    """One inbound resource (or one unreadable piece of input)."""

    source: str
    locator: str  # human place: "line 12", "entry 3 (line 40)", "document"
    text: str  # exact original text of the resource (or of the bad piece)
    obj: dict[str, Any] | None = None
    line: int | None = None
    entry: int | None = None
    full_url: str | None = None
    request: dict[str, Any] | None = None
    bundle: str | None = None  # id of the enclosing Bundle, with its type
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


_WS_RE = re.compile(r"[ \t\n\r]*")
_match_ws = _WS_RE.match


def _skip_ws(text: str, pos: int) -> int:
    return _match_ws(text, pos).end()  # type: ignore[union-attr]  # always matches


def _members(
    text: str, pos: int, walk_entry: bool = False
) -> tuple[list[tuple[str, int, int, Any]], int]:
    """Decode the object at ``pos`` member by member: ([(key, start, end, value)], end).

    With ``walk_entry``, the value of an ``entry`` array is not decoded as a whole: each of
    its elements is walked in turn (value = list of member lists, one per entry), so every
    resource is parsed exactly once.
    """
    if text[pos] != "{":
        raise ValueError(f"expected an object at offset {pos}")
    out: list[tuple[str, int, int, Any]] = []
    pos = _skip_ws(text, pos + 1)
    if text[pos] == "}":
        return out, pos + 1
    while True:
        key, pos = _decoder.raw_decode(text, pos)
        pos = _skip_ws(text, pos)
        if text[pos] != ":":
            raise ValueError(f"expected ':' at offset {pos}")
        start = _skip_ws(text, pos + 1)
        if walk_entry and key == "entry" and text[start] == "[":
            value, end = _entries(text, start)
        else:
            value, end = _decoder.raw_decode(text, start)
        out.append((key, start, end, value))
        pos = _skip_ws(text, end)
        if text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
            continue
        if text[pos] == "}":
            return out, pos + 1
        raise ValueError(f"expected ',' or '}}' at offset {pos}")


def _entries(text: str, pos: int) -> tuple[list[Any], int]:
    """Walk an ``entry`` array: each element is (start, end, members | error message)."""
    out: list[Any] = []
    pos = _skip_ws(text, pos + 1)
    if text[pos] == "]":
        return out, pos + 1
    while True:
        start = pos
        if text[pos] == "{":
            members, end = _members(text, pos)
            out.append((start, end, members))
        else:
            _, end = _decoder.raw_decode(text, pos)
            out.append((start, end, "entry is not a JSON object"))
        pos = _skip_ws(text, end)
        if text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
            continue
        if text[pos] == "]":
            return out, pos + 1
        raise ValueError(f"expected ',' or ']' at offset {pos}")


def _bundle_records(
    source: str, text: str, members: list[tuple[str, int, int, Any]]
) -> Iterator[Record]:
    """Entry records of a walked Bundle, each with the exact span of its resource."""
    top = {k: v for k, _s, _e, v in members if k != "entry"}
    btype = top.get("type")
    bid = f"Bundle/{top.get('id')} ({btype})" if top.get("id") else f"Bundle ({btype})"
    entries: list[Any] = next((v for k, _s, _e, v in members if k == "entry"), [])
    line, counted = 1, 0  # incremental line numbering (O(n) over the whole Bundle)
    for i, (estart, eend, emembers) in enumerate(entries):
        line += text.count("\n", counted, estart)
        counted = estart
        where = f"entry {i} (line {line})"
        if isinstance(emembers, str):
            yield Record(
                source, where, text[estart:eend], line=line, entry=i, bundle=bid, error=emembers
            )
            continue
        entry = {k: v for k, _s, _e, v in emembers}
        res_span = next(((s, e) for k, s, e, _v in emembers if k == "resource"), None)
        request = entry.get("request") if isinstance(entry.get("request"), dict) else None
        full_url = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
        if res_span is None:
            # No resource: a deletion, an entry that carries none by design, or an error.
            method = (request or {}).get("method")
            extra: dict[str, Any] = {}
            error = None
            if method == "DELETE":
                extra = {"delete": (request or {}).get("url")}
            elif method in ("GET", "HEAD") or "response" in entry:
                what = f"{method} {(request or {}).get('url')}" if request else "response only"
                extra = {"skip": f"entry carries no resource ({what})"}
            else:
                error = "entry has no resource"
            yield Record(
                source,
                where,
                text[estart:eend],
                None,
                line,
                i,
                full_url,
                request,
                bid,
                error=error,
                extra=extra,
            )
            continue
        obj = entry["resource"]
        rtext = text[res_span[0] : res_span[1]]
        if not isinstance(obj, dict):
            yield Record(
                source,
                where,
                rtext,
                None,
                line,
                i,
                full_url,
                request,
                bid,
                error="entry.resource is not a JSON object",
            )
            continue
        yield Record(source, where, rtext, obj, line, i, full_url, request, bid)


def read_text(source: str, text: str, *, ndjson: bool | None = None) -> Iterator[Record]:
    """Yield records from the text of one input (NDJSON, a Bundle or a single resource).

    ``ndjson`` forces line mode (from a ``.ndjson`` suffix); otherwise the shape is detected:
    a single JSON value spanning the input is a document, several lines of values are NDJSON.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    pos = _skip_ws(text, 0)
    if pos >= len(text):
        return
    if not ndjson:
        try:
            if text[pos] != "{":
                raise ValueError("not an object")
            members, end = _members(text, pos, walk_entry=True)
        except (json.JSONDecodeError, ValueError, IndexError) as exc:
            first_line = text[pos:].split("\n", 1)[0].strip()
            try:
                json.loads(first_line)
                looks_ndjson = True
            except json.JSONDecodeError:
                looks_ndjson = False
            if not looks_ndjson:
                try:
                    json.loads(text)
                except json.JSONDecodeError as jexc:
                    msg = f"malformed JSON: {jexc.msg} at line {jexc.lineno} column {jexc.colno}"
                    line = jexc.lineno
                else:  # valid JSON but not an object
                    msg, line = f"top-level JSON value is not an object ({exc})", 1
                yield Record(source, f"line {line}", text, line=line, error=msg)
                return
        else:
            if _skip_ws(text, end) >= len(text):
                yield from _document(source, text, pos, end, members)
                return
    yield from _ndjson(source, text)


def _document(
    source: str, text: str, pos: int, end: int, members: list[tuple[str, int, int, Any]]
) -> Iterator[Record]:
    keys = {k: v for k, _s, _e, v in members}
    is_bundle = keys.get("resourceType") == "Bundle" and any(k == "entry" for k in keys)
    if is_bundle:
        yield from _bundle_records(source, text, members)
        return
    obj = {k: (_decoder.decode(text[s:e]) if k == "entry" else v) for k, s, e, v in members}
    yield Record(
        source, f"line {_line_of(text, pos)}", text[pos:end], obj, line=_line_of(text, pos)
    )


def _ndjson(source: str, text: str) -> Iterator[Record]:
    lineno = 0
    for raw in text.split("\n"):
        lineno += 1
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield Record(
                source,
                f"line {lineno}",
                line,
                line=lineno,
                error=f"malformed JSON: {exc.msg} at column {exc.colno}",
            )
            continue
        if not isinstance(obj, dict):
            yield Record(
                source, f"line {lineno}", line, line=lineno, error="JSON value is not an object"
            )
            continue
        if obj.get("resourceType") == "Bundle" and isinstance(obj.get("entry"), list):
            members, _end = _members(line, 0, walk_entry=True)
            for rec in _bundle_records(source, line, members):
                rec.locator = f"line {lineno} {rec.locator.split(' (')[0]}"
                rec.line = lineno
                yield rec
            continue
        yield Record(source, f"line {lineno}", line, obj, line=lineno)


def expand_paths(paths: list[str]) -> list[str]:
    """Files named, and FHIR files (by suffix) found recursively in folders, sorted; '-' is stdin."""
    out: list[str] = []
    for p in paths:
        if p == "-":
            out.append(p)
            continue
        path = Path(p)
        if path.is_dir():
            out.extend(
                str(f) for f in sorted(path.rglob("*")) if f.is_file() and f.name.endswith(SUFFIXES)
            )
        elif path.exists():
            out.append(str(path))
        else:
            raise FileNotFoundError(f"input not found: {p}")
    return out


def read_source(path: str) -> tuple[str, str]:
    """Return (source name, decoded text) for a file path or '-' (stdin)."""
    if path == "-":
        data = sys.stdin.buffer.read()
        name = "<stdin>"
    else:
        data = Path(path).read_bytes()
        name = path
        if path.endswith(".gz"):
            data = gzip.decompress(data)
    try:
        return name, data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnicodeDecodeError(
            exc.encoding, exc.object, exc.start, exc.end, f"{name}: not UTF-8 ({exc.reason})"
        ) from None
