"""Pure mathematics of clinical twins: no I/O, vectorised over patients (first axis).

Every estimator follows scikit-learn's conventions (see :mod:`healthtwin.models.base`).
"""

from healthtwin.models.base import OutOfRangeError, TwinModel, check_range

__all__ = ["OutOfRangeError", "TwinModel", "check_range"]
