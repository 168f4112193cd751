from __future__ import annotations

import pytest

from autotune.backends._queueing import multistream_p99_ms, occupancy_from_rate, server_qps, simulate_server_p99_ms


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


def test_server_batches_raise_rate_when_latency_allows():
    qps1, _ = server_qps([2.0] * 50, batch_size=1, activations=1, bound_ms=100.0)
    qps8, _ = server_qps([4.0] * 50, batch_size=8, activations=1, bound_ms=100.0)
    assert qps8 > 2 * qps1


def test_a_service_time_beyond_the_bound_gives_no_rate():
    qps, p99 = server_qps([200.0] * 20, batch_size=1, activations=2, bound_ms=100.0)
    assert qps == 0.0 and p99 > 100.0


def test_multistream_spreads_batches_over_activations():
    one = multistream_p99_ms([5.0], batch_size=1, activations=1)
    eight = multistream_p99_ms([5.0], batch_size=1, activations=8)
    assert one == pytest.approx(40.0) and eight == pytest.approx(5.0)


def test_occupancy_comes_from_the_measured_rate():
    assert occupancy_from_rate(400.0, batch_size=1, activations=4) == pytest.approx(10.0)
    assert occupancy_from_rate(0.0, batch_size=1, activations=4) is None
