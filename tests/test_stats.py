"""Wilson intervals against scipy's independent implementation and their textbook properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import binomtest

from healer.stats import wilson


@given(st.integers(min_value=1, max_value=2000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_matches_scipy(case: tuple[int, int]) -> None:
    correct, n = case
    expected = binomtest(correct, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson(correct, n)
    assert low == pytest.approx(expected.low, abs=1e-9)
    assert high == pytest.approx(expected.high, abs=1e-9)
    assert 0.0 <= low <= correct / n <= high <= 1.0


def test_the_papers_sample_size() -> None:
    # 234 episodes near 17 % accuracy: about +-2.5 points of standard error, so about +-5 for a 95 % interval
    low, high = wilson(41, 234)
    assert 0.13 < low < 0.14 and 0.22 < high < 0.23
    assert wilson(0, 234)[1] == pytest.approx(1.959963984540054**2 / (234 + 1.959963984540054**2))


def test_symmetry_and_bad_input() -> None:
    low, high = wilson(7, 50)
    mirrored = wilson(43, 50)
    assert (low, high) == pytest.approx((1 - mirrored[1], 1 - mirrored[0]))
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson(5, 4)
