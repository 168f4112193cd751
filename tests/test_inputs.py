from __future__ import annotations

import argparse

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from autotune.errors import AutotuneError
from autotune.inputs import RANDOM_INT_HIGH, read_inputs
from autotune.options import input_shape
from user_models import SAMPLE_RATE, convnet, paddle_detector, voice, voice_samples


def _model(path, inputs, outputs=None):
    """A model that passes its inputs through Identity nodes: only the declared inputs matter here."""
    values = [helper.make_tensor_value_info(name, kind, dims) for name, kind, dims in inputs]
    outs = outputs or [(f"{name}_out", kind, dims) for name, kind, dims in inputs]
    nodes = [helper.make_node("Identity", [i[0]], [o[0]]) for i, o in zip(inputs, outs)]
    graph = helper.make_graph(nodes, "g", values, [helper.make_tensor_value_info(*o) for o in outs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def voice_onnx(tmp_path_factory):
    return voice(tmp_path_factory.mktemp("inputs") / "voice.onnx")


def test_the_batch_symbol_and_each_inputs_batch_axis(voice_onnx):
    inputs = read_inputs(voice_onnx)
    assert inputs.batch_symbol == "N"
    assert [(s.name, s.batch_axis, s.shape, s.dtype.name) for s in inputs.inputs] == [
        ("x", 0, (1, 16), "float32"), ("h", 1, (2, 1, 8), "float32"), ("sr", None, (), "int64")]
    assert inputs.describe() == "batch: symbol N (inputs x[0], h[1]); inputs fed as given: sr; random values"


def test_symbols_with_other_names_are_the_batch(tmp_path):
    assert read_inputs(convnet(tmp_path / "n.onnx", batch="N")).batch_symbol == "N"
    detector = read_inputs(paddle_detector(tmp_path / "det.onnx"), input_shapes={"x": [1, 3, 32, 32]})
    assert detector.batch_symbol == "p2o.DynamicDimension.0"
    assert detector.symbols == {"p2o.DynamicDimension.1": 32, "p2o.DynamicDimension.2": 32}
    assert detector.inputs[0].shape == (1, 3, 32, 32)


def test_a_model_without_a_dynamic_batch_says_why(tmp_path):
    fixed = read_inputs(convnet(tmp_path / "fixed.onnx", batch=1))
    assert fixed.batch_symbol is None and fixed.inputs[0].batch_axis is None
    assert fixed.describe() == "batch: none, batch 1 only (no input has a symbolic dimension); random values"
    with pytest.raises(ValueError, match="batch 1 only"):
        fixed.feed(2)
    seq = read_inputs(_model(tmp_path / "seq.onnx", [("t", TensorProto.FLOAT, [1, "seq"])]),
                      input_shapes={"t": [1, 5]})
    assert seq.batch_symbol is None and "no symbol leads an input (seq); pass --batch-dim SYMBOL" in seq.describe()
    assert read_inputs(tmp_path / "seq.onnx", batch_dim="seq").batch_symbol == "seq"
    unnamed = read_inputs(_model(tmp_path / "unnamed.onnx", [("u", TensorProto.FLOAT, [None, 3])]),
                          input_shapes={"u": [1, 3]})
    assert unnamed.batch_symbol is None and "dynamic but have no name" in unnamed.describe()


def test_the_most_carried_leading_symbol_wins_and_a_tie_needs_batch_dim(tmp_path, dynamic_onnx):
    assert read_inputs(dynamic_onnx, input_shapes={"x": [1, 16]}).batch_symbol == "batch_size"  # x[batch_size,seq]
    two = _model(tmp_path / "two.onnx", [("a", TensorProto.FLOAT, ["A", 3]), ("b", TensorProto.FLOAT, ["B", 3])])
    with pytest.raises(AutotuneError, match="the batch is ambiguous: symbols A, B each lead an input; pass "
                                            "--batch-dim SYMBOL"):
        read_inputs(two)
    with pytest.raises(AutotuneError, match="input 'a' has dynamic dimension 'A': pass --input-shape a=1,3"):
        read_inputs(two, batch_dim="B")  # A is not the batch now: it needs a size
    settled = read_inputs(two, batch_dim="B", input_shapes={"a": [2, 3]})
    assert [s.batch_axis for s in settled.inputs] == [None, 0] and settled.symbols == {"A": 2}
    assert [s.shape for s in settled.inputs] == [(2, 3), (1, 3)]


def test_batch_dim_must_be_a_symbol_of_the_model(voice_onnx, tmp_path):
    with pytest.raises(AutotuneError, match=r"--batch-dim 'M' is not a symbol of the model's inputs \(its symbols: "
                                            r"N\)"):
        read_inputs(voice_onnx, batch_dim="M")
    with pytest.raises(AutotuneError, match="they have none: every dimension is fixed"):
        read_inputs(convnet(tmp_path / "fixed.onnx", batch=1), batch_dim="N")


def test_one_error_lists_every_dynamic_dimension_with_options_to_paste(tmp_path):
    detector = paddle_detector(tmp_path / "det.onnx")
    with pytest.raises(AutotuneError) as caught:
        read_inputs(detector)
    message = str(caught.value)
    assert message == ("inputs have dynamic dimensions x[2] p2o.DynamicDimension.1, x[3] p2o.DynamicDimension.2: "
                       "pass --input-shape x=1,3,1,1 with their sizes in place of those 1s")
    pasted = dict(input_shape(word) for word in message.split("pass ")[1].split(" with")[0].split()[1::2])
    assert read_inputs(detector, input_shapes=pasted).inputs[0].shape == (1, 3, 1, 1)


def test_input_shape_must_name_a_real_input_with_the_right_rank(tiny_onnx):
    with pytest.raises(AutotuneError, match=r"'pixels', which is not an input of the model \(inputs: input\)"):
        read_inputs(tiny_onnx, input_shapes={"pixels": [1, 3, 32, 32]})
    with pytest.raises(AutotuneError, match="has 3 dimensions; the model's input has 4"):
        read_inputs(tiny_onnx, input_shapes={"input": [1, 3, 32]})
    with pytest.raises(AutotuneError, match="does not match the model's fixed shape"):
        read_inputs(tiny_onnx, input_shapes={"input": [1, 3, 64, 64]})
    with pytest.raises(argparse.ArgumentTypeError, match="is not NAME=D0,D1"):
        input_shape("input=1,x")


def test_a_symbol_shared_by_inputs_gets_one_size(tmp_path):
    path = _model(tmp_path / "bert.onnx", [("ids", TensorProto.INT64, ["batch", "seq"]),
                                          ("mask", TensorProto.INT64, ["batch", "seq"])])
    inputs = read_inputs(path, input_shapes={"ids": [1, 128]})
    assert [s.shape for s in inputs.inputs] == [(1, 128), (1, 128)] and inputs.symbols == {"seq": 128}
    with pytest.raises(AutotuneError, match="--input-shape gives 'mask' seq=64, but --input-shape 'ids' give "
                                            "seq=128"):
        read_inputs(path, input_shapes={"ids": [1, 128], "mask": [1, 64]})
    assert read_inputs(path, symbols={"seq": 384, "other": 1}).symbols == {"seq": 384}  # a known model's sizes


def test_the_feed_of_a_batch(voice_onnx, tmp_path):
    feed = read_inputs(voice_onnx).feed(4)
    assert {k: v.shape for k, v in feed.items()} == {"x": (4, 16), "h": (2, 4, 8), "sr": ()}
    assert feed["x"].dtype == np.float32 and feed["sr"].dtype == np.int64 and 0 <= feed["sr"] < RANDOM_INT_HIGH
    flags = _model(tmp_path / "flags.onnx", [("m", TensorProto.BOOL, ["n", 3]), ("k", TensorProto.INT32, ["n"])])
    feed = read_inputs(flags).feed(8)
    assert feed["m"].dtype == np.bool_ and feed["m"].shape == (8, 3)
    assert feed["k"].dtype == np.int32 and set(np.unique(feed["k"])) <= set(range(RANDOM_INT_HIGH))


def test_samples_are_tiled_along_each_inputs_batch_axis(voice_onnx, tmp_path):
    x = np.arange(16, dtype=np.float32).reshape(1, 16)
    h = np.arange(16, dtype=np.float32).reshape(2, 1, 8)
    inputs = read_inputs(voice_onnx, samples=voice_samples(tmp_path / "s.npz", x=x, h=h))
    feed = inputs.feed(3)
    assert (feed["x"] == np.repeat(x, 3, axis=0)).all() and (feed["h"] == np.repeat(h, 3, axis=1)).all()
    assert feed["sr"].shape == () and feed["sr"] == SAMPLE_RATE
    assert inputs.describe().endswith("; values from s.npz, tiled to the batch") and inputs.warning() is None


def test_samples_size_the_dynamic_dimensions(tmp_path):
    path = _model(tmp_path / "seq.onnx", [("t", TensorProto.FLOAT, ["N", "T"])])
    np.savez(tmp_path / "t.npz", t=np.ones((1, 5), np.float32))
    inputs = read_inputs(path, samples=tmp_path / "t.npz")
    assert inputs.symbols == {"T": 5} and inputs.feed(2)["t"].shape == (2, 5)
    with pytest.raises(AutotuneError, match="t.npz gives 't' T=5, but --input-shape 't' give T=7"):
        read_inputs(path, input_shapes={"t": [1, 7]}, samples=tmp_path / "t.npz")


def test_integer_and_scalar_inputs_are_named_when_their_values_are_random(voice_onnx, tmp_path, tiny_onnx):
    assert read_inputs(voice_onnx).warning() == ("warning: input sr (int64, scalar) gets random values; its values "
                                                 "may matter: pass --inputs FILE.npz")
    ids = _model(tmp_path / "ids.onnx", [("ids", TensorProto.INT64, ["n", 4]), ("t", TensorProto.FLOAT, [])])
    assert read_inputs(ids).warning() == ("warning: inputs ids (int64), t (float32, scalar) get random values; their "
                                          "values may matter: pass --inputs FILE.npz")
    assert read_inputs(tiny_onnx).warning() is None


@pytest.mark.parametrize("arrays, message", [
    ({"x": None}, "s.npz lacks input 'x' (the model's inputs: x, h, sr)"),
    ({"rate": np.ones(1)}, "s.npz has 'rate', which is not an input of the model (inputs: x, h, sr)"),
    ({"x": np.ones((1, 16))}, "s.npz: 'x' is float64; the model's input takes float32"),
    ({"sr": np.array([SAMPLE_RATE])}, "s.npz: 'sr' is a scalar input: give it as a 0-d array (shape ()), not with a "
                                      "batch axis (shape (1,))"),
    ({"x": np.ones((4, 16), np.float32)}, "s.npz: 'x' has 4 along its batch axis 0 (N); give one sample (1 there)"),
    ({"h": np.ones((2, 1, 9), np.float32)}, "s.npz: 'h' has shape (2, 1, 9); the model's input h[2,N,8] needs 8 at "
                                            "axis 2"),
    ({"x": np.ones(16, np.float32)}, "s.npz: 'x' has shape (16,); the model's input x[N,16] takes 2 dimensions"),
])
def test_bad_samples_get_one_line_naming_the_input(voice_onnx, tmp_path, arrays, message):
    with pytest.raises(AutotuneError) as caught:
        read_inputs(voice_onnx, samples=voice_samples(tmp_path / "s.npz", **arrays))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_samples_file_that_is_not_an_npz(voice_onnx, tmp_path):
    with pytest.raises(AutotuneError, match="--inputs .*nope.npz: no such file"):
        read_inputs(voice_onnx, samples=tmp_path / "nope.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(AutotuneError, match=r"text.npz is not an .npz file of arrays \(numpy.savez\)"):
        read_inputs(voice_onnx, samples=tmp_path / "text.npz")
    np.save(tmp_path / "one.npy", np.ones(3))
    with pytest.raises(AutotuneError, match="it holds one array, not an archive of arrays"):
        read_inputs(voice_onnx, samples=tmp_path / "one.npy")


def test_identity_tells_workloads_apart(voice_onnx, tmp_path):
    plain = read_inputs(voice_onnx)
    sampled = read_inputs(voice_onnx, samples=voice_samples(tmp_path / "s.npz"))
    assert plain.identity() == read_inputs(voice_onnx).identity() != sampled.identity()
    assert sampled.identity(samples=False) == plain.identity()
    assert "batch N;" in plain.identity() and "h:float32[2, 1, 8]@1" in plain.identity()


def test_inputs_that_cannot_be_fed(tmp_path):
    text = _model(tmp_path / "text.onnx", [("s", TensorProto.STRING, ["n"])])
    with pytest.raises(AutotuneError, match="input 's' has type string: autotune feeds numeric and boolean"):
        read_inputs(text)
    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [value],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(graph), str(tmp_path / "rankless.onnx"))
    with pytest.raises(AutotuneError, match="'x' declares no shape"):
        read_inputs(tmp_path / "rankless.onnx")
