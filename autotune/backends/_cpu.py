"""The host's CPU as a measurement device, for the backends that run on it."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

from autotune.backends.base import Device

ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


@dataclass(frozen=True, kw_only=True)
class CpuDevice:
    """The local CPU: the cores this process may use, its model and the vector ISA flags inference kernels use."""

    cores: int
    model_name: str
    isa_flags: tuple[str, ...]

    def as_device(self) -> Device:
        return Device(index=0, name=self.model_name, size=self.cores,
                      details={"isa_flags": ", ".join(self.isa_flags) or "no AVX2"})

    def describe(self) -> str:
        return f"CPU {self.model_name} ({self.cores} cores; {', '.join(self.isa_flags) or 'no AVX2'})"


def cpu_device() -> CpuDevice:
    """Cores (this process's affinity), CPU model and the vector ISA flags that matter for inference kernels."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    present = set(fields.get("flags", "").split())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return CpuDevice(cores=cores, model_name=fields.get("model name") or platform.processor() or "unknown CPU",
                     isa_flags=tuple(f for f in ISA_FLAGS if f in present))
