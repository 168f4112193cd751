"""ONNX Runtime on the local CPU: compile = an optimised session file per (graph level, batch); measure = LoadGen."""

from __future__ import annotations

import os
import platform
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autotune.backend import Artifact, AutotuneError, CompileFailure, Measurement, MeasureFailure
from autotune.loadgen_driver import BatchingSUT, LoadGenRun, run_loadgen

GRAPH_LEVELS = ("disable", "basic", "extended", "all")
EXECUTION_MODES = ("sequential", "parallel")
ONNX_TO_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
                 "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
                 "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


@dataclass(frozen=True, kw_only=True)
class OrtCandidate:
    """ONNX Runtime knobs: graph level and batch are compiled in; the rest are runtime settings."""

    graph_level: str = "all"
    batch_size: int = 1
    intra_threads: int = 0
    inter_threads: int = 0
    execution_mode: str = "sequential"
    spinning: bool = True
    instances: int = 1

    def compile_key(self) -> tuple[Any, ...]:
        return (self.graph_level, self.batch_size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class CpuDevice:
    """The local CPU as a measurement device."""

    cores: int
    model_name: str
    isa_flags: tuple[str, ...]


def cpu_device() -> CpuDevice:
    """Cores, CPU model and the vector ISA flags that matter for inference kernels."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    present = set(fields.get("flags", "").split())
    flags = tuple(f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in present)
    return CpuDevice(cores=os.cpu_count() or 1, model_name=fields.get("model name") or platform.processor() or
                     "unknown CPU", isa_flags=flags)


class OrtBackend:
    """ONNX Runtime CPU backend; every figure is measured with MLPerf LoadGen."""

    name = "ort"

    def __init__(self, *, input_shapes: dict[str, list[int]] | None = None) -> None:
        import onnxruntime

        self.ort = onnxruntime
        self.input_shapes = input_shapes or {}
        self.device = cpu_device()

    def version(self) -> str:
        return f"onnxruntime {self.ort.__version__} on {self.device.model_name} ({self.device.cores} cores)"

    def devices(self) -> list[CpuDevice]:
        return [self.device]

    def compile(self, onnx_path: Path, model: Any, candidate: OrtCandidate, workdir: Path) -> Artifact:
        """Save the graph optimised at ``graph_level`` with the batch fixed; the file is reused by every session."""
        workdir.mkdir(parents=True, exist_ok=True)
        out = Path(tempfile.mkdtemp(prefix="ort-", dir=workdir))
        optimised = out / "model.opt.onnx"
        options = self._options(candidate, optimised_path=optimised)
        started = time.monotonic()
        try:
            session = self.ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise CompileFailure(f"onnxruntime cannot load {onnx_path.name}: {str(exc).splitlines()[0]}") from None
        self.input_feed(session, candidate.batch_size)  # dynamic dimensions are checked here, before any run
        return Artifact(path=optimised, command=[f"onnxruntime graph_level={candidate.graph_level} "
                                                 f"batch={candidate.batch_size}"],
                        log_path=out / "compile.log", compile_seconds=time.monotonic() - started,
                        batch_size=candidate.batch_size, cores=0)

    def measure(self, artifact: Artifact, candidate: OrtCandidate, run: LoadGenRun, *,
                log_dir: Path) -> Measurement:
        """One LoadGen run with ``candidate.instances`` sessions of the optimised model."""
        sessions = [self._session(artifact.path, candidate) for _ in range(candidate.instances)]
        feeds = [self.input_feed(s, candidate.batch_size) for s in sessions]
        free: list[int] = list(range(len(sessions)))
        lock = threading.Lock()
        local = threading.local()

        def infer(indices: list[int]) -> None:
            if not hasattr(local, "slot"):
                with lock:
                    local.slot = free.pop()
            sessions[local.slot].run(None, feeds[local.slot])

        sut = BatchingSUT(infer, batch_size=candidate.batch_size, instances=candidate.instances)
        try:
            result = run_loadgen(sut, run, sample_count=1024, log_dir=log_dir)
        except AutotuneError as exc:
            raise MeasureFailure(str(exc), log_path=log_dir) from None
        return Measurement(samples_per_second=result.samples_per_second, duration_seconds=run.min_duration_ms / 1000,
                           batch_size=candidate.batch_size, executions=result.query_count,
                           latency_p50_ms=result.latency_p50_ms, latency_p90_ms=result.latency_p90_ms,
                           latency_p99_ms=result.latency_p99_ms, estimated=False,
                           command=[f"loadgen {run.scenario}"], log_path=log_dir)

    def input_feed(self, session: Any, batch_size: int) -> dict[str, np.ndarray]:
        """Random inputs of one batch; a dynamic dimension other than the batch needs ``--input-shape``."""
        feed = {}
        for spec in session.get_inputs():
            if spec.name in self.input_shapes:
                shape = list(self.input_shapes[spec.name])
                shape[0] = batch_size
            else:
                shape = []
                for i, dim in enumerate(spec.shape):
                    if isinstance(dim, int) and dim > 0:
                        shape.append(dim)
                    elif i == 0:
                        shape.append(batch_size)
                    else:
                        raise AutotuneError(f"input {spec.name!r} has dynamic dimension {dim!r}: pass --input-shape "
                                            f"{spec.name}=" + ",".join(str(d if isinstance(d, int) else 1)
                                                                       for d in spec.shape))
            dtype = ONNX_TO_NUMPY.get(spec.type)
            if dtype is None:
                raise AutotuneError(f"input {spec.name!r} has type {spec.type}, which autotune cannot generate")
            feed[spec.name] = np.random.default_rng(0).random(shape).astype(dtype)
        return feed

    def _options(self, candidate: OrtCandidate, *, optimised_path: Path | None = None) -> Any:
        ort = self.ort
        options = ort.SessionOptions()
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[candidate.graph_level]
        options.add_free_dimension_override_by_name("batch_size", candidate.batch_size)
        options.intra_op_num_threads = candidate.intra_threads
        options.inter_op_num_threads = candidate.inter_threads
        options.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if candidate.execution_mode == "parallel"
                                  else ort.ExecutionMode.ORT_SEQUENTIAL)
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if candidate.spinning else "0")
        options.log_severity_level = 3
        if optimised_path is not None:
            options.optimized_model_filepath = str(optimised_path)
        return options

    def _session(self, path: Path, candidate: OrtCandidate) -> Any:
        options = self._options(candidate)
        options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # already optimised
        return self.ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
