"""The ONNX Runtime target on this host's CPU: compile = an optimised model file per (graph level, batch, precision
and int8 recipe), quantized first at int8; measure = MLPerf LoadGen running the scenario itself against sessions of
that file."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from autotune.backends import _int8
from autotune.backends._cpu import OnHostCpu, bench_line, cpu_device
from autotune.backends._loadgen import BatchingSUT, LoadGenRun
from autotune.backends._loadgen_measure import Workload, measure_scenario, run_once
from autotune.backends.base import Artifact, Measurement, Target
from autotune.backends.ort.space import OrtCandidate, OrtSpace
from autotune.errors import AutotuneError, CompileFailure, MeasureFailure
from autotune.inputs import ModelInputs
from autotune.models import ModelSpec, external_data_files
from autotune.scenarios import Scenario

OPTIMISED = "model.opt.onnx"
REASON_CHARS = 300  # onnxruntime's messages carry source paths and template names: keep their start


class OrtBackend(OnHostCpu):
    """ONNX Runtime on the host's CPU; every figure is measured with MLPerf LoadGen."""

    name = "ort"
    title = "ONNX Runtime on this CPU"
    priority = 90
    device_word = "CPU"
    size_key = "cores"
    size_unit = "cores"
    knob_labels = {"batch_size": "batch", "intra_threads": "intra", "inter_threads": "inter",
                   "execution_mode": "mode", "graph_level": "graph opt", "instances": "sessions",
                   "precision": "precision", "calibration_method": "calibration", "per_channel": "per-channel",
                   "float_layers": "float layers"}
    export_formats = ("yaml", "json", "cmdline")
    estimated_scenarios: frozenset[str] = frozenset()
    compiles_ahead = False  # compiling on the cores being measured would disturb the figures
    measure_seconds = 3.0
    validate_seconds = 5.0
    emulated = False
    # session settings do not change the results; precision int8 does, offered only with a calibration set, which
    # comes with the task's accuracy set: that study judges every trial by it
    changes_numerics = False

    @classmethod
    def add_options(cls, parser: argparse._ActionsContainer, command: str) -> None:
        """None of its own: the model options (--input-shape, --batch-dim, --inputs) are every backend's."""

    @classmethod
    def requested(cls, args: argparse.Namespace) -> bool:
        return False

    @classmethod
    def probe(cls, args: argparse.Namespace) -> str | None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "onnxruntime is not installed (pip install onnxruntime)"
        return None

    @classmethod
    def from_options(cls, args: argparse.Namespace) -> OrtBackend:
        return cls()

    def __init__(self) -> None:
        import onnxruntime

        self.ort = onnxruntime
        self.cpu = cpu_device()
        self.isa_flags = self.cpu.isa_flags
        self._outputs_session: tuple[tuple[str, tuple[Any, ...]], Any] | None = None

    def version(self) -> str:
        return f"onnxruntime {self.ort.__version__} on {self.cpu.model_name} ({self.cpu.cores} cores)"

    def target(self, *, model: ModelSpec, scenario: Scenario, devices: list[int] | None) -> Target:
        self.check_devices(devices)
        space = OrtSpace(cores=self.cpu.cores, scenario=scenario.name,
                         dynamic_batch=model.file_inputs().batch_symbol is not None, int8=model.calibration is not None)
        return Target(devices=[self.cpu.as_device()], size=self.cpu.cores, sku=self.cpu.model_name, space=space,
                      baseline=space.baseline(), baseline_label="ONNX Runtime's default session settings",
                      description=self.cpu.describe())

    def compile(self, onnx_path: Path, model: ModelSpec, candidate: OrtCandidate, workdir: Path, *,
                cache_dir: Path | None = None) -> Artifact:
        """Save the graph optimised at ``graph_level`` with every symbol fixed (the batch at the candidate's); the
        file, with its external data file beside it when the model has one, is reused by every session. At int8 the
        model optimised is the QDQ model of the candidate's recipe (``_int8.build``), kept beside it."""
        workdir.mkdir(parents=True, exist_ok=True)
        out = Path(tempfile.mkdtemp(prefix="ort-", dir=workdir))
        started = time.monotonic()
        log = f"onnxruntime graph_level={candidate.graph_level} batch={candidate.batch_size}"
        source = onnx_path
        if candidate.precision == _int8.INT8:
            recipe = _int8.build(onnx_path, model, candidate, out, isa_flags=self.isa_flags)
            source, log = out / _int8.QDQ_FILE, f"{log} {recipe.describe()}"
        (out / "compile.log").write_text(log + "\n")
        optimised = out / OPTIMISED
        options = self._options(candidate, model.file_inputs(), optimised_path=optimised)
        if _has_external_data(source):
            options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                             f"{OPTIMISED}.data")
        try:
            self.ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise CompileFailure(f"onnxruntime cannot load {source.name}: {_reason(exc)}") from None
        compiled = replace(candidate, intra_threads=0, inter_threads=0, execution_mode="sequential", spinning=True,
                           instances=1)  # its compiled knobs, the session settings at their defaults
        return Artifact(path=optimised, command=self.bench_command(onnx_path, model, compiled.flag_string()),
                        log_path=out / "compile.log", compile_seconds=time.monotonic() - started,
                        batch_size=candidate.batch_size)

    def measure(self, artifact: Artifact, candidate: OrtCandidate, *, model: ModelSpec, scenario: Scenario | None,
                bound_ms: float | None, seconds: float, device: int, log_dir: Path) -> Measurement:
        """Run the scenario itself with LoadGen (offline when it is None) on ``model``'s feed of one batch;
        expectations come from a quick timing of one batch. Server: the highest target QPS whose p99 stays within
        the bound, bracketed then bisected. Its command is the bench line that measures the candidate again."""
        make_sut = self._sut_factory(artifact, candidate, model.file_inputs())
        work = Workload(make_sut=make_sut, batch_size=candidate.batch_size, concurrency=candidate.instances,
                        batch_seconds=self._batch_seconds(make_sut), cores=self._cores_used(candidate))
        measurement = measure_scenario(work, scenario=None if scenario is None else scenario.name, bound_ms=bound_ms,
                                       seconds=seconds, log_dir=log_dir)
        measurement.command = bench_line(artifact, candidate, seconds=seconds,
                                         scenario=None if scenario is None else scenario.name, bound_ms=bound_ms)
        return measurement

    def outputs(self, artifact: Artifact, candidate: OrtCandidate, *, model: ModelSpec, feed: dict[str, Any],
                device: int) -> dict[str, Any] | None:
        """One run of the optimised model on ``feed``; the session is kept for the next batch of the same artifact."""
        key = (str(artifact.path), candidate.compile_key())
        try:
            if self._outputs_session is None or self._outputs_session[0] != key:
                self._outputs_session = None  # free the previous session first
                self._outputs_session = (key, self._session(artifact.path, candidate, model.file_inputs()))
            session = self._outputs_session[1]
            names = [o.name for o in session.get_outputs()]
            return dict(zip(names, session.run(names, feed)))
        except Exception as exc:  # onnxruntime raises its own types
            raise MeasureFailure(f"onnxruntime cannot run the model: {_reason(exc)}") from None

    def artifact_usable(self, path: Path) -> bool:
        return path.is_file()

    def preset_fields(self, candidate: OrtCandidate, artifact: Artifact, measurement: Measurement, *,
                      name: str) -> dict[str, Any]:
        """The bench line that measures the settings again, the session settings by name, and at int8 the recipe
        built (the layers kept in float, the calibration set's SHA-256)."""
        recipe = artifact.path.parent / _int8.RECIPE_FILE
        return {"bench_command": shlex.join(bench_line(artifact, candidate)), "session_options": candidate.to_dict()} | (
            {"int8_recipe": json.loads(recipe.read_text())} if recipe.is_file() else {})

    def run_once(self, make_sut: Any, candidate: OrtCandidate, run: LoadGenRun, log_dir: Path) -> Measurement:
        """One LoadGen run of ``run`` against the SUT ``make_sut`` makes."""
        return run_once(make_sut, run, batch_size=candidate.batch_size, log_dir=log_dir,
                        cores=self._cores_used(candidate))

    def _cores_used(self, candidate: OrtCandidate) -> int:
        """The host's cores a measurement means to use: its sessions' threads (by default one per core each)."""
        return min(self.cpu.cores, candidate.instances * (candidate.intra_threads or self.cpu.cores))

    @staticmethod
    def _batch_seconds(make_sut: Any) -> float:
        """Time of one batch on one session after a warm-up run (the shorter of two): LoadGen's expectation."""
        sut = make_sut()
        try:
            sut.infer([0])
        except Exception as exc:  # the model refuses the feed: a batch it cannot take, a value it rejects
            raise MeasureFailure(f"onnxruntime cannot run a batch of {sut.batch_size}: {_reason(exc)}") from None
        times = []
        for _ in range(2):
            started = time.perf_counter()
            sut.infer([0])
            times.append(time.perf_counter() - started)
        return max(min(times), 1e-5)

    def _sut_factory(self, artifact: Artifact, candidate: OrtCandidate, inputs: ModelInputs) -> Any:
        """A function making a fresh BatchingSUT over ``candidate.instances`` sessions, loaded once, each fed one
        batch of ``inputs``."""
        try:
            sessions = [self._session(artifact.path, candidate, inputs) for _ in range(candidate.instances)]
        except Exception as exc:
            raise MeasureFailure(f"onnxruntime cannot create a session: {_reason(exc)}") from None
        feed = inputs.feed(candidate.batch_size)

        def make_sut() -> BatchingSUT:
            free = list(range(len(sessions)))
            lock, local = threading.Lock(), threading.local()

            def infer(indices: list[int]) -> None:
                if not hasattr(local, "slot"):
                    with lock:
                        local.slot = free.pop() if free else 0
                sessions[local.slot].run(None, feed)

            return BatchingSUT(infer, batch_size=candidate.batch_size, instances=candidate.instances)
        return make_sut

    def _options(self, candidate: OrtCandidate, inputs: ModelInputs, *, optimised_path: Path | None = None) -> Any:
        """Session options of ``candidate``; the batch symbol at its batch, the other symbols at their sizes."""
        ort = self.ort
        options = ort.SessionOptions()
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[candidate.graph_level]
        if inputs.batch_symbol is not None:
            options.add_free_dimension_override_by_name(inputs.batch_symbol, candidate.batch_size)
        for symbol, size in inputs.symbols.items():
            options.add_free_dimension_override_by_name(symbol, size)
        options.intra_op_num_threads = candidate.intra_threads
        options.inter_op_num_threads = candidate.inter_threads
        options.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if candidate.execution_mode == "parallel"
                                  else ort.ExecutionMode.ORT_SEQUENTIAL)
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if candidate.spinning else "0")
        options.log_severity_level = 4  # its errors reach the user as the trial's reason, on one line
        if optimised_path is not None:
            options.optimized_model_filepath = str(optimised_path)
        return options

    def _session(self, path: Path, candidate: OrtCandidate, inputs: ModelInputs) -> Any:
        options = self._options(candidate, inputs)
        options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # already optimised
        return self.ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _has_external_data(path: Path) -> bool:
    try:
        return bool(external_data_files(path))
    except AutotuneError:  # not a model onnx can read: onnxruntime says why when it loads it
        return False


def _reason(exc: Exception) -> str:
    """onnxruntime's message: its first line, from its status message on, without the source location and the
    check that failed (``/onnxruntime_src/...h:61 Function(...) x == 0 was false.``)."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    message = line.rpartition("Status Message: ")[2]
    return re.sub(r"^/\S+:\d+ .*? was false\. ", "", message)[:REASON_CHARS]
