"""The Optuna study per model and scenario: identity, warm start, the stages of a trial and final validation."""

from __future__ import annotations

import datetime
import json
import math
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from autotune.backend import (Artifact, AutotuneError, CompileFailure, DeviceFailure, Measurement, MeasureFailure,
                              TrialFailure)
from autotune.models import ModelSpec, file_sha256
from autotune.objective import Outcome, Scenario, evaluate, worst_value
from autotune.compile_cache import CompileCache, cache_key
from autotune.pipeline import Flight, Pipeline, PipelineStats
from autotune.search_space import neighbours
from autotune.storage import (DEFAULT_HEARTBEAT_S, DEFAULT_WAIT_S, GRACE_HEARTBEATS, ResilientStorage,
                              StorageUnreachable, fail_stale_trials, open_storage)

FEASIBLE = "feasible"

optuna.logging.set_verbosity(optuna.logging.WARNING)


class Candidate(Protocol):
    """What the tuner needs of a candidate (qaic's search_space.Candidate, ort_bench.OrtCandidate)."""

    batch_size: int

    def to_dict(self) -> dict[str, Any]: ...

    def compile_key(self) -> tuple[Any, ...]: ...

    def flag_string(self) -> str: ...

    def describe(self) -> str: ...


class SearchSpace(Protocol):
    """A target's knobs for one study: Optuna suggestions, their inverse, one-knob domains and the rules."""

    def suggest(self, trial: Any) -> Any: ...

    def params_for(self, candidate: Any) -> dict[str, Any]: ...

    def domains(self) -> dict[str, list[Any]]: ...

    def violations(self, candidate: Any) -> list[str]: ...

    def from_dict(self, data: dict[str, Any]) -> Any: ...


class Backend(Protocol):
    """What the tuner needs of a backend (see DESIGN.md)."""

    name: str

    def version(self) -> str: ...

    def compile(self, onnx_path: Path, model: ModelSpec, candidate: Any, workdir: Path) -> Artifact: ...

    def measure_trial(self, artifact: Artifact, candidate: Any, *, scenario: str, bound_ms: float | None,
                      seconds: float, device: int, log_dir: Path) -> Measurement: ...


@dataclass(kw_only=True)
class TuningJob:
    """Everything one ``autotune run`` needs."""

    model: ModelSpec
    onnx_path: Path
    scenario: Scenario
    bound_ms: float | None
    backend: Backend
    space: SearchSpace
    devices: list[int]
    device_size: int
    sku: str
    storage: str | optuna.storages.BaseStorage
    study_name: str
    n_trials: int | None = None
    timeout_s: float | None = None
    measure_seconds: float = 5.0
    validate_top: int = 3
    validate_seconds: float = 20.0
    sampler: str = "tpe"
    polish_every: int = 3
    polish_after: int = 25
    seed: int | None = None
    workdir: Path = Path(".autotune") / "work"
    baseline: Any | None = None
    baseline_label: str | None = None
    synthetic: bool = False
    compile_jobs: int = 0
    cache_dir: Path | None = None
    heartbeat_s: int = DEFAULT_HEARTBEAT_S
    storage_wait_s: float = DEFAULT_WAIT_S


@dataclass(kw_only=True)
class TrialRecord:
    """What one evaluated candidate produced: value, feasibility and the attributes stored on its trial."""

    value: float
    feasible: bool
    attrs: dict[str, Any] = field(default_factory=dict)
    retry: bool = False


def default_study_name(model: str, scenario: str, backend: str, size: int) -> str:
    """``<model>-<scenario>-<backend>-<N>nsp`` for cards, ``...-<N>cores`` for the CPU."""
    return f"{model}-{scenario}-{backend}-{size}{'nsp' if backend == 'qaic' else 'cores'}"


def onnx_identity(path: Path) -> str | None:
    """The model file's SHA-256 (None when it is not a file: an in-process benchmark's placeholder)."""
    return file_sha256(path) if path.is_file() else None


def candidate_key(candidate: Candidate) -> str:
    return json.dumps(candidate.to_dict(), sort_keys=True)


def compile_key(candidate: Candidate) -> str:
    return json.dumps(candidate.compile_key(), default=list)


class Tuner:
    """Runs a TuningJob's trials against its study, reusing every figure and compiled artifact it already has."""

    def __init__(self, job: TuningJob, *, progress: Callable[[str], None] = print) -> None:
        self.job = job
        self.progress = progress
        self.heartbeat_s = job.heartbeat_s
        self.storage = (open_storage(job.storage, heartbeat_s=job.heartbeat_s, wait_s=job.storage_wait_s,
                                     progress=progress) if isinstance(job.storage, str) else job.storage)
        self.model_sha256 = onnx_identity(job.onnx_path)
        self.study = self._open_study()
        self.cache = CompileCache(root=job.cache_dir) if job.cache_dir is not None else None
        self.results: dict[str, FrozenTrial] = {}
        self.artifacts: dict[str, Artifact | CompileFailure] = {}
        self.stats: PipelineStats | None = None
        self._validation_device = job.devices[0]
        self._seen: set[int] = set()
        self._refresh(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    # -- study -------------------------------------------------------------------------------------------------
    def _open_study(self) -> optuna.Study:
        job = self.job
        study = optuna.create_study(study_name=job.study_name, storage=self.storage,
                                    direction=job.scenario.direction, load_if_exists=True)
        # a resumed, seeded run must not replay its first proposals: offset the seed by the trials stored
        study.sampler = _make_sampler(job.sampler, None if job.seed is None else job.seed + len(study.trials))
        size_key = "nsp" if job.backend.name == "qaic" else "cores"
        identity = {"model": job.model.name, "scenario": job.scenario.name, "backend": job.backend.name,
                    size_key: job.device_size, "onnx_sha256": self.model_sha256,
                    "latency_bound_ms": job.bound_ms, "base_flags": " ".join(job.model.base_flags),
                    "sdk_version": job.backend.version(), "sku": job.sku}
        stored = study.user_attrs
        differ = [f"{key} {stored[key]!r} (not {identity[key]!r})" for key in identity
                  if key in stored and stored[key] != identity[key]]
        if differ:
            raise AutotuneError(f"study {job.study_name!r} was made with another " + ", ".join(differ) +
                                ": pick another --study name; autotune does not mix them")
        attrs = identity | {
            "metric": job.scenario.metric, "unit": job.scenario.unit, "direction": job.scenario.direction,
            "onnx": str(job.onnx_path), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "baseline_flags": job.baseline_label, "synthetic": job.synthetic,
        }
        for key, value in attrs.items():  # fills what an interrupted first start left unset
            if key not in stored:
                study.set_user_attr(key, value)
        return study

    def _refresh(self, trials: list[FrozenTrial]) -> None:
        """Learn the results of COMPLETE trials not seen yet (this worker's, and other workers' on the study)."""
        for trial in trials:
            if trial.state == TrialState.COMPLETE and trial.number not in self._seen:
                self._seen.add(trial.number)
                self._remember(trial)

    def _remember(self, trial: FrozenTrial) -> None:
        attrs = trial.user_attrs
        if "candidate" not in attrs:
            return
        if attrs.get("duplicate_of") is None:
            self.results.setdefault(candidate_key(self.job.space.from_dict(attrs["candidate"])), trial)
        key = attrs.get("compile_key")
        if key and key not in self.artifacts:
            path = attrs.get("artifact_path") or attrs.get("qpc_dir")
            if attrs.get("failure_stage") == "compile":
                self.artifacts[key] = CompileFailure(attrs.get("failure_reason", "compile failed"))
            elif path and _usable(Path(path)):
                self.artifacts[key] = Artifact(path=Path(path), command=attrs["compile_argv"],
                                               log_path=Path(attrs["compile_log"]), compile_seconds=0.0,
                                               batch_size=attrs["candidate"]["batch_size"],
                                               cores=attrs["candidate"].get("cores", 0))

    def _warm_start(self) -> None:
        """Enqueue the baseline (hand-tuned preset, or the untuned default) first, unless already measured."""
        if self.job.baseline is None:
            return
        for trial in self.study.get_trials(deepcopy=False):
            if trial.user_attrs.get("baseline") and trial.state in (TrialState.COMPLETE, TrialState.WAITING,
                                                                    TrialState.RUNNING):
                return
        self.study.enqueue_trial(self.job.space.params_for(self.job.baseline), user_attrs={"baseline": True})

    def fail_stale_trials(self) -> None:
        """Fail (and queue again) the trials of workers that stopped sending heartbeats, and fail the trials a worker
        created but never got to give a candidate (it died, or lost the storage, inside ask): those never beat."""
        fail_stale_trials(self.study)
        limit = datetime.datetime.now() - datetime.timedelta(seconds=GRACE_HEARTBEATS * self.heartbeat_s)
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if "candidate" not in trial.user_attrs and trial.datetime_start and trial.datetime_start < limit:
                try:
                    self.study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
                except UpdateFinishedTrialError:
                    continue  # another worker got there first
                self.progress(f"trial #{trial.number} was left without a candidate by a worker that stopped: failed")

    def heartbeat(self, trial: optuna.Trial) -> None:
        """Tell the storage this worker still works on ``trial``."""
        storage = self.study._storage
        if isinstance(storage, ResilientStorage):
            storage.record_heartbeat(trial._trial_id)

    def trial_by_id(self, trial_id: int) -> FrozenTrial:
        return self.study._storage.get_trial(trial_id)

    # -- loop --------------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run the job's new trials through the compile and device pools, then validate the best few."""
        job = self.job
        if job.n_trials is None and job.timeout_s is None:
            raise AutotuneError("give --trials N or --timeout DURATION")
        self._warm_start()
        pipeline = Pipeline(self, compile_jobs=job.compile_jobs, devices=job.devices,
                            status=getattr(job.backend, "device_status", None))
        self.stats = pipeline.stats
        pipeline.run(n_trials=job.n_trials, timeout_s=job.timeout_s)
        self._validation_device = pipeline.pool.usable[0] if pipeline.pool.usable else job.devices[0]
        return self.validate() if job.validate_top else {}

    def step(self) -> tuple[int, TrialRecord]:
        """One trial, serially: ask (an enqueued one first), compile, measure and tell."""
        pipeline = Pipeline(self, compile_jobs=0, devices=self.job.devices[:1])
        pipeline.run(n_trials=1, timeout_s=None)
        return pipeline.finished[-1]

    def _polish(self, trials: list[FrozenTrial]) -> None:
        """Every ``polish_every``-th trial after ``polish_after``, queue an unmeasured one-knob step from the best.

        The peak of a compiler's surface is narrow; a sampler finds the region and these steps climb to its top.
        """
        job = self.job
        if job.polish_every <= 0 or job.sampler == "random":
            return
        finished = sum(t.state == TrialState.COMPLETE for t in trials)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if waiting or finished < job.polish_after or finished % job.polish_every:
            return
        best = self.best_trial(trials)
        if best is None:
            return
        space = job.space
        steps = neighbours(space.params_for(space.from_dict(best.user_attrs["candidate"])), space.domains())
        random.Random(finished).shuffle(steps)
        for params in steps:
            candidate = space.suggest(optuna.trial.FixedTrial(params))
            if candidate_key(candidate) not in self.results and not space.violations(candidate):
                self.study.enqueue_trial(params, user_attrs={"polish_of": best.number})
                return

    # -- the stages of one trial (Pipeline calls these; only admit, tell and fail touch the storage) -------------
    def admit(self, in_flight: list[Flight]) -> Flight:
        """Ask for a trial and decide what it needs: nothing (a known result), a twin's result, or a compile."""
        job = self.job
        trials = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.WAITING))
        self._refresh(trials)
        self._polish(trials)
        with warnings.catch_warnings():  # heartbeats are recorded here, with ask/tell, not by Study.optimize
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
            trial = self.study.ask()
        candidate = None
        try:
            self.heartbeat(trial)
            candidate = job.space.suggest(trial)
            if trial.user_attrs.get("baseline") and job.baseline is not None:
                candidate = job.baseline
            attrs: dict[str, Any] = {"candidate": candidate.to_dict(), "flags": candidate.flag_string(),
                                     "compile_key": compile_key(candidate)}
            for key, value in attrs.items():  # published now: other workers see what this trial holds
                trial.set_user_attr(key, value)
            flight = Flight(trial=trial, candidate=candidate, attrs=attrs)
            key = candidate_key(candidate)
            previous = self.results.get(key)
            problems = job.space.violations(candidate)
            known = self.artifacts.get(attrs["compile_key"])
            local = next((f for f in in_flight if candidate_key(f.candidate) == key), None)
            if previous is not None:
                flight.record = self.reuse(previous)
            elif problems:
                flight.record = self._infeasible(attrs, "constraint", "; ".join(problems))
            elif isinstance(known, CompileFailure):
                flight.record = self._infeasible(attrs, "compile", known.reason)
            elif local is not None:
                flight.twin, flight.twin_id = local.number, local.trial._trial_id
            else:
                twin = self._remote_twin(key, trial.number)
                if twin is not None:
                    flight.twin, flight.twin_id = twin.number, twin._trial_id
                    self.progress(f"trial #{trial.number}: another worker measures the same candidate (#{twin.number});"
                                  f" waiting for its result")
            return flight
        except BaseException as exc:
            self.fail(trial, candidate, exc)
            raise

    def _remote_twin(self, key: str, number: int) -> FrozenTrial | None:
        """An earlier RUNNING trial of another worker with the same candidate (the earlier one measures it)."""
        for other in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            data = other.user_attrs.get("candidate")
            if other.number < number and data and candidate_key(self.job.space.from_dict(data)) == key:
                return other
        return None

    def reuse(self, previous: FrozenTrial) -> TrialRecord | None:
        """A duplicate's record: the result of ``previous`` when it is COMPLETE, else None (measure it after all)."""
        if previous.state != TrialState.COMPLETE:
            return None
        self._refresh([previous])
        reused = {k: v for k, v in previous.user_attrs.items() if k != "baseline"}
        return TrialRecord(value=previous.value, feasible=is_feasible(previous),
                           attrs=reused | {"duplicate_of": previous.number})

    def known_artifact(self, candidate: Candidate) -> Artifact | None:
        """The compiled artifact for the candidate's compile flags, when one is at hand without compiling."""
        cached = self.artifacts.get(compile_key(candidate))
        if isinstance(cached, Artifact) and _usable(cached.path):
            return cached
        if self.cache is not None:
            return self.cache.lookup(self._cache_key(candidate))
        return None

    def compile(self, candidate: Candidate) -> tuple[Artifact, bool]:
        """The candidate's artifact and whether it was reused: from the cache, or compiled now (worker thread).

        Callers look for an artifact at hand first (:meth:`known_artifact`)."""
        job = self.job
        key = compile_key(candidate)
        cached = self.artifacts.get(key)
        if isinstance(cached, CompileFailure):  # another trial of these flags failed while this one waited
            raise cached
        try:
            if self.cache is None:
                artifact = job.backend.compile(job.onnx_path, job.model, candidate, job.workdir / job.study_name)
                reused = False
            else:
                identity = self._cache_identity(candidate)
                artifact, reused = self.cache.get_or_compile(
                    cache_key(identity), identity,
                    lambda workdir: job.backend.compile(job.onnx_path, job.model, candidate, workdir))
        except CompileFailure as failure:
            if not failure.retryable:
                self.artifacts[key] = failure
            raise
        self.artifacts[key] = artifact
        return artifact, reused

    def _cache_identity(self, candidate: Candidate) -> dict[str, Any]:
        job = self.job
        return {"backend": job.backend.name, "toolchain": job.backend.version(), "sku": job.sku,
                "device_size": job.device_size, "model_sha256": self.model_sha256 or str(job.onnx_path),
                "base_flags": list(job.model.base_flags), "compile": list(candidate.compile_key())}

    def _cache_key(self, candidate: Candidate) -> str:
        return cache_key(self._cache_identity(candidate))

    def compile_failed(self, flight: Flight, failure: CompileFailure) -> TrialRecord:
        attrs = flight.attrs | {"compile_log": str(failure.log_path or "")}
        if failure.retryable:
            return self._retry(attrs, failure)
        return self._infeasible(attrs, "compile", failure.reason)

    def measure(self, flight: Flight, device: int) -> Measurement:
        """Measure a compiled flight on ``device`` (worker thread)."""
        flight.measure_started = time.monotonic()
        return self._measure(flight.artifact, flight.candidate, self.job.measure_seconds, f"trial-{flight.number}",
                             device)

    def measure_failed(self, flight: Flight, failure: MeasureFailure) -> TrialRecord:
        attrs = self._compiled_attrs(flight) | {"measure_log": str(failure.log_path or "")}
        if failure.retryable:
            return self._retry(attrs, failure)
        return self._infeasible(attrs, "measure", failure.reason)

    def measured(self, flight: Flight, measurement: Measurement) -> TrialRecord:
        """The scenario's value and feasibility from a measurement."""
        job = self.job
        attrs = self._compiled_attrs(flight) | {
            "measure_seconds": round(time.monotonic() - flight.measure_started, 3),
            "measure_argv": measurement.command, "measure_log": str(measurement.log_path),
            "figures": measurement.figures()}
        outcome = evaluate(job.scenario, measurement, activations=getattr(flight.candidate, "activations", 1),
                           bound_ms=job.bound_ms)
        attrs |= {"estimated": outcome.estimated, "scenario_figures": outcome.figures}
        if not outcome.feasible:
            attrs |= {"failure_stage": "scenario", "failure_reason": outcome.reason}
        return TrialRecord(value=outcome.value, feasible=outcome.feasible, attrs=attrs)

    def _compiled_attrs(self, flight: Flight) -> dict[str, Any]:
        artifact = flight.artifact
        attrs = flight.attrs | {"artifact_path": str(artifact.path), "compile_argv": artifact.command,
                                "compile_log": str(artifact.log_path),
                                "compile_seconds": round(artifact.compile_seconds, 3), "compile_reused": flight.reused}
        if self.job.backend.name == "qaic":
            attrs["qpc_dir"] = str(artifact.path)
        return attrs

    def tell(self, flight: Flight, record: TrialRecord) -> None:
        """Store the record on the trial and end it: COMPLETE (feasible or not), or FAIL when it may be retried."""
        trial = flight.trial
        try:
            for key, value in record.attrs.items():
                trial.set_user_attr(key, value)
            if record.retry:
                self.study.tell(trial, state=TrialState.FAIL)
                return
            trial.set_constraint(FEASIBLE, 0.0 if record.feasible else 1.0)
            frozen = self.study.tell(trial, record.value)
        except UpdateFinishedTrialError:
            self.progress(f"trial #{trial.number} was ended by another worker's heartbeat check (this worker could "
                          f"not reach the storage for too long): its result is dropped; the candidate was queued again")
            return
        except BaseException as exc:
            self.fail(trial, flight.candidate, exc)
            raise
        if record.attrs.get("duplicate_of") is None:
            self._seen.add(frozen.number)
            self._remember(frozen)

    def fail(self, trial: optuna.Trial, candidate: Any, exc: BaseException) -> None:
        """Record why a trial did not finish (interrupted, device gone, a bug) and end it as FAIL."""
        if isinstance(exc, StorageUnreachable):
            return  # nothing can be written; heartbeat checks fail the trial and queue its candidate again
        if isinstance(exc, KeyboardInterrupt):
            stage, reason = "interrupted", "interrupted by the user; re-run the command to resume"
        elif isinstance(exc, TrialFailure):
            stage, reason = exc.stage, exc.reason
        elif isinstance(exc, AutotuneError):
            stage, reason = "stopped", str(exc)
        else:
            stage, reason = "error", f"{type(exc).__name__}: {exc}"
        try:
            if candidate is not None:
                trial.set_user_attr("candidate", candidate.to_dict())
            trial.set_user_attr("failure_stage", stage)
            trial.set_user_attr("failure_reason", reason)
            self.study.tell(trial, state=TrialState.FAIL)
        except Exception:  # the storage itself may be what failed; the original error is the one to report
            pass

    def cancel_children(self) -> None:
        """Kill the backend's running compiles and measurements (the run is stopping)."""
        cancel = getattr(self.job.backend, "cancel", None)
        if cancel is not None:
            cancel()
        if self.cache is not None:
            self.cache.cancel()

    def lock_dir(self) -> Path | None:
        """Where host-wide device locks live: beside the compile cache's (None without a cache)."""
        return self.cache.root / "locks" if self.cache is not None else None

    def _measure(self, artifact: Artifact, candidate: Any, seconds: float, label: str, device: int) -> Measurement:
        job = self.job
        return job.backend.measure_trial(artifact, candidate, scenario=job.scenario.name, bound_ms=job.bound_ms,
                                         seconds=seconds, device=device,
                                         log_dir=job.workdir / job.study_name / "runs" / label)

    def _retry(self, attrs: dict[str, Any], failure: TrialFailure) -> TrialRecord:
        """A failure that says nothing about the candidate (a time-out): FAIL, so it may be proposed again."""
        return TrialRecord(value=worst_value(self.job.scenario), feasible=False, retry=True,
                           attrs=attrs | {"failure_stage": failure.stage, "failure_reason": failure.reason})

    def _infeasible(self, attrs: dict[str, Any], stage: str, reason: str) -> TrialRecord:
        return TrialRecord(value=worst_value(self.job.scenario), feasible=False,
                           attrs=attrs | {"failure_stage": stage, "failure_reason": reason})

    # -- validation --------------------------------------------------------------------------------------------
    def validate(self) -> dict[str, Any]:
        """Re-measure the best few (and the baseline) with a longer run; the winner is chosen on that run."""
        job = self.job
        feasible = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                    if is_feasible(t) and t.user_attrs.get("duplicate_of") is None and "candidate" in t.user_attrs]
        if not feasible:
            self.progress("no feasible trial yet: nothing to validate")
            return {}
        reverse = job.scenario.direction == "maximize"
        chosen = sorted(feasible, key=lambda t: t.value, reverse=reverse)[: job.validate_top]
        chosen += [t for t in feasible if t.user_attrs.get("baseline") and t not in chosen][:1]
        self.progress(f"validating {len(chosen)} candidates with {job.validate_seconds:g} s runs ...")
        results = []
        for trial in chosen:
            result = self._validate_one(trial)
            results.append(result)
            shown = f"{result['value']:,.2f} {job.scenario.unit}" if result["feasible"] else result["reason"]
            self.progress(f"  #{trial.number} {trial.user_attrs['flags']} bs={result['batch_size']} "
                          f"a={result['activations']}: {shown}")
        valid = [r for r in results if r["feasible"]]
        summary: dict[str, Any] = {"validated": results, "validate_seconds": job.validate_seconds,
                                   "validated_at": time.strftime("%Y-%m-%d %H:%M:%S")}
        if valid:
            winner = (max if reverse else min)(valid, key=lambda r: r["value"])
            summary |= {"winner_trial": winner["trial"], "winner_value": winner["value"]}
        baseline = next((r for r in results if r["baseline"]), None)
        if baseline and baseline["feasible"]:
            summary["baseline_trial"] = baseline["trial"]
            summary["baseline_value"] = baseline["value"]
            if "winner_value" in summary and baseline["value"]:
                summary["gain_pct"] = gain_pct(summary["winner_value"], baseline["value"], job.scenario.direction)
        self.study.set_user_attr("validation", summary)
        return summary

    def _validate_one(self, trial: FrozenTrial) -> dict[str, Any]:
        job = self.job
        candidate = job.space.from_dict(trial.user_attrs["candidate"])
        activations = getattr(candidate, "activations", getattr(candidate, "instances", 1))
        result: dict[str, Any] = {"trial": trial.number, "baseline": bool(trial.user_attrs.get("baseline")),
                                  "batch_size": candidate.batch_size, "activations": activations,
                                  "search_value": trial.value}
        try:
            artifact = self.known_artifact(candidate) or self.compile(candidate)[0]
            measurement = self._measure(artifact, candidate, job.validate_seconds, f"validate-{trial.number}",
                                         self._validation_device)
        except DeviceFailure:
            raise
        except TrialFailure as failure:
            return result | {"feasible": False, "value": None, "reason": f"{failure.stage}: {failure.reason}"}
        outcome: Outcome = evaluate(job.scenario, measurement, activations=getattr(candidate, "activations", 1),
                                    bound_ms=job.bound_ms)
        return result | {"feasible": outcome.feasible, "value": outcome.value, "reason": outcome.reason,
                         "estimated": outcome.estimated, "figures": measurement.figures(),
                         "scenario_figures": outcome.figures, "compile_argv": artifact.command,
                         "measure_argv": measurement.command}

    # -- output ------------------------------------------------------------------------------------------------
    def progress_line(self, number: int, done: int, record: TrialRecord, elapsed: float) -> str:
        job = self.job
        knobs = job.space.from_dict(record.attrs["candidate"]).describe()
        if record.retry:
            result = (f"failed, to be retried ({record.attrs.get('failure_stage')}: "
                      f"{record.attrs.get('failure_reason')})")
        elif record.feasible:
            result = f"{record.value:,.2f} {job.scenario.unit}" + (" (est.)" if record.attrs.get("estimated") else "")
        else:
            result = f"infeasible ({record.attrs.get('failure_stage')}: {record.attrs.get('failure_reason')})"
        if record.attrs.get("duplicate_of") is not None:
            result += f" [same as #{record.attrs['duplicate_of']}]"
        if record.attrs.get("compile_reused"):
            result += " [compiled model reused]"
        best = self.best_trial()
        best_text = f"best {best.value:,.2f} (#{best.number})" if best else "best: none feasible"
        total = f"/{job.n_trials}" if job.n_trials else ""
        if job.n_trials:
            left = elapsed / done * (job.n_trials - done)
        else:
            left = max(0.0, (job.timeout_s or 0) - elapsed)
        return (f"[{done}{total}] #{number} {knobs} -> {result} | {best_text} | "
                f"{_clock(elapsed)} elapsed, ~{_clock(left)} left")

    def best_trial(self, trials: list[FrozenTrial] | None = None) -> FrozenTrial | None:
        """The best feasible trial of ``trials`` (default: the study's)."""
        feasible = [t for t in (trials or self.study.get_trials(deepcopy=False)) if is_feasible(t)]
        if not feasible:
            return None
        pick = max if self.job.scenario.direction == "maximize" else min
        return pick(feasible, key=lambda t: t.value)


def _make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=8,
                                          constant_liar=True)


def _usable(path: Path) -> bool:
    """A compiled artifact still on disk: a QPC directory with its program, or a model file."""
    return (path / "programqpc.bin").is_file() if path.is_dir() else path.is_file()


def gain_pct(value: float, baseline: float, direction: str) -> float:
    """Improvement over the baseline in percent (positive is better in either direction)."""
    if direction == "maximize":
        return (value / baseline - 1.0) * 100.0
    return (baseline / value - 1.0) * 100.0


def is_feasible(trial: FrozenTrial) -> bool:
    """Complete, finite and within the ``feasible`` constraint; without a constraint (older storages), no failure."""
    if trial.state != TrialState.COMPLETE or trial.value is None or not math.isfinite(trial.value):
        return False
    constraint = trial.constraints.get(FEASIBLE)
    if constraint is not None:
        return constraint <= 0
    return trial.user_attrs.get("failure_stage") is None


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60:02d}:{seconds % 60:02d}"


def study_overview(storage: optuna.storages.BaseStorage) -> list[dict[str, Any]]:
    """One row per study: trial counts by outcome, best feasible value and the baseline's value."""
    rows = []
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        feasible = [t for t in complete if is_feasible(t)]
        pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
        best = pick(feasible, key=lambda t: t.value).value if feasible else None
        baseline = next((t.value for t in feasible if t.user_attrs.get("baseline")), None)
        rows.append({"study": summary.study_name, "feasible": len(feasible),
                     "infeasible": len(complete) - len(feasible),
                     "failed": sum(t.state == TrialState.FAIL for t in trials), "best": best, "baseline": baseline})
    return rows
