"""What an OpenVINO preset carries: the properties compiled with, what OpenVINO chose for them, the requests in
flight, the int8 recipe, and a ``benchmark_app`` line that runs the same settings (a cross-check: its figures are not
LoadGen's)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from autotune.backends import _int8
from autotune.backends.openvino.space import OvCandidate

# properties benchmark_app sets with flags of its own; the others go through -load_config
FLAGS = {"NUM_STREAMS": "-nstreams", "INFERENCE_NUM_THREADS": "-nthreads", "ENABLE_CPU_PINNING": "-pin",
         "INFERENCE_PRECISION_HINT": "-infer_precision"}
TUNING_FLAGS = ("-nstreams", "-nthreads", "-pin")  # benchmark_app refuses these unless -hint none


def preset_fields(candidate: OvCandidate, info_path: Path, *, name: str) -> dict[str, Any]:
    """The preset fields of ``candidate`` from the ``compiled.json`` its compile wrote at ``info_path``."""
    info = json.loads(info_path.read_text())
    chosen = info["read_back"]
    requests = candidate.request_factor * int(chosen["OPTIMAL_NUMBER_OF_INFER_REQUESTS"])
    fields: dict[str, Any] = {"openvino_properties": info["properties"], "compiled": chosen,
                              "requests_in_flight": requests}
    recipe = info_path.parent / _int8.RECIPE_FILE
    if recipe.is_file():  # int8: benchmark_app runs the QDQ model beside the blob (wherever the cache moved it)
        info["onnx"] = str(info_path.parent / _int8.QDQ_FILE)
        fields["int8_recipe"] = json.loads(recipe.read_text())
    config = {k: v for k, v in info["properties"].items() if k != "PERFORMANCE_HINT" and k not in _flags(info)}
    if config:
        fields["benchmark_app_config"] = {"CPU": config}
    fields["benchmark_app_command"] = benchmark_app_line(info, requests, config_file=f"{name}-config.json"
                                                         if config else None)
    return fields


def benchmark_app_line(info: dict[str, Any], requests: int, *, config_file: str | None) -> str:
    """benchmark_app on the same model, shapes, properties and requests in flight, asynchronous, for 10 s."""
    props = info["properties"]
    argv = ["benchmark_app", "-m", info["onnx"], "-d", "CPU",
            "-hint", props.get("PERFORMANCE_HINT", "none").lower()]
    for key, flag in _flags(info).items():
        if key in props:
            argv += [flag, props[key]]
    shapes = ",".join(f"{name}[{','.join(map(str, shape))}]" for name, shape in info["shapes"].items())
    argv += ["-shape", shapes, "-nireq", str(requests), "-api", "async", "-t", "10"]
    if config_file:
        argv += ["-load_config", config_file]
    return shlex.join(argv)


def _flags(info: dict[str, Any]) -> dict[str, str]:
    """The properties benchmark_app takes as flags with the hint compiled with."""
    hinted = "PERFORMANCE_HINT" in info["properties"]
    return {k: flag for k, flag in FLAGS.items() if not (hinted and flag in TUNING_FLAGS)}
