"""ONNX Runtime int8: recipes as data, the static QDQ model a recipe builds from a calibration set, its cache
identity, and the layers ranked by how much quantizing each one alone moves the outputs (to keep the worst in float).

Node names are those of the pre-processed model (``quant_pre_process`` fuses and folds: a MatMul and its Add become
one Gemm named ``<matmul>/MatMulAddFusion``); nodes without a name are named ``<op>_<index>`` there."""

from __future__ import annotations

import tempfile
from collections.abc import Collection
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from autotune.errors import CompileFailure
from autotune.inputs import ModelInputs
from autotune.task_accuracy import OrtModel, Outputs, SampleSet, collect

METHODS = ("MinMax", "Entropy", "Percentile")
INT8_TYPES = ("QUInt8", "QInt8")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")  # 8-bit dot products that do not saturate: U8S8 needs no reduce_range
CALIBRATION_BATCH = 16  # the most samples per calibration feed (models with a batch symbol)


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """How ``quantize_static`` builds the int8 model (QDQ format); the names are ONNX Runtime's."""

    method: str = "MinMax"  # calibration: MinMax, Entropy or Percentile
    per_channel: bool = False
    activation_type: str = "QUInt8"
    weight_type: str = "QInt8"
    reduce_range: bool = False  # 7-bit weights, for CPUs without VNNI
    nodes_to_exclude: tuple[str, ...] = ()  # kept in float
    symmetric: bool = False  # activations with zero point 0 (ActivationSymmetric), as TensorRT requires

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"calibration method {self.method!r}: one of {', '.join(METHODS)}")
        for kind in (self.activation_type, self.weight_type):
            if kind not in INT8_TYPES:
                raise ValueError(f"quantization type {kind!r}: one of {', '.join(INT8_TYPES)}")

    def as_dict(self) -> dict[str, Any]:
        """The recipe as stored (a preset, a cache identity); :meth:`from_dict` reads it back."""
        return asdict(self) | {"nodes_to_exclude": list(self.nodes_to_exclude)}

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> Recipe:
        return cls(**stored | {"nodes_to_exclude": tuple(stored.get("nodes_to_exclude", ()))})

    def describe(self) -> str:
        """``int8 MinMax U8S8 per-tensor`` (and its options), for reasons and progress lines."""
        types = "".join("U8" if kind == "QUInt8" else "S8" for kind in (self.activation_type, self.weight_type))
        text = f"int8 {self.method} {types} {'per-channel' if self.per_channel else 'per-tensor'}"
        text += ", reduce_range" if self.reduce_range else ""
        text += ", symmetric" if self.symmetric else ""
        return text + (f", {len(self.nodes_to_exclude)} nodes in float" if self.nodes_to_exclude else "")


def default_recipe(isa_flags: Collection[str]) -> Recipe:
    """U8S8, MinMax, per-tensor: ONNX Runtime's advice for x86; ``reduce_range`` where the CPU lacks VNNI (its
    16-bit intermediate sums of u8 x s8 products can saturate). ``isa_flags``: the CPU's flags (/proc/cpuinfo's)."""
    return Recipe(reduce_range=not any(flag in isa_flags for flag in VNNI_FLAGS))


def keep_in_float(recipe: Recipe, ranking: list[tuple[str, float]], k: int) -> Recipe:
    """``recipe`` with the ``k`` most sensitive nodes of ``ranking`` (from :func:`sensitivity`) kept in float."""
    return replace(recipe, nodes_to_exclude=tuple(sorted({name for name, _ in ranking[:k]})))


def cache_identity(*, model_sha256: str, calibration_sha256: str, recipe: Recipe) -> dict[str, Any]:
    """What decides the quantized model, for ``compile_cache.cache_key``: the model, the calibration set, the recipe
    and the runtime's version."""
    import onnxruntime

    return {"model_sha256": model_sha256, "calibration_sha256": calibration_sha256, "recipe": recipe.as_dict(),
            "onnxruntime": onnxruntime.__version__}


def prepare(model: Path, out: Path) -> Path:
    """``quant_pre_process`` (shape inference and ONNX Runtime's optimisations) into ``out``, every node named;
    raises CompileFailure when it fails."""
    import onnx
    from onnxruntime.quantization import quant_pre_process

    try:
        quant_pre_process(str(model), str(out), skip_symbolic_shape=True)  # symbolic inference needs sympy
        prepared = onnx.load(str(out))
    except Exception as exc:  # the quantizer raises whatever its passes raise
        raise CompileFailure(f"int8: quant_pre_process failed: {_first_line(exc)}") from None
    for index, node in enumerate(prepared.graph.node):
        node.name = node.name or f"{node.op_type}_{index}"
    onnx.save(prepared, str(out))
    return out


def quantize(model: Path, out: Path, *, recipe: Recipe, calibration: SampleSet, inputs: ModelInputs) -> Path:
    """The int8 QDQ model of ``recipe``, calibrated on ``calibration``, written to ``out`` and loaded once by ONNX
    Runtime; raises CompileFailure (not retryable) with the reason when it cannot be built or loaded."""
    with tempfile.TemporaryDirectory(prefix="autotune-int8-") as work:
        prepared = prepare(model, Path(work) / "prepared.onnx")
        return quantize_prepared(prepared, out, recipe=recipe, calibration=calibration, inputs=inputs)


def quantize_prepared(prepared: Path, out: Path, *, recipe: Recipe, calibration: SampleSet, inputs: ModelInputs,
                      nodes_to_quantize: list[str] | None = None, calibration_cache: Path | None = None) -> Path:
    """:func:`quantize` on a model :func:`prepare` made; ``calibration_cache`` keeps the tensors' ranges (per
    model, set and method) so that a second recipe skips calibrating; ``nodes_to_quantize``: only those."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    try:
        quantize_static(str(prepared), str(out), _Reader(calibration, inputs), quant_format=QuantFormat.QDQ,
                        per_channel=recipe.per_channel, reduce_range=recipe.reduce_range,
                        activation_type=QuantType[recipe.activation_type], weight_type=QuantType[recipe.weight_type],
                        nodes_to_quantize=nodes_to_quantize, nodes_to_exclude=list(recipe.nodes_to_exclude),
                        calibrate_method=CalibrationMethod[recipe.method], calibration_cache_path=calibration_cache,
                        extra_options={"ActivationSymmetric": recipe.symmetric})
    except Exception as exc:  # the quantizer raises whatever its passes raise
        raise CompileFailure(f"{recipe.describe()}: quantize_static failed: {_first_line(exc)}") from None
    try:
        OrtModel(out, inputs, optimized=True)
    except Exception as exc:  # e.g. DequantizeLinear with an axis on an opset that has none
        raise CompileFailure(f"{recipe.describe()}: ONNX Runtime refuses the quantized model: "
                             f"{_first_line(exc)}") from None
    return out


def quantizable_nodes(prepared: Path) -> list[str]:
    """The nodes of a prepared model whose operator ``quantize_static`` quantizes, in graph order."""
    import onnx
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    kinds = set(QDQRegistry) | set(QLinearOpsRegistry)
    return [node.name for node in onnx.load(str(prepared), load_external_data=False).graph.node
            if node.op_type in kinds]


def sensitivity(model: Path, *, recipe: Recipe, calibration: SampleSet, inputs: ModelInputs,
                workdir: Path) -> list[tuple[str, float]]:
    """Each quantizable node with the error of quantizing it alone (the rest in float), most sensitive first: the
    outputs' squared error over their squared fp32 values, summed over the calibration set.

    Quantizing each node alone (rather than excluding each alone from the full int8 model) sees every layer that
    breaks the outputs: when two do, excluding either one alone leaves the other's error and ranks neither. Both
    cost one quantize and one run per node; the ranges are calibrated once (a calibration cache)."""
    prepared = prepare(model, workdir / "prepared.onnx")
    reference = _outputs(prepared, calibration, inputs, optimized=False)
    cache = workdir / f"calibration-{recipe.method}.json"
    cache.unlink(missing_ok=True)  # calibrated once per call: a cache left by another set would be read as this one's
    ranking = []
    for node in quantizable_nodes(prepared):
        single = quantize_prepared(prepared, workdir / "single.onnx", recipe=replace(recipe, nodes_to_exclude=()),
                                   calibration=calibration, inputs=inputs, nodes_to_quantize=[node],
                                   calibration_cache=cache)
        ranking.append((node, _relative_error(_outputs(single, calibration, inputs, optimized=True), reference)))
    return sorted(ranking, key=lambda item: -item[1])


def _outputs(path: Path, samples: SampleSet, inputs: ModelInputs, *, optimized: bool) -> Outputs:
    model = OrtModel(path, inputs, optimized=optimized)
    return collect(model.run, samples, inputs, _batch(inputs), model.axes)


def _relative_error(outputs: Outputs, reference: Outputs) -> float:
    error = sum(float(np.sum((outputs[k].astype(np.float64) - v) ** 2)) for k, v in reference.items())
    scale = sum(float(np.sum(v.astype(np.float64) ** 2)) for v in reference.values())
    return error / scale if scale > 0 else error


def _batch(inputs: ModelInputs) -> int:
    return CALIBRATION_BATCH if inputs.batch_symbol is not None else 1


class _Reader:
    """The calibration set as ``quantize_static`` reads it (a CalibrationDataReader): each sample once, in feeds of
    one size (the histogram calibrators stack them), the largest that divides the set up to CALIBRATION_BATCH."""

    def __init__(self, samples: SampleSet, inputs: ModelInputs) -> None:
        size = max(d for d in range(1, _batch(inputs) + 1) if len(samples) % d == 0)
        self.feeds = (batch.feed for batch in samples.batches(inputs, size))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
