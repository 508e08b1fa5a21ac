"""The glucose twin's two-way digital thread: read the store, update, write FHIR back.

One :func:`sync` of a patient twin

1. reads its inputs from the store (:func:`read_inputs`): glucose Observations by LOINC
   (CGM and blood glucose, converted to mg/dL by the spine's UCUM layer), insulin
   (MedicationAdministration / MedicationStatement doses in [IU], basal rates in [IU]/h from
   those and from MedicationRequest orders), carbohydrate Observations (g) and body weight
   (kg); codes in :mod:`healthtwin.care.glucose.codes`. Resources the twin wrote itself
   (tag system ``TAG_SYSTEM``) are never inputs;
2. restores the persisted filter state (the latest ``twin.state`` journal event: the EnKF
   ensemble, its random-generator state and the clock) and runs the streaming EnKF
   (:class:`~healthtwin.care.glucose.personalize.GlucoseEnKF` ``step`` / ``assimilate``)
   over the new minutes only — the history is never re-run (unless ``rebuild``);
3. forecasts 30/60/120 min ahead, computes alerts and recommendations, and, with
   ``write_back``, writes FHIR R4 (forecast Observations, a hypoglycaemia RiskAssessment,
   DetectedIssue alerts, MedicationRequest / CarePlan proposals and one Provenance) through
   the spine's ingestion path (reader → strict fhir.resources validation → one store batch),
   in the same transaction as the new ``twin.state`` and a ``simulation.run`` event.

Input hash of an update (named by the Provenance as ``sha-256;<hex>``): SHA-256 of the UTF-8
lines ``healthtwin-glucose-thread/1``, ``prev <state hash of the previous update or none>``
and, sorted, ``<Type/id> <SHA-256 of the record's original text>`` for every input record
the update consumed (the Provenance lists the same records as entities).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson

from healthtwin import __version__
from healthtwin.care.glucose import codes as C
from healthtwin.care.glucose import fhir as F
from healthtwin.care.glucose.alerts import AlertEvent, sensor_alerts
from healthtwin.care.glucose.control import personalised_bolus_parameters
from healthtwin.care.glucose.personalize import GlucoseEnKF
from healthtwin.models.physiology import bergman
from healthtwin.models.physiology.devices import InsulinPump
from healthtwin.thread.fhir.ingest import convert_records
from healthtwin.thread.fhir.normalize import FhirTimeError, normalise_system, parse_time
from healthtwin.thread.fhir.reader import read_text
from healthtwin.thread.terms.units import UnitError, conversion
from healthtwin.twin.model import Event, SyncMode
from healthtwin.twin.store.base import BatchResult, Store

MODEL_NAME = "healthtwin-glucose-enkf"
MODEL_VERSION = f"{bergman.MODEL_NAME}-{bergman.MODEL_VERSION}+healthtwin-{__version__}"
HASH_SCHEME = "healthtwin-glucose-thread/1"
STATE_EVENT = "twin.state"
SIMULATION_EVENT = "simulation.run"
SOURCE = "healthtwin glucose sync"
HYPO_MG_DL, HYPER_MG_DL, ALERT_P, REFRACTORY_MIN = 70.0, 250.0, 0.3, 30
CAREPLAN_CHANGE = 0.10  # a new CR/CF proposal when either moves by more than 10 %
CORRECTION_ABOVE, CORRECTION_TARGET, BOLUS_QUIET_MIN = 180.0, 140.0, 180

_INPUT_TYPES = ("Observation", "MedicationAdministration", "MedicationStatement",
                "MedicationRequest")  # fmt: skip


class ThreadError(ValueError):
    """The twin cannot be updated from the store (missing inputs, wrong twin kind, ...)."""


# -- reading inputs -------------------------------------------------------------------------
@dataclass(frozen=True)
class InputItem:
    """One input value: kind cgm|bg|carbs|bolus|basal|weight, time (UTC), value in the
    twin's unit (mg/dL, g, [IU], [IU]/h, kg); ``end`` closes a basal period."""

    rid: str
    sha256: str
    kind: str
    time: datetime
    value: float
    end: datetime | None = None

    @property
    def key(self) -> str:
        return f"{self.rid} {self.sha256}"


@dataclass(frozen=True)
class SkippedInput:
    """A record of a twin-input type that the twin does not use, and why."""

    rid: str
    reason: str


@dataclass
class Inputs:
    items: list[InputItem] = field(default_factory=list)
    skipped: list[SkippedInput] = field(default_factory=list)
    twin_outputs: int = 0  # resources the twin wrote (never inputs)


def is_twin_output(obj: dict[str, Any]) -> bool:
    """True when ``obj`` carries a tag of the twin's output system (predicted / simulated)."""
    tags = (obj.get("meta") or {}).get("tag") or []
    return any(isinstance(t, dict) and t.get("system") == C.TAG_SYSTEM for t in tags)


def _codings(cc: Any) -> list[tuple[str, str, str]]:
    if not isinstance(cc, dict):
        return []
    out = []
    for c in cc.get("coding") or []:
        if isinstance(c, dict) and c.get("code"):
            out.append(
                (normalise_system(c.get("system")), str(c["code"]), str(c.get("display", "")))
            )
    return out


def _convert(q: Any, target: str, what: str, aliases: dict[str, str] | None = None,
             molar_mass: float | None = None) -> float:  # fmt: skip
    """Quantity -> value in ``target`` (UCUM) through the spine's units; raises ValueError."""
    if not isinstance(q, dict):
        raise ValueError(f"{what}: no Quantity")
    v = q.get("value")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{what}: value {v!r} is not a number")
    if q.get("system") not in (None, C.UCUM):
        raise ValueError(f"{what}: unit system {q.get('system')!r} is not UCUM")
    unit = q.get("code") if q.get("code") is not None else q.get("unit")
    if not unit:
        raise ValueError(f"{what}: no unit (need UCUM {target})")
    unit = (aliases or {}).get(str(unit), str(unit))
    try:
        return conversion(unit, target, molar_mass)(float(v))
    except UnitError as exc:
        raise ValueError(f"{what}: unit {unit!r}: {exc}") from None


def _check(value: float, rng: tuple[float, float], unit: str, what: str) -> float:
    if not rng[0] <= value <= rng[1]:
        raise ValueError(f"{what} {value:g} {unit} is outside the plausible range "
                         f"[{rng[0]:g}, {rng[1]:g}] {unit}")  # fmt: skip
    return value


def _obs_item(obj: dict[str, Any], rid: str, sha: str) -> InputItem | SkippedInput | None:
    kind = code = None
    for system, c, _ in _codings(obj.get("code")):
        if system != C.LOINC:
            continue
        if c in C.CGM_CODES:
            kind, code = "cgm", c
        elif c in C.BLOOD_GLUCOSE_CODES:
            kind, code = "bg", c
        elif c in C.CARB_CODES:
            kind, code = "carbs", c
        elif c in C.BODY_WEIGHT_CODES:
            kind, code = "weight", c
        if kind:
            break
    if kind is None:
        return None
    what = f"{kind} (LOINC {code})"
    status = obj.get("status")
    if status not in C.MEASUREMENT_STATUSES:
        return SkippedInput(rid, f"{what}: status {status!r} is not a measurement "
                                 f"({'/'.join(sorted(C.MEASUREMENT_STATUSES))})")  # fmt: skip
    try:
        t = _time(obj, ("effectiveDateTime", "effectiveInstant", "effectivePeriod"), what)
        q = obj.get("valueQuantity")
        if kind in ("cgm", "bg"):
            v = _convert(q, C.GLUCOSE_UNIT, what, molar_mass=C.GLUCOSE_MOLAR_MASS)
            v = _check(v, C.GLUCOSE_RANGE_MG_DL, C.GLUCOSE_UNIT, what)
        elif kind == "carbs":
            v = _check(_convert(q, C.CARB_UNIT, what), C.CARB_RANGE_G, C.CARB_UNIT, what)
        else:
            v = _check(_convert(q, C.WEIGHT_UNIT, what), C.WEIGHT_RANGE_KG, C.WEIGHT_UNIT, what)
    except ValueError as exc:
        return SkippedInput(rid, str(exc))
    return InputItem(rid, sha, kind, t, v)


def _time(obj: dict[str, Any], keys: Sequence[str], what: str) -> datetime:
    for k in keys:
        if k in obj:
            try:
                t = parse_time(obj[k])
            except FhirTimeError as exc:
                raise ValueError(f"{what}: {k}: {exc}") from None
            if t is not None:
                return t
    raise ValueError(f"{what}: no time ({' / '.join(keys)})")


def _is_insulin(obj: dict[str, Any]) -> bool:
    cc = obj.get("medicationCodeableConcept")
    if isinstance(cc, dict):
        for system, code, display in _codings(cc):
            if (system, code) in C.INSULIN_CODES or C.INSULIN_WORD in display.lower():
                return True
        return C.INSULIN_WORD in str(cc.get("text") or "").lower()
    ref = obj.get("medicationReference")
    return isinstance(ref, dict) and C.INSULIN_WORD in str(ref.get("display") or "").lower()


def _dose(q: Any, what: str) -> float:
    v = _convert(q, C.INSULIN_UNIT, what, C.INSULIN_UNIT_ALIASES)
    return _check(v, C.BOLUS_RANGE_IU, C.INSULIN_UNIT, what)


def _rate(q: Any, what: str) -> float:
    v = _convert(q, C.INSULIN_RATE_UNIT, what, C.INSULIN_UNIT_ALIASES)
    return _check(v, C.BASAL_RANGE_IU_H, C.INSULIN_RATE_UNIT, what)


def _med_item(obj: dict[str, Any], rid: str, sha: str) -> InputItem | SkippedInput | None:
    rtype = obj["resourceType"]
    if not _is_insulin(obj):
        return None
    what = f"insulin {rtype}"
    status = obj.get("status")
    try:
        if rtype == "MedicationRequest":
            if obj.get("intent") not in C.ORDER_INTENTS or status != "active":
                return SkippedInput(rid, f"{what}: intent {obj.get('intent')!r} / status "
                                         f"{status!r} is not an active order")  # fmt: skip
            for d in obj.get("dosageInstruction") or []:
                for dr in d.get("doseAndRate") or []:
                    if "rateQuantity" in dr:
                        bounds = ((d.get("timing") or {}).get("repeat") or {}).get("boundsPeriod")
                        src = {"boundsPeriod": bounds} if bounds else obj
                        key = "boundsPeriod" if bounds else "authoredOn"
                        t = _time(src, (key,), what)
                        end = parse_time(bounds.get("end")) if bounds else None
                        return InputItem(rid, sha, "basal", t, _rate(dr["rateQuantity"], what), end)
            return SkippedInput(rid, f"{what}: an order without a basal rate is not a dose given")
        if status not in C.GIVEN_STATUSES:
            return SkippedInput(rid, f"{what}: status {status!r} is not a dose given")
        keys = ("effectiveDateTime", "effectivePeriod")
        t = _time(obj, keys, what)
        period = obj.get("effectivePeriod") or {}
        end = parse_time(period.get("end")) if period.get("end") else None
        dosages = obj.get("dosage")
        if rtype == "MedicationAdministration":
            dosages = [dosages] if isinstance(dosages, dict) else []
            pairs = [(d.get("dose"), d.get("rateQuantity")) for d in dosages]
        else:
            pairs = [(dr.get("doseQuantity"), dr.get("rateQuantity"))
                     for d in (dosages or []) for dr in (d.get("doseAndRate") or [])]  # fmt: skip
        for dose, rate in pairs:
            if rate is not None:
                return InputItem(rid, sha, "basal", t, _rate(rate, what), end)
            if dose is not None:
                return InputItem(rid, sha, "bolus", t, _dose(dose, what))
        return SkippedInput(rid, f"{what}: no dose or rate quantity")
    except (ValueError, FhirTimeError) as exc:
        return SkippedInput(rid, str(exc))


def classify(obj: dict[str, Any], rid: str, sha: str) -> InputItem | SkippedInput | None:
    """One resource -> an input value, a skipped input (with the reason), or None (not an input)."""
    if obj.get("resourceType") == "Observation":
        return _obs_item(obj, rid, sha)
    if obj.get("resourceType") in _INPUT_TYPES:
        return _med_item(obj, rid, sha)
    return None


def read_inputs(store: Store, twin_id: str) -> Inputs:
    """Every current input record of a patient twin, in the twin's units, time-sorted."""
    out = Inputs()
    for raw in store.originals(twin_id):
        obj = orjson.loads(raw)
        rtype = obj.get("resourceType")
        if rtype not in _INPUT_TYPES:
            continue
        if is_twin_output(obj):
            out.twin_outputs += 1
            continue
        sha = hashlib.sha256(raw.encode()).hexdigest()
        rid = f"{rtype}/{obj.get('id') or 'h-' + sha[:40]}"
        res = classify(obj, rid, sha)
        if isinstance(res, InputItem):
            out.items.append(res)
        elif isinstance(res, SkippedInput):
            out.skipped.append(res)
    out.items.sort(key=lambda i: (i.time, i.rid))
    return out


# -- hashes and persisted state -------------------------------------------------------------
def thread_input_hash(prev_state_hash: str | None, inputs: Iterable[tuple[str, str]]) -> str:
    """The documented input hash of one update (see the module docstring)."""
    lines = [HASH_SCHEME, f"prev {prev_state_hash or 'none'}"]
    lines += [f"{rid} {sha}" for rid, sha in sorted(set(inputs))]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def spec_hash(spec: Any) -> str:
    """SHA-256 of a spec as canonical JSON (sorted keys)."""
    return hashlib.sha256(orjson.dumps(spec, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _rng_json(rng: np.random.Generator) -> dict[str, Any]:
    st = rng.bit_generator.state
    return {**st, "state": {k: str(v) for k, v in st["state"].items()}}


def _rng_from(js: dict[str, Any]) -> np.random.Generator:
    rng = np.random.default_rng()
    rng.bit_generator.state = {**js, "state": {k: int(v) for k, v in js["state"].items()}}
    return rng


_HYPER = (
    "n_members",
    "obs_sd",
    "glucose_process_sd",
    "theta_walk_sd",
    "forecast_walk_sd",
    "seed",
    "disturbance_sd",
    "disturbance_tau_min",
    "error_horizon_min",
)


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f8").tobytes()).decode()


def _unb64(s: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype="<f8").astype(float)


def _filter_state(tw: GlucoseEnKF) -> dict[str, Any]:
    return {
        "ensemble": _b64(tw.ens_),
        "shape": list(tw.ens_.shape),
        "disturbance": _b64(tw.dist_),  # model-error state (mg/dL/min) per member
        "rng": _rng_json(tw.rng_),
        "bw_kg": float(tw.bw_[0]),
        "basal_u_min_prior": float(tw.ub_[0]),
        "hyper": {k: getattr(tw, k) for k in _HYPER},
    }


def restore_filter(payload: dict[str, Any]) -> GlucoseEnKF:
    """The EnKF of a ``twin.state`` payload, exactly as it was saved (ensemble and RNG)."""
    tw = GlucoseEnKF(**payload["hyper"])
    shape = tuple(payload["shape"])
    ens = _unb64(payload["ensemble"]).reshape(shape)
    m = shape[1]
    tw.n_twins_ = 1
    tw.bw_ = np.full(m, float(payload["bw_kg"]))
    tw.ub_ = np.full(m, float(payload["basal_u_min_prior"]))
    tw.ens_ = ens.copy()
    # payloads saved before the disturbance state existed restore it as zero
    tw.dist_ = _unb64(payload["disturbance"]) if "disturbance" in payload else np.zeros(m)
    tw.t_ = float(payload["minute"])
    tw.rng_ = _rng_from(payload["rng"])
    return tw


def state_events(store: Store, twin_id: str) -> list[dict[str, Any]]:
    """The twin's ``twin.state`` payloads since its last rebuild, oldest first."""
    out: list[dict[str, Any]] = []
    for ev in store.history(twin_id):
        if ev["kind"] == STATE_EVENT and ev["payload"].get("model") == MODEL_NAME:
            if ev["payload"].get("rebuild"):
                out = []
            out.append({**ev["payload"], "seq": ev["seq"]})
    return out


def load_twin(store: Store, twin_id: str) -> tuple[GlucoseEnKF, dict[str, Any]]:
    """The twin's current filter and its latest state payload (ThreadError if never synced)."""
    states = state_events(store, twin_id)
    if not states:
        raise ThreadError(f"twin {twin_id!r} has no glucose state yet: run "
                          "`healthtwin glucose sync` first")  # fmt: skip
    return restore_filter(states[-1]), states[-1]


# -- journaling of simulations --------------------------------------------------------------
def simulation_event(
    spec: dict[str, Any], seed: int | None, inputs_sha256: str, command: str, *,
    model: str = MODEL_NAME, model_version: str = MODEL_VERSION, twin_id: str | None = None,
    subject: str | None = None, extra: dict[str, Any] | None = None,
) -> Event:  # fmt: skip
    """A ``simulation.run`` event: spec, spec hash, seed, model version, inputs hash."""
    payload = orjson.loads(orjson.dumps({
        "spec": spec, "spec_sha256": spec_hash(spec), "seed": seed, "model": model,
        "model_version": model_version, "inputs_sha256": inputs_sha256,
        "code_version": __version__, "label": "simulated", **(extra or {}),
    }, option=orjson.OPT_SERIALIZE_NUMPY, default=str))  # fmt: skip
    prov = {"command": command, "code_version": __version__, "label": "simulated"}
    return Event(SIMULATION_EVENT, payload, prov, twin_id, subject)


def journal_whatif(
    store: Store, results: Sequence[Any], inputs_sha256: str, command: str,
    twin_id: str | None = None, subject: str | None = None,
) -> list[int]:  # fmt: skip
    """One ``simulation.run`` event per what-if result (care/glucose/whatif.py)."""
    events = []
    for r in results:
        extra = {"scenario": r.name, "minutes": int(r.t[-1]),
                 "p50_max_mg_dl": float(np.max(r.p50)), "p05_min_mg_dl": float(np.min(r.p05)),
                 "p95_max_mg_dl": float(np.max(r.p95))}  # fmt: skip
        events.append(simulation_event(
            {"kind": "glucose.whatif", **r.spec}, r.seed, inputs_sha256, command,
            model=r.model, model_version=r.version, twin_id=twin_id, subject=subject, extra=extra,
        ))  # fmt: skip
    return store.append_events(events)


# -- write-back through the spine's ingestion path -------------------------------------------
class WriteBackError(RuntimeError):
    """A resource the twin built did not pass the spine's validation (a bug, not bad input)."""


def write_back(
    store: Store, resources: Sequence[dict[str, Any]], events: Sequence[Event], source: str
) -> BatchResult:
    """Write resources as NDJSON through reader -> strict validation -> one store batch.

    The store keeps each line byte-exact and journals it like any inbound record; ``events``
    are appended in the same transaction. Nothing is written if any resource is rejected.
    """
    text = "".join(orjson.dumps(r).decode() + "\n" for r in resources)
    recs = list(read_text(source, text, ndjson=True))
    accepted, rejected = convert_records(recs, strict=True)
    if rejected:
        why = "; ".join(f"{r.locator}: {r.reason}" for r in rejected[:3])
        raise WriteBackError(f"{len(rejected)} write-back resource(s) rejected: {why}")
    return store.write_batch(accepted, [], events, source=source)


# -- the update -----------------------------------------------------------------------------
@dataclass
class SyncReport:
    """What one sync did. ``updated`` is False when there was no new glucose reading."""

    twin_id: str
    updated: bool = False
    sync_mode: str = ""
    origin: datetime | None = None
    minutes: tuple[int, int] = (0, 0)
    new: dict[str, int] = field(default_factory=dict)
    skipped: list[SkippedInput] = field(default_factory=list)
    late: list[SkippedInput] = field(default_factory=list)
    pending: int = 0
    twin_outputs_ignored: int = 0
    forecast: list[dict[str, Any]] = field(default_factory=list)
    p_hypo_30: float = float("nan")
    alerts: list[AlertEvent] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    input_hash: str = ""
    state_hash: str = ""
    simulated: bool = True


def _minute(t: datetime, t0: datetime) -> int:
    return int((t - t0).total_seconds() // 60)


def _basal_array(items: Sequence[InputItem], t0: datetime, lo: int, hi: int) -> np.ndarray:
    """Basal rate ([IU]/h) for minutes [lo, hi): the latest-starting record in force."""
    out = np.full(hi - lo, np.nan)
    for it in sorted(items, key=lambda i: (i.time, i.rid)):
        s = max(_minute(it.time, t0), lo)
        e = hi if it.end is None else min(_minute(it.end, t0), hi)
        if s < e:
            out[s - lo : e - lo] = it.value
    return out


@dataclass
class TwinView:
    """A twin's filter brought up to its latest glucose reading (nothing persisted).

    ``twin`` is the EnKF at minute ``m_end`` of the clock that starts at ``t0`` (UTC);
    ``origin`` = t0 + m_end. ``prev`` is the persisted state it started from (None: a fresh
    start from the prior), ``used`` the inputs it assimilated, ``pending`` the inputs dated at
    or after ``origin`` (future boluses, meals, basal changes), ``readings`` the new glucose
    readings (empty: the saved state was already current).
    """

    twin: GlucoseEnKF
    t0: datetime
    m0: int
    m_end: int
    prev: dict[str, Any] | None
    prev_hash: str | None
    consumed: set[str]
    readings: list[InputItem]
    used: list[InputItem]
    pending: list[InputItem]
    known_basal: list[InputItem]
    fallback_u_h: float
    late: list[SkippedInput]

    @property
    def origin(self) -> datetime:
        return self.t0 + timedelta(minutes=self.m_end)


def advance(
    inputs: Inputs,
    states: Sequence[dict[str, Any]],
    *,
    twin_id: str,
    n_members: int = 50,
    seed: int = 0,
    weight_kg: float | None = None,
    basal_u_h: float | None = None,
) -> TwinView | None:
    """Restore the latest of ``states`` (or start from the prior) and filter the new minutes.

    Pure: reads nothing and writes nothing (``sync`` persists; the server only forecasts).
    None when there is neither a saved state nor a glucose reading. ThreadError when a fresh
    start lacks a body weight or basal rate and none is given.
    """
    tid = twin_id
    prev = states[-1] if states else None
    consumed = {k for s in states for k in s.get("consumed", [])}
    fresh = [i for i in inputs.items if i.key not in consumed and i.kind != "weight"]
    glucose = [i for i in fresh if i.kind in ("cgm", "bg")]
    if prev is None:
        if not glucose:
            return None
        t0 = glucose[0].time.replace(second=0, microsecond=0)
        m0 = 0
    else:
        t0 = datetime.fromisoformat(prev["t0"])
        m0 = int(prev["minute"])
    used: list[InputItem] = []
    pending: list[InputItem] = []
    readings = [i for i in glucose if prev is None or _minute(i.time, t0) > m0]
    late = _late(fresh, t0, m0, prev is not None)
    if not readings:  # the saved state is current: what is dated after it is pending
        assert prev is not None
        pend = [i for i in fresh if i.kind not in ("cgm", "bg") and _minute(i.time, t0) >= m0]
        known = [i for i in inputs.items if i.kind == "basal" and i.key in consumed]
        tw = restore_filter(prev)
        return TwinView(tw, t0, m0, m0, prev, prev["state_hash"], consumed, [], [], pend, known,
                        basal_u_h if basal_u_h is not None else float(tw.ub_[0] * 60.0), late)  # fmt: skip
    m_end = max(_minute(i.time, t0) for i in readings)
    reading_keys = {i.key for i in readings}
    for i in fresh:
        m = _minute(i.time, t0)
        if i.kind in ("cgm", "bg"):
            if i.key in reading_keys:
                used.append(i)
        elif prev is not None and m < m0:
            continue  # late (reported)
        elif prev is None and m < 0 and i.kind != "basal":
            continue  # before the twin's first reading (reported)
        elif m < m_end:
            used.append(i)
        else:
            pending.append(i)
    used_keys = {i.key for i in used}
    known_basal = [i for i in inputs.items if i.kind == "basal"
                   and (i.key in consumed or i.key in used_keys)]  # fmt: skip
    # -- filter over the new minutes
    if prev is None:
        weights = [i for i in inputs.items if i.kind == "weight"]
        before = [i for i in weights if i.time <= t0 + timedelta(minutes=1)]
        w_item = before[-1] if before else (weights[0] if weights else None)
        bw = w_item.value if w_item is not None else weight_kg
        if bw is None:
            raise ThreadError(f"twin {tid}: no body weight Observation (LOINC 29463-7) in the "
                              "store; give weight_kg (--weight)")  # fmt: skip
        if w_item is not None:
            used.append(w_item)
        b0 = _basal_array(known_basal, t0, 0, 1)[0]
        if np.isnan(b0):
            if basal_u_h is None:
                raise ThreadError(f"twin {tid}: no insulin basal rate in force at {t0.isoformat()}"
                                  " (MedicationAdministration/Statement/Request with a rateQuantity"
                                  " in [IU]/h); give basal_u_h (--basal)")  # fmt: skip
            b0 = basal_u_h
        twin = GlucoseEnKF(n_members=n_members, seed=seed)
        twin.start(np.array([bw]), np.array([b0 / 60.0]), glucose0=np.array([readings[0].value]))
        prev_hash = None
    else:
        twin = restore_filter(prev)
        prev_hash = prev["state_hash"]
    fallback = basal_u_h if basal_u_h is not None else float(twin.ub_[0] * 60.0)
    span = m_end - m0
    basal = np.nan_to_num(_basal_array(known_basal, t0, m0, m_end), nan=fallback)
    ins = basal / 60.0
    cho = np.zeros(span)
    for i in used:
        k = _minute(i.time, t0) - m0
        if i.kind == "bolus":
            ins[k] += i.value
        elif i.kind == "carbs":
            cho[k] += i.value
    by_min: dict[int, list[float]] = {}
    for i in readings:
        by_min.setdefault(_minute(i.time, t0), []).append(i.value)
    if prev is None:
        for y in by_min.get(0, []):
            twin.assimilate(np.array([y]))
    for k in range(1, span + 1):
        twin.step(ins[k - 1 : k], cho[k - 1 : k])
        for y in by_min.get(m0 + k, []):
            twin.assimilate(np.array([y]))
    return TwinView(twin, t0, m0, m_end, prev, prev_hash, consumed, readings, used, pending,
                    known_basal, fallback, late)  # fmt: skip


def future_inputs(view: TwinView, hmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Insulin ([IU]/min) and carbohydrate (g/min), each (1, hmax), from ``view.origin``:
    the basal in force (records, else the fallback) plus the pending boluses and meals."""
    t0, m_end = view.t0, view.m_end
    pend_basal = [i for i in view.pending if i.kind == "basal"]
    f_basal = _basal_array(view.known_basal + pend_basal, t0, m_end, m_end + hmax)
    fi = (np.nan_to_num(f_basal, nan=view.fallback_u_h) / 60.0)[None, :]
    fc = np.zeros((1, hmax))
    for i in view.pending:
        k = _minute(i.time, t0) - m_end
        if 0 <= k < hmax and i.kind == "bolus":
            fi[0, k] += i.value
        elif 0 <= k < hmax and i.kind == "carbs":
            fc[0, k] += i.value
    return fi, fc


def sync(
    store: Store,
    twin_id: str,
    *,
    write_back_enabled: bool = False,
    now: datetime | None = None,
    n_members: int = 50,
    seed: int = 0,
    horizons: tuple[int, ...] = (30, 60, 120),
    level: float = 0.9,
    weight_kg: float | None = None,
    basal_u_h: float | None = None,
    rebuild: bool = False,
) -> SyncReport:
    """Update a patient twin from new store data; optionally write FHIR R4 back (two-way).

    ``weight_kg`` / ``basal_u_h`` are used only when the store has no body weight / basal
    rate record. ``rebuild`` discards the persisted state and re-runs the whole history.
    """
    tw_info = store.twin(twin_id)
    if tw_info["kind"] != "patient":
        raise ThreadError(f"twin {twin_id!r} is a {tw_info['kind']} twin, not a patient twin")
    tid, subject = str(tw_info["twin_id"]), str(tw_info["subject"])
    now = now or datetime.now(UTC)
    inputs = read_inputs(store, tid)
    rep = SyncReport(tid, sync_mode=str(tw_info["sync_mode"]), skipped=list(inputs.skipped),
                     twin_outputs_ignored=inputs.twin_outputs)  # fmt: skip
    states = [] if rebuild else state_events(store, tid)
    view = advance(inputs, states, twin_id=tid, n_members=n_members, seed=seed,
                   weight_kg=weight_kg, basal_u_h=basal_u_h)  # fmt: skip
    if view is None:
        return rep
    rep.late = view.late
    if not view.readings:
        return rep
    twin, t0, m0, m_end, prev = view.twin, view.t0, view.m0, view.m_end, view.prev
    prev_hash, consumed, used = view.prev_hash, view.consumed, view.used
    pending, readings = view.pending, view.readings
    used_keys = {i.key for i in used}
    # -- forecast from the last reading (the filter's RNG is restored afterwards)
    hmax = max(horizons)
    origin = view.origin
    rng_saved = twin.rng_.bit_generator.state
    fi, fc = future_inputs(view, hmax)
    s_cgm = twin.forecast(hmax, fi, fc)[0]
    s_g = twin.forecast(hmax, fi, fc, include_sensor_noise=False)[0]
    twin.rng_.bit_generator.state = rng_saved
    qs = [(1 - level) / 2, 0.5, (1 + level) / 2]
    for h in horizons:
        lo, med, hi = (float(v) for v in np.quantile(s_cgm[:, h], qs))
        rep.forecast.append({"horizon_min": h, "time": origin + timedelta(minutes=h),
                             "median_mg_dl": med, "low_mg_dl": lo, "high_mg_dl": hi,
                             "level": level, "simulated": True})  # fmt: skip
    w30 = s_g[:, : min(30, hmax) + 1]
    p_hypo = float((w30.min(axis=1) < HYPO_MG_DL).mean())
    p_hyper = float((w30.max(axis=1) > HYPER_MG_DL).mean())
    rep.p_hypo_30 = p_hypo
    # -- alerts
    last_alert = dict(prev.get("last_alert", {})) if prev else {}
    for kind, p, sign, thr in (("hypo-predicted", p_hypo, "<", HYPO_MG_DL),
                               ("hyper-predicted", p_hyper, ">", HYPER_MG_DL)):  # fmt: skip
        if p >= ALERT_P and m_end - last_alert.get(kind, -(10**9)) > REFRACTORY_MIN:
            rep.alerts.append(AlertEvent(0, float(m_end), kind, p,
                              f"P({sign} {thr:g} mg/dL within 30 min) = {p:.2f} "
                              "(simulated digital-twin forecast)"))  # fmt: skip
            last_alert[kind] = m_end
    cgm_min: dict[int, float] = {}
    if prev is not None and prev.get("last_reading"):
        cgm_min[int(prev["last_reading"][0])] = float(prev["last_reading"][1])
    for i in readings:
        if i.kind == "cgm":
            cgm_min[_minute(i.time, t0)] = i.value
    tt = np.array(sorted(cgm_min), dtype=float)
    for ev in sensor_alerts(tt, np.array([cgm_min[int(t)] for t in tt])) if tt.size else []:
        if prev is None or ev.time_min > m0:
            rep.alerts.append(ev)
    # -- recommendations
    bp = personalised_bolus_parameters(twin)
    cr = tuple(float(v[0]) for v in bp["CR"])
    cf = tuple(float(v[0]) for v in bp["CF"])
    careplan_prev = prev.get("careplan") if prev else None
    new_careplan = careplan_prev is None or (
        abs(cr[0] / careplan_prev[0] - 1) > CAREPLAN_CHANGE
        or abs(cf[0] / careplan_prev[1] - 1) > CAREPLAN_CHANGE
    )
    med60 = float(np.median(s_cgm[:, min(60, hmax)]))
    known = consumed | used_keys | {i.key for i in pending}
    recent_bolus = any(i.kind == "bolus" and m_end - BOLUS_QUIET_MIN <= _minute(i.time, t0)
                       and i.key in known for i in inputs.items)  # fmt: skip
    correction = 0.0
    if med60 > CORRECTION_ABOVE and p_hypo < 0.05 and not recent_bolus:
        correction = float(InsulinPump.named("Insulet").bolus(
            np.array([(med60 - CORRECTION_TARGET) / cf[0]]))[0])  # fmt: skip
    # -- hashes, outputs, events
    consumed_now = sorted({(i.rid, i.sha256) for i in used})
    ih = thread_input_hash(prev_hash, consumed_now)
    model = F.ModelRef(MODEL_NAME, MODEL_VERSION, ih)
    patient = subject
    outputs: list[dict[str, Any]] = []
    if write_back_enabled:
        for r in rep.forecast:
            outputs.append(F.forecast_observation(patient, origin, r["horizon_min"],
                           r["median_mg_dl"], r["low_mg_dl"], r["high_mg_dl"], level, model))  # fmt: skip
        outputs.append(F.hypo_risk_assessment(patient, origin, p_hypo, min(30, hmax), model))
        for ev in rep.alerts:
            outputs.append(F.alert_detected_issue(patient, t0, ev, model))
        if correction >= 0.05:
            reason = (f"correction: predicted glucose {med60:.0f} mg/dL in 60 min, CF "
                      f"{cf[0]:.1f} mg/dL/[IU] (simulated digital twin)")  # fmt: skip
            outputs.append(F.insulin_proposal(patient, origin, correction, reason, model))
        if new_careplan:
            outputs.append(F.bolus_parameters_careplan(patient, origin, cr, cf, model))  # type: ignore[arg-type]
        outputs.append(F.provenance(outputs, now, model, inputs=[r for r, _ in consumed_now]))
    rep.written = [f"{o['resourceType']}/{o['id']}" for o in outputs]
    last_cgm = max(cgm_min) if cgm_min else None
    state = {
        "model": MODEL_NAME, "model_version": MODEL_VERSION, "scheme": HASH_SCHEME,
        "t0": t0.isoformat(), "minute": m_end, "origin": origin.isoformat(),
        **_filter_state(twin),
        "last_reading": None if last_cgm is None else [last_cgm, cgm_min[last_cgm]],
        "last_alert": last_alert,
        "careplan": [cr[0], cf[0]] if (new_careplan and write_back_enabled) else careplan_prev,
        "rebuild": bool(rebuild),
        "prev_state_hash": prev_hash, "input_hash": ih,
        "consumed": [f"{r} {s}" for r, s in consumed_now],
    }  # fmt: skip
    state["state_hash"] = spec_hash(state)
    info = {
        "new": _count(used), "pending": len(pending), "late": [s.rid for s in rep.late],
        "skipped": [[s.rid, s.reason] for s in rep.skipped], "outputs": rep.written,
        "write_back": write_back_enabled,
    }  # fmt: skip
    state_ev = Event(STATE_EVENT, {**state, **info},
                     {"source": SOURCE, "model": f"{MODEL_NAME} {MODEL_VERSION}",
                      "label": "simulated"}, tid, subject)  # fmt: skip
    spec = {"kind": "glucose.sync", "horizons": list(horizons), "level": level,
            "n_members": twin.n_members, "origin": origin.isoformat(),
            "write_back": write_back_enabled}  # fmt: skip
    sim_ev = simulation_event(spec, twin.seed, ih, SOURCE, twin_id=tid, subject=subject,
                              extra={"state_sha256": state["state_hash"], "outputs": rep.written,
                                     "p_hypo_30": p_hypo, "forecast": rep.forecast})  # fmt: skip
    if write_back_enabled:
        write_back(store, outputs, [state_ev, sim_ev], f"{SOURCE} {tid}")
        if tw_info["sync_mode"] != SyncMode.TWIN.value:  # two-way from the first write-back
            store.set_sync_mode(tid, SyncMode.TWIN.value)
            rep.sync_mode = SyncMode.TWIN.value
    else:
        store.append_events([state_ev, sim_ev])
    rep.updated = True
    rep.origin = origin
    rep.minutes = (m0, m_end)
    rep.new = _count(used)
    rep.pending = len(pending)
    rep.input_hash = ih
    rep.state_hash = state["state_hash"]
    return rep


def _count(items: Sequence[InputItem]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in items:
        out[i.kind] = out.get(i.kind, 0) + 1
    return out


def _late(fresh: Sequence[InputItem], t0: datetime, m0: int, has_prev: bool) -> list[SkippedInput]:
    """Unconsumed inputs dated before the twin's clock (use ``rebuild`` to include them)."""
    out = []
    for i in fresh:
        m = _minute(i.time, t0)
        if has_prev and (
            (i.kind in ("cgm", "bg") and m <= m0) or (i.kind not in ("cgm", "bg") and m < m0)
        ):
            out.append(
                SkippedInput(
                    i.rid,
                    f"{i.kind} dated {i.time.isoformat()} arrived after "
                    "the twin had passed that time (rebuild to include it)",
                )
            )
        elif not has_prev and m < 0 and i.kind in ("bolus", "carbs"):
            out.append(
                SkippedInput(
                    i.rid,
                    f"{i.kind} dated {i.time.isoformat()} precedes the "
                    "twin's first glucose reading",
                )
            )
    return out
