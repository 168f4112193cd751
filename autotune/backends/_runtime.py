"""Searching a compiled candidate's runtime knobs inside one trial: ask for a setting, measure it, tell its score.

A compile costs minutes and a measurement seconds, so a trial compiles once and tries a few runtime settings on the
compiled artifact; the trial's value is the best of them. Scores are higher-is-better (the measure stage negates
latencies) and None for a setting that could not run.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

C = TypeVar("C", bound=Hashable)


class Once(Generic[C]):
    """One setting, measured once: a candidate whose knobs are all compiled in, or one measured as given."""

    def __init__(self, candidate: C) -> None:
        self._pending: C | None = candidate

    def ask(self) -> C | None:
        pending, self._pending = self._pending, None
        return pending

    def tell(self, candidate: C, score: float | None) -> None:
        pass


@dataclass(frozen=True)
class Move(Generic[C]):
    """One way to change the runtime knobs: ``step`` gives the next setting from the best so far (None: no step);
    ``repeat`` keeps stepping while each step improves."""

    name: str
    step: Callable[[C], C | None]
    repeat: bool = False


class StepSearch(Generic[C]):
    """Measure ``start``; while nothing could run, step by ``fallback`` (fewer activations need less memory); then
    try each move in turn from the best so far, a move marked ``repeat`` again while it improves."""

    def __init__(self, start: C, moves: list[Move[C]], *, fallback: Move[C] | None = None) -> None:
        self._moves = moves
        self._fallback = fallback
        self._tried: set[C] = set()
        self._next: C | None = start
        self._made_by: int | None = None  # the move that made the setting being measured (None: start, fallback)
        self.best: C | None = None
        self.best_score: float | None = None

    def ask(self) -> C | None:
        candidate, self._next = self._next, None
        if candidate is not None:
            self._tried.add(candidate)
        return candidate

    def tell(self, candidate: C, score: float | None) -> None:
        improved = score is not None and (self.best_score is None or score > self.best_score)
        if improved:
            self.best, self.best_score = candidate, score
        made_by, self._made_by = self._made_by, None
        if self.best is None:
            self._next = self._fresh(self._fallback.step(candidate)) if self._fallback else None
            return
        if made_by is None:
            first = 0
        elif improved and self._moves[made_by].repeat:
            first = made_by
        else:
            first = made_by + 1
        for i in range(first, len(self._moves)):
            step = self._fresh(self._moves[i].step(self.best))
            if step is not None:
                self._next, self._made_by = step, i
                return

    def _fresh(self, candidate: C | None) -> C | None:
        return candidate if candidate is not None and candidate not in self._tried else None
