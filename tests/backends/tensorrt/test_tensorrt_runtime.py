"""TensorRT's Python runtime under LoadGen, driven by a fake of its lanes (no GPU here): the SUT, CUDA's errors as
typed failures, and the backend keeping trtexec's estimate beside the measurement."""

from __future__ import annotations

import enum
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from autotune.backends.tensorrt import TensorrtBackend
from autotune.backends.tensorrt import backend as trt_backend
from autotune.backends.tensorrt.runtime import CudaLanes, find_runtime, measure_lanes
from autotune.backends.tensorrt.space import TrtCandidate
from autotune.errors import DeviceFailure, MeasureFailure
from autotune.scenarios import SCENARIOS
from helpers import spec_for


class FakeLanes:
    """``count`` lanes of a fake engine: a batch takes ``ms`` on its lane, lanes run at once; ``fail`` raised from the
    ``fail_at``-th batch on."""

    def __init__(self, count: int, ms: float = 2.0, fail: Exception | None = None, fail_at: int = 0) -> None:
        self.count, self.ms, self.fail, self.fail_at = count, ms, fail, fail_at
        self.runs, self.closed = 0, False
        self.busy: set[int] = set()
        self.lock = threading.Lock()

    def run(self, lane: int) -> None:
        with self.lock:
            assert lane not in self.busy  # one batch at a time on a lane
            self.busy.add(lane)
            self.runs += 1
            failing = self.fail is not None and self.runs >= self.fail_at
        try:
            if failing:
                raise self.fail
            time.sleep(self.ms / 1000)
        finally:
            with self.lock:
                self.busy.discard(lane)

    def close(self) -> None:
        self.closed = True


def test_server_runs_loadgen_over_the_lanes(tmp_path):
    lanes = FakeLanes(2)
    m = measure_lanes(lanes, batch_size=1, scenario="server", bound_ms=50.0, seconds=0.5, log_dir=tmp_path)
    assert m.loadgen and not m.estimated and m.server_qps > 0 and m.server_p99_ms <= 50.0
    assert len(list(m.log_path.glob("server-*/mlperf_log_detail.txt"))) == len(m.server_probes)
    assert "2 contexts on 2 streams" in m.command[0] and lanes.runs > 100


def test_a_failing_lane_fails_the_measurement_with_its_type(tmp_path):
    with pytest.raises(DeviceFailure, match="GPU 0: CUDA cudaErrorNoDevice"):
        measure_lanes(FakeLanes(2, fail=DeviceFailure("GPU 0: CUDA cudaErrorNoDevice"), fail_at=10), batch_size=1,
                      scenario="offline", bound_ms=None, seconds=0.3, log_dir=tmp_path)
    with pytest.raises(MeasureFailure, match="execute_async_v3 failed") as failure:
        measure_lanes(FakeLanes(1, fail=MeasureFailure("TensorRT execute_async_v3 failed on GPU 0")), batch_size=1,
                      scenario="offline", bound_ms=None, seconds=0.3, log_dir=tmp_path)
    assert failure.value.log_path is not None and failure.value.log_path.parent == tmp_path


def test_cuda_errors_become_device_or_measure_failures():
    errors = enum.Enum("cudaError_t", ["cudaSuccess", "cudaErrorNoDevice", "cudaErrorMemoryAllocation"], start=0)
    lanes = CudaLanes.__new__(CudaLanes)
    lanes.cudart, lanes.device = SimpleNamespace(cudaError_t=errors), 1
    assert lanes.cuda((errors.cudaSuccess, 42)) == 42 and lanes.cuda((errors.cudaSuccess,)) == []
    with pytest.raises(DeviceFailure, match="GPU 1: CUDA cudaErrorNoDevice"):
        lanes.cuda((errors.cudaErrorNoDevice, None))
    with pytest.raises(MeasureFailure, match="CUDA cudaErrorMemoryAllocation on GPU 1"):
        lanes.cuda((errors.cudaErrorMemoryAllocation, None))


def test_without_the_wheel_the_run_says_why_figures_are_estimated(trt_emulator, tiny_onnx, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # not importable
    assert find_runtime() == (None, "TensorRT's Python runtime not importable (pip install tensorrt cuda-python)")
    backend = TensorrtBackend(trtexec=trt_emulator)
    assert backend.runtime is None and backend.estimated_scenarios == {"server", "multistream"}
    target = backend.target(model=spec_for(tiny_onnx), scenario=SCENARIOS["server"], devices=None)
    assert target.description.endswith("; server figures estimated from trtexec's times: the emulated trtexec has "
                                       "no Python runtime")


def test_a_measured_scenario_keeps_trtexecs_estimate_beside(trt_emulator, tiny_onnx, tmp_path, monkeypatch):
    opened = []

    def fake_engine(modules, plan, *, streams, batch_size, scenario, bound_ms, seconds, log_dir, **_):
        opened.append(FakeLanes(streams))
        return measure_lanes(opened[-1], batch_size=batch_size, scenario=scenario, bound_ms=bound_ms,
                             seconds=seconds, log_dir=log_dir)

    monkeypatch.setattr(trt_backend, "measure_engine", fake_engine)
    backend = TensorrtBackend(trtexec=trt_emulator)
    backend.runtime = ("tensorrt", "cudart")  # as if both imported: the fake stands for them
    model = spec_for(tiny_onnx)
    backend.target(model=model, scenario=SCENARIOS["server"], devices=None)
    candidate = TrtCandidate(contract=10, streams=2)
    artifact = backend.compile(tiny_onnx, model, candidate, tmp_path / "c")
    m = backend.measure(artifact, candidate, model=model, scenario=SCENARIOS["server"], bound_ms=15.0, seconds=0.5,
                        device=0, log_dir=tmp_path / "runs")
    assert m.loadgen and not m.estimated and opened[0].count == 2
    assert m.estimate_figures["server_qps"] > 0 and "server_p99_ms" in m.estimate_figures
    assert any(a.startswith("--loadEngine=") for a in m.command) and not any("--exportTimes" in a for a in m.command)
