"""Small ONNX models built from scratch (random weights) for tests and demos; compile speed ignores weight values."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def build_convnet(path: Path, *, width: int = 16, blocks: int = 2, image: int = 32, seed: int = 0) -> Path:
    """A ResNet-shaped Conv+Relu+Add network with a symbolic ``batch_size`` input; returns ``path``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, weights = [], []

    def conv(name: str, src: str, cin: int, cout: int, k: int) -> str:
        w = numpy_helper.from_array(rng.standard_normal((cout, cin, k, k)).astype(np.float32) * 0.1, f"{name}_w")
        weights.append(w)
        nodes.append(helper.make_node("Conv", [src, w.name], [name], pads=[k // 2] * 4, name=name))
        return name

    x = conv("stem", "input", 3, width, 3)
    nodes.append(helper.make_node("Relu", [x], ["stem_relu"]))
    x = "stem_relu"
    for b in range(blocks):
        y = conv(f"b{b}_c1", x, width, width, 3)
        nodes.append(helper.make_node("Relu", [y], [f"b{b}_r1"]))
        y = conv(f"b{b}_c2", f"b{b}_r1", width, width, 3)
        nodes.append(helper.make_node("Add", [x, y], [f"b{b}_add"]))
        nodes.append(helper.make_node("Relu", [f"b{b}_add"], [f"b{b}_out"]))
        x = f"b{b}_out"
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["output"]))
    graph = helper.make_graph(
        nodes, "synthetic_convnet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch_size", 3, image, image])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch_size", width])],
        initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # onnxruntime refuses the IR version onnx.helper writes by default
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
