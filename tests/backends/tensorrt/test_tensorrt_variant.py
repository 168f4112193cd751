"""Model variants on the emulated trtexec: the int8 QDQ model and the fp16 file, each one compile-cache entry that the
engines built from it share; built as int8 and fp16 under both contracts, judged through --exportOutput; a variant
the converter or quantizer refuses is a compile failure with its reason; presets say how to make the file again."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace

import onnx
import pytest
from onnx import numpy_helper

from autotune.backends.tensorrt import TensorrtBackend, variant
from autotune.errors import CompileFailure
from autotune.models import with_calibration
from autotune.scenarios import SCENARIOS
from autotune.task_accuracy import random_set
from helpers import cosine_judge, spec_for


def _calibrated(onnx_path):
    model = spec_for(onnx_path)
    return with_calibration(model, random_set(model.file_inputs(), 4, seed=1).saved(onnx_path.parent / "sets"))


def _backend_and_space(trtexec, model):
    backend = TensorrtBackend(trtexec=trtexec)
    return backend, backend.target(model=model, scenario=SCENARIOS["offline"], devices=None).space


def _plan(artifact):
    return json.loads((artifact.path / "model.plan").read_text())


def test_one_variant_entry_serves_every_engine_built_from_it(trt_emulator, tiny_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("TRT_EMU_VERSION", "11")
    made = []
    make = variant._make
    monkeypatch.setattr(variant, "_make", lambda *args: made.append(args[2].precision) or make(*args))
    model = _calibrated(tiny_onnx)
    backend, space = _backend_and_space(trt_emulator, model)
    int8 = replace(space.defaults(), precision="int8", batch_size=2)
    fp16 = replace(space.defaults(), precision="fp16", batch_size=2)
    cache = tmp_path / "cache"
    engines = [backend.compile(tiny_onnx, model, c, tmp_path / "w", cache_dir=cache)
               for c in (int8, replace(int8, opt_level=1), fp16, replace(fp16, batch_size=4),
                         replace(int8, per_channel=True))]
    assert made == ["int8", "fp16", "int8"]  # per_channel is another recipe: another QDQ model
    sources = [next(a for a in e.command if a.startswith("--onnx=")) for e in engines]
    assert sources[0] == sources[1] != sources[4] and sources[2] == sources[3] and str(cache) in sources[0]
    assert sources[0].endswith("/resnet50-tiny.int8.onnx") and sources[2].endswith("/resnet50-tiny.fp16.onnx")
    assert len(list((cache / "entries").iterdir())) == 3


@pytest.mark.parametrize("version", ["10", "11"])
def test_int8_and_fp16_variants_are_built_as_such_and_judged(trt_emulator, tiny_onnx, tmp_path, monkeypatch, version):
    monkeypatch.setenv("TRT_EMU_VERSION", version)
    model = _calibrated(tiny_onnx)
    backend, space = _backend_and_space(trt_emulator, model)
    judge = cosine_judge(tiny_onnx, model)
    plans = {}
    for precision in ("int8", "fp16"):
        candidate = replace(space.defaults(), precision=precision, batch_size=4)
        artifact = backend.compile(tiny_onnx, model, candidate, tmp_path / precision)
        plans[precision] = _plan(artifact)
        assert judge.evaluate(lambda feed: backend.outputs(artifact, candidate, model=model, feed=feed, device=0),
                              4).ok
    assert plans["int8"]["precision"] == "int8" and plans["int8"]["quantization"] == "explicit"
    assert plans["int8"]["int8_speedup"] > 1.5 and plans["fp16"]["precision"] == "fp16"
    built_from = {p: plan["onnx"].rsplit("/", 1)[1] for p, plan in plans.items()}
    assert built_from == {"int8": "resnet50-tiny.int8.onnx", "fp16": "resnet50-tiny.fp16.onnx" if version == "11" else
                          tiny_onnx.name}
    assert plans["int8"]["profile"]["name"] == "resnet50"  # the emulator's profile from the file's name, kept
    qdq = onnx.load(plans["int8"]["onnx"])  # TensorRT takes int8 Q/DQ with zero points of 0 only
    zero_points = {node.input[2] for node in qdq.graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")}
    assert zero_points and all(not numpy_helper.to_array(t).any() and t.data_type == onnx.TensorProto.INT8
                               for t in qdq.graph.initializer if t.name in zero_points)
    if version == "11":  # the converted file keeps float32 inputs and outputs
        converted = onnx.load(plans["fp16"]["onnx"])
        assert {t.type.tensor_type.elem_type for t in [*converted.graph.input, *converted.graph.output]} == {1}
        assert {t.data_type for t in converted.graph.initializer} == {onnx.TensorProto.FLOAT16}


def test_the_emulated_int8_noise_fails_the_guard_and_float_layers_lessen_it(trt_emulator, tiny_onnx, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("TRT_EMU_INT8_NOISE", "5")
    model = _calibrated(tiny_onnx)
    backend, space = _backend_and_space(trt_emulator, model)
    judge = cosine_judge(tiny_onnx, model)
    metrics = {}
    for layers in (0, 4):
        candidate = replace(space.defaults(), precision="int8", float_layers=layers, batch_size=4)
        artifact = backend.compile(tiny_onnx, model, candidate, tmp_path / f"f{layers}")
        metrics[layers] = judge.evaluate(lambda feed: backend.outputs(
            artifact, candidate, model=model, feed=feed, device=0), 4)
        assert (_plan(artifact)["quantized_share"] < 1) == (layers > 0)
    assert not metrics[0].ok and metrics[4].metric > metrics[0].metric


def test_a_variant_the_converter_or_quantizer_refuses_fails_its_compile_with_the_reason(trt_emulator, tiny_onnx,
                                                                                       tmp_path, monkeypatch):
    from onnxconverter_common import float16
    from onnxruntime import quantization

    monkeypatch.setenv("TRT_EMU_VERSION", "11")
    model = _calibrated(tiny_onnx)
    backend, space = _backend_and_space(trt_emulator, model)

    def refuse(*args, **kwargs):
        raise ValueError("unsupported operator Foo")

    monkeypatch.setattr(float16, "convert_float_to_float16", refuse)
    monkeypatch.setattr(quantization, "quantize_static", refuse)
    for precision, reason in (("fp16", "fp16: the float16 converter refuses the model: ValueError: unsupported "
                                       "operator Foo"),
                              ("int8", "int8 MinMax S8S8 per-tensor, symmetric: quantize_static failed: ValueError: "
                                       "unsupported operator Foo")):
        with pytest.raises(CompileFailure) as caught:
            backend.compile(tiny_onnx, model, replace(space.defaults(), precision=precision), tmp_path / precision,
                            cache_dir=tmp_path / "cache")
        assert caught.value.reason == reason and not caught.value.retryable


def test_presets_say_how_to_make_the_variant_then_build_it(trt_emulator, tiny_onnx, tmp_path, monkeypatch):
    model = _calibrated(tiny_onnx)
    backend, space = _backend_and_space(trt_emulator, model)
    candidate = replace(space.defaults(), precision="int8", calibration_method="Entropy", batch_size=2)
    artifact = backend.compile(tiny_onnx, model, candidate, tmp_path / "c", cache_dir=tmp_path / "cache")
    m = backend.measure(artifact, candidate, model=model, scenario=SCENARIOS["offline"], bound_ms=None, seconds=0.5,
                        device=0, log_dir=tmp_path / "logs")
    fields = backend.preset_fields(candidate, artifact, m, name="t3")
    assert fields["model_variant"]["precision"] == "int8" and fields["model_variant"]["recipe"]["method"] == "Entropy"
    assert fields["model_variant"]["recipe"]["symmetric"] and fields["model_variant"]["recipe"]["activation_type"] == \
        "QInt8"
    python, option, code = shlex.split(fields["model_variant_command"])
    assert (python, option) == ("python", "-c") and code.startswith("from autotune.backends.tensorrt.variant import "
                                                                   "write_int8; write_int8(")
    assert "'t3.int8.onnx'" in code and repr(str(model.calibration.path)) in code
    assert "--onnx=t3.int8.onnx" in fields["trtexec_build_command"] and "--int8 --fp16" in \
        fields["trtexec_build_command"]
    monkeypatch.chdir(tmp_path)  # the line makes the same QDQ model
    exec(code)
    assert onnx.load("t3.int8.onnx").graph == onnx.load(_plan(artifact)["onnx"]).graph
