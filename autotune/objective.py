"""A trial's value, as pure functions: a scenario's figure from a measurement and whether it keeps the scenario's rule,
the measurement that stands for repeats, the accuracy guard's verdict, the log spread of repeats, the record told to
the study, and the count of a study's compiles (the read side's too: nothing here imports the search or a backend).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from autotune.results import attrs
from autotune.scenarios import Scenario

if TYPE_CHECKING:  # the protocol only: the read side imports this module, and no backend
    from autotune.backends.base import Measurement

# the keys of a trial's stored ``scenario_figures``, per scenario
_FIGURE_KEYS = {"singlestream": "p90_ms", "multistream": "multistream_p99_ms"}


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """A measurement judged by a scenario: the value to optimise and whether it is feasible (and why not)."""

    value: float
    feasible: bool
    reason: str | None = None
    estimated: bool = False
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class TrialRecord:
    """What one evaluated candidate produced: value, feasibility and the attributes stored on its trial."""

    value: float
    feasible: bool
    attrs: dict[str, Any] = field(default_factory=dict)
    retry: bool = False


def worst_value(scenario: Scenario) -> float:
    """The value told to the study for a candidate that produced no figure."""
    return 0.0 if scenario.direction == "maximize" else math.inf


def judge(scenario: Scenario, measurement: Measurement, *, bound_ms: float | None) -> Outcome:
    """The scenario's value from a measurement, and infeasible with a reason when it breaks the scenario's rule."""
    m = measurement
    if scenario.name == "offline":
        return Outcome(value=m.samples_per_second, feasible=True)
    if scenario.name == "server":
        assert bound_ms is not None
        figures = {"server_qps": m.server_qps, "server_p99_ms": m.server_p99_ms, "latency_bound_ms": bound_ms,
                   **_estimate(m, scenario)}
        if m.server_qps:
            return Outcome(value=m.server_qps, feasible=True, estimated=m.estimated, figures=figures)
        p99 = f"{m.server_p99_ms:.2f} ms" if m.server_p99_ms is not None else "none"
        reason = (f"p99 latency {p99} exceeds the {bound_ms:g} ms bound even at low load" if m.estimated else
                  f"no target QPS kept p99 within {bound_ms:g} ms (best p99 {p99})")
        return Outcome(value=0.0, feasible=False, estimated=m.estimated, figures=figures, reason=reason)
    value = getattr(m, scenario.figure)
    if value is None:
        return Outcome(value=worst_value(scenario), feasible=False, reason="no latency was measured")
    figures = {_FIGURE_KEYS[scenario.name]: value, **_estimate(m, scenario)}
    if bound_ms is not None and value > bound_ms:
        return Outcome(value=value, feasible=False, estimated=m.estimated, figures=figures,
                       reason=f"{scenario.metric} {value:.2f} ms exceeds the {bound_ms:g} ms bound")
    return Outcome(value=value, feasible=True, estimated=m.estimated, figures=figures)


def _estimate(m: Measurement, scenario: Scenario) -> dict[str, float]:
    """``{"estimate": x}``: what the estimate made beside a measured scenario gave for its figure (none: {})."""
    value = (m.estimate_figures or {}).get(scenario.figure)
    return {} if value is None else {"estimate": value}


def score(outcome: Outcome, *, maximize: bool) -> float | None:
    """Higher is better, None when the scenario's rule is broken (what a runtime search compares)."""
    if not outcome.feasible:
        return None
    return outcome.value if maximize else -outcome.value


def guarded(*, changes_numerics: bool, domains: Mapping[str, Sequence[Any]]) -> bool:
    """Whether a study judges each compile's task accuracy: where the target's knobs change the numerics (a precision
    hint, fused kernels), or its space searches a precision (int8, offered with a calibration set)."""
    return changes_numerics or len(domains.get("precision", ())) > 1


def accuracy_failure(*, metric: str, value: float, reference: float, allowed: float, max_drop: str) -> str | None:
    """Why a candidate's task metric ``value`` fell too far below the fp32 reference's (by more than ``allowed``,
    which ``max_drop`` gave), or None within it: such a trial is infeasible with stage ``accuracy``."""
    drop = reference - value
    if drop <= allowed + 1e-12:  # 1e-12: a drop of exactly the allowed amount passes
        return None
    return (f"{metric} {value:.4g} is {drop:.4g} below the fp32 reference's {reference:.4g}, more than --max-drop "
            f"{max_drop} ({allowed:.4g})")


def remedies_offered(trials: Iterable[FrozenTrial]) -> bool:
    """Whether a study searches its space's remedy knobs (``Knob.remedy``: keeping layers in float): once one of its
    compiles failed the accuracy guard. Until then a remedy only makes a compile slower and costs time to build."""
    return any(trial.user_attrs.get(attrs.FAILURE_STAGE) == "accuracy" for trial in trials)


def closest_to_median(values: Sequence[float], median: float) -> int:
    """Which of repeated measurements stands for them: the index of the first value closest to their ``median``."""
    return min(range(len(values)), key=lambda i: abs(values[i] - median))


def best_setting(measured: Sequence[tuple[Hashable, Outcome]], *, maximize: bool) -> int:
    """Of repeated measurements of runtime settings, (setting, outcome) each: the index of the one that stands for
    the trial. The setting with the best median wins, feasible settings (every measurement feasible) first; of its
    measurements, the one closest to that median."""
    settings: dict[Hashable, list[int]] = {}
    for i, (setting, _) in enumerate(measured):
        settings.setdefault(setting, []).append(i)
    feasible = {s: ix for s, ix in settings.items() if all(measured[i][1].feasible for i in ix)} or settings
    medians = {s: statistics.median(measured[i][1].value for i in ix) for s, ix in feasible.items()}
    chosen = (max if maximize else min)(medians, key=medians.__getitem__)
    return feasible[chosen][closest_to_median([measured[i][1].value for i in feasible[chosen]], medians[chosen])]


def log_spread(logs: Sequence[float] | np.ndarray) -> float:
    """The relative spread of repeats: the sample deviation of their logarithms (or of log ratios; two at least)."""
    return float(np.std(logs, ddof=1))


def infeasible(scenario: Scenario, stored: dict[str, Any], stage: str, reason: str, *,
               retry: bool = False) -> TrialRecord:
    """A candidate the search should stop proposing: told as infeasible, with the stage and the reason; ``retry``: a
    failure that says nothing about the candidate (a time-out), FAIL so that it may be proposed again."""
    return TrialRecord(value=worst_value(scenario), feasible=False, retry=retry,
                       attrs=stored | {attrs.FAILURE_STAGE: stage, attrs.FAILURE_REASON: reason})


def new_compile(*, settled: bool, compiled_before: bool, shares_model: bool) -> bool:
    """Whether a proposal takes a compile of its own (``--trials`` counts these; stored as ``attrs.NEW_COMPILE``): not
    one settled without compiling (a duplicate, a broken rule, flags known not to compile, a twin's result), nor one
    measured on a model the study compiled for another trial where its space searches runtime knobs on the model."""
    return not settled and not (compiled_before and shares_model)


def compiles(trials: Iterable[FrozenTrial]) -> int:
    """The compiles a study's COMPLETE trials made, as ``--trials`` counts them (:func:`new_compile`, as stored;
    ``trials`` read through ``attrs.upgrade``)."""
    return sum(bool(t.user_attrs.get(attrs.NEW_COMPILE)) for t in trials if t.state == TrialState.COMPLETE)
