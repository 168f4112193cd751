"""Server and MultiStream figures estimated from measured execution times, for backends whose runner does not run
those scenarios itself (Cloud AI 100's qaic-runner; trtexec): a queueing simulation of the measured latencies."""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from autotune.scenarios import MULTISTREAM_SAMPLES_PER_QUERY

if TYPE_CHECKING:
    from autotune.backends.base import Measurement
    from autotune.scenarios import Scenario

ESTIMATED_SCENARIOS = frozenset({"server", "multistream"})  # what a runner's figures can only estimate
SIMULATED_QUERIES = 4000
BISECTION_STEPS = 14


def occupancy_from_rate(samples_per_second: float, *, batch_size: int, activations: int) -> float | None:
    """How long one batch keeps an activation busy under full load, from the measured throughput.

    Shorter than a batch's latency when an activation overlaps executions (SDP pipelines, set size); longer when
    card-wide ceilings (DDR bandwidth, host submission) slow every activation that runs at once.
    """
    if samples_per_second <= 0:
        return None
    return activations * batch_size * 1000.0 / samples_per_second


def _factors(service_ms: list[float], occupancy: float | None) -> tuple[float, float]:
    """(busy, done): a batch with latency sample s frees its activation after s*busy and completes after s*done."""
    if occupancy is None:
        return 1.0, 1.0
    busy = occupancy / (sum(service_ms) / len(service_ms))
    return busy, max(1.0, busy)


def simulate_server_p99_ms(service_ms: list[float], *, batch_size: int, activations: int, qps: float,
                           occupancy_ms: float | None = None, queries: int = SIMULATED_QUERIES,
                           seed: int = 0) -> float:
    """p99 latency of Poisson arrivals at ``qps`` served by ``activations`` instances of a ``batch_size`` QPC.

    An instance that comes free takes every waiting query, up to a full batch; a batch costs one latency sample
    whatever its fill, and keeps the instance busy for its share of the measured throughput (``occupancy_ms``).
    Queries wait in arrival order for a free instance.
    """
    busy, done_factor = _factors(service_ms, occupancy_ms)
    rng = random.Random(seed)
    gap_ms = 1000.0 / qps
    arrivals, t = [], 0.0
    for _ in range(queries):
        t += rng.expovariate(1.0) * gap_ms
        arrivals.append(t)
    free_at = [0.0] * activations
    latencies: list[float] = []
    i = 0
    while i < queries:
        start = max(heapq.heappop(free_at), arrivals[i])
        end_batch = i + 1
        while end_batch < min(i + batch_size, queries) and arrivals[end_batch] <= start:
            end_batch += 1
        sample = rng.choice(service_ms)
        done = start + sample * done_factor
        latencies.extend(done - arrivals[j] for j in range(i, end_batch))
        heapq.heappush(free_at, start + sample * busy)
        i = end_batch
    latencies.sort()
    return latencies[min(len(latencies) - 1, math.ceil(0.99 * len(latencies)) - 1)]


def server_qps(service_ms: list[float], *, batch_size: int, activations: int, bound_ms: float,
               occupancy_ms: float | None = None, seed: int = 0) -> tuple[float, float]:
    """The highest Poisson rate (queries/s) whose simulated p99 stays within ``bound_ms``, and that p99.

    Returns (0, p99 at a near-idle rate) when even a near-idle system breaks the bound.
    """
    per_batch_ms = occupancy_ms or sum(service_ms) / len(service_ms)
    capacity = activations * batch_size * 1000.0 / per_batch_ms

    def p99_at(rate: float) -> float:
        return simulate_server_p99_ms(service_ms, batch_size=batch_size, activations=activations, qps=rate,
                                      occupancy_ms=occupancy_ms, seed=seed)

    low = capacity * 0.01
    idle_p99 = p99_at(low)
    if idle_p99 > bound_ms:
        return 0.0, idle_p99
    near_capacity = capacity * (1 - 0.5 ** BISECTION_STEPS)
    saturated_p99 = p99_at(near_capacity)
    if saturated_p99 <= bound_ms:  # the bound is loose: the rate is limited by throughput alone
        return near_capacity, saturated_p99
    high, best_p99 = near_capacity, idle_p99
    for _ in range(BISECTION_STEPS):
        mid = (low + high) / 2
        p99 = p99_at(mid)
        if p99 <= bound_ms:
            low, best_p99 = mid, p99
        else:
            high = mid
    return low, best_p99


def multistream_p99_ms(service_ms: list[float], *, batch_size: int, activations: int,
                       occupancy_ms: float | None = None, queries: int = SIMULATED_QUERIES, seed: int = 0) -> float:
    """p99 latency of 8-sample queries: ceil(8/batch) batches spread over the activations, back to back."""
    busy, done_factor = _factors(service_ms, occupancy_ms)
    rng = random.Random(seed)
    batches = math.ceil(MULTISTREAM_SAMPLES_PER_QUERY / batch_size)
    latencies = []
    for _ in range(queries):
        free_at = [0.0] * min(activations, batches)
        finished = 0.0
        for _ in range(batches):
            start, sample = heapq.heappop(free_at), rng.choice(service_ms)
            heapq.heappush(free_at, start + sample * busy)
            finished = max(finished, start + sample * done_factor)
        latencies.append(finished)
    latencies.sort()
    return latencies[min(len(latencies) - 1, math.ceil(0.99 * len(latencies)) - 1)]


def estimate_scenario(m: Measurement, scenario: Scenario, *, concurrency: int, bound_ms: float | None) -> None:
    """Fill a measurement's server or multistream figure from its per-batch times and measured throughput, with
    ``concurrency`` batches served at once (activations, inference streams); marked estimated."""
    service = m.service_samples_ms or m.latency_samples_ms
    if not service:
        return
    occupancy = occupancy_from_rate(m.samples_per_second, batch_size=m.batch_size, activations=concurrency)
    m.estimated = True
    if scenario.name == "multistream":
        m.multistream_p99_ms = multistream_p99_ms(service, batch_size=m.batch_size, activations=concurrency,
                                                  occupancy_ms=occupancy)
    else:
        assert bound_ms is not None
        m.server_qps, m.server_p99_ms = server_qps(service, batch_size=m.batch_size, activations=concurrency,
                                                   bound_ms=bound_ms, occupancy_ms=occupancy)


def estimate_figures(m: Measurement) -> dict[str, float]:
    """The scenario figures an estimated measurement holds, by name: what a measured one keeps beside it."""
    return {k: v for k in ("server_qps", "server_p99_ms", "multistream_p99_ms") if (v := getattr(m, k)) is not None}


def measured_beside_estimate(scenario: Scenario, *, measure: Callable[[], Measurement],
                             estimate: Callable[[], Measurement]) -> Measurement:
    """The scenario run through a runtime (``measure``), with what the runner's path (``estimate``) makes of it kept
    beside (``estimate_figures``) where that path can only estimate it."""
    old = estimate() if scenario.name in ESTIMATED_SCENARIOS else None
    measurement = measure()
    if old is not None:
        measurement.estimate_figures = estimate_figures(old)
    return measurement


def measured_by(scenario: Scenario, *, runtime_found: bool, note: str, runner: str) -> str:
    """How a study's figures come, for the run's header: measured through the runtime (``note`` names it), or
    estimated from ``runner``'s times and why (``note`` says why)."""
    if runtime_found:
        return f"; every scenario measured by LoadGen through {note}"
    if scenario.name in ESTIMATED_SCENARIOS:
        return f"; {scenario.name} figures estimated from {runner}'s times: {note}"
    return ""
