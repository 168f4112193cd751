from __future__ import annotations

import math

import pytest

from autotune.backend import AutotuneError, Measurement
from autotune.models import MODELS, get_model
from autotune.objective import (SCENARIOS, evaluate, get_scenario, latency_bound_ms,
                                multistream_p99_ms, server_qps, simulate_server_p99_ms, worst_value)
from autotune.search_space import Candidate, DeviceLimits, QaicSpace


def _measurement(service_ms: list[float], *, batch: int = 1, rate: float = 1000.0) -> Measurement:
    return Measurement(samples_per_second=rate, duration_seconds=5.0, batch_size=batch,
                       latency_samples_ms=[s + 0.2 for s in service_ms], service_samples_ms=service_ms,
                       latency_p90_ms=sorted(service_ms)[int(0.9 * len(service_ms))] + 0.2,
                       latency_p99_ms=max(service_ms) + 0.2)


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
    outcome = evaluate(SCENARIOS["offline"], _measurement([5.0], rate=4378.4), activations=3, bound_ms=None)
    assert outcome.feasible and outcome.value == 4378.4 and not outcome.estimated


def test_singlestream_rule_and_value():
    singlestream = QaicSpace(device=DeviceLimits(nsp_total=16), scenario="singlestream")
    assert singlestream.violations(Candidate(cores=8, batch_size=4))
    assert not singlestream.violations(Candidate(cores=8))
    outcome = evaluate(SCENARIOS["singlestream"], _measurement([1.0] * 50 + [3.0] * 50), activations=1,
                       bound_ms=None)
    assert outcome.value == pytest.approx(3.2) and outcome.feasible and not outcome.estimated


def test_server_rate_respects_the_bound_and_capacity():
    service = [10.0] * 100
    qps, p99 = server_qps(service, batch_size=1, activations=4, bound_ms=100.0)
    capacity = 4 * 1000 / 10.0
    assert 0.7 * capacity < qps <= capacity and p99 <= 100.0
    tighter, _ = server_qps(service, batch_size=1, activations=4, bound_ms=25.0)
    assert tighter < qps
    more, _ = server_qps(service, batch_size=1, activations=8, bound_ms=100.0)
    assert more > 1.7 * qps


def test_server_simulation_queues_under_load():
    service = [10.0] * 10
    light = simulate_server_p99_ms(service, batch_size=1, activations=1, qps=10)
    heavy = simulate_server_p99_ms(service, batch_size=1, activations=1, qps=95)
    assert light < 40 < heavy


def test_server_infeasible_when_service_exceeds_bound():
    outcome = evaluate(SCENARIOS["server"], _measurement([200.0] * 20), activations=2, bound_ms=100.0)
    assert not outcome.feasible and outcome.estimated and "exceeds the 100 ms bound" in outcome.reason


def test_server_batches_raise_rate_when_latency_allows():
    qps1, _ = server_qps([2.0] * 50, batch_size=1, activations=1, bound_ms=100.0)
    qps8, _ = server_qps([4.0] * 50, batch_size=8, activations=1, bound_ms=100.0)
    assert qps8 > 2 * qps1


def test_multistream_spreads_batches_over_activations():
    one = multistream_p99_ms([5.0], batch_size=1, activations=1)
    eight = multistream_p99_ms([5.0], batch_size=1, activations=8)
    assert one == pytest.approx(40.0) and eight == pytest.approx(5.0)
    no_overlap = _measurement([5.0] * 10, rate=800.0)  # 4 activations x 1 sample / 5 ms
    outcome = evaluate(SCENARIOS["multistream"], no_overlap, activations=4, bound_ms=None)
    assert outcome.value == pytest.approx(10.0) and outcome.estimated


def test_missing_latency_samples_is_infeasible():
    m = Measurement(samples_per_second=10, duration_seconds=1, batch_size=1)
    assert not evaluate(SCENARIOS["server"], m, activations=1, bound_ms=10).feasible


def test_server_rate_never_exceeds_measured_throughput():
    slow_card = _measurement([10.0] * 100, rate=200.0)  # 4 activations could do 400/s; the card does 200/s
    outcome = evaluate(SCENARIOS["server"], slow_card, activations=4, bound_ms=100.0)
    assert outcome.feasible and outcome.value <= 200.0
    fast_card = _measurement([10.0] * 100, rate=400.0)
    assert evaluate(SCENARIOS["server"], fast_card, activations=4, bound_ms=100.0).value > outcome.value


def test_pipelined_activations_serve_faster_than_their_latency():
    pipelined = _measurement([10.0] * 100, rate=800.0)  # 4 activations x 1 / 10 ms = 400/s if not overlapped
    outcome = evaluate(SCENARIOS["server"], pipelined, activations=4, bound_ms=100.0)
    assert 400.0 < outcome.value <= 800.0
    assert outcome.figures["server_p99_ms"] >= 10.0


def test_loadgen_figures_are_measured_not_estimated():
    m = Measurement(samples_per_second=90.0, duration_seconds=2, batch_size=1, latency_p90_ms=4.0,
                    latency_p99_ms=9.0, loadgen=True, server_qps=88.0)
    server = evaluate(SCENARIOS["server"], m, activations=1, bound_ms=15.0)
    assert server.value == 88.0 and server.feasible and not server.estimated
    multi = evaluate(SCENARIOS["multistream"], m, activations=1, bound_ms=None)
    assert multi.value == 9.0 and not multi.estimated
    none_valid = Measurement(samples_per_second=5.0, duration_seconds=2, batch_size=1, latency_p99_ms=40.0,
                             loadgen=True, server_qps=0.0)
    outcome = evaluate(SCENARIOS["server"], none_valid, activations=1, bound_ms=15.0)
    assert not outcome.feasible and "best p99 40.00 ms" in outcome.reason
