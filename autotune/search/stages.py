"""The stages of one trial: compile (through the compile cache), measure (on a leased device), and judge (the
scenario's value and feasibility). They run on worker threads and never touch the storage."""

from __future__ import annotations

import time
from typing import Any

from autotune.backends._runtime import Once
from autotune.backends.base import Artifact, Candidate, Measurement
from autotune.compile_cache import CompileCache, cache_key
from autotune.errors import AccuracyFailure, CompileFailure, DeviceFailure, MeasureFailure
from autotune.paths import safe_component
from autotune.results import attrs
from autotune.scenarios import Outcome, judge
from autotune.search.accuracy import AccuracyGuard
from autotune.search.memory import Memory
from autotune.search.records import Flight, TrialRecord, Try, TuningJob, compile_key, infeasible, retry


class CompileStage:
    """A candidate's artifact: at hand, in the compile cache, or compiled now."""

    def __init__(self, *, job: TuningJob, memory: Memory, cache: CompileCache | None,
                 model_sha256: str | None) -> None:
        self.job = job
        self.memory = memory
        self.cache = cache
        self.model_sha256 = model_sha256

    def known_artifact(self, candidate: Candidate) -> Artifact | None:
        """The compiled artifact for the candidate's compile flags, when one is at hand without compiling."""
        known = self.memory.known_artifact(compile_key(candidate))
        if known is None and self.cache is not None:
            return self.cache.lookup(cache_key(self._identity(candidate)))
        return known

    def compile(self, candidate: Candidate) -> tuple[Artifact, bool]:
        """The candidate's artifact and whether it was reused: from the cache, or compiled now (worker thread).

        Callers look for an artifact at hand first (:meth:`known_artifact`)."""
        job = self.job
        key = compile_key(candidate)
        failed = self.memory.compile_failure(key)
        if failed is not None:  # another trial of these flags failed while this one waited
            raise failed
        try:
            if self.cache is None:
                artifact = job.backend.compile(job.onnx_path, job.model, candidate, job.study_dir)
                reused = False
            else:
                identity = self._identity(candidate)
                artifact, reused = self.cache.get_or_compile(
                    cache_key(identity), identity,
                    lambda workdir: job.backend.compile(job.onnx_path, job.model, candidate, workdir))
        except CompileFailure as failure:
            if not failure.retryable:
                self.memory.artifacts[key] = failure
            raise
        self.memory.artifacts[key] = artifact
        return artifact, reused

    def failed(self, flight: Flight, failure: CompileFailure) -> TrialRecord:
        """A compile that failed: infeasible with the compiler's reason, or FAIL to be retried."""
        stored = flight.attrs | {attrs.COMPILE_LOG: str(failure.log_path or "")}
        if failure.retryable:
            return retry(self.job.scenario, stored, failure)
        return infeasible(self.job.scenario, stored, "compile", failure.reason)

    def cancel(self) -> None:
        """Make compiles that wait for another process's compile of the same flags give up."""
        if self.cache is not None:
            self.cache.cancel()

    def _identity(self, candidate: Candidate) -> dict[str, Any]:
        """What decides the compiler's output: backend, toolchain, device, model file (and its data), the shapes it
        is compiled for, base and compile flags."""
        job = self.job
        inputs = job.model.inputs
        return {"backend": job.backend.name, "toolchain": job.backend.version(), "sku": job.sku,
                "device_size": job.device_size, "model_sha256": self.model_sha256 or str(job.onnx_path),
                "inputs": inputs.identity(samples=False) if inputs else None,
                "base_flags": list(job.backend.base_flags(job.model)), "compile": list(candidate.compile_key())}


class MeasureStage:
    """A compiled candidate measured on a device, its runtime knobs searched there, and the result judged; with a
    ``guard``, its outputs are checked against the fp32 reference first."""

    def __init__(self, *, job: TuningJob, guard: AccuracyGuard | None = None) -> None:
        self.job = job
        self.guard = guard

    def measure(self, flight: Flight, device: int) -> list[Try]:
        """Measure the runtime settings the space's runtime search asks for on ``device`` (worker thread).

        A setting that cannot run is a try with its failure; a device failure or a time-out stops the trial."""
        assert flight.artifact is not None
        job = self.job
        flight.measure_started = time.monotonic()
        if self.guard is not None:
            self.check_accuracy(flight, device)
        search = job.space.runtime_search(flight.candidate) if flight.searched else Once(flight.candidate)
        tries: list[Try] = []
        while (candidate := search.ask()) is not None:
            started = time.monotonic()
            label = f"trial-{flight.number}" + (f"-{len(tries)}" if tries else "")
            try:
                measurement = self.run(flight.artifact, candidate, seconds=job.measure_seconds, label=label,
                                       device=device)
            except MeasureFailure as failure:
                if failure.retryable or isinstance(failure, DeviceFailure):
                    raise
                tries.append(Try(candidate=candidate, failure=failure, seconds=time.monotonic() - started))
                search.tell(candidate, None)
                continue
            outcome = judge(job.scenario, measurement, bound_ms=job.bound_ms)
            tries.append(Try(candidate=candidate, measurement=measurement, outcome=outcome,
                             seconds=time.monotonic() - started))
            search.tell(candidate, _score(outcome, job.scenario.direction))
        return tries

    def check_accuracy(self, flight: Flight, device: int) -> None:
        """Compare the compiled candidate's outputs with the reference; raises AccuracyFailure when too far."""
        assert self.guard is not None and flight.artifact is not None
        batch = flight.candidate.batch_size
        outputs = self.job.backend.outputs(flight.artifact, flight.candidate, model=self.job.model,
                                           feed=self.guard.feed(batch), device=device)
        if outputs is None:
            raise MeasureFailure(f"the {self.job.backend.name} backend returned no outputs to check")
        report = self.guard.check(outputs, batch)
        flight.attrs[attrs.ACCURACY] = report
        reason = self.guard.verdict(report)
        if reason is not None:
            raise AccuracyFailure(reason)

    def run(self, artifact: Artifact, candidate: Candidate, *, seconds: float, label: str,
            device: int) -> Measurement:
        """One measurement for the job's scenario, its logs under the study's ``runs/<label>``."""
        job = self.job
        return job.backend.measure(artifact, candidate, model=job.model, scenario=job.scenario,
                                   bound_ms=job.bound_ms, seconds=seconds, device=device,
                                   log_dir=job.study_dir / "runs" / label)

    def failed(self, flight: Flight, failure: MeasureFailure) -> TrialRecord:
        """A measurement that failed: infeasible with the runtime's reason, or FAIL to be retried."""
        stored = compiled_attrs(flight) | {attrs.MEASURE_LOG: str(failure.log_path or "")}
        if failure.retryable:
            return retry(self.job.scenario, stored, failure)
        return infeasible(self.job.scenario, stored, failure.stage, failure.reason)

    def judged(self, flight: Flight, tries: list[Try]) -> TrialRecord:
        """The trial's record from its tries: the best feasible one's value and figures, every try listed."""
        assert flight.artifact is not None and flight.measure_started is not None
        job = self.job
        measured = [t for t in tries if t.outcome is not None]
        if not measured:
            last = tries[-1].failure
            assert last is not None
            record = self.failed(flight, last)
            record.attrs |= _tries_attrs(tries)
            return record
        maximize = job.scenario.direction == "maximize"
        feasible = [t for t in measured if t.outcome.feasible] or measured
        best = (max if maximize else min)(feasible, key=lambda t: t.outcome.value)
        m, outcome, candidate = best.measurement, best.outcome, best.candidate
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

