"""The Optuna study per model and scenario: storage, warm start, the ask/tell loop and final validation."""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.backend import Artifact, AutotuneError, CompileFailure, Measurement, MeasureFailure, TrialFailure
from autotune.models import ModelSpec
from autotune.objective import Outcome, Scenario, candidate_rule_violations, evaluate, worst_value
from autotune.presets import Baseline
from autotune.search_space import (Candidate, DeviceLimits, neighbours, param_domains, params_for, suggest,
                                   violations)

DEFAULT_STORAGE_PATH = Path("studies") / "autotune.db"
FEASIBLE = "feasible"

optuna.logging.set_verbosity(optuna.logging.WARNING)


class Backend(Protocol):
    """What the tuner needs of a backend (see DESIGN.md)."""

    name: str

    def version(self) -> str: ...

    def compile(self, onnx_path: Path, model: ModelSpec, candidate: Candidate, workdir: Path) -> Artifact: ...

    def measure(self, artifact: Artifact, *, activations: int, set_size: int, device: int, seconds: float,
                latency: bool) -> Measurement: ...


@dataclass(kw_only=True)
class TuningJob:
    """Everything one ``autotune run`` needs."""

    model: ModelSpec
    onnx_path: Path
    scenario: Scenario
    bound_ms: float | None
    backend: Backend
    device_qid: int
    device: DeviceLimits
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
    baseline: Baseline | None = None


@dataclass(kw_only=True)
class TrialRecord:
    """What one evaluated candidate produced: value, feasibility and the attributes stored on its trial."""

    value: float
    feasible: bool
    attrs: dict[str, Any] = field(default_factory=dict)


def default_storage_url() -> str:
    """The embedded default: one SQLite file under ``studies/``."""
    DEFAULT_STORAGE_PATH.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{DEFAULT_STORAGE_PATH}"


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``; a URL that cannot be opened is a one-line AutotuneError."""
    try:
        return optuna.storages.get_storage(url)
    except Exception as exc:  # sqlalchemy and drivers raise many types for a bad URL or an unreachable server
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AutotuneError(f"cannot open storage {url!r}: {first_line}") from None


def default_study_name(model: str, scenario: str, backend: str, nsp: int) -> str:
    return f"{model}-{scenario}-{backend}-{nsp}nsp"


def load_study(storage: str | optuna.storages.BaseStorage, name: str) -> optuna.Study:
    """An existing study, or a one-line error listing the studies that do exist."""
    storage_obj = open_storage(storage) if isinstance(storage, str) else storage
    try:
        return optuna.load_study(study_name=name, storage=storage_obj)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage_obj)]
        raise AutotuneError(f"no study {name!r} in the storage; studies there: {', '.join(names) or 'none'}") from None


def file_sha256(path: Path) -> str | None:
    """The file's SHA-256 (None when it is not a file: an in-process benchmark's placeholder)."""
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def candidate_key(candidate: Candidate) -> str:
    return json.dumps(candidate.to_dict(), sort_keys=True)


def compile_key(candidate: Candidate) -> str:
    return json.dumps(candidate.compile_key(), default=list)


class Tuner:
    """Runs a TuningJob's trials against its study, reusing every figure and QPC it already has."""

    def __init__(self, job: TuningJob, *, progress: Callable[[str], None] = print) -> None:
        self.job = job
        self.progress = progress
        self.study = self._open_study()
        self.results: dict[str, FrozenTrial] = {}
        self.artifacts: dict[str, Artifact | CompileFailure] = {}
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            self._remember(trial)

    # -- study -------------------------------------------------------------------------------------------------
    def _open_study(self) -> optuna.Study:
        job = self.job
        storage = open_storage(job.storage) if isinstance(job.storage, str) else job.storage
        sampler: optuna.samplers.BaseSampler
        if job.sampler == "random":
            sampler = optuna.samplers.RandomSampler(seed=job.seed)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                sampler = optuna.samplers.TPESampler(seed=job.seed, multivariate=True, group=True,
                                                     n_startup_trials=8, constant_liar=True)
        study = optuna.create_study(study_name=job.study_name, storage=storage, sampler=sampler,
                                    direction=job.scenario.direction, load_if_exists=True)
        identity = {"model": job.model.name, "scenario": job.scenario.name, "backend": job.backend.name,
                    "nsp": job.device.nsp_total, "onnx_sha256": file_sha256(job.onnx_path)}
        stored = {key: study.user_attrs.get(key) for key in identity}
        if any(v is not None for v in stored.values()):
            differ = [f"{key} {stored[key]} (not {identity[key]})" for key in identity if stored[key] != identity[key]]
            if differ:
                raise AutotuneError(f"study {job.study_name!r} was made with another " + ", ".join(differ) +
                                    ": pick another --study name; autotune does not mix them")
        if not study.user_attrs:
            attrs = identity | {
                "metric": job.scenario.metric, "unit": job.scenario.unit, "direction": job.scenario.direction,
                "latency_bound_ms": job.bound_ms, "onnx": str(job.onnx_path), "sku": job.sku,
                "sdk_version": job.backend.version(), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                "baseline_flags": job.baseline.flags if job.baseline else None,
            }
            for key, value in attrs.items():
                study.set_user_attr(key, value)
        return study

    def _remember(self, trial: FrozenTrial) -> None:
        attrs = trial.user_attrs
        if "candidate" not in attrs:
            return
        if attrs.get("duplicate_of") is None and attrs.get("failure_stage") not in ("interrupted",):
            self.results.setdefault(candidate_key(Candidate.from_dict(attrs["candidate"])), trial)
        key = attrs.get("compile_key")
        if key and key not in self.artifacts:
            if attrs.get("failure_stage") == "compile":
                self.artifacts[key] = CompileFailure(attrs.get("failure_reason", "compile failed"))
            elif attrs.get("qpc_dir") and (Path(attrs["qpc_dir"]) / "programqpc.bin").is_file():
                self.artifacts[key] = Artifact(path=Path(attrs["qpc_dir"]), command=attrs["compile_argv"],
                                               log_path=Path(attrs["compile_log"]), compile_seconds=0.0,
                                               batch_size=attrs["candidate"]["batch_size"],
                                               cores=attrs["candidate"]["cores"])

    def _baseline_candidate(self) -> Candidate | None:
        if self.job.baseline is None:
            return None
        candidate = self.job.baseline.candidate(self.job.device)
        if self.job.scenario.name == "singlestream":
            candidate = candidate.with_runtime(activations=1, set_size=1)
        return candidate

    def _warm_start(self) -> None:
        """Enqueue the hand-tuned preset first, unless the study already measured or queued it."""
        baseline = self._baseline_candidate()
        if baseline is None:
            return
        for trial in self.study.get_trials(deepcopy=False):
            if trial.user_attrs.get("baseline") and trial.state in (TrialState.COMPLETE, TrialState.WAITING):
                return
        self.study.enqueue_trial(params_for(baseline, scenario=self.job.scenario.name),
                                 user_attrs={"baseline": True})

    # -- loop --------------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run the job's new trials, then validate the best few; returns the validation summary."""
        job = self.job
        if job.n_trials is None and job.timeout_s is None:
            raise AutotuneError("give --trials N or --timeout DURATION")
        self._warm_start()
        started = time.monotonic()
        done = 0
        while job.n_trials is None or done < job.n_trials:
            elapsed = time.monotonic() - started
            if job.timeout_s is not None and elapsed >= job.timeout_s:
                self.progress(f"timeout of {_clock(job.timeout_s)} reached after {done} trials")
                break
            number, record = self.step()
            done += 1
            self.progress(self._progress_line(number, done, record, time.monotonic() - started))
        return self.validate() if job.validate_top else {}

    def step(self) -> tuple[int, TrialRecord]:
        """Ask the study for one trial (an enqueued one first), evaluate it and tell the result."""
        self._polish()
        trial = self.study.ask()
        return trial.number, self._run_trial(trial)

    def _polish(self) -> None:
        """Every ``polish_every``-th trial after ``polish_after``, queue an unmeasured one-knob step from the best.

        The peak of a compiler's surface is narrow; a sampler finds the region and these steps climb to its top.
        """
        job = self.job
        finished = len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        waiting = self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if job.polish_every <= 0 or job.sampler == "random" or waiting or finished < job.polish_after \
                or finished % job.polish_every:
            return
        best = self.best_trial()
        if best is None:
            return
        extra = tuple(best.user_attrs["candidate"].get("extra_flags", ()))
        start = params_for(Candidate.from_dict(best.user_attrs["candidate"]), scenario=job.scenario.name)
        steps = neighbours(start, param_domains(job.device, scenario=job.scenario.name))
        random.Random(finished).shuffle(steps)
        for params in steps:
            candidate = suggest(optuna.trial.FixedTrial(params), job.device, scenario=job.scenario.name,
                                extra_flags=extra)
            if candidate_key(candidate) not in self.results and not violations(candidate, job.device):
                self.study.enqueue_trial(params, user_attrs={"polish_of": best.number})
                return

    def _run_trial(self, trial: optuna.Trial) -> TrialRecord:
        job = self.job
        extra = self._baseline_candidate().extra_flags if job.baseline else ()
        candidate = suggest(trial, job.device, scenario=job.scenario.name, extra_flags=extra)
        if trial.user_attrs.get("baseline"):
            candidate = self._baseline_candidate() or candidate
        try:
            record = self._evaluate(candidate)
        except KeyboardInterrupt:
            trial.set_user_attr("candidate", candidate.to_dict())
            trial.set_user_attr("failure_stage", "interrupted")
            trial.set_user_attr("failure_reason", "interrupted by the user; re-run the command to resume")
            self.study.tell(trial, state=TrialState.FAIL)
            raise
        for key, value in record.attrs.items():
            trial.set_user_attr(key, value)
        trial.set_constraint(FEASIBLE, 0.0 if record.feasible else 1.0)
        frozen = self.study.tell(trial, record.value)
        if record.attrs.get("duplicate_of") is None:
            self._remember(frozen)
        return record

    def _evaluate(self, candidate: Candidate) -> TrialRecord:
        job = self.job
        attrs: dict[str, Any] = {"candidate": candidate.to_dict(), "flags": candidate.flag_string(),
                                 "compile_key": compile_key(candidate)}
        previous = self.results.get(candidate_key(candidate))
        if previous is not None:
            reused = {k: v for k, v in previous.user_attrs.items() if k != "baseline"}
            return TrialRecord(value=previous.value, feasible=_is_feasible(previous),
                               attrs=reused | {"duplicate_of": previous.number})
        problems = violations(candidate, job.device) + candidate_rule_violations(job.scenario, candidate)
        if problems:
            return self._infeasible(attrs, "constraint", "; ".join(problems))
        try:
            artifact, reused_qpc = self._artifact(candidate)
        except CompileFailure as failure:
            return self._infeasible(attrs | {"compile_log": str(failure.log_path or "")}, "compile", failure.reason)
        attrs |= {"qpc_dir": str(artifact.path), "compile_argv": artifact.command, "compile_log": str(artifact.log_path),
                  "compile_seconds": round(artifact.compile_seconds, 3), "compile_reused": reused_qpc}
        started = time.monotonic()
        try:
            measurement = job.backend.measure(artifact, activations=candidate.activations,
                                              set_size=candidate.set_size, device=job.device_qid,
                                              seconds=job.measure_seconds, latency=job.scenario.name != "offline")
        except MeasureFailure as failure:
            return self._infeasible(attrs | {"measure_log": str(failure.log_path or "")}, "measure", failure.reason)
        attrs |= {"measure_seconds": round(time.monotonic() - started, 3), "measure_argv": measurement.command,
                  "measure_log": str(measurement.log_path), "figures": measurement.figures()}
        outcome = evaluate(job.scenario, measurement, activations=candidate.activations, bound_ms=job.bound_ms)
        attrs |= {"estimated": outcome.estimated, "scenario_figures": outcome.figures}
        if not outcome.feasible:
            attrs |= {"failure_stage": "scenario", "failure_reason": outcome.reason}
        return TrialRecord(value=outcome.value, feasible=outcome.feasible, attrs=attrs)

    def _infeasible(self, attrs: dict[str, Any], stage: str, reason: str) -> TrialRecord:
        return TrialRecord(value=worst_value(self.job.scenario), feasible=False,
                           attrs=attrs | {"failure_stage": stage, "failure_reason": reason})

    def _artifact(self, candidate: Candidate) -> tuple[Artifact, bool]:
        """The QPC for the candidate's compile flags: reused when compiled before, else compiled now."""
        key = compile_key(candidate)
        cached = self.artifacts.get(key)
        if isinstance(cached, CompileFailure):
            raise cached
        if cached is not None and (cached.path / "programqpc.bin").is_file():
            return cached, True
        try:
            artifact = self.job.backend.compile(self.job.onnx_path, self.job.model, candidate,
                                                self.job.workdir / self.job.study_name)
        except CompileFailure as failure:
            self.artifacts[key] = failure
            raise
        self.artifacts[key] = artifact
        return artifact, False

    # -- validation --------------------------------------------------------------------------------------------
    def validate(self) -> dict[str, Any]:
        """Re-measure the best few (and the baseline) with a longer run; the winner is chosen on that run."""
        job = self.job
        feasible = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                    if _is_feasible(t) and t.user_attrs.get("duplicate_of") is None and "candidate" in t.user_attrs]
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
        candidate = Candidate.from_dict(trial.user_attrs["candidate"])
        result: dict[str, Any] = {"trial": trial.number, "baseline": bool(trial.user_attrs.get("baseline")),
                                  "batch_size": candidate.batch_size, "activations": candidate.activations,
                                  "search_value": trial.value}
        try:
            artifact, _ = self._artifact(candidate)
            measurement = job.backend.measure(artifact, activations=candidate.activations,
                                              set_size=candidate.set_size, device=job.device_qid,
                                              seconds=job.validate_seconds,
                                              latency=job.scenario.name != "offline")
        except TrialFailure as failure:
            return result | {"feasible": False, "value": None, "reason": f"{failure.stage}: {failure.reason}"}
        outcome: Outcome = evaluate(job.scenario, measurement, activations=candidate.activations,
                                    bound_ms=job.bound_ms)
        return result | {"feasible": outcome.feasible, "value": outcome.value, "reason": outcome.reason,
                         "estimated": outcome.estimated, "figures": measurement.figures(),
                         "scenario_figures": outcome.figures, "compile_argv": artifact.command,
                         "measure_argv": measurement.command}

    # -- output ------------------------------------------------------------------------------------------------
    def _progress_line(self, number: int, done: int, record: TrialRecord, elapsed: float) -> str:
        job = self.job
        c = Candidate.from_dict(record.attrs["candidate"])
        knobs = (f"cores={c.cores} ols={c.ols} mos={','.join(map(str, c.mos or ()))} bs={c.batch_size} "
                 f"mc={'on' if c.multicast_weights else 'off'} a={c.activations} S={c.set_size}")
        if record.feasible:
            result = f"{record.value:,.2f} {job.scenario.unit}" + (" (est.)" if record.attrs.get("estimated") else "")
        else:
            result = f"infeasible ({record.attrs.get('failure_stage')}: {record.attrs.get('failure_reason')})"
        if record.attrs.get("duplicate_of") is not None:
            result += f" [same as #{record.attrs['duplicate_of']}]"
        if record.attrs.get("compile_reused"):
            result += " [QPC reused]"
        best = self.best_trial()
        best_text = f"best {best.value:,.2f} (#{best.number})" if best else "best: none feasible"
        total = f"/{job.n_trials}" if job.n_trials else ""
        if job.n_trials:
            left = elapsed / done * (job.n_trials - done)
        else:
            left = max(0.0, (job.timeout_s or 0) - elapsed)
        return (f"[{done}{total}] #{number} {knobs} -> {result} | {best_text} | "
                f"{_clock(elapsed)} elapsed, ~{_clock(left)} left")

    def best_trial(self) -> FrozenTrial | None:
        feasible = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                    if _is_feasible(t)]
        if not feasible:
            return None
        pick = max if self.job.scenario.direction == "maximize" else min
        return pick(feasible, key=lambda t: t.value)


def gain_pct(value: float, baseline: float, direction: str) -> float:
    """Improvement over the baseline in percent (positive is better in either direction)."""
    if direction == "maximize":
        return (value / baseline - 1.0) * 100.0
    return (baseline / value - 1.0) * 100.0


def _is_feasible(trial: FrozenTrial) -> bool:
    constraint = trial.constraints.get(FEASIBLE)
    return constraint is not None and constraint <= 0 and trial.value is not None and math.isfinite(trial.value)


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
        feasible = [t for t in complete if _is_feasible(t)]
        pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
        best = pick(feasible, key=lambda t: t.value).value if feasible else None
        baseline = next((t.value for t in feasible if t.user_attrs.get("baseline")), None)
        rows.append({"study": summary.study_name, "feasible": len(feasible),
                     "infeasible": len(complete) - len(feasible),
                     "failed": sum(t.state == TrialState.FAIL for t in trials), "best": best, "baseline": baseline})
    return rows
