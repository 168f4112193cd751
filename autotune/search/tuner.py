"""The tuner: one TuningJob's study, its trials driven through the stages by the pipeline, then validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from optuna.trial import TrialState

from autotune.errors import AutotuneError
from autotune.models import model_sha256
from autotune.objective import TrialRecord, guarded
from autotune.paths import safe_component
from autotune.results import attrs
from autotune.search.accuracy import AccuracySettings, accuracy_settings
from autotune.search.device_pool import DevicePool
from autotune.search.evaluate import Evaluator
from autotune.search.measure import MeasureStage
from autotune.search.memory import Memory
from autotune.search.noise import Noise
from autotune.search.pipeline import Pipeline, PipelineStats, Stages
from autotune.search.proposer import Proposer
from autotune.search.recorder import Recorder
from autotune.search.records import TuningJob
from autotune.search.strategies import policy_for
from autotune.search.study import enqueue_baseline, enqueue_warm_start, open_study, warm_start_source
from autotune.search.validate import Validator
from autotune.storage import open_storage


class Tuner:
    """Runs a TuningJob's trials against its study, reusing every figure and compiled artifact it already has."""

    def __init__(self, job: TuningJob, *, progress: Callable[[str], None] = print) -> None:
        self.job = job
        self.progress = progress
        identity, measure, environment = job.identity, job.measure, job.environment
        self.accuracy = self._accuracy()
        # the fp32 reference computed now, before the storage is opened: a metric that fails on it stores nothing
        reference = self.accuracy.record() if self.accuracy else None
        self.storage = (open_storage(identity.storage, heartbeat_s=environment.heartbeat_s,
                                     wait_s=environment.storage_wait_s, progress=progress)
                        if isinstance(identity.storage, str) else identity.storage)
        self.model_sha256 = onnx_identity(identity.onnx_path)
        self.warm_source = warm_start_source(identity, job.search, self.storage)  # refused before a study is made
        self.study = open_study(identity, job.search, self.storage, model_sha256=self.model_sha256, accuracy=reference)
        self.memory = Memory(space=identity.space, backend=identity.backend, noise=Noise(maximize=identity.maximize))
        self.memory.refresh(attrs.trials_of(self.study, (TrialState.COMPLETE,)))
        self.recorder = Recorder(study=self.study, memory=self.memory, heartbeat_s=environment.heartbeat_s,
                                 progress=progress)
        self.proposer = Proposer(identity=identity, study=self.study, memory=self.memory, recorder=self.recorder,
                                 progress=progress, policy=policy_for(identity, job.search))
        self.evaluator = Evaluator(backend=identity.backend, model=identity.model, onnx_path=identity.onnx_path,
                                   scenario=identity.scenario, bound_ms=identity.bound_ms, sku=identity.sku,
                                   device_size=identity.device_size, cache_dir=environment.cache_dir,
                                   workdir=environment.workdir / safe_component(identity.name),  # the study's folder
                                   model_sha256=self.model_sha256, progress=progress, memory=self.memory,
                                   busy_cpu_pct=measure.busy_cpu_pct, quiet_wait_s=measure.quiet_wait_s,
                                   judge=self.accuracy.judge if self.accuracy else None)
        self.cache = self.evaluator.cache
        self.measurer = MeasureStage(identity=identity, settings=measure, memory=self.memory,
                                     evaluator=self.evaluator, progress=progress)
        self.stats: PipelineStats | None = None

    def _accuracy(self) -> AccuracySettings | None:
        """The job's accuracy settings (random inputs where it gave none) where its space can change the numerics
        (``objective.guarded``); None where nothing changes the numerics."""
        identity = self.job.identity
        if not guarded(changes_numerics=identity.backend.changes_numerics, domains=identity.space.domains()):
            return None
        return identity.accuracy or accuracy_settings(identity.onnx_path, identity.model.file_inputs())

    def run(self) -> dict[str, Any]:
        """Run the job's new trials through the compile and device pools, then validate the best few."""
        identity, search = self.job.identity, self.job.search
        if search.n_trials is None and search.timeout_s is None:
            raise AutotuneError("give --trials N or --timeout DURATION")
        enqueue_baseline(self.study, identity)
        queued = enqueue_warm_start(self.study, identity.space, search, self.warm_source)
        if queued:
            source = f"the best {queued} trials of study {search.warm_start}" if search.warm_start else \
                f"{queued} trials, the old preset and its one-step neighbours"
            self.progress(f"warm start: {source}, adapted to this device, are measured after the baseline")
        pipeline = self._pipeline(compile_jobs=self.job.environment.compile_jobs, devices=identity.devices)
        self.stats = pipeline.stats
        pipeline.run(n_trials=search.n_trials, timeout_s=search.timeout_s)
        if not self.job.validation.top:
            return {}
        return self.validate(pipeline.pool.usable[0] if pipeline.pool.usable else identity.devices[0])

    def step(self) -> tuple[int, TrialRecord]:
        """One trial, serially: ask (an enqueued one first), compile, measure and tell."""
        pipeline = self._pipeline(compile_jobs=0, devices=self.job.identity.devices[:1])
        pipeline.run(n_trials=1, timeout_s=None, max_asks=1)
        return pipeline.finished[-1]

    def validate(self, device: int | None = None) -> dict[str, Any]:
        """Re-measure the best few and the baseline; the winner is chosen on those runs."""
        job = self.job
        validator = Validator(identity=job.identity, settings=job.validation, seed=job.search.seed or 0,
                              study=self.study, evaluator=self.evaluator, measurer=self.measurer,
                              progress=self.progress)
        return validator.validate(job.identity.devices[0] if device is None else device)

    def progress_line(self, number: int, done: int, record: TrialRecord, elapsed: float) -> str:
        """``[compiles/N] #number knobs -> result | best | elapsed, left`` for one finished trial (``done``: the
        compiles finished so far; a trial that took no compile of its own says so, unless it says why already)."""
        identity, search = self.job.identity, self.job.search
        stored = record.attrs
        knobs = identity.space.from_dict(stored[attrs.CANDIDATE]).describe()
        failure = f"{stored.get(attrs.FAILURE_STAGE)}: {stored.get(attrs.FAILURE_REASON)}"
        if record.retry:
            result = f"failed, to be retried ({failure})"
        elif record.feasible:
            result = f"{record.value:,.2f} {identity.scenario.unit}" + \
                (" (est.)" if stored.get(attrs.ESTIMATED) else "")
        else:
            result = f"infeasible ({failure})"
        measurements = stored.get(attrs.MEASUREMENTS) or []
        settings = len({json.dumps(m.get("candidate"), sort_keys=True) for m in measurements})
        if len(measurements) > 1 and stored.get(attrs.DUPLICATE_OF) is None:
            repeats = f", {len(measurements)} measurements" if len(measurements) > settings else ""
            result += f" [best of {settings} runtime settings{repeats}]" if settings > 1 else \
                f" [{len(measurements)} measurements]"
        judged = stored.get(attrs.ACCURACY)
        if isinstance(judged, dict) and self.accuracy is not None:
            result += f" [{judged['metric']} {judged['value']:.4g}" + (" on random inputs" if self.accuracy.random
                                                                      else "") + "]"
        if stored.get(attrs.DUPLICATE_OF) is not None:
            result += f" [same as #{stored[attrs.DUPLICATE_OF]}]"
        if stored.get(attrs.COMPILE_REUSED):
            result += " [compiled model reused]"
        elif not stored.get(attrs.NEW_COMPILE, True) and stored.get(attrs.DUPLICATE_OF) is None:
            result += " [no compile]"
        if attrs.BASELINE_CHECK in stored:
            result += f" [baseline again: {stored[attrs.BASELINE_CHECK][attrs.DRIFT_PCT]:+.1f}%]"
        best = self.proposer.best_trial()
        best_text = f"best {best.value:,.2f} (#{best.number})" if best else "best: none feasible"
        total = f"/{search.n_trials}" if search.n_trials else ""
        if search.n_trials:
            left = elapsed / max(done, 1) * (search.n_trials - done)
        else:
            left = max(0.0, (search.timeout_s or 0) - elapsed)
        return (f"[{done}{total}] #{number} {knobs} -> {result} | {best_text} | "
                f"{clock(elapsed)} elapsed, ~{clock(left)} left")

    def cancel_children(self) -> None:
        """Kill the backend's running compiles and measurements (the run is stopping)."""
        self.job.identity.backend.cancel()
        self.evaluator.cancel()

    def _pipeline(self, *, compile_jobs: int, devices: list[int]) -> Pipeline:
        backend = self.job.identity.backend
        stages = Stages(proposer=self.proposer, evaluator=self.evaluator, measurer=self.measurer,
                        recorder=self.recorder, progress=self.progress, progress_line=self.progress_line,
                        cancel=self.cancel_children)
        pool = DevicePool(devices=devices, progress=self.progress, status=backend.device_status,
                          lock_dir=self.cache.root / "locks" if self.cache is not None else None,
                          lock_prefix=f"device-{backend.name}", device_word=backend.device_word)
        return Pipeline(stages, pool=pool, compile_jobs=compile_jobs, heartbeat_s=self.job.environment.heartbeat_s)


def onnx_identity(path: Path) -> str | None:
    """The model's SHA-256, its external data files included (None when it is not a file: an in-process
    benchmark's placeholder)."""
    return model_sha256(path) if path.is_file() else None


def clock(seconds: float) -> str:
    """``mm:ss``, or ``h:mm:ss`` from an hour on."""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60:02d}:{seconds % 60:02d}"
