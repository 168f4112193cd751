"""The host's CPU as a measurement device, for the backends that run on it, and the ``autotune bench`` line that
reproduces what they measure."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.backends._int8 import identity_flags
from autotune.backends.base import Artifact, Device
from autotune.errors import AutotuneError
from autotune.models import ModelSpec

# avx_vnni and avx512_vnni: 8-bit dot products (int8 needs no reduce_range, quantize.default_recipe)
ISA_FLAGS = ("avx2", "fma", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8")


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


class OnHostCpu:
    """What the backends that measure on this host's CPU share: one device (the CPU, index 0) with no status to
    poll, base flags that say what decides an int8 build, and nothing to kill (their measurements run in this
    process)."""

    name: str
    cpu: Any  # has as_device()
    isa_flags: tuple[str, ...]  # the host's (CpuDevice.isa_flags): they choose the int8 types

    def devices(self) -> list[Device]:
        return [self.cpu.as_device()]

    def device_status(self, index: int) -> str | None:
        return None

    def base_flags(self, model: Any) -> tuple[str, ...]:
        """None for fp32; with a calibration set, its SHA-256 and the int8 types this CPU takes (``_int8``)."""
        return identity_flags(model, self.isa_flags)

    def cancel(self) -> None:
        """Nothing to kill: measurements run in this process and end with their LoadGen run."""

    def check_devices(self, devices: list[int] | None) -> None:
        """Refuse ``--devices`` other than the CPU itself."""
        if devices and devices != [0]:
            raise AutotuneError(f"--devices: the {self.name} backend measures on this host's CPU (device 0) alone")

    def bench_command(self, onnx_path: Path, model: ModelSpec, flags: str) -> list[str]:
        """The ``autotune bench`` line that compiles ``flags`` for ``model``, fed and calibrated as this run feeds
        and calibrates it, and measures them: an artifact's command (the line of its compile's knobs), which its
        measurements complete."""
        inputs = model.file_inputs()
        argv = ["autotune", "bench", "--backend", self.name, "--model", model.name, "--onnx", str(onnx_path.resolve())]
        if inputs.batch_symbol is not None:
            argv += ["--batch-dim", inputs.batch_symbol]
        for spec in inputs.inputs:  # the sizes of its dynamic dimensions other than the batch
            if any(d is None or (isinstance(d, str) and d != inputs.batch_symbol) for d in spec.dims):
                argv += ["--input-shape", f"{spec.name}={','.join(map(str, spec.shape))}"]
        if inputs.samples_path is not None:
            argv += ["--inputs", str(inputs.samples_path.resolve())]
        if model.calibration is not None and model.calibration.path is not None:
            argv += ["--calibration-set", str(model.calibration.path)]
        return [*argv, "--flags", flags]


def bench_line(artifact: Artifact, candidate: Any, *, seconds: float | None = None, scenario: str | None = None,
               bound_ms: float | None = None) -> list[str]:
    """The bench line of ``artifact``'s compile with all of ``candidate``'s settings (measured for ``scenario``, its
    bound and ``seconds`` when given): what measures ``candidate`` again. An artifact whose command is no bench line
    (compiled and cached by an older autotune) keeps its command."""
    command = artifact.command
    if "--flags" not in command:
        return command
    timed = ["--time", f"{seconds:g}"] if seconds is not None else []
    measured_for = ["--scenario", scenario] if scenario is not None else []
    if scenario == "server" and bound_ms is not None:
        measured_for += ["--latency-bound-ms", f"{bound_ms:g}"]
    return [*command[:command.index("--flags")], "--flags", candidate.flag_string(), *measured_for, *timed]
