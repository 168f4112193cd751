"""TensorRT measured through its Python runtime: one engine, N execution contexts on N CUDA streams (the ``tensorrt``
wheel and ``cuda-python``), every scenario run by LoadGen over them. Only on a host with a GPU; the SUT is written
against ``Lanes`` (run one batch on lane i), so that the tests drive it with a fake and ``scripts/gpu_check.sh``
checks the real one.
"""

from __future__ import annotations

import importlib
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from autotune.backends._loadgen_measure import measure_scenario, pooled_workload
from autotune.backends.base import Measurement
from autotune.errors import DeviceFailure, MeasureFailure

DEVICE_GONE = ("cudaErrorNoDevice", "cudaErrorDevicesUnavailable", "cudaErrorInvalidDevice",
               "cudaErrorECCUncorrectable", "cudaErrorHardwareStackError", "cudaErrorLaunchFailure")


class Lanes(Protocol):
    """Execution contexts of one engine, each on its own stream, each holding one batch of inputs."""

    count: int

    def run(self, lane: int) -> None:
        """One batch on lane ``lane``: inputs copied in, the engine enqueued, outputs copied out, synchronised."""
        ...

    def close(self) -> None:
        """Free every context, stream and buffer."""
        ...


def find_runtime() -> tuple[tuple[ModuleType, ModuleType] | None, str]:
    """(tensorrt, CUDA runtime bindings) and a few words, or (None, why not)."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError:
        return None, "TensorRT's Python runtime not importable (pip install tensorrt cuda-python)"
    for name in ("cuda.bindings.runtime", "cuda.cudart"):  # cuda-python 12.6+, then older
        try:
            return (trt, importlib.import_module(name)), f"TensorRT {trt.__version__} Python runtime"
        except ImportError:
            continue
    return None, "cuda-python not importable (pip install cuda-python of the driver's CUDA major)"


def measure_lanes(lanes: Lanes, *, batch_size: int, scenario: str, bound_ms: float | None, seconds: float,
                  log_dir: Path) -> Measurement:
    """``scenario`` run by LoadGen over ``lanes`` (logs in a new folder under ``log_dir``); the lanes stay open."""
    log_dir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="loadgen-", dir=log_dir))
    try:
        work = pooled_workload(lanes.run, range(lanes.count), batch_size=batch_size, concurrency=lanes.count,
                               sut=f"TensorRT runtime, {lanes.count} contexts on {lanes.count} streams")
        return measure_scenario(work, scenario=scenario, bound_ms=bound_ms, seconds=seconds, log_dir=run_dir)
    except MeasureFailure as failure:
        failure.log_path = failure.log_path or run_dir
        raise


class CudaLanes:
    """The real Lanes: ``count`` execution contexts of the engine in ``plan`` on ``device``, each with its own stream,
    device buffers and host copies of ``feed``; with ``cuda_graph``, each context's enqueue captured once as a CUDA
    graph and launched from then on."""

    def __init__(self, modules: tuple[ModuleType, ModuleType], plan: Path, *, device: int,
                 feed: dict[str, np.ndarray], count: int, cuda_graph: bool) -> None:
        self.trt, self.cudart = modules
        self.count, self.device = count, device
        self.memory: list[int] = []
        self.lanes: list[dict[str, Any]] = []
        self.cuda(self.cudart.cudaSetDevice(device))
        self.runtime = self.trt.Runtime(self.trt.Logger(self.trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise MeasureFailure(f"TensorRT cannot deserialize the engine {plan} (see its log above)")
        try:
            self.lanes = [self._lane(feed, cuda_graph) for _ in range(count)]
        except BaseException:
            self.close()
            raise

    def cuda(self, result: Any) -> Any:
        """A CUDA runtime call's values; its error as DeviceFailure (the device is gone) or MeasureFailure."""
        error, *values = result if isinstance(result, tuple) else (result,)
        if error != self.cudart.cudaError_t.cudaSuccess:
            name = getattr(error, "name", str(error))
            if name in DEVICE_GONE:
                raise DeviceFailure(f"GPU {self.device}: CUDA {name}")
            raise MeasureFailure(f"CUDA {name} on GPU {self.device}")
        return values[0] if len(values) == 1 else values

    def _lane(self, feed: dict[str, np.ndarray], cuda_graph: bool) -> dict[str, Any]:
        trt, cudart, engine = self.trt, self.cudart, self.engine
        context, stream = engine.create_execution_context(), self.cuda(cudart.cudaStreamCreate())
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        for name in inputs:
            if -1 in tuple(engine.get_tensor_shape(name)):  # a dynamic input: this batch's shape
                context.set_input_shape(name, feed[name].shape)
        copies_in, copies_out = [], []
        for name in names:
            dtype = trt.nptype(engine.get_tensor_dtype(name))  # the engine's own I/O type
            host = (np.ascontiguousarray(feed[name], dtype=dtype) if name in inputs else
                    np.empty(tuple(context.get_tensor_shape(name)), dtype))
            pointer = self.cuda(cudart.cudaMalloc(max(1, host.nbytes)))
            self.memory.append(pointer)
            context.set_tensor_address(name, pointer)
            (copies_in if name in inputs else copies_out).append((host, pointer))
        lane = {"context": context, "stream": stream, "in": copies_in, "out": copies_out, "graph": None}
        if cuda_graph:
            self._enqueue(lane)  # TensorRT's first enqueue sets up what a capture must not
            self.cuda(cudart.cudaStreamSynchronize(stream))
            self.cuda(cudart.cudaStreamBeginCapture(stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))
            self._enqueue(lane)
            graph = self.cuda(cudart.cudaStreamEndCapture(stream))
            lane["graph"] = self.cuda(cudart.cudaGraphInstantiate(graph, 0))
            self.cuda(cudart.cudaGraphDestroy(graph))  # the instantiated graph stands on its own
        return lane

    def _enqueue(self, lane: dict[str, Any]) -> None:
        if not lane["context"].execute_async_v3(int(lane["stream"])):
            raise MeasureFailure(f"TensorRT execute_async_v3 failed on GPU {self.device}")

    def run(self, lane: int) -> None:
        cudart, each = self.cudart, self.lanes[lane]
        stream = each["stream"]
        self.cuda(cudart.cudaSetDevice(self.device))  # the current device is per thread: LoadGen's workers run this
        for host, pointer in each["in"]:
            self.cuda(cudart.cudaMemcpyAsync(pointer, host.ctypes.data, host.nbytes,
                                             cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))
        if each["graph"] is not None:
            self.cuda(cudart.cudaGraphLaunch(each["graph"], stream))
        else:
            self._enqueue(each)
        for host, pointer in each["out"]:
            self.cuda(cudart.cudaMemcpyAsync(host.ctypes.data, pointer, host.nbytes,
                                             cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))
        self.cuda(cudart.cudaStreamSynchronize(stream))

    def close(self) -> None:
        for lane in self.lanes:
            if lane["graph"] is not None:
                self.cudart.cudaGraphExecDestroy(lane["graph"])
            self.cudart.cudaStreamDestroy(lane["stream"])
        for pointer in self.memory:
            self.cudart.cudaFree(pointer)
        self.lanes, self.memory = [], []


def measure_engine(modules: tuple[ModuleType, ModuleType], plan: Path, *, device: int, feed: dict[str, np.ndarray],
                   streams: int, cuda_graph: bool, batch_size: int, scenario: str, bound_ms: float | None,
                   seconds: float, log_dir: Path) -> Measurement:
    """``scenario`` run by LoadGen over ``streams`` contexts of the engine in ``plan``, freed afterwards."""
    try:
        lanes = CudaLanes(modules, plan, device=device, feed=feed, count=streams, cuda_graph=cuda_graph)
    except MeasureFailure:
        raise
    except Exception as exc:  # TensorRT's and CUDA's own exception types
        raise MeasureFailure(f"TensorRT's runtime cannot load the engine {plan}: {exc}") from None
    try:
        return measure_lanes(lanes, batch_size=batch_size, scenario=scenario, bound_ms=bound_ms, seconds=seconds,
                             log_dir=log_dir)
    finally:
        lanes.close()
