"""``healthtwin glucose``: simulate, personalize, forecast, whatif, control (CSV inputs).

CSV inputs (one patient): ``--cgm`` columns time_min, glucose_mg_dl; ``--insulin`` columns
time_min, units ([IU] delivered in that minute, boluses; basal comes from ``--basal`` in U/h);
``--carbs`` columns time_min, grams. Every output is labelled simulated.
"""

from __future__ import annotations

import io
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np
import yaml

if TYPE_CHECKING:  # pandas is imported inside the commands (fast CLI start-up)
    import pandas as pd


def _parse_pairs(values: tuple[str, ...], what: str, allow_auto: bool = False) -> list[list[Any]]:
    out: list[list[Any]] = []
    for v in values:
        try:
            a, b = v.split(":")
            minute = int(a)
            amount: Any = "auto" if (allow_auto and b == "auto") else float(b)
        except ValueError as exc:
            form = "MIN:UNITS|auto" if allow_auto else "MIN:GRAMS"
            raise click.BadParameter(f"{v!r} is not {form}", param_hint=what) from exc
        out.append([minute, amount])
    return out


def _emit(df: pd.DataFrame, fmt: str, output: str | None) -> None:
    text = df.to_csv(index=False) if fmt == "csv" else df.to_json(orient="records", lines=True)
    if output:
        Path(output).write_text(text)
    else:
        sys.stdout.write(text)


def _simulate(
    patients: str,
    hours: float,
    meal: tuple[str, ...],
    bolus: tuple[str, ...],
    basal: str,
    seed: int,
    noise: bool,
    scenario: str | None,
    sensor: str,
    hypo_risk: bool,
    meal_dose: str,
) -> pd.DataFrame:
    import pandas as pd

    from healthtwin.models.physiology.devices import CGMSensor
    from healthtwin.models.physiology.uva_padova import UVAPadovaParams, simulate_uva_padova

    names = [p.strip() for p in patients.split(",") if p.strip()]
    try:
        params = UVAPadovaParams.from_names(names)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--patients") from exc
    spec: dict[str, Any] = {}
    if scenario:
        spec = yaml.safe_load(Path(scenario).read_text()) or {}
        if not isinstance(spec, dict):
            raise click.BadParameter("scenario file must be a mapping", param_hint="--scenario")
    hours = float(spec.get("hours", hours))
    t = int(round(hours * 60))
    if not 0 < t <= 60 * 24 * 14:
        raise click.BadParameter(f"{hours} h is outside (0, 336] h", param_hint="--hours")
    meals_l = spec.get("meals", []) + _parse_pairs(meal, "--meal")
    bolus_l = spec.get("boluses", []) + _parse_pairs(bolus, "--bolus", allow_auto=True)
    n = params.n
    meals = np.zeros((n, t))
    if basal == "auto":
        ins = np.repeat(params.basal_u_per_min[:, None], t, axis=1)
    else:
        try:
            ins = np.full((n, t), float(basal) / 60.0)
        except ValueError as exc:
            raise click.BadParameter("give 'auto' or a rate in U/h", param_hint="--basal") from exc
    for k, r in sorted(spec.get("basal", []), key=lambda x: x[0]):
        ins[:, int(k) :] = float(r) / 60.0
    for k, g in meals_l:
        if not 0 <= int(k) < t:
            raise click.BadParameter(f"meal at minute {k} outside [0, {t})", param_hint="--meal")
        meals[:, int(k)] += float(g)
    for k, u in bolus_l:
        if not 0 <= int(k) < t:
            raise click.BadParameter(f"bolus at minute {k} outside [0, {t})", param_hint="--bolus")
        ins[:, int(k)] += meals[:, int(k)] / params.quest["CR"] if u == "auto" else float(u)
    res = simulate_uva_padova(
        params,
        meals,
        ins,
        hypo_risk=hypo_risk,
        meal_dose="announced" if meal_dose == "announced" else "eaten",
    )
    cgm_sensor = CGMSensor.named(sensor)
    ts, cgm = cgm_sensor.measure(res.t, res.gsub, np.random.default_rng(seed), noise=noise)
    # zero-order hold of the sensor reading between samples (as a CGM display does)
    held = cgm[:, np.clip(np.searchsorted(ts, res.t[:-1], side="right") - 1, 0, None)]
    return pd.DataFrame(
        {
            "time_min": np.tile(res.t[:-1], n).astype(int),
            "patient": np.repeat(names, t),
            "bg_mg_dl": res.bg[:, :-1].ravel().round(4),
            "gsub_mg_dl": res.gsub[:, :-1].ravel().round(4),
            "cgm_mg_dl": held.ravel().round(4),
            "insulin_u_min": res.insulin.ravel().round(6),
            "cho_g_min": res.cho.ravel().round(4),
            "simulated": True,
        }
    )


def _records(cgm: str, insulin: str | None, carbs: str | None, basal_u_h: float):
    """Minute-grid arrays (1, T) from the CSV files."""
    import pandas as pd

    c = pd.read_csv(cgm)
    for col in ("time_min", "glucose_mg_dl"):
        if col not in c.columns:
            raise click.BadParameter(f"{cgm}: missing column {col!r}", param_hint="--cgm")
    t = int(c.time_min.max()) + 1
    y = np.full((1, t), np.nan)
    y[0, c.time_min.astype(int).to_numpy()] = c.glucose_mg_dl.to_numpy(dtype=float)
    ins = np.full((1, t), basal_u_h / 60.0)
    cho = np.zeros((1, t))
    for path, arr, col, hint in (
        (insulin, ins, "units", "--insulin"),
        (carbs, cho, "grams", "--carbs"),
    ):
        if path:
            d = pd.read_csv(path)
            if {"time_min", col} - set(d.columns):
                raise click.BadParameter(f"{path}: needs columns time_min,{col}", param_hint=hint)
            d = d[d.time_min < t]
            np.add.at(arr[0], d.time_min.astype(int).to_numpy(), d[col].to_numpy(dtype=float))
    return y, ins, cho


_JOURNAL = click.option(
    "--store",
    "store_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="DuckDB store: journal the run as a simulation.run event",
)


def _open_store(path: str) -> Any:
    from healthtwin.cli.spine import _open

    return _open(path)


def _file_hashes(*paths: str | None) -> dict[str, str]:
    import hashlib

    return {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths if p}


def _journal(store_path: str | None, spec: dict[str, Any], seed: int, inputs_sha: str,
             command: str, extra: dict[str, Any]) -> None:  # fmt: skip
    """Append a simulation.run event (spec, seed, model version, inputs hash) when --store."""
    if not store_path:
        return
    from healthtwin.care.glucose.thread import simulation_event

    store = _open_store(store_path)
    try:
        (seq,) = store.append_events([simulation_event(spec, seed, inputs_sha, command,
                                                       extra=extra)])  # fmt: skip
    finally:
        store.close()
    click.echo(f"journaled simulation.run as event {seq} in {store_path}", err=True)


def _stored_twin(store_path: str, twin_id: str) -> tuple[Any, dict[str, Any], str, str]:
    from healthtwin.care.glucose.thread import ThreadError, load_twin
    from healthtwin.twin.store.base import StoreError

    store = _open_store(store_path)
    try:
        info = store.twin(twin_id)
        twin, state = load_twin(store, str(info["twin_id"]))
    except (StoreError, ThreadError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()
    return twin, state, str(info["twin_id"]), str(info["subject"])


_INPUTS = [
    click.option(
        "--cgm", required=True, type=click.Path(exists=True), help="CSV time_min,glucose_mg_dl"
    ),
    click.option(
        "--insulin", type=click.Path(exists=True), help="CSV time_min,units ([IU] boluses)"
    ),
    click.option("--carbs", type=click.Path(exists=True), help="CSV time_min,grams"),
    click.option("--weight", type=float, required=True, help="body weight (kg)"),
    click.option("--basal", "basal_u_h", type=float, required=True, help="basal rate (U/h)"),
    click.option("--seed", type=int, default=0, show_default=True),
]


def _inputs(f: Any) -> Any:
    for opt in reversed(_INPUTS):
        f = opt(f)
    return f


def _fitted_twin(
    cgm: str, insulin: str | None, carbs: str | None, weight: float, basal_u_h: float, seed: int
):
    from healthtwin.care.glucose.personalize import GlucoseEnKF

    y, ins, cho = _records(cgm, insulin, carbs, basal_u_h)
    twin = GlucoseEnKF(seed=seed).fit(y, ins, cho, np.array([weight]), np.array([basal_u_h / 60.0]))
    return twin, y, ins, cho


def _pd() -> Any:
    """pandas, imported on first use (importing it costs ~0.25 s of every CLI start-up)."""
    import pandas as pd

    return pd


def register(group: click.Group) -> None:
    """Add the ``glucose`` command group to the top-level CLI."""

    @group.group("glucose")
    def glucose() -> None:
        """Glucose patient twin (UVA/Padova virtual patients, Bergman personal twins)."""

    @glucose.command("simulate")
    @click.option(
        "--patients",
        default="adult#001",
        show_default=True,
        help="comma-separated virtual patients",
    )
    @click.option("--hours", type=float, default=6.0, show_default=True, help="duration (h)")
    @click.option("--meal", multiple=True, help="MIN:GRAMS (repeatable)")
    @click.option("--bolus", multiple=True, help="MIN:UNITS or MIN:auto (= meal/CR)")
    @click.option("--basal", default="auto", show_default=True, help="'auto' (u2ss·BW/6000) or U/h")
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--noise/--no-noise", default=True, show_default=True, help="CGM sensor noise")
    @click.option("--scenario", type=click.Path(exists=True), help="YAML/JSON scenario spec")
    @click.option("--sensor", default="Dexcom", show_default=True)
    @click.option("--hypo-risk", is_flag=True, help="S2013 hypoglycaemia term")
    @click.option(
        "--meal-dose", type=click.Choice(["eaten", "announced"]), default="eaten", show_default=True
    )
    @click.option(
        "--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True
    )
    @click.option("--output", "-o", type=click.Path(), help="file (default stdout)")
    def simulate(
        patients: str, hours: float, meal: tuple[str, ...], bolus: tuple[str, ...], basal: str,
        seed: int, noise: bool, scenario: str | None, sensor: str, hypo_risk: bool,
        meal_dose: str, fmt: str, output: str | None,
    ) -> None:  # fmt: skip
        """Simulate virtual patients: one row per patient-minute (simulated)."""
        df = _simulate(
            patients, hours, meal, bolus, basal, seed, noise, scenario, sensor, hypo_risk, meal_dose
        )
        _emit(df, fmt, output)

    @glucose.command("personalize")
    @_inputs
    @click.option(
        "--method", type=click.Choice(["enkf", "pf", "map"]), default="enkf", show_default=True
    )
    def personalize(cgm: str, insulin: str | None, carbs: str | None, weight: float,
                    basal_u_h: float, seed: int, method: str) -> None:  # fmt: skip
        """Estimate the twin's parameters (mean and 95 % interval) from CSV records."""
        from healthtwin.care.glucose.personalize import GlucoseParticleFilter, map_fit

        y, ins, cho = _records(cgm, insulin, carbs, basal_u_h)
        bw, ub = np.array([weight]), np.array([basal_u_h / 60.0])
        if method == "map":
            ests = map_fit(y[0], ins[0], cho[0], weight, basal_u_h / 60.0).estimates
        else:
            from healthtwin.care.glucose.personalize import GlucoseEnKF

            cls = GlucoseEnKF if method == "enkf" else GlucoseParticleFilter
            ests = cls(seed=seed).fit(y, ins, cho, bw, ub).estimates()
        rows = [{"parameter": e.name, "unit": e.unit, "mean": float(e.mean[0]), "low_95": float(e.low[0]),
                 "high_95": float(e.high[0]), "method": method} for e in ests]  # fmt: skip
        _emit(_pd().DataFrame(rows), "csv", None)

    @glucose.command("forecast")
    @_inputs
    @click.option("--horizons", default="30,60,120", show_default=True, help="minutes ahead")
    @click.option("--level", type=float, default=0.9, show_default=True)
    @click.option("--patient-ref", default="Patient/example", show_default=True)
    @click.option("--fhir", is_flag=True, help="emit FHIR R4 Observations + Provenance (JSON)")
    @_JOURNAL
    def forecast(cgm: str, insulin: str | None, carbs: str | None, weight: float, basal_u_h: float,
                 seed: int, horizons: str, level: float, patient_ref: str, fhir: bool,
                 store_path: str | None) -> None:  # fmt: skip
        """Forecast glucose after the last reading with prediction intervals (simulated)."""
        from healthtwin.care.glucose import fhir as F

        hs = [int(h) for h in horizons.split(",")]
        twin, y, ins, cho = _fitted_twin(cgm, insulin, carbs, weight, basal_u_h, seed)
        s = twin.forecast(max(hs), np.full((1, max(hs)), basal_u_h / 60.0), np.zeros((1, max(hs))))
        qs = [(1 - level) / 2, 0.5, (1 + level) / 2]
        rows = []
        for h in hs:
            lo, med, hi = np.quantile(s[0, :, h], qs)
            rows.append({"horizon_min": h, "median_mg_dl": med, "low_mg_dl": lo, "high_mg_dl": hi,
                         "level": level, "simulated": True})  # fmt: skip
        spec = {"kind": "glucose.forecast", "horizons": hs, "level": level, "weight_kg": weight,
                "basal_u_h": basal_u_h, "files": _file_hashes(cgm, insulin, carbs)}  # fmt: skip
        _journal(store_path, spec, seed, F.input_hash(y, ins, cho, weight),
                 "healthtwin glucose forecast", {"forecast": rows})  # fmt: skip
        if not fhir:
            _emit(_pd().DataFrame(rows), "csv", None)
            return
        model = F.ModelRef(
            "healthtwin-glucose-enkf", _model_version(), F.input_hash(y, ins, cho, weight)
        )
        now = datetime.now(UTC)
        res = [F.forecast_observation(patient_ref, now, r["horizon_min"], r["median_mg_dl"],
                                      r["low_mg_dl"], r["high_mg_dl"], level, model) for r in rows]  # fmt: skip
        res.append(F.provenance(res, now, model))
        click.echo(json.dumps({"resourceType": "Bundle", "type": "collection",
                               "entry": [{"resource": r} for r in res]}, indent=1))  # fmt: skip

    @glucose.command("whatif")
    @click.option(
        "--scenario", "scenarios", multiple=True, required=True, type=click.Path(exists=True)
    )
    @click.option("--weight", type=float, default=70.0, show_default=True, help="kg")
    @click.option("--basal", "basal_u_h", type=float, default=1.0, show_default=True, help="U/h")
    @click.option(
        "--cr", type=float, default=None,
        help="carb ratio g/U [default: the twin's personalised CR with --twin, else 10]",
    )  # fmt: skip
    @click.option("--glucose", type=float, default=130.0, show_default=True, help="start mg/dL")
    @click.option("--cgm", type=click.Path(exists=True), help="personalise first from this CSV")
    @click.option("--insulin", type=click.Path(exists=True))
    @click.option("--carbs", type=click.Path(exists=True))
    @click.option("--seed", type=int, default=0, show_default=True)
    @_JOURNAL
    @click.option("--twin", "twin_id", help="start from this twin's synced state (needs --store)")
    def whatif(scenarios: tuple[str, ...], weight: float, basal_u_h: float, cr: float | None,
               glucose: float,
               cgm: str | None, insulin: str | None, carbs: str | None, seed: int,
               store_path: str | None, twin_id: str | None) -> None:  # fmt: skip
        """Run scenario specs side by side: CGM quantiles per minute (simulated).

        With --store every scenario run is journaled as a simulation.run event; with --twin
        the scenarios start from the twin's persisted state (`healthtwin glucose sync`).
        """
        from healthtwin.care.glucose import fhir as F
        from healthtwin.care.glucose.personalize import GlucoseEnKF
        from healthtwin.care.glucose.whatif import run_whatif

        specs = [yaml.safe_load(Path(s).read_text()) for s in scenarios]
        for path, spec in zip(scenarios, specs, strict=True):
            if not isinstance(spec, dict):
                raise click.BadParameter(
                    f"{path}: a scenario is a mapping", param_hint="--scenario"
                )
        subject = None
        if twin_id:
            if not store_path:
                raise click.BadParameter("--twin needs --store", param_hint="--twin")
            twin, state, twin_id, subject = _stored_twin(store_path, twin_id)
            twin.seed = seed
            twin.rng_ = np.random.default_rng(seed)
            inputs_sha = str(state["state_hash"])
        elif cgm:
            twin, y, ins, cho = _fitted_twin(cgm, insulin, carbs, weight, basal_u_h, seed)
            inputs_sha = F.input_hash(y, ins, cho, weight)
        else:
            twin = GlucoseEnKF(seed=seed).start(np.array([weight]), np.array([basal_u_h / 60.0]),
                                                np.array([glucose]))  # fmt: skip
            inputs_sha = F.input_hash({"weight_kg": weight, "basal_u_h": basal_u_h,
                                       "glucose_mg_dl": glucose})  # fmt: skip
        if cr is None and twin_id:
            from healthtwin.care.glucose.control import personalised_bolus_parameters

            cr = float(personalised_bolus_parameters(twin)["CR"][0][0])
        try:
            res = run_whatif(twin, specs, np.array([10.0 if cr is None else cr]))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--scenario") from exc
        if store_path:
            from healthtwin.care.glucose.thread import journal_whatif

            store = _open_store(store_path)
            try:
                seqs = journal_whatif(store, res, inputs_sha, "healthtwin glucose whatif",
                                      twin_id, subject)  # fmt: skip
            finally:
                store.close()
            click.echo(f"journaled {len(seqs)} simulation.run event(s) in {store_path}", err=True)
        frames = [_pd().DataFrame({"scenario": r.name, "time_min": r.t.astype(int), "p05_mg_dl": r.p05[0],
                                "p50_mg_dl": r.p50[0], "p95_mg_dl": r.p95[0], "seed": seed,
                                "model": f"{r.model} {r.version}", "simulated": True}) for r in res]  # fmt: skip
        _emit(_pd().concat(frames), "csv", None)

    @glucose.command("control")
    @_inputs
    @click.option("--patient-ref", default="Patient/example", show_default=True)
    @click.option("--fhir", is_flag=True, help="emit a FHIR CarePlan proposal + Provenance")
    @_JOURNAL
    def control(cgm: str, insulin: str | None, carbs: str | None, weight: float, basal_u_h: float,
                seed: int, patient_ref: str, fhir: bool, store_path: str | None) -> None:  # fmt: skip
        """Personalised carb ratio and correction factor (95 % intervals) and basal policy."""
        from healthtwin.care.glucose import fhir as F
        from healthtwin.care.glucose.control import (
            bellman_basal_policy,
            personalised_bolus_parameters,
        )
        from healthtwin.care.glucose.personalize import _params_from_theta
        from healthtwin.models.physiology.bergman import N_STATES

        twin, y, ins, cho = _fitted_twin(cgm, insulin, carbs, weight, basal_u_h, seed)
        bp = personalised_bolus_parameters(twin)
        theta = twin.ens_[N_STATES:].mean(axis=1, keepdims=True)
        p = _params_from_theta(theta, np.array([weight]), np.array([basal_u_h / 60.0]))
        grid, _v, pol = bellman_basal_policy(p)
        from healthtwin.care.glucose.control import MULTIPLIERS

        spec = {"kind": "glucose.control", "weight_kg": weight, "basal_u_h": basal_u_h,
                "files": _file_hashes(cgm, insulin, carbs)}  # fmt: skip
        _journal(store_path, spec, seed, F.input_hash(y, ins, cho, weight),
                 "healthtwin glucose control",
                 {"CR_g_per_u": [float(v[0]) for v in bp["CR"]],
                  "CF_mg_dl_per_u": [float(v[0]) for v in bp["CF"]],
                  "bellman_policy": {f"{g:.0f}": float(MULTIPLIERS[a])
                                     for g, a in zip(grid, pol, strict=True)}})  # fmt: skip

        if fhir:
            model = F.ModelRef(
                "healthtwin-glucose-enkf", _model_version(), F.input_hash(y, ins, cho, weight)
            )
            now = datetime.now(UTC)
            cp = F.bolus_parameters_careplan(
                patient_ref, now, tuple(float(v[0]) for v in bp["CR"]),  # type: ignore[arg-type]
                tuple(float(v[0]) for v in bp["CF"]), model,  # type: ignore[arg-type]
            )  # fmt: skip
            click.echo(json.dumps({"resourceType": "Bundle", "type": "collection",
                                   "entry": [{"resource": cp}, {"resource": F.provenance([cp], now, model)}]},
                                  indent=1))  # fmt: skip
            return
        buf = io.StringIO()
        for name, unit in (("CR", "g/U"), ("CF", "mg/dL/U")):
            m, lo, hi = (float(v[0]) for v in bp[name])
            buf.write(f"{name} = {m:.2f} {unit} (95% interval {lo:.2f}-{hi:.2f})\n")
        buf.write("Bellman basal policy (glucose mg/dL -> basal multiplier):\n")
        for g, a in zip(grid, pol, strict=True):
            buf.write(f"  {g:.0f}: {MULTIPLIERS[a]:g}\n")
        buf.write("(all values estimated by a simulated digital twin)\n")
        click.echo(buf.getvalue(), nl=False)

    @glucose.command("stream")
    @click.option("--patient", default="adult#001", show_default=True, help="virtual patient")
    @click.option(
        "--start", default="2026-01-01T00:00:00Z", show_default=True, help="ISO 8601 start (UTC)"
    )
    @click.option("--minutes", type=int, default=1440, show_default=True, help="duration (min)")
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--patient-id", help="FHIR Patient.id (default vp-<patient>-s<seed>)")
    @click.option("--sensor", default="Dexcom", show_default=True)
    @click.option("--every", type=int, default=5, show_default=True, help="CGM period (min)")
    @click.option(
        "--from-minute", type=int, default=0, show_default=True,
        help="emit only resources from this minute on (send a stream in pieces)",
    )  # fmt: skip
    @click.option("--no-noise", is_flag=True, help="CGM = subcutaneous glucose (no sensor noise)")
    @click.option(
        "--format", "fmt", type=click.Choice(["ndjson", "bundle", "transaction"]),
        default="ndjson", show_default=True,
    )  # fmt: skip
    @click.option("--output", "-o", type=click.Path(dir_okay=False), help="file (default stdout)")
    def stream(patient: str, start: str, minutes: int, seed: int, patient_id: str | None,
               sensor: str, every: int, from_minute: int, no_noise: bool, fmt: str,
               output: str | None) -> None:  # fmt: skip
        """Synthetic FHIR R4 device stream of a simulated patient (CGM, meals, insulin)."""
        from healthtwin.care.glucose.stream import stream_patient, to_bundle, to_ndjson

        try:
            t0 = datetime.fromisoformat(start)
        except ValueError as exc:
            raise click.BadParameter(f"{start!r} is not ISO 8601", param_hint="--start") from exc
        t0 = t0.replace(tzinfo=UTC) if t0.tzinfo is None else t0
        try:
            res = stream_patient(patient, t0, minutes, seed, patient_id=patient_id, sensor=sensor,
                                 cgm_every_min=every, first_minute=from_minute,
                                 noise=not no_noise)  # fmt: skip
            if fmt == "ndjson":
                lines = to_ndjson(res)
                if output:
                    with open(output, "w", encoding="utf-8") as fh:
                        fh.writelines(lines)
                else:
                    sys.stdout.writelines(lines)
                return
            text = json.dumps(to_bundle(res, "collection" if fmt == "bundle" else "transaction"))
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from exc
        if output:
            Path(output).write_text(text + "\n", encoding="utf-8")
        else:
            click.echo(text)

    @glucose.command("sync")
    @click.argument("twin_id")
    @click.option(
        "--store", "store_path", required=True, type=click.Path(dir_okay=False),
        help="DuckDB store holding the patient's records",
    )  # fmt: skip
    @click.option(
        "--write-back", is_flag=True,
        help="write forecasts, alerts and proposals back as FHIR R4 (sync mode -> twin)",
    )  # fmt: skip
    @click.option("--weight", type=float, help="body weight (kg) if the store has none")
    @click.option("--basal", "basal_u_h", type=float, help="basal rate (U/h) if the store has none")
    @click.option("--members", type=int, default=50, show_default=True, help="EnKF ensemble size")
    @click.option("--seed", type=int, default=0, show_default=True, help="seed of a new twin")
    @click.option("--rebuild", is_flag=True, help="discard the persisted state, re-run history")
    @click.option(
        "--format", "fmt", type=click.Choice(["table", "json"]), default="table",
        show_default=True,
    )  # fmt: skip
    def sync_cmd(twin_id: str, store_path: str, write_back: bool, weight: float | None,
                 basal_u_h: float | None, members: int, seed: int, rebuild: bool,
                 fmt: str) -> None:  # fmt: skip
        """Update a patient twin from new store data; with --write-back, write FHIR back.

        Reads new glucose, insulin and carbohydrate records, advances the persisted twin
        state (journaled as twin.state), forecasts 30/60/120 min and journals the run as
        simulation.run. Nothing is written when there is no new glucose reading.
        """
        from healthtwin.care.glucose.thread import ThreadError, sync
        from healthtwin.twin.store.base import StoreError

        store = _open_store(store_path)
        try:
            rep = sync(store, twin_id, write_back_enabled=write_back, n_members=members,
                       seed=seed, weight_kg=weight, basal_u_h=basal_u_h, rebuild=rebuild)  # fmt: skip
        except (StoreError, ThreadError) as exc:
            raise click.ClickException(str(exc)) from exc
        finally:
            store.close()
        out = {
            "twin": rep.twin_id, "updated": rep.updated, "sync_mode": rep.sync_mode,
            "minutes": list(rep.minutes), "origin": rep.origin, "new_inputs": rep.new,
            "pending_inputs": rep.pending, "p_hypo_30min": rep.p_hypo_30,
            "forecast": rep.forecast,
            "alerts": [{"minute": a.time_min, "kind": a.kind, "detail": a.detail}
                       for a in rep.alerts],
            "written": rep.written, "input_sha256": rep.input_hash,
            "skipped": [{"record": s.rid, "reason": s.reason} for s in rep.skipped],
            "late": [{"record": s.rid, "reason": s.reason} for s in rep.late],
            "simulated": True,
        }  # fmt: skip
        if fmt == "json":
            click.echo(json.dumps(out, default=str, indent=1))
            return
        if not rep.updated:
            click.echo(f"{rep.twin_id}: no new glucose reading; nothing written")
        else:
            click.echo(f"{rep.twin_id}: updated minutes {rep.minutes[0]}-{rep.minutes[1]} "
                       f"(origin {rep.origin:%Y-%m-%dT%H:%MZ}), new inputs {rep.new}, "
                       f"sync mode {rep.sync_mode}")  # fmt: skip
            for r in rep.forecast:
                click.echo(f"  +{r['horizon_min']:>3} min: {r['median_mg_dl']:6.1f} mg/dL "
                           f"({100 * r['level']:g}% PI {r['low_mg_dl']:.1f}-{r['high_mg_dl']:.1f})"
                           " simulated")  # fmt: skip
            click.echo(f"  P(glucose < 70 mg/dL within 30 min) = {rep.p_hypo_30:.2f}")
            for a in rep.alerts:
                click.echo(f"  alert {a.kind} at minute {a.time_min:g}: {a.detail}")
            click.echo(f"  written back: {len(rep.written)} resource(s)"
                       + (f" {', '.join(w.split('/')[0] for w in rep.written)}"
                          if rep.written else ""))  # fmt: skip
        for s in rep.skipped:
            click.echo(f"  skipped {s.rid}: {s.reason}")
        for s in rep.late:
            click.echo(f"  late {s.rid}: {s.reason}")


def _model_version() -> str:
    """The physiology model version (imported late: the CLI starts without the models)."""
    from healthtwin.models.physiology.uva_padova import MODEL_VERSION

    return MODEL_VERSION
