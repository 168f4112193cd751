"""OpenVINO on the host's CPU, measured with MLPerf LoadGen (needs the ``openvino`` extra)."""

from __future__ import annotations

from autotune.backends.openvino.backend import OpenVinoBackend

__all__ = ["OpenVinoBackend"]
