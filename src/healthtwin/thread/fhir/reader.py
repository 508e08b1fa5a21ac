"""Read FHIR R4 JSON from files, folders and stdin, keeping each resource's original text.

Supported inputs: Bulk Data NDJSON (one resource per line), Bundles of any type (transaction,
batch, collection, searchset, history, document, message) and single resources.

Each resource is yielded with its exact original text (``Record.text``): for NDJSON, the line;
inside a Bundle, the precise span of ``entry[i].resource`` in the file.

Fast path (well-formed input, the common case): msgspec decodes the Bundle's shape with each
entry and each resource left as ``msgspec.Raw`` -- a zero-copy slice of the input bytes, so
the byte-exact original of every resource comes out of one C-speed scan -- and each resource
is decoded once into the fast-path view (``view.decode_view``: only the elements ingestion
reads). The full dict (``Record.obj``) is decoded lazily, only when someone asks for it.
Anything unusual (malformed JSON, an entry that is not an object, text that is not UTF-8)
goes to the original reader below, which walks the structure with the C-accelerated
``json.JSONDecoder.raw_decode`` and reports the line and column of what is wrong, so errors
read exactly as before.
"""

from __future__ import annotations

import gzip
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from healthtwin.thread.fhir import view as _view
from healthtwin.thread.fhir.view import DecodeError

_decoder = json.JSONDecoder()
_WS = " \t\n\r"


class Record:
    """One inbound resource (or one unreadable piece of input).

    ``locator``: the human place ("line 12", "entry 3 (line 40)"); ``text``: the exact original
    text of the resource (or of the bad piece); ``bundle``: the enclosing Bundle, with its type.
    ``view``: what the fast path reads (``view.decode_view``), ``obj``: the whole resource as a
    dict, decoded from ``text`` on first use. Both are None for errors and resource-less entries.
    """

    __slots__ = (
        "source",
        "locator",
        "text",
        "_obj",
        "line",
        "entry",
        "full_url",
        "request",
        "bundle",
        "error",
        "extra",
        "view",
    )

    def __init__(
        self,
        source: str,
        locator: str,
        text: str,
        obj: dict[str, Any] | None = None,
        line: int | None = None,
        entry: int | None = None,
        full_url: str | None = None,
        request: dict[str, Any] | None = None,
        bundle: str | None = None,
        error: str | None = None,
        extra: dict[str, Any] | None = None,
        view: Any = None,
    ) -> None:
        self.source = source
        self.locator = locator
        self.text = text
        self._obj = obj
        self.line = line
        self.entry = entry
        self.full_url = full_url
        self.request = request
        self.bundle = bundle
        self.error = error
        self.extra: dict[str, Any] = {} if extra is None else extra
        self.view: Any = obj if view is None else view

    @property
    def obj(self) -> dict[str, Any] | None:
        if self._obj is None and self.view is not None:
            self._obj = json.loads(self.text)
        return self._obj

    def __repr__(self) -> str:
        return f"Record({self.source!r}, {self.locator!r}, error={self.error!r})"


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


def read_text(source: str, text: str | bytes, *, ndjson: bool | None = None) -> Iterator[Record]:
    """Yield records from the text (or UTF-8 bytes) of one input: NDJSON, a Bundle or a single
    resource.

    ``ndjson`` forces line mode (from a ``.ndjson`` suffix); otherwise the shape is detected:
    a single JSON value spanning the input is a document, several lines of values are NDJSON.
    Bytes that are not UTF-8 raise ``UnicodeDecodeError`` naming the source.
    """
    if isinstance(text, str):
        try:
            data = text.encode()
        except UnicodeEncodeError:  # lone surrogates: only the json module reads those
            yield from _read_text_slow(source, text, ndjson=ndjson)
            return
    else:
        data = text
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    recs = _read_fast(source, data, ndjson)
    if recs is None:
        yield from _read_text_slow(source, _decode(source, data), ndjson=ndjson)
    else:
        yield from recs


_BOM = "\ufeff".encode()
_WSB = b" \t\n\r"
_SEP = re.compile(rb"[ \t\n\r]*,[ \t\n\r]*")
_BUNDLE_START = re.compile(rb'\{[ \t\n\r]*"resourceType"[ \t\n\r]*:[ \t\n\r]*"Bundle"')
_RAW, _EMPTY, _UNSET = msgspec.Raw, msgspec.Raw(), msgspec.UNSET


class _Shape(msgspec.Struct):
    """A document's top level: enough to tell a Bundle from a single resource."""

    resourceType: Any = _UNSET
    id: Any = _UNSET
    type: Any = _UNSET
    entry: msgspec.Raw = _EMPTY


class _BundleShape(msgspec.Struct):
    """A Bundle's top level with each entry left as raw JSON (zero-copy)."""

    id: Any = _UNSET
    type: Any = _UNSET
    entry: list[msgspec.Raw] | msgspec.UnsetType = _UNSET


class _Entry(msgspec.Struct):
    fullUrl: Any = _UNSET
    request: Any = _UNSET
    response: msgspec.Raw = _EMPTY
    resource: msgspec.Raw = _EMPTY


_shape = msgspec.json.Decoder(_Shape)
_entry = msgspec.json.Decoder(_Entry)
_bundle_shape = msgspec.json.Decoder(_BundleShape)


def _address(buf: Any) -> int:
    """Memory address of a buffer (msgspec.Raw values are zero-copy views of the input)."""
    return int(np.frombuffer(buf, np.uint8).__array_interface__["data"][0])


def _first(raw: msgspec.Raw) -> int:
    """The first byte of a (non-empty) raw JSON value."""
    return int(memoryview(raw)[0])


def _decode(source: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnicodeDecodeError(
            exc.encoding, exc.object, exc.start, exc.end, f"{source}: not UTF-8 ({exc.reason})"
        ) from None


def _read_fast(source: str, data: bytes, ndjson: bool | None) -> list[Record] | None:
    """Records of well-formed input, or None: the caller then uses the original reader."""
    if ndjson:
        return _ndjson_fast(source, data)
    start = len(data) - len(data.lstrip(_WSB))
    if start >= len(data):
        return []
    if _BUNDLE_START.match(data, start):  # the usual Bundle: its entries at once (one scan less)
        try:
            bshape = _bundle_shape.decode(data)
        except (DecodeError, msgspec.ValidationError):
            bshape = None
        if bshape is not None and bshape.entry is not _UNSET:
            return _bundle_fast(source, data, bshape)
    try:
        shape = _shape.decode(data)
    except (DecodeError, msgspec.ValidationError):
        # Several values (NDJSON without the suffix) when the first line is one object.
        first = data[start:].split(b"\n", 1)[0].rstrip(b"\r")
        try:
            _shape.decode(first)
        except (DecodeError, msgspec.ValidationError):
            return None
        return _ndjson_fast(source, data)
    if shape.resourceType == "Bundle" and shape.entry:
        try:
            return _bundle_fast(source, data, _bundle_shape.decode(data))
        except (DecodeError, msgspec.ValidationError):
            return None
    end = len(data.rstrip(_WSB))
    line = data.count(b"\n", 0, start) + 1
    try:
        text = data[start:end].decode("utf-8")
        view = _view.decode_view(data[start:end])
    except (UnicodeDecodeError, DecodeError, msgspec.ValidationError):
        return None
    return [Record(source, f"line {line}", text, line=line, view=view)]


def _bundle_fast(source: str, data: bytes, shape: _BundleShape) -> list[Record] | None:
    """The entry records of a well-formed Bundle, each resource with its exact span."""
    entries = shape.entry
    if entries is _UNSET:
        return None
    bid = (
        f"Bundle/{shape.id} ({shape.type if shape.type is not _UNSET else None})"
        if shape.id is not _UNSET and shape.id
        else f"Bundle ({shape.type if shape.type is not _UNSET else None})"
    )
    out: list[Record] = []
    base = _address(data)
    pos = (_address(entries[0]) - base) if entries else 0
    line, counted = 1, 0
    check_gaps = not data.isascii()
    done = 0  # end of the last span checked for UTF-8
    for i, raw in enumerate(entries):
        if i:
            m = _SEP.match(data, pos)
            if m is None:  # cannot happen in well-formed JSON; be safe
                return None
            pos = m.end()
        estart, eend = pos, pos + len(raw)
        pos = eend
        line += data.count(b"\n", counted, estart)
        counted = estart
        where = f"entry {i} (line {line})"
        try:
            e = _entry.decode(raw)
        except (DecodeError, msgspec.ValidationError):
            return None  # e.g. "entry is not a JSON object": the original reader says so
        request = e.request if isinstance(e.request, dict) else None
        full_url = e.fullUrl if isinstance(e.fullUrl, str) else None
        res = e.resource
        if not res:
            method = (request or {}).get("method")
            extra: dict[str, Any] = {}
            error = None
            if method == "DELETE":
                extra = {"delete": (request or {}).get("url")}
            elif method in ("GET", "HEAD") or e.response:
                what = f"{method} {(request or {}).get('url')}" if request else "response only"
                extra = {"skip": f"entry carries no resource ({what})"}
            else:
                error = "entry has no resource"
            try:
                etext = data[estart:eend].decode("utf-8")
            except UnicodeDecodeError:
                return None
            done = eend
            out.append(
                Record(
                    source,
                    where,
                    etext,
                    None,
                    line,
                    i,
                    full_url,
                    request,
                    bid,
                    error=error,
                    extra=extra,
                )
            )
            continue
        try:
            if check_gaps:
                rstart = _address(res) - base
                data[done:rstart].decode("utf-8")
                done = rstart + len(res)
            rtext = str(res, "utf-8")
        except UnicodeDecodeError:
            return None
        try:
            view = _view.decode_view(res)
        except (DecodeError, msgspec.ValidationError):
            view = None
        if view is None:
            if _first(res) == 0x7B:
                return None  # an object msgspec will not take: the original reader decides
            out.append(
                Record(
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
            )
            continue
        out.append(Record(source, where, rtext, None, line, i, full_url, request, bid, view=view))
    if check_gaps:
        try:
            data[done:].decode("utf-8")
        except UnicodeDecodeError:
            return None
    return out


def _ndjson_fast(source: str, data: bytes) -> list[Record] | None:
    """NDJSON records; a line msgspec cannot read goes to the original per-line reader."""
    out: list[Record] = []
    lineno = 0
    for raw in data.split(b"\n"):
        lineno += 1
        line = raw[:-1] if raw.endswith(b"\r") else raw
        try:
            view = _view.decode_view(line)
            text = line.decode("utf-8")
        except (DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            if not line.strip(_WSB):
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                _decode(source, data)  # raises for the file, as the original reader did
                raise
            for rec in _ndjson(source, text):
                rec.line = rec.line and lineno
                rec.locator = rec.locator.replace("line 1", f"line {lineno}", 1)
                out.append(rec)
            continue
        if view.get("resourceType") == "Bundle" and view.get("entry") is not None:
            shape = _shape.decode(line)
            if _first(shape.entry) == 0x5B:
                try:
                    recs = _bundle_fast(source, line, _bundle_shape.decode(line))
                except (DecodeError, msgspec.ValidationError):
                    recs = None
                if recs is None:
                    return None
                for rec in recs:
                    rec.locator = f"line {lineno} {rec.locator.split(' (')[0]}"
                    rec.line = lineno
                out.extend(recs)
                continue
        out.append(Record(source, f"line {lineno}", text, line=lineno, view=view))
    return out


def _read_text_slow(source: str, text: str, *, ndjson: bool | None = None) -> Iterator[Record]:
    """The original reader (json.raw_decode walk): exact error places for unusual input."""
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


def read_source(path: str) -> tuple[str, str]:
    """Return (source name, decoded text) for a file path or '-' (stdin)."""
    name, data = read_source_bytes(path)
    return name, _decode(name, data)


def read_source_bytes(path: str) -> tuple[str, bytes]:
    """Return (source name, raw bytes, gunzipped) for a file path or '-' (stdin); the bytes
    are checked for UTF-8 as they are read (``read_text``)."""
    if path == "-":
        data = sys.stdin.buffer.read()
        name = "<stdin>"
    else:
        data = Path(path).read_bytes()
        name = path
        if path.endswith(".gz"):
            data = gzip.decompress(data)
    return name, data
