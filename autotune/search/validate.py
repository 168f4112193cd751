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
from typing import Any, Callable

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.errors import DeviceFailure, TrialFailure
from autotune.objective import closest_to_median, log_spread
from autotune.results import attrs
from autotune.results.attrs import is_feasible, validation_of
from autotune.search.evaluate import Evaluator
from autotune.search.measure import MeasureStage
from autotune.search.records import Compiled, TuningJob
from autotune.search.significance import Gain, interval, paired_gain
from autotune.storage import fail_stale_trials

OUTSIDE_NOISE_SIGMAS = 3.0  # a validation figure this many sigmas from the search figure is flagged
LOOKS = 4  # batches of rounds at most, unless the job says otherwise: more while a gain stays within noise
MIN_GAIN_PCT = 1.0  # a gain whose interval cannot reach past this is not worth more rounds


class Validator:
    """Re-measures the study's best trials, its baseline and its last winner in rounds, and records the winner."""

    def __init__(self, *, job: TuningJob, study: optuna.Study, evaluator: Evaluator, measurer: MeasureStage,
                 progress: Callable[[str], None]) -> None:
        self.job = job
        self.study = study
        self.evaluator = evaluator
        self.measurer = measurer
        self.progress = progress
        self.maximize = job.scenario.direction == "maximize"
        self.looks = max(1, (job.validate_max_rounds or LOOKS * job.validate_rounds) // job.validate_rounds)

    def validate(self, device: int) -> dict[str, Any]:
        """Run the experiment on ``device``; returns the validation record (also stored), {} when nothing was
        validated (no feasible trial, or other workers still run trials of the study)."""
        job = self.job
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
        rounds = job.validate_rounds
        self.progress(f"validating {len(chosen)} candidates in {rounds} interleaved rounds of {job.validate_seconds:g} "
                      f"s runs (~{_minutes(len(chosen) * rounds * job.validate_seconds)}; up to {rounds * self.looks} "
                      f"rounds while a gain stays undecided) ...")
        entries = {t.number: self._entry(t) for t in chosen}
        artifacts = {t.number: self._compiled(t, entries[t.number]) for t in chosen}
        for number in (n for n, compiled in artifacts.items() if compiled is None):
            self.progress(f"  #{number}: not validated ({entries[number][attrs.REASON]})")
        for look in range(self.looks):
            for r in range(look * rounds, (look + 1) * rounds):
                self._round(chosen, artifacts, entries, device, r)
            if look == self.looks - 1 or not self._undecided(list(entries.values())):
                break
            self.progress(f"  a gain is still within noise: {rounds} more rounds")
        summary = self._summary(list(entries.values()), chosen)
        self.study.set_user_attr(attrs.VALIDATION, summary)
        if attrs.DRIFT_PCT in summary:
            self.progress(f"the baseline measured {summary[attrs.DRIFT_PCT]:+.1f}% against its search figure (the "
                          f"machine's drift since the search)")
        return summary

    def _round(self, chosen: list[FrozenTrial], artifacts: dict[int, Compiled | None],
               entries: dict[int, dict[str, Any]], device: int, r: int) -> None:
        """Round ``r``: every candidate still measurable once, in an order shuffled for this round."""
        live = [t for t in chosen if artifacts[t.number] is not None]
        random.Random((self.job.seed or 0) * 1000 + r).shuffle(live)
        for trial in live:
            self._measure(trial, artifacts, entries[trial.number], device, r)
        self.progress(f"  round {r + 1}: " + ", ".join(
            f"#{t.number} {_shown(entries[t.number], self.job.scenario.unit)}" for t in chosen))

    def _undecided(self, entries: list[dict[str, Any]]) -> bool:
        """Whether more rounds could decide: no contender is significantly better yet, and one measures a gain whose
        interval reaches past ``MIN_GAIN_PCT``."""
        baseline = next((e for e in entries if e[attrs.BASELINE] and e[attrs.SAMPLES]), None)
        contenders = [e for e in entries if not e[attrs.BASELINE] and e[attrs.SAMPLES]]
        if baseline is None or not contenders:
            return False
        gains = [self._gain(e, baseline, comparisons=len(contenders) * self.looks) for e in contenders]
        gains = [g for g in gains if g is not None]
        if any(g.significant for g in gains):
            return False
        return any(g.pct > 0 and g.high_pct > MIN_GAIN_PCT for g in gains)

    def _chosen(self) -> list[FrozenTrial]:
        """The best ``validate_top`` feasible trials, the baseline and the last validation's winner."""
        feasible = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                    if is_feasible(t) and t.user_attrs.get(attrs.DUPLICATE_OF) is None and
                    attrs.CANDIDATE in t.user_attrs]
        chosen = sorted(feasible, key=lambda t: t.value, reverse=self.maximize)[: self.job.validate_top]
        previous = validation_of(self.study).get(attrs.WINNER_TRIAL)
        extra = [t for t in feasible if t.user_attrs.get(attrs.BASELINE)][:1] + \
            [t for t in feasible if t.number == previous]
        for trial in extra:
            if trial not in chosen:
                chosen.append(trial)
        return chosen

    def _entry(self, trial: FrozenTrial) -> dict[str, Any]:
        candidate = self.job.space.from_dict(trial.user_attrs[attrs.CANDIDATE])
        return {attrs.TRIAL: trial.number, attrs.BASELINE: bool(trial.user_attrs.get(attrs.BASELINE)),
                "batch_size": candidate.batch_size, "activations": candidate.concurrency,
                attrs.SEARCH_VALUE: trial.value, attrs.SAMPLES: [], "_feasible": [], "_measurements": []}

    def _compiled(self, trial: FrozenTrial, entry: dict[str, Any]) -> Compiled | None:
        try:
            return self.evaluator.compiled(self.job.space.from_dict(trial.user_attrs[attrs.CANDIDATE]))
        except TrialFailure as failure:
            entry[attrs.REASON] = f"{failure.stage}: {failure.reason}"
            return None

    def _leave(self, trial: FrozenTrial, entry: dict[str, Any], r: int) -> None:
        """``trial`` failed in round ``r``: it is measured in no later round, and its entry says why."""
        entry[attrs.LEFT_OUT] = f"from round {r + 1} on: {entry[attrs.REASON]}"
        self.progress(f"  #{trial.number}: left out {entry[attrs.LEFT_OUT]}")

    def _measure(self, trial: FrozenTrial, artifacts: dict[int, Compiled | None], entry: dict[str, Any],
                 device: int, r: int) -> None:
        """One round's measurement of ``trial``; a failure takes it out of the later rounds."""
        compiled = artifacts[trial.number]
        assert compiled is not None
        try:
            measurement, outcome = self.evaluator.evaluate(compiled, seconds=self.job.validate_seconds,
                                                           label=f"validate-{trial.number}-r{r + 1}", device=device,
                                                           who=f"  #{trial.number}")
        except DeviceFailure:
            raise
        except TrialFailure as failure:
            entry[attrs.REASON] = f"{failure.stage}: {failure.reason}"
            artifacts[trial.number] = None
            self._leave(trial, entry, r)
            return
        entry[attrs.SAMPLES].append(outcome.value)
        entry["_feasible"].append(outcome.feasible)
        entry["_measurements"].append((outcome, measurement, compiled.artifact, compiled.candidate))
        if not outcome.feasible:
            entry[attrs.REASON] = outcome.reason

    def _summary(self, entries: list[dict[str, Any]], chosen: list[FrozenTrial]) -> dict[str, Any]:
        job = self.job
        for entry in entries:
            self._settle(entry)
        baseline = next((e for e in entries if e[attrs.BASELINE]), None)
        contenders = [e for e in entries if not e[attrs.BASELINE] and e[attrs.FEASIBLE]]
        for entry in contenders if baseline is not None and baseline[attrs.FEASIBLE] else []:
            gain = self._gain(entry, baseline, comparisons=len(contenders) * self.looks)
            if gain is not None:
                entry |= {attrs.GAIN_PCT: gain.pct, attrs.GAIN_CI_PCT: [gain.low_pct, gain.high_pct],
                          attrs.SIGNIFICANT: gain.significant}
        summary: dict[str, Any] = {
            attrs.VALIDATED: entries, attrs.VALIDATE_SECONDS: job.validate_seconds,
            attrs.ROUNDS: max(len(e[attrs.SAMPLES]) for e in entries),
            attrs.VALIDATED_AT: time.strftime("%Y-%m-%d %H:%M:%S"), attrs.NOISE_PCT: self.measurer.noise.sigma * 100}
        previous = validation_of(self.study)
        if previous.get(attrs.WINNER_TRIAL) is not None:
            summary[attrs.REPLACES] = {attrs.WINNER_TRIAL: previous[attrs.WINNER_TRIAL],
                                       attrs.VALIDATED_AT: previous.get(attrs.VALIDATED_AT)}
        if baseline is not None and attrs.SEARCH_RATIO in baseline:
            summary[attrs.DRIFT_PCT] = (baseline[attrs.SEARCH_RATIO] - 1.0) * 100
        return summary | self._verdict(baseline, contenders)

    def _settle(self, entry: dict[str, Any]) -> None:
        """A candidate's rounds as its validation figures: feasible in most rounds, the median and its interval, the
        figures of the round closest to the median, and how its median compares with its search figure."""
        feasible, measured = entry.pop("_feasible"), entry.pop("_measurements")
        samples = [v for v in entry[attrs.SAMPLES] if v is not None and math.isfinite(v) and v > 0]
        entry[attrs.FEASIBLE] = bool(measured) and sum(feasible) * 2 > len(feasible) and bool(samples)
        if not samples:
            entry |= {attrs.FEASIBLE: False, attrs.VALUE: None}
            entry.setdefault(attrs.REASON, "not measured")
            return
        spread = interval(samples)
        outcome, measurement, artifact, candidate = measured[closest_to_median([m[0].value for m in measured],
                                                                               spread.median)]
        entry |= {attrs.VALUE: spread.median, attrs.CI: [spread.low, spread.high],
                  attrs.ESTIMATED: outcome.estimated, attrs.FIGURES: measurement.figures(),
                  attrs.SCENARIO_FIGURES: outcome.figures, attrs.COMPILE_ARGV: artifact.command,
                  attrs.MEASURE_ARGV: measurement.command,
                  attrs.PRESET_FIELDS: self.measurer.preset_fields(candidate, artifact, measurement,
                                                                   entry[attrs.TRIAL])}
        if entry[attrs.FEASIBLE]:
            entry[attrs.REASON] = None
        searched = entry.get(attrs.SEARCH_VALUE)
        if searched:
            ratio = spread.median / searched
            sem = log_spread(np.log(samples)) / math.sqrt(len(samples)) if len(samples) > 1 else 0.0
            margin = OUTSIDE_NOISE_SIGMAS * math.hypot(self.measurer.noise.sigma, sem)
            entry |= {attrs.SEARCH_RATIO: ratio, attrs.OUTSIDE_NOISE: abs(math.log(ratio)) > margin}

    def _gain(self, entry: dict[str, Any], baseline: dict[str, Any], *, comparisons: int) -> Gain | None:
        pairs = _paired(entry[attrs.SAMPLES], baseline[attrs.SAMPLES])
        return paired_gain([c for c, _ in pairs], [b for _, b in pairs], maximize=self.maximize,
                           comparisons=comparisons)

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


def _paired(candidate: list[float | None], baseline: list[float | None]) -> list[tuple[float, float]]:
    """Rounds where both were measured (a candidate that failed in a round drops out of the later ones)."""
    return [(c, b) for c, b in zip(candidate, baseline) if c is not None and b is not None]


def _shown(entry: dict[str, Any], unit: str) -> str:
    samples = entry[attrs.SAMPLES]
    if not samples:
        return entry.get(attrs.REASON) or "-"
    if attrs.LEFT_OUT in entry:
        return "left out"
    return f"{samples[-1]:,.2f}" + ("" if entry["_feasible"][-1] else " (infeasible)")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"

