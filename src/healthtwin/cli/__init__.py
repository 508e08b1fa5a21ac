"""The ``healthtwin`` command line.

Every module in this package that defines ``register(group: click.Group) -> None`` adds its
commands to the top-level group, so capabilities plug in without editing this file.
"""

from __future__ import annotations

import importlib
import pkgutil

import click

from healthtwin import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="healthtwin")
def main() -> None:
    """healthtwin: healthcare digital twins (patient, facility, cohort)."""


def _register_all() -> None:
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{mod.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(main)


_register_all()
