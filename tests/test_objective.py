"""A trial's value on its own: the scenarios' figures and rules, the measurement that stands for repeats, the accuracy
guard's verdict, the log spread, the records told to the study and the count of compiles."""

from __future__ import annotations

import math

import numpy as np
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial

from autotune.backends.base import Measurement
from autotune.objective import (Outcome, accuracy_failure, best_setting, closest_to_median, compiles, guarded,
                                infeasible, judge, log_spread, new_compile, score, worst_value)
from autotune.results import attrs
from autotune.scenarios import SCENARIOS


def test_the_worst_value_is_what_no_figure_is_told_as():
    assert worst_value(SCENARIOS["offline"]) == 0.0 and math.isinf(worst_value(SCENARIOS["singlestream"]))


def test_offline_value_is_throughput():
    m = Measurement(samples_per_second=4378.4, duration_seconds=5.0, batch_size=1, latency_p99_ms=9.0)
    outcome = judge(SCENARIOS["offline"], m, bound_ms=None)
    assert outcome.feasible and outcome.value == 4378.4 and not outcome.estimated


def test_singlestream_value_is_p90_and_a_bound_applies():
    m = Measurement(samples_per_second=100.0, duration_seconds=5.0, batch_size=1, latency_p90_ms=3.2)
    outcome = judge(SCENARIOS["singlestream"], m, bound_ms=None)
    assert outcome.value == pytest.approx(3.2) and outcome.feasible and outcome.figures == {"p90_ms": 3.2}
    bounded = judge(SCENARIOS["singlestream"], m, bound_ms=3.0)
    assert not bounded.feasible and "p90 latency 3.20 ms exceeds the 3 ms bound" in bounded.reason


def test_loadgen_figures_are_measured_not_estimated():
    m = Measurement(samples_per_second=90.0, duration_seconds=2, batch_size=1, latency_p90_ms=4.0,
                    latency_p99_ms=9.0, loadgen=True, server_qps=88.0, server_p99_ms=9.0, multistream_p99_ms=9.0)
    server = judge(SCENARIOS["server"], m, bound_ms=15.0)
    assert server.value == 88.0 and server.feasible and not server.estimated
    assert server.figures == {"server_qps": 88.0, "server_p99_ms": 9.0, "latency_bound_ms": 15.0}
    multi = judge(SCENARIOS["multistream"], m, bound_ms=None)
    assert multi.value == 9.0 and not multi.estimated
    none_valid = Measurement(samples_per_second=5.0, duration_seconds=2, batch_size=1, latency_p99_ms=40.0,
                             loadgen=True, server_qps=0.0, server_p99_ms=40.0)
    outcome = judge(SCENARIOS["server"], none_valid, bound_ms=15.0)
    assert not outcome.feasible and "best p99 40.00 ms" in outcome.reason


def test_estimated_figures_keep_their_mark_and_their_reason():
    m = Measurement(samples_per_second=5.0, duration_seconds=2, batch_size=1, estimated=True, server_qps=0.0,
                    server_p99_ms=200.0, multistream_p99_ms=12.0)
    server = judge(SCENARIOS["server"], m, bound_ms=100.0)
    assert not server.feasible and server.estimated and "exceeds the 100 ms bound even at low load" in server.reason
    multi = judge(SCENARIOS["multistream"], m, bound_ms=None)
    assert multi.feasible and multi.estimated and multi.value == 12.0


def test_a_missing_figure_is_infeasible():
    m = Measurement(samples_per_second=10, duration_seconds=1, batch_size=1)
    assert not judge(SCENARIOS["server"], m, bound_ms=10).feasible
    outcome = judge(SCENARIOS["singlestream"], m, bound_ms=None)
    assert not outcome.feasible and math.isinf(outcome.value) and "no latency" in outcome.reason


def test_a_score_is_higher_for_better_and_none_when_infeasible():
    assert score(Outcome(value=5.0, feasible=True), maximize=True) == 5.0
    assert score(Outcome(value=5.0, feasible=True), maximize=False) == -5.0
    assert score(Outcome(value=5.0, feasible=False, reason="too slow"), maximize=True) is None


def test_the_accuracy_verdict_fails_a_drop_beyond_the_allowed_one_and_passes_it_exactly():
    assert accuracy_failure(metric="top1", value=0.75, reference=0.76, allowed=0.01, max_drop="0.01") is None
    assert accuracy_failure(metric="top1", value=0.74, reference=0.76, allowed=0.0076, max_drop="1%") == (
        "top1 0.74 is 0.02 below the fp32 reference's 0.76, more than --max-drop 1% (0.0076)")
    assert accuracy_failure(metric="top1", value=0.8, reference=0.76, allowed=0.0, max_drop="0") is None  # better


def test_a_study_is_guarded_where_knobs_change_numerics_or_a_precision_is_searched():
    assert guarded(changes_numerics=True, domains={"batch_size": [1, 2]})
    assert guarded(changes_numerics=False, domains={"precision": ["fp32", "int8"]})
    assert not guarded(changes_numerics=False, domains={"batch_size": [1, 2], "precision": ["fp32"]})


def test_the_measurement_closest_to_the_median_stands_for_repeats():
    assert closest_to_median([10.0, 30.0, 21.0, 19.0], 20.0) == 2  # 21 and 19 tie: the first of them
    assert closest_to_median([10.0, 30.0, 21.0, 19.0], 29.0) == 1  # a median taken over some of them only
    assert closest_to_median([7.0], 7.0) == 0


def test_the_best_setting_is_chosen_by_its_median_feasible_settings_first():
    ok = lambda value: Outcome(value=value, feasible=True)  # noqa: E731
    measured = [("a", ok(100.0)), ("b", ok(130.0)), ("b", ok(90.0)), ("b", ok(95.0)), ("c", ok(200.0)),
                ("c", Outcome(value=50.0, feasible=False, reason="bound"))]
    assert best_setting(measured, maximize=True) == 0  # b's median 95 < a's 100; c broke the rule once
    assert best_setting(measured, maximize=False) == 3  # b's median 95 is the lowest: its 95 stands for it
    broken = [("x", Outcome(value=3.0, feasible=False)), ("y", Outcome(value=1.0, feasible=False))]
    assert best_setting(broken, maximize=True) == 0  # none feasible: the best median of them all


def test_the_log_spread_is_the_sample_deviation_of_logs():
    values = [100.0, 110.0, 90.0, 105.0]
    assert log_spread(np.log(values)) == pytest.approx(float(np.std(np.log(values), ddof=1)))
    assert log_spread([0.0, 0.0]) == 0.0


def test_failures_are_infeasible_or_retried():
    record = infeasible(SCENARIOS["singlestream"], {"flags": "x"}, "compile", "does not fit")
    assert not record.feasible and not record.retry and math.isinf(record.value)
    assert record.attrs == {"flags": "x", attrs.FAILURE_STAGE: "compile", attrs.FAILURE_REASON: "does not fit"}
    timed_out = infeasible(SCENARIOS["offline"], {}, "measure", "timed out", retry=True)
    assert timed_out.retry and timed_out.value == 0.0 and timed_out.attrs[attrs.FAILURE_STAGE] == "measure"


def test_a_proposal_takes_a_compile_unless_settled_or_measured_on_a_model_the_study_holds():
    assert new_compile(settled=False, compiled_before=False, shares_model=True)
    assert not new_compile(settled=True, compiled_before=False, shares_model=True)
    assert not new_compile(settled=False, compiled_before=True, shares_model=True)
    assert new_compile(settled=False, compiled_before=True, shares_model=False)  # the sampler drew runtime knobs


def _trial(number: int, state: TrialState = TrialState.COMPLETE, **stored):
    return create_trial(state=state, value=1.0 if state == TrialState.COMPLETE else None,
                        params={"x": number}, distributions={"x": IntDistribution(0, 100)}, user_attrs=stored)


def test_compiles_are_counted_from_the_stored_flag():
    flagged = [_trial(0, compile_key="a", new_compile=True), _trial(1, compile_key="a", new_compile=False),
               _trial(2, compile_key="b", new_compile=True),
               _trial(3, TrialState.FAIL, compile_key="c", new_compile=True)]  # a failed trial is not counted
    assert compiles(flagged) == 2
