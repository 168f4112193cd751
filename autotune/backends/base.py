"""The Backend protocol every target implements, and the records it hands back: devices, artifacts, measurements.
A backend is generic in its candidate type; candidates and search spaces are ``autotune.search_space``'s.

A backend is a class. Its class attributes and class methods are what autotune knows of a target before it is set
up (its name, its words for devices and sizes, its command-line options, whether it is usable here); an instance is
the target set up from those options (the toolchain found, the devices it can see).

Every ModelSpec a backend is given carries the inputs of the file being tuned (``model.file_inputs()``, an
``autotune.inputs.ModelInputs``): the batch symbol and the axis of each input that carries it, the sizes of the
other symbols, and ``feed(batch)``. A backend sets the batch through that symbol's own name, fixes the other
symbols to their sizes, feeds ``feed(batch)`` (or files of it) to every measurement, and offers a batch knob of
{1} when the model has no batch symbol.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, runtime_checkable

import numpy as np

from autotune.models import ModelSpec
from autotune.scenarios import Scenario
from autotune.search_space import C, Candidate, SearchSpace  # Candidate: also named from here by the search


@dataclass(frozen=True, kw_only=True)
class Device:
    """One device a backend measures on: a card (QID), a GPU, or the host's CPU."""

    index: int
    name: str  # what kind of device it is: the SKU, the GPU or the CPU model
    size: int  # in the backend's size unit (NSPs, cores, ...)
    status: str = "Ready"
    details: dict[str, Any] = field(default_factory=dict)  # shown by ``autotune devices``

    @property
    def ready(self) -> bool:
        return self.status == "Ready"


@dataclass(frozen=True, kw_only=True)
class Artifact:
    """A compiled model: a file or directory the runtime loads, and how it was made."""

    path: Path
    command: list[str]
    log_path: Path
    compile_seconds: float
    batch_size: int


@dataclass(kw_only=True)
class Measurement:
    """Figures from one measurement, the scenario's own figure included; latencies in milliseconds.

    ``latency_samples_ms`` are per-inference round trips as the host saw them; ``service_samples_ms`` are the
    device's execution times of one batch. ``server_qps`` is the highest Poisson rate kept within the latency bound
    (0.0 when none was), ``multistream_p99_ms`` the p99 of 8-sample queries. ``estimated``: those scenario figures
    come from a queueing simulation over measured times, not from a run of the scenario itself. ``warnings``: the
    tool's own doubts about these figures (an unstable GPU compute time...), kept on the trial. ``host_load``: for a
    measurement on the host's CPUs, how much of them other processes took meanwhile (the search measures a disturbed
    one again). ``estimate_figures``: where a target measured a scenario it could only estimate before, the figures
    that estimate gave beside it (the same names: ``server_qps``, ``server_p99_ms``, ``multistream_p99_ms``).
    """

    samples_per_second: float
    duration_seconds: float
    batch_size: int
    executions: int | None = None
    latency_p50_ms: float | None = None
    latency_p90_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_samples_ms: list[float] = field(default_factory=list, repr=False)
    service_samples_ms: list[float] = field(default_factory=list, repr=False)
    estimated: bool = False
    loadgen: bool = False
    server_qps: float | None = None
    server_p99_ms: float | None = None
    multistream_p99_ms: float | None = None
    server_probes: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what the tool said of the figures' reliability
    host_load: dict[str, Any] | None = None  # other processes' use of the host's CPUs meanwhile (_host_load.py)
    estimate_figures: dict[str, float | None] | None = None  # beside a measured scenario: the old path's estimate
    command: list[str] = field(default_factory=list)
    log_path: Path | None = None

    def figures(self) -> dict[str, Any]:
        """The measured figures, JSON-ready (no sample lists, command or log path)."""
        data = asdict(self)
        for key in ("latency_samples_ms", "service_samples_ms", "command", "log_path"):
            data.pop(key)
        for key in ("host_load", "estimate_figures"):  # not measured on the host's CPUs; no estimate made beside
            if data[key] is None:
                data.pop(key)
        return data


@dataclass(frozen=True, kw_only=True)
class Target(Generic[C]):
    """What a backend chose for one study: the devices to measure on, the size tuned for, its space and baseline."""

    devices: list[Device]
    size: int
    sku: str
    space: SearchSpace[C]
    baseline: C | None
    baseline_label: str | None
    description: str  # one line for the run's header, in the backend's own words


@runtime_checkable
class Backend(Protocol[C]):
    """Everything the rest of autotune asks of a target."""

    name: ClassVar[str]  # the --backend name, stored on every study
    title: ClassVar[str]  # a few words: "Cloud AI 100", "ONNX Runtime on this CPU"
    priority: ClassVar[int]  # --backend auto tries lower numbers first
    device_word: ClassVar[str]  # what a device is called in messages: "QID", "GPU", "CPU"
    size_key: ClassVar[str]  # the study attribute and name suffix of the size tuned for: "nsp", "cores"
    size_unit: ClassVar[str]  # how that size is counted in text: "NSPs", "cores"
    knob_labels: ClassVar[Mapping[str, str]]  # short column names of knobs in reports
    export_formats: ClassVar[tuple[str, ...]]  # what ``autotune export --format`` offers for its studies
    estimated_scenarios: ClassVar[frozenset[str]]  # scenarios whose figure it estimates rather than runs
    compiles_ahead: ClassVar[bool]  # False: compiling would disturb measurements (the serial loop)
    measure_seconds: ClassVar[float]  # default length of a search measurement
    validate_seconds: ClassVar[float]  # default length of a validation measurement
    emulated: bool  # the toolchain is one of the project's test emulators: its figures are not hardware figures
    changes_numerics: ClassVar[bool]  # some knob changes the results (a precision hint): the accuracy guard runs

    @classmethod
    def add_options(cls, parser: argparse._ActionsContainer, command: str) -> None:
        """Add this backend's options to ``autotune COMMAND`` (``run``, ``bench`` or ``devices``)."""
        ...

    @classmethod
    def requested(cls, args: argparse.Namespace) -> bool:
        """Whether the user gave one of this backend's own options (``--backend auto`` then picks it)."""
        ...

    @classmethod
    def probe(cls, args: argparse.Namespace) -> str | None:
        """None when the backend can be set up here; otherwise why not, in a few words, with what to do."""
        ...

    @classmethod
    def from_options(cls, args: argparse.Namespace) -> Backend[C]:
        """The backend set up from the command line; raises AutotuneError saying what is missing."""
        ...

    def version(self) -> str:
        """The toolchain's version: part of every study's identity and compile-cache key."""
        ...

    def devices(self) -> list[Device]:
        """Every device the toolchain reports, ready or not."""
        ...

    def device_status(self, index: int) -> str | None:
        """What the device reports now (``Ready``, ``Error``, ``missing``), or None when nothing can be asked."""
        ...

    def target(self, *, model: ModelSpec, scenario: Scenario, devices: list[int] | None) -> Target[C]:
        """Choose the devices (``devices``, else the backend's default), the size to tune for, the search space (batch
        1 only when ``model`` has no batch symbol) and the baseline for one study; raises AutotuneError for devices
        that cannot be used."""
        ...

    def base_flags(self, model: ModelSpec) -> tuple[str, ...]:
        """Flags every compile of ``model`` carries, not searched (part of the study's identity)."""
        ...

    def compile(self, onnx_path: Path, model: ModelSpec, candidate: C, workdir: Path, *,
                cache_dir: Path | None = None) -> Artifact:
        """Compile ``onnx_path`` (in its folder, beside its external data files) for ``model``'s input shapes at the
        candidate's batch into ``workdir``; raises CompileFailure with the compiler's reason. ``cache_dir``: the
        compile cache's folder (None: no cache), where what several compiles share (a calibration profile, a model
        variant) is kept as an entry of its own (``CompileCache(root=cache_dir).get_or_compile``)."""
        ...

    def measure(self, artifact: Artifact, candidate: C, *, model: ModelSpec, scenario: Scenario | None,
                bound_ms: float | None, seconds: float, device: int, log_dir: Path) -> Measurement:
        """Measure for ``scenario`` (its figure measured or estimated), or plainly (throughput and latency) when it is
        None, feeding ``model``'s inputs; raises MeasureFailure, or DeviceFailure when the device is at fault."""
        ...

    def outputs(self, artifact: Artifact, candidate: C, *, model: ModelSpec, feed: dict[str, np.ndarray],
                device: int) -> dict[str, np.ndarray] | None:
        """The compiled candidate's outputs on ``feed`` (one batch), by output name; None when the toolchain cannot
        return them (a backend that sets ``changes_numerics`` must)."""
        ...

    def cancel(self) -> None:
        """Stop every compile and measurement running, and start none from now on."""
        ...

    def artifact_usable(self, path: Path) -> bool:
        """Whether a compiled artifact stored earlier is still whole on disk."""
        ...

    def preset_fields(self, candidate: C, artifact: Artifact, measurement: Measurement, *,
                      name: str) -> dict[str, Any]:
        """What this backend's presets carry beyond autotune's own fields: the runtime knobs by name, the command
        lines that reproduce the measurement (keys ending in ``_command``, in order; ``name`` names their output)
        and, for the ``cm`` format, ``cm_env``."""
        ...
