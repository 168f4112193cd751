"""Qualcomm Cloud AI 100: qaic-exec, qaic-runner and qaic-util of the Apps SDK."""

from __future__ import annotations

from autotune.backends.qaic.backend import QaicBackend

__all__ = ["QaicBackend"]
