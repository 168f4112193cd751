"""ONNX Runtime on the host's CPU, measured with MLPerf LoadGen."""

from __future__ import annotations

from autotune.backends.ort.runtime import OrtBackend

__all__ = ["OrtBackend"]
