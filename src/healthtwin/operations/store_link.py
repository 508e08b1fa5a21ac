"""The facility twin on top of the spine's public Store API.

* :func:`encounters_from_store`: Encounter history of a store -> calibration frame.
* :func:`default_location_map`: Location references of active Encounters -> (station, class,
  step) of a spec, by keywords in the reference, the Location's name and type (documented in
  ``docs/facility-live.md``); an explicit map file overrides it.
* :func:`census_from_store`: the live census (Encounters arrived / triaged / in-progress /
  onleave) for :func:`healthtwin.operations.live.forecast`.
* :func:`journal_run`: append a :class:`RunRecord` as a ``simulation.run`` journal event.

Only ``Store.iter_resources`` and ``Store.append_events`` are used (no store internals).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import pandas as pd

from healthtwin.operations.calibrate import (
    ACTIVE_STATUSES,
    CalibrationError,
    encounters_from_fhir,
)
from healthtwin.operations.live import Census, census_from_fhir
from healthtwin.operations.records import RunRecord
from healthtwin.operations.spec import FacilitySpec, SpecError
from healthtwin.twin.model import Event
from healthtwin.twin.store.base import Store

RUN_EVENT_KIND = "simulation.run"
WAIT_WORDS = ("wait", "waiting", "reception", "arrival")
WARD_WORDS = ("ward", "inpatient", "bed", "bedroom")


def encounters_from_store(store: Store) -> pd.DataFrame:
    """All current Encounter resources of ``store`` as the calibration frame."""
    df = encounters_from_fhir(store.iter_resources("Encounter"))
    if df.empty:
        raise CalibrationError("store: no Encounter resources with period.start to calibrate from")
    return df


def _active(store: Store) -> list[dict[str, Any]]:
    return [e for e in store.iter_resources("Encounter") if e.get("status") in ACTIVE_STATUSES]


def _loc_ref(enc: Mapping[str, Any]) -> str | None:
    locs = enc.get("location") or []
    if not locs:
        return None
    loc = locs[-1].get("location") or {}
    ref = loc.get("reference") or loc.get("display")
    return str(ref) if ref else None


def _locations(store: Store) -> dict[str, Mapping[str, Any]]:
    """Location resources keyed by ``Location/<id>`` and by each identifier value."""
    out: dict[str, Mapping[str, Any]] = {}
    for r in store.iter_resources("Location"):
        out[f"Location/{r.get('id')}"] = r
        for ident in r.get("identifier") or []:
            if ident.get("value"):
                out[str(ident["value"])] = r
    return out


def _describe(ref: str, loc: Mapping[str, Any] | None) -> str:
    parts = [ref]
    if loc:
        parts.append(str(loc.get("name") or ""))
        for t in loc.get("type") or []:
            parts.append(str(t.get("text") or ""))
            parts += [str(c.get("display") or c.get("code") or "") for c in t.get("coding") or []]
        pt = loc.get("physicalType") or {}
        parts += [str(c.get("display") or c.get("code") or "") for c in pt.get("coding") or []]
    return " ".join(parts).lower()


def _tokens(text: str) -> set[str]:
    return set(re.split(r"[^a-z0-9_]+", text))


def map_location(
    spec: FacilitySpec, ref: str, loc: Mapping[str, Any] | None
) -> tuple[str, str, str]:
    """Default (station, class, step) for one Location reference.

    Rules, first match wins, on the lower-cased words of the reference, Location.name, type
    and physicalType: (1) a spec station name (e.g. ``cubicles``) -> that station; (2) a
    waiting word (wait, reception, arrival) -> the first step of the main class (largest
    share); (3) a ward word (ward, inpatient, bed) -> the first station of kind ``ward``.
    The class is the one with the largest share among those with a step at the station; the
    step is that class's first step there. Anything else raises :class:`SpecError`.
    """
    text = _describe(ref, loc)
    words = _tokens(text)
    main = max(spec.classes, key=lambda c: spec.classes[c].share)
    station: str | None = next((s for s in spec.stations if s.lower() in words), None)
    if station is None and words & set(WAIT_WORDS):
        first = spec.classes[main].pathway[0]
        return (first.station, main, first.name)
    if station is None and words & set(WARD_WORDS):
        station = next((s for s, st in spec.stations.items() if st.kind == "ward"), None)
    if station is None:
        raise SpecError(
            f"location {ref!r} ({text!r}): no station of spec {spec.name!r} "
            f"({', '.join(spec.stations)}) or waiting/ward word matches; give --location-map"
        )
    users = [c for c in spec.classes if any(s.station == station for s in spec.classes[c].pathway)]
    if not users:
        raise SpecError(f"location {ref!r}: station {station!r} is on no class pathway")
    cls = max(users, key=lambda c: spec.classes[c].share)
    step = next(s.name for s in spec.classes[cls].pathway if s.station == station)
    return (station, cls, step)


def default_location_map(
    store: Store, spec: FacilitySpec, encounters: Iterable[Mapping[str, Any]] | None = None
) -> dict[str, tuple[str, str, str]]:
    """Map every Location reference of the active Encounters with :func:`map_location`."""
    locs = _locations(store)
    out: dict[str, tuple[str, str, str]] = {}
    for e in encounters if encounters is not None else _active(store):
        ref = _loc_ref(e)
        if ref is None or ref in out:
            continue
        key = ref.split("|")[-1] if "|" in ref else ref
        out[ref] = map_location(spec, ref, locs.get(ref) or locs.get(key))
    return out


def census_from_store(
    store: Store,
    spec: FacilitySpec,
    location_map: Mapping[str, tuple[str, str, str]] | None = None,
    as_of: datetime | None = None,
) -> Census:
    """Census from the store's active Encounters.

    ``as_of`` defaults to the latest arrival or location start among them (the last thing the
    store knows); ``location_map`` defaults to :func:`default_location_map`.
    """
    active = _active(store)
    if not active:
        raise SpecError("store: no active Encounter (arrived/triaged/in-progress/onleave)")
    lm = location_map if location_map is not None else default_location_map(store, spec, active)
    if as_of is None:
        times: list[pd.Timestamp] = []
        for e in active:
            for v in [(e.get("period") or {}).get("start")] + [
                (x.get("period") or {}).get("start") for x in e.get("location") or []
            ]:
                if v:
                    times.append(pd.Timestamp(v))
        if not times:
            raise SpecError("store: active Encounters carry no period.start; give --as-of")
        as_of = max(times).to_pydatetime()
    return census_from_fhir(active, lm, as_of)


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) or math.isinf(v) else v


def record_from_table(
    spec: FacilitySpec,
    seed: int,
    replications: int,
    command: str,
    table: pd.DataFrame,
    key: str | list[str],
) -> RunRecord:
    """Run record whose KPIs are the numeric columns of ``table``, one entry per row
    (named by the ``key`` column(s) joined with ``/``)."""
    keys = [key] if isinstance(key, str) else key
    kpis: dict[str, dict[str, float | None]] = {}
    for _, row in table.iterrows():
        name = "/".join(str(row[k]) for k in keys)
        kpis[name] = {
            str(c): _num(v) for c, v in row.items() if c not in keys and not isinstance(v, str)
        }
    return RunRecord(
        spec_name=spec.name,
        spec_hash=spec.digest(),
        spec=spec.model_dump(mode="json"),
        seed=seed,
        replications=replications,
        command=command,
        kpis=kpis,
    )


def journal_run(
    store: Store,
    record: RunRecord,
    twin_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> int:
    """Append ``record`` as a ``simulation.run`` event; return its journal seq."""
    payload = record.model_dump(mode="json")
    if extra:
        payload.update(extra)
    ev = Event(
        kind=RUN_EVENT_KIND,
        payload=payload,
        provenance={
            "source": f"healthtwin ops {record.command}",
            "code_version": record.code_version,
            "simulated": True,
        },
        twin_id=twin_id,
    )
    seqs = store.append_events([ev])
    return seqs[0]
