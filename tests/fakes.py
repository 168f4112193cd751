"""An in-memory target for tests: a Backend with a known performance surface, no toolchain and no subprocess.

Its compile writes one small file (the compile cache renames what a compile wrote); everything else is computed.
Failures can be planted: a compile level that never compiles, devices that report errors, slow compiles.
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from autotune.backends.base import Artifact, Device, Measurement, Target
from autotune.errors import AutotuneError, CompileFailure, DeviceFailure, MeasureFailure
from autotune.models import ModelSpec
from autotune.scenarios import MULTISTREAM_SAMPLES_PER_QUERY, Scenario
from autotune.search_space import Candidate, Knob, Move, SearchSpace

LEVELS = (1, 2, 3, 4)
BATCHES = (1, 2, 4, 8)
SLOTS = 16


@dataclass(frozen=True, kw_only=True)
class FakeCandidate(Candidate):
    """``level`` and ``batch_size`` are compiled in; ``streams`` is a runtime knob."""

    level: int = 1
    batch_size: int = 1
    streams: int = 1

    @property
    def concurrency(self) -> int:
        return self.streams

    def compile_key(self) -> tuple[Any, ...]:
        return (self.level, self.batch_size)

    def flag_string(self) -> str:
        return f"level={self.level} batch={self.batch_size} streams={self.streams}"

    def describe(self) -> str:
        return self.flag_string()


@dataclass(frozen=True, kw_only=True)
class FakeSpace(SearchSpace[FakeCandidate]):
    """Level and batch are compiled in; streams are searched on the compiled model (more while it helps)."""

    candidate_type = FakeCandidate
    scenario: str
    dynamic_batch: bool = True

    def knobs(self) -> list[Knob]:
        if self.scenario == "singlestream":
            return [Knob(name="level", values=LEVELS, draw="int")]
        return [Knob(name="level", values=LEVELS, draw="int"), Knob(name="batch_size", values=self._batches()),
                Knob(name="streams", values=(1, 2, 3, 4), compiled=False)]

    def _batches(self) -> tuple[int, ...]:
        return BATCHES if self.dynamic_batch else (1,)

    def runtime_moves(self) -> list[Move[FakeCandidate]]:
        return [Move("streams+", lambda c: replace(c, streams=c.streams + 1)
                     if c.streams < 4 and c.batch_size * (c.streams + 1) <= SLOTS else None, repeat=True)]

    def starts(self) -> list[FakeCandidate]:
        return [FakeCandidate(level=4), FakeCandidate(level=2, batch_size=8)]

    def lightest(self, candidate: FakeCandidate) -> FakeCandidate | None:
        return None if candidate.batch_size == 1 else FakeCandidate(level=candidate.level, batch_size=1)

    def violations(self, candidate: FakeCandidate) -> list[str]:
        if candidate.batch_size * candidate.streams > SLOTS:
            return [f"batch {candidate.batch_size} x {candidate.streams} streams needs more than {SLOTS} slots"]
        if candidate.batch_size not in self._batches():
            return [f"batch {candidate.batch_size}: the model has no batch symbol"]
        return []

    def parse(self, text: str, *, options: Mapping[str, Any] | None = None) -> FakeCandidate:
        try:
            values = {k: int(v) for k, _, v in (token.partition("=") for token in text.split())}
        except ValueError:
            raise AutotuneError(f"malformed fake settings {text!r}") from None
        values["batch_size"] = values.pop("batch", 1)
        return FakeCandidate(**values)


@dataclass
class FakeLog:
    """What a FakeBackend was asked to do."""

    compiles: list[tuple[Any, ...]] = field(default_factory=list)
    measurements: list[tuple[int, tuple[Any, ...]]] = field(default_factory=list)
    outputs: list[tuple[Any, ...]] = field(default_factory=list)  # the compile key of each feed run for outputs
    in_flight: int = 0
    most_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeBackend:
    """A target whose best setting is level 3, batch 4, 2 streams; level ``fail_level`` never compiles, nor does a
    batch above ``max_batch`` (out of memory)."""

    name = "fake"
    title = "an in-memory test target"
    priority = 50
    device_word = "slot"
    size_key = "slots"
    size_unit = "slots"
    knob_labels = {"streams": "str.", "batch_size": "batch"}
    export_formats = ("yaml", "json", "cmdline")
    estimated_scenarios: frozenset[str] = frozenset()
    compiles_ahead = True
    measure_seconds = 0.1
    validate_seconds = 0.1
    emulated = True
    changes_numerics = True  # level 4 is "lossy": its outputs are negated (their top-1 lost)
    @classmethod
    def add_options(cls, parser: argparse._ActionsContainer, command: str) -> None:
        if command == "run":
            parser.add_argument("--fake-fail-level", type=int, help="a level the fake never compiles")

    @classmethod
    def requested(cls, args: argparse.Namespace) -> bool:
        return getattr(args, "fake_fail_level", None) is not None

    @classmethod
    def probe(cls, args: argparse.Namespace) -> str | None:
        return "a test target: only with --backend fake"

    @classmethod
    def from_options(cls, args: argparse.Namespace) -> FakeBackend:
        return cls(fail_level=getattr(args, "fake_fail_level", None))

    def __init__(self, *, devices: int = 1, fail_level: int | None = None, compile_seconds: float = 0.0,
                 measure_seconds: float = 0.0, statuses: dict[int, str] | None = None,
                 surface: Callable[[FakeCandidate], float] | None = None, noise: float = 0.0, seed: int = 0,
                 max_batch: int | None = None) -> None:
        """``surface``: samples/s of a candidate (default ``throughput``); ``noise``: the relative spread of a
        measurement (log-normal, seeded)."""
        self.surface = surface or throughput
        self.noise = noise
        self.rng = random.Random(seed)
        self.n_devices = devices
        self.fail_level = fail_level
        self.max_batch = max_batch
        self.compile_s = compile_seconds
        self.measure_s = measure_seconds
        self.statuses = statuses if statuses is not None else {}
        self.cancelled = False
        self.log = FakeLog()
        self.sessions: dict[str, Any] = {}

    def version(self) -> str:
        return "fake 1.0"

    def devices(self) -> list[Device]:
        return [Device(index=i, name="fake slot card", size=SLOTS, status=self.statuses.get(i, "Ready"))
                for i in range(self.n_devices)]

    def device_status(self, index: int) -> str | None:
        return self.statuses.get(index, "Ready")

    def target(self, *, model: ModelSpec, scenario: Scenario, devices: list[int] | None) -> Target:
        """A spec without inputs is taken for a model with a batch: the search tests give the fake no file."""
        chosen = [d for d in self.devices() if d.ready and (not devices or d.index in devices)]
        if not chosen:
            raise AutotuneError("no ready fake slot")
        dynamic = model.inputs is None or model.inputs.batch_symbol is not None
        return Target(devices=chosen, size=SLOTS, sku="fake slot card",
                      space=FakeSpace(scenario=scenario.name, dynamic_batch=dynamic), baseline=FakeCandidate(),
                      baseline_label="the fake's defaults", description="fake slots")

    def base_flags(self, model: ModelSpec) -> tuple[str, ...]:
        return ()

    def compile(self, onnx_path: Path, model: ModelSpec, candidate: FakeCandidate, workdir: Path, *,
                cache_dir: Path | None = None) -> Artifact:
        time.sleep(self.compile_s)
        if candidate.level == self.fail_level:
            raise CompileFailure(f"level {candidate.level} does not compile")
        if self.max_batch is not None and candidate.batch_size > self.max_batch:
            raise CompileFailure(f"batch {candidate.batch_size} does not fit in memory")
        self.log.compiles.append(candidate.compile_key())
        workdir.mkdir(parents=True, exist_ok=True)
        # a fresh folder per compile, as the real backends make: two compiles of the same flags (no compile cache,
        # compiles ahead) must not write one file while the other's measurement reads it
        out = Path(tempfile.mkdtemp(prefix="fake-", dir=workdir))
        path = out / f"model-l{candidate.level}-b{candidate.batch_size}.fake"
        path.write_text(str(onnx_path))  # what outputs() runs
        return Artifact(path=path, command=["fake-compile", candidate.flag_string()], log_path=workdir / "log",
                        compile_seconds=self.compile_s, batch_size=candidate.batch_size)

    def measure(self, artifact: Artifact, candidate: FakeCandidate, *, model: ModelSpec, scenario: Scenario | None,
                bound_ms: float | None, seconds: float, device: int, log_dir: Path) -> Measurement:
        if self.statuses.get(device, "Ready") != "Ready":
            raise DeviceFailure(f"slot {device} is {self.statuses[device]}")
        if not artifact.path.is_file():
            raise MeasureFailure(f"cannot load {artifact.path.name}: no such file")
        with self.log.lock:
            self.log.in_flight += 1
            self.log.most_in_flight = max(self.log.most_in_flight, self.log.in_flight)
            self.log.measurements.append((device, candidate.compile_key()))
        try:
            time.sleep(self.measure_s)
        finally:
            with self.log.lock:
                self.log.in_flight -= 1
        rate = self.surface(candidate) * math.exp(self.rng.gauss(0.0, self.noise) if self.noise else 0.0)
        batch_ms = candidate.batch_size * candidate.streams * 1000.0 / rate
        m = Measurement(samples_per_second=rate, duration_seconds=seconds, batch_size=candidate.batch_size,
                        latency_p50_ms=batch_ms, latency_p90_ms=batch_ms * 1.1, latency_p99_ms=batch_ms * 1.3,
                        command=["fake-run", f"--device={device}", candidate.flag_string()], log_path=log_dir)
        name = scenario.name if scenario else None
        if name == "server":
            p99 = batch_ms * 2
            m.server_qps, m.server_p99_ms = (rate * 0.8, p99) if bound_ms is None or p99 <= bound_ms else (0.0, p99)
        elif name == "multistream":
            m.multistream_p99_ms = batch_ms * -(-MULTISTREAM_SAMPLES_PER_QUERY // candidate.batch_size)
        return m

    def outputs(self, artifact: Artifact, candidate: FakeCandidate, *, model: ModelSpec, feed: dict[str, Any],
                device: int) -> dict[str, Any] | None:
        """The model's own outputs (ONNX Runtime, one session per model file), negated at level 4."""
        import onnxruntime

        if self.statuses.get(device, "Ready") != "Ready":
            raise DeviceFailure(f"slot {device} is {self.statuses[device]}")
        if not artifact.path.is_file():  # as the real backends say it
            raise MeasureFailure(f"cannot load {artifact.path.name}: no such file")
        self.log.outputs.append(candidate.compile_key())
        source = artifact.path.read_text()
        if source not in self.sessions:
            self.sessions[source] = onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])
        session = self.sessions[source]
        names = [o.name for o in session.get_outputs()]
        scale = -1.0 if candidate.level == 4 else 1.0
        return {name: value * scale for name, value in zip(names, session.run(names, feed))}

    def cancel(self) -> None:
        self.cancelled = True

    def artifact_usable(self, path: Path) -> bool:
        return path.is_file()

    def preset_fields(self, candidate: FakeCandidate, artifact: Artifact, measurement: Measurement, *,
                      name: str) -> dict[str, Any]:
        return {"streams": candidate.streams, "fake_run_command": f"fake-run --out {name} {candidate.flag_string()}"}


def throughput(candidate: FakeCandidate) -> float:
    """The fake's surface: samples/s, highest at level 3, batch 4, 2 streams."""
    level = {1: 0.5, 2: 0.8, 3: 1.0, 4: 0.7}[candidate.level]
    batch = {1: 0.4, 2: 0.7, 4: 1.0, 8: 0.9}[candidate.batch_size]
    streams = {1: 0.7, 2: 1.0, 3: 0.9, 4: 0.8}[candidate.streams]
    return 1000.0 * level * batch * streams
