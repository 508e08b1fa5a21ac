"""``healthtwin dynamics ...``: Markov cost-effectiveness and SDE quantile bands from the shell."""

from __future__ import annotations

import click


@click.group("dynamics")
def dynamics() -> None:
    """Trajectory, Markov and SDE models (healthtwin.models)."""


@dynamics.command("sick-sicker")
@click.option(
    "--wcc",
    type=click.Choice(["darth-simpson", "simpson", "half-cycle", "none"]),
    default="darth-simpson",
    show_default=True,
    help="within-cycle correction",
)
@click.option("--discount", type=float, default=0.03, show_default=True, help="annual rate (/a)")
def sick_sicker(wcc: str, discount: float) -> None:
    """Cost-effectiveness of the DARTH Sick-Sicker model (costs USD, QALYs a, ICER USD/QALY)."""
    from healthtwin.models.markov import (
        MarkovCohortModel,
        calculate_icers,
        sick_sicker_strategies,
    )

    specs = sick_sicker_strategies()
    if wcc == "simpson":
        raise click.BadParameter(
            "75 cycles is odd; textbook Simpson needs an even count", param_hint="--wcc"
        )
    costs, qalys = [], []
    for spec in specs.values():
        res = MarkovCohortModel(
            spec["transition"],
            state_costs=spec["costs"],
            state_utilities=spec["utilities"],
            discount_cost=discount,
            discount_effect=discount,
            wcc=wcc,
        ).evaluate([1, 0, 0, 0], 75)
        costs.append(res.total_cost)
        qalys.append(res.total_qaly)
    df = calculate_icers(costs, qalys, list(specs))
    click.echo("strategy              cost (USD)   QALYs (a)   ICER (USD/QALY)  status")
    for row in df.itertuples():
        icer = "" if row.icer != row.icer else f"{row.icer:,.0f}"
        click.echo(
            f"{row.strategy:20s} {row.cost:12,.0f} {row.effect:10.3f} {icer:>16s}  {row.status}"
        )


@dynamics.command("ou-bands")
@click.option("--h0", type=float, required=True, help="initial value (unit)")
@click.option("--theta", type=float, required=True, help="mean-reversion rate (/time unit)")
@click.option("--mu", type=float, required=True, help="long-run mean (unit)")
@click.option("--sigma", type=float, required=True, help="volatility (unit/time^0.5)")
@click.option("--t-end", type=float, default=5.0, show_default=True)
@click.option("--dt", type=float, default=0.01, show_default=True)
@click.option("--paths", type=int, default=10_000, show_default=True)
@click.option("--unit", default="mg/dL", show_default=True)
@click.option("--time-unit", default="d", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def ou_bands(
    h0: float,
    theta: float,
    mu: float,
    sigma: float,
    t_end: float,
    dt: float,
    paths: int,
    unit: str,
    time_unit: str,
    seed: int,
) -> None:
    """Simulated 5/25/50/75/95 % bands of an Ornstein-Uhlenbeck trajectory (JSON)."""
    import json

    from healthtwin.models.sde import ou_model

    try:
        model = ou_model(theta, mu, sigma, dt=dt, unit=unit, time_unit=time_unit)
        n_steps = round(t_end / dt)
        every = max(1, n_steps // 10)
        while n_steps % every:
            every -= 1
        bands = model.quantile_bands(h0, t_end, n_paths=paths, record_every=every, seed=seed)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(json.dumps(bands.as_dict(), indent=1))


def register(group: click.Group) -> None:
    """Add ``dynamics`` to the top-level ``healthtwin`` group."""
    group.add_command(dynamics)
