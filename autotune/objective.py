"""MLPerf scenarios as data, and how a Measurement becomes a value and a feasibility verdict."""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field
from typing import Any, Literal

from autotune.backend import AutotuneError, Measurement
from autotune.models import ModelSpec

MULTISTREAM_SAMPLES_PER_QUERY = 8
SIMULATED_QUERIES = 4000
BISECTION_STEPS = 14


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """An MLPerf scenario: what is optimised, in which direction, under which rule."""

    name: str
    metric: str
    unit: str
    direction: Literal["maximize", "minimize"]
    needs_latency_bound: bool
    description: str


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(name="offline", metric="samples/s", unit="samples/s", direction="maximize",
                 needs_latency_bound=False, description="maximise throughput, all samples at once"),
        Scenario(name="server", metric="server QPS", unit="queries/s", direction="maximize",
                 needs_latency_bound=True,
                 description="maximise the Poisson arrival rate whose p99 latency stays within the bound"),
        Scenario(name="singlestream", metric="p90 latency", unit="ms", direction="minimize",
                 needs_latency_bound=False, description="minimise p90 latency, one sample at a time"),
        Scenario(name="multistream", metric="p99 latency", unit="ms", direction="minimize",
                 needs_latency_bound=False,
                 description=f"minimise p99 latency of {MULTISTREAM_SAMPLES_PER_QUERY}-sample queries"),
    )
}


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """A measurement judged by a scenario: the value to optimise and whether it is feasible (and why not)."""

    value: float
    feasible: bool
    reason: str | None = None
    estimated: bool = False
    figures: dict[str, Any] = field(default_factory=dict)


def get_scenario(name: str) -> Scenario:
    """The scenario called ``name``; unknown names get an error listing the known ones."""
    if name not in SCENARIOS:
        raise AutotuneError(f"unknown scenario {name!r}: known scenarios are {', '.join(SCENARIOS)}")
    return SCENARIOS[name]


def latency_bound_ms(scenario: Scenario, model: ModelSpec, override_ms: float | None) -> float | None:
    """The p99 bound for this scenario: ``--latency-bound-ms`` if given, else the model's MLPerf bound."""
    if override_ms is not None:
        if override_ms <= 0:
            raise AutotuneError(f"--latency-bound-ms must be positive, not {override_ms:g}")
        return override_ms
    bound = model.latency_bounds_ms.get(scenario.name)
    if bound is None and scenario.needs_latency_bound:
        raise AutotuneError(f"{model.name} has no MLPerf latency bound for {scenario.name}: "
                            f"pass --latency-bound-ms MS")
    return bound


def worst_value(scenario: Scenario) -> float:
    """The value told to the study for a candidate that produced no figure."""
    return 0.0 if scenario.direction == "maximize" else math.inf


def evaluate(scenario: Scenario, measurement: Measurement, *, activations: int,
             bound_ms: float | None, seed: int = 0) -> Outcome:
    """Judge a measurement: the scenario's value, and infeasible with a reason when it breaks the rule."""
    if scenario.name == "offline":
        return Outcome(value=measurement.samples_per_second, feasible=True)
    if measurement.loadgen:
        return _measured(scenario, measurement, bound_ms)
    if not measurement.service_samples_ms and not measurement.latency_samples_ms:
        return Outcome(value=worst_value(scenario), feasible=False, reason="no latency samples were measured")
    if scenario.name == "singlestream":
        p90 = measurement.latency_p90_ms
        assert p90 is not None
        return _bounded(scenario, p90, p90, bound_ms, estimated=False, figures={"p90_ms": p90})
    service = measurement.service_samples_ms or measurement.latency_samples_ms
    occupancy = occupancy_ms(measurement, activations)
    if scenario.name == "multistream":
        p99 = multistream_p99_ms(service, batch_size=measurement.batch_size, activations=activations,
                                 occupancy_ms=occupancy, seed=seed)
        return _bounded(scenario, p99, p99, bound_ms, estimated=True, figures={"multistream_p99_ms": p99})
    assert bound_ms is not None
    qps, p99 = server_qps(service, batch_size=measurement.batch_size, activations=activations,
                          bound_ms=bound_ms, occupancy_ms=occupancy, seed=seed)
    figures = {"server_qps": qps, "server_p99_ms": p99, "latency_bound_ms": bound_ms}
    if qps <= 0:
        return Outcome(value=0.0, feasible=False, estimated=True, figures=figures,
                       reason=f"p99 latency {p99:.2f} ms exceeds the {bound_ms:g} ms bound even at low load")
    return Outcome(value=qps, feasible=True, estimated=True, figures=figures)


def _measured(scenario: Scenario, m: Measurement, bound_ms: float | None) -> Outcome:
    """A scenario LoadGen ran itself: its figures are the value, nothing is estimated."""
    if scenario.name == "server":
        assert bound_ms is not None
        figures = {"server_qps": m.server_qps, "server_p99_ms": m.latency_p99_ms, "latency_bound_ms": bound_ms}
        if not m.server_qps:
            best = f"{m.latency_p99_ms:.2f} ms" if m.latency_p99_ms is not None else "none"
            return Outcome(value=0.0, feasible=False, figures=figures,
                           reason=f"no target QPS kept p99 within {bound_ms:g} ms (best p99 {best})")
        return Outcome(value=m.server_qps, feasible=True, figures=figures)
    value = m.latency_p90_ms if scenario.name == "singlestream" else m.latency_p99_ms
    if value is None:
        return Outcome(value=worst_value(scenario), feasible=False, reason="LoadGen reported no latency")
    key = "p90_ms" if scenario.name == "singlestream" else "multistream_p99_ms"
    return _bounded(scenario, value, value, bound_ms, estimated=False, figures={key: value})


def _bounded(scenario: Scenario, value: float, p99: float, bound_ms: float | None, *, estimated: bool,
             figures: dict[str, Any]) -> Outcome:
    if bound_ms is not None and p99 > bound_ms:
        return Outcome(value=value, feasible=False, estimated=estimated, figures=figures,
                       reason=f"{scenario.metric} {p99:.2f} ms exceeds the {bound_ms:g} ms bound")
    return Outcome(value=value, feasible=True, estimated=estimated, figures=figures)


def occupancy_ms(measurement: Measurement, activations: int) -> float | None:
    """How long one batch keeps an activation busy under full load, from the measured throughput.

    Shorter than a batch's latency when an activation overlaps executions (SDP pipelines, set size); longer when
    card-wide ceilings (DDR bandwidth, host submission) slow every activation that runs at once.
    """
    if measurement.samples_per_second <= 0:
        return None
    return activations * measurement.batch_size * 1000.0 / measurement.samples_per_second


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
