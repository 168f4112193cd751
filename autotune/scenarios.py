"""MLPerf scenarios as data, and how a measurement's figures become a value and a feasibility verdict."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from autotune.errors import AutotuneError

if TYPE_CHECKING:
    from autotune.models import ModelSpec

MULTISTREAM_SAMPLES_PER_QUERY = 8


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """An MLPerf scenario: what is optimised, in which direction, under which rule.

    ``figure`` names the Measurement field that holds the scenario's value.
    """

    name: str
    metric: str
    unit: str
    direction: Literal["maximize", "minimize"]
    needs_latency_bound: bool
    description: str
    figure: str


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(name="offline", metric="samples/s", unit="samples/s", direction="maximize",
                 needs_latency_bound=False, description="maximise throughput, all samples at once",
                 figure="samples_per_second"),
        Scenario(name="server", metric="server QPS", unit="queries/s", direction="maximize",
                 needs_latency_bound=True,
                 description="maximise the Poisson arrival rate whose p99 latency stays within the bound",
                 figure="server_qps"),
        Scenario(name="singlestream", metric="p90 latency", unit="ms", direction="minimize",
                 needs_latency_bound=False, description="minimise p90 latency, one sample at a time",
                 figure="latency_p90_ms"),
        Scenario(name="multistream", metric="p99 latency", unit="ms", direction="minimize",
                 needs_latency_bound=False,
                 description=f"minimise p99 latency of {MULTISTREAM_SAMPLES_PER_QUERY}-sample queries",
                 figure="multistream_p99_ms"),
    )
}
# the keys of a trial's stored ``scenario_figures``, per scenario
_FIGURE_KEYS = {"singlestream": "p90_ms", "multistream": "multistream_p99_ms"}


class Figures(Protocol):
    """What a scenario reads of a measurement (a backend's Measurement has these fields)."""

    samples_per_second: float
    latency_p90_ms: float | None
    server_qps: float | None
    server_p99_ms: float | None
    multistream_p99_ms: float | None
    estimated: bool


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


def judge(scenario: Scenario, measurement: Figures, *, bound_ms: float | None) -> Outcome:
    """The scenario's value from a measurement, and infeasible with a reason when it breaks the scenario's rule."""
    m = measurement
    if scenario.name == "offline":
        return Outcome(value=m.samples_per_second, feasible=True)
    if scenario.name == "server":
        assert bound_ms is not None
        figures = {"server_qps": m.server_qps, "server_p99_ms": m.server_p99_ms, "latency_bound_ms": bound_ms}
        if m.server_qps:
            return Outcome(value=m.server_qps, feasible=True, estimated=m.estimated, figures=figures)
        p99 = f"{m.server_p99_ms:.2f} ms" if m.server_p99_ms is not None else "none"
        reason = (f"p99 latency {p99} exceeds the {bound_ms:g} ms bound even at low load" if m.estimated else
                  f"no target QPS kept p99 within {bound_ms:g} ms (best p99 {p99})")
        return Outcome(value=0.0, feasible=False, estimated=m.estimated, figures=figures, reason=reason)
    value = getattr(m, scenario.figure)
    if value is None:
        return Outcome(value=worst_value(scenario), feasible=False, reason="no latency was measured")
    figures = {_FIGURE_KEYS[scenario.name]: value}
    if bound_ms is not None and value > bound_ms:
        return Outcome(value=value, feasible=False, estimated=m.estimated, figures=figures,
                       reason=f"{scenario.metric} {value:.2f} ms exceeds the {bound_ms:g} ms bound")
    return Outcome(value=value, feasible=True, estimated=m.estimated, figures=figures)
