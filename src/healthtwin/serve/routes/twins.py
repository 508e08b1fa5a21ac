"""REST for twins: list and search, state at a time, history, series, forecasts, what-if.

Every result of a model is labelled ``simulated`` and journaled as a ``simulation.run``
event (spec, seed, model version, input hash) before it is returned.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import anyio
import numpy as np
import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response

from healthtwin.serve import queries
from healthtwin.serve.access import AccessContext, Denied, access
from healthtwin.serve.auth import Role
from healthtwin.serve.deps import context, gateway_of
from healthtwin.serve.models import (
    FacilityForecast,
    FacilityForecastRequest,
    FacilityRunRequest,
    FacilitySimulation,
    ForecastBand,
    ForecastPoint,
    GlucoseForecast,
    GlucoseForecastRequest,
    HistoryEvent,
    HistoryPage,
    KpiInterval,
    ScenarioResult,
    Series,
    SeriesPoint,
    StateValue,
    TwinDetail,
    TwinPage,
    TwinState,
    TwinSummary,
    WhatIfRequest,
    WhatIfResponse,
)
from healthtwin.twin.model import Event
from healthtwin.twin.store.base import StoreError

router = APIRouter(prefix="/twins", tags=["twins"])

Ctx = Annotated[AccessContext, Depends(context)]
Prefix = Annotated[str, "twin id prefix"]
SIMULATE_ROLES = {Role.CLINICIAN, Role.ADMIN, Role.RESEARCHER}
FACILITY_ROLES = {Role.OPERATIONS, Role.ADMIN}
_SIM = anyio.CapacityLimiter(1)  # one simulation at a time per process (CPU-bound)
#: roles that see internal provenance (source files, locators) and names (OWASP API3)
SEES_PROVENANCE = {Role.CLINICIAN, Role.ADMIN, Role.OPERATIONS, Role.SERVICE}
SEES_NAMES = {Role.CLINICIAN, Role.ADMIN, Role.OPERATIONS, Role.SERVICE, Role.PATIENT}


def utc(ts: datetime | None) -> datetime | None:
    """Naive store times are UTC; aware inputs are converted to UTC."""
    if ts is None:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def encode_cursor(key: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(key)).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> Any:
    if not cursor:
        return None
    try:
        return orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        raise HTTPException(400, f"cursor {cursor[:40]!r} is not a cursor of this API") from None


def state_value(row: dict[str, Any]) -> StateValue:
    return StateValue(
        system=row["system"],
        code=row["code"],
        display=row.get("display"),
        kind=row["kind"],
        value=row.get("num"),
        unit=row.get("unit"),
        value_canonical=row.get("num_canonical"),
        unit_canonical=row.get("unit_canonical"),
        unit_status=row.get("unit_status"),
        value_code=row.get("value_code"),
        text=row.get("text"),
        mean=row.get("mean"),
        sd=row.get("sd"),
        quantiles=row.get("quantiles"),
        effective=utc(row.get("effective")),
        effective_text=row.get("effective_text"),
        status=row.get("status"),
        recorded_at=utc(row.get("recorded_at")),
        source=f"{row['rid']}/_history/{row['version']}" if row.get("rid") else None,
    )


def _summary(row: dict[str, Any], role: Role) -> TwinSummary:
    return TwinSummary(
        twin_id=row["twin_id"],
        kind=row["kind"],
        sync_mode=row["sync_mode"],
        name=row.get("name") if role in SEES_NAMES else None,
        created_at=utc(row.get("created_at")),
    )


async def _twin(request: Request, twin_id: str) -> dict[str, Any]:
    gw = gateway_of(request)
    t = await gw.read(queries.twin_exact, twin_id)
    if t is None:
        raise Denied(404, f"no twin {twin_id!r}")
    return t


def _role(ctx: AccessContext) -> Role:
    assert ctx.principal is not None
    return ctx.principal.role


@router.get("", response_model=TwinPage)
@access("twin.list", "Patient", "s", compartment="search", shared=True)
async def list_twins(
    request: Request,
    ctx: Ctx,
    kind: Annotated[str | None, Query(pattern="^(patient|facility|cohort)$")] = None,
    search: Annotated[str | None, Query(max_length=100, description="in id or name")] = None,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> TwinPage:
    """Twins by id, a page at a time (stable keyset cursor); confined tokens see their own."""
    gw = gateway_of(request)
    after = decode_cursor(cursor)
    if after is not None and not isinstance(after, str):
        raise HTTPException(400, "cursor is not a twin-list cursor")
    rows = await gw.read(
        queries.twin_page,
        kind=kind,
        search=search,
        only=ctx.patient,
        after=after,
        limit=limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return TwinPage(
        items=[_summary(r, _role(ctx)) for r in rows],
        next_cursor=encode_cursor(rows[-1]["twin_id"]) if more else None,
    )


@router.get("/{prefix}/{id}", response_model=TwinDetail)
@access("twin.read", "{twin}", "r", compartment="twin")
async def get_twin(prefix: Prefix, id: str, request: Request, ctx: Ctx) -> TwinDetail:
    """One twin: kind, sync mode, resources per type, number of journal events."""
    t = await _twin(request, f"{prefix}/{id}")
    gw = gateway_of(request)
    d = await gw.read(lambda st, tid: st.twin(tid), t["twin_id"])
    s = _summary(d, _role(ctx))
    return TwinDetail(**s.model_dump(), resources=d["resources"], events=int(d["events"]))


def _state_query(store: Any, twin_id: str, at: datetime | None, as_of: datetime | None) -> Any:
    """(twin row or None, state rows) in one trip to the store thread."""
    t = queries.twin_exact(store, twin_id)
    if t is None:
        return None, []
    return t, store.state(t["twin_id"], at, as_of)


@router.get(
    "/{prefix}/{id}/state",
    response_class=Response,
    responses={200: {"model": TwinState, "description": "the twin's state"}},
)
@access("twin.state", "{twin}", "r", compartment="twin")
async def twin_state(
    prefix: Prefix,
    id: str,
    request: Request,
    ctx: Ctx,
    at: Annotated[datetime | None, Query(description="effective-time cut (ISO 8601)")] = None,
    as_of: Annotated[datetime | None, Query(description="recorded-time cut (ISO 8601)")] = None,
) -> Response:
    """Latest value per code with effective <= ``at`` as known at ``as_of`` (bitemporal).

    The current state (no ``at``/``as_of``) is served from a per-twin cache invalidated by
    every commit that touches the twin (one-process DuckDB deployments).
    """
    gw = gateway_of(request)
    twin_id = f"{prefix}/{id}"
    at_, as_of_ = utc(at), utc(as_of)
    cache = request.app.state.services.state_cache if at_ is None and as_of_ is None else None
    if cache is not None:
        body = cache.get(twin_id)
        if body is None:
            body = await cache.load(gw, twin_id)
        if body is not None:
            return Response(body, media_type="application/json")
    try:
        t, rows = await gw.read(_state_query, twin_id, at_, as_of_)
    except StoreError as exc:
        raise Denied(404, str(exc)) from None
    if t is None:
        raise Denied(404, f"no twin {twin_id!r}")
    out = (
        TwinState(twin_id=twin_id, at=at_, as_of=as_of_, values=[state_value(r) for r in rows])
        .model_dump_json()
        .encode()
    )
    return Response(out, media_type="application/json")


@router.get("/{prefix}/{id}/history", response_model=HistoryPage)
@access("twin.history", "{twin}", "r", compartment="twin")
async def twin_history(
    prefix: Prefix,
    id: str,
    request: Request,
    ctx: Ctx,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> HistoryPage:
    """The twin's journal events with provenance, oldest first (keyset by sequence)."""
    gw = gateway_of(request)
    t = await _twin(request, f"{prefix}/{id}")
    after = decode_cursor(cursor)
    if after is not None and not isinstance(after, int):
        raise HTTPException(400, "cursor is not a history cursor")
    rows = await gw.read(queries.history_page, t["twin_id"], t["subject"], after or 0, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    sees = _role(ctx) in SEES_PROVENANCE
    items = []
    for r in rows:
        prov = (
            r["provenance"]
            if sees
            else {k: v for k, v in r["provenance"].items() if k == "validation"}
        )
        items.append(
            HistoryEvent(
                seq=r["seq"],
                recorded_at=utc(r["recorded_at"]) or datetime.now(UTC),
                kind=r["kind"],
                payload=r["payload"],
                provenance=prov,
            )
        )
    return HistoryPage(
        twin_id=t["twin_id"],
        items=items,
        next_cursor=encode_cursor(rows[-1]["seq"]) if more else None,
    )


@router.get("/{prefix}/{id}/series", response_model=Series)
@access("twin.series", "Observation", "s", compartment="twin")
async def twin_series(
    prefix: Prefix,
    id: str,
    request: Request,
    ctx: Ctx,
    code: Annotated[list[str] | None, Query(max_length=20)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=20000)] = 5000,
) -> Series:
    """The twin's values over effective time (a timeline), optionally of some codes."""
    gw = gateway_of(request)
    t = await _twin(request, f"{prefix}/{id}")
    rows = await gw.read(queries.series, t["subject"], code, utc(since), utc(until), limit + 1)
    pts = [
        SeriesPoint(
            system=r["system"],
            code=r["code"],
            display=r["display"],
            value=r["num"],
            unit=r["unit"],
            value_canonical=r["num_canonical"],
            unit_canonical=r["unit_canonical"],
            unit_status=r["unit_status"],
            value_code=r["value_code"],
            text=r["text"],
            effective=utc(r["effective"]),
            recorded_at=utc(r["recorded_at"]),
            source=f"{r['rid']}/_history/{r['version']}",
        )
        for r in rows[:limit]
    ]
    return Series(twin_id=t["twin_id"], points=pts, truncated=len(rows) > limit)


# ---------------------------------------------------------------------- simulations
async def _journal_simulation(
    request: Request, ctx: AccessContext, twin: dict[str, Any], payload: dict[str, Any]
) -> str:
    gw = gateway_of(request)
    assert ctx.principal is not None
    ev = Event(
        "simulation.run",
        {**payload, "simulated": True},
        {"source": "api", "who": ctx.principal.sub, "action": ctx.policy.action},
        twin["twin_id"],
        twin["subject"],
    )
    res = await gw.write([], [], [ev], source=f"api {ctx.policy.action}")
    return res.batch.batch_id


def _input_hash(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(orjson.dumps(p, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_SORT_KEYS))
    return h.hexdigest()


def _patient_twin(t: dict[str, Any]) -> None:
    if t["kind"] != "patient":
        raise HTTPException(422, f"{t['twin_id']} is a {t['kind']} twin, not a patient twin")


def _facility_twin(t: dict[str, Any]) -> None:
    if t["kind"] != "facility":
        raise HTTPException(422, f"{t['twin_id']} is a {t['kind']} twin, not a facility twin")


def _glucose_record(store: Any, twin_id: str) -> tuple[Any, list[dict[str, Any]]]:
    """The glucose twin's inputs and saved ``twin.state`` payloads (on the store thread)."""
    from healthtwin.care.glucose.thread import read_inputs, state_events

    return read_inputs(store, twin_id), state_events(store, twin_id)


def _glucose_view(
    twin_id: str,
    inputs: Any,
    states: list[dict[str, Any]],
    hours_of_data: float,
    weight_kg: float,
    basal_u_h: float,
    seed: int,
) -> tuple[Any, list[str]]:
    """The twin brought up to its last glucose reading by the thread (nothing written).

    From the saved state (``twin.state``) over the newer records, or — without a saved state,
    or one older than ``hours_of_data`` before the last reading — a fresh start from the
    prior over the last ``hours_of_data`` h of records. (view or None, assumptions).
    """
    from healthtwin.care.glucose.thread import Inputs, advance

    glucose = [i for i in inputs.items if i.kind in ("cgm", "bg")]
    notes: list[str] = []
    if states and glucose:
        saved = datetime.fromisoformat(states[-1]["origin"])
        if (glucose[-1].time - saved).total_seconds() > hours_of_data * 3600:
            notes.append(
                f"saved twin state of {saved.isoformat()} is more than {hours_of_data:g} h "
                "before the last reading: restarted from the prior"
            )
            states = []
    kw: dict[str, Any] = {}
    if not states:
        if not glucose:
            return None, notes
        since = glucose[-1].time - timedelta(hours=hours_of_data)
        keep = [i for i in inputs.items if i.kind in ("basal", "weight") or i.time >= since]
        inputs = Inputs(keep, inputs.skipped, inputs.twin_outputs)
        kw = {"weight_kg": weight_kg, "basal_u_h": basal_u_h}
        if not any(i.kind == "weight" for i in keep):
            notes.append(f"no body weight record: {weight_kg:g} kg as given")
        notes.append(f"fresh start from the population prior over the last {hours_of_data:g} h "
                     "of records (no saved twin state)")  # fmt: skip
    view = advance(inputs, states, twin_id=twin_id, seed=seed, **kw)
    if view is None:
        return None, notes
    if view.prev is not None:
        notes.append(f"started from the saved twin state of {view.prev['origin']} "
                     f"(state {view.prev['state_hash'][:12]})")  # fmt: skip
    if not view.known_basal and not any(i.kind == "basal" for i in view.pending):
        notes.append(f"no basal insulin record: {view.fallback_u_h:g} [IU]/h assumed")
    n = {k: sum(1 for i in view.used if i.kind == k) for k in ("cgm", "bg", "bolus", "carbs")}
    notes.append(f"records used: {n['cgm']} CGM, {n['bg']} blood glucose, {n['bolus']} insulin "
                 f"bolus(es), {n['carbs']} carbohydrate record(s), {len(view.known_basal)} basal "
                 f"record(s) since the twin's clock minute {view.m0}")  # fmt: skip
    if view.late:
        notes.append(f"{len(view.late)} record(s) dated before the saved state not used "
                     "(`healthtwin glucose sync --rebuild` includes them)")  # fmt: skip
    notes.append("nothing is written back and no twin state is saved by this request")
    return view, notes


def _readings_used(inputs: Any, view: Any) -> int:
    """Glucose readings the twin has assimilated (saved state's and this view's)."""
    keys = view.consumed | {i.key for i in view.readings}
    return sum(1 for i in inputs.items if i.kind in ("cgm", "bg") and i.key in keys)


def _view_hash(view: Any) -> str:
    """The thread's documented input hash (thread.py) of the records this view read."""
    from healthtwin.care.glucose.thread import thread_input_hash

    return str(thread_input_hash(view.prev_hash,
                                 [(i.rid, i.sha256) for i in view.used + view.pending]))  # fmt: skip


@router.post("/{prefix}/{id}/glucose/forecast", response_model=GlucoseForecast)
@access(
    "twin.glucose.forecast",
    "{twin}",
    "r",
    compartment="twin",
    roles=SIMULATE_ROLES | {Role.PATIENT},
    expensive=True,
)
async def glucose_forecast(
    prefix: Prefix, id: str, body: GlucoseForecastRequest, request: Request, ctx: Ctx
) -> GlucoseForecast:
    """Glucose forecast with prediction intervals from the twin's record (simulated).

    The glucose twin's thread (care/glucose/thread.py) reads CGM, insulin and carbohydrate
    records, restores the saved twin state and filters the newer minutes; nothing is written
    back. Recorded boluses, meals and basal changes after the last reading are used.
    """
    from healthtwin.care.glucose.thread import MODEL_NAME, MODEL_VERSION, future_inputs

    t = await _twin(request, f"{prefix}/{id}")
    _patient_twin(t)
    if not all(1 <= h <= 720 for h in body.horizons_min):
        raise HTTPException(422, "horizons_min must be within 1..720 min")
    gw = gateway_of(request)
    inputs, states = await gw.read(_glucose_record, t["twin_id"])
    hmax = max(body.horizons_min)

    def run() -> tuple[Any, list[str], np.ndarray]:
        view, notes = _glucose_view(t["twin_id"], inputs, states, body.hours_of_data,
                                    body.weight_kg, body.basal_u_h, body.seed)  # fmt: skip
        if view is None:
            raise ValueError(f"{t['twin_id']} has no glucose readings to forecast from")
        fi, fc = future_inputs(view, hmax)
        view.twin.rng_ = np.random.default_rng(body.seed)
        s: np.ndarray = view.twin.forecast(hmax, fi, fc)[0]
        return view, notes, s

    try:
        view, assumptions, s = await anyio.to_thread.run_sync(run, limiter=_SIM)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    qs = [(1 - body.level) / 2, 0.5, (1 + body.level) / 2]
    pts = []
    for h in sorted(set(body.horizons_min)):
        lo, med, hi = np.quantile(s[:, h], qs)
        pts.append(ForecastPoint(horizon_min=h, median=float(med), low=float(lo), high=float(hi)))
    glucose = [i for i in view.readings] or [
        i for i in inputs.items if i.kind in ("cgm", "bg") and i.key in view.consumed
    ]
    last = max(i.time for i in glucose) if glucose else view.origin
    fut = sum(1 for i in view.pending if i.kind in ("bolus", "carbs"))
    assumptions.append(f"after the last reading: {fut} recorded bolus/meal record(s), basal as "
                       "recorded, otherwise no carbohydrate")  # fmt: skip
    ih = _view_hash(view)
    batch = await _journal_simulation(
        request,
        ctx,
        t,
        {
            "what": "glucose.forecast",
            "model": MODEL_NAME,
            "model_version": MODEL_VERSION,
            "seed": body.seed,
            "input_hash": ih,
            "from_state": view.prev_hash,
            "origin": view.origin.isoformat(),
            "request": body.model_dump(),
        },
    )
    return GlucoseForecast(
        model=MODEL_NAME,
        model_version=MODEL_VERSION,
        seed=body.seed,
        input_hash=ih,
        assumptions=assumptions,
        journal_batch=batch,
        twin_id=t["twin_id"],
        issued_at=datetime.now(UTC),
        last_reading_at=utc(last) or last,
        readings_used=_readings_used(inputs, view),
        level=body.level,
        points=pts,
    )


@router.post("/{prefix}/{id}/glucose/whatif", response_model=WhatIfResponse)
@access(
    "twin.glucose.whatif",
    "{twin}",
    "r",
    compartment="twin",
    roles=SIMULATE_ROLES,
    expensive=True,
)
async def glucose_whatif(
    prefix: Prefix, id: str, body: WhatIfRequest, request: Request, ctx: Ctx
) -> WhatIfResponse:
    """What-if scenarios side by side from the twin's saved state (simulated).

    Scenarios start at the twin's last reading (minutes from then); the twin is brought up to
    it by the thread from its saved state and the newer records, as for the forecast.
    """
    from healthtwin.care.glucose.personalize import GlucoseEnKF
    from healthtwin.care.glucose.thread import MODEL_NAME, MODEL_VERSION
    from healthtwin.care.glucose.whatif import run_whatif

    t = await _twin(request, f"{prefix}/{id}")
    _patient_twin(t)
    gw = gateway_of(request)
    inputs, states = await gw.read(_glucose_record, t["twin_id"])
    specs = [s.model_dump() for s in body.scenarios]
    for sp in specs:
        for k in ("meals", "boluses", "basal", "exercise"):
            sp[k] = [list(x) for x in sp[k]]

    def run() -> tuple[Any, list[str], list[Any]]:
        view, notes = _glucose_view(t["twin_id"], inputs, states, body.hours_of_data,
                                    body.weight_kg, body.basal_u_h, body.seed)  # fmt: skip
        if view is not None:
            tw = view.twin
            notes.append(f"scenarios start at the twin's last reading ({view.origin.isoformat()}"
                         "); recorded future doses and meals are not added")  # fmt: skip
        elif body.start_glucose is None:
            raise ValueError(f"{t['twin_id']} has no CGM data to personalise from: give "
                             "start_glucose (mg/dL)")  # fmt: skip
        else:
            ub = body.basal_u_h / 60.0
            tw = GlucoseEnKF(seed=body.seed).start(
                np.array([body.weight_kg]), np.array([ub]), np.array([body.start_glucose])
            )
            notes.append(f"population prior, start glucose {body.start_glucose} mg/dL, "
                         f"{body.weight_kg:g} kg, basal {body.basal_u_h:g} [IU]/h as given")  # fmt: skip
        tw.rng_ = np.random.default_rng(body.seed)
        return view, notes, run_whatif(tw, specs, np.array([body.cr_g_per_u]))

    try:
        view, assumptions, res = await anyio.to_thread.run_sync(run, limiter=_SIM)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    step = body.step_min
    results = [
        ScenarioResult(
            name=r.name,
            t_min=[float(x) for x in r.t[::step]],
            p05=[float(x) for x in r.p05[0][::step]],
            p50=[float(x) for x in r.p50[0][::step]],
            p95=[float(x) for x in r.p95[0][::step]],
        )
        for r in res
    ]
    ih = (
        _view_hash(view) if view is not None else _input_hash(body.start_glucose, body.model_dump())
    )
    batch = await _journal_simulation(
        request,
        ctx,
        t,
        {
            "what": "glucose.whatif",
            "model": MODEL_NAME,
            "model_version": MODEL_VERSION,
            "seed": body.seed,
            "input_hash": ih,
            "from_state": None if view is None else view.prev_hash,
            "origin": None if view is None else view.origin.isoformat(),
            "scenarios": specs,
            "request": body.model_dump(),
        },
    )
    return WhatIfResponse(
        model=MODEL_NAME,
        model_version=MODEL_VERSION,
        seed=body.seed,
        input_hash=ih,
        assumptions=assumptions,
        journal_batch=batch,
        twin_id=t["twin_id"],
        personalised_from_readings=0 if view is None else _readings_used(inputs, view),
        results=results,
    )


def _spec(name: str) -> Any:
    from healthtwin.operations.spec import SpecError, bundled_specs, load_spec

    if name not in bundled_specs():
        raise HTTPException(422, f"spec {name!r} is not one of {bundled_specs()}")
    try:
        return load_spec(name)
    except SpecError as exc:
        raise HTTPException(422, str(exc)) from None


def _f(x: Any) -> float | None:
    v = float(x)
    return v if np.isfinite(v) else None


@router.post("/{prefix}/{id}/facility/simulate", response_model=FacilitySimulation)
@access(
    "twin.facility.simulate",
    "{twin}",
    "r",
    compartment="twin",
    roles=FACILITY_ROLES,
    expensive=True,
)
async def facility_simulate(
    prefix: Prefix, id: str, body: FacilityRunRequest, request: Request, ctx: Ctx
) -> FacilitySimulation:
    """Discrete-event simulation of a facility spec: KPI means with 95 % CIs (simulated)."""
    from healthtwin import __version__
    from healthtwin.operations.engine import run_replications
    from healthtwin.operations.kpi import summarise

    t = await _twin(request, f"{prefix}/{id}")
    _facility_twin(t)
    sp = _spec(body.spec)
    if body.horizon_days is not None:
        horizon = body.horizon_days * 1440.0
        if horizon <= sp.warmup:
            raise HTTPException(
                422,
                f"horizon_days = {body.horizon_days:g} d ({horizon:g} min) is not longer than "
                f"the warm-up of spec {body.spec!r} ({sp.warmup:g} min = "
                f"{sp.warmup / 1440.0:g} d): give horizon_days > {sp.warmup / 1440.0:g}",
            )
        sp = sp.model_copy(update={"horizon": horizon})

    def run() -> Any:
        return summarise(run_replications(sp, body.replications, body.seed, 1))

    summ = await anyio.to_thread.run_sync(run, limiter=_SIM)
    kpis = [
        KpiInterval(
            kpi=str(k),
            mean=_f(r["mean"]),
            ci_low=_f(r["ci_low"]),
            ci_high=_f(r["ci_high"]),
            n=int(r["n"]),
        )
        for k, r in summ.iterrows()
    ]
    ih = _input_hash(sp.model_dump(mode="json"))
    batch = await _journal_simulation(
        request,
        ctx,
        t,
        {
            "what": "facility.simulate",
            "spec": body.spec,
            "spec_hash": ih,
            "seed": body.seed,
            "replications": body.replications,
            "model": "healthtwin-des",
            "model_version": __version__,
        },
    )
    return FacilitySimulation(
        model="healthtwin-des",
        model_version=__version__,
        seed=body.seed,
        input_hash=ih,
        journal_batch=batch,
        twin_id=t["twin_id"],
        spec=body.spec,
        replications=body.replications,
        kpis=kpis,
    )


@router.post("/{prefix}/{id}/facility/forecast", response_model=FacilityForecast)
@access(
    "twin.facility.forecast",
    "{twin}",
    "r",
    compartment="twin",
    roles=FACILITY_ROLES,
    expensive=True,
)
async def facility_forecast(
    prefix: Prefix, id: str, body: FacilityForecastRequest, request: Request, ctx: Ctx
) -> FacilityForecast:
    """Occupancy, waits and boarding forecast bands from the current census (simulated)."""
    from healthtwin import __version__
    from healthtwin.operations.live import forecast
    from healthtwin.operations.spec import SpecError
    from healthtwin.operations.store_link import census_from_store

    t = await _twin(request, f"{prefix}/{id}")
    _facility_twin(t)
    sp = _spec(body.spec)
    if not all(0 < h <= 168 for h in body.hours):
        raise HTTPException(422, "hours must be within (0, 168]")
    gw = gateway_of(request)
    try:
        cen = await gw.read(census_from_store, sp, None, None)
    except SpecError as exc:
        raise HTTPException(422, str(exc)) from None

    def run() -> Any:
        return forecast(sp, cen, body.hours, body.replications, body.seed, 1)

    try:
        fc = await anyio.to_thread.run_sync(run, limiter=_SIM)
    except SpecError as exc:
        raise HTTPException(422, str(exc)) from None
    bands = [
        ForecastBand(
            horizon_h=float(r["horizon[h]"]),
            quantity=str(r["quantity"]),
            mean=_f(r["mean"]),
            p05=_f(r["p05"]),
            p95=_f(r["p95"]),
        )
        for _, r in fc.iterrows()
    ]
    ih = _input_hash(sp.model_dump(mode="json"), len(cen.patients), cen.as_of.isoformat())
    batch = await _journal_simulation(
        request,
        ctx,
        t,
        {
            "what": "facility.forecast",
            "spec": body.spec,
            "input_hash": ih,
            "seed": body.seed,
            "replications": body.replications,
            "hours": body.hours,
            "census_at": cen.as_of.isoformat(),
        },
    )
    return FacilityForecast(
        model="healthtwin-des",
        model_version=__version__,
        seed=body.seed,
        input_hash=ih,
        journal_batch=batch,
        twin_id=t["twin_id"],
        spec=body.spec,
        census_at=utc(cen.as_of) or cen.as_of,
        census_patients=len(cen.patients),
        bands=bands,
    )
