"""Known models (MLPerf names, base compile flags, symbols, latency bounds) and ONNX file resolution."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from autotune.backend import AutotuneError


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A model autotune knows: its base (not searched) qaic-exec flags and MLPerf rules.

    ``base_flags`` never define ``batch_size``: batch size is a searched knob.
    ``latency_bounds_ms`` maps a scenario to its MLPerf p99 bound.
    """

    name: str
    base_flags: tuple[str, ...] = ()
    symbols: dict[str, int] = field(default_factory=dict)
    latency_bounds_ms: dict[str, float] = field(default_factory=dict)
    description: str = ""


_BERT_BOUNDS = {"server": 130.0}

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="resnet50",
            description="ResNet-50 v1.5, ImageNet, int8",
            base_flags=tuple(shlex.split(
                "-aic-hw -aic-hw-version=2.0 -quantization-schema=symmetric_with_uint8 -quantization-precision=Int8 "
                "-output-node-name=ArgMax -vvv -compile-only -use-producer-dma=1")),
            latency_bounds_ms={"server": 15.0},
        ),
        ModelSpec(
            name="retinanet",
            description="RetinaNet (ResNeXt50 FPN), OpenImages, int8; real compiles also need "
                        "--base-flags -node-precision-info=FILE",
            base_flags=tuple(shlex.split(
                "-aic-hw -aic-hw-version=2.0 -compile-only -enable-channelwise "
                "-quantization-schema-constants=symmetric_with_uint8 -quantization-schema-activations=asymmetric "
                "-quantization-calibration=None")),
            latency_bounds_ms={"server": 100.0},
        ),
        ModelSpec(
            name="bert-99",
            description="BERT-large SQuAD, int8 with fp16 nodes (99% accuracy target)",
            base_flags=tuple(shlex.split(
                "-aic-hw -aic-hw-version=2.0 -execute-nodes-in-fp16=Add,Div,Erf,Softmax "
                "-quantization-schema=symmetric_with_uint8 -quantization-precision=Int8 "
                "-quantization-precision-bias=Int32 -vvv -compile-only -onnx-define-symbol=seg_length,384 "
                "-multicast-weights -combine-inputs=false -combine-outputs=false")),
            symbols={"seg_length": 384},
            latency_bounds_ms=_BERT_BOUNDS,
        ),
        ModelSpec(
            name="bert-99.9",
            description="BERT-large SQuAD, fp16 (99.9% accuracy target)",
            base_flags=tuple(shlex.split(
                "-aic-hw -aic-hw-version=2.0 -convert-to-fp16 -vvv -compile-only "
                "-onnx-define-symbol=seg_length,384 -combine-inputs=false -combine-outputs=false")),
            symbols={"seg_length": 384},
            latency_bounds_ms=_BERT_BOUNDS,
        ),
    )
}


def get_model(name: str, *, extra_base_flags: str = "", onnx_given: bool = False) -> ModelSpec:
    """The registered model ``name`` (plus extra base flags); any other name is a user model and needs --onnx."""
    extra = tuple(shlex.split(extra_base_flags))
    if name in MODELS:
        spec = MODELS[name]
        return ModelSpec(name=spec.name, base_flags=spec.base_flags + extra, symbols=spec.symbols,
                         latency_bounds_ms=spec.latency_bounds_ms, description=spec.description)
    if not onnx_given:
        raise AutotuneError(f"unknown model {name!r}: known models are {', '.join(MODELS)}; "
                            f"for your own model pass --onnx PATH (and --base-flags if it needs them)")
    return ModelSpec(name=name, base_flags=extra, description="user model")


def resolve_onnx(path: str | Path | None, model: ModelSpec) -> Path:
    """The ONNX file to compile, checked to exist and to parse as ONNX before any compiler sees it."""
    if path is None:
        raise AutotuneError(f"no ONNX file for {model.name}: pass --onnx PATH to the model file")
    onnx_path = Path(path).expanduser()
    if not onnx_path.is_file():
        raise AutotuneError(f"model file not found: {onnx_path}")
    check_onnx(onnx_path)
    return onnx_path.resolve()


def check_onnx(path: Path) -> None:
    """Raise AutotuneError unless ``path`` holds an ONNX model with a graph."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, ValueError, OSError... for a bad file
        raise AutotuneError(f"{path} is not an ONNX model (onnx could not parse it: "
                            f"{type(exc).__name__})") from None
    if not model.graph.node:
        raise AutotuneError(f"{path} is not a usable ONNX model: its graph has no nodes")
