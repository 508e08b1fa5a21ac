"""``healthtwin trial ...`` and ``healthtwin vpop ...``: the cohort twin's command line."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np

if TYPE_CHECKING:  # pandas is imported inside the commands (fast CLI start-up)
    import pandas as pd


def _journal(store_path: str | None, kind: str, record: dict[str, Any], command: str) -> None:
    """Append a run record to the store's journal when ``--store`` is given."""
    if store_path is None:
        return
    from healthtwin.cli.spine import _open
    from healthtwin.research.runlog import journal_run

    store = _open(store_path)
    try:
        seq = journal_run(store, kind, record, command)
    finally:
        store.close()
    click.echo(f"journaled {kind} as event {seq} in {store_path}")


_JOURNAL_STORE = click.option(
    "--store",
    "store_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="DuckDB store: append the run record to its journal",
)


@click.group("trial")
def trial() -> None:
    """In-silico trials: sample size, simulation, analysis, design reports (simulated)."""


@trial.command("power")
@click.option(
    "--sigma", type=float, default=1.0, show_default=True, help="outcome sd (outcome unit)"
)
@click.option("--delta", type=float, required=True, help="treatment effect (outcome unit)")
@click.option(
    "--r2", type=float, default=0.0, show_default=True, help="R² of the prognostic score (1)"
)
@click.option("--power", "power_", type=float, default=0.9, show_default=True)
@click.option("--alpha", type=float, default=0.025, show_default=True, help="one-sided level")
@click.option(
    "--ratio", type=float, default=1.0, show_default=True, help="r in r:1 treatment:control"
)
@click.option("--verbose", "-v", is_flag=True, help="also print per-arm sizes")
def power_cmd(
    sigma: float, delta: float, r2: float, power_: float, alpha: float, ratio: float, verbose: bool
) -> None:
    """Print the PROCOVA total sample size (patients)."""
    from healthtwin.research.power import procova_sample_size

    try:
        n = procova_sample_size(sigma, delta, r2, power_, alpha, ratio)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    click.echo(n)
    if verbose:
        n_t = round(n * ratio / (1 + ratio))
        click.echo(f"treatment {n_t}, control {n - n_t} (total {n} patients)")


def _load_spec(path: Path) -> dict[str, object]:
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path}: the spec must be a mapping")
    return data


@trial.command("simulate")
@click.argument("spec", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--population",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV of virtual patients (default: a built-in virtual population)",
)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="output CSV"
)
@_JOURNAL_STORE
def simulate_cmd(spec: Path, population: Path | None, out: Path, store_path: str | None) -> None:
    """Simulate one trial from a YAML/JSON SPEC; writes patient-level data and a run record."""
    import pandas as pd
    from pydantic import ValidationError

    from healthtwin.research.report import code_version
    from healthtwin.research.trial import TrialSpec, simulate_trial
    from healthtwin.research.vpop import SummaryStats, VirtualPopulation

    try:
        ts = TrialSpec(**_load_spec(spec))  # type: ignore[arg-type]
    except ValidationError as exc:
        raise click.BadParameter(f"{spec}: {exc}") from exc
    if population is not None:
        pop = pd.read_csv(population)
    else:
        vp = VirtualPopulation().fit(
            SummaryStats(["age", "bmi", "female"], [58, 31, 0.5], [12, 5, 0.5])
        )
        pop = vp.sample(ts.n, np.random.default_rng(ts.seed))
    res = simulate_trial(ts, pop)
    res.data.assign(label="simulated").to_csv(out, index=False)
    rec = {
        "spec": ts.model_dump(),
        "spec_sha256": ts.spec_hash(),
        "seed": ts.seed,
        "code_version": code_version(),
        "population": str(population) if population is not None else "built-in",
        "output": str(out),
        "true_ate": res.true_ate,
        "unit": res.unit,
        "label": "simulated",
    }
    out.with_suffix(".run.json").write_text(json.dumps(rec, indent=2), encoding="utf-8")
    click.echo(
        f"simulated {len(res.data)} patients -> {out} (true ATE {res.true_ate:.4g} {res.unit})"
    )
    _journal(store_path, "simulation.run", rec, "healthtwin trial simulate")


@trial.command("analyze")
@click.argument("data", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--outcome", default="y", show_default=True)
@click.option("--treatment", default="treated", show_default=True, help="0/1 column")
@click.option(
    "--covariate", "covariates", multiple=True, help="adjustment column(s), e.g. a prognostic score"
)
@click.option("--unit", default="1", show_default=True, help="UCUM unit of the outcome")
@click.option("--event", default=None, help="event column (1/0): time-to-event outcome, Cox model")
def analyze_cmd(
    data: Path,
    outcome: str,
    treatment: str,
    covariates: tuple[str, ...],
    unit: str,
    event: str | None,
) -> None:
    """ANCOVA (HC3 robust SE) or, with --event, Cox PH of a trial CSV; prints JSON with 95% CI."""
    import pandas as pd

    from healthtwin.research.procova import ancova
    from healthtwin.research.trial import tte_analysis

    df = pd.read_csv(data)
    missing = [
        c
        for c in (outcome, treatment, *covariates, *([event] if event else []))
        if c not in df.columns
    ]
    if missing:
        raise click.BadParameter(f"{data}: columns {missing} not found (have {list(df.columns)})")
    if event:
        hr = tte_analysis(
            df[outcome].to_numpy(),
            df[event].to_numpy(),
            df[treatment].to_numpy(),
            df[list(covariates)] if covariates else None,
        )
        click.echo(json.dumps({**hr, "unit": "1", "time_unit": unit}, indent=2))
        return
    cov = df[list(covariates)].to_numpy(float) if covariates else None
    if cov is not None:
        cov = cov - cov.mean(axis=0)
    res = ancova(df[outcome].to_numpy(float), df[treatment].to_numpy(float), cov, unit=unit)
    click.echo(json.dumps(res.to_dict(), indent=2))


@trial.command("report")
@click.option("--sigma", type=float, default=1.0, show_default=True)
@click.option("--delta", type=float, default=0.5, show_default=True)
@click.option("--r2", "r2s", type=float, multiple=True, help="R² values (repeatable)")
@click.option("--power", "power_", type=float, default=0.9, show_default=True)
@click.option("--alpha", type=float, default=0.025, show_default=True)
@click.option("--ratio", type=float, default=1.0, show_default=True)
@click.option("--reps", type=int, default=2000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@_JOURNAL_STORE
def report_cmd(
    sigma: float,
    delta: float,
    r2s: tuple[float, ...],
    power_: float,
    alpha: float,
    ratio: float,
    reps: int,
    seed: int,
    out: Path,
    store_path: str | None,
) -> None:
    """Write a trial design report (Markdown + PNG + run.json) to OUT."""
    from healthtwin.research.report import DesignSpec, design_report

    spec = DesignSpec(
        sigma, delta, list(r2s) or [0.0, 0.16, 0.36, 0.5], power_, alpha, ratio, reps=reps
    )
    rec = design_report(spec, out, seed)
    click.echo(f"report -> {out / 'report.md'} (spec {rec['spec_sha256'][:12]}, seed {seed})")
    _journal(store_path, "report.created", {**rec, "output": str(out)}, "healthtwin trial report")


@trial.command("external")
@click.option("--shift", "shifts", type=float, multiple=True, help="shift(s) in sd (repeatable)")
@click.option("--reps", type=int, default=4000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def external_cmd(shifts: tuple[float, ...], reps: int, seed: int) -> None:
    """Type-I error of external / twin synthetic controls vs randomised PROCOVA (simulated)."""
    import pandas as pd

    from healthtwin.research.external import shift_experiment

    res = shift_experiment(list(shifts) or [0.0, 0.25, 0.5], reps=reps, seed=seed)
    table = pd.DataFrame([r.to_dict() for r in res]).set_index("shift")
    click.echo(table.to_string(float_format=lambda v: f"{v:.4f}"))


@trial.command("scale")
@click.option("--patients", type=int, default=1_000_000, show_default=True)
@click.option("--visits", type=int, default=52, show_default=True)
@click.option(
    "--engine", type=click.Choice(["inprocess", "ray"]), default="inprocess", show_default=True
)
@click.option(
    "--workers", type=int, default=2, show_default=True, help="Ray CPUs for a local cluster"
)
@click.option("--chunk-size", type=int, default=50_000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def scale_cmd(
    patients: int, visits: int, engine: str, workers: int, chunk_size: int, seed: int
) -> None:
    """Simulate a virtual population of PATIENTS × weekly VISITS (simulated HbA1c, "%")."""
    from healthtwin.research.engine import simulate_population

    if engine == "ray":
        import ray

        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    t0 = time.perf_counter()
    run = simulate_population(patients, visits, seed, chunk_size, engine)  # type: ignore[arg-type]
    dt = time.perf_counter() - t0
    ate, se = run.ate()
    click.echo(
        f"{patients} patients x {visits} visits on {engine}: {dt:.2f} s; "
        f"simulated ATT {ate:.4f} % (95% CI {ate - 1.96 * se:.4f} to {ate + 1.96 * se:.4f})"
    )
    if engine == "ray":
        import ray

        ray.shutdown()


@click.group("vpop")
def vpop() -> None:
    """Virtual populations matched to a target cohort."""


@vpop.command("generate")
@click.option(
    "--target",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="target cohort CSV",
)
@click.option(
    "--synthea",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="directory of Synthea FHIR bundles (target cohort)",
)
@click.option(
    "--store",
    "store_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="DuckDB store: the target cohort is its patients' latest values of --codes",
)
@click.option(
    "--codes",
    default=",".join(("39156-5", "8480-6", "2093-3", "4548-4")),
    show_default=True,
    help="comma-separated LOINC codes (with --store)",
)
@click.option("--at", default=None, help="reference date for age and values (with --store)")
@click.option(
    "--min-age", type=float, default=18.0, show_default=True, help="adults only (a; --store)"
)
@click.option(
    "--n", "n_plausible", type=int, default=20000, show_default=True, help="plausible patients"
)
@click.option(
    "--method",
    type=click.Choice(["select", "weights", "sample"]),
    default="select",
    show_default=True,
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def generate_cmd(
    target: Path | None,
    synthea: Path | None,
    store_path: str | None,
    codes: str,
    at: str | None,
    min_age: float,
    n_plausible: int,
    method: str,
    seed: int,
    out: Path,
) -> None:
    """Generate a virtual population (CSV) and print its fit (KS per observable)."""
    import pandas as pd

    from healthtwin.research.vpop import VirtualPopulation, fit_report, load_synthea_cohort

    if sum(x is not None for x in (target, synthea, store_path)) != 1:
        raise click.UsageError("give exactly one of --target CSV, --synthea DIR or --store PATH")
    if store_path is not None:
        cohort = _store_cohort(store_path, codes, at, min_age)
    elif target is not None:
        cohort = pd.read_csv(target)
    else:
        cohort = load_synthea_cohort(synthea)  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    try:
        vp = VirtualPopulation().fit(cohort)
    except (KeyError, ValueError) as exc:
        raise click.ClickException(f"cannot fit the target cohort: {exc}") from exc
    w = None
    try:
        if method == "select":
            pop = vp.select(n_plausible, rng)
        elif method == "weights":
            pop, w, _ = vp.weights(n_plausible, rng)
            pop = pop.assign(weight=w)
        else:
            pop = vp.sample(n_plausible, rng)
    except RuntimeError as exc:  # e.g. selection kept too few plausible patients
        raise click.ClickException(f"--method {method}: {exc}") from exc
    pop.assign(label="simulated").to_csv(out, index=False)
    rep = fit_report(pop.drop(columns=["weight"], errors="ignore"), cohort, w)
    click.echo(rep.to_frame().to_string(float_format=lambda v: f"{v:.4g}"))
    click.echo(
        f"{len(pop)} virtual patients -> {out}" + (f" (ESS {rep.ess:.0f})" if rep.ess else "")
    )


def _store_cohort(store_path: str, codes: str, at: str | None, min_age: float) -> pd.DataFrame:
    """The target cohort from a store (patients × age, female, --codes), without the id column."""
    from datetime import date, datetime

    from healthtwin.cli.spine import _open, _time
    from healthtwin.research.cohort_data import CohortDataError, cohort_frame

    parsed = _time(at, "--at")
    when: date | datetime | None = parsed
    if at is not None and len(at) == 10 and parsed is not None:  # a date: the whole day counts
        when = parsed.date()
    store = _open(store_path, read_only=True)
    try:
        df = cohort_frame(store, codes.split(","), at=when, min_age=min_age)
    except CohortDataError as exc:
        raise click.ClickException(f"store {store_path!r}: {exc}") from exc
    finally:
        store.close()
    if df.empty:
        raise click.ClickException(
            f"store {store_path!r}: no patients aged >= {min_age:g} a with any of {codes}"
        )
    units = ", ".join(f"{k} ({v})" for k, v in df.attrs["units"].items())
    click.echo(f"target cohort: {len(df)} patients from {store_path}; {units}")
    return df.drop(columns=["patient"])


def register(group: click.Group) -> None:
    """Add ``trial`` and ``vpop`` to the top-level ``healthtwin`` group."""
    group.add_command(trial)
    group.add_command(vpop)
