"""autotune: a measured search of inference compiler flags (Qualcomm Cloud AI 100 first)."""

from __future__ import annotations

__version__ = "0.1.0"
