"""How far the estimates were from the measurements across a study, as the report's summary says it."""

from __future__ import annotations

import pandas as pd
import pytest

from autotune.results.estimates import estimate_gap, estimate_gap_html


def test_the_gap_over_trials_with_a_measurement_and_an_estimate():
    frame = pd.DataFrame({"value": [100.0, 200.0, 300.0, None, 50.0],
                          "scenario_estimate": [110.0, 180.0, 330.0, 90.0, None]})
    gap = estimate_gap(frame)
    assert gap == pytest.approx({"trials": 3, "median_pct": 10.0, "low_pct": -10.0, "high_pct": 10.0,
                                 "rank_rho": 1.0})
    html = estimate_gap_html(frame)
    assert 'data-key="estimate_gap"' in html and "+10.0% from the measurement at the median, -10.0% to +10.0%" in html
    assert "Spearman&#x27;s rho 1.00" in html


def test_a_study_with_no_estimate_beside_says_nothing():
    assert estimate_gap(pd.DataFrame({"value": [1.0]})) is None
    assert estimate_gap_html(pd.DataFrame({"value": [1.0], "scenario_estimate": [None]})) == ""
    two = estimate_gap(pd.DataFrame({"value": [1.0, 2.0], "scenario_estimate": [2.0, 1.0]}))
    assert two is not None and two["rank_rho"] is None  # too few to rank
