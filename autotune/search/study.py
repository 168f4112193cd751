"""Opening a study: its identity (a study never mixes models, scenarios, toolchains or devices), what readers need
stored beside it, the sampler, and the warm start (the baseline queued first)."""

from __future__ import annotations

import time
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from autotune.errors import AutotuneError
from autotune.results import attrs
from autotune.search.records import TuningJob

optuna.logging.set_verbosity(optuna.logging.WARNING)


def open_study(job: TuningJob, storage: optuna.storages.BaseStorage, *, model_sha256: str | None) -> optuna.Study:
    """The job's study, created or resumed; refused when the stored identity differs from the job's."""
    study = optuna.create_study(study_name=job.study_name, storage=storage, direction=job.scenario.direction,
                                load_if_exists=True)
    # a resumed, seeded run must not replay its first proposals: offset the seed by the trials stored
    study.sampler = make_sampler(job.sampler, None if job.seed is None else job.seed + len(study.trials))
    identity = study_identity(job, model_sha256)
    stored = study.user_attrs
    differ = [f"{key} {stored[key]!r} (not {identity[key]!r})" for key in identity
              if key in stored and stored[key] != identity[key]]
    if differ:
        raise AutotuneError(f"study {job.study_name!r} was made with another " + ", ".join(differ) +
                            ": pick another --study name; autotune does not mix them")
    for key, value in (identity | reader_attrs(job)).items():  # fills what an interrupted first start left unset
        if key not in stored:
            study.set_user_attr(key, value)
    return study


def study_identity(job: TuningJob, model_sha256: str | None) -> dict[str, Any]:
    """What makes two runs one study: model file, scenario and bound, backend, toolchain, device, base flags and
    what the model is fed (batch symbol, input shapes, samples)."""
    backend = job.backend
    return {attrs.MODEL: job.model.name, attrs.SCENARIO: job.scenario.name, attrs.BACKEND: backend.name,
            backend.size_key: job.device_size, attrs.ONNX_SHA256: model_sha256, attrs.LATENCY_BOUND_MS: job.bound_ms,
            attrs.BASE_FLAGS: " ".join(backend.base_flags(job.model)), attrs.SDK_VERSION: backend.version(),
            attrs.SKU: job.sku, attrs.INPUTS: job.model.inputs.identity() if job.model.inputs else None}


def reader_attrs(job: TuningJob) -> dict[str, Any]:
    """What the read side needs of the backend, stored once so that it never has to ask which backend this is."""
    backend, scenario = job.backend, job.scenario
    return {attrs.METRIC: scenario.metric, attrs.UNIT: scenario.unit, attrs.DIRECTION: scenario.direction,
            attrs.ONNX: str(job.onnx_path), attrs.CREATED: time.strftime("%Y-%m-%d %H:%M:%S"),
            attrs.BASELINE_FLAGS: job.baseline_label, attrs.SYNTHETIC: job.synthetic,
            attrs.DEVICE_WORD: backend.device_word, attrs.SIZE_KEY: backend.size_key,
            attrs.SIZE_UNIT: backend.size_unit, attrs.KNOB_LABELS: dict(backend.knob_labels),
            attrs.EXPORT_FORMATS: list(backend.export_formats),
            attrs.FIGURES_ESTIMATED: scenario.name in backend.estimated_scenarios, attrs.EMULATED: backend.emulated}


def enqueue_baseline(study: optuna.Study, job: TuningJob) -> None:
    """Queue the baseline (hand-tuned preset, or the untuned default) first, unless it is measured or queued."""
    if job.baseline is None:
        return
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.WAITING,
                                                          TrialState.RUNNING)):
        if trial.user_attrs.get(attrs.BASELINE):
            return
    study.enqueue_trial(job.space.params_for(job.baseline), user_attrs={attrs.BASELINE: True})


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """``tpe`` (multivariate, grouped, constant liar for the trials in flight) or ``random``."""
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=8,
                                          constant_liar=True)
