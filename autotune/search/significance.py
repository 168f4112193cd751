"""The statistics of a validation experiment: a candidate's value with its interval, and its gain over the baseline
measured in the same rounds, with the interval that decides whether the gain is real.

Gains are paired by round (the candidate and the baseline measured close together in time, so a drift of the
machine cancels out) and taken on the log scale: the gain of round i is log(candidate_i / baseline_i) (its inverse
for latencies). Their mean's Student-t interval, at a level corrected for the number of candidates compared
(Bonferroni), bounds the gain; it is significant when the whole interval lies above zero. With every candidate the
same as the baseline, a false gain is declared in at most ``ALPHA`` of experiments.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np
from scipy import stats

from autotune.objective import log_spread

ALPHA = 0.05  # the chance of declaring a gain among all candidates compared, when none is better
LEVEL = 0.95  # of a single candidate's interval


@dataclass(frozen=True, kw_only=True)
class Interval:
    """A candidate's median over its rounds and the interval of its value (Student-t on the log scale)."""

    median: float
    low: float
    high: float


@dataclass(frozen=True, kw_only=True)
class Gain:
    """The gain over the baseline in percent (better is positive), its interval, and whether it is significant."""

    pct: float
    low_pct: float
    high_pct: float
    rounds: int

    @property
    def significant(self) -> bool:
        return self.low_pct > 0.0


def interval(samples: list[float], *, level: float = LEVEL) -> Interval:
    """The median of ``samples`` and the ``level`` interval of their (geometric) mean; one sample: no interval."""
    values = [v for v in samples if v > 0 and math.isfinite(v)]
    if not values:
        raise ValueError("no positive sample")
    median = statistics.median(values)
    if len(values) < 2:
        return Interval(median=median, low=values[0], high=values[0])
    low, high = _t_interval(np.log(values), level)
    return Interval(median=median, low=math.exp(low), high=math.exp(high))


def paired_gain(candidate: list[float], baseline: list[float], *, maximize: bool, comparisons: int = 1,
                alpha: float = ALPHA) -> Gain | None:
    """The candidate's gain over the baseline from rounds measured side by side (``candidate[i]`` with
    ``baseline[i]``), its interval one-sidedly at ``alpha / comparisons``; None with fewer than two usable rounds."""
    pairs = [(c, b) for c, b in zip(candidate, baseline) if c > 0 and b > 0 and math.isfinite(c) and math.isfinite(b)]
    if len(pairs) < 2:
        return None
    logs = np.array([math.log(c / b) if maximize else math.log(b / c) for c, b in pairs])
    level = 1.0 - 2.0 * alpha / max(1, comparisons)  # two-sided at this level = one-sided alpha/comparisons
    low, high = _t_interval(logs, level)
    return Gain(pct=_pct(float(np.mean(logs))), low_pct=_pct(low), high_pct=_pct(high), rounds=len(pairs))


def _t_interval(logs: np.ndarray, level: float) -> tuple[float, float]:
    mean = float(np.mean(logs))
    sem = log_spread(logs) / math.sqrt(len(logs))
    half = float(stats.t.ppf((1.0 + level) / 2.0, len(logs) - 1)) * sem
    return mean - half, mean + half


def _pct(log_ratio: float) -> float:
    return (math.exp(log_ratio) - 1.0) * 100.0
