"""NVIDIA GPUs with TensorRT, driven through trtexec and nvidia-smi."""

from __future__ import annotations

from autotune.backends.tensorrt.backend import TensorrtBackend

__all__ = ["TensorrtBackend"]
