"""The study's own measurement noise, and which settings it makes worth measuring again.

The baseline is measured more than once at the start, and again on every DRIFT_EVERY-th trial to see how the machine
drifts; any later trial whose value lies within noise (and drift) of the best is measured again, and a setting's
value is the median of its measurements. The noise is the pooled relative spread of every setting measured more than
once, so it is learnt as the study goes and on resume.
"""

from __future__ import annotations

import math
import statistics
import threading

PRIOR_SIGMA = 0.03  # relative noise assumed until repeats give three degrees of freedom
BASELINE_REPEATS = 3  # measurements of the baseline at the start
CLOSE_SIGMAS = 1.0  # a value within this many sigmas of the best is measured again (2 cost more, found no better)
REPEATS = 2  # measurements added to such a setting
DRIFT_EVERY = 10  # the baseline is measured again on trials 10, 20, ...
PROMISING = 0.10  # a compile whose first setting is this far below the best (or than the largest gain a runtime
# search has made so far) gets no runtime search


class Noise:
    """Relative spread of repeated measurements (pooled over settings) and the best value so far. A value within
    ``close_sigmas`` sigmas (plus the drift) of the best is measured again."""

    def __init__(self, *, maximize: bool, close_sigmas: float = CLOSE_SIGMAS) -> None:
        self.maximize = maximize
        self.close_sigmas = close_sigmas
        self.best: float | None = None
        self.runtime_gain = 0.0  # the largest relative gain of a trial's best setting over its first
        self.drift = 0.0  # the largest relative change of the baseline since its first measurements
        self._squares = 0.0
        self._freedom = 0
        self._lock = threading.Lock()

    def add(self, values: list[float]) -> None:
        """The measurements of one setting (two or more say something of the noise)."""
        values = [v for v in values if v and math.isfinite(v)]
        if len(values) < 2:
            return
        mean = statistics.fmean(values)
        with self._lock:
            self._squares += sum((v / mean - 1.0) ** 2 for v in values)
            self._freedom += len(values) - 1

    @property
    def sigma(self) -> float:
        """The relative standard deviation of one measurement (the prior until three repeats are known)."""
        with self._lock:
            return math.sqrt(self._squares / self._freedom) if self._freedom >= 3 else PRIOR_SIGMA

    def offer(self, value: float | None) -> None:
        """A feasible value the study now holds (the best is kept)."""
        if value is None or not math.isfinite(value):
            return
        with self._lock:
            if self.best is None or (value > self.best if self.maximize else value < self.best):
                self.best = value

    def gained(self, first: float, best: float) -> None:
        """A runtime search took a compile from ``first`` to ``best``."""
        if first and best and math.isfinite(first) and math.isfinite(best):
            gain = best / first - 1.0 if self.maximize else first / best - 1.0
            with self._lock:
                self.runtime_gain = max(self.runtime_gain, gain)

    def drifted(self, pct: float | None) -> None:
        """The baseline, measured again during the search, changed by ``pct`` percent since its first figure."""
        if pct is not None and math.isfinite(pct):
            with self._lock:
                self.drift = max(self.drift, abs(pct) / 100)

    def close_to_best(self, value: float) -> bool:
        """Whether ``value`` could be the best, given the noise and the drift seen: then it is worth measuring
        again."""
        return self._within(value, self.close_sigmas * self.sigma + self.drift, default=False)

    def promising(self, value: float) -> bool:
        """Whether a compile whose first setting measured ``value`` deserves its runtime search: close enough to the
        best that another runtime setting could make it the best."""
        return self._within(value, max(PROMISING, 3 * self.sigma, self.runtime_gain), default=True)

    def _within(self, value: float, margin: float, *, default: bool) -> bool:
        best = self.best
        if best is None:
            return default
        return value >= best * (1.0 - margin) if self.maximize else value <= best * (1.0 + margin)
