"""Opening a study: its identity (a study never mixes models, scenarios, toolchains or devices), what readers need
stored beside it, the sampler, and the warm start (the baseline queued first)."""

from __future__ import annotations

import json
import time
from typing import Any

import optuna
from optuna.trial import TrialState

from autotune.backends.base import SearchSpace
from autotune.errors import AutotuneError
from autotune.results import attrs
from autotune.results.attrs import is_feasible
from autotune.storage import load_study
from autotune.search.records import SearchPolicy, StudyIdentity
from autotune.search.strategies import sampler_for

optuna.logging.set_verbosity(optuna.logging.WARNING)


def open_study(identity: StudyIdentity, search: SearchPolicy, storage: optuna.storages.BaseStorage, *,
               model_sha256: str | None, accuracy: dict[str, Any] | None = None) -> optuna.Study:
    """The study, created or resumed, with the search's sampler; refused when its stored identity differs.
    ``accuracy``: how its compiles are judged (``AccuracySettings.record``), stored as ``accuracy_reference``."""
    study = optuna.create_study(study_name=identity.name, storage=storage, direction=identity.scenario.direction,
                                load_if_exists=True)
    # a resumed, seeded run must not replay its first proposals: offset the seed by the trials stored
    study.sampler = sampler_for(search.sampler, None if search.seed is None else search.seed + len(study.trials))
    expected = study_identity(identity, model_sha256) | ({attrs.JUDGED_BY: judged_by(accuracy)} if accuracy else {})
    stored = study.user_attrs
    version = {} if stored else {attrs.SCHEMA_VERSION: attrs.SCHEMA}  # a new study is stored under these names
    differ = [f"{key} {stored[key]!r} (not {expected[key]!r})" for key in expected
              if key in stored and stored[key] != expected[key]]
    if differ:
        raise AutotuneError(f"study {identity.name!r} was made with another " + ", ".join(differ) +
                            ": pick another --study name; autotune does not mix them")
    # fills what an interrupted first start left unset (the version first: a study without one is read as version 0)
    judging = {attrs.ACCURACY_REFERENCE: accuracy} if accuracy else {}
    for key, value in (version | expected | reader_attrs(identity) | judging).items():
        if key not in stored:
            study.set_user_attr(key, value)
    return study


def study_identity(identity: StudyIdentity, model_sha256: str | None) -> dict[str, Any]:
    """What makes two runs one study: model file, scenario and bound, backend, toolchain, device, base flags and
    what the model is fed (batch symbol, input shapes, samples)."""
    backend, model = identity.backend, identity.model
    return {attrs.MODEL: model.name, attrs.SCENARIO: identity.scenario.name, attrs.BACKEND: backend.name,
            backend.size_key: identity.device_size, attrs.ONNX_SHA256: model_sha256,
            attrs.LATENCY_BOUND_MS: identity.bound_ms, attrs.BASE_FLAGS: " ".join(backend.base_flags(model)),
            attrs.SDK_VERSION: backend.version(), attrs.SKU: identity.sku,
            attrs.INPUTS: model.inputs.identity() if model.inputs else None}


def judged_by(accuracy: dict[str, Any]) -> str:
    """What a resumed study must judge its compiles by again: the metric, the judged samples and the allowed drop."""
    return f"{accuracy['metric']} on {accuracy['judged_sha256']}, --max-drop {accuracy['max_drop']}"


def reader_attrs(identity: StudyIdentity) -> dict[str, Any]:
    """What the read side needs of the backend, stored once so that it never has to ask which backend this is."""
    backend, scenario = identity.backend, identity.scenario
    return {attrs.METRIC: scenario.metric, attrs.UNIT: scenario.unit, attrs.DIRECTION: scenario.direction,
            attrs.ONNX: str(identity.onnx_path), attrs.CREATED: time.strftime("%Y-%m-%d %H:%M:%S"),
            attrs.BASELINE_FLAGS: identity.baseline_label, attrs.SYNTHETIC: identity.synthetic,
            attrs.DEVICE_WORD: backend.device_word, attrs.SIZE_KEY: backend.size_key,
            attrs.SIZE_UNIT: backend.size_unit, attrs.KNOB_LABELS: dict(backend.knob_labels),
            attrs.EXPORT_FORMATS: list(backend.export_formats),
            attrs.FIGURES_ESTIMATED: scenario.name in backend.estimated_scenarios, attrs.EMULATED: backend.emulated,
            attrs.MODEL_OPTIONS: dict(identity.model_options)}


def enqueue_baseline(study: optuna.Study, identity: StudyIdentity) -> None:
    """Queue the baseline (hand-tuned preset, or the untuned default) first, unless it is measured or queued."""
    if identity.baseline is None:
        return
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.WAITING,
                                                          TrialState.RUNNING)):
        if trial.user_attrs.get(attrs.BASELINE):
            return
    study.enqueue_trial(identity.space.params_for(identity.baseline), user_attrs={attrs.BASELINE: True})


def warm_start_source(identity: StudyIdentity, search: SearchPolicy,
                      storage: optuna.storages.BaseStorage) -> optuna.Study | None:
    """The related study ``search.warm_start`` names (another NSP count, SDK version or scenario of the same model and
    backend); refused with one line, before this study is opened, when it does not exist, is this study, or is of
    another model or backend."""
    name = search.warm_start
    if not name:
        return None
    if name == identity.name:
        raise AutotuneError(f"--warm-start {name}: that is this study itself; name a related one (another NSP "
                            f"count, SDK version or scenario of the same model)")
    source = load_study(storage, name)
    stored = source.user_attrs
    for key, mine in ((attrs.MODEL, identity.model.name), (attrs.BACKEND, identity.backend.name)):
        if stored.get(key) != mine:
            raise AutotuneError(f"--warm-start {name}: that study is of {key} {stored.get(key)!r}, not {mine!r}; "
                                f"warm-start from a study of the same model and backend")
    return source


def enqueue_warm_start(study: optuna.Study, space: SearchSpace, search: SearchPolicy,
                       source: optuna.Study | None) -> int:
    """Queue the best ``search.warm_start_top`` trials of the related study ``source`` (:func:`warm_start_source`),
    adapted to this study's ``space``, and ``search.warm_params``; returns how many were queued (none when an
    earlier run of this study queued them already)."""
    queued = _enqueue_candidates(study, space, search)
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
        if len(keys) == search.warm_start_top:
            break
        params = adapt(space.params_for(space.from_dict(trial.user_attrs[attrs.CANDIDATE])), space.domains())
        key = json.dumps(params, sort_keys=True, default=str)
        if key not in keys:
            keys.add(key)
            study.enqueue_trial(params, user_attrs={attrs.WARM_START_FROM: f"{name}#{trial.number}"})
    return queued + len(keys)


def _enqueue_candidates(study: optuna.Study, space: SearchSpace, search: SearchPolicy) -> int:
    """Queue ``search.warm_params`` (a preset's old winner and its neighbours) unless an earlier run did."""
    done = {t.user_attrs.get(attrs.WARM_START_FROM) for t in study.trials}
    queued = 0
    for label, params in search.warm_params:
        if label not in done:
            study.enqueue_trial(adapt(params, space.domains()), user_attrs={attrs.WARM_START_FROM: label})
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
