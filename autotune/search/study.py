"""Opening a study: its identity (a study never mixes models, scenarios, toolchains or devices), what readers need
stored beside it, the sampler, and the warm start (the baseline queued first)."""

from __future__ import annotations

import json
import time
from typing import Any

import optuna
from optuna.trial import TrialState

from autotune.errors import AutotuneError
from autotune.results import attrs
from autotune.results.attrs import is_feasible
from autotune.storage import load_study
from autotune.search.records import TuningJob
from autotune.search.strategies import sampler_for

optuna.logging.set_verbosity(optuna.logging.WARNING)


def open_study(job: TuningJob, storage: optuna.storages.BaseStorage, *, model_sha256: str | None,
               accuracy: dict[str, Any] | None = None) -> optuna.Study:
    """The job's study, created or resumed; refused when the stored identity differs from the job's. ``accuracy``:
    how its compiles are judged (``AccuracySettings.record``), stored as ``accuracy_reference``."""
    study = optuna.create_study(study_name=job.study_name, storage=storage, direction=job.scenario.direction,
                                load_if_exists=True)
    # a resumed, seeded run must not replay its first proposals: offset the seed by the trials stored
    study.sampler = sampler_for(job.sampler, None if job.seed is None else job.seed + len(study.trials))
    identity = study_identity(job, model_sha256) | ({attrs.JUDGED_BY: judged_by(accuracy)} if accuracy else {})
    stored = study.user_attrs
    version = {} if stored else {attrs.SCHEMA_VERSION: attrs.SCHEMA}  # a new study is stored under these names
    differ = [f"{key} {stored[key]!r} (not {identity[key]!r})" for key in identity
              if key in stored and stored[key] != identity[key]]
    if differ:
        raise AutotuneError(f"study {job.study_name!r} was made with another " + ", ".join(differ) +
                            ": pick another --study name; autotune does not mix them")
    # fills what an interrupted first start left unset (the version first: a study without one is read as version 0)
    judging = {attrs.ACCURACY_REFERENCE: accuracy} if accuracy else {}
    for key, value in (version | identity | reader_attrs(job) | judging).items():
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


def judged_by(accuracy: dict[str, Any]) -> str:
    """What a resumed study must judge its compiles by again: the metric, the judged samples and the allowed drop."""
    return f"{accuracy['metric']} on {accuracy['judged_sha256']}, --max-drop {accuracy['max_drop']}"


def reader_attrs(job: TuningJob) -> dict[str, Any]:
    """What the read side needs of the backend, stored once so that it never has to ask which backend this is."""
    backend, scenario = job.backend, job.scenario
    return {attrs.METRIC: scenario.metric, attrs.UNIT: scenario.unit, attrs.DIRECTION: scenario.direction,
            attrs.ONNX: str(job.onnx_path), attrs.CREATED: time.strftime("%Y-%m-%d %H:%M:%S"),
            attrs.BASELINE_FLAGS: job.baseline_label, attrs.SYNTHETIC: job.synthetic,
            attrs.DEVICE_WORD: backend.device_word, attrs.SIZE_KEY: backend.size_key,
            attrs.SIZE_UNIT: backend.size_unit, attrs.KNOB_LABELS: dict(backend.knob_labels),
            attrs.EXPORT_FORMATS: list(backend.export_formats),
            attrs.FIGURES_ESTIMATED: scenario.name in backend.estimated_scenarios, attrs.EMULATED: backend.emulated,
            attrs.MODEL_OPTIONS: dict(job.model_options)}


def enqueue_baseline(study: optuna.Study, job: TuningJob) -> None:
    """Queue the baseline (hand-tuned preset, or the untuned default) first, unless it is measured or queued."""
    if job.baseline is None:
        return
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.WAITING,
                                                          TrialState.RUNNING)):
        if trial.user_attrs.get(attrs.BASELINE):
            return
    study.enqueue_trial(job.space.params_for(job.baseline), user_attrs={attrs.BASELINE: True})


def warm_start_source(job: TuningJob, storage: optuna.storages.BaseStorage) -> optuna.Study | None:
    """The related study ``job.warm_start`` names (another NSP count, SDK version or scenario of the same model and
    backend); refused with one line, before this study is opened, when it does not exist, is this study, or is of
    another model or backend."""
    name = job.warm_start
    if not name:
        return None
    if name == job.study_name:
        raise AutotuneError(f"--warm-start {name}: that is this study itself; name a related one (another NSP "
                            f"count, SDK version or scenario of the same model)")
    source = load_study(storage, name)
    stored = source.user_attrs
    for key, mine in ((attrs.MODEL, job.model.name), (attrs.BACKEND, job.backend.name)):
        if stored.get(key) != mine:
            raise AutotuneError(f"--warm-start {name}: that study is of {key} {stored.get(key)!r}, not {mine!r}; "
                                f"warm-start from a study of the same model and backend")
    return source


def enqueue_warm_start(study: optuna.Study, job: TuningJob, source: optuna.Study | None) -> int:
    """Queue the best ``job.warm_start_top`` trials of the related study ``source`` (:func:`warm_start_source`),
    adapted to this study's space, and ``job.warm_params``; returns how many were queued (none when an earlier run
    of this study queued them already)."""
    queued = _enqueue_candidates(study, job)
    if source is None:
        return queued
    name, stored = source.study_name, source.user_attrs
    if any(str(t.user_attrs.get(attrs.WARM_START_FROM, "")).startswith(f"{name}#") for t in study.trials):
        return queued
    maximize = stored.get(attrs.DIRECTION, "maximize") == "maximize"
    ranked = sorted((t for t in source.get_trials(deepcopy=False) if is_feasible(t) and
                     t.user_attrs.get(attrs.DUPLICATE_OF) is None and attrs.CANDIDATE in t.user_attrs),
                    key=lambda t: t.value, reverse=maximize)
    keys: set[str] = set()
    for trial in ranked:
        if len(keys) == job.warm_start_top:
            break
        params = adapt(job.space.params_for(job.space.from_dict(trial.user_attrs[attrs.CANDIDATE])),
                       job.space.domains())
        key = json.dumps(params, sort_keys=True, default=str)
        if key not in keys:
            keys.add(key)
            study.enqueue_trial(params, user_attrs={attrs.WARM_START_FROM: f"{name}#{trial.number}"})
    return queued + len(keys)


def _enqueue_candidates(study: optuna.Study, job: TuningJob) -> int:
    """Queue ``job.warm_params`` (a preset's old winner and its neighbours) unless an earlier run did."""
    done = {t.user_attrs.get(attrs.WARM_START_FROM) for t in study.trials}
    queued = 0
    for label, params in job.warm_params:
        if label not in done:
            study.enqueue_trial(adapt(params, job.space.domains()), user_attrs={attrs.WARM_START_FROM: label})
            done.add(label)
            queued += 1
    return queued


def adapt(params: dict[str, Any], domains: dict[str, list[Any]]) -> dict[str, Any]:
    """``params`` moved into ``domains``: a number to the nearest value there, anything else to the first value."""
    adapted = {}
    for name, domain in domains.items():
        value = params.get(name, domain[0])
        if value not in domain:
            numeric = [d for d in domain if isinstance(d, (int, float)) and not isinstance(d, bool)]
            value = min(numeric, key=lambda d: abs(d - value)) if numeric and isinstance(value, (int, float)) \
                else domain[0]
        adapted[name] = value
    return adapted
