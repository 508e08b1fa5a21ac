"""The dashboard: server-rendered pages (Jinja2) over the same app, guard and audit as the API.

Pages: ``/login`` (a bearer token entered once, kept in an HttpOnly, SameSite=Strict cookie),
``/ui/twins`` (list with search), ``/ui/twins/{prefix}/{id}`` (a patient or a facility
twin). The pages' thin JavaScript (static files only: no inline script, no eval, no inline
style) fetches the REST API and the SSE stream with that cookie; the browser-auth middleware
turns the cookie into the ``Authorization`` header the guard reads, so a page can show only
what the API would give the same token (patient-level authorisation included). Unsafe
methods (POST) are authenticated by the cookie only when they carry ``X-Healthtwin-UI: 1``,
a header a cross-site form cannot send (defence in depth next to SameSite=Strict).

Every response carries a strict Content-Security-Policy (:data:`CSP`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

import anyio
import jinja2
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import Field

from healthtwin.serve import queries
from healthtwin.serve.access import AccessContext, Denied, access
from healthtwin.serve.auth import AuthError, Role
from healthtwin.serve.deps import context, gateway_of
from healthtwin.serve.models import Strict
from healthtwin.serve.routes.twins import (
    FACILITY_ROLES,
    SIMULATE_ROLES,
    _role,
    _summary,
    _twin,
    state_value,
    utc,
)
from healthtwin.twin.model import Event

HERE = Path(__file__).parent
COOKIE = "healthtwin_token"
UI_HEADER = "x-healthtwin-ui"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
#: FastAPI's interactive API docs (Swagger UI / ReDoc) load their scripts from a CDN with an
#: inline bootstrap script: they cannot run under CSP, so they get none (and no dashboard
#: page links to them; the dashboard links /openapi.json)
NO_CSP = ("/docs", "/redoc")
#: a value older than this is flagged "old" on the patient page (days)
OLD_AFTER_D = 90.0
#: a CGM gap longer than this is reported as bridged by the model (min)
GAP_MIN = 15.0

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

router = APIRouter(include_in_schema=False)
Ctx = Annotated[AccessContext, Depends(context)]


# ---------------------------------------------------------------------------- middleware
class BrowserMiddleware:
    """ASGI: cookie -> bearer header (see module docstring); security headers on every reply."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers") or [])
        names = {k.lower() for k, _ in headers}
        if b"authorization" not in names:
            token = _cookie_token(headers)
            ui = any(k.lower() == UI_HEADER.encode() and v == b"1" for k, v in headers)
            if token and (scope.get("method") in SAFE_METHODS or ui):
                headers.append((b"authorization", b"Bearer " + token.encode("latin-1")))
                scope["headers"] = headers

        path = str(scope.get("path", ""))
        exempt = path == NO_CSP[0] or path.startswith(NO_CSP)

        started = False

        async def send_wrap(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if not exempt:
                    hs = [
                        h
                        for h in message.get("headers", [])
                        if h[0].lower() != SECURITY_HEADERS[0][0]
                    ]
                    message = dict(message, headers=hs + SECURITY_HEADERS)
            await send(message)

        try:
            await self.app(scope, receive, send_wrap)
        except asyncio.CancelledError:
            if not started:
                raise
            # a started stream (SSE) cancelled by uvicorn's graceful-shutdown timeout on
            # Ctrl-C: end the response (no traceback for an expected stop)
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b"", "more_body": False})


def _cookie_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    for k, v in headers:
        if k.lower() == b"cookie":
            c: SimpleCookie = SimpleCookie()
            try:
                c.load(v.decode("latin-1"))
            except Exception:  # a malformed cookie header authenticates nobody
                continue
            if COOKIE in c and c[COOKIE].value:
                return c[COOKIE].value
    return None


def install(app: FastAPI) -> None:
    """Add the pages, the static files and the browser middleware to ``app``."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_middleware(BrowserMiddleware)


# ---------------------------------------------------------------------------- rendering
def render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    acc: AccessContext | None = getattr(request.state, "access", None)
    p = acc.principal if acc is not None else None
    html = _env.get_template(name).render(principal=p, path=request.url.path, **ctx)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def error_page(request: Request, status: int, detail: Any) -> Response:
    """The HTML answer to a refused or failed page request (401 -> the login page)."""
    if status == 401:
        nxt = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        return RedirectResponse(f"/login?next={nxt}", status_code=303)
    return render(request, "error.html", status=status, status_code=status, detail=str(detail))


def _age(ts: datetime | None, now: datetime) -> tuple[str, float | None]:
    """Human age of a value and its age in days (None without a time)."""
    if ts is None:
        return "unknown (no time)", None
    s = (now - ts).total_seconds()
    d = s / 86400.0
    if s < 0:
        return "in the future", d
    if s < 120:
        return f"{int(s)} s", d
    if s < 7200:
        return f"{int(s // 60)} min", d
    if s < 2 * 86400:
        return f"{s / 3600:.0f} h", d
    if d < 730:
        return f"{d:.0f} d", d
    return f"{d / 365.25:.1f} y", d


def _flags(v: Any, age_d: float | None) -> list[str]:
    """Why a value needs care: missing, unconverted unit, not final, old."""
    out = []
    if v.kind == "absent":
        out.append(f"missing: {v.text or v.value_code or 'data absent'}")
    if v.unit_status in ("no-unit", "unknown-unit", "incompatible", "invalid-ucum"):
        out.append(f"unit {v.unit_status}: shown as received, not converted")
    if v.status and v.status not in ("final", "amended", "corrected"):
        out.append(f"status {v.status}")
    if v.effective is None:
        out.append("no effective time")
    if age_d is not None and age_d > OLD_AFTER_D:
        out.append(f"older than {OLD_AFTER_D:.0f} d")
    return out


def _shown(v: Any) -> tuple[str, str]:
    """(value, UCUM unit) as displayed: canonical unit when converted, else as received."""
    if v.value_canonical is not None and v.unit_canonical:
        return f"{v.value_canonical:.4g}", v.unit_canonical
    if v.value is not None:
        return f"{v.value:.4g}", v.unit or "(no unit)"
    if v.mean is not None:
        sd = f" ± {v.sd:.3g}" if v.sd is not None else ""
        return f"{v.mean:.4g}{sd}", v.unit or ""
    return (v.text or v.value_code or "—"), ""


@dataclass
class GlucoseSummary:
    readings: int
    window_h: float
    last: datetime | None
    gaps: list[tuple[datetime, float]]
    alerts: list[dict[str, Any]]


def glucose_summary(readings: list[tuple[datetime, float]], window_h: float) -> GlucoseSummary:
    """Readings, gaps (> GAP_MIN min) and alert episodes over the last ``window_h`` h of data.

    An episode is a run of consecutive readings at the same alert level (the server's glucose
    thresholds): level, first and last time, number of readings, and the extreme value (the
    lowest for low levels, the highest for high ones). Newest first, at most 20.
    """
    from healthtwin.serve.services import ALERT_RULES, HIGH_RULES

    if not readings:
        return GlucoseSummary(0, window_h, None, [], [])
    last = readings[-1][0]
    use = [(t, v) for t, v in readings if t >= last - timedelta(hours=window_h)]
    gaps = []
    for (t0, _), (t1, _) in zip(use, use[1:], strict=False):
        m = (t1 - t0).total_seconds() / 60.0
        if m > GAP_MIN:
            gaps.append((utc(t0) or t0, m))
    alerts: list[dict[str, Any]] = []
    prev: str | None = None
    for t, v in use:
        level = next((lv for thr, _d, lv in ALERT_RULES if v < thr), None)
        if level is None:
            level = next((lv for thr, _d, lv in HIGH_RULES if v > thr), None)
        if level is not None and level == prev:
            ep = alerts[-1]
            ep["end"], ep["n"] = utc(t), ep["n"] + 1
            low = "low" in level
            ep["value"] = min(ep["value"], v) if low else max(ep["value"], v)
        elif level is not None:
            alerts.append({"level": level, "value": v, "start": utc(t), "end": utc(t), "n": 1})
        prev = level
    return GlucoseSummary(len(use), window_h, utc(last), gaps, alerts[::-1][:20])


# ---------------------------------------------------------------------------- login
def _safe_next(nxt: str | None) -> str:
    """Only local dashboard paths (no open redirect)."""
    if nxt and nxt.startswith("/ui/") and "//" not in nxt and "\\" not in nxt:
        return nxt
    return "/ui/twins"


@router.get("/", response_class=RedirectResponse)
@access("ui.root", None, public=True)
async def root() -> RedirectResponse:
    """The dashboard's start page."""
    return RedirectResponse("/ui/twins", status_code=303)


@router.get("/login", response_class=HTMLResponse)
@access("ui.login", None, public=True)
async def login_page(
    request: Request, next: Annotated[str | None, Query(max_length=500)] = None
) -> HTMLResponse:
    """Ask for a bearer token (the same tokens as the API; ``healthtwin token`` mints one)."""
    return render(request, "login.html", next=_safe_next(next), error=None)


@router.post("/login", response_class=HTMLResponse)
@access("ui.login.submit", None, public=True)
async def login_submit(request: Request) -> Response:
    """Verify the token, then keep it in an HttpOnly, SameSite=Strict cookie."""
    body = await request.body()
    if len(body) > 16384:
        raise HTTPException(413, "login form is larger than 16 KiB")
    form = parse_qs(body.decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0].strip()
    nxt = _safe_next((form.get("next") or [""])[0])
    try:
        if not token:
            raise AuthError("no token given")
        p = request.app.state.verifier.verify(token)
    except AuthError as exc:
        _audit_login(request, None, f"refused: {exc}")
        return render(request, "login.html", status=401, next=nxt, error=str(exc))
    _audit_login(request, p.sub, "allowed")
    resp = RedirectResponse(nxt, status_code=303)
    max_age = int(p.expires - time.time()) if p.expires else 3600
    resp.set_cookie(
        COOKIE,
        token,
        max_age=max(1, max_age),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return resp


def _audit_login(request: Request, who: str | None, outcome: str) -> None:
    gw = getattr(request.app.state, "gateway", None)
    if gw is None:
        return
    payload = {
        "who": who,
        "action": "ui.login",
        "method": "POST",
        "path": "/login",
        "status": 303 if who else 401,
        "outcome": "allowed" if who else "denied",
        "reason": outcome,
    }
    gw.audit(Event("audit.access", payload, {"source": "dashboard"}, None, None))


@router.post("/logout", response_class=RedirectResponse)
@access("ui.logout", None, public=True)
async def logout() -> RedirectResponse:
    """Forget the token cookie."""
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return resp


# ---------------------------------------------------------------------------- pages
@router.get("/ui/twins", response_class=HTMLResponse)
@access("ui.twins", "Patient", "s", compartment="search", shared=True)
async def twins_page(
    request: Request,
    ctx: Ctx,
    kind: Annotated[str | None, Query(pattern="^(patient|facility|cohort|)$")] = None,
    search: Annotated[str | None, Query(max_length=100)] = None,
    after: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    """Twins a page at a time (50), searchable by id or name; confined tokens see their own."""
    gw = gateway_of(request)
    rows = await gw.read(
        queries.twin_page,
        kind=kind or None,
        search=search or None,
        only=ctx.patient,
        after=after,
        limit=51,
    )
    more = len(rows) > 50
    items = [_summary(r, _role(ctx)) for r in rows[:50]]
    return render(
        request,
        "twins.html",
        items=items,
        kind=kind or "",
        search=search or "",
        next_after=items[-1].twin_id if more and items else None,
    )


@router.get("/ui/twins/{prefix}/{id}", response_class=HTMLResponse)
@access("ui.twin", "{twin}", "r", compartment="twin")
async def twin_page(
    prefix: str,
    id: str,
    request: Request,
    ctx: Ctx,
    spec: Annotated[str, Query(pattern=r"^[a-z_]{1,40}$")] = "ed",
) -> HTMLResponse:
    """A patient twin (state, timeline, forecast, what-if, alerts) or a facility twin."""
    t = await _twin(request, f"{prefix}/{id}")
    gw = gateway_of(request)
    detail = await gw.read(lambda st, tid: st.twin(tid), t["twin_id"])
    summary = _summary(detail, _role(ctx))
    if t["kind"] == "facility":
        return await _facility_page(request, ctx, t, summary, detail, spec)
    if t["kind"] != "patient":
        return render(request, "cohort.html", twin=summary, detail=detail)
    return await _patient_page(request, ctx, t, summary, detail)


async def _patient_page(
    request: Request, ctx: AccessContext, t: dict[str, Any], summary: Any, detail: dict[str, Any]
) -> HTMLResponse:
    gw = gateway_of(request)
    now = datetime.now(UTC)
    rows = await gw.read(lambda st, tid: st.state(tid, None, None), t["twin_id"])
    values: list[dict[str, Any]] = []
    for r in rows:
        v = state_value(r)
        age, age_d = _age(v.effective, now)
        shown, unit = _shown(v)
        values.append({"v": v, "shown": shown, "unit": unit, "age": age, "flags": _flags(v, age_d)})
    values.sort(key=lambda x: str(x["v"].display or x["v"].code).lower())
    readings = await gw.read(queries.glucose_series, t["subject"], None)
    gs = glucose_summary(readings, 24.0)
    counts = await gw.read(_numeric_codes, t["subject"])
    glucose_code = next((c for c in counts if c["code"] in queries.GLUCOSE_CODES), None)
    default = glucose_code or (counts[0] if counts else None)
    role = _role(ctx)
    return render(
        request,
        "patient.html",
        twin=summary,
        detail=detail,
        values=values,
        glucose=gs,
        codes=counts,
        default_code=default["code"] if default else "",
        can_forecast=role in SIMULATE_ROLES | {Role.PATIENT},
        can_whatif=role in SIMULATE_ROLES,
        gap_min=GAP_MIN,
        now=now,
    )


def _numeric_codes(store: Any, subject: str) -> list[dict[str, Any]]:
    """Codes of the subject's current numeric facts with counts and units, most points first."""
    rows = queries._rows(
        store,
        "SELECT code, any_value(display), any_value(COALESCE(unit_canonical, unit)), count(*) "
        "FROM facts WHERE subject = ? AND superseded_at IS NULL "
        "AND status <> 'entered-in-error' AND effective IS NOT NULL "
        "AND COALESCE(num_canonical, num) IS NOT NULL GROUP BY code ORDER BY count(*) DESC, code",
        [subject],
    )
    return [{"code": c, "display": d or c, "unit": u or "", "n": int(n)} for c, d, u, n in rows]


async def _facility_page(
    request: Request,
    ctx: AccessContext,
    t: dict[str, Any],
    summary: Any,
    detail: dict[str, Any],
    spec_name: str,
) -> HTMLResponse:
    from healthtwin.operations.spec import SpecError, bundled_specs, load_spec
    from healthtwin.operations.store_link import census_from_store

    specs = bundled_specs()
    if spec_name not in specs:
        raise HTTPException(422, f"spec {spec_name!r} is not one of {specs}")
    sp = load_spec(spec_name)
    gw = gateway_of(request)
    census_error = None
    groups: list[dict[str, Any]] = []
    as_of = None
    n_patients = 0
    try:
        cen = await gw.read(census_from_store, sp, None, None)
    except SpecError as exc:
        census_error = str(exc)
    else:
        as_of = utc(cen.as_of)
        n_patients = len(cen.patients)
        by: dict[tuple[str, str], list[Any]] = {}
        for q in cen.patients:
            by.setdefault((q.cls, q.step), []).append(q)
        for (cls, step), qs in sorted(by.items()):
            waits = [
                (cen.as_of - (q.since or q.arrived)).total_seconds() / 60.0
                for q in qs
                if not q.in_service
            ]
            groups.append(
                {
                    "cls": cls,
                    "step": step,
                    "n": len(qs),
                    "in_service": sum(q.in_service for q in qs),
                    "waiting": len(waits),
                    "longest_wait_min": max(waits) if waits else None,
                    "mean_wait_min": sum(waits) / len(waits) if waits else None,
                }
            )
    return render(
        request,
        "facility.html",
        twin=summary,
        detail=detail,
        spec=spec_name,
        specs=specs,
        stations=sorted(sp.stations),
        census_error=census_error,
        census_at=as_of,
        census_patients=n_patients,
        groups=groups,
        can_run=_role(ctx) in FACILITY_ROLES,
    )


# ---------------------------------------------------------------------------- compare
class CompareRequest(Strict):
    """Base spec against one intervention: ``extra`` servers at ``station`` (paired, CRN)."""

    spec: str = Field(default="ed", pattern=r"^[a-z_]{1,40}$")
    station: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_]+$")
    extra: int = Field(default=1, ge=-5, le=10, description="servers added (negative: removed)")
    replications: int = Field(default=5, ge=2, le=30)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    horizon_days: float = Field(
        default=7.0, gt=0, le=30, description="days simulated after the spec's warm-up"
    )


@router.post("/ui/twins/{prefix}/{id}/compare")
@access(
    "twin.facility.compare",
    "{twin}",
    "r",
    compartment="twin",
    roles=FACILITY_ROLES,
    expensive=True,
)
async def facility_compare(
    prefix: str, id: str, body: CompareRequest, request: Request, ctx: Ctx
) -> JSONResponse:
    """Scenario comparison for the facility page (operations.scenarios.compare; simulated)."""
    from healthtwin import __version__
    from healthtwin.operations.scenarios import compare, extra_staff
    from healthtwin.operations.spec import SpecError
    from healthtwin.serve.routes.twins import (
        _SIM,
        _f,
        _facility_twin,
        _input_hash,
        _journal_simulation,
        _spec,
    )

    t = await _twin(request, f"{prefix}/{id}")
    _facility_twin(t)
    sp = _spec(body.spec)
    # days measured after the spec's warm-up (a horizon inside the warm-up measures nothing)
    sp = sp.model_copy(update={"horizon": sp.warmup + body.horizon_days * 1440.0})
    if body.station not in sp.stations:
        raise HTTPException(422, f"station {body.station!r} is not in spec {body.spec!r}")
    name = f"{body.extra:+d} {body.station}"

    def run() -> dict[str, Any]:
        patch = extra_staff(sp, body.station, body.extra)
        return compare(sp, {name: patch}, body.replications, body.seed, 1)

    try:
        res = await anyio.to_thread.run_sync(run, limiter=_SIM)
    except SpecError as exc:
        raise HTTPException(422, str(exc)) from None
    rows = [
        {
            "kpi": str(k),
            "base_mean": _f(r["base"]),
            "scenario_mean": _f(r["scenario"]),
            "diff_mean": _f(r["diff"]),
            "diff_low": _f(r["ci_low"]),
            "diff_high": _f(r["ci_high"]),
            "significant": bool(r["significant"]),
        }
        for k, r in res[name].iterrows()
    ]
    ih = _input_hash(sp.model_dump(mode="json"), body.model_dump())
    batch = await _journal_simulation(
        request,
        ctx,
        t,
        {
            "what": "facility.compare",
            "spec": body.spec,
            "scenario": name,
            "input_hash": ih,
            "seed": body.seed,
            "replications": body.replications,
            "model": "healthtwin-des",
            "model_version": __version__,
        },
    )
    return JSONResponse(
        {
            "simulated": True,
            "model": "healthtwin-des",
            "model_version": __version__,
            "seed": body.seed,
            "input_hash": ih,
            "journal_batch": batch,
            "twin_id": t["twin_id"],
            "spec": body.spec,
            "scenario": name,
            "replications": body.replications,
            "horizon_days": body.horizon_days,
            "level": 0.95,
            "kpis": rows,
        }
    )


__all__ = ["CSP", "COOKIE", "Denied", "error_page", "install"]
