"""Small ONNX models shaped like the ones users bring (built here, a few KB each): a batch in the second dimension
of one input and an int64 scalar whose value matters, batch symbols that are not ``batch_size``, no dynamic batch,
dynamic sizes besides the batch, weights in an external data file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 8  # onnxruntime refuses the IR version onnx.helper writes by default
SAMPLE_RATE = 16000  # the one rate the voice model takes


def _save(path: Path, nodes: list, inputs: list, outputs: list, weights: list, **save: object) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path), **save)
    return path


def _const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array, name)


def voice(path: Path) -> Path:
    """A voice-activity-shaped model: ``x[N,16]``, a state ``h[2,N,8]`` carrying the batch in its second dimension,
    and ``sr``, an int64 scalar that must be 16000: any other value leaves ``x`` unreshapable and the run fails."""
    rng = np.random.default_rng(0)
    weights = [_const("w", rng.standard_normal((16, 8)).astype(np.float32)), _const("rate", np.array(SAMPLE_RATE)),
               _const("width", np.array([16])), _const("minus1", np.array([-1])), _const("axis0", np.array([0]))]
    nodes = [helper.make_node("Div", ["sr", "rate"], ["ratio"]),  # 1 for 16000, 0 for anything smaller
             helper.make_node("Unsqueeze", ["ratio", "axis0"], ["ratio1"]),
             helper.make_node("Mul", ["ratio1", "width"], ["cols"]),
             helper.make_node("Concat", ["minus1", "cols"], ["frame_shape"], axis=0),
             helper.make_node("Reshape", ["x", "frame_shape"], ["frames"], allowzero=1),  # 0 stays 0
             helper.make_node("MatMul", ["frames", "w"], ["proj"]),
             helper.make_node("ReduceSum", ["h", "axis0"], ["h_sum"], keepdims=0),
             helper.make_node("Add", ["proj", "h_sum"], ["y"]),
             helper.make_node("Tanh", ["h"], ["hn"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16]),
              helper.make_tensor_value_info("h", TensorProto.FLOAT, [2, "N", 8]),
              helper.make_tensor_value_info("sr", TensorProto.INT64, [])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8]),
               helper.make_tensor_value_info("hn", TensorProto.FLOAT, [2, "N", 8])]
    return _save(path, nodes, inputs, outputs, weights)


def voice_samples(path: Path, **overrides: np.ndarray) -> Path:
    """One sample of each voice input, as an application feeds it (``overrides`` replace or add arrays)."""
    arrays = {"x": np.ones((1, 16), np.float32), "h": np.zeros((2, 1, 8), np.float32),
              "sr": np.array(SAMPLE_RATE, np.int64)}
    np.savez(path, **{k: v for k, v in (arrays | overrides).items() if v is not None})
    return path


def convnet(path: Path, *, batch: str | int = "N", height: str | int = 8, width: str | int = 8,
            external_data: bool = False) -> Path:
    """A Conv+Relu model of ``x[batch,3,height,width]``; ``external_data`` keeps its weights in ``<name>.data``."""
    rng = np.random.default_rng(1)
    weights = [_const("conv_w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.1),
               _const("conv_b", np.zeros(4, np.float32))]
    nodes = [helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, height, width])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4, height, width])]
    save = {"save_as_external_data": True, "all_tensors_to_one_file": True, "location": f"{path.name}.data",
            "size_threshold": 0} if external_data else {}
    return _save(path, nodes, inputs, outputs, weights, **save)


def paddle_detector(path: Path) -> Path:
    """A text-detection-shaped model as Paddle2ONNX writes it: batch, height and width ``p2o.DynamicDimension.*``."""
    return convnet(path, batch="p2o.DynamicDimension.0", height="p2o.DynamicDimension.1",
                   width="p2o.DynamicDimension.2")
