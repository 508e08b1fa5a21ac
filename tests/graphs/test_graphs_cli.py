"""``healthtwin graphs`` commands against pymdptoolbox and the library API."""

from __future__ import annotations

import mdptoolbox.example
import mdptoolbox.mdp
import numpy as np
from click.testing import CliRunner

from healthtwin.cli import main
from healthtwin.models.bayesnet import asia_network


def test_forest_command_matches_pymdptoolbox() -> None:
    res = CliRunner().invoke(main, ["graphs", "forest", "--states", "4", "--gamma", "0.95"])
    assert res.exit_code == 0, res.output
    rows = [line.split() for line in res.output.splitlines()[2:]]
    P, R = mdptoolbox.example.forest(S=4)
    ref = mdptoolbox.mdp.PolicyIteration(P, R, 0.95)
    ref.run()
    np.testing.assert_allclose([float(r[2]) for r in rows], ref.V, atol=1e-4)
    assert [0 if r[1] == "wait" else 1 for r in rows] == list(ref.policy)


def test_asia_command_prints_posteriors() -> None:
    res = CliRunner().invoke(main, ["graphs", "asia", "-e", "xray=yes", "-e", "smoke=yes"])
    assert res.exit_code == 0, res.output
    post = asia_network().marginals(["lung"], {"xray": ["yes"], "smoke": ["yes"]})["lung"]
    assert f"P(lung=yes | evidence) = {post[0, 1]:.4f}" in res.output
    bad = CliRunner().invoke(main, ["graphs", "asia", "-e", "xray=maybe"])
    assert bad.exit_code != 0
    assert "expected VAR=STATE" in bad.output
