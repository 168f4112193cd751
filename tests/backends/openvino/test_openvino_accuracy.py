"""The accuracy guard on OpenVINO's own outputs (their cosine with ONNX Runtime's fp32 outputs over random inputs): a
lossy precision is rejected, f32 accepted.

This host's CPU lists no BF16 or FP16 capability, so the space never proposes them. The seam: a backend told its CPU
lists BF16 (``OpenVinoBackend(cpu=...)``). OpenVINO then really compiles and runs the model in bf16 where it can
(on CPUs with AVX-512, which emulate it; elsewhere it refuses, and the test says so and skips), on a model built so
that bf16 loses its outputs: ``(x + 100) @ D``, D taking differences of neighbours, cancels what bf16 rounds away.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import optuna
import pytest
from onnx import TensorProto, helper, numpy_helper

from autotune.backends.openvino import OpenVinoBackend
from autotune.backends.openvino.space import OvCandidate, OvSpace
from autotune.errors import CompileFailure
from autotune.scenarios import SCENARIOS
from autotune.search.accuracy import accuracy_settings
from autotune.search.records import (MeasureSettings, RunEnvironment, SearchPolicy, StudyIdentity, TuningJob,
                                     ValidationSettings)
from autotune.search.tuner import Tuner
from helpers import cosine_judge, spec_for

WIDTH = 16


def _save(path: Path, nodes: list, weights: list) -> Path:
    graph = helper.make_graph(nodes, path.stem, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", WIDTH])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", WIDTH])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def cancelling(path: Path) -> Path:
    """``y = (x + 100) @ D``: exact in f32; in bf16 (8 bits of mantissa) x + 100 keeps x to 0.5, so y is lost."""
    differences = (np.eye(WIDTH) - np.roll(np.eye(WIDTH), 1, axis=1)).astype(np.float32)
    return _save(path, [helper.make_node("Add", ["x", "offset"], ["t"]), helper.make_node("MatMul", ["t", "D"], ["y"])],
                 [numpy_helper.from_array(np.array(100, np.float32), "offset"),
                  numpy_helper.from_array(differences, "D")])


def large(path: Path) -> Path:
    """``y = x * 1e5``: values up to 1e5, beyond f16's largest (65504)."""
    return _save(path, [helper.make_node("Mul", ["x", "scale"], ["y"])],
                 [numpy_helper.from_array(np.array(1e5, np.float32), "scale")])


@pytest.fixture()
def bf16_backend() -> OpenVinoBackend:
    """A backend told that its CPU lists BF16 (the seam), so that bf16 is in its space."""
    plain = OpenVinoBackend()
    return OpenVinoBackend(cpu=replace(plain.cpu, capabilities=(*plain.cpu.capabilities, "BF16")))


def _run(backend: OpenVinoBackend, onnx_path: Path, candidate: OvCandidate, tmp_path: Path):
    """The compiled candidate as a run of one feed."""
    model = spec_for(onnx_path, "mine")
    try:
        artifact = backend.compile(onnx_path, model, candidate, tmp_path / str(candidate.precision))
    except CompileFailure as failure:
        if candidate.precision == "bf16":
            pytest.skip(f"OpenVINO computes no bf16 on this CPU: {failure.reason}")
        raise
    return lambda feed: backend.outputs(artifact, candidate, model=model, feed=feed, device=0)


def test_the_guard_rejects_bf16_where_it_loses_the_outputs_and_accepts_f32(bf16_backend, tmp_path):
    onnx_path = cancelling(tmp_path / "cancelling.onnx")
    judge = cosine_judge(onnx_path, spec_for(onnx_path, "mine"))
    exact = judge.evaluate(_run(bf16_backend, onnx_path, OvCandidate(precision="f32", batch_size=2), tmp_path), 2)
    assert exact.ok and exact.metric > 1 - 1e-6
    lossy = judge.evaluate(_run(bf16_backend, onnx_path, OvCandidate(precision="bf16", batch_size=2), tmp_path), 2)
    assert lossy.metric < 0.98 and "below the fp32 reference's 1, more than --max-drop 1%" in lossy.reason


def test_a_study_makes_the_lossy_precision_infeasible_with_its_figure(bf16_backend, tmp_path):
    onnx_path = cancelling(tmp_path / "cancelling.onnx")
    model = spec_for(onnx_path, "mine")
    accuracy = accuracy_settings(onnx_path, model.file_inputs(), metric="cosine")
    space = OvSpace(cpu=bf16_backend.cpu, scenario="offline")
    assert "bf16" in space.domains()["precision"]
    job = TuningJob(
        identity=StudyIdentity(name="guard", storage=optuna.storages.InMemoryStorage(), model=model,
                               onnx_path=onnx_path, scenario=SCENARIOS["offline"], bound_ms=None, backend=bf16_backend,
                               space=space, devices=[0], device_size=bf16_backend.cpu.cores, sku=bf16_backend.cpu.name,
                               accuracy=accuracy),
        search=SearchPolicy(n_trials=2, seed=0), measure=MeasureSettings(seconds=0.3, busy_cpu_pct=100),
        validation=ValidationSettings(top=0, seconds=0.3),
        environment=RunEnvironment(workdir=tmp_path / "work", cache_dir=tmp_path / "cache"))
    tuner = Tuner(job, progress=lambda _: None)
    for precision in ("bf16", "f32"):
        tuner.study.enqueue_trial(space.params_for(OvCandidate(hint="LATENCY", pinning=True, precision=precision,
                                                               batch_size=2)))
    tuner.run()
    lossy, exact = tuner.study.get_trials()
    if lossy.user_attrs.get("failure_stage") == "compile":
        pytest.skip(f"OpenVINO computes no bf16 on this CPU: {lossy.user_attrs['failure_reason']}")
    assert lossy.constraints == {"feasible": 1.0} and lossy.user_attrs["failure_stage"] == "accuracy"
    assert lossy.user_attrs["accuracy"]["metric"] == "cosine" and lossy.user_attrs["accuracy"]["value"] < 0.98
    assert "more than --max-drop 1%" in lossy.user_attrs["failure_reason"]
    assert exact.constraints == {"feasible": 0.0} and exact.user_attrs["accuracy"]["value"] > 1 - 1e-6
    assert exact.user_attrs["preset_fields"]["compiled"]["INFERENCE_PRECISION_HINT"] == "f32"


def test_values_beyond_f16_are_caught_as_an_f16_device_would_store_them(tmp_path):
    """No f16 here: OpenVINO's f32 outputs of a model with values beyond 65504, accepted as they are and rejected
    once held in float16 (what an f16 precision hint would make of them)."""
    onnx_path = large(tmp_path / "large.onnx")
    judge = cosine_judge(onnx_path, spec_for(onnx_path, "mine"))
    run = _run(OpenVinoBackend(), onnx_path, OvCandidate(precision="f32", batch_size=2), tmp_path)
    assert judge.evaluate(run, 2).ok

    def as_f16(feed):
        with np.errstate(over="ignore"):
            return {name: value.astype(np.float16) for name, value in run(feed).items()}

    overflowed = judge.evaluate(as_f16, 2)
    assert overflowed.metric < 0.5 and not overflowed.ok
