"""The model files TensorRT builds from besides the ONNX file as given: its fp16 conversion (on TensorRT 11 precision
is the file's) and its int8 QDQ model (explicit quantization, which TensorRT builds as int8 under either contract).
A variant is a compile-cache entry of its own, keyed by the model, the variant's recipe, the calibration set and the
converter's or quantizer's version: every engine built from it shares one conversion, and waits for it."""

from __future__ import annotations

import json
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

from autotune.backends import _int8
from autotune.backends.base import Artifact
from autotune.compile_cache import CompileCache, cache_key
from autotune.errors import CompileFailure
from autotune.inputs import read_inputs
from autotune.models import ModelSpec, external_data_files, model_sha256
from autotune.quantize import Recipe, quantize
from autotune.task_accuracy import load_set

LOG = "variant.log"
RECORD = "variant.json"  # beside an engine built from a model variant
# TensorRT's explicit quantization: int8 weights and activations, symmetric (zero point 0)
TRT_RECIPE = Recipe(activation_type="QInt8", weight_type="QInt8", symmetric=True)


def model_variant(onnx_path: Path, model: ModelSpec, candidate: Any, workdir: Path, *,
                  cache_dir: Path | None) -> Artifact | None:
    """The candidate's model variant (``candidate.model_variant()``): from the compile cache, made there once
    (compiles that want it meanwhile wait), or made in ``workdir`` without a cache; None for the file as given.
    Its ``path`` is the file, its ``command`` the Python line that makes it again; CompileFailure (not retryable)
    with the converter's or quantizer's reason."""
    kind = candidate.model_variant()
    if kind is None:
        return None

    def make(work: Path) -> Artifact:
        return _make(onnx_path, model, candidate, work)

    if cache_dir is None:
        return make(workdir)
    identity = variant_identity(onnx_path, model, candidate)
    artifact, _ = CompileCache(root=cache_dir).get_or_compile(cache_key(identity), identity, make)
    return artifact


def variant_identity(onnx_path: Path, model: ModelSpec, candidate: Any) -> dict[str, Any]:
    """What decides a variant: the model, its inputs, the variant, and the int8 recipe with the calibration set and
    the quantizer's version, or the converter's version."""
    kind = candidate.model_variant()
    identity: dict[str, Any] = {"kind": "tensorrt-model-variant", "variant": kind,
                                "model_sha256": model_sha256(onnx_path),
                                "inputs": model.file_inputs().identity(samples=False), "onnx": metadata.version("onnx")}
    if kind == _int8.INT8:
        return identity | {"recipe": {name: getattr(candidate, name) for name in _int8.RECIPE_DEFAULTS},
                           "base_recipe": TRT_RECIPE.as_dict(), "onnxruntime": metadata.version("onnxruntime"),
                           "calibration_sha256": model.calibration.sha256 if model.calibration else None}
    return identity | {"onnxconverter_common": metadata.version("onnxconverter-common")}


def record(folder: Path, candidate: Any, variant: Artifact) -> None:
    """What the engine in ``folder`` was built from: the variant's precision, file, recipe and the line that makes
    it (``read_record``)."""
    recipe = variant.path.parent / _int8.RECIPE_FILE
    fields = {"precision": candidate.precision, "file": str(variant.path), "command": variant.command,
              **({"recipe": json.loads(recipe.read_text())} if recipe.is_file() else {})}
    (folder / RECORD).write_text(json.dumps(fields, indent=1))


def read_record(folder: Path) -> dict[str, Any] | None:
    """The model variant the engine in ``folder`` was built from (None: the ONNX file as given)."""
    try:
        return json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return None


def convert_fp16(source: str | Path, out: str | Path) -> None:
    """``source`` converted to fp16 with float32 inputs and outputs (``onnxconverter_common.float16``,
    ``keep_io_types=True``) into ``out``, its weights in ``<out>.data`` where the source keeps external data;
    CompileFailure with the converter's reason."""
    import onnx
    from onnxconverter_common import float16

    source, out = Path(source), Path(out)
    try:
        external = bool(external_data_files(source))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # it warns of every weight it clamps to fp16's range
            converted = float16.convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
        onnx.save(converted, str(out), save_as_external_data=external, location=f"{out.name}.data")
    except Exception as exc:  # the converter raises whatever its passes raise
        raise CompileFailure(f"fp16: the float16 converter refuses the model: {_first_line(exc)}") from None


def write_int8(source: str | Path, out: str | Path, *, calibration: str | Path, recipe: dict[str, Any],
               batch_dim: str | None = None, symbols: dict[str, int] | None = None) -> None:
    """The QDQ model of a stored ``recipe`` (its layers in float named) calibrated on the ``calibration`` set, as a
    study made it: what a preset's ``model_variant_command`` runs."""
    inputs = read_inputs(Path(source), batch_dim=batch_dim, symbols=symbols)
    quantize(Path(source), Path(out), recipe=Recipe.from_dict(recipe), inputs=inputs,
             calibration=load_set(Path(calibration), inputs, option="calibration"))


def _make(onnx_path: Path, model: ModelSpec, candidate: Any, work: Path) -> Artifact:
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    path = work / f"{onnx_path.stem}.{candidate.model_variant()}.onnx"  # the model's name: what the file is of
    if candidate.model_variant() == _int8.INT8:
        recipe = _int8.build(onnx_path, model, candidate, work, base=TRT_RECIPE)
        (work / _int8.QDQ_FILE).rename(path)
        said = recipe.describe()
        inputs = model.file_inputs()
        assert model.calibration is not None  # _int8.build refused it otherwise
        call = (f"write_int8; write_int8({str(onnx_path.resolve())!r}, {str(path)!r}, calibration="
                f"{str(model.calibration.path)!r}, recipe={recipe.as_dict()!r}, batch_dim={inputs.batch_symbol!r}, "
                f"symbols={inputs.symbols!r})")
    else:
        said = "fp16: onnxconverter_common.float16.convert_float_to_float16, keep_io_types"
        convert_fp16(onnx_path, path)
        call = f"convert_fp16; convert_fp16({str(onnx_path.resolve())!r}, {str(path)!r})"
    log = work / LOG
    log.write_text(said + "\n")
    command = ["python", "-c", f"from autotune.backends.tensorrt.variant import {call}"]
    return Artifact(path=path, command=command, log_path=log, compile_seconds=time.monotonic() - started,
                    batch_size=1)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
