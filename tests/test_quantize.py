from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from autotune.compile_cache import cache_key
from autotune.errors import CompileFailure
from autotune.inputs import read_inputs
from autotune.quantize import (Recipe, cache_identity, default_recipe, keep_in_float, prepare, quantizable_nodes,
                               quantize, sensitivity)
from autotune.synthetic import build_outlier_classifier, outlier_classifier_samples
from autotune.task_accuracy import AccuracyJudge, OrtModel, SampleSet, parse_max_drop, parse_metric, split_sets


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """The classifier int8 breaks, its inputs, and 300 samples split into 60 that calibrate and 240 that judge."""
    path = build_outlier_classifier(tmp_path_factory.mktemp("classifier") / "classifier.onnx")
    x, labels = outlier_classifier_samples(300)
    return path, read_inputs(path), split_sets(SampleSet.of("acc.npz", {"x": x}, labels))


def _judge(classifier) -> AccuracyJudge:
    path, inputs, split = classifier
    return AccuracyJudge(onnx_path=path, inputs=inputs, judged=split.judged, metric=parse_metric("agreement",
                         labels=False), max_drop=parse_max_drop("1%"))


def test_the_default_recipe_follows_the_cpus_flags():
    assert default_recipe(["avx2", "avx512f", "avx512_vnni"]) == Recipe()
    assert default_recipe(["avx2", "avx_vnni"]).reduce_range is False
    assert default_recipe(["avx2", "fma"]) == Recipe(reduce_range=True)
    assert Recipe().describe() == "int8 MinMax U8S8 per-tensor"
    assert (Recipe(method="Entropy", per_channel=True, activation_type="QInt8", reduce_range=True,
                   nodes_to_exclude=("a", "b")).describe()
            == "int8 Entropy S8S8 per-channel, reduce_range, 2 nodes in float")


def test_a_recipe_is_data_that_round_trips_and_keys_the_cache():
    recipe = Recipe(method="Percentile", nodes_to_exclude=("wide",))
    assert recipe.as_dict()["nodes_to_exclude"] == ["wide"] and Recipe.from_dict(recipe.as_dict()) == recipe
    with pytest.raises(ValueError, match="calibration method 'Histogram'"):
        Recipe(method="Histogram")
    with pytest.raises(ValueError, match="quantization type 'QInt4'"):
        Recipe(weight_type="QInt4")
    identity = cache_identity(model_sha256="m", calibration_sha256="c", recipe=recipe)
    assert identity["onnxruntime"] and identity["recipe"] == recipe.as_dict()
    others = [cache_identity(model_sha256="m2", calibration_sha256="c", recipe=recipe),
              cache_identity(model_sha256="m", calibration_sha256="c2", recipe=recipe),
              cache_identity(model_sha256="m", calibration_sha256="c", recipe=Recipe(method="Percentile"))]
    assert len({cache_key(identity), *map(cache_key, others)}) == 4


def test_int8_fails_a_one_percent_drop_and_keeping_the_most_sensitive_nodes_in_float_recovers(tmp_path, classifier):
    path, inputs, split = classifier
    judge = _judge(classifier)
    recipe = default_recipe(["avx512_vnni"])
    int8 = quantize(path, tmp_path / "int8.onnx", recipe=recipe, calibration=split.calibration, inputs=inputs)
    verdict = judge.evaluate(OrtModel(int8, inputs, optimized=True).run)
    assert not verdict.ok and verdict.metric < 0.5, verdict
    ranking = sensitivity(path, recipe=recipe, calibration=split.calibration, inputs=inputs, workdir=tmp_path)
    assert {name for name, _ in ranking[:2]} == {"wide", "narrow"}
    assert ranking[1][1] > 0.5 > 0.01 > ranking[2][1]  # quantized alone, either one breaks the outputs
    mixed_recipe = keep_in_float(recipe, ranking, 2)
    assert mixed_recipe.nodes_to_exclude == ("narrow", "wide")
    mixed = quantize(path, tmp_path / "mixed.onnx", recipe=mixed_recipe, calibration=split.calibration, inputs=inputs)
    recovered = judge.evaluate(OrtModel(mixed, inputs, optimized=True).run)
    assert recovered.ok and recovered.metric >= 0.99, recovered
    nodes = {node.op_type for node in onnx.load(str(mixed)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= nodes  # the rest is still int8


@pytest.mark.parametrize("method", ["Entropy", "Percentile"])
def test_histogram_calibration_takes_a_set_that_batches_unevenly(tmp_path, classifier, method):
    path, inputs, split = classifier
    calibration = split.calibration.part(0, 50)  # 16 a feed would leave 2 over: the histograms need one shape
    assert quantize(path, tmp_path / "int8.onnx", recipe=Recipe(method=method), calibration=calibration,
                    inputs=inputs).is_file()


def test_prepared_models_name_every_node(tmp_path, classifier):
    prepared = prepare(classifier[0], tmp_path / "prepared.onnx")
    assert quantizable_nodes(prepared) == ["split", "Relu_1", "wide", "Relu_3", "narrow", "Relu_5", "head"]


def opset10_conv(path):
    """A Conv at opset 10, where DequantizeLinear takes no axis: per-channel int8 of it cannot load."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
               numpy_helper.from_array(np.zeros(4, np.float32), "b")]
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], name="conv")],
                              "conv10", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
                              initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)])
    model.ir_version = 6
    onnx.save(model, str(path))
    return path


def test_a_recipe_onnx_runtime_refuses_to_load_is_a_compile_failure_with_the_reason(tmp_path):
    path = opset10_conv(tmp_path / "conv10.onnx")
    inputs = read_inputs(path)
    calibration = SampleSet.of("cal.npz", {"x": np.random.default_rng(0).random((4, 1, 3, 8, 8), np.float32)})
    assert quantize(path, tmp_path / "tensor.onnx", recipe=Recipe(), calibration=calibration, inputs=inputs).is_file()
    with pytest.raises(CompileFailure) as caught:  # per-channel bias: DequantizeLinear takes no axis before opset 13
        quantize(path, tmp_path / "channel.onnx", recipe=Recipe(per_channel=True), calibration=calibration,
                 inputs=inputs)
    failure = caught.value
    assert failure.stage == "compile" and not failure.retryable
    assert failure.reason.startswith("int8 MinMax U8S8 per-channel: ONNX Runtime refuses the quantized model: ")
    assert "axis" in failure.reason and "\n" not in failure.reason


def test_a_model_the_quantizer_cannot_read_is_a_compile_failure(tmp_path, classifier):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    _, inputs, split = classifier
    with pytest.raises(CompileFailure, match="^compile failed: int8: quant_pre_process failed: DecodeError"):
        quantize(broken, tmp_path / "out.onnx", recipe=Recipe(), calibration=split.calibration, inputs=inputs)
