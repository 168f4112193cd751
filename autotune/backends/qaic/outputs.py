"""A QPC's outputs read back for the accuracy guard: the inputs of one batch as raw files for qaic-runner's ``-i``,
and the files ``--write-output-dir`` writes (``<output name>-activation-0-inf-0.bin``, a raw array in the output's
dtype, SDK-FACTS) as arrays shaped as the model's outputs at that batch."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from autotune.errors import MeasureFailure
from autotune.inputs import ModelInputs
from autotune.paths import safe_component


def raw_files(feed: dict[str, np.ndarray], folder: Path) -> list[Path]:
    """One raw file per input of ``feed``, in its order (the model's): qaic-runner's ``-i`` files."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, (name, array) in enumerate(feed.items()):
        path = folder / f"{i}-{safe_component(name)}.raw"
        np.ascontiguousarray(array).tofile(path)
        files.append(path)
    return files


def model_file(command: list[str]) -> Path:
    """The ONNX file a qaic-exec command line compiled (its ``-m=``)."""
    return Path(next(arg.partition("=")[2] for arg in command if arg.startswith(("-m=", "-model="))))


def output_specs(onnx_path: Path, inputs: ModelInputs, batch_size: int) -> list[tuple[str, Any, tuple[int, ...]]]:
    """Each graph output's name, numpy dtype and shape at ``batch_size`` (the batch symbol at the batch, the other
    symbols at their sizes, a dimension the graph leaves open read as -1)."""
    sizes = dict(inputs.symbols) | ({inputs.batch_symbol: batch_size} if inputs.batch_symbol else {})
    specs = []
    for name, dtype, declared in _graph_outputs(str(onnx_path)):
        dims = tuple(d if isinstance(d, int) else sizes.get(d, -1) for d in declared)
        specs.append((name, dtype, dims if dims.count(-1) <= 1 else (-1,)))
    return specs


@functools.lru_cache(maxsize=8)
def _graph_outputs(onnx_path: str) -> tuple[tuple[str, Any, tuple[int | str, ...]], ...]:
    """The graph's outputs as declared (a dimension: its size, else its symbol's name), read once per file: every
    batch of an accuracy set asks."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    graph = onnx.load(onnx_path, load_external_data=False).graph
    return tuple((o.name, tensor_dtype_to_np_dtype(o.type.tensor_type.elem_type),
                  tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in o.type.tensor_type.shape.dim))
                 for o in graph.output)


def read_outputs(folder: Path, specs: list[tuple[str, Any, tuple[int, ...]]]) -> dict[str, np.ndarray]:
    """The outputs of inference 0 of activation 0 that qaic-runner wrote to ``folder``; MeasureFailure naming a
    missing or misshapen file."""
    outputs = {}
    for name, dtype, shape in specs:
        path = folder / f"{name}-activation-0-inf-0.bin"
        if not path.is_file():
            raise MeasureFailure(f"qaic-runner wrote no output file {path.name} (--write-output-dir)")
        values = np.fromfile(path, dtype=dtype)
        try:
            outputs[name] = values.reshape(shape)
        except ValueError:
            raise MeasureFailure(f"{path.name} holds {values.size} values; output {name} takes shape "
                                 f"{shape}") from None
    return outputs
