"""``as_hw``: the one spelling of a resolution, and its refusals naming the argument."""

from __future__ import annotations

import pytest
import torch

from rezdiff.core.shapes import as_hw


def test_an_int_is_square_and_a_pair_stays_height_then_width() -> None:
    assert as_hw(1) == (1, 1) and as_hw(64) == (64, 64)
    assert as_hw((48, 64)) == (48, 64) and as_hw([3, 5]) == (3, 5)
    hw = as_hw(torch.tensor([6, 2]))
    assert hw == (6, 2) and all(type(v) is int for v in hw)


@pytest.mark.parametrize(
    "value, message",
    [
        ((1, 2, 3), r"size must be an int or \(height, width\), got \(1, 2, 3\)"),
        ([7], r"size must be an int or \(height, width\), got \[7\]"),
        (0, r"size must be positive, got 0"),
        (-4, r"size must be positive, got -4"),
        ((5, 0), r"size must be positive, got \(5, 0\)"),
        ((0, 5), r"size must be positive, got \(0, 5\)"),
    ],
)
def test_bad_resolutions_are_refused_naming_the_argument(value, message) -> None:
    with pytest.raises(ValueError, match=message):
        as_hw(value, name="size")


def test_the_default_name_is_resolution() -> None:
    with pytest.raises(ValueError, match=r"^resolution must be positive, got 0$"):
        as_hw(0)
