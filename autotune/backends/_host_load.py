"""How busy other processes kept this host's CPUs during a measurement on them.

Over a window, the busy time of the CPUs this process may run on (``/proc/stat``) minus this process's own CPU time
is what other processes used. A measurement meant to use ``cores`` of the ``n`` CPUs leaves ``n - cores`` to
others; what they used beyond that was taken from the measurement's cores. ``other_pct`` is that, as a share of
the measurement's cores: 0 on a quiet host, and also with a busy neighbour that fits on the CPUs the measurement
left free; 100 when others took all of them. The threshold that makes a measurement "disturbed" is the search's.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

STAT = Path("/proc/stat")
BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system irq softirq steal (guest time is inside user)
QUIET_WINDOW_S = 1.0


@dataclass(frozen=True, kw_only=True)
class CpuSample:
    """One reading: the clock, busy CPU seconds of this process's CPUs, and this process's CPU seconds."""

    wall: float
    busy_s: float
    own_s: float
    cpus: int


def host_cpus() -> set[int]:
    """The CPUs this process may run on."""
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def sample(cpus: set[int] | None = None) -> CpuSample | None:
    """A reading now; None where the kernel's CPU counters cannot be read (no /proc)."""
    cpus = host_cpus() if cpus is None else cpus
    try:
        lines = STAT.read_text().splitlines()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            values = rest.split()
            busy += sum(int(values[i]) for i in BUSY_FIELDS if i < len(values))
    return CpuSample(wall=time.monotonic(), busy_s=busy / ticks, own_s=time.process_time(), cpus=len(cpus))


def load_between(before: CpuSample, after: CpuSample, *, cores: int) -> dict[str, Any]:
    """What other processes used between two readings: ``other_pct`` (of the ``cores`` a measurement meant to use),
    ``other_cores`` (their mean use, in CPUs), ``cores``, ``cpus``, ``seconds`` and the 1-minute load average."""
    seconds = max(after.wall - before.wall, 1e-6)
    other = max(0.0, (after.busy_s - before.busy_s) - (after.own_s - before.own_s)) / seconds
    cores = max(1, min(cores, after.cpus))
    taken = max(0.0, other - (after.cpus - cores))
    return {"other_pct": round(min(100.0, 100.0 * taken / cores), 1), "other_cores": round(other, 2),
            "cores": cores, "cpus": after.cpus, "seconds": round(seconds, 2),
            "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}


class CpuWatch:
    """The host's load over a measurement: started before it, read after it."""

    def __init__(self, *, cores: int) -> None:
        self.cores = cores
        self.before = sample()

    def stop(self) -> dict[str, Any] | None:
        """The load since the start (``load_between``), or None where it cannot be read."""
        after = sample()
        if self.before is None or after is None:
            return None
        return load_between(self.before, after, cores=self.cores)


def wait_for_quiet(*, cores: int, max_pct: float, max_wait_s: float, window_s: float = QUIET_WINDOW_S,
                   sleep: Callable[[float], None] = time.sleep) -> tuple[bool, float, dict[str, Any] | None]:
    """Watch the host in windows of ``window_s`` until other processes would take at most ``max_pct`` of ``cores``
    from a measurement, for at most ``max_wait_s``: (quiet, seconds waited, the last window's load)."""
    started = time.monotonic()
    load: dict[str, Any] | None = None
    while True:
        watch = CpuWatch(cores=cores)
        sleep(window_s)
        load = watch.stop()
        waited = time.monotonic() - started
        if load is None or load["other_pct"] <= max_pct:
            return True, waited, load
        if waited + window_s > max_wait_s:
            return False, waited, load
