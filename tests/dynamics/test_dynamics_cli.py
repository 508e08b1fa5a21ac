"""CLI: the Sick-Sicker table and OU bands from the shell."""

from __future__ import annotations

import json

from click.testing import CliRunner

from healthtwin.cli import main


def test_sick_sicker_cli_prints_published_values() -> None:
    res = CliRunner().invoke(main, ["dynamics", "sick-sicker"])
    assert res.exit_code == 0, res.output
    # published: Alarid-Escudero et al. 2023 (PMC9742144), Strategy AB 378,875 USD, 23.137 QALYs
    assert "378,875" in res.output and "23.137" in res.output and "125,764" in res.output


def test_ou_bands_cli_is_labelled_simulated() -> None:
    args = ["dynamics", "ou-bands", "--h0", "160", "--theta", "0.8", "--mu", "100"]
    res = CliRunner().invoke(main, [*args, "--sigma", "12", "--paths", "500"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["label"] == "simulated" and out["unit"] == "mg/dL"
    bad = CliRunner().invoke(main, [*args, "--sigma", "-1"])
    assert bad.exit_code != 0 and "sigma" in bad.output
