"""Issue 3 performance targets in one run: risk (PCE, logistic vs statsmodels), dynamics
(Markov microsimulation, SDE ensembles) and graphs (Bayesian networks vs pgmpy, MDPs vs
pymdptoolbox). Each part prints its own figures and ratios.

    .venv/bin/python benchmarks/models.py
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

for name in ("models_risk", "models_dynamics", "models_graphs"):
    print(f"==== {name} ====", flush=True)
    importlib.import_module(name).main()
