import numpy as np
import pytest
from sklearn.base import clone

from healthtwin.models import OutOfRangeError, TwinModel, check_range


class _Toy(TwinModel):
    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha


def test_check_range_names_value_range_and_index() -> None:
    with pytest.raises(
        OutOfRangeError, match=r"age = 19 a is outside the valid range \[40, 79\] a"
    ):
        check_range("age", np.array([55.0, 19.0]), 40, 79, "a")
    check_range("age", [19.0], 40, 79, "a", allow_extrapolation=True)


def test_nan_is_out_of_range() -> None:
    with pytest.raises(OutOfRangeError):
        check_range("sbp", [np.nan], 90, 200, "mm[Hg]")


def test_clone_keeps_hyperparameters() -> None:
    assert clone(_Toy(alpha=3.0)).get_params() == {"alpha": 3.0}
