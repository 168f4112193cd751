"""The statistics of validation: intervals, paired gains, and how often noise passes for a gain."""

from __future__ import annotations

import math
import random

import pytest

from autotune.search.significance import interval, paired_gain


def _rounds(rng: random.Random, value: float, noise: float, n: int) -> list[float]:
    return [value * math.exp(rng.gauss(0.0, noise)) for _ in range(n)]


def test_an_interval_holds_its_median_and_narrows_with_more_samples():
    rng = random.Random(1)
    few, many = interval(_rounds(rng, 100.0, 0.05, 4)), interval(_rounds(rng, 100.0, 0.05, 40))
    assert few.low <= few.median <= few.high and many.low <= many.median <= many.high
    assert many.high - many.low < few.high - few.low
    one = interval([7.0])
    assert one.low == one.median == one.high == 7.0
    with pytest.raises(ValueError):
        interval([])


def test_gains_are_paired_by_round_so_a_shared_drift_cancels():
    drift = [100.0, 80.0, 120.0, 90.0, 110.0]  # the machine, not the candidates
    gain = paired_gain([d * 1.05 for d in drift], drift, maximize=True)
    assert gain is not None and gain.significant and gain.pct == pytest.approx(5.0)
    assert paired_gain([d * 1.05 for d in drift], drift, maximize=False).pct == pytest.approx(-100 / 21)
    assert paired_gain([1.0], [1.0], maximize=True) is None


def test_noise_passes_for_a_gain_at_most_alpha_and_a_planted_gain_is_found():
    rng = random.Random(7)
    false = found = 0
    for _ in range(400):
        base = _rounds(rng, 100.0, 0.03, 5)
        same = [paired_gain(_rounds(rng, 100.0, 0.03, 5), base, maximize=True, comparisons=3) for _ in range(3)]
        false += any(g is not None and g.significant for g in same)
        better = paired_gain(_rounds(rng, 110.0, 0.03, 5), base, maximize=True, comparisons=3)
        found += better is not None and better.significant
    assert false / 400 <= 0.06
    assert found / 400 >= 0.9
