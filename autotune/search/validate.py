"""Validation as an experiment: the best few of the search, the baseline and the study's last winner measured again
in interleaved rounds (the order shuffled each round), so that a drift of the machine favours nobody. A candidate
wins only when its gain over the baseline, paired by round, is significant (search/significance.py); otherwise the
baseline stays the winner and the record says there was no significant gain. Stored on the study as ``validation``.

A study has one validation: a worker whose study still has trials running elsewhere leaves it to the last worker to
finish, and every validation measures the previous winner beside the new candidates, so a winner is only replaced
by one that beat it in the same rounds.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.backends.base import Artifact, Candidate, Measurement
from autotune.errors import DeviceFailure, TrialFailure
from autotune.objective import Outcome, closest_to_median, log_spread
from autotune.results import attrs
from autotune.results.attrs import is_feasible, validation_of
from autotune.search.evaluate import Evaluator
from autotune.search.measure import MeasureStage
from autotune.search.records import Compiled, StudyIdentity, ValidationSettings
from autotune.search.significance import interval, paired_gain
from autotune.storage import fail_stale_trials

OUTSIDE_NOISE_SIGMAS = 3.0  # a validation figure this many sigmas from the search figure is flagged
LOOKS = 4  # batches of rounds at most, unless the job says otherwise: more while a gain stays within noise
MIN_GAIN_PCT = 1.0  # a gain whose interval cannot reach past this is not worth more rounds


@dataclass(kw_only=True)
class Contender:
    """A trial in the validation: its candidate, its compiled artifact (None once it cannot be measured), each round's
    verdict, figures and artifact, and why it was not measured (or is no longer)."""

    trial: FrozenTrial
    candidate: Candidate
    compiled: Compiled | None = None
    rounds: list[tuple[Outcome, Measurement, Artifact]] = field(default_factory=list)
    reason: str | None = None
    left_out: str | None = None

    @property
    def baseline(self) -> bool:
        return bool(self.trial.user_attrs.get(attrs.BASELINE))

    @property
    def samples(self) -> list[float]:
        return [outcome.value for outcome, _, _ in self.rounds]


class Validator:
    """Re-measures the study's best trials, its baseline and its last winner in rounds, and records the winner."""

    def __init__(self, *, identity: StudyIdentity, settings: ValidationSettings, seed: int, study: optuna.Study,
                 evaluator: Evaluator, measurer: MeasureStage, progress: Callable[[str], None]) -> None:
        self.identity, self.settings, self.seed = identity, settings, seed
        self.study = study
        self.evaluator = evaluator
        self.measurer = measurer
        self.progress = progress
        self.maximize = identity.maximize
        self.looks = max(1, (settings.max_rounds or LOOKS * settings.rounds) // settings.rounds)

    def validate(self, device: int) -> dict[str, Any]:
        """Run the experiment on ``device``; returns the validation record (also stored), {} when nothing was
        validated (no feasible trial, or other workers still run trials of the study)."""
        fail_stale_trials(self.study)  # a worker that died is not waited for
        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if running:
            note = (f"{len(running)} trials of this study are still running in other workers: the last worker to "
                    f"finish validates every worker's candidates")
            self.progress(note)
            return {attrs.NOTE: note}
        chosen = self._chosen()
        if not chosen:
            self.progress("no feasible trial yet: nothing to validate")
            return {}
        rounds, seconds = self.settings.rounds, self.settings.seconds
        self.progress(f"validating {len(chosen)} candidates in {rounds} interleaved rounds of {seconds:g} s runs "
                      f"(~{_minutes(len(chosen) * rounds * seconds)}; up to {rounds * self.looks} rounds while a "
                      f"gain stays undecided) ...")
        contenders = [self._contender(t) for t in chosen]
        for contender in (c for c in contenders if c.compiled is None):
            self.progress(f"  #{contender.trial.number}: not validated ({contender.reason})")
        for look in range(self.looks):
            for r in range(look * rounds, (look + 1) * rounds):
                self._round(contenders, device, r)
            if look == self.looks - 1 or not self._undecided(contenders):
                break
            self.progress(f"  a gain is still within noise: {rounds} more rounds")
        summary = self._summary([self._settled(c) for c in contenders])
        self.study.set_user_attr(attrs.VALIDATION, summary)
        if attrs.DRIFT_PCT in summary:
            self.progress(f"the baseline measured {summary[attrs.DRIFT_PCT]:+.1f}% against its search figure (the "
                          f"machine's drift since the search)")
        return summary

    def _round(self, contenders: list[Contender], device: int, r: int) -> None:
        """Round ``r``: every candidate still measurable once, in an order shuffled for this round."""
        live = [c for c in contenders if c.compiled is not None]
        random.Random(self.seed * 1000 + r).shuffle(live)
        for contender in live:
            self._measure(contender, device, r)
        self.progress(f"  round {r + 1}: " + ", ".join(
            f"#{c.trial.number} {_shown(c, self.identity.scenario.unit)}" for c in contenders))

    def _undecided(self, contenders: list[Contender]) -> bool:
        """Whether more rounds could decide: no contender is significantly better yet, and one measures a gain whose
        interval reaches past ``MIN_GAIN_PCT``."""
        baseline = next((c for c in contenders if c.baseline and c.rounds), None)
        others = [c for c in contenders if not c.baseline and c.rounds]
        if baseline is None or not others:
            return False
        gains = [paired_gain(c.samples, baseline.samples, maximize=self.maximize,
                             comparisons=len(others) * self.looks) for c in others]
        gains = [g for g in gains if g is not None]
        if any(g.significant for g in gains):
            return False
        return any(g.pct > 0 and g.high_pct > MIN_GAIN_PCT for g in gains)

    def _chosen(self) -> list[FrozenTrial]:
        """The best ``settings.top`` feasible trials, the baseline and the last validation's winner."""
        feasible = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                    if is_feasible(t) and t.user_attrs.get(attrs.DUPLICATE_OF) is None and
                    attrs.CANDIDATE in t.user_attrs]
        chosen = sorted(feasible, key=lambda t: t.value, reverse=self.maximize)[: self.settings.top]
        previous = validation_of(self.study).get(attrs.WINNER_TRIAL)
        extra = [t for t in feasible if t.user_attrs.get(attrs.BASELINE)][:1] + \
            [t for t in feasible if t.number == previous]
        for trial in extra:
            if trial not in chosen:
                chosen.append(trial)
        return chosen

    def _contender(self, trial: FrozenTrial) -> Contender:
        """``trial`` with its artifact at hand or compiled now; without one (and the reason) when it fails."""
        contender = Contender(trial=trial, candidate=self.identity.space.from_dict(trial.user_attrs[attrs.CANDIDATE]))
        try:
            contender.compiled = self.evaluator.compiled(contender.candidate)
        except TrialFailure as failure:
            contender.reason = f"{failure.stage}: {failure.reason}"
        return contender

    def _measure(self, contender: Contender, device: int, r: int) -> None:
        """One round's measurement of ``contender``; a failure takes it out of the later rounds."""
        compiled, number = contender.compiled, contender.trial.number
        assert compiled is not None
        try:
            measurement, outcome = self.evaluator.evaluate(compiled, seconds=self.settings.seconds,
                                                           label=f"validate-{number}-r{r + 1}", device=device,
                                                           who=f"  #{number}")
        except DeviceFailure:
            raise
        except TrialFailure as failure:
            contender.reason = f"{failure.stage}: {failure.reason}"
            contender.compiled = None
            contender.left_out = f"from round {r + 1} on: {contender.reason}"
            self.progress(f"  #{number}: left out {contender.left_out}")
            return
        assert compiled.artifact is not None
        contender.rounds.append((outcome, measurement, compiled.artifact))
        if not outcome.feasible:
            contender.reason = outcome.reason

    def _summary(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        baseline = next((e for e in entries if e[attrs.BASELINE]), None)
        contenders = [e for e in entries if not e[attrs.BASELINE] and e[attrs.FEASIBLE]]
        for entry in contenders if baseline is not None and baseline[attrs.FEASIBLE] else []:
            gain = paired_gain(entry[attrs.SAMPLES], baseline[attrs.SAMPLES], maximize=self.maximize,
                               comparisons=len(contenders) * self.looks)
            if gain is not None:
                entry |= {attrs.GAIN_PCT: gain.pct, attrs.GAIN_CI_PCT: [gain.low_pct, gain.high_pct],
                          attrs.SIGNIFICANT: gain.significant}
        summary: dict[str, Any] = {
            attrs.VALIDATED: entries, attrs.VALIDATE_SECONDS: self.settings.seconds,
            attrs.ROUNDS: max(len(e[attrs.SAMPLES]) for e in entries),
            attrs.VALIDATED_AT: time.strftime("%Y-%m-%d %H:%M:%S"), attrs.NOISE_PCT: self.measurer.noise.sigma * 100}
        previous = validation_of(self.study)
        if previous.get(attrs.WINNER_TRIAL) is not None:
            summary[attrs.REPLACES] = {attrs.WINNER_TRIAL: previous[attrs.WINNER_TRIAL],
                                       attrs.VALIDATED_AT: previous.get(attrs.VALIDATED_AT)}
        if baseline is not None and attrs.SEARCH_RATIO in baseline:
            summary[attrs.DRIFT_PCT] = (baseline[attrs.SEARCH_RATIO] - 1.0) * 100
        return summary | self._verdict(baseline, contenders)

    def _settled(self, contender: Contender) -> dict[str, Any]:
        """A candidate's rounds as its stored validation entry: feasible in most rounds, the median and its
        interval, the figures of the round closest to the median, and how its median compares with its search
        figure."""
        trial, candidate, rounds = contender.trial, contender.candidate, contender.rounds
        entry: dict[str, Any] = {attrs.TRIAL: trial.number, attrs.BASELINE: contender.baseline,
                                 "batch_size": candidate.batch_size, "activations": candidate.concurrency,
                                 attrs.SEARCH_VALUE: trial.value, attrs.SAMPLES: contender.samples}
        if contender.reason is not None:
            entry[attrs.REASON] = contender.reason
        if contender.left_out is not None:
            entry[attrs.LEFT_OUT] = contender.left_out
        samples = [v for v in contender.samples if math.isfinite(v) and v > 0]
        feasible = sum(outcome.feasible for outcome, _, _ in rounds)
        entry[attrs.FEASIBLE] = bool(rounds) and feasible * 2 > len(rounds) and bool(samples)
        if not samples:
            entry |= {attrs.FEASIBLE: False, attrs.VALUE: None}
            entry.setdefault(attrs.REASON, "not measured")
            return entry
        spread = interval(samples)
        outcome, measurement, artifact = rounds[closest_to_median(contender.samples, spread.median)]
        entry |= {attrs.VALUE: spread.median, attrs.CI: [spread.low, spread.high],
                  attrs.ESTIMATED: outcome.estimated, attrs.FIGURES: measurement.figures(),
                  attrs.SCENARIO_FIGURES: outcome.figures, attrs.COMPILE_ARGV: artifact.command,
                  attrs.MEASURE_ARGV: measurement.command,
                  attrs.PRESET_FIELDS: self.measurer.preset_fields(candidate, artifact, measurement, trial.number)}
        if entry[attrs.FEASIBLE]:
            entry[attrs.REASON] = None
        searched = entry.get(attrs.SEARCH_VALUE)
        if searched:
            ratio = spread.median / searched
            sem = log_spread(np.log(samples)) / math.sqrt(len(samples)) if len(samples) > 1 else 0.0
            margin = OUTSIDE_NOISE_SIGMAS * math.hypot(self.measurer.noise.sigma, sem)
            entry |= {attrs.SEARCH_RATIO: ratio, attrs.OUTSIDE_NOISE: abs(math.log(ratio)) > margin}
        return entry

    def _verdict(self, baseline: dict[str, Any] | None, contenders: list[dict[str, Any]]) -> dict[str, Any]:
        """The winner: the candidate with the largest significant gain; else the baseline ("no significant gain");
        without a feasible baseline, the best median."""
        verdict: dict[str, Any] = {}
        if baseline is not None and baseline[attrs.FEASIBLE]:
            verdict |= {attrs.BASELINE_TRIAL: baseline[attrs.TRIAL], attrs.BASELINE_VALUE: baseline[attrs.VALUE]}
            gained = [e for e in contenders if attrs.GAIN_PCT in e]
            claimed = max(gained, key=lambda e: e[attrs.GAIN_PCT], default=None)
            significant = [e for e in gained if e[attrs.SIGNIFICANT]]
            winner = max(significant, key=lambda e: e[attrs.GAIN_PCT], default=baseline)
            shown = winner if winner is not baseline else claimed
            verdict |= {attrs.WINNER_TRIAL: winner[attrs.TRIAL], attrs.WINNER_VALUE: winner[attrs.VALUE],
                        attrs.SIGNIFICANT: winner is not baseline}
            if shown is not None:
                verdict |= {attrs.CLAIMED_TRIAL: shown[attrs.TRIAL], attrs.GAIN_PCT: shown[attrs.GAIN_PCT],
                            attrs.GAIN_CI_PCT: shown[attrs.GAIN_CI_PCT]}
            return verdict
        if contenders:
            pick = max if self.maximize else min
            winner = pick(contenders, key=lambda e: e[attrs.VALUE])
            verdict |= {attrs.WINNER_TRIAL: winner[attrs.TRIAL], attrs.WINNER_VALUE: winner[attrs.VALUE],
                        attrs.SIGNIFICANT: False, attrs.NOTE: "no feasible baseline to compare with"}
        return verdict


def _shown(contender: Contender, unit: str) -> str:
    if not contender.rounds:
        return contender.reason or "-"
    if contender.left_out is not None:
        return "left out"
    last = contender.rounds[-1][0]
    return f"{last.value:,.2f}" + ("" if last.feasible else " (infeasible)")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"

