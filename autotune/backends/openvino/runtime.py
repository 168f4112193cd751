"""OpenVINO itself: read an ONNX file, reshape it to a batch, compile and export it, import the blob with a candidate's
properties, read back what OpenVINO chose, and run requests in flight on an ``AsyncInferQueue`` under LoadGen."""

from __future__ import annotations

import io
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autotune.backends._loadgen import AsyncSUT
from autotune.errors import CompileFailure, MeasureFailure
from autotune.inputs import ModelInputs

BLOB = "model.blob"
INFO = "compiled.json"
# what OpenVINO chose when compiling: stored on every trial
READ_BACK = ("OPTIMAL_NUMBER_OF_INFER_REQUESTS", "NUM_STREAMS", "INFERENCE_NUM_THREADS", "INFERENCE_PRECISION_HINT",
             "EXECUTION_DEVICES")
REASON_CHARS = 300
_NOISE = re.compile(r"^(Exception from |Check '.*' failed at |FrontEnd API failed with |Summary:|While validating )")


@dataclass(frozen=True, kw_only=True)
class Compiled:
    """A compiled model and what OpenVINO reports of it."""

    model: Any  # openvino.CompiledModel
    read_back: dict[str, Any]

    @property
    def optimal_requests(self) -> int:
        return int(self.read_back["OPTIMAL_NUMBER_OF_INFER_REQUESTS"])

    @property
    def streams(self) -> int:
        return int(self.read_back["NUM_STREAMS"])


def input_shapes(inputs: ModelInputs, batch: int) -> dict[str, list[int]]:
    """Each input's shape at ``batch``: the batch on its own axis, the other symbols at their sizes."""
    shapes = {}
    for spec in inputs.inputs:
        shape = list(spec.shape)
        if spec.batch_axis is not None:
            shape[spec.batch_axis] = batch
        shapes[spec.name] = shape
    return shapes


def compile_to(ov: Any, core: Any, onnx_path: Path, shapes: dict[str, list[int]], properties: dict[str, str],
               out: Path) -> dict[str, Any]:
    """Read ``onnx_path`` with OpenVINO's ONNX frontend, reshape it, compile it on the CPU with ``properties`` and
    export the blob and what OpenVINO chose into ``out``; returns the latter. Raises CompileFailure with the reason."""
    model = read_onnx(ov, onnx_path)
    try:
        model.reshape(shapes)
    except Exception as exc:  # OpenVINO raises RuntimeError for every kind of failure
        raise CompileFailure(f"OpenVINO cannot reshape {onnx_path.name} to {shapes_text(shapes)}: "
                             f"{reason(exc)}") from None
    try:
        compiled = core.compile_model(model, "CPU", properties)
    except Exception as exc:
        raise CompileFailure(f"OpenVINO cannot compile {onnx_path.name} on the CPU with "
                             f"{_props_text(properties)}: {reason(exc)}") from None
    blob = io.BytesIO()
    compiled.export_model(blob)
    (out / BLOB).write_bytes(blob.getvalue())
    info = {"onnx": str(onnx_path), "shapes": shapes, "properties": properties, "read_back": read_back(compiled)}
    (out / INFO).write_text(json.dumps(info, indent=2))
    return info


def read_onnx(ov: Any, path: Path) -> Any:
    """The ``openvino.Model`` of an ONNX file (external data beside it); CompileFailure names what it cannot read.

    Through the ONNX frontend, as ``core.read_model`` does for an .onnx file, without trying the other frontends."""
    frontend = ov.frontend.FrontEndManager().load_by_framework("onnx")
    try:
        return frontend.convert(frontend.load(str(path)))
    except Exception as exc:
        raise CompileFailure(f"OpenVINO cannot read {path.name}: {reason(exc)}") from None


def load(core: Any, artifact_dir: Path, properties: dict[str, str]) -> Compiled:
    """The exported blob imported on the CPU with ``properties`` (the CPU plugin applies them on import, not from the
    blob) and what OpenVINO reports of it; MeasureFailure when it cannot be."""
    try:
        data = (artifact_dir / BLOB).read_bytes()
    except OSError as exc:
        raise MeasureFailure(f"cannot load the compiled model: {exc.strerror}: {artifact_dir / BLOB}") from None
    try:
        model = core.import_model(io.BytesIO(data), "CPU", properties)
    except Exception as exc:
        raise MeasureFailure(f"OpenVINO cannot import {BLOB}: {reason(exc)}") from None
    return Compiled(model=model, read_back=read_back(model))


def read_back(compiled: Any) -> dict[str, Any]:
    """The values OpenVINO chose for a compiled model (``READ_BACK``), JSON-ready."""
    values: dict[str, Any] = {}
    for key in READ_BACK:
        value = compiled.get_property(key)
        values[key] = value.to_string() if hasattr(value, "to_string") else value
    return values


def infer(compiled: Compiled, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One synchronous inference of ``feed``: each output by its name."""
    request = compiled.model.create_infer_request()
    result = request.infer(feed)
    return {port.get_any_name(): np.array(value) for port, value in result.items()}


def batch_seconds(compiled: Compiled, feed: dict[str, np.ndarray], batch: int) -> float:
    """Seconds of one batch on one request after a warm-up (the shorter of two); MeasureFailure when the model
    refuses the feed."""
    request = compiled.model.create_infer_request()
    try:
        request.infer(feed)
    except Exception as exc:
        raise MeasureFailure(f"OpenVINO cannot run a batch of {batch}: {reason(exc)}") from None
    times = []
    for _ in range(2):
        started = time.perf_counter()
        request.infer(feed)
        times.append(time.perf_counter() - started)
    return max(min(times), 1e-5)


def async_sut(ov: Any, compiled: Compiled, feed: dict[str, np.ndarray], *, requests: int, batch: int) -> AsyncSUT:
    """A LoadGen SUT over an ``AsyncInferQueue`` of ``requests`` requests, each holding one batch of ``feed``; the
    queue's completion callback completes the batch's samples."""
    queue = ov.AsyncInferQueue(compiled.model, requests)
    for request in queue:
        for name, value in feed.items():
            request.set_tensor(name, ov.Tensor(value))

    def completed(request: Any, done: Any) -> None:
        done(None)

    queue.set_callback(completed)
    return AsyncSUT(lambda indices, done: queue.start_async(userdata=done), batch_size=batch,
                    wait_idle=queue.get_idle_request_id, drain=queue.wait_all)


def reason(exc: Exception) -> str:
    """OpenVINO's message on one line, without the source locations of the checks that failed."""
    lines = [line.strip().removeprefix("-- ") for line in str(exc).splitlines()]
    kept = [line for line in lines if line and not _NOISE.match(line)]
    return ("; ".join(kept) or type(exc).__name__)[:REASON_CHARS]


def shapes_text(shapes: dict[str, list[int]]) -> str:
    return ", ".join(f"{name}{shape}" for name, shape in shapes.items())


def _props_text(properties: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in properties.items()) or "its defaults"
