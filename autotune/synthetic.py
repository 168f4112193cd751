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


class _GraphBuilder:
    """Conv/BatchNorm/ReLU graphs with random weights, NCHW, symbolic batch."""

    def __init__(self, seed: int) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.weights: list = []
        self.count = 0

    def _name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}{self.count}"

    def _tensor(self, name: str, array: np.ndarray) -> str:
        self.weights.append(self.numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def conv_bn(self, x: str, cin: int, cout: int, k: int, stride: int = 1, relu: bool = True) -> str:
        name = self._name("conv")
        w = self._tensor(f"{name}_w", self.rng.standard_normal((cout, cin, k, k)) * (2.0 / (cin * k * k)) ** 0.5)
        self.nodes.append(self.helper.make_node("Conv", [x, w], [name], kernel_shape=[k, k], strides=[stride] * 2,
                                                pads=[k // 2] * 4, name=name))
        bn = [self._tensor(f"{name}_{p}", v) for p, v in (("s", np.ones(cout)), ("b", np.zeros(cout)),
                                                           ("m", np.zeros(cout)), ("v", np.ones(cout)))]
        self.nodes.append(self.helper.make_node("BatchNormalization", [name, *bn], [f"{name}_bn"]))
        out = f"{name}_bn"
        if relu:
            self.nodes.append(self.helper.make_node("Relu", [out], [f"{name}_relu"]))
            out = f"{name}_relu"
        return out

    def add_relu(self, a: str, b: str) -> str:
        name = self._name("add")
        self.nodes.append(self.helper.make_node("Add", [a, b], [name]))
        self.nodes.append(self.helper.make_node("Relu", [name], [f"{name}_relu"]))
        return f"{name}_relu"

    def node(self, op: str, inputs: list[str], **attrs: object) -> str:
        name = self._name(op.lower())
        self.nodes.append(self.helper.make_node(op, inputs, [name], **attrs))
        return name

    def save(self, path: Path, inputs: list, outputs: list, graph_name: str) -> Path:
        import onnx

        graph = self.helper.make_graph(self.nodes, graph_name, inputs, outputs, initializer=self.weights)
        model = self.helper.make_model(graph, opset_imports=[self.helper.make_opsetid("", 17)])
        model.ir_version = 8  # onnxruntime refuses the IR version onnx.helper writes by default
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(path))
        return path


def _resnet_stages(g: _GraphBuilder, x: str, width: float, stages: tuple[int, ...]) -> tuple[str, list[str], int]:
    """ResNet-50 v1.5 body: bottlenecks with the stride on the 3x3 conv; returns (out, stage outputs, channels)."""
    stem = max(8, int(64 * width))
    x = g.conv_bn(x, 3, stem, 7, stride=2)
    x = g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin, outputs = stem, []
    for stage, blocks in enumerate(stages):
        mid = max(4, int(64 * width) * 2 ** stage)
        cout = mid * 4
        for block in range(blocks):
            stride = 2 if block == 0 and stage > 0 else 1
            y = g.conv_bn(x, cin, mid, 1)
            y = g.conv_bn(y, mid, mid, 3, stride=stride)
            y = g.conv_bn(y, mid, cout, 1, relu=False)
            shortcut = g.conv_bn(x, cin, cout, 1, stride=stride, relu=False) if block == 0 else x
            x, cin = g.add_relu(y, shortcut), cout
        outputs.append(x)
    return x, outputs, cin


def build_resnet50(path: Path, *, width: float = 1.0, image: int = 224, seed: int = 0) -> Path:
    """ResNet-50 v1.5 (bottlenecks 3-4-6-3, 1000 classes, random weights); ``width`` < 1 makes test-sized copies."""
    from onnx import TensorProto, helper

    g = _GraphBuilder(seed)
    x, _, channels = _resnet_stages(g, "input_tensor", width, (3, 4, 6, 3))
    pooled = g.node("GlobalAveragePool", [x])
    flat = g.node("Flatten", [pooled])
    fc_w = g._tensor("fc_w", g.rng.standard_normal((channels, 1000)) * 0.01)
    logits = g.node("MatMul", [flat, fc_w])
    g.nodes.append(helper.make_node("Softmax", [logits], ["softmax_tensor"], axis=1))
    return g.save(path, [helper.make_tensor_value_info("input_tensor", TensorProto.FLOAT, ["batch_size", 3, image, image])],
                  [helper.make_tensor_value_info("softmax_tensor", TensorProto.FLOAT, ["batch_size", 1000])],
                  "resnet50_v1_5_synthetic")


def build_retinanet(path: Path, *, width: float = 0.5, image: int = 512, anchors: int = 9, classes: int = 264,
                    seed: int = 0) -> Path:
    """A RetinaNet-shaped detector: ResNet-50 backbone, FPN (P3-P7) and shared class/box heads per level."""
    from onnx import TensorProto, helper

    g = _GraphBuilder(seed)
    _, stage_outputs, _ = _resnet_stages(g, "images", width, (3, 4, 6, 3))
    c3, c4, c5 = stage_outputs[1:]
    base = max(4, int(64 * width))
    fpn = max(16, int(256 * width))
    p5 = g.conv_bn(c5, base * 32, fpn, 1, relu=False)
    p4 = g.node("Add", [g.conv_bn(c4, base * 16, fpn, 1, relu=False),
                        g.node("Resize", [p5, "", g._tensor(g._name("scale"), np.array([1, 1, 2, 2]))],
                               mode="nearest")])
    p3 = g.node("Add", [g.conv_bn(c3, base * 8, fpn, 1, relu=False),
                        g.node("Resize", [p4, "", g._tensor(g._name("scale"), np.array([1, 1, 2, 2]))],
                               mode="nearest")])
    p6 = g.conv_bn(c5, base * 32, fpn, 3, stride=2, relu=False)
    p7 = g.conv_bn(g.node("Relu", [p6]), fpn, fpn, 3, stride=2, relu=False)
    heads = []
    for level in (p3, p4, p5, p6, p7):
        for out_channels in (anchors * classes, anchors * 4):
            y = level
            for _ in range(4):
                y = g.conv_bn(y, fpn, fpn, 3)
            y = g.conv_bn(y, fpn, out_channels, 3, relu=False)
            heads.append(g.node("ReduceMean", [y], axes=[2, 3], keepdims=0))
    g.nodes.append(helper.make_node("Concat", heads, ["detections"], axis=1))
    size = 5 * anchors * (classes + 4)
    return g.save(path, [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch_size", 3, image, image])],
                  [helper.make_tensor_value_info("detections", TensorProto.FLOAT, ["batch_size", size])],
                  "retinanet_synthetic")


def build_outlier_classifier(path: Path, *, features: int = 32, classes: int = 10, outlier: float = 1000.0,
                             seed: int = 0) -> Path:
    """A classifier that int8 breaks: ``logits = prototypes @ x`` (one class per prototype, wide margins) computed
    through Gemm layers ``split`` (x as its positive and negative parts), ``wide`` (adds one channel ``outlier``
    times larger than the rest), ``narrow`` (drops it again) and ``head``. Per-tensor int8 of the tensor between
    ``wide`` and ``narrow`` rounds every other channel to zero; keeping those two in float recovers the fp32 top-1.
    Samples: :func:`outlier_classifier_samples`."""
    from onnx import TensorProto, helper

    g = _GraphBuilder(seed)
    prototypes = _prototypes(features, classes, seed)
    eye = np.eye(2 * features)
    spike = np.concatenate([eye, g.rng.standard_normal((2 * features, 1)) * outlier], axis=1)
    layers = {"split": np.concatenate([np.eye(features), -np.eye(features)], axis=1), "wide": spike,
              "narrow": np.concatenate([eye, np.zeros((1, 2 * features))]),
              "head": np.concatenate([prototypes.T, -prototypes.T])}
    x = "x"
    for name, weight in layers.items():
        out = "logits" if name == "head" else name
        bias = g._tensor(f"{name}_b", np.zeros(weight.shape[1]))
        g.nodes.append(helper.make_node("Gemm", [x, g._tensor(f"{name}_w", weight), bias], [out], name=name))
        x = out if name == "head" else g.node("Relu", [out])
    return g.save(path, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch_size", features])],
                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", classes])],
                  "outlier_classifier")


def outlier_classifier_samples(count: int, *, features: int = 32, classes: int = 10, noise: float = 0.5,
                               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (count, 1, features) near the prototypes of :func:`build_outlier_classifier` (same ``seed``) and their
    labels (count,): the prototype each sample was drawn from."""
    rng = np.random.default_rng(seed + 1)
    labels = rng.integers(0, classes, count)
    x = _prototypes(features, classes, seed)[labels] + noise * rng.standard_normal((count, features))
    return x[:, None, :].astype(np.float32), labels


def _prototypes(features: int, classes: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, features, classes]).standard_normal((classes, features))
