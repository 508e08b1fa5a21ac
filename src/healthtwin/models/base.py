"""The one estimator interface shared by every healthtwin model.

Conventions (scikit-learn's): hyperparameters are ``__init__`` arguments stored as given;
``fit(...)`` validates its inputs and returns ``self``; learned attributes end in ``_``;
``predict`` / ``predict_proba`` / ``simulate`` return NumPy arrays whose first axis is
patients (or replications). Inheriting :class:`sklearn.base.BaseEstimator` gives
``get_params`` / ``set_params`` / ``clone`` so evaluation, trials and reports can use any model.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError


class TwinModel(BaseEstimator):  # type: ignore[misc]
    """Base class for healthtwin models (scikit-learn conventions)."""

    def _require_fitted(self, *attributes: str) -> None:
        missing = [a for a in attributes if not hasattr(self, a)]
        if missing:
            raise NotFittedError(
                f"{type(self).__name__} is not fitted yet (missing {', '.join(missing)}); "
                "call fit(...) first"
            )


class OutOfRangeError(ValueError):
    """An input lies outside the range a model or equation was derived on."""


def check_range(
    name: str,
    values: ArrayLike,
    low: float,
    high: float,
    unit: str,
    *,
    allow_extrapolation: bool = False,
) -> None:
    """Raise :class:`OutOfRangeError` naming the valid range if any value is outside it.

    ``unit`` is the UCUM unit of ``values`` and of the bounds. With
    ``allow_extrapolation=True`` the check is skipped (the caller documents that choice).
    """
    if allow_extrapolation:
        return
    arr = np.asarray(values, dtype=float)
    bad = ~((arr >= low) & (arr <= high))
    if np.any(bad):
        idx = np.flatnonzero(np.ravel(bad))
        first = float(np.ravel(arr)[idx[0]])
        raise OutOfRangeError(
            f"{name} = {first:g} {unit} is outside the valid range [{low:g}, {high:g}] {unit}"
            f" ({idx.size} of {arr.size} value(s) out of range, first at index {int(idx[0])}); "
            "pass allow_extrapolation=True to compute anyway"
        )
