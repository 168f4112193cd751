"""The OpenVINO target on this host's CPU: compile = read the ONNX file (at int8, the QDQ model of the candidate's
recipe), reshape it to the batch, compile it with the candidate's properties and export the blob; measure = MLPerf
LoadGen driving an AsyncInferQueue of requests in flight.
"""

from __future__ import annotations

import argparse
import shlex
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from autotune.backends import _int8
from autotune.backends._cpu import OnHostCpu, bench_line, cpu_device
from autotune.backends._loadgen_measure import Workload, measure_scenario
from autotune.backends.base import Artifact, Measurement, Target
from autotune.backends.openvino import runtime
from autotune.backends.openvino.cpu import OvCpu, read_cpu
from autotune.backends.openvino.presets import preset_fields
from autotune.backends.openvino.space import OvCandidate, OvSpace, baseline_hint
from autotune.errors import AutotuneError, MeasureFailure
from autotune.models import ModelSpec
from autotune.scenarios import Scenario

INSTALL = "pip install 'autotune[openvino]' (or pip install openvino)"


class OpenVinoBackend(OnHostCpu):
    """OpenVINO on the host's CPU; every figure is measured with MLPerf LoadGen."""

    name = "openvino"
    title = "OpenVINO on this CPU"
    priority = 95  # after ONNX Runtime: on a CPU, --backend auto keeps ONNX Runtime (bench/RESULTS.md)
    device_word = "CPU"
    size_key = "cores"
    size_unit = "cores"
    knob_labels = {"hint": "hint", "streams": "streams", "threads": "threads", "pinning": "pinning",
                   "hyper_threading": "HT", "core_type": "core type", "precision": "precision",
                   "batch_size": "batch", "request_factor": "requests x", "calibration_method": "calibration",
                   "per_channel": "per-channel", "float_layers": "float layers"}
    export_formats = ("yaml", "json", "cmdline")
    estimated_scenarios: frozenset[str] = frozenset()
    compiles_ahead = False  # compiling on the cores being measured would disturb the figures
    measure_seconds = 3.0
    validate_seconds = 5.0
    emulated = False
    changes_numerics = True  # INFERENCE_PRECISION_HINT (bf16, f16) and int8 change the outputs

    @classmethod
    def add_options(cls, parser: argparse._ActionsContainer, command: str) -> None:
        """None of its own: the model options (--input-shape, --batch-dim, --inputs) are every backend's."""

    @classmethod
    def requested(cls, args: argparse.Namespace) -> bool:
        return False

    @classmethod
    def probe(cls, args: argparse.Namespace) -> str | None:
        try:
            import openvino  # noqa: F401
        except ImportError:
            return f"OpenVINO is not installed ({INSTALL})"
        return None

    @classmethod
    def from_options(cls, args: argparse.Namespace) -> OpenVinoBackend:
        return cls()

    def __init__(self, *, cpu: OvCpu | None = None) -> None:
        """``cpu``: the CPU as OpenVINO sees it, read from OpenVINO unless given (tests give other capabilities)."""
        try:
            import openvino
            import openvino.frontend  # noqa: F401
        except ImportError:
            raise AutotuneError(f"the openvino backend needs OpenVINO, which is not installed: {INSTALL}") from None
        self.ov = openvino
        self.core = openvino.Core()
        self.cpu = cpu or read_cpu(self.core)
        self.isa_flags = cpu_device().isa_flags
        self._lock = threading.Lock()
        self._loaded: tuple[tuple[str, tuple[Any, ...]], runtime.Compiled] | None = None

    def version(self) -> str:
        return f"openvino {self.ov.__version__} on {self.cpu.name} ({self.cpu.cores} cores)"

    def target(self, *, model: ModelSpec, scenario: Scenario, devices: list[int] | None) -> Target:
        self.check_devices(devices)
        space = OvSpace(cpu=self.cpu, scenario=scenario.name,
                        dynamic_batch=model.file_inputs().batch_symbol is not None, int8=model.calibration is not None)
        hint = baseline_hint(scenario.name)
        return Target(devices=[self.cpu.as_device()], size=self.cpu.cores, sku=self.cpu.name, space=space,
                      baseline=space.baseline(),
                      baseline_label=f"OpenVINO's {hint} hint with its optimal number of requests",
                      description=self.cpu.describe())

    def compile(self, onnx_path: Path, model: ModelSpec, candidate: OvCandidate, workdir: Path, *,
                cache_dir: Path | None = None) -> Artifact:
        """The blob OpenVINO exports after compiling the model at the candidate's batch with its properties, and
        ``compiled.json`` (the shapes, the properties, what OpenVINO chose) beside it; at int8 the model compiled is
        the QDQ model of the candidate's recipe (``_int8.build``), kept beside them. Its command is the bench line of
        those knobs (the requests in flight are searched on the compiled model)."""
        workdir.mkdir(parents=True, exist_ok=True)
        out = Path(tempfile.mkdtemp(prefix="ov-", dir=workdir))
        shapes = runtime.input_shapes(model.file_inputs(), candidate.batch_size)
        properties = candidate.properties()
        started = time.monotonic()
        source, recipe = onnx_path, []
        if candidate.precision == _int8.INT8:
            recipe = [_int8.build(onnx_path, model, candidate, out, isa_flags=self.isa_flags).describe()]
            source = out / _int8.QDQ_FILE
        runtime.compile_to(self.ov, self.core, source, shapes, properties, out)
        compile_model = ["openvino", "compile_model", source.name, "CPU", *(f"{k}={v}" for k, v in properties.items()),
                         f"reshape={runtime.shapes_text(shapes)}", *recipe]
        (out / "compile.log").write_text(shlex.join(compile_model) + "\n")
        command = self.bench_command(onnx_path, model, replace(candidate, request_factor=1).flag_string())
        return Artifact(path=out, command=command, log_path=out / "compile.log",
                        compile_seconds=time.monotonic() - started, batch_size=candidate.batch_size)

    def measure(self, artifact: Artifact, candidate: OvCandidate, *, model: ModelSpec, scenario: Scenario | None,
                bound_ms: float | None, seconds: float, device: int, log_dir: Path) -> Measurement:
        """Run the scenario itself with LoadGen (offline when it is None) with ``request_factor`` times OpenVINO's
        optimal number of requests in flight, each holding ``model``'s feed of one batch. Its command is the bench
        line that measures the candidate again."""
        compiled = self._load(artifact, candidate)
        feed = model.file_inputs().feed(candidate.batch_size)
        batch_s = runtime.batch_seconds(compiled, feed, candidate.batch_size)
        requests = candidate.request_factor * compiled.optimal_requests
        work = Workload(make_sut=lambda: runtime.async_sut(self.ov, compiled, feed, requests=requests,
                                                           batch=candidate.batch_size),
                        batch_size=candidate.batch_size, concurrency=compiled.streams, batch_seconds=batch_s,
                        sut=f"AsyncInferQueue of {requests} requests", cores=min(self.cpu.cores, max(
                            1, int(compiled.read_back.get("INFERENCE_NUM_THREADS") or self.cpu.cores))))
        measurement = measure_scenario(work, scenario=None if scenario is None else scenario.name, bound_ms=bound_ms,
                                       seconds=seconds, log_dir=log_dir)
        measurement.command = bench_line(artifact, candidate, seconds=seconds,
                                         scenario=None if scenario is None else scenario.name, bound_ms=bound_ms)
        return measurement

    def outputs(self, artifact: Artifact, candidate: OvCandidate, *, model: ModelSpec, feed: dict[str, Any],
                device: int) -> dict[str, Any] | None:
        """One inference of the compiled candidate (its precision included) on ``feed``."""
        compiled = self._load(artifact, candidate)
        try:
            return runtime.infer(compiled, feed)
        except Exception as exc:  # OpenVINO raises RuntimeError for every kind of failure
            raise MeasureFailure(f"OpenVINO cannot run the model: {runtime.reason(exc)}") from None

    def artifact_usable(self, path: Path) -> bool:
        return (path / runtime.BLOB).is_file() and (path / runtime.INFO).is_file()

    def preset_fields(self, candidate: OvCandidate, artifact: Artifact, measurement: Measurement, *,
                      name: str) -> dict[str, Any]:
        """The bench line that measures the candidate again, the properties compiled with, what OpenVINO chose
        (``compiled``: optimal requests, streams, threads, precision, devices), the requests in flight, and a
        benchmark_app line to cross-check them."""
        return {"bench_command": shlex.join(bench_line(artifact, candidate)),
                **preset_fields(candidate, artifact.path / runtime.INFO, name=name)}

    def _load(self, artifact: Artifact, candidate: OvCandidate) -> runtime.Compiled:
        """The artifact imported with the candidate's properties; the last one is kept for the next measurement."""
        key = (str(artifact.path), candidate.compile_key())
        if not self.artifact_usable(artifact.path):
            raise MeasureFailure(f"the compiled model is gone: {artifact.path / runtime.BLOB}")
        with self._lock:
            if self._loaded is None or self._loaded[0] != key:
                self._loaded = None  # free the previous model before importing the next
                self._loaded = (key, runtime.load(self.core, artifact.path, candidate.properties()))
            return self._loaded[1]
