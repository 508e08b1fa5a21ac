"""FHIR R4 endpoints: read, vread, search, create and update, CapabilityStatement, $export.

Create and update go through the same ingestion path as ``healthtwin ingest``
(``thread/fhir/reader.read_text`` -> ``ingest.convert_records`` -> ``Store.write_batch``):
the same validation, the same quarantine for a bad resource (422 with the reason), the same
journal events, and the original request body kept byte-exact (read returns it as sent).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response

from healthtwin import __version__
from healthtwin.serve import queries
from healthtwin.serve.access import AccessContext, Denied, access
from healthtwin.serve.auth import Role
from healthtwin.serve.deps import context, gateway_of
from healthtwin.serve.fhir_util import operation_outcome
from healthtwin.serve.routes.twins import decode_cursor, encode_cursor, utc
from healthtwin.thread.fhir.ingest import convert_records
from healthtwin.thread.fhir.reader import read_text
from healthtwin.thread.fhir.validate import R4_RESOURCE_TYPES

router = APIRouter(prefix="/fhir", tags=["fhir"])
Ctx = Annotated[AccessContext, Depends(context)]
FHIR_JSON = "application/fhir+json"
NDJSON = "application/fhir+ndjson"
MAX_BODY = 1 << 20  # 1 MiB per resource
RTYPE = r"^[A-Z][A-Za-z]{1,63}$"
FID = r"^[A-Za-z0-9\-.]{1,64}$"
SEARCH_PARAMS = {"patient", "subject", "code", "date", "_count", "_cursor", "_format"}
_DATE = re.compile(r"^(eq|ge|gt|le|lt)?(\d{4}(-\d{2}(-\d{2}(T[0-9:.]+(Z|[+-]\d{2}:\d{2})?)?)?)?)$")
#: demographic elements withheld from researchers (OWASP API3); the resource is marked
REDACT = {"Patient": ("name", "telecom", "address", "identifier", "photo", "contact")}
FHIR_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {FHIR_JSON: {"schema": {"type": "object"}}}, "description": "a resource"},
}


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir"


def _fhir(body: bytes | str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type=FHIR_JSON, headers=headers)


def _check_rtype(rtype: str) -> None:
    if rtype not in R4_RESOURCE_TYPES:
        raise HTTPException(404, f"{rtype!r} is not a FHIR R4 resource type")


def _redact(raw: str, rtype: str, role: Role | None) -> str:
    if role != Role.RESEARCHER or rtype not in REDACT:
        return raw
    obj = orjson.loads(raw)
    for k in REDACT[rtype]:
        obj.pop(k, None)
    meta = obj.setdefault("meta", {})
    meta.setdefault("security", []).append(
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "REDACTED"}
    )
    return orjson.dumps(obj).decode()


def _role(ctx: AccessContext) -> Role | None:
    return ctx.principal.role if ctx.principal else None


def _etag_headers(rid: str, version: int, recorded: datetime, base: str) -> dict[str, str]:
    return {
        "ETag": f'W/"{version}"',
        "Last-Modified": (utc(recorded) or recorded).strftime("%a, %d %b %Y %H:%M:%S GMT"),
        "Location": f"{base}/{rid}/_history/{version}",
    }


# ---------------------------------------------------------------------- capability
@router.get("/metadata", responses=FHIR_RESPONSES, response_class=Response)
@access("fhir.metadata", None, public=True)
async def capability(request: Request) -> Response:
    """The CapabilityStatement (public, as FHIR requires)."""
    types = sorted(R4_RESOURCE_TYPES - {"Bundle"})
    base = _base(request)
    res = [
        {
            "type": t,
            "interaction": [
                {"code": c} for c in ("read", "vread", "search-type", "create", "update")
            ],
            "versioning": "versioned",
            "readHistory": True,
            "updateCreate": True,
            "searchParam": [
                {"name": "patient", "type": "reference"},
                {"name": "subject", "type": "reference"},
                {"name": "code", "type": "token"},
                {"name": "date", "type": "date"},
                {"name": "_count", "type": "number"},
            ],
        }
        for t in types
    ]
    cs = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": request.app.state.services.started.date().isoformat(),
        "kind": "instance",
        "software": {"name": "healthtwin", "version": __version__},
        "implementation": {"description": "healthtwin FHIR R4 API", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/"
                                    "restful-security-service",
                                    "code": "SMART-on-FHIR",
                                }
                            ]
                        }
                    ],
                    "description": "Bearer JWT with SMART v2 scopes; patient claim confines "
                    "the token to one patient compartment (see docs/server.md)",
                },
                "resource": res,
                "operation": [
                    {
                        "name": "export",
                        "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
                    }
                ],
            }
        ],
    }
    return _fhir(orjson.dumps(cs))


# ---------------------------------------------------------------------- bulk export
def _export_types(
    ctx: AccessContext, asked: str | None, present: list[str]
) -> tuple[list[str], list[str]]:
    wanted = [t for t in (asked.split(",") if asked else present) if t]
    bad = [t for t in wanted if t not in R4_RESOURCE_TYPES]
    if bad:
        raise HTTPException(400, f"_type names unknown resource types: {bad}")
    ok = [t for t in wanted if ctx.can(t, "r")]
    return ok, [t for t in wanted if t not in ok]


async def _kickoff(
    request: Request, ctx: AccessContext, type_: str | None, since: datetime | None
) -> Response:
    if "respond-async" not in request.headers.get("prefer", ""):
        raise HTTPException(400, "Bulk Data kick-off needs the header 'Prefer: respond-async'")
    gw = gateway_of(request)
    present = await gw.read(queries.resource_types)
    types, excluded = _export_types(ctx, type_, present)
    if not types:
        raise Denied(403, f"no scope grants read on the requested types {excluded}")
    assert ctx.principal is not None
    svc = request.app.state.services
    job = svc.exports.start(
        ctx.principal.sub, ctx.patient, types, excluded, utc(since), str(request.url)
    )
    ctx.target = f"export/{job.job_id}"
    loc = f"{_base(request)}/$export-status/{job.job_id}"
    return Response(
        status_code=202,
        headers={"Content-Location": loc},
        content=orjson.dumps(operation_outcome(202, "export started", "information")),
        media_type=FHIR_JSON,
    )


EXPORT_Q = Annotated[str | None, Query(alias="_type", max_length=2000)]
SINCE_Q = Annotated[datetime | None, Query(alias="_since")]
FMT_Q = Annotated[str | None, Query(alias="_outputFormat", max_length=100)]


def _fmt(fmt: str | None) -> None:
    if fmt not in (None, "application/fhir+ndjson", "application/ndjson", "ndjson"):
        raise HTTPException(400, f"_outputFormat {fmt!r}: only application/fhir+ndjson")


@router.get("/$export", status_code=202, response_class=Response)
@access("fhir.export", None, "r", compartment="search", shared=True)
async def export_system(
    request: Request, ctx: Ctx, type_: EXPORT_Q = None, since: SINCE_Q = None, fmt: FMT_Q = None
) -> Response:
    """Bulk Data system export (async: 202 + Content-Location). Confined tokens: own data."""
    _fmt(fmt)
    return await _kickoff(request, ctx, type_, since)


@router.get("/Patient/$export", status_code=202, response_class=Response)
@access("fhir.export.patient", None, "r", compartment="search", shared=True)
async def export_patient(
    request: Request, ctx: Ctx, type_: EXPORT_Q = None, since: SINCE_Q = None, fmt: FMT_Q = None
) -> Response:
    """Bulk Data Patient-level export (the patient compartments the token may read)."""
    _fmt(fmt)
    return await _kickoff(request, ctx, type_, since)


def _job(request: Request, job: str) -> Any:
    """The export job (this worker's or another's; the access guard has found it)."""
    j = request.app.state.services.exports.get(job)
    if j is None:  # deleted since the guard looked
        raise Denied(404, f"no export job {job!r}")
    return j


@router.get("/$export-status/{job}", response_class=Response)
@access("fhir.export.status", None, "r", compartment="job", shared=True)
async def export_status(job: str, request: Request, ctx: Ctx) -> Response:
    """202 with X-Progress while running; 200 with the manifest when complete."""
    j = _job(request, job)
    if not j.done:
        return Response(status_code=202, headers={"X-Progress": "in progress", "Retry-After": "1"})
    if j.error:
        return _fhir(orjson.dumps(operation_outcome(500, j.error)), 500)
    base = _base(request)
    manifest = {
        "transactionTime": j.transaction_time.isoformat() if j.transaction_time else None,
        "request": j.request_url,
        "requiresAccessToken": True,
        "output": [
            {
                "type": f["type"],
                "url": f"{base}/$export-files/{job}/{f['name']}",
                "count": f["count"],
            }
            for f in j.files
        ],
        "error": [],
    }
    if j.excluded:
        manifest["extension"] = {"excludedTypes": j.excluded, "reason": "no read scope"}
    return Response(orjson.dumps(manifest), media_type="application/json")


@router.delete("/$export-status/{job}", status_code=202, response_class=Response)
@access("fhir.export.delete", None, "r", compartment="job", shared=True)
async def export_delete(job: str, request: Request, ctx: Ctx) -> Response:
    """Cancel a job or delete its files."""
    svc = request.app.state.services
    svc.exports.delete(_job(request, job))
    return Response(status_code=202)


@router.get("/$export-files/{job}/{name}", response_class=Response)
@access("fhir.export.file", None, "r", compartment="job", shared=True)
async def export_file(
    job: str, name: Annotated[str, "file name"], request: Request, ctx: Ctx
) -> Response:
    """One NDJSON output file of a completed export."""
    j = _job(request, job)
    f = next((f for f in j.files if f["name"] == name), None)
    if f is None:
        raise Denied(404, f"export {job} has no file {name!r}")
    try:
        data = (j.folder / name).read_bytes()
    except FileNotFoundError:  # the job was deleted (by another worker) since it was looked up
        raise Denied(404, f"export {job} has no file {name!r}") from None
    return Response(data, media_type=NDJSON)


# ---------------------------------------------------------------------- read / search
@router.get("/{rtype}/{id}", responses=FHIR_RESPONSES, response_class=Response)
@access("fhir.read", "{rtype}", "r", compartment="resource", shared=True)
async def read(rtype: str, id: str, request: Request, ctx: Ctx) -> Response:
    """The current version, byte-exact as received (researchers: demographics withheld)."""
    _check_rtype(rtype)
    gw = gateway_of(request)
    r = await gw.read(queries.resource, f"{rtype}/{id}")
    if r is None:
        raise Denied(404, f"{rtype}/{id} not found")
    if r["deleted"]:
        raise Denied(410, f"{rtype}/{id} was deleted")
    h = _etag_headers(f"{rtype}/{id}", r["version"], r["recorded_at"], _base(request))
    h.pop("Location")
    return _fhir(_redact(r["raw"], rtype, _role(ctx)), headers=h)


@router.get("/{rtype}/{id}/_history/{vid}", responses=FHIR_RESPONSES, response_class=Response)
@access("fhir.vread", "{rtype}", "r", compartment="resource", shared=True)
async def vread(rtype: str, id: str, vid: int, request: Request, ctx: Ctx) -> Response:
    """A given version, byte-exact as received."""
    _check_rtype(rtype)
    gw = gateway_of(request)
    r = await gw.read(queries.resource, f"{rtype}/{id}", vid)
    if r is None:
        raise Denied(404, f"{rtype}/{id}/_history/{vid} not found")
    ctx.require_in_compartment(r["subject"], f"{rtype}/{id}")
    h = _etag_headers(f"{rtype}/{id}", r["version"], r["recorded_at"], _base(request))
    h.pop("Location")
    return _fhir(_redact(r["raw"], rtype, _role(ctx)), headers=h)


def _date_bounds(values: list[str]) -> tuple[datetime | None, datetime | None]:
    ge: datetime | None = None
    le: datetime | None = None
    for v in values:
        m = _DATE.match(v)
        if not m:
            raise HTTPException(400, f"date={v!r}: expected [eq|ge|gt|le|lt]YYYY[-MM[-DD[Thh:mm]]]")
        prefix, text = m.group(1) or "eq", m.group(2)
        try:
            t = _parse_date(text)
        except ValueError as exc:
            raise HTTPException(400, f"date={v!r}: {exc}") from None
        if prefix in ("ge", "gt", "eq"):
            ge = t if ge is None or t > ge else ge
        if prefix in ("le", "lt", "eq"):
            end = _end_of(text, t) if prefix != "lt" else t
            le = end if le is None or end < le else le
    return ge, le


def _parse_date(text: str) -> datetime:
    if len(text) == 4:
        return datetime(int(text), 1, 1, tzinfo=UTC)
    if len(text) == 7:
        return datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=UTC)
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _end_of(text: str, t: datetime) -> datetime:
    """The last instant of the period a partial date names (FHIR date search semantics)."""
    from datetime import timedelta

    if len(text) == 4:
        return t.replace(year=t.year + 1) - timedelta(microseconds=1)
    if len(text) == 7:
        nxt = t.replace(year=t.year + 1, month=1) if t.month == 12 else t.replace(month=t.month + 1)
        return nxt - timedelta(microseconds=1)
    if len(text) == 10:
        return t + timedelta(days=1) - timedelta(microseconds=1)
    return t


@router.get("/{rtype}", responses=FHIR_RESPONSES, response_class=Response)
@access("fhir.search", "{rtype}", "s", compartment="search", shared=True)
async def search(
    rtype: str,
    request: Request,
    ctx: Ctx,
    patient: Annotated[str | None, Query(max_length=80)] = None,
    subject: Annotated[str | None, Query(max_length=80)] = None,
    code: Annotated[str | None, Query(max_length=500)] = None,
    date: Annotated[list[str] | None, Query(max_length=2)] = None,
    count: Annotated[int, Query(alias="_count", ge=1, le=1000)] = 50,
    cursor: Annotated[str | None, Query(alias="_cursor", max_length=400)] = None,
) -> Response:
    """Search by patient/subject, code (``system|code``, comma = or) and date; a searchset
    Bundle with a ``next`` link (keyset cursor). Confined tokens search their compartment."""
    _check_rtype(rtype)
    unknown = set(request.query_params) - SEARCH_PARAMS
    if unknown:
        raise HTTPException(
            400,
            f"unsupported search parameters {sorted(unknown)}; supported: {sorted(SEARCH_PARAMS)}",
        )
    who = patient or subject
    if patient and subject and patient != subject:
        raise HTTPException(400, "patient and subject name different patients")
    comp = ctx.patient
    if who is not None:
        comp = who if "/" in who else f"Patient/{who}"
    codes = None
    if code:
        codes = []
        for tok in code.split(","):
            system, bar, c = tok.rpartition("|")
            codes.append(((system or None) if bar else None, c))
    ge, le = _date_bounds(date or [])
    after = decode_cursor(cursor)
    if after is not None and not isinstance(after, str):
        raise HTTPException(400, "_cursor is not a search cursor")
    gw = gateway_of(request)
    rows = await gw.read(
        queries.search,
        rtype,
        patient=comp,
        code=codes,
        date_ge=ge,
        date_le=le,
        after=after,
        limit=count + 1,
    )
    more = len(rows) > count
    rows = rows[:count]
    base = _base(request)
    role = _role(ctx)
    parts = [
        b'{"resourceType":"Bundle","type":"searchset","link":[',
        orjson.dumps({"relation": "self", "url": str(request.url)}),
    ]
    if more:
        q = dict(request.query_params)
        q["_cursor"] = encode_cursor(rows[-1][0])
        from urllib.parse import urlencode

        parts += [b",", orjson.dumps({"relation": "next", "url": f"{base}/{rtype}?{urlencode(q)}"})]
    parts.append(b'],"entry":[')
    for i, (rid, raw, _ver, _rec) in enumerate(rows):
        if i:
            parts.append(b",")
        parts += [
            b'{"fullUrl":',
            orjson.dumps(f"{base}/{rid}"),
            b',"resource":',
            _redact(raw, rtype, role).encode(),
            b',"search":{"mode":"match"}}',
        ]
    parts.append(b"]}")
    return _fhir(b"".join(parts))


# ---------------------------------------------------------------------- create / update
async def _ingest(request: Request, ctx: AccessContext, rtype: str, id: str | None) -> Response:
    _check_rtype(rtype)
    if rtype == "Bundle":
        raise HTTPException(422, "Bundles are not stored as resources here; ingest with the CLI")
    ctype = request.headers.get("content-type", "").split(";")[0].strip()
    if ctype not in ("application/fhir+json", "application/json"):
        raise HTTPException(415, f"content type {ctype!r}: send application/fhir+json")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HTTPException(413, f"resource of {len(body)} bytes exceeds {MAX_BODY} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPException(400, f"body is not UTF-8: {exc}") from None
    assert ctx.principal is not None
    method = "PUT" if id else "POST"
    source = f"api {method} /fhir/{rtype}{'/' + id if id else ''} by {ctx.principal.sub}"
    recs = list(read_text(source, text, ndjson=False))
    if len(recs) != 1 or (recs[0].obj is not None and recs[0].obj.get("resourceType") == "Bundle"):
        raise HTTPException(400, "the body must be one FHIR resource")
    obj = recs[0].obj
    if obj is not None:
        if obj.get("resourceType") != rtype:
            raise HTTPException(
                400, f"body is a {obj.get('resourceType')!r}, the URL says {rtype!r}"
            )
        if id is not None and obj.get("id") != id:
            raise HTTPException(400, f"body id {obj.get('id')!r} differs from the URL id {id!r}")
    accepted, rejected = convert_records(recs)
    gw = gateway_of(request)
    if rejected:
        # the same quarantine as the CLI: the bad resource is kept with where and why
        await gw.write([], rejected, source=source)
        oo = operation_outcome(
            422, [f"{r.reason} (quarantined; see `healthtwin quarantine`)" for r in rejected]
        )
        return _fhir(orjson.dumps(oo), 422)
    rec = accepted[0]
    subject = rec.rid if rec.rtype == "Patient" else rec.subject
    if ctx.patient is not None:
        if subject is None:
            raise Denied(
                403, f"{rec.rid} is in no patient compartment; a confined token may not write it"
            )
        ctx.require_in_compartment(subject, rec.rid)
    ctx.target = rec.rid
    w = await gw.write([rec], source=source, create_only=method == "POST")
    if rec.rid in w.conflicts:
        raise HTTPException(409, f"{rec.rid} exists; update it with PUT /fhir/{rec.rid}")
    ver, recorded, _deleted = w.versions[rec.rid]
    # 201 only when this write created it (an unchanged resubmission keeps its old version)
    status = 201 if ver == 1 and recorded == w.batch.recorded_at else 200
    return _fhir(text, status, _etag_headers(rec.rid, ver, recorded, _base(request)))


FHIR_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            FHIR_JSON: {"schema": {"type": "object"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
}


@router.post(
    "/{rtype}",
    status_code=201,
    responses=FHIR_RESPONSES,
    response_class=Response,
    openapi_extra=FHIR_BODY,
)
@access("fhir.create", "{rtype}", "c", compartment="search", shared=True)
async def create(rtype: str, request: Request, ctx: Ctx) -> Response:
    """Create through the ingestion path: validated, quarantined if bad, journaled."""
    return await _ingest(request, ctx, rtype, None)


@router.put(
    "/{rtype}/{id}", responses=FHIR_RESPONSES, response_class=Response, openapi_extra=FHIR_BODY
)
@access("fhir.update", "{rtype}", "u", compartment="resource", shared=True)
async def update(rtype: str, id: str, request: Request, ctx: Ctx) -> Response:
    """Update (or create with a client id) through the ingestion path: a new version."""
    return await _ingest(request, ctx, rtype, id)
