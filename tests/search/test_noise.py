"""The study's measurement noise: its pooled spread, and which values are worth measuring again."""

from __future__ import annotations

import pytest

from autotune.search.noise import PRIOR_SIGMA, Noise


def test_the_spread_is_the_prior_until_three_repeats_are_known_then_pooled():
    noise = Noise(maximize=True)
    noise.add([100.0, 102.0])
    assert noise.sigma == PRIOR_SIGMA  # one degree of freedom says little
    noise.add([50.0, 51.0, 49.0])
    assert noise.sigma == pytest.approx(0.01822, abs=1e-5)  # sqrt((2 (1/101)^2 + 2 (0.02)^2) / 3)


def test_a_value_within_one_sigma_of_the_best_is_measured_again_and_one_further_away_is_not():
    noise = Noise(maximize=True)
    assert not noise.close_to_best(100.0)  # nothing to compare with yet
    noise.offer(100.0)
    assert noise.close_to_best(100.0 * (1 - 0.9 * PRIOR_SIGMA)) and noise.close_to_best(110.0)
    assert not noise.close_to_best(100.0 * (1 - 1.5 * PRIOR_SIGMA))
    noise.drifted(-2.0)  # a machine that drifts 2% widens the band by as much
    assert noise.close_to_best(100.0 * (1 - 1.5 * PRIOR_SIGMA))


def test_for_a_latency_lower_is_better():
    noise = Noise(maximize=False)
    noise.offer(10.0)
    noise.offer(12.0)  # not the best
    assert noise.best == 10.0
    assert noise.close_to_best(10.0 * (1 + 0.9 * PRIOR_SIGMA)) and not noise.close_to_best(10.0 * (1 + 2 * PRIOR_SIGMA))


def test_the_band_is_the_noise_objects_own_so_a_wider_one_changes_no_other_study():
    wide, default = Noise(maximize=True, close_sigmas=2.0), Noise(maximize=True)
    for noise in (wide, default):
        noise.offer(100.0)
    value = 100.0 * (1 - 1.5 * PRIOR_SIGMA)
    assert wide.close_to_best(value) and not default.close_to_best(value)
