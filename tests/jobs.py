"""Tuning jobs for tests: a Cloud AI 100 study on the emulated SDK, a study of the in-memory fake target, and the
trials a job stored. Tests name a job's settings flat (``validate_top=0``, ``heartbeat_s=1``); ``job_of`` hands each
to the part that holds it."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import optuna

from autotune.backends.qaic import QaicBackend
from autotune.backends.qaic.baselines import find_baseline
from autotune.backends.qaic.space import DeviceLimits, QaicSpace
from autotune.models import MODELS, with_inputs
from autotune.scenarios import SCENARIOS
from autotune.search.records import (MeasureSettings, RunEnvironment, SearchPolicy, StudyIdentity, TuningJob,
                                     ValidationSettings, default_study_name)
from autotune.storage import load_study
from autotune.synthetic import build_convnet
from fakes import FakeBackend, FakeCandidate, FakeSpace
from helpers import spec_for


def qaic_job(emulator: Path, onnx: Path, tmp_path: Path, *, scenario: str = "offline", model: str = "resnet50",
             trials: int = 6, nsp: int = 16, **overrides) -> TuningJob:
    """A short study of ``model`` on the emulated card (seeded, 1 s measurements, a private cache)."""
    spec = with_inputs(MODELS[model], onnx)
    device = DeviceLimits(nsp_total=nsp)
    preset = overrides.pop("preset", find_baseline(model, scenario, nsp))
    baseline = preset.candidate(device) if preset else None
    backend = overrides.pop("backend", None) or QaicBackend(sdk_root=emulator)
    settings = dict(model=spec, onnx_path=onnx, scenario=SCENARIOS[scenario],
                    bound_ms=spec.latency_bounds_ms.get(scenario), backend=backend,
                    space=QaicSpace(device=device, scenario=scenario,
                                    extra_flags=baseline.extra_flags if baseline else ()),
                    devices=[0], device_size=nsp, sku="PCIe Pro",
                    storage=f"sqlite:///{tmp_path / 'studies.db'}",
                    study_name=default_study_name(model, scenario, backend, nsp), n_trials=trials,
                    measure_seconds=1.0, validate_seconds=2.0, validate_top=2, validate_rounds=3,
                    validate_max_rounds=3, seed=1, workdir=tmp_path / "work", cache_dir=tmp_path / "cache",
                    baseline=baseline, baseline_label=preset.flags if preset else None)
    return job_of(settings | overrides)


def stored_trials(job: TuningJob) -> list[optuna.trial.FrozenTrial]:
    """The trials the job's study holds now."""
    return load_study(job.identity.storage, job.identity.name).get_trials()


def fake_job(tmp_path: Path, backend: FakeBackend, *, trials: int = 6, scenario: str = "offline",
             **overrides) -> TuningJob:
    """A study of the in-memory fake target on a tiny model (in memory unless ``storage`` is given)."""
    onnx = tmp_path / "toy.onnx"
    if not onnx.exists():
        build_convnet(onnx, width=4, blocks=1, image=8)
    settings = dict(model=spec_for(onnx, "toy"), onnx_path=onnx, scenario=SCENARIOS[scenario],
                    bound_ms=50.0 if scenario == "server" else None, backend=backend,
                    space=FakeSpace(scenario=scenario), devices=[d.index for d in backend.devices()], device_size=16,
                    sku="fake slot card", storage=optuna.storages.InMemoryStorage(), study_name="toy",
                    n_trials=trials, measure_seconds=0.1, validate_seconds=0.1, validate_top=2, seed=0,
                    workdir=tmp_path / "work", cache_dir=tmp_path / "cache", baseline=FakeCandidate(),
                    baseline_label="the fake's defaults")
    return job_of(settings | overrides)


_PARTS = {"identity": StudyIdentity, "search": SearchPolicy, "measure": MeasureSettings,
          "validation": ValidationSettings, "environment": RunEnvironment}
_FLAT_NAMES = {"study_name": ("identity", "name"), "measure_seconds": ("measure", "seconds"),
               "validate_seconds": ("validation", "seconds"), "validate_top": ("validation", "top"),
               "validate_rounds": ("validation", "rounds"), "validate_max_rounds": ("validation", "max_rounds")}


def job_of(settings: dict[str, Any]) -> TuningJob:
    """A job from flat settings: each goes to the part with a field of its name (``study_name``, ``measure_seconds``
    and ``validate_*`` to the fields they name)."""
    where = {f.name: (name, f.name) for name, part in _PARTS.items() for f in fields(part)} | _FLAT_NAMES
    parts: dict[str, dict[str, Any]] = {name: {} for name in _PARTS}
    for key, value in settings.items():
        part, name = where[key]
        parts[part][name] = value
    return TuningJob(**{name: _PARTS[name](**values) for name, values in parts.items()})
