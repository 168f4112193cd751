"""Validation: the best few of the search and the baseline measured again with a longer run; the winner is chosen on
those runs and stored on the study as its ``validation`` record."""

from __future__ import annotations

import time
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.errors import DeviceFailure, TrialFailure
from autotune.results import attrs
from autotune.results.attrs import gain_pct, is_feasible
from autotune.scenarios import judge
from autotune.search.records import TuningJob
from autotune.search.measure import MeasureStage
from autotune.search.stages import CompileStage


class Validator:
    """Re-measures the study's best trials and the baseline, and records the winner."""

    def __init__(self, *, job: TuningJob, study: optuna.Study, compiler: CompileStage, measurer: MeasureStage,
                 progress: Callable[[str], None]) -> None:
        self.job = job
        self.study = study
        self.compiler = compiler
        self.measurer = measurer
        self.progress = progress

    def validate(self, device: int) -> dict[str, Any]:
        """Re-measure the best few (and the baseline) on ``device``; returns the validation record (also stored)."""
        job = self.job
        chosen = self._chosen()
        if not chosen:
            self.progress("no feasible trial yet: nothing to validate")
            return {}
        self.progress(f"validating {len(chosen)} candidates with {job.validate_seconds:g} s runs ...")
        results = []
        for trial in chosen:
            result = self._one(trial, device)
            results.append(result)
            shown = f"{result[attrs.VALUE]:,.2f} {job.scenario.unit}" if result[attrs.FEASIBLE] else \
                result[attrs.REASON]
            self.progress(f"  #{trial.number} {job.space.from_dict(trial.user_attrs[attrs.CANDIDATE]).describe()}: "
                          f"{shown}")
        summary = self._summary(results)
        self.study.set_user_attr(attrs.VALIDATION, summary)
        return summary

    def _chosen(self) -> list[FrozenTrial]:
        feasible = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                    if is_feasible(t) and t.user_attrs.get(attrs.DUPLICATE_OF) is None and
                    attrs.CANDIDATE in t.user_attrs]
        reverse = self.job.scenario.direction == "maximize"
        chosen = sorted(feasible, key=lambda t: t.value, reverse=reverse)[: self.job.validate_top]
        return chosen + [t for t in feasible if t.user_attrs.get(attrs.BASELINE) and t not in chosen][:1]

    def _summary(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        job = self.job
        summary: dict[str, Any] = {attrs.VALIDATED: results, attrs.VALIDATE_SECONDS: job.validate_seconds,
                                   attrs.VALIDATED_AT: time.strftime("%Y-%m-%d %H:%M:%S")}
        valid = [r for r in results if r[attrs.FEASIBLE]]
        if valid:
            pick = max if job.scenario.direction == "maximize" else min
            winner = pick(valid, key=lambda r: r[attrs.VALUE])
            summary |= {attrs.WINNER_TRIAL: winner[attrs.TRIAL], attrs.WINNER_VALUE: winner[attrs.VALUE]}
        baseline = next((r for r in results if r[attrs.BASELINE]), None)
        if baseline and baseline[attrs.FEASIBLE]:
            summary |= {attrs.BASELINE_TRIAL: baseline[attrs.TRIAL], attrs.BASELINE_VALUE: baseline[attrs.VALUE]}
            if attrs.WINNER_VALUE in summary and baseline[attrs.VALUE]:
                summary[attrs.GAIN_PCT] = gain_pct(summary[attrs.WINNER_VALUE], baseline[attrs.VALUE],
                                                   job.scenario.direction)
        return summary

    def _one(self, trial: FrozenTrial, device: int) -> dict[str, Any]:
        job = self.job
        candidate = job.space.from_dict(trial.user_attrs[attrs.CANDIDATE])
        result: dict[str, Any] = {attrs.TRIAL: trial.number, attrs.BASELINE: bool(trial.user_attrs.get(attrs.BASELINE)),
                                  "batch_size": candidate.batch_size, "activations": candidate.concurrency,
                                  attrs.SEARCH_VALUE: trial.value}
        try:
            artifact = self.compiler.known_artifact(candidate) or self.compiler.compile(candidate)[0]
            measurement = self.measurer.run(artifact, candidate, seconds=job.validate_seconds,
                                            label=f"validate-{trial.number}", device=device)
        except DeviceFailure:
            raise
        except TrialFailure as failure:
            return result | {attrs.FEASIBLE: False, attrs.VALUE: None,
                             attrs.REASON: f"{failure.stage}: {failure.reason}"}
        outcome = judge(job.scenario, measurement, bound_ms=job.bound_ms)
        return result | {attrs.FEASIBLE: outcome.feasible, attrs.VALUE: outcome.value, attrs.REASON: outcome.reason,
                         attrs.ESTIMATED: outcome.estimated, attrs.FIGURES: measurement.figures(),
                         attrs.SCENARIO_FIGURES: outcome.figures, attrs.COMPILE_ARGV: artifact.command,
                         attrs.MEASURE_ARGV: measurement.command,
                         attrs.PRESET_FIELDS: self.measurer.preset_fields(candidate, artifact, measurement,
                                                                          trial.number)}
