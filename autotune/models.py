"""Known models (MLPerf names, symbols, latency bounds, official sources), ONNX file resolution and checks, and the
model's identity (its file and external data files hashed together)."""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from autotune.errors import AutotuneError
from autotune.inputs import ModelInputs, read_inputs
from autotune.task_accuracy import SampleSet

CACHE_ENV = "AUTOTUNE_CACHE"
DOWNLOAD_TIMEOUT_S = 60.0


@dataclass(frozen=True, kw_only=True)
class ModelSource:
    """Where the official MLPerf ONNX file comes from. ``sha256`` None: no checksum is pinned here yet, so the
    first download's SHA-256 is recorded in the cache manifest and every later use is checked against it."""

    url: str
    filename: str
    sha256: str | None = None


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A model autotune knows (or a user's, by name): its MLPerf rules and where its official file comes from.

    ``latency_bounds_ms`` maps a scenario to its MLPerf p99 bound; ``symbols`` are dimensions every target fixes
    (BERT's sequence length). What a target compiles it with (qaic-exec base flags...) is the backend's own data.
    ``inputs`` are those of the file being tuned (``with_inputs``): a backend is never given a spec without them.
    ``calibration``: the samples that calibrate an int8 build (``with_calibration``); a target offers int8 only
    with them.
    """

    name: str
    symbols: dict[str, int] = field(default_factory=dict)
    latency_bounds_ms: dict[str, float] = field(default_factory=dict)
    description: str = ""
    source: ModelSource | None = None
    synthetic: str | None = None
    inputs: ModelInputs | None = None
    calibration: SampleSet | None = None

    def file_inputs(self) -> ModelInputs:
        """``inputs``; a spec that was not given them (``with_inputs``) is a programming error."""
        if self.inputs is None:
            raise ValueError(f"model {self.name}: its inputs were not read from its file (models.with_inputs)")
        return self.inputs


_BERT_BOUNDS = {"server": 130.0}
_BERT_SOURCE = ModelSource(url="https://zenodo.org/record/3733910/files/model.onnx", filename="bert_large.onnx")

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(name="resnet50", description="ResNet-50 v1.5, ImageNet, int8", latency_bounds_ms={"server": 15.0},
                  source=ModelSource(url="https://zenodo.org/record/4735647/files/resnet50_v1.onnx",
                                     filename="resnet50_v1.onnx"),
                  synthetic="resnet50"),
        ModelSpec(name="retinanet", description="RetinaNet (ResNeXt50 FPN), OpenImages, int8",
                  latency_bounds_ms={"server": 100.0},
                  source=ModelSource(url="https://zenodo.org/record/6617879/files/resnext50_32x4d_fpn.onnx",
                                     filename="resnext50_32x4d_fpn.onnx"),
                  synthetic="retinanet"),
        ModelSpec(name="bert-99", description="BERT-large SQuAD, int8 with fp16 nodes (99% accuracy target)",
                  symbols={"seg_length": 384}, latency_bounds_ms=_BERT_BOUNDS, source=_BERT_SOURCE),
        ModelSpec(name="bert-99.9", description="BERT-large SQuAD, fp16 (99.9% accuracy target)",
                  symbols={"seg_length": 384}, latency_bounds_ms=_BERT_BOUNDS, source=_BERT_SOURCE),
    )
}


def get_model(name: str, *, onnx_given: bool = False) -> ModelSpec:
    """The registered model ``name``; any other name is a user model and needs --onnx."""
    if name in MODELS:
        return MODELS[name]
    if not onnx_given:
        raise AutotuneError(f"unknown model {name!r}: known models are {', '.join(MODELS)}; "
                            f"for your own model pass --onnx PATH")
    return ModelSpec(name=name, description="user model")


def resolve_onnx(path: str | Path | None, model: ModelSpec) -> Path:
    """The ONNX file to compile, checked to exist and to parse as ONNX before any compiler sees it."""
    if path is None:
        raise AutotuneError(f"no ONNX file for {model.name}: pass --onnx PATH to the model file")
    onnx_path = Path(path).expanduser()
    if not onnx_path.is_file():
        raise AutotuneError(f"model file not found: {onnx_path}")
    check_onnx(onnx_path)
    return onnx_path.resolve()


def with_inputs(spec: ModelSpec, path: Path, *, batch_dim: str | None = None,
                input_shapes: Mapping[str, Sequence[int]] | None = None, samples: Path | None = None) -> ModelSpec:
    """``spec`` with the inputs of the file at ``path`` (``--batch-dim``, ``--input-shape``, ``--inputs``)."""
    return replace(spec, inputs=read_inputs(path, batch_dim=batch_dim, input_shapes=input_shapes,
                                            symbols=spec.symbols, samples=samples))


def with_calibration(spec: ModelSpec, samples: SampleSet | None) -> ModelSpec:
    """``spec`` with the set that calibrates its int8 builds (``--calibration-set``, or the accuracy set's first part)."""
    return replace(spec, calibration=samples)


def check_onnx(path: Path) -> None:
    """Raise AutotuneError unless ``path`` holds an ONNX model with a graph, its external data files beside it,
    that ``onnx.checker`` accepts (by path: external data and models over 2 GB included)."""
    import onnx

    model = _parse(path)
    if not model.graph.node:
        raise AutotuneError(f"{path} is not a usable ONNX model: its graph has no nodes")
    for data in external_data_files(path, model):
        if not data.is_file():
            raise AutotuneError(f"{path.name} keeps its weights in {data.name}, which is not beside it in "
                                f"{path.parent}: keep the model and its data files in one folder")
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        raise AutotuneError(f"{path} fails onnx.checker: {str(exc).strip().splitlines()[0]}") from None


def external_data_files(path: Path, model: object | None = None) -> list[Path]:
    """The files beside ``path`` that hold its external data (none for a model that keeps its weights inside)."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    proto = model if model is not None else _parse(path)
    locations = {ExternalDataInfo(t).location for t in _tensors(proto.graph) if uses_external_data(t)}
    return [path.parent / location for location in sorted(locations)]


def model_sha256(path: Path) -> str:
    """The SHA-256 of a model: its file's alone, or one hash over the file and its external data files."""
    try:
        data = external_data_files(path)
    except AutotuneError:  # not an ONNX file: hashed as bytes
        data = []
    if not data:
        return file_sha256(path)
    digest = hashlib.sha256()
    for part in (path, *data):
        digest.update(f"{part.name} {file_sha256(part)}\n".encode())
    return digest.hexdigest()


def _parse(path: Path):  # -> onnx.ModelProto
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, ValueError, OSError... for a bad file
        raise AutotuneError(f"{path} is not an ONNX model (onnx could not parse it: "
                            f"{type(exc).__name__})") from None


def _tensors(graph) -> list:  # onnx.GraphProto -> its TensorProtos, subgraphs' included
    from onnx import AttributeProto

    found = list(graph.initializer)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == AttributeProto.TENSOR:
                found.append(attribute.t)
            found += list(attribute.tensors)
            for sub in ([attribute.g] if attribute.type == AttributeProto.GRAPH else []) + list(attribute.graphs):
                found += _tensors(sub)
    return found


def cache_dir() -> Path:
    """Where downloads and synthetic models live: $AUTOTUNE_CACHE, else $XDG_CACHE_HOME/autotune, else ~/.cache."""
    root = os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "autotune"
    return Path(root)


def download_model(source: ModelSource, *, opener: Callable[..., object] = urllib.request.urlopen,
                   timeout_s: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """The cached file of ``source``, downloaded once; a partial or mismatching file is never used."""
    target = cache_dir() / "models" / source.filename
    manifest = target.with_name(target.name + ".sha256")
    expected = source.sha256 or (manifest.read_text().strip() if manifest.is_file() else None)
    if target.is_file():
        actual = file_sha256(target)
        if expected is None or actual == expected:
            return target
        raise AutotuneError(f"cached {target} does not match its checksum ({actual[:12]}... is not "
                            f"{expected[:12]}...): delete it to download {source.url} again")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    print(f"downloading {source.url} to {target} ...", file=sys.stderr, flush=True)
    try:
        with opener(source.url, timeout=timeout_s) as response, partial.open("wb") as out:  # type: ignore[attr-defined]
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
    except Exception as exc:  # URLError, timeouts, HTTP errors, disk errors
        partial.unlink(missing_ok=True)
        raise AutotuneError(f"download of {source.url} failed ({exc}); nothing was kept at {target}: pass "
                            f"--onnx PATH, or --synthetic for a random-weight model of the same shape") from None
    actual = file_sha256(partial)
    if expected is not None and actual != expected:
        partial.unlink(missing_ok=True)
        raise AutotuneError(f"download of {source.url} has SHA-256 {actual[:12]}..., expected {expected[:12]}...: "
                            f"discarded, nothing kept at {target}")
    if expected is None:
        manifest.write_text(actual + "\n")
        print(f"no checksum is pinned for {source.filename}; recorded SHA-256 {actual} in {manifest}",
              file=sys.stderr)
    partial.replace(target)
    return target


def synthetic_model(spec: ModelSpec, *, small: bool = False) -> Path:
    """A random-weight model of ``spec``'s architecture in the cache (built once); performance, not accuracy."""
    from autotune import synthetic

    if spec.synthetic is None:
        raise AutotuneError(f"no synthetic version of {spec.name}: pass --onnx PATH")
    size = "small" if small else "full"
    path = cache_dir() / "synthetic" / f"{spec.synthetic}-{size}.onnx"
    if not path.is_file():
        build = synthetic.build_resnet50 if spec.synthetic == "resnet50" else synthetic.build_retinanet
        options = {"width": 0.25, "image": 64} if small and spec.synthetic == "resnet50" else \
            {"width": 0.125, "image": 128} if small else {}
        partial = path.with_name(path.name + ".part")
        build(partial, **options)
        partial.replace(path)
    return path


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
