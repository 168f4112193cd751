"""MLPerf scenarios as data: what each optimises, in which direction, and its latency bound (``objective.judge``
turns a measurement into a scenario's value)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

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
