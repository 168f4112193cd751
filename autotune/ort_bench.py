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
from autotune.objective import MULTISTREAM_SAMPLES_PER_QUERY
from autotune.loadgen_driver import BatchingSUT, LoadGenResult, LoadGenRun, find_server_qps, run_loadgen

GRAPH_LEVELS = ("disable", "basic", "extended", "all")
SERVER_PROBES = 5
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

    def flag_string(self) -> str:
        """The session settings as one line (what a user sets in SessionOptions)."""
        threads = lambda n: "default" if n == 0 else str(n)  # noqa: E731
        return (f"graph_optimization_level={self.graph_level} batch_size={self.batch_size} "
                f"intra_op_num_threads={threads(self.intra_threads)} inter_op_num_threads={threads(self.inter_threads)} "
                f"execution_mode={self.execution_mode} allow_spinning={int(self.spinning)} instances={self.instances}")

    def describe(self) -> str:
        return (f"opt={self.graph_level} bs={self.batch_size} intra={self.intra_threads or 'dflt'} "
                f"inter={self.inter_threads or 'dflt'} {self.execution_mode[:3]} spin={int(self.spinning)} "
                f"inst={self.instances}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OrtCandidate:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True, kw_only=True)
class OrtSpace:
    """The ONNX Runtime search space on ``cores`` CPU cores; the untuned default session is the baseline."""

    cores: int
    scenario: str

    def domains(self) -> dict[str, list[Any]]:
        domains: dict[str, list[Any]] = {
            "graph_level": list(GRAPH_LEVELS), "intra_threads": list(range(1, self.cores + 1)),
            "inter_threads": list(range(1, self.cores + 1)), "execution_mode": list(EXECUTION_MODES),
            "spinning": [True, False]}
        if self.scenario != "singlestream":
            domains |= {"batch_size": [b for b in (1, 2, 4, 8, 16) if self.scenario != "multistream" or b <= 8],
                        "instances": list(range(1, self.cores + 1))}
        return domains

    def suggest(self, trial: Any) -> OrtCandidate:
        values = {name: (trial.suggest_int(name, domain[0], domain[-1]) if name.endswith(("threads", "instances"))
                         else trial.suggest_categorical(name, domain)) for name, domain in self.domains().items()}
        return OrtCandidate(**values)

    def params_for(self, candidate: OrtCandidate) -> dict[str, Any]:
        data = candidate.to_dict()
        data["intra_threads"] = data["intra_threads"] or self.cores
        data["inter_threads"] = data["inter_threads"] or 1
        return {k: v for k, v in data.items() if k in self.domains()}

    def violations(self, candidate: OrtCandidate) -> list[str]:
        if self.scenario == "singlestream" and (candidate.batch_size != 1 or candidate.instances != 1):
            return [f"singlestream runs one session at batch 1, not {candidate.instances} at batch "
                    f"{candidate.batch_size}"]
        return []

    def baseline(self) -> OrtCandidate:
        """ONNX Runtime's default session settings: what a user gets without tuning."""
        return OrtCandidate()

    def from_dict(self, data: dict[str, Any]) -> OrtCandidate:
        return OrtCandidate.from_dict(data)


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
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return CpuDevice(cores=cores, model_name=fields.get("model name") or platform.processor() or
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
        return self._measurement(self._sut_factory(artifact, candidate), candidate, run, log_dir)

    def measure_trial(self, artifact: Artifact, candidate: OrtCandidate, *, scenario: str, bound_ms: float | None,
                      seconds: float, device: int, log_dir: Path) -> Measurement:
        """Measure the scenario itself with LoadGen; expectations come from a quick timing of one batch.

        Server: the highest target QPS whose p99 stays within the bound, bracketed then bisected (a few probes).
        """
        make_sut = self._sut_factory(artifact, candidate)
        batch_s = self._batch_seconds(make_sut)
        rate = candidate.instances * candidate.batch_size / batch_s
        duration_ms = int(seconds * 1000)
        if scenario == "offline":
            run = LoadGenRun(scenario="offline", min_duration_ms=duration_ms, expected_qps=rate * 1.5)
        elif scenario == "singlestream":
            run = LoadGenRun(scenario="singlestream", min_duration_ms=duration_ms, min_query_count=32,
                             expected_latency_ms=batch_s * 1000)
        elif scenario == "multistream":
            rounds = -(-MULTISTREAM_SAMPLES_PER_QUERY // candidate.batch_size) / max(1, candidate.instances)
            run = LoadGenRun(scenario="multistream", min_duration_ms=duration_ms, min_query_count=32,
                             expected_latency_ms=max(1.0, rounds) * batch_s * 1000)
        else:
            return self._server(make_sut, candidate, rate=rate, bound_ms=bound_ms, seconds=seconds, log_dir=log_dir)
        return self._measurement(make_sut, candidate, run, log_dir)

    def _server(self, make_sut: Any, candidate: OrtCandidate, *, rate: float, bound_ms: float | None,
                seconds: float, log_dir: Path) -> Measurement:
        assert bound_ms is not None
        probe_ms = max(500, int(seconds * 1000 / SERVER_PROBES))

        def probe(qps: float) -> LoadGenResult:
            run = LoadGenRun(scenario="server", min_duration_ms=probe_ms, min_query_count=100, target_qps=qps,
                             latency_bound_ms=bound_ms)
            return self._run(make_sut, run, log_dir / f"server-{qps:.1f}qps")

        best, probes = find_server_qps(probe, start_qps=rate * 0.5, bound_ms=bound_ms, max_probes=SERVER_PROBES)
        shown = best or min(probes, key=lambda p: p.latency_p99_ms or float("inf"))
        return Measurement(
            samples_per_second=shown.samples_per_second, duration_seconds=len(probes) * probe_ms / 1000,
            batch_size=candidate.batch_size, executions=shown.query_count, latency_p50_ms=shown.latency_p50_ms,
            latency_p90_ms=shown.latency_p90_ms, latency_p99_ms=shown.latency_p99_ms, loadgen=True,
            server_qps=best.samples_per_second if best else 0.0,
            server_probes=[{"target_qps": float(p.detail.get("requested_server_target_qps", 0.0)),
                            "scheduled_qps": p.samples_per_second, "p99_ms": p.latency_p99_ms,
                            "constraints_met": p.constraints_met, "log_dir": str(p.log_dir)} for p in probes],
            command=[f"loadgen server, {len(probes)} probes"], log_path=log_dir)

    def _measurement(self, make_sut: Any, candidate: OrtCandidate, run: LoadGenRun, log_dir: Path) -> Measurement:
        result = self._run(make_sut, run, log_dir)
        return Measurement(samples_per_second=result.samples_per_second, duration_seconds=run.min_duration_ms / 1000,
                           batch_size=candidate.batch_size, executions=result.query_count,
                           latency_p50_ms=result.latency_p50_ms, latency_p90_ms=result.latency_p90_ms,
                           latency_p99_ms=result.latency_p99_ms, loadgen=True,
                           command=[f"loadgen {run.scenario}"], log_path=log_dir)

    @staticmethod
    def _run(make_sut: Any, run: LoadGenRun, log_dir: Path) -> LoadGenResult:
        try:
            return run_loadgen(make_sut(), run, sample_count=1024, log_dir=log_dir)
        except AutotuneError as exc:
            raise MeasureFailure(str(exc), log_path=log_dir) from None

    @staticmethod
    def _batch_seconds(make_sut: Any) -> float:
        """Time of one batch on one session after a warm-up run (the shorter of two): LoadGen's expectation."""
        sut = make_sut()
        sut.infer([0])
        times = []
        for _ in range(2):
            started = time.perf_counter()
            sut.infer([0])
            times.append(time.perf_counter() - started)
        return max(min(times), 1e-5)

    def _sut_factory(self, artifact: Artifact, candidate: OrtCandidate) -> Any:
        """A function making a fresh BatchingSUT over ``candidate.instances`` sessions, loaded once."""
        try:
            sessions = [self._session(artifact.path, candidate) for _ in range(candidate.instances)]
        except Exception as exc:
            raise MeasureFailure(f"onnxruntime cannot create a session: {str(exc).splitlines()[0]}") from None
        feeds = [self.input_feed(s, candidate.batch_size) for s in sessions]

        def make_sut() -> BatchingSUT:
            free = list(range(len(sessions)))
            lock, local = threading.Lock(), threading.local()

            def infer(indices: list[int]) -> None:
                if not hasattr(local, "slot"):
                    with lock:
                        local.slot = free.pop() if free else 0
                sessions[local.slot].run(None, feeds[local.slot])

            return BatchingSUT(infer, batch_size=candidate.batch_size, instances=candidate.instances)
        return make_sut

    def input_feed(self, session: Any, batch_size: int) -> dict[str, np.ndarray]:
        """Random inputs of one batch; a dynamic dimension other than the batch needs ``--input-shape``."""
        feed = {}
        inputs = {spec.name: spec for spec in session.get_inputs()}
        for name, shape in self.input_shapes.items():
            if name not in inputs:
                raise AutotuneError(f"--input-shape names {name!r}, which is not an input of the model "
                                    f"(inputs: {', '.join(inputs)})")
            if len(shape) != len(inputs[name].shape):
                raise AutotuneError(f"--input-shape {name}={','.join(map(str, shape))} has {len(shape)} dimensions; "
                                    f"the model's input has {len(inputs[name].shape)} ({inputs[name].shape})")
            for given, declared in zip(shape[1:], inputs[name].shape[1:]):
                if isinstance(declared, int) and declared > 0 and given != declared:
                    raise AutotuneError(f"--input-shape {name}={','.join(map(str, shape))} does not match the "
                                        f"model's fixed shape {inputs[name].shape}")
        for spec in inputs.values():
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
