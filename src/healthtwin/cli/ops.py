"""``healthtwin ops``: facility twin commands (simulate, calibrate, forecast, compare, optimize).

All outputs are simulated and say so; times in min unless a column names another unit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import yaml


def _load(spec: str) -> Any:
    from healthtwin.operations.spec import SpecError, load_spec

    try:
        return load_spec(spec)
    except SpecError as err:
        raise click.ClickException(str(err)) from None


def _store_opt(f: Any) -> Any:
    return click.option(
        "--store",
        "store_path",
        type=click.Path(),
        help="DuckDB store or PostgreSQL URL: journal the run record there as a "
        "'simulation.run' event",
    )(f)


def _twin_opt(f: Any) -> Any:
    return click.option(
        "--twin", "twin_id", help="facility twin id for the journal event (with --store)"
    )(f)


def _open_store(path: str, read_only: bool = False) -> Any:
    from healthtwin.cli.spine import _open
    from healthtwin.twin.store import is_postgres_url

    if not is_postgres_url(path) and not Path(path).exists():
        raise click.ClickException(f"store {path!r} does not exist (run `healthtwin ingest` first)")
    return _open(path, read_only=read_only)


def _precheck(store_path: str | None, twin_id: str | None) -> None:
    """Fail before a long run, not after it."""
    if store_path is None and twin_id is not None:
        raise click.UsageError("--twin needs --store")
    from healthtwin.twin.store import is_postgres_url

    if store_path is not None and not is_postgres_url(store_path) and not Path(store_path).exists():
        raise click.ClickException(
            f"store {store_path!r} does not exist (run `healthtwin ingest` first)"
        )


def _journal(store_path: str | None, twin_id: str | None, rec: Any, extra: Any = None) -> None:
    """Append the run record to the store's journal (when --store was given)."""
    _precheck(store_path, twin_id)
    if store_path is None:
        return
    from healthtwin.operations.store_link import journal_run

    with _open_store(store_path) as st:
        seq = journal_run(st, rec, twin_id, extra)
    click.echo(f"run journaled in {store_path} as simulation.run (seq {seq})")


@click.group("ops")
def ops() -> None:
    """Facility twin: ED, wards, primary care (discrete-event simulation)."""


@ops.command("simulate")
@click.argument("spec")
@click.option(
    "--reps", default=0, show_default=True, help="replications (0: choose for 5 % precision)"
)
@click.option("--seed", default=0, show_default=True)
@click.option("--workers", default=1, show_default=True, help="parallel processes")
@click.option("--out", "out_dir", default="ops-out", show_default=True, type=click.Path())
@click.option("--kpi", default="wait_mean[min]", show_default=True, help="KPI for --reps 0")
@click.option("--stress", is_flag=True, help="also run surge / failure / sickness stress tests")
@click.option("--auto-warmup", is_flag=True, help="choose the warm-up by MSER-5 on pilot runs")
@_store_opt
@_twin_opt
def simulate_cmd(
    spec: str,
    reps: int,
    seed: int,
    workers: int,
    out_dir: str,
    kpi: str,
    stress: bool,
    auto_warmup: bool,
    store_path: str | None,
    twin_id: str | None,
) -> None:
    """Simulate SPEC (a YAML path or a bundled name: ed, ward, primary_care, treatment_centre)."""
    from healthtwin.operations.engine import RunOptions, run_replications
    from healthtwin.operations.kpi import replications_needed, summarise
    from healthtwin.operations.primary import workload_summary
    from healthtwin.operations.records import write_outputs
    from healthtwin.operations.scenarios import stress_test

    _precheck(store_path, twin_id)
    sp = _load(spec)
    if auto_warmup:
        from healthtwin.operations.kpi import choose_warmup

        wu = choose_warmup(sp, seed=seed)
        click.echo(f"warm-up chosen by MSER-5: {wu:.0f} min (spec said {sp.warmup:.0f} min)")
        sp = sp.model_copy(update={"warmup": wu})
    if reps <= 0:
        _, res = replications_needed(
            lambda first, n: run_replications(sp, n, seed, workers, first_rep=first), kpi
        )
    else:
        res = run_replications(sp, reps, seed, workers)
    # replication 0 again with the event log (identical streams)
    res[0] = run_replications(sp, 1, seed, 1, RunOptions(log=True))[0]
    rec = write_outputs(out_dir, sp, seed, res)
    summ = summarise(res)
    click.echo(
        f"{sp.name}: {len(res)} replications (simulated), seed {seed}, spec {rec.spec_hash[:12]}"
    )
    click.echo(summ[["mean", "ci_low", "ci_high"]].to_string(float_format=lambda x: f"{x:.3f}"))
    if sp.primary_care is not None:
        wl = workload_summary(sp.primary_care, seed=seed)
        wl.to_csv(Path(out_dir) / "workload.csv")
        click.echo("primary-care provider workload per day (simulated):")
        click.echo(wl.to_string(float_format=lambda x: f"{x:.3f}"))
    if stress:
        st = stress_test(sp, max(len(res), 10), seed, workers)
        st.to_csv(Path(out_dir) / "stress.csv", index=False)
        click.echo("stress tests (paired differences, simulated):")
        click.echo(st.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    click.echo(f"outputs in {out_dir}/ (run record: run.json)")
    _journal(store_path, twin_id, rec)


@ops.command("calibrate")
@click.option("--csv", "csv_path", type=click.Path(exists=True), help="CSV with start[,end,class]")
@click.option("--fhir-encounters", type=click.Path(exists=True), help="Encounter NDJSON")
@click.option(
    "--store", "store_path", type=click.Path(), help="DuckDB store: its Encounter history"
)
@click.option("--by", default="class", show_default=True, help="group LOS fits by this column")
@click.option("--out", "out_path", type=click.Path(), help="write the JSON report here")
@click.option("--spec", "spec_in", help="spec whose arrivals are replaced by the fitted NHPP")
@click.option("--spec-out", type=click.Path(), help="write the calibrated spec (YAML) here")
def calibrate_cmd(
    csv_path: str | None,
    fhir_encounters: str | None,
    store_path: str | None,
    by: str,
    out_path: str | None,
    spec_in: str | None,
    spec_out: str | None,
) -> None:
    """Fit arrival profile (NHPP) and length-of-stay distributions with goodness of fit."""
    from healthtwin.operations.calibrate import (
        CalibrationError,
        calibrate,
        encounters_from_csv,
        encounters_from_fhir,
    )

    if sum(bool(x) for x in (csv_path, fhir_encounters, store_path)) != 1:
        raise click.UsageError("give exactly one of --csv, --fhir-encounters or --store")
    if csv_path:
        df = encounters_from_csv(csv_path)
    elif store_path:
        from healthtwin.operations.store_link import encounters_from_store

        with _open_store(store_path, read_only=True) as st:
            try:
                df = encounters_from_store(st)
            except CalibrationError as err:
                raise click.ClickException(f"{store_path}: {err}") from None
    else:
        with open(str(fhir_encounters)) as fh:
            df = encounters_from_fhir(json.loads(line) for line in fh if line.strip())
    try:
        rep = calibrate(df, by)
    except CalibrationError as err:
        raise click.ClickException(str(err)) from None
    text = json.dumps(rep, indent=2, default=str)
    if out_path:
        Path(out_path).write_text(text)
    click.echo(text)
    if spec_in and spec_out:
        from healthtwin.operations.scenarios import apply_patch

        sp = apply_patch(_load(spec_in), {"arrivals": rep["spec_arrivals"]}, "calibrated")
        Path(spec_out).write_text(yaml.safe_dump(sp.model_dump(mode="json", exclude_none=True)))
        click.echo(f"calibrated spec written to {spec_out}")
    elif spec_in or spec_out:
        raise click.UsageError("--spec and --spec-out go together")


@ops.command("forecast")
@click.argument("spec")
@click.option("--census", type=click.Path(exists=True), help="census JSON or CSV")
@click.option("--fhir-encounters", type=click.Path(exists=True), help="active Encounter NDJSON")
@click.option(
    "--location-map",
    type=click.Path(exists=True),
    help="YAML: location reference -> [station, class, step] (with --fhir-encounters; "
    "optional with --store)",
)
@click.option(
    "--as-of",
    help="ISO time of the census (with --fhir-encounters; with --store default: latest "
    "arrival/location start of the active encounters)",
)
@click.option(
    "--store",
    "store_path",
    type=click.Path(),
    help="DuckDB store: census from its active Encounters (unless --census/--fhir-encounters) "
    "and the run journaled there",
)
@_twin_opt
@click.option("--hours", default="4,8,24", show_default=True)
@click.option("--reps", default=50, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--workers", default=1, show_default=True)
@click.option("--out", "out_path", type=click.Path(), help="CSV output")
def forecast_cmd(
    spec: str,
    census: str | None,
    fhir_encounters: str | None,
    location_map: str | None,
    as_of: str | None,
    hours: str,
    reps: int,
    seed: int,
    workers: int,
    out_path: str | None,
    store_path: str | None,
    twin_id: str | None,
) -> None:
    """Forecast occupancy, waits, boarding and 4-hour breaches from the current census."""
    from datetime import datetime

    from healthtwin.operations.live import Census, census_from_fhir, forecast
    from healthtwin.operations.spec import SpecError

    _precheck(store_path, twin_id)
    sp = _load(spec)
    if census and fhir_encounters:
        raise click.UsageError("give only one of --census or --fhir-encounters")
    if census:
        cen = Census.from_file(census)
    elif fhir_encounters:
        if not (location_map and as_of):
            raise click.UsageError("--fhir-encounters needs --location-map and --as-of")
        lm = {k: tuple(v) for k, v in yaml.safe_load(Path(location_map).read_text()).items()}
        with open(fhir_encounters) as fh:
            cen = census_from_fhir(
                (json.loads(x) for x in fh if x.strip()), lm, datetime.fromisoformat(as_of)
            )
    elif store_path:
        from healthtwin.operations.store_link import census_from_store

        lmap = None
        if location_map:
            raw = yaml.safe_load(Path(location_map).read_text())
            lmap = {k: tuple(v) for k, v in raw.items()}
        at = None
        if as_of:
            from healthtwin.cli.spine import _time

            at = _time(as_of, "--as-of")
        with _open_store(store_path, read_only=True) as st:
            try:
                cen = census_from_store(st, sp, lmap, at)
            except SpecError as err:
                raise click.ClickException(f"{store_path}: {err}") from None
    else:
        raise click.UsageError("give --census, --fhir-encounters or --store")
    hs = [float(h) for h in hours.split(",")]
    try:
        fc = forecast(sp, cen, hs, reps, seed, workers)
    except SpecError as err:
        raise click.ClickException(str(err)) from None
    if out_path:
        fc.to_csv(out_path, index=False)
    click.echo(
        f"forecast from census at {cen.as_of.isoformat()} ({len(cen.patients)} patients; simulated)"
    )
    click.echo(fc.to_string(index=False, float_format=lambda x: f"{x:.2f}"))
    if store_path:
        from healthtwin.operations.store_link import record_from_table

        rec = record_from_table(sp, seed, reps, "forecast", fc, ["horizon[h]", "quantity"])
        census_info = {
            "as_of": cen.as_of.isoformat(),
            "patients": len(cen.patients),
            "hours": hs,
        }
        _journal(store_path, twin_id, rec, {"census": census_info})


@ops.command("compare")
@click.argument("spec")
@click.option(
    "--scenarios",
    "scen_path",
    type=click.Path(exists=True),
    help="YAML: name -> {dotted.path: value}; default: standard interventions",
)
@click.option("--reps", default=20, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--workers", default=1, show_default=True)
@click.option("--kpi", default="wait_mean[min]", show_default=True)
@_store_opt
@_twin_opt
def compare_cmd(
    spec: str,
    scen_path: str | None,
    reps: int,
    seed: int,
    workers: int,
    kpi: str,
    store_path: str | None,
    twin_id: str | None,
) -> None:
    """Compare scenarios against SPEC with paired (common random numbers) intervals."""
    from healthtwin.operations.optimize import rank_interventions
    from healthtwin.operations.scenarios import discharge_before_noon, extra_staff, overflow_beds

    _precheck(store_path, twin_id)
    sp = _load(spec)
    if scen_path:
        scen = yaml.safe_load(Path(scen_path).read_text())
    else:
        scen = {}
        for n, st in sp.stations.items():
            if not st.infinite:
                scen[f"+1 {n}"] = extra_staff(sp, n, 1)
        for n, st in sp.stations.items():
            if st.kind == "ward":
                scen[f"+4 overflow beds {n}"] = overflow_beds(sp, n, 4)
                scen["discharge before noon"] = discharge_before_noon(sp)
    tab = rank_interventions(sp, scen, kpi, reps, seed, workers)
    click.echo(f"ranked interventions on {kpi} (scenario - base, 95 % paired CI; simulated)")
    click.echo(tab.to_string(float_format=lambda x: f"{x:.3f}"))
    if store_path:
        from healthtwin.operations.store_link import record_from_table

        rec = record_from_table(sp, seed, reps, "compare", tab, "intervention")
        _journal(store_path, twin_id, rec, {"scenarios": scen, "kpi": kpi})


@ops.command("optimize")
@click.argument("spec")
@click.option("--station", required=True, help="station to staff")
@click.option("--target-wait", default=15.0, show_default=True, help="min")
@click.option("--reps", default=20, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--workers", default=1, show_default=True)
@_store_opt
@_twin_opt
def optimize_cmd(
    spec: str,
    station: str,
    target_wait: float,
    reps: int,
    seed: int,
    workers: int,
    store_path: str | None,
    twin_id: str | None,
) -> None:
    """Erlang screen -> simulate shortlist -> select -> CP-SAT roster for STATION."""
    from healthtwin.operations.optimize import optimise_staffing

    _precheck(store_path, twin_id)
    sp = _load(spec)
    if station not in sp.stations:
        raise click.BadParameter(
            f"unknown station {station!r}; have {list(sp.stations)}", param_hint="--station"
        )
    r = optimise_staffing(sp, station, target_wait, n_reps=reps, seed=seed, workers=workers)
    click.echo("candidates (simulated; objective = staff h/day + 0.5 x patient waiting h/day):")
    click.echo(r["candidates"].to_string(index=False, float_format=lambda x: f"{x:.2f}"))
    click.echo(f"chosen: {r['chosen']}  hourly servers: {r['hourly']}")
    ro = r["roster"]
    click.echo(f"roster ({ro.status}): {ro.paid_hours:.0f} paid h/week, {len(ro.assignment)} staff")
    for (d, s, L), c in sorted(ro.counts.items()):
        click.echo(f"  day {d} start {s:02d}:00 {L} h x {c}")
    if store_path:
        from healthtwin.operations.store_link import record_from_table

        rec = record_from_table(sp, seed, reps, "optimize", r["candidates"], "plan")
        extra = {
            "station": station,
            "target_wait[min]": target_wait,
            "chosen": str(r["chosen"]),
            "hourly": [int(x) for x in r["hourly"]],
            "roster": {"status": ro.status, "paid_hours": float(ro.paid_hours)},
        }
        _journal(store_path, twin_id, rec, extra)
    sys.stdout.flush()


def register(group: click.Group) -> None:
    """Add the ``ops`` group to the top-level CLI."""
    group.add_command(ops)
