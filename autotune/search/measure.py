"""The measure stage of a trial: on a leased device, the accuracy guard (where knobs change numerics), the runtime
search on the compiled artifact, repeats of a setting within noise of the best, the baseline again on every
DRIFT_EVERY-th trial, and the verdict on all of it."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

from autotune.backends.base import Artifact, Candidate, Measurement
from autotune.errors import AccuracyFailure, ArtifactGone, DeviceFailure, MeasureFailure
from autotune.paths import safe_component
from autotune.results import attrs
from autotune.scenarios import Outcome, judge
from autotune.search.accuracy import AccuracyGuard
from autotune.search.disturbance import Disturbance, disturbed_attr
from autotune.search.memory import Memory
from autotune.search.noise import BASELINE_REPEATS, DRIFT_EVERY, REPEATS
from autotune.search.records import Flight, TrialRecord, Try, TuningJob, infeasible, retry
from autotune.search.stages import compiled_attrs
from autotune.search_space import Once


class MeasureStage:
    """A compiled candidate measured on a device, its runtime knobs searched there, and the result judged; with a
    ``guard``, its outputs are checked against the fp32 reference first; a measurement other processes disturbed
    is measured again once the host is quiet."""

    def __init__(self, *, job: TuningJob, memory: Memory, guard: AccuracyGuard | None = None,
                 progress: Callable[[str], None] = print) -> None:
        self.job = job
        self.memory = memory
        self.noise = memory.noise
        self.guard = guard
        self.progress = progress
        self.disturbance = Disturbance(max_pct=job.busy_cpu_pct, max_wait_s=job.quiet_wait_s, progress=progress)

    def measure(self, flight: Flight, device: int) -> list[Try]:
        """Measure the runtime settings the space's runtime search asks for on ``device`` (worker thread), then the
        best of them again when the noise says it could be the study's best (the baseline: always).

        A setting that cannot run is a try with its failure; a device failure, a time-out or an artifact deleted
        under the run (ArtifactGone) stops the trial."""
        assert flight.artifact is not None
        job = self.job
        self._check_artifact(flight.artifact)
        self.check_baseline(flight, device)
        flight.measure_started = time.monotonic()
        if self.guard is not None:
            self.check_accuracy(flight, device)
        search = job.space.runtime_search(flight.candidate) if flight.searched else Once(flight.candidate)
        tries: list[Try] = []
        while (candidate := search.ask()) is not None:
            tried = self._try(flight.artifact, candidate, device, label=f"trial-{flight.number}" +
                              (f"-{len(tries)}" if tries else ""))
            tries.append(tried)
            if len(tries) == 1 and tried.outcome is not None and not self.noise.promising(tried.outcome.value):
                break  # a compile far from the best: its runtime knobs will not make it the best
            search.tell(candidate, _score(tried.outcome, job.scenario.direction) if tried.outcome else None)
        best = _best(tries, job.scenario.direction == "maximize")
        if best is None:
            return tries
        repeats = BASELINE_REPEATS - 1 if flight.trial.user_attrs.get(attrs.BASELINE) else \
            REPEATS if self.noise.close_to_best(best.outcome.value) else 0
        # the memory learns the noise from these repeats once the trial is stored
        return tries + [self._try(flight.artifact, best.candidate, device, label=f"trial-{flight.number}-again{i}")
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
        candidate = self.job.space.from_dict(baseline.user_attrs[attrs.CANDIDATE])
        try:
            tried = self._try(artifact, candidate, device, label=f"trial-{flight.number}-baseline")
        except ArtifactGone:
            self._no_drift_check(flight, str(artifact.path))  # the trial itself goes on
            return
        if tried.outcome is not None and tried.outcome.value:
            flight.attrs[attrs.BASELINE_CHECK] = {
                attrs.TRIAL: baseline.number, "value": tried.outcome.value,
                attrs.DRIFT_PCT: round((tried.outcome.value / baseline.value - 1.0) * 100, 2)}

    def _no_drift_check(self, flight: Flight, path: str | None) -> None:
        self.progress(f"trial #{flight.number}: no drift check: the baseline's compiled artifact "
                      f"{path or '(no path stored)'} is not on this machine's disk (deleted, or compiled elsewhere)")

    def _try(self, artifact: Artifact, candidate: Candidate, device: int, *, label: str) -> Try:
        started = time.monotonic()
        try:
            measurement = self.run(artifact, candidate, seconds=self.job.measure_seconds, label=label,
                                   device=device)
        except MeasureFailure as failure:
            if failure.retryable or isinstance(failure, DeviceFailure):
                raise
            self._check_artifact(artifact, failure)
            return Try(candidate=candidate, failure=failure, seconds=time.monotonic() - started)
        outcome = judge(self.job.scenario, measurement, bound_ms=self.job.bound_ms)
        return Try(candidate=candidate, measurement=measurement, outcome=outcome,
                   seconds=time.monotonic() - started)

    def _check_artifact(self, artifact: Artifact, failure: MeasureFailure | None = None) -> None:
        """Raise ArtifactGone when ``artifact`` is no longer whole on disk (deleted under the run); ``failure``: the
        failure that made us look."""
        if not self.job.backend.artifact_usable(artifact.path):
            raise ArtifactGone(artifact.path, log_path=failure.log_path if failure else None) from failure

    def check_accuracy(self, flight: Flight, device: int) -> None:
        """Compare the compiled candidate's outputs with the reference; raises AccuracyFailure when too far."""
        assert self.guard is not None and flight.artifact is not None
        batch = flight.candidate.batch_size
        try:
            outputs = self.job.backend.outputs(flight.artifact, flight.candidate, model=self.job.model,
                                               feed=self.guard.feed(batch), device=device)
        except MeasureFailure as failure:
            if not failure.retryable:
                self._check_artifact(flight.artifact, failure)
            raise
        if outputs is None:
            raise MeasureFailure(f"the {self.job.backend.name} backend returned no outputs to check")
        report = self.guard.check(outputs, batch)
        flight.attrs[attrs.ACCURACY] = report
        reason = self.guard.verdict(report)
        if reason is not None:
            raise AccuracyFailure(reason)

    def run(self, artifact: Artifact, candidate: Candidate, *, seconds: float, label: str,
            device: int) -> Measurement:
        """One measurement for the job's scenario, its logs under the study's ``runs/<label>``; measured again once
        the host is quiet when other processes disturbed it."""
        job = self.job

        def measure() -> Measurement:
            return job.backend.measure(artifact, candidate, model=job.model, scenario=job.scenario,
                                       bound_ms=job.bound_ms, seconds=seconds, device=device,
                                       log_dir=job.study_dir / "runs" / label)
        return self.disturbance.measured(measure, label)

    def failed(self, flight: Flight, failure: MeasureFailure) -> TrialRecord:
        """A measurement that failed: infeasible with the runtime's reason, or FAIL to be retried."""
        stored = compiled_attrs(flight) | {attrs.MEASURE_LOG: str(failure.log_path or "")}
        if failure.retryable:
            return retry(self.job.scenario, stored, failure)
        return infeasible(self.job.scenario, stored, failure.stage, failure.reason)

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
        best = _representative(measured, self.job.scenario.direction == "maximize")
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
        name = f"{safe_component(self.job.study_name)}-t{number}"
        return self.job.backend.preset_fields(candidate, artifact, measurement, name=name)


def _score(outcome: Outcome, direction: str) -> float | None:
    """Higher is better, None when the scenario's rule is broken (the runtime search's view of a value)."""
    if not outcome.feasible:
        return None
    return outcome.value if direction == "maximize" else -outcome.value


def _best(tries: list[Try], maximize: bool) -> Try | None:
    feasible = [t for t in tries if t.outcome is not None and t.outcome.feasible]
    return (max if maximize else min)(feasible, key=lambda t: t.outcome.value) if feasible else None


def _representative(measured: list[Try], maximize: bool) -> Try:
    """The try that stands for the trial: of the best setting by its median (feasible settings first), the
    measurement closest to that median."""
    settings: dict[Any, list[Try]] = {}
    for t in measured:
        settings.setdefault(t.candidate, []).append(t)
    feasible = {c: ts for c, ts in settings.items() if all(t.outcome.feasible for t in ts)} or settings
    medians = {c: statistics.median(t.outcome.value for t in ts) for c, ts in feasible.items()}
    chosen = (max if maximize else min)(medians, key=medians.__getitem__)
    return min(feasible[chosen], key=lambda t: abs(t.outcome.value - medians[chosen]))


def _tries_attrs(tries: list[Try]) -> dict[str, Any]:
    """Every runtime setting the trial measured, as stored on it."""
    return {attrs.MEASUREMENTS: [
        {"candidate": t.candidate.to_dict(), "value": t.outcome.value if t.outcome else None,
         "feasible": bool(t.outcome and t.outcome.feasible),
         "reason": t.failure.reason if t.failure else (t.outcome.reason if t.outcome else None),
         "seconds": round(t.seconds, 3)} for t in tries]}
