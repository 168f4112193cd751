"""What a search enqueues beside its sampler's proposals: one-knob polishing steps from the best, a multi-start
local search, or start points and greedy climbs. A policy reads the study's trials and returns the next parameters
to enqueue (and the attributes that say why), or None to leave the proposal to the sampler."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.backends.base import Candidate, SearchSpace
from autotune.objective import compiles, remedies_offered
from autotune.results import attrs
from autotune.results.attrs import best_feasible, is_feasible, is_start
from autotune.search.records import proposal_key

Proposal = tuple[dict[str, Any], dict[str, Any]]  # (parameters, user attributes) of a trial to enqueue


class Policy(Protocol):
    def propose(self, trials: list[FrozenTrial], known: set[str]) -> Proposal | None:
        """The next trial to enqueue, given every trial so far and the proposal keys measured or in flight."""
        ...




def _climbs(trials: list[FrozenTrial]) -> dict[int, list[FrozenTrial]]:
    """The steps of each climb, by its start's trial number (``climb_from``)."""
    climbs: dict[int, list[FrozenTrial]] = {}
    for t in trials:
        start = t.user_attrs.get(attrs.CLIMB_FROM)
        if start is not None:
            climbs.setdefault(start, []).append(t)
    return climbs


def _untried(space: SearchSpace, steps: list[dict[str, Any]], known: set[str], trials: list[FrozenTrial]
             ) -> dict[str, Any] | None:
    """The first of ``steps`` not measured, valid, and not a remedy while the study offers none."""
    remedies = remedies_offered(trials)
    for params in steps:
        candidate = space.suggest(optuna.trial.FixedTrial(params))
        if proposal_key(candidate, searched=True) not in known and not space.violations(candidate) and \
                (remedies or space.without_remedies(candidate) == candidate):
            return params
    return None


@dataclass(kw_only=True)
class Polish:
    """Every ``every``-th compile from the ``after``-th on, a one-knob step from the best not measured yet.

    The peak of a compiler's surface is narrow; a sampler finds the region and these steps climb to its top.
    """

    space: SearchSpace
    maximize: bool
    every: int = 3
    after: int = 25

    def propose(self, trials: list[FrozenTrial], known: set[str]) -> Proposal | None:
        done = compiles(trials)
        if self.every <= 0 or done < self.after or (done - self.after) % self.every:
            return None
        best = best_feasible(trials, maximize=self.maximize)
        if best is None:
            return None
        steps = self.space.neighbours(self.space.from_dict(best.user_attrs[attrs.CANDIDATE]))
        random.Random(done).shuffle(steps)
        params = _untried(self.space, steps, known, trials)
        return (params, {attrs.POLISH_OF: best.number}) if params is not None else None


@dataclass(kw_only=True)
class LocalSearch:
    """Hill climbing by one-knob steps from each start in turn (first improvement), then from random points: the
    procedure of Qualcomm's model configurator. Climbs run side by side when compiles run ahead. The first start is
    the baseline when the study has one (its trial, queued first, starts the first climb)."""

    space: SearchSpace
    maximize: bool
    starts: list[Candidate]
    seed: int = 0
    random_restarts: bool = True

    def propose(self, trials: list[FrozenTrial], known: set[str]) -> Proposal | None:
        by_restart: dict[int, list[FrozenTrial]] = {}
        for t in trials:  # the baseline, queued first, is the first climb's start
            restart = t.user_attrs.get(attrs.LOCAL_RESTART, 0 if t.user_attrs.get(attrs.BASELINE) else None)
            if restart is not None:
                by_restart.setdefault(restart, []).append(t)
        restart = 0
        while True:
            climbed = by_restart.get(restart)
            if not climbed:
                start = self._start(restart)
                if start is None:
                    return None
                return self.space.params_for(start), {attrs.LOCAL_RESTART: restart}
            best = best_feasible(climbed, maximize=self.maximize)
            if best is not None:
                steps = self.space.neighbours(self.space.from_dict(best.user_attrs[attrs.CANDIDATE]))
                random.Random(self.seed * 1000 + best.number).shuffle(steps)
                params = _untried(self.space, steps, known, trials)
                if params is not None:
                    return params, {attrs.LOCAL_RESTART: restart, attrs.POLISH_OF: best.number}
            restart += 1

    def _start(self, restart: int) -> Candidate | None:
        if restart < len(self.starts):
            return self.starts[restart]
        if not self.random_restarts:
            return None
        rng = random.Random(self.seed * 7919 + restart)
        params = {name: rng.choice(domain) for name, domain in self.space.domains().items()}
        return self.space.suggest(optuna.trial.FixedTrial(params))


@dataclass(kw_only=True)
class StartsThenClimb:
    """Every start not measured yet (the baseline counts as one), a start that failed to compile once more with the
    least memory its space allows (``lightest``), and one that failed the accuracy guard with its remedies
    (``remedied``: keeping layers in float); then greedy climbs by one-knob steps: from the best start until
    no step of its best is left untried, then from the next best start, and so on. The step that improved a climb is
    tried again first. A climb's trials name their start (``climb_from``), so a start that completes while others
    climb (compiles run ahead) gets a climb of its own, and is climbed from first when it is the better."""

    space: SearchSpace
    maximize: bool
    starts: list[Candidate]

    def propose(self, trials: list[FrozenTrial], known: set[str]) -> Proposal | None:
        for start in self.starts:
            if not self._measured(start, trials, known):
                return self.space.params_for(start), {attrs.LOCAL_START: True}
        repair = self._repair(trials, known)
        if repair is not None:
            return repair
        origins = [t for t in trials if is_start(t) and is_feasible(t)]
        origins.sort(key=lambda t: t.value, reverse=self.maximize)
        climbs = _climbs(trials)
        for origin in origins:  # a start measured late, and better, is climbed from first
            members = [origin] + climbs.get(origin.number, [])
            best = best_feasible(members, maximize=self.maximize) or origin
            params = _untried(self.space, self.steps_from(best, trials), known, trials)
            if params is not None:
                return params, {attrs.CLIMB_FROM: origin.number, attrs.POLISH_OF: best.number}
        return None

    def steps_from(self, best: FrozenTrial, trials: list[FrozenTrial]) -> list[dict[str, Any]]:
        """A climb's one-knob steps from its best, in the order they are tried: the step that made it once more,
        then the rest by the space's ``step_rank``, in an order drawn from its trial number within a rank."""
        centre = self.space.from_dict(best.user_attrs[attrs.CANDIDATE])
        params, steps = self.space.params_for(centre), self.space.neighbours(centre)
        random.Random(best.number).shuffle(steps)
        steps.sort(key=lambda step: self.space.step_rank(params, step))
        return self._pattern(best, trials) + steps

    def _repair(self, trials: list[FrozenTrial], known: set[str]) -> Proposal | None:
        """A start whose compile failed (out of on-chip memory, most often), compiled again at its lightest, and one
        that failed the accuracy guard, with its remedies (``remedied``): its basin is not given up for one setting
        that did not fit."""
        repaired = {t.user_attrs.get(attrs.REPAIR_OF) for t in trials}
        repairs = {"compile": self.space.lightest, "accuracy": self.space.remedied}
        for t in trials:
            stored = t.user_attrs
            if t.state != TrialState.COMPLETE or not is_start(t) or t.number in repaired or \
                    stored.get(attrs.FAILURE_STAGE) not in repairs or attrs.CANDIDATE not in stored:
                continue  # a FAILed compile (a time-out) is retried, not repaired
            repair = repairs[stored[attrs.FAILURE_STAGE]](self.space.from_dict(stored[attrs.CANDIDATE]))
            params = _untried(self.space, [self.space.params_for(repair)], known, trials) \
                if repair is not None else None
            if params is not None:
                return params, {attrs.LOCAL_START: True, attrs.REPAIR_OF: t.number}
        return None

    def _pattern(self, best: FrozenTrial, trials: list[FrozenTrial]) -> list[dict[str, Any]]:
        """The step that made ``best`` taken once more from it (a pattern move): a climb that improved by doubling
        the batch tries doubling it again first."""
        parent_number = best.user_attrs.get(attrs.POLISH_OF)
        parent = next((t for t in trials if t.number == parent_number), None)
        if parent is None:
            return []
        now = self.space.params_for(self.space.from_dict(best.user_attrs[attrs.CANDIDATE]))
        before = self.space.params_for(self.space.from_dict(parent.user_attrs[attrs.CANDIDATE]))
        domains = self.space.domains()
        moved = dict(now)
        for name, value in now.items():
            old = before.get(name)
            if old == value or name not in domains or old not in domains[name] or value not in domains[name]:
                continue
            domain = domains[name]
            j = 2 * domain.index(value) - domain.index(old)
            if not 0 <= j < len(domain):
                return []
            moved[name] = domain[j]
        return [moved] if moved != now else []

    def _measured(self, start: Candidate, trials: list[FrozenTrial], known: set[str]) -> bool:
        if proposal_key(start, searched=True) in known:
            return True
        params = self.space.params_for(start)
        return any(params == self.space.params_for(self.space.from_dict(t.user_attrs[attrs.CANDIDATE]))
                   for t in trials if attrs.CANDIDATE in t.user_attrs and is_start(t))
