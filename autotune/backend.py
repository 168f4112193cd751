"""What every backend shares: the artifact it compiles, the measurement it returns, and its failures."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


class AutotuneError(Exception):
    """An error the user can act on: the CLI prints its message on one line and exits non-zero."""


class TrialFailure(AutotuneError):
    """A candidate that could not be compiled or run: information for the search, not noise."""

    stage = "unknown"

    def __init__(self, reason: str, *, log_path: Path | None = None, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.log_path = log_path
        self.retryable = retryable  # says nothing about the candidate (a time-out): never cached as infeasible

    def __str__(self) -> str:
        where = f" (log: {self.log_path})" if self.log_path else ""
        return f"{self.stage} failed: {self.reason}{where}"


class CompileFailure(TrialFailure):
    """The compiler refused the candidate, crashed or hung."""

    stage = "compile"


class MeasureFailure(TrialFailure):
    """The compiled artifact could not be activated or run on the device."""

    stage = "measure"


class DeviceFailure(MeasureFailure):
    """The device itself is unusable (not ready, gone): no candidate can be measured, so the run stops."""

    stage = "device"


@dataclass(frozen=True, kw_only=True)
class Artifact:
    """A compiled model: a directory the runner can load, and how it was made."""

    path: Path
    command: list[str]
    log_path: Path
    compile_seconds: float
    batch_size: int
    cores: int


@dataclass(kw_only=True)
class Measurement:
    """Figures from one measurement run; latencies in milliseconds.

    ``latency_samples_ms`` are per-inference round trips as the host saw them; ``service_samples_ms`` are the
    device's execution times of one batch (what a queueing model needs). ``loadgen`` runs measured the scenario
    itself: their latencies are LoadGen's (per query for multistream) and ``server_qps`` is the highest target QPS
    a Server run kept within the latency bound (0.0 when none did).
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
    server_probes: list[dict[str, Any]] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    log_path: Path | None = None

    def figures(self) -> dict[str, Any]:
        """The measured figures, JSON-ready (no sample lists, command or log path)."""
        data = asdict(self)
        for key in ("latency_samples_ms", "service_samples_ms", "command", "log_path"):
            data.pop(key)
        return data
