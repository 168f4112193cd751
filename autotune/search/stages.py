"""The compile stage of a trial (through the compile cache) and what a trial stores of its compile; the measure
stage is ``measure.py``. Both run on worker threads and never touch the storage."""

from __future__ import annotations

from typing import Any

from autotune.backends.base import Artifact, Candidate
from autotune.compile_cache import CompileCache, cache_key
from autotune.errors import CompileFailure
from autotune.results import attrs
from autotune.search.memory import Memory
from autotune.search.records import Flight, TrialRecord, TuningJob, compile_key, infeasible, retry


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


def compiled_attrs(flight: Flight) -> dict[str, Any]:
    """What a trial stores of its compile."""
    artifact = flight.artifact
    assert artifact is not None
    return flight.attrs | {attrs.ARTIFACT_PATH: str(artifact.path), attrs.COMPILE_ARGV: artifact.command,
                           attrs.COMPILE_LOG: str(artifact.log_path),
                           attrs.COMPILE_SECONDS: round(artifact.compile_seconds, 3),
                           attrs.COMPILE_REUSED: flight.reused}

