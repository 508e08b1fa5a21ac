"""``healthtwin graphs``: Bayesian-network queries and treatment-MDP solutions from the shell."""

from __future__ import annotations

import click
import numpy as np


def register(group: click.Group) -> None:
    """Add the ``graphs`` command group to the top-level ``healthtwin`` group."""
    group.add_command(graphs)


@click.group()
def graphs() -> None:
    """Bayesian networks and treatment MDPs (healthtwin.models.bayesnet / .mdp)."""


_ASIA_VARS = ("asia", "smoke", "tub", "lung", "bronc", "either", "xray", "dysp")


@graphs.command("asia")
@click.option(
    "--evidence",
    "-e",
    multiple=True,
    metavar="VAR=STATE",
    help="Observed finding, e.g. -e xray=yes -e dysp=yes (states: no, yes).",
)
@click.option(
    "--query", "-q", "targets", multiple=True, help="Variables to report (default: tub lung bronc)."
)
def asia(evidence: tuple[str, ...], targets: tuple[str, ...]) -> None:
    """Posterior probabilities (unit 1) in the classic 'asia' chest-clinic network."""
    from healthtwin.models.bayesnet import asia_network

    ev: dict[str, list[str]] = {}
    for item in evidence:
        name, sep, state = item.partition("=")
        if not sep or name not in _ASIA_VARS or state not in ("no", "yes"):
            raise click.BadParameter(
                f"{item!r}: expected VAR=STATE with VAR in {', '.join(_ASIA_VARS)} and STATE no|yes",
                param_hint="--evidence",
            )
        ev[name] = [state]
    wanted = list(targets) or [v for v in ("tub", "lung", "bronc") if v not in ev]
    for t in wanted:
        if t not in _ASIA_VARS or t in ev:
            raise click.BadParameter(
                f"{t!r}: not an unobserved asia variable", param_hint="--query"
            )
    model = asia_network()
    try:
        post = model.marginals(wanted, ev)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    shown = ", ".join(f"{k}={v[0]}" for k, v in ev.items()) or "none"
    click.echo(f"evidence: {shown}")
    for t in wanted:
        click.echo(f"P({t}=yes | evidence) = {post[t][0, 1]:.4f} (unit 1, exact)")


@graphs.command("forest")
@click.option("--states", "n_states", default=3, show_default=True, help="Forest age classes S.")
@click.option(
    "--r1", default=4.0, show_default=True, help="Reward for waiting in the oldest state."
)
@click.option(
    "--r2", default=2.0, show_default=True, help="Reward for cutting in the oldest state."
)
@click.option("--fire", default=0.1, show_default=True, help="Fire probability per step (unit 1).")
@click.option("--gamma", default=0.9, show_default=True, help="Discount factor per step (unit 1).")
@click.option(
    "--method",
    type=click.Choice(["policy_iteration", "value_iteration"]),
    default="policy_iteration",
    show_default=True,
)
def forest(n_states: int, r1: float, r2: float, fire: float, gamma: float, method: str) -> None:
    """Solve pymdptoolbox's forest-management MDP (actions 0 = wait, 1 = cut)."""
    from healthtwin.models.mdp import policy_iteration, value_iteration

    if n_states < 2:
        raise click.BadParameter(f"{n_states}: need at least 2 states", param_hint="--states")
    if not 0 <= fire <= 1:
        raise click.BadParameter(f"{fire}: a probability in [0, 1]", param_hint="--fire")
    P = np.zeros((2, n_states, n_states))
    P[0, :, 0] = fire
    for s in range(n_states):
        P[0, s, min(s + 1, n_states - 1)] += 1 - fire
    P[1, :, 0] = 1.0
    R = np.zeros((n_states, 2))
    R[-1, 0] = r1
    R[1:, 1] = 1.0
    R[-1, 1] = r2
    try:
        sol = (
            policy_iteration(P, R, gamma)
            if method == "policy_iteration"
            else value_iteration(P, R, gamma, epsilon=1e-6)
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{method}: {sol.n_iter} iteration(s); values are discounted rewards (unit 1)")
    click.echo("state  action  V        V_lower  V_upper")
    for s in range(n_states):
        act = "cut" if sol.policy[s] == 1 else "wait"
        click.echo(
            f"{s:>5}  {act:<6}  {sol.V[s]:<7.4f}  {sol.V_lower[s]:<7.4f}  {sol.V_upper[s]:.4f}"
        )
