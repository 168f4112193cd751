"""The host's CPU as OpenVINO sees it: its name, capabilities and defaults, with the host facts that decide which
knobs apply (SMT for ENABLE_HYPER_THREADING, hybrid cores for SCHEDULING_CORE_TYPE)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.backends.base import Device

# the precisions INFERENCE_PRECISION_HINT may take beyond f32, and the capability that says the CPU computes them
PRECISION_CAPABILITIES = {"bf16": "BF16", "f16": "FP16"}
SYS_CPU = Path("/sys/devices/system/cpu")
HYBRID_MARK = Path("/sys/devices/cpu_atom")  # Linux's perf PMU of the E-cores, present on hybrid Intel CPUs only


@dataclass(frozen=True, kw_only=True)
class OvCpu:
    """What OpenVINO reports of the CPU (``FULL_DEVICE_NAME``, ``OPTIMIZATION_CAPABILITIES``, its defaults) and the
    cores this process may use; ``smt``: a core runs two threads; ``hybrid``: performance and efficient cores."""

    name: str
    cores: int
    capabilities: tuple[str, ...]
    default_precision: str
    default_pinning: bool
    smt: bool
    hybrid: bool

    @property
    def precisions(self) -> tuple[str, ...]:
        """The inference precisions this CPU computes: f32, plus bf16 or f16 where its capabilities list them."""
        return ("f32", *(p for p, cap in PRECISION_CAPABILITIES.items() if cap in self.capabilities))

    def as_device(self) -> Device:
        return Device(index=0, name=self.name, size=self.cores,
                      details={"capabilities": ", ".join(self.capabilities), "precisions": ", ".join(self.precisions),
                               "smt": "yes" if self.smt else "no", "hybrid": "yes" if self.hybrid else "no"})

    def describe(self) -> str:
        return (f"CPU {self.name} as OpenVINO sees it ({self.cores} cores; {', '.join(self.capabilities)}; "
                f"precisions {', '.join(self.precisions)})")


def read_cpu(core: Any) -> OvCpu:
    """The CPU as ``core`` (an ``openvino.Core``) reports it, with the host's SMT and hybrid facts."""
    return OvCpu(name=str(core.get_property("CPU", "FULL_DEVICE_NAME")), cores=_cores(),
                 capabilities=tuple(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")),
                 default_precision=core.get_property("CPU", "INFERENCE_PRECISION_HINT").to_string(),
                 default_pinning=bool(core.get_property("CPU", "ENABLE_CPU_PINNING")),
                 smt=_has_smt(), hybrid=HYBRID_MARK.exists())


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _has_smt() -> bool:
    """Whether two of the CPUs this process may use are threads of one core."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    cores = set()
    for cpu in cpus:
        topology = SYS_CPU / f"cpu{cpu}" / "topology"
        try:
            cores.add((topology / "physical_package_id").read_text().strip() + ":" +
                      (topology / "core_id").read_text().strip())
        except OSError:
            return False  # no topology to read: take the CPUs for cores
    return len(cores) < len(cpus)
