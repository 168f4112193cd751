"""The tuner: one TuningJob's study, its trials driven through the stages by the pipeline, then validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from optuna.trial import TrialState

from autotune.errors import AutotuneError
from autotune.models import model_sha256
from autotune.objective import TrialRecord, guarded
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
        self.accuracy = self._accuracy()
        # the fp32 reference computed now, before the storage is opened: a metric that fails on it stores nothing
        reference = self.accuracy.record() if self.accuracy else None
        self.storage = (open_storage(job.storage, heartbeat_s=job.heartbeat_s, wait_s=job.storage_wait_s,
                                     progress=progress) if isinstance(job.storage, str) else job.storage)
        self.model_sha256 = onnx_identity(job.onnx_path)
        self.warm_source = warm_start_source(job, self.storage)  # refused before a study is made
        self.study = open_study(job, self.storage, model_sha256=self.model_sha256, accuracy=reference)
        self.memory = Memory(space=job.space, backend=job.backend, noise=Noise(maximize=job.scenario.direction ==
                                                                                "maximize"))
        self.memory.refresh(attrs.trials_of(self.study, (TrialState.COMPLETE,)))
        self.recorder = Recorder(study=self.study, memory=self.memory, heartbeat_s=job.heartbeat_s, progress=progress)
        self.proposer = Proposer(job=job, study=self.study, memory=self.memory, recorder=self.recorder,
                                 progress=progress, policy=policy_for(job))
        self.evaluator = Evaluator(backend=job.backend, model=job.model, onnx_path=job.onnx_path, scenario=job.scenario,
                                   bound_ms=job.bound_ms, sku=job.sku, device_size=job.device_size,
                                   workdir=job.study_dir, cache_dir=job.cache_dir, model_sha256=self.model_sha256,
                                   progress=progress, memory=self.memory, busy_cpu_pct=job.busy_cpu_pct,
                                   quiet_wait_s=job.quiet_wait_s, judge=self.accuracy.judge if self.accuracy else None)
        self.cache = self.evaluator.cache
        self.measurer = MeasureStage(job=job, memory=self.memory, evaluator=self.evaluator, progress=progress)
        self.stats: PipelineStats | None = None

    def _accuracy(self) -> AccuracySettings | None:
        """The job's accuracy settings (random inputs where it gave none) where its space can change the numerics
        (``objective.guarded``); None where nothing changes the numerics."""
        job = self.job
        if not guarded(changes_numerics=job.backend.changes_numerics, domains=job.space.domains()):
            return None
        return job.accuracy or accuracy_settings(job.onnx_path, job.model.file_inputs())

    def run(self) -> dict[str, Any]:
        """Run the job's new trials through the compile and device pools, then validate the best few."""
        job = self.job
        if job.n_trials is None and job.timeout_s is None:
            raise AutotuneError("give --trials N or --timeout DURATION")
        enqueue_baseline(self.study, job)
        queued = enqueue_warm_start(self.study, job, self.warm_source)
        if queued:
            source = f"the best {queued} trials of study {job.warm_start}" if job.warm_start else \
                f"{queued} trials, the old preset and its one-step neighbours"
            self.progress(f"warm start: {source}, adapted to this device, are measured after the baseline")
        pipeline = self._pipeline(compile_jobs=job.compile_jobs, devices=job.devices)
        self.stats = pipeline.stats
        pipeline.run(n_trials=job.n_trials, timeout_s=job.timeout_s)
        if not job.validate_top:
            return {}
        return self.validate(pipeline.pool.usable[0] if pipeline.pool.usable else job.devices[0])

    def step(self) -> tuple[int, TrialRecord]:
        """One trial, serially: ask (an enqueued one first), compile, measure and tell."""
        pipeline = self._pipeline(compile_jobs=0, devices=self.job.devices[:1])
        pipeline.run(n_trials=1, timeout_s=None, max_asks=1)
        return pipeline.finished[-1]

    def validate(self, device: int | None = None) -> dict[str, Any]:
        """Re-measure the best few and the baseline; the winner is chosen on those runs."""
        validator = Validator(job=self.job, study=self.study, evaluator=self.evaluator, measurer=self.measurer,
                              progress=self.progress)
        return validator.validate(self.job.devices[0] if device is None else device)

    def progress_line(self, number: int, done: int, record: TrialRecord, elapsed: float) -> str:
        """``[compiles/N] #number knobs -> result | best | elapsed, left`` for one finished trial (``done``: the
        compiles finished so far; a trial that took no compile of its own says so, unless it says why already)."""
        job = self.job
        stored = record.attrs
        knobs = job.space.from_dict(stored[attrs.CANDIDATE]).describe()
        failure = f"{stored.get(attrs.FAILURE_STAGE)}: {stored.get(attrs.FAILURE_REASON)}"
        if record.retry:
            result = f"failed, to be retried ({failure})"
        elif record.feasible:
            result = f"{record.value:,.2f} {job.scenario.unit}" + (" (est.)" if stored.get(attrs.ESTIMATED) else "")
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
        total = f"/{job.n_trials}" if job.n_trials else ""
        if job.n_trials:
            left = elapsed / max(done, 1) * (job.n_trials - done)
        else:
            left = max(0.0, (job.timeout_s or 0) - elapsed)
        return (f"[{done}{total}] #{number} {knobs} -> {result} | {best_text} | "
                f"{clock(elapsed)} elapsed, ~{clock(left)} left")

    def cancel_children(self) -> None:
        """Kill the backend's running compiles and measurements (the run is stopping)."""
        self.job.backend.cancel()
        self.evaluator.cancel()

    def _pipeline(self, *, compile_jobs: int, devices: list[int]) -> Pipeline:
        job = self.job
        stages = Stages(proposer=self.proposer, evaluator=self.evaluator, measurer=self.measurer,
                        recorder=self.recorder, progress=self.progress, progress_line=self.progress_line,
                        cancel=self.cancel_children)
        pool = DevicePool(devices=devices, progress=self.progress, status=job.backend.device_status,
                          lock_dir=self.cache.root / "locks" if self.cache is not None else None,
                          lock_prefix=f"device-{job.backend.name}", device_word=job.backend.device_word)
        return Pipeline(stages, pool=pool, compile_jobs=compile_jobs, heartbeat_s=job.heartbeat_s)


def onnx_identity(path: Path) -> str | None:
    """The model's SHA-256, its external data files included (None when it is not a file: an in-process
    benchmark's placeholder)."""
    return model_sha256(path) if path.is_file() else None


def clock(seconds: float) -> str:
    """``mm:ss``, or ``h:mm:ss`` from an hour on."""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60:02d}:{seconds % 60:02d}"
