"""One candidate from its flags to a judged figure, the same way wherever it is measured: the search's measure
stage, validation, ``verify``/``revalidate`` and ``autotune bench``. Its artifact is at hand, in the compile cache or
compiled now; a measurement other processes disturbed is measured again once the host is quiet (``disturbance``); an
artifact deleted under the run is compiled again and used once more (deleted again: ArtifactGone, which blames
nothing on the candidate); the measurement is judged by the scenario (``objective.judge``), and the compile's task
accuracy, once per compile, by the judge's set and metric (``objective.accuracy_failure``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, TypeVar

from autotune.backends.base import Artifact, Backend, Candidate, Measurement
from autotune.compile_cache import CompileCache, cache_key
from autotune.errors import ArtifactGone, CompileFailure, DeviceFailure, MeasureFailure
from autotune.models import ModelSpec
from autotune.objective import Outcome, judge
from autotune.scenarios import Scenario
from autotune.search.disturbance import DEFAULT_BUSY_CPU_PCT, DEFAULT_QUIET_WAIT_S, Disturbance
from autotune.search.memory import Memory
from autotune.search.records import Compiled, compile_key
from autotune.task_accuracy import AccuracyJudge, Judgement

T = TypeVar("T")


class Evaluator:
    """Candidates of one model and scenario on one target. ``workdir``: compiles without a cache, and measurements'
    logs (``runs/<label>``); ``memory``: a study's artifacts, compile failures and accuracies; ``scenario`` None:
    figures measured for no scenario, not judged (``autotune bench``); ``judge``: the task accuracy's (None: not
    judged)."""

    def __init__(self, *, backend: Backend, model: ModelSpec, onnx_path: Path, scenario: Scenario | None,
                 bound_ms: float | None, sku: str, device_size: int, workdir: Path, cache_dir: Path | None,
                 model_sha256: str | None, progress: Callable[[str], None], memory: Memory | None = None,
                 busy_cpu_pct: float = DEFAULT_BUSY_CPU_PCT, quiet_wait_s: float = DEFAULT_QUIET_WAIT_S,
                 judge: AccuracyJudge | None = None) -> None:
        self.backend, self.model, self.onnx_path, self.judge = backend, model, onnx_path, judge
        self.scenario, self.bound_ms = scenario, bound_ms
        self.sku, self.device_size, self.model_sha256 = sku, device_size, model_sha256
        self.workdir = workdir
        self.memory = memory
        self.progress = progress
        self.cache = CompileCache(root=cache_dir, usable=backend.artifact_usable) if cache_dir is not None else None
        self.disturbance = Disturbance(max_pct=busy_cpu_pct, max_wait_s=quiet_wait_s, progress=progress)

    def known_artifact(self, candidate: Candidate) -> Artifact | None:
        """The compiled artifact for the candidate's compile flags, when one is at hand without compiling."""
        known = self.memory.known_artifact(compile_key(candidate)) if self.memory is not None else None
        if known is None and self.cache is not None:
            return self.cache.lookup(cache_key(self._identity(candidate)))
        return known

    def compile(self, candidate: Candidate) -> tuple[Artifact, bool]:
        """The candidate's artifact and whether it was reused: from the cache, or compiled now (worker thread; callers
        look for one at hand first, :meth:`known_artifact`)."""
        key = compile_key(candidate)
        failed = self.memory.compile_failure(key) if self.memory is not None else None
        if failed is not None:  # another trial of these flags failed while this one waited
            raise failed
        try:
            if self.cache is None:
                artifact, reused = self.backend.compile(self.onnx_path, self.model, candidate, self.workdir), False
            else:
                identity = self._identity(candidate)
                artifact, reused = self.cache.get_or_compile(
                    cache_key(identity), identity,
                    lambda workdir: self.backend.compile(self.onnx_path, self.model, candidate, workdir,
                                                         cache_dir=self.cache.root))
        except CompileFailure as failure:
            if not failure.retryable and self.memory is not None:
                self.memory.artifacts[key] = failure
            raise
        if self.memory is not None:
            self.memory.artifacts[key] = artifact
        return artifact, reused

    def compiled(self, candidate: Candidate) -> Compiled:
        """The candidate with its artifact: at hand, or compiled now."""
        known = self.known_artifact(candidate)
        if known is not None:
            return Compiled(candidate=candidate, artifact=known, reused=True)
        artifact, reused = self.compile(candidate)
        return Compiled(candidate=candidate, artifact=artifact, reused=reused)

    def cancel(self) -> None:
        """Make compiles that wait for another process's compile of the same flags give up."""
        if self.cache is not None:
            self.cache.cancel()

    def evaluate(self, compiled: Compiled, candidate: Candidate | None = None, *, seconds: float, label: str,
                 device: int, who: str) -> tuple[Measurement, Outcome]:
        """``candidate`` (default: the compiled one; else a runtime setting of it) measured on the compiled artifact,
        which is compiled again once if it was deleted under the run (``who`` names it then), and judged."""
        chosen = compiled.candidate if candidate is None else candidate
        measurement = self.kept(compiled, lambda artifact: self.measure(artifact, chosen, seconds=seconds,
                                                                        label=label, device=device), who=who)
        assert self.scenario is not None
        return measurement, judge(self.scenario, measurement, bound_ms=self.bound_ms)

    def accuracy(self, compiled: Compiled, *, device: int, who: str) -> Judgement:
        """The compiled candidate's task accuracy: its own outputs over the judged set, fed at its batch size, judged
        against the fp32 reference; a compile judged before (the memory's) is not run again. Raises AccuracyFailure
        when the metric fails on them, MeasureFailure when the target cannot run them."""
        assert self.judge is not None
        judge, key, candidate = self.judge, compile_key(compiled.candidate), compiled.candidate
        known = self.memory.accuracy.get(key) if self.memory is not None else None
        if known is not None:
            return judge.verdict(known)

        def outputs(artifact: Artifact, feed: dict[str, Any]) -> dict[str, Any]:
            got = self.backend.outputs(artifact, candidate, model=self.model, feed=feed, device=device)
            if got is None:
                raise MeasureFailure(f"the {self.backend.name} backend returns no outputs to judge its accuracy by")
            return got

        judgement = self.kept(compiled, lambda artifact: self.on(artifact, lambda: judge.evaluate(
            lambda feed: outputs(artifact, feed), candidate.batch_size)), who=who)
        if self.memory is not None:
            self.memory.accuracy[key] = judgement.metric
        return judgement

    def measure(self, artifact: Artifact, candidate: Candidate, *, seconds: float, label: str,
                device: int) -> Measurement:
        """One measurement on ``artifact`` as it is (ArtifactGone when it failed because the artifact was deleted),
        its logs under ``runs/<label>``; measured again once the host is quiet when other processes disturbed it."""
        def measure() -> Measurement:
            return self.backend.measure(artifact, candidate, model=self.model, scenario=self.scenario,
                                        bound_ms=self.bound_ms, seconds=seconds, device=device,
                                        log_dir=self.workdir / "runs" / label)
        return self.on(artifact, lambda: self.disturbance.measured(measure, label))

    def on(self, artifact: Artifact, call: Callable[[], T]) -> T:
        """``call()`` on ``artifact``; ArtifactGone in place of its failure when the artifact is no longer whole."""
        try:
            return call()
        except MeasureFailure as failure:
            if not (failure.retryable or isinstance(failure, DeviceFailure)):
                self.check(artifact, failure)
            raise

    def check(self, artifact: Artifact, failure: MeasureFailure | None = None) -> None:
        """Raise ArtifactGone when ``artifact`` is no longer whole on disk; ``failure``: what made us look."""
        if not self.backend.artifact_usable(artifact.path):
            raise ArtifactGone(artifact.path, log_path=failure.log_path if failure else None) from failure

    def kept(self, compiled: Compiled, use: Callable[[Artifact], T], *, who: str) -> T:
        """``use(artifact)`` on the compiled candidate's artifact; one deleted under the run (before, or as ``use``
        failed) is compiled again and used once more; deleted again, ArtifactGone."""
        assert compiled.artifact is not None
        try:
            self.check(compiled.artifact)
            return use(compiled.artifact)
        except ArtifactGone as gone:
            self.progress(f"{who}: {gone.reason}: compiling it again")
        compiled.artifact, compiled.reused = self.compile(compiled.candidate)
        return use(compiled.artifact)

    def _identity(self, candidate: Candidate) -> dict[str, Any]:
        """What decides the compiler's output: backend, toolchain, device, model file (and its data), the shapes it
        is compiled for, base and compile flags."""
        inputs = self.model.inputs
        return {"backend": self.backend.name, "toolchain": self.backend.version(), "sku": self.sku,
                "device_size": self.device_size, "model_sha256": self.model_sha256 or str(self.onnx_path),
                "inputs": inputs.identity(samples=False) if inputs else None,
                "base_flags": list(self.backend.base_flags(self.model)), "compile": list(candidate.compile_key())}
