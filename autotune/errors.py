"""The typed failures every layer raises: what went wrong, at which stage, and whether it may be retried."""

from __future__ import annotations

from pathlib import Path


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


class ArtifactGone(MeasureFailure):
    """The compiled artifact was deleted before or while it was measured (a compile cache cleared under the run):
    nothing about the candidate; it is compiled again."""

    def __init__(self, path: Path, *, log_path: Path | None = None) -> None:
        super().__init__(f"its compiled artifact {path} was deleted before it was measured (was the compile cache "
                         f"cleared?)", log_path=log_path, retryable=True)


class DeviceFailure(MeasureFailure):
    """The device itself is unusable (not ready, gone): no candidate can be measured on it."""

    stage = "device"


class AccuracyFailure(MeasureFailure):
    """The compiled candidate's outputs are too far from the fp32 reference: its settings change the results."""

    stage = "accuracy"
