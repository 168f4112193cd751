"""int8 on the host's CPU, shared by the ONNX Runtime and OpenVINO targets: the recipe's knobs (drawn only at
precision int8), their flag-string spelling and rules, what decides an int8 build beyond its knobs, and the static
QDQ model a compile builds (``autotune.quantize``), with the sensitivity ranking kept on disk once per model,
calibration set and base recipe.

The activation and weight types are not searched: the CPU's flags choose them (``quantize.default_recipe``)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path
from typing import Any

from autotune.compile_cache import cache_key
from autotune.errors import AutotuneError, CompileFailure
from autotune.models import ModelSpec, cache_dir, model_sha256
from autotune.quantize import METHODS, Recipe, cache_identity, default_recipe, keep_in_float, quantize, sensitivity
from autotune.search_space import Knob
from autotune.task_accuracy import SampleSet

INT8 = "int8"
# keep the k most sensitive layers in float: doubling steps, as a few outlier layers (the first conv, the head, a
# residual add) break int8 far more often than many do, and each k costs one quantize once the ranking is on disk;
# a remedy, searched once an int8 compile failed the accuracy guard (ranking ResNet-50's 123 layers takes minutes)
FLOAT_LAYERS = (0, 1, 2, 4, 8)
RECIPE_DEFAULTS: dict[str, Any] = {"calibration_method": "MinMax", "per_channel": False, "float_layers": 0}
SPELLING = {"calibration_method": "calibrate_method", "per_channel": "per_channel", "float_layers": "float_layers"}
QDQ_FILE = "model.int8.onnx"
RECIPE_FILE = "recipe.json"
NO_SET = "precision int8 needs a calibration set (--calibration-set, or an --accuracy-set to split)"


def _at_int8(drawn: dict[str, Any]) -> bool:
    return drawn.get("precision") == INT8


RECIPE_KNOBS = [Knob(name="calibration_method", values=METHODS, when=_at_int8),
                Knob(name="per_channel", values=(False, True), when=_at_int8),
                Knob(name="float_layers", values=FLOAT_LAYERS, when=_at_int8, remedy=True)]


def recipe_params(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with the recipe's parameters at int8 (the default recipe where a step just reached int8), without
    them at any other precision (they are not drawn there)."""
    if params.get("precision") == INT8:
        return RECIPE_DEFAULTS | params
    return {name: value for name, value in params.items() if name not in RECIPE_DEFAULTS}


def recipe_problems(candidate: Any, *, offered: bool) -> list[str]:
    """The int8 rules ``candidate`` breaks: a recipe set at another precision, int8 without a calibration set
    (``offered`` False), a recipe value out of its domain."""
    if candidate.precision != INT8:
        given = [SPELLING[name] for name, value in RECIPE_DEFAULTS.items() if getattr(candidate, name) != value]
        return [f"{', '.join(given)}: int8 recipe settings, for precision int8 only"] if given else []
    problems = [] if offered else [NO_SET]
    if candidate.calibration_method not in METHODS:
        problems.append(f"calibrate_method={candidate.calibration_method}: one of {', '.join(METHODS)}")
    if candidate.float_layers < 0:
        problems.append(f"float_layers={candidate.float_layers}: at least 0")
    return problems


def recipe_key(candidate: Any) -> tuple[Any, ...]:
    """What an int8 candidate adds to its compile key (nothing at another precision)."""
    if candidate.precision != INT8:
        return ()
    return (INT8, *(getattr(candidate, name) for name in RECIPE_DEFAULTS))


def recipe_flags(candidate: Any) -> list[str]:
    """``precision=int8 calibrate_method=MinMax per_channel=0 float_layers=2`` at int8; nothing otherwise."""
    if candidate.precision != INT8:
        return []
    return [f"precision={INT8}", *(f"{SPELLING[name]}={int(value) if isinstance(value, bool) else value}"
                                   for name in RECIPE_DEFAULTS for value in [getattr(candidate, name)])]


def read_recipe_flag(key: str, raw: str, token: str) -> tuple[str, Any]:
    """The candidate field and value of one recipe token of a flag string (``per_channel=1``)."""
    name = {spelled: name for name, spelled in SPELLING.items()}[key]
    if name == "calibration_method":
        return name, raw
    if raw.isdigit() and (name == "float_layers" or raw in ("0", "1")):
        return name, bool(int(raw)) if name == "per_channel" else int(raw)
    raise AutotuneError(f"malformed setting {token!r}: expected " + ("0 or 1" if name == "per_channel"
                                                                    else "an integer, at least 0"))


def describe(candidate: Any) -> str:
    """`` int8 MinMax pc f2`` for progress lines (empty at another precision)."""
    if candidate.precision != INT8:
        return ""
    layers = f" f{candidate.float_layers}" if candidate.float_layers else ""
    return f" int8 {candidate.calibration_method}{' pc' if candidate.per_channel else ''}{layers}"


def identity_flags(model: ModelSpec, isa_flags: Collection[str]) -> tuple[str, ...]:
    """What decides an int8 build besides its knobs, for a study's identity and the compile cache's key: the
    calibration set's SHA-256 and the types this CPU takes; nothing for a model without a calibration set."""
    if model.calibration is None:
        return ()
    recipe = default_recipe(isa_flags)
    return (f"calibration_sha256={model.calibration.sha256}",
            f"int8_types={recipe.activation_type}/{recipe.weight_type}" + (",reduce_range" * recipe.reduce_range))


def build(onnx_path: Path, model: ModelSpec, candidate: Any, out: Path, *, isa_flags: Collection[str] = (),
          base: Recipe | None = None) -> Recipe:
    """The candidate's int8 QDQ model in ``out`` (``QDQ_FILE``), its recipe beside it (``RECIPE_FILE``), with the
    ``float_layers`` most sensitive layers kept in float; raises CompileFailure (not retryable) with the reason.
    ``base``: the types and options the target takes (default: this CPU's, ``default_recipe(isa_flags)``)."""
    calibration = model.calibration
    if calibration is None:
        raise CompileFailure(NO_SET)
    recipe = replace(base or default_recipe(isa_flags), method=candidate.calibration_method,
                     per_channel=candidate.per_channel)
    if candidate.float_layers:
        recipe = keep_in_float(recipe, ranking(onnx_path, model, recipe, calibration), candidate.float_layers)
    quantize(onnx_path, out / QDQ_FILE, recipe=recipe, calibration=calibration, inputs=model.file_inputs())
    (out / RECIPE_FILE).write_text(json.dumps(recipe.as_dict() | {"calibration_set": calibration.name,
                                                                  "calibration_sha256": calibration.sha256}, indent=1))
    return recipe


def ranking(onnx_path: Path, model: ModelSpec, recipe: Recipe, calibration: SampleSet) -> list[tuple[str, float]]:
    """The layers by how much quantizing each alone moves the outputs (``quantize.sensitivity``), computed once per
    model, calibration set, input shapes and base recipe and kept in autotune's cache folder."""
    identity = cache_identity(model_sha256=model_sha256(onnx_path), calibration_sha256=calibration.sha256,
                              recipe=replace(recipe, nodes_to_exclude=()))
    inputs = model.file_inputs()
    path = cache_dir() / "int8-sensitivity" / f"{cache_key(identity | {'inputs': inputs.identity(samples=False)})}.json"
    try:
        return [(name, float(error)) for name, error in json.loads(path.read_text())["ranking"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="autotune-sensitivity-") as work:
        ranked = sensitivity(onnx_path, recipe=recipe, calibration=calibration, inputs=inputs, workdir=Path(work))
    handle, partial = tempfile.mkstemp(prefix=path.name, dir=path.parent)
    with os.fdopen(handle, "w") as out:
        json.dump({"identity": identity, "ranking": ranked}, out)
    os.replace(partial, path)  # whole or absent: another process may read it meanwhile
    return ranked
