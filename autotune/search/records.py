"""The records the stages share: the tuning job in parts (each stage is given the parts it needs), the trial in
flight, and what it produced."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from autotune.backends.base import Artifact, Backend, Candidate, Measurement, SearchSpace, Target
from autotune.errors import MeasureFailure
from autotune.models import ModelSpec
from autotune.objective import Outcome, TrialRecord
from autotune.scenarios import Scenario
from autotune.search.accuracy import AccuracySettings
from autotune.search.disturbance import DEFAULT_BUSY_CPU_PCT, DEFAULT_QUIET_WAIT_S
from autotune.storage import DEFAULT_HEARTBEAT_S, DEFAULT_WAIT_S, default_storage_url


@dataclass(kw_only=True)
class StudyIdentity:
    """The study (``name`` in ``storage``) and what it tunes: model, scenario and bound, and the target: its space,
    devices (this process's), size, SKU and baseline."""

    name: str
    storage: str | optuna.storages.BaseStorage
    model: ModelSpec
    onnx_path: Path
    scenario: Scenario
    bound_ms: float | None
    backend: Backend
    space: SearchSpace
    devices: list[int]
    device_size: int
    sku: str
    baseline: Candidate | None = None
    baseline_label: str | None = None
    synthetic: bool = False
    model_options: dict[str, Any] = field(default_factory=dict)  # --batch-dim, --input-shape, --inputs as given
    accuracy: AccuracySettings | None = None  # how compiles are judged (None: random inputs, where judged at all)

    @property
    def maximize(self) -> bool:
        return self.scenario.direction == "maximize"


@dataclass(kw_only=True)
class SearchPolicy:
    """How the study searches (search/strategies.py) and for how long."""

    sampler: str = "two-phase"
    n_trials: int | None = None
    timeout_s: float | None = None
    polish_every: int = 3
    polish_after: int = 25
    warm_start: str | None = None  # a related study whose best trials are queued after the baseline
    warm_start_top: int = 5
    warm_params: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (label, params) queued likewise
    seed: int | None = None


@dataclass(kw_only=True)
class MeasureSettings:
    """How a trial is measured while searching."""

    seconds: float = 5.0
    busy_cpu_pct: float = DEFAULT_BUSY_CPU_PCT  # a CPU measurement is disturbed above this share taken by others
    quiet_wait_s: float = DEFAULT_QUIET_WAIT_S  # how long to wait for a quiet host before measuring again


@dataclass(kw_only=True)
class ValidationSettings:
    """How the best few are measured again at the end (search/validate.py)."""

    top: int = 3
    seconds: float = 20.0
    rounds: int = 5  # interleaved rounds
    max_rounds: int | None = None  # rounds while a gain stays within noise (None: four batches of ``rounds``)


@dataclass(kw_only=True)
class RunEnvironment:
    """Where this process runs the job: its folders, compile workers and storage heartbeats."""

    workdir: Path = Path(".autotune") / "work"
    cache_dir: Path | None = None
    compile_jobs: int = 0
    heartbeat_s: int = DEFAULT_HEARTBEAT_S
    storage_wait_s: float = DEFAULT_WAIT_S


@dataclass(kw_only=True)
class TuningJob:
    """Everything one ``autotune run`` needs."""

    identity: StudyIdentity
    search: SearchPolicy = field(default_factory=SearchPolicy)
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    environment: RunEnvironment = field(default_factory=RunEnvironment)


@dataclass(kw_only=True)
class Compiled:
    """A candidate and the artifact it is measured on (``reused``: made by an earlier compile, not for it)."""

    candidate: Candidate
    artifact: Artifact | None = None
    reused: bool = False


@dataclass(kw_only=True)
class Flight(Compiled):
    """A trial between ask and tell: its proposal, then its artifact; ``searched``: its runtime knobs are searched
    on the artifact (False: measured as given, as the baseline is)."""

    trial: optuna.Trial
    attrs: dict[str, Any]
    searched: bool = True
    twin: int | None = None  # the number of an unfinished trial of the same candidate this one waits for
    twin_id: int | None = None  # its storage id (trials of other workers are polled)
    record: TrialRecord | None = None  # set when the trial is decided without a measurement
    device_failures: int = 0
    new_compile: bool = True  # counted against --trials (objective.new_compile)
    measure_started: float | None = None

    @property
    def number(self) -> int:
        return self.trial.number


@dataclass(kw_only=True)
class Try:
    """One runtime setting a trial measured: its figures and verdict, or why it could not run."""

    candidate: Candidate
    measurement: Measurement | None = None
    outcome: Outcome | None = None
    failure: MeasureFailure | None = None
    seconds: float = 0.0


def build_job(*, target: Target, backend: Backend, model: ModelSpec, onnx_path: Path, scenario: Scenario,
              bound_ms: float | None, name: str, storage: str | None, synthetic: bool = False,
              model_options: dict[str, Any], search: SearchPolicy, measure: MeasureSettings,
              validation: ValidationSettings, environment: RunEnvironment,
              accuracy: AccuracySettings | None = None) -> TuningJob:
    """The job of ``autotune run`` and ``revalidate --retune``: the study ``name`` in ``storage`` (default: the
    user's) of what ``target`` offers (space, devices, size, SKU, baseline)."""
    identity = StudyIdentity(name=name, storage=storage or default_storage_url(), model=model, onnx_path=onnx_path,
                             scenario=scenario, bound_ms=bound_ms, backend=backend, space=target.space,
                             devices=[d.index for d in target.devices], device_size=target.size, sku=target.sku,
                             baseline=target.baseline, baseline_label=target.baseline_label, synthetic=synthetic,
                             model_options=model_options, accuracy=accuracy)
    return TuningJob(identity=identity, search=search, measure=measure, validation=validation,
                     environment=environment)


def default_study_name(model: str, scenario: str, backend: type[Backend] | Backend, size: int) -> str:
    """``<model>-<scenario>-<backend>-<N><size key>``: ``resnet50-offline-qaic-14nsp``, ``...-ort-2cores``."""
    return f"{model}-{scenario}-{backend.name}-{size}{backend.size_key}"


def candidate_key(candidate: Candidate) -> str:
    """The identity of a candidate: equal keys are the same measurement."""
    return json.dumps(candidate.to_dict(), sort_keys=True)


def proposal_key(candidate: Candidate, *, searched: bool) -> str:
    """The identity of a trial: its proposal, and whether its runtime knobs were searched or taken as given."""
    return candidate_key(candidate) + ("" if searched else " as given")


def compile_key(candidate: Candidate) -> str:
    """The identity of a candidate's compiled artifact (its runtime knobs left out)."""
    return json.dumps(candidate.compile_key(), default=list)
