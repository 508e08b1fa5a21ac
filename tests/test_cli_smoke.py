from click.testing import CliRunner

from healthtwin import __version__
from healthtwin.cli import main


def test_version_prints_package_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output
