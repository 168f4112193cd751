"""Proposing the next trial: queue what the strategy's policy asks for (one-knob steps from the best, a local
search), ask the sampler (an enqueued trial first), and decide what a proposal needs: nothing (a known result or a
broken rule), another trial's result, or a compile. The sampler's remedy knobs (``Knob.remedy``) are held at their
first values until a compile of the study failed the accuracy guard."""

from __future__ import annotations

import warnings
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.backends.base import Candidate
from autotune.objective import TrialRecord, infeasible, remedies_offered
from autotune.results import attrs
from autotune.results.attrs import best_feasible, is_feasible
from autotune.search.memory import Memory
from autotune.search.policies import Policy
from autotune.search.recorder import Recorder
from autotune.search.records import Flight, StudyIdentity, compile_key, proposal_key


class Proposer:
    """Turns asked trials into flights, reusing every result the study already holds."""

    def __init__(self, *, identity: StudyIdentity, study: optuna.Study, memory: Memory, recorder: Recorder,
                 progress: Callable[[str], None], policy: Policy | None = None) -> None:
        self.identity = identity
        self.study = study
        self.memory = memory
        self.recorder = recorder
        self.progress = progress
        self.policy = policy

    def admit(self, in_flight: list[Flight]) -> Flight:
        """Ask for a trial and decide what it needs: nothing (a known result), a twin's result, or a compile."""
        complete = attrs.trials_of(self.study, (TrialState.COMPLETE,))
        self.memory.refresh(complete)
        self._enqueue_policy_step()
        with warnings.catch_warnings():  # heartbeats are recorded here, with ask/tell, not by Study.optimize
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
            trial = self.study.ask()
        candidate = None
        try:
            self.recorder.claim(trial)
            candidate = self._candidate(trial, remedies=remedies_offered(complete))
            # the baseline is measured as given, and so is a candidate with no runtime knob to search
            searched = not trial.user_attrs.get(attrs.BASELINE) and self.identity.space.searches_runtime(candidate)
            stored: dict[str, Any] = {attrs.CANDIDATE: candidate.to_dict(), attrs.PROPOSAL: candidate.to_dict(),
                                      attrs.RUNTIME_SEARCHED: searched, attrs.FLAGS: candidate.flag_string(),
                                      attrs.COMPILE_KEY: compile_key(candidate),
                                      attrs.CONCURRENCY: candidate.concurrency}
            for key, value in stored.items():  # published now: other workers see what this trial holds
                trial.set_user_attr(key, value)
            flight = Flight(trial=trial, candidate=candidate, attrs=stored, searched=searched)
            self._decide(flight, in_flight)
            return flight
        except BaseException as exc:
            self.recorder.fail(trial, candidate, exc)
            raise

    def reuse(self, previous: FrozenTrial) -> TrialRecord | None:
        """A duplicate's record: the result of ``previous`` when it is COMPLETE, else None (measure it after all)."""
        if previous.state != TrialState.COMPLETE:
            return None
        self.memory.refresh([previous])
        reused = {k: v for k, v in previous.user_attrs.items() if k not in attrs.OWN}
        return TrialRecord(value=previous.value, feasible=is_feasible(previous),
                           attrs=reused | {attrs.DUPLICATE_OF: previous.number})

    def best_trial(self, trials: list[FrozenTrial] | None = None) -> FrozenTrial | None:
        """The best feasible trial of ``trials`` (default: the study's)."""
        return best_feasible(trials or self.study.get_trials(deepcopy=False), maximize=self.identity.maximize)

    def _candidate(self, trial: optuna.Trial, *, remedies: bool) -> Candidate:
        candidate = self.identity.space.suggest(trial)
        if trial.user_attrs.get(attrs.BASELINE) and self.identity.baseline is not None:
            return self.identity.baseline  # as given: its parameters may alias what suggest makes of them
        drawn = not any(mark in trial.user_attrs for mark in attrs.QUEUED_MARKS)
        return candidate if remedies or not drawn else self.identity.space.without_remedies(candidate)

    def _decide(self, flight: Flight, in_flight: list[Flight]) -> None:
        """Settle the flight now (a known result, a rule broken, a known compile failure) or park it behind a twin;
        otherwise leave it to be compiled."""
        key = proposal_key(flight.candidate, searched=flight.searched)
        previous = self.memory.results.get(key)
        problems = self.identity.space.violations(flight.candidate)
        failed = self.memory.compile_failure(flight.attrs[attrs.COMPILE_KEY])
        local = next((f for f in in_flight if proposal_key(f.candidate, searched=f.searched) == key), None)
        scenario = self.identity.scenario
        if previous is not None:
            flight.record = self.reuse(previous)
        elif problems:
            flight.record = infeasible(scenario, flight.attrs, "constraint", "; ".join(problems))
        elif failed is not None:
            flight.record = infeasible(scenario, flight.attrs, "compile", failed.reason)
        elif local is not None:
            flight.twin, flight.twin_id = local.number, local.trial._trial_id
        else:
            twin = self._remote_twin(key, flight.number)
            if twin is not None:
                flight.twin, flight.twin_id = twin.number, twin._trial_id
                self.progress(f"trial #{flight.number}: another worker measures the same candidate (#{twin.number});"
                              f" waiting for its result")

    def _remote_twin(self, key: str, number: int) -> FrozenTrial | None:
        """An earlier RUNNING trial of another worker with the same candidate (the earlier one measures it)."""
        for other in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if other.number < number and attrs.CANDIDATE in other.user_attrs and \
                    self.memory.key_of(other.user_attrs) == key:
                return other
        return None

    def _enqueue_policy_step(self) -> None:
        """Queue what the strategy's policy asks for next (a polish step, a local-search step), unless a trial waits."""
        if self.policy is None:
            return
        trials = attrs.trials_of(self.study)
        if any(t.state == TrialState.WAITING for t in trials):
            return
        proposal = self.policy.propose(trials, self._known(trials))
        if proposal is not None:
            params, user_attrs = proposal
            self.study.enqueue_trial(params, user_attrs=user_attrs)

    def _known(self, trials: list[FrozenTrial]) -> set[str]:
        """The proposal keys measured or in flight (a local search must not propose them again)."""
        known = set(self.memory.results)
        for t in trials:
            if t.state == TrialState.RUNNING and attrs.CANDIDATE in t.user_attrs:
                known.add(self.memory.key_of(t.user_attrs))
        return known
