"""The measure stage of a trial: on a leased device, the compile's task accuracy (where the space can change the
numerics), the runtime search on the compiled artifact, repeats of a setting within noise of the best, the baseline
again on every DRIFT_EVERY-th trial, and the verdict on all of it."""

from __future__ import annotations

import time
from typing import Any, Callable

from autotune.backends.base import Artifact, Candidate, Measurement
from autotune.errors import AccuracyFailure, ArtifactGone, CompileFailure, DeviceFailure, MeasureFailure, TrialFailure
from autotune.objective import TrialRecord, best_setting, infeasible, judge, score
from autotune.paths import safe_component
from autotune.results import attrs
from autotune.search.disturbance import disturbed_attr
from autotune.search.evaluate import Evaluator
from autotune.search.memory import Memory
from autotune.search.noise import BASELINE_REPEATS, DRIFT_EVERY, REPEATS
from autotune.search.records import Flight, MeasureSettings, StudyIdentity, Try
from autotune.search_space import Once


class MeasureStage:
    """A compiled candidate measured on a device through the evaluator, its runtime knobs searched there, and the
    result judged; where the evaluator has a judge, the compile's task accuracy is judged first."""

    def __init__(self, *, identity: StudyIdentity, settings: MeasureSettings, memory: Memory, evaluator: Evaluator,
                 progress: Callable[[str], None] = print) -> None:
        self.identity, self.settings = identity, settings
        self.memory = memory
        self.noise = memory.noise
        self.evaluator = evaluator
        self.progress = progress

    def measure(self, flight: Flight, device: int) -> list[Try]:
        """Measure the runtime settings the space's runtime search asks for on ``device`` (worker thread), then the
        best of them again when the noise says it could be the study's best (the baseline: always).

        A setting that cannot run is a try with its failure; a device failure, a time-out or an artifact deleted
        under the run twice (ArtifactGone) stops the trial."""
        assert flight.artifact is not None
        maximize = self.identity.maximize
        self.check_baseline(flight, device)
        flight.measure_started = time.monotonic()
        if self.evaluator.judge is not None:
            self.check_accuracy(flight, device)
        search = self.identity.space.runtime_search(flight.candidate) if flight.searched else Once(flight.candidate)
        tries: list[Try] = []
        while (candidate := search.ask()) is not None:
            tried = self._try(flight, candidate, device, label=f"trial-{flight.number}" +
                              (f"-{len(tries)}" if tries else ""))
            tries.append(tried)
            if len(tries) == 1 and tried.outcome is not None and not self.noise.promising(tried.outcome.value):
                break  # a compile far from the best: its runtime knobs will not make it the best
            search.tell(candidate, score(tried.outcome, maximize=maximize) if tried.outcome else None)
        best = max((t for t in tries if t.outcome is not None and t.outcome.feasible), default=None,
                   key=lambda t: score(t.outcome, maximize=maximize))
        if best is None:
            return tries
        repeats = BASELINE_REPEATS - 1 if flight.trial.user_attrs.get(attrs.BASELINE) else \
            REPEATS if self.noise.close_to_best(best.outcome.value) else 0
        # the memory learns the noise from these repeats once the trial is stored
        return tries + [self._try(flight, best.candidate, device, label=f"trial-{flight.number}-again{i}")
                        for i in range(repeats)]

    def check_baseline(self, flight: Flight, device: int) -> None:
        """On every DRIFT_EVERY-th trial, the baseline measured again on its own artifact; its change since its
        first figure is stored on this trial (the memory learns the drift from it)."""
        baseline = self.memory.baseline
        if not flight.number or flight.number % DRIFT_EVERY or baseline is None or \
                flight.trial.user_attrs.get(attrs.BASELINE) or not baseline.value:
            return
        artifact = self.memory.known_artifact(baseline.user_attrs.get(attrs.COMPILE_KEY) or "")
        if artifact is None:
            self._no_drift_check(flight, baseline.user_attrs.get(attrs.ARTIFACT_PATH))
            return
        candidate = self.identity.space.from_dict(baseline.user_attrs[attrs.CANDIDATE])
        try:
            measurement = self.evaluator.measure(artifact, candidate, seconds=self.settings.seconds,
                                                 label=f"trial-{flight.number}-baseline", device=device)
        except ArtifactGone:
            self._no_drift_check(flight, str(artifact.path))  # the trial itself goes on
            return
        except MeasureFailure as failure:
            if failure.retryable or isinstance(failure, DeviceFailure):
                raise
            return
        value = judge(self.identity.scenario, measurement, bound_ms=self.identity.bound_ms).value
        if value:
            flight.attrs[attrs.BASELINE_CHECK] = {attrs.TRIAL: baseline.number, "value": value,
                                                  attrs.DRIFT_PCT: round((value / baseline.value - 1.0) * 100, 2)}

    def _no_drift_check(self, flight: Flight, path: str | None) -> None:
        self.progress(f"trial #{flight.number}: no drift check: the baseline's compiled artifact "
                      f"{path or '(no path stored)'} is not on this machine's disk (deleted, or compiled elsewhere)")

    def _try(self, flight: Flight, candidate: Candidate, device: int, *, label: str) -> Try:
        started = time.monotonic()
        try:
            measurement, outcome = self.evaluator.evaluate(flight, candidate, seconds=self.settings.seconds,
                                                           label=label, device=device, who=f"trial #{flight.number}")
        except MeasureFailure as failure:
            if failure.retryable or isinstance(failure, DeviceFailure):
                raise
            return Try(candidate=candidate, failure=failure, seconds=time.monotonic() - started)
        return Try(candidate=candidate, measurement=measurement, outcome=outcome,
                   seconds=time.monotonic() - started)

    def check_accuracy(self, flight: Flight, device: int) -> None:
        """The compile's task accuracy, stored on the trial with the seconds it took (none where the compile was
        judged before); raises AccuracyFailure when it fell too far."""
        started = time.monotonic()
        judgement = self.evaluator.accuracy(flight, device=device, who=f"trial #{flight.number}")
        assert self.evaluator.judge is not None
        flight.attrs[attrs.ACCURACY] = {"metric": self.evaluator.judge.metric.name, "value": judgement.metric,
                                        "drop": judgement.drop, "seconds": round(time.monotonic() - started, 3)}
        if judgement.reason is not None:
            raise AccuracyFailure(judgement.reason)

    def failed(self, flight: Flight, failure: TrialFailure) -> TrialRecord:
        """A compile or measurement that failed: infeasible with the reason, or FAIL to be retried."""
        log = str(failure.log_path or "")
        stored = flight.attrs | {attrs.COMPILE_LOG: log} if isinstance(failure, CompileFailure) else \
            compiled_attrs(flight) | {attrs.MEASURE_LOG: log}
        return infeasible(self.identity.scenario, stored, failure.stage, failure.reason, retry=failure.retryable)

    def judged(self, flight: Flight, tries: list[Try]) -> TrialRecord:
        """The trial's record from its tries: the best setting by the median of its measurements, every try
        listed."""
        assert flight.artifact is not None and flight.measure_started is not None
        measured = [t for t in tries if t.outcome is not None]
        if not measured:
            last = tries[-1].failure
            assert last is not None
            record = self.failed(flight, last)
            record.attrs |= _tries_attrs(tries)
            return record
        best = measured[best_setting([(t.candidate, t.outcome) for t in measured], maximize=self.identity.maximize)]
        m, outcome, candidate = best.measurement, best.outcome, best.candidate
        assert m is not None and outcome is not None
        stored = compiled_attrs(flight) | _tries_attrs(tries) | {
            attrs.CANDIDATE: candidate.to_dict(), attrs.FLAGS: candidate.flag_string(),
            attrs.CONCURRENCY: candidate.concurrency,
            attrs.MEASURE_SECONDS: round(time.monotonic() - flight.measure_started, 3),
            attrs.MEASURE_ARGV: m.command, attrs.MEASURE_LOG: str(m.log_path),
            attrs.FIGURES: m.figures(), attrs.ESTIMATED: outcome.estimated,
            attrs.SCENARIO_FIGURES: outcome.figures,
            attrs.PRESET_FIELDS: self.preset_fields(candidate, flight.artifact, m, flight.number)}
        if not outcome.feasible:
            stored |= {attrs.FAILURE_STAGE: "scenario", attrs.FAILURE_REASON: outcome.reason}
        disturbed = disturbed_attr([t.measurement for t in tries])
        if disturbed:
            stored[attrs.DISTURBED] = disturbed
        return TrialRecord(value=outcome.value, feasible=outcome.feasible, attrs=stored)

    def preset_fields(self, candidate: Candidate, artifact: Artifact, measurement: Measurement,
                      number: int) -> dict[str, Any]:
        """The backend's fields of a preset of this trial (its command lines name their output after the trial)."""
        name = f"{safe_component(self.identity.name)}-t{number}"
        return self.identity.backend.preset_fields(candidate, artifact, measurement, name=name)


def _tries_attrs(tries: list[Try]) -> dict[str, Any]:
    """Every runtime setting the trial measured, as stored on it."""
    return {attrs.MEASUREMENTS: [
        {"candidate": t.candidate.to_dict(), "value": t.outcome.value if t.outcome else None,
         "feasible": bool(t.outcome and t.outcome.feasible),
         "reason": t.failure.reason if t.failure else (t.outcome.reason if t.outcome else None),
         "seconds": round(t.seconds, 3)} for t in tries]}


def compiled_attrs(flight: Flight) -> dict[str, Any]:
    """What a trial stores of its compile."""
    artifact = flight.artifact
    assert artifact is not None
    return flight.attrs | {attrs.ARTIFACT_PATH: str(artifact.path), attrs.COMPILE_ARGV: artifact.command,
                           attrs.COMPILE_LOG: str(artifact.log_path),
                           attrs.COMPILE_SECONDS: round(artifact.compile_seconds, 3),
                           attrs.COMPILE_REUSED: flight.reused}
