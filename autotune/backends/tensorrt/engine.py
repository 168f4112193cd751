"""A built engine on disk: the plan, what built it (TensorRT version, GPU model) so that an engine of another version
or GPU is never loaded, the shapes it takes for a model's inputs, and the input files trtexec reads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autotune.backends.tensorrt.trtexec import Shapes
from autotune.errors import MeasureFailure
from autotune.inputs import ModelInputs
from autotune.paths import safe_component

PLAN = "model.plan"
BUILT_BY = "engine.json"


@dataclass(frozen=True, kw_only=True)
class BuiltBy:
    """What an engine is specific to (TRTEXEC-FACTS: the TensorRT version and the GPU model that built it)."""

    tensorrt: str
    gpu: str
    compute_cap: str | None

    def describe(self) -> str:
        return f"TensorRT {self.tensorrt} for {self.gpu} (compute {self.compute_cap or '?'})"


def write_built_by(folder: Path, built: BuiltBy, *, batch_size: int) -> None:
    (folder / BUILT_BY).write_text(json.dumps({"tensorrt": built.tensorrt, "gpu": built.gpu,
                                               "compute_cap": built.compute_cap, "batch_size": batch_size}))


def read_built_by(folder: Path) -> BuiltBy | None:
    """What built the engine in ``folder``; None when its plan or record is missing or unreadable."""
    try:
        data = json.loads((folder / BUILT_BY).read_text())
        built = BuiltBy(tensorrt=str(data["tensorrt"]), gpu=str(data["gpu"]), compute_cap=data.get("compute_cap"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return built if (folder / PLAN).is_file() else None


def check_engine(folder: Path, wanted: BuiltBy) -> Path:
    """The plan in ``folder`` when it was built by ``wanted``'s TensorRT for ``wanted``'s GPU model; otherwise
    MeasureFailure, and the plan is never handed to trtexec."""
    built = read_built_by(folder)
    if built is None:
        raise MeasureFailure(f"no whole engine in {folder} (its {PLAN} or {BUILT_BY} is missing): build it again")
    if built != wanted:
        raise MeasureFailure(f"the engine in {folder} was built by {built.describe()}; this is {wanted.describe()}: "
                             f"an engine is specific to both, so it is not loaded (build it again)")
    return folder / PLAN


def build_shapes(inputs: ModelInputs, batch_size: int) -> Shapes:
    """min/opt/max dims of each input with a dynamic dimension: the batch axis from 1 to the batch (opt = max), the
    other symbols at their sizes; inputs whose dims are all fixed are left out (trtexec takes no shapes for them)."""
    shapes: Shapes = {}
    for spec in inputs.inputs:
        if all(isinstance(d, int) for d in spec.dims):
            continue
        low, high = list(spec.shape), list(spec.shape)
        if spec.batch_axis is not None:
            low[spec.batch_axis], high[spec.batch_axis] = 1, batch_size
        shapes[spec.name] = (tuple(low), tuple(high), tuple(high))
    return shapes


def run_shapes(inputs: ModelInputs, batch_size: int) -> dict[str, tuple[int, ...]]:
    """``--shapes`` of one batch: the built profile's max for every dynamic input."""
    return {name: dims[2] for name, dims in build_shapes(inputs, batch_size).items()}


def input_files(feed: dict[str, np.ndarray], folder: Path) -> str:
    """The ``--loadInputs`` spec of ``feed`` (one raw file per input, written to ``folder``)."""
    folder.mkdir(parents=True, exist_ok=True)
    specs = []
    for i, (name, array) in enumerate(feed.items()):
        path = folder / f"{i}-{safe_component(name)}.raw"
        np.ascontiguousarray(array).tofile(path)
        quoted = f"'{name}'" if any(c in name for c in ":,") else name
        specs.append(f"{quoted}:{path}")
    return ",".join(specs)
