"""A QPC's outputs read back for the accuracy guard: the inputs of one batch as raw files for qaic-runner's ``-i``,
and the files ``--write-output-dir`` writes (``<output name>-activation-0-inf-0.bin``, a raw array in the output's
dtype, SDK-FACTS) as arrays shaped as the model's outputs at that batch."""

from __future__ import annotations

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
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    sizes = dict(inputs.symbols) | ({inputs.batch_symbol: batch_size} if inputs.batch_symbol else {})
    specs = []
    for output in graph.output:
        tensor = output.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else sizes.get(d.dim_param, -1)
                     for d in tensor.shape.dim)
        specs.append((output.name, tensor_dtype_to_np_dtype(tensor.elem_type), dims if dims.count(-1) <= 1 else (-1,)))
    return specs


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
