"""What every registered backend must do, checked the same way for each (its emulator, its runtime, or in memory).

A backend added to the registry without a setup below fails here: a new target comes with its conformance."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest

from autotune import backends
from autotune.backends.base import Backend, Measurement
from autotune.backends.openvino import OpenVinoBackend
from autotune.backends.openvino.space import OvCandidate
from autotune.backends.ort import OrtBackend
from autotune.backends.ort.space import OrtCandidate
from autotune.backends.qaic import QaicBackend
from autotune.backends.qaic.space import QaicCandidate
from autotune.backends.tensorrt import TensorrtBackend
from autotune.backends.tensorrt.space import TrtCandidate
from autotune.errors import CompileFailure, MeasureFailure
from autotune.scenarios import SCENARIOS
from autotune.search.records import candidate_key
from autotune.synthetic import build_convnet
from fakes import FakeBackend, FakeCandidate
from helpers import TRTEXEC, cosine_judge, spec_for
from user_models import convnet

@dataclass(frozen=True)
class Setup:
    """How to set a backend up here, and a compile it must refuse (a model file and a candidate)."""

    make: Callable[[Path], Backend]
    refused: Callable[[Path, Path], tuple[Path, Any]]


def _garbage(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_bytes(b"\x08\x01garbage")
    return path


SETUPS: dict[str, Setup] = {
    # the emulated card refuses a working set beyond its VTCM, as the real compiler does
    "qaic": Setup(make=lambda emulator: QaicBackend(sdk_root=emulator),
                  refused=lambda tmp, tiny: (build_convnet(tmp / "retinanet-tiny.onnx"),
                                             QaicCandidate(cores=1, mos=(1,), batch_size=16))),
    # the emulated GPU runs out of memory building a RetinaNet-sized engine at batch 256 in fp32
    "tensorrt": Setup(make=lambda emulator: TensorrtBackend(trtexec=TRTEXEC),
                      refused=lambda tmp, tiny: (build_convnet(tmp / "retinanet-tiny.onnx"),
                                                 TrtCandidate(batch_size=256))),
    "ort": Setup(make=lambda emulator: OrtBackend(),
                 refused=lambda tmp, tiny: (_garbage(tmp, "bad.onnx"), OrtCandidate())),
    "openvino": Setup(make=lambda emulator: OpenVinoBackend(),
                      refused=lambda tmp, tiny: (_garbage(tmp, "bad.onnx"), OvCandidate())),
    "fake": Setup(make=lambda emulator: FakeBackend(fail_level=4),
                  refused=lambda tmp, tiny: (tiny, FakeCandidate(level=4))),
}
SCENARIO_NAMES = ("offline", "server", "singlestream", "multistream")


def _registered() -> list[str]:
    backends.register(FakeBackend)
    try:
        return backends.names()
    finally:
        backends.unregister(FakeBackend.name)


@pytest.fixture(params=_registered())
def backend(request, emulator, trt_emulator) -> Backend:
    assert request.param in SETUPS, f"backend {request.param!r} has no conformance setup in this file"
    return SETUPS[request.param].make(emulator)


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_onnx) -> dict[str, Any]:
    """Specs of the tiny ResNet-shaped model (symbol batch_size) and of models with another batch symbol and none."""
    folder = tmp_path_factory.mktemp("conformance")
    other, fixed = convnet(folder / "other-symbol.onnx", batch="N"), convnet(folder / "fixed.onnx", batch=1)
    return {"resnet50": spec_for(tiny_onnx), "other": (other, spec_for(other, "mine")),
            "fixed": (fixed, spec_for(fixed))}  # resnet50 by name: its presets have batch 8


def _proposals(backend: Backend, scenario: str, n: int = 30, *, model: Any) -> list:
    space = backend.target(model=model, scenario=SCENARIOS[scenario], devices=None).space
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    return [space.suggest(study.ask()) for _ in range(n)], space


@pytest.mark.parametrize("scenario", SCENARIO_NAMES)
def test_the_space_proposes_only_valid_candidates_that_round_trip(backend, scenario, models):
    proposals, space = _proposals(backend, scenario, model=models["resnet50"])
    for candidate in proposals:
        assert space.violations(candidate) == [], candidate
        assert space.from_dict(candidate.to_dict()) == candidate
        assert candidate.concurrency >= 1 and candidate.batch_size >= 1 and candidate.describe()
        options = {"batch_size": candidate.batch_size, **candidate.to_dict()}
        assert candidate_key(space.parse(candidate.flag_string(), options=options)) == candidate_key(candidate)
        params = space.params_for(candidate)
        assert space.suggest(optuna.trial.FixedTrial(params)) == candidate
        for step in space.neighbours(candidate):
            assert set(step) <= set(space.domains())
            assert all(step[k] in space.domains()[k] for k in step if k in params)


@pytest.mark.parametrize("scenario", SCENARIO_NAMES)
def test_the_baseline_is_in_the_space(backend, scenario, models):
    target = backend.target(model=models["resnet50"], scenario=SCENARIOS[scenario], devices=None)
    if target.baseline is None:
        pytest.skip(f"{backend.name} has no baseline for resnet50 {scenario}")
    assert target.space.violations(target.baseline) == []
    params = target.space.params_for(target.baseline)
    assert all(value in target.space.domains()[name] for name, value in params.items())
    assert target.baseline_label and target.devices and target.size >= 1


def test_the_traits_readers_store_are_complete(backend):
    assert backend.name and backend.title and backend.device_word and backend.size_key and backend.size_unit
    assert {"yaml", "json"} <= set(backend.export_formats)
    assert backend.measure_seconds > 0 and backend.validate_seconds > 0
    assert backend.version() and backend.devices() and isinstance(backend.emulated, bool)


@pytest.mark.parametrize("scenario", SCENARIO_NAMES)
def test_a_tiny_model_compiles_and_measures_for_every_scenario(backend, scenario, tiny_onnx, tmp_path, models):
    model = models["resnet50"]
    target = backend.target(model=model, scenario=SCENARIOS[scenario], devices=None)
    candidate = target.baseline or _proposals(backend, scenario, 1, model=model)[0][0]
    artifact = backend.compile(tiny_onnx, model, candidate, tmp_path / "c")
    assert backend.artifact_usable(artifact.path) and artifact.batch_size == candidate.batch_size
    m = backend.measure(artifact, candidate, model=model, scenario=SCENARIOS[scenario], bound_ms=1000.0, seconds=0.5,
                        device=target.devices[0].index, log_dir=tmp_path / "logs")
    assert isinstance(m, Measurement) and m.samples_per_second > 0
    value = getattr(m, SCENARIOS[scenario].figure)
    assert value is not None and value > 0
    assert m.estimated == (scenario in backend.estimated_scenarios)
    fields = backend.preset_fields(candidate, artifact, m, name="study-t0")
    assert isinstance(fields, dict)
    assert all(isinstance(v, str) and v for k, v in fields.items() if k.endswith("_command"))


def test_failures_are_typed(backend, tiny_onnx, tmp_path, models):
    model = models["resnet50"]
    target = backend.target(model=model, scenario=SCENARIOS["offline"], devices=None)
    onnx, refused = SETUPS[backend.name].refused(tmp_path, tiny_onnx)
    with pytest.raises(CompileFailure) as caught:
        backend.compile(onnx, model, refused, tmp_path / "c")
    assert caught.value.stage == "compile" and caught.value.reason and not caught.value.retryable
    candidate = target.baseline or _proposals(backend, "offline", 1, model=model)[0][0]
    artifact = backend.compile(tiny_onnx, model, candidate, tmp_path / "ok")
    for path in ([artifact.path] if artifact.path.is_file() else artifact.path.iterdir()):
        path.unlink()  # the artifact is gone from disk
    assert not backend.artifact_usable(artifact.path)
    with pytest.raises(MeasureFailure) as failed:
        backend.measure(artifact, candidate, model=model, scenario=SCENARIOS["offline"], bound_ms=None, seconds=0.5,
                        device=target.devices[0].index, log_dir=tmp_path / "logs")
    assert failed.value.stage in ("measure", "device") and failed.value.reason


def test_the_batch_goes_through_the_models_own_symbol(backend, tmp_path, models):
    onnx, model = models["other"]
    target = backend.target(model=model, scenario=SCENARIOS["offline"], devices=None)
    candidate = next(c for c in _proposals(backend, "offline", model=model)[0] if c.batch_size > 1)
    artifact = backend.compile(onnx, model, candidate, tmp_path / "c")
    m = backend.measure(artifact, candidate, model=model, scenario=SCENARIOS["offline"], bound_ms=None, seconds=0.5,
                        device=target.devices[0].index, log_dir=tmp_path / "logs")
    assert artifact.batch_size == m.batch_size == candidate.batch_size > 1 and m.samples_per_second > 0


@pytest.mark.parametrize("scenario", SCENARIO_NAMES)
def test_a_model_without_a_batch_symbol_has_a_batch_knob_of_one(backend, scenario, tmp_path, models):
    onnx, model = models["fixed"]
    target = backend.target(model=model, scenario=SCENARIOS[scenario], devices=None)
    assert target.space.domains().get("batch_size", [1]) == [1]
    proposals, space = _proposals(backend, scenario, model=model)
    assert {c.batch_size for c in proposals} == {1}
    if target.baseline is not None:
        assert target.baseline.batch_size == 1 and space.violations(target.baseline) == []
    if scenario == "offline":
        candidate = proposals[0]
        artifact = backend.compile(onnx, model, candidate, tmp_path / "c")
        m = backend.measure(artifact, candidate, model=model, scenario=SCENARIOS[scenario], bound_ms=None,
                            seconds=0.5, device=target.devices[0].index, log_dir=tmp_path / "logs")
        assert m.samples_per_second > 0


def test_outputs_match_the_reference_where_a_backend_returns_them(backend, tiny_onnx, tmp_path, models):
    model = models["resnet50"]
    target = backend.target(model=model, scenario=SCENARIOS["offline"], devices=None)
    candidate = target.baseline or _proposals(backend, "offline", 1, model=model)[0][0]
    artifact = backend.compile(tiny_onnx, model, candidate, tmp_path / "c")
    judge = cosine_judge(tiny_onnx, model)
    outputs = backend.outputs(artifact, candidate, model=model, feed=model.file_inputs().feed(candidate.batch_size),
                              device=target.devices[0].index)
    if outputs is None:
        assert not backend.changes_numerics  # a target whose knobs change numerics must return its outputs
        return
    assert judge.evaluate(lambda feed: backend.outputs(artifact, candidate, model=model, feed=feed, device=target.
                                                       devices[0].index), candidate.batch_size).ok
