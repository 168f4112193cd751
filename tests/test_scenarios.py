from __future__ import annotations

import math

import pytest

from autotune.backends.base import Measurement
from autotune.errors import AutotuneError
from autotune.models import MODELS, get_model
from autotune.scenarios import SCENARIOS, get_scenario, judge, latency_bound_ms, worst_value


def test_scenarios_and_directions():
    assert {s: SCENARIOS[s].direction for s in SCENARIOS} == {
        "offline": "maximize", "server": "maximize", "singlestream": "minimize", "multistream": "minimize"}
    with pytest.raises(AutotuneError, match="known scenarios are offline, server"):
        get_scenario("batch")
    assert worst_value(SCENARIOS["offline"]) == 0.0 and math.isinf(worst_value(SCENARIOS["singlestream"]))


def test_latency_bounds_from_model_or_override():
    server = SCENARIOS["server"]
    assert latency_bound_ms(server, MODELS["retinanet"], None) == 100.0
    assert latency_bound_ms(server, MODELS["retinanet"], 50.0) == 50.0
    with pytest.raises(AutotuneError, match="no MLPerf latency bound for server.*--latency-bound-ms"):
        latency_bound_ms(server, get_model("mine", onnx_given=True), None)
    assert latency_bound_ms(SCENARIOS["offline"], get_model("mine", onnx_given=True), None) is None


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
