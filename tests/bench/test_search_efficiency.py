"""The search bench's intervals: surfaces are the unit it resamples, and a strategy read against itself is even."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import search_efficiency as bench  # noqa: E402


def runs(reach_by_surface: dict[int, list[int]]) -> list[bench.Run]:
    """Studies that reach 97% at the given compile (41: never within 40), a surface's seeds side by side."""
    return [bench.Run(surface=s, curve=[0.5] * (k - 1) + [0.98] * (40 - k + 1) if k <= 40 else [0.5] * 40,
                      measurements=0, compiles=40, baseline=None)
            for s, reaches in reach_by_surface.items() for k in reaches]


def test_reach_is_capped_one_past_the_budget() -> None:
    never, fifth = runs({0: [41, 5]})
    assert bench.reach_or_cap(never, 40) == 41 and bench.reach_or_cap(fifth, 40) == 5
    assert bench.reach_or_cap(fifth, 2) == 3  # not within the first 2 compiles: one past that budget


def test_the_interval_resamples_surfaces_not_studies() -> None:
    # every surface's seeds spread alike: a resample of whole surfaces holds the same studies each time, so its
    # median never moves (a resample of single studies would spread from 5 to 30)
    studies = {"x": runs({0: [5, 20, 30], 1: [30, 5, 20], 2: [20, 30, 5]})}
    assert bench.bootstrap(studies, lambda rs: bench.median_reach(rs["x"], 40)) == (20, 20, 20)
    # surfaces that differ give an interval as wide as they are
    median, low, high = bench.bootstrap({"x": runs({0: [5, 5, 5], 1: [20, 20, 20]})},
                                        lambda rs: bench.median_reach(rs["x"], 40))
    assert (median, low, high) == (12.5, 5, 20)


def test_a_strategy_against_itself_reads_one(capsys: pytest.CaptureFixture[str]) -> None:
    same = runs({0: [4, 9, 30], 1: [12, 41, 7], 2: [8, 8, 20]})
    bench.versus({"local": same, "copy": same}, 40)
    line = capsys.readouterr().out.splitlines()[-1]
    assert "ratio of medians 1.00x [1.00, 1.00]" in line and "(geometric mean) 1.00x [1.00, 1.00]" in line


def test_a_strategy_twice_as_fast_reads_two_with_both_resampled_by_the_same_surfaces(
        capsys: pytest.CaptureFixture[str]) -> None:
    # every study of "fast" takes half the compiles of the same study of local, on surfaces of unlike hardness: the
    # interval stays at 2 only while a resample takes both strategies' studies of the same surfaces
    slow = runs({0: [8, 12, 20], 1: [30, 36, 40], 2: [10, 14, 18]})
    fast = runs({0: [4, 6, 10], 1: [15, 18, 20], 2: [5, 7, 9]})
    bench.versus({"local": slow, "fast": fast}, 40)
    out = capsys.readouterr().out
    assert "local/fast: ratio of medians 2.00x" in out and "(geometric mean) 2.00x [2.00, 2.00]" in out
    bench.versus({"local": fast, "slow": slow}, 40)  # the other way round
    assert "local/slow: ratio of medians 0.50x" in capsys.readouterr().out


def test_a_ratio_past_the_budget_is_a_bound_and_one_surface_has_no_interval(
        capsys: pytest.CaptureFixture[str]) -> None:
    never = runs({0: [41, 41, 41], 1: [41, 41, 41]})
    quick = runs({0: [7, 7, 7], 1: [8, 8, 8]})
    bench.versus({"local": never, "quick": quick, "none": never}, 40)
    quick_line, none_line = capsys.readouterr().out.splitlines()[1:]
    assert "ratio of medians at least 5.47x" in quick_line
    assert "undecided, both past the budget: 1.00x" in none_line
    one = {"x": runs({0: [5, 9, 12]})}
    assert bench.bootstrap(one, lambda rs: bench.median_reach(rs["x"], 40))[0] == 9
    bench.table("one surface", one, 40)
    assert "9        [n/a]" in capsys.readouterr().out
