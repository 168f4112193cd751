"""Measurements on the host's CPUs that other processes disturbed: measured again once the host is quiet.

A backend that measures on the host's CPUs reports, with each measurement, how much of the cores it meant to use
other processes took meanwhile (``Measurement.host_load``, ``backends/_host_load.py``). Above ``max_pct`` the
measurement is disturbed: the host is watched until it is quiet (at most ``max_wait_s``), then the candidate is
measured again (at most ``AGAIN`` times). A host that stays busy for the whole wait is known busy: later disturbed
measurements look for one quiet window only, so a busy host costs a study seconds, not minutes, per measurement. A
measurement kept although disturbed says so, on the trial and in the progress output; none is kept silently.
"""

from __future__ import annotations

from typing import Any, Callable

from autotune.backends import wait_for_quiet
from autotune.backends.base import Measurement

AGAIN = 2  # measurements again after a disturbed one, at most
DEFAULT_BUSY_CPU_PCT = 25.0  # other processes may take up to a quarter of the cores a measurement runs on
DEFAULT_QUIET_WAIT_S = 60.0


class Disturbance:
    """Measures again, once the host is quiet, what other processes disturbed."""

    def __init__(self, *, max_pct: float, max_wait_s: float, progress: Callable[[str], None]) -> None:
        self.max_pct = max_pct
        self.max_wait_s = max_wait_s
        self.progress = progress
        self.busy = False  # the last wait found no quiet: later ones look for one window only

    def disturbed(self, load: dict[str, Any] | None) -> bool:
        """Whether other processes took more than ``max_pct`` of the measured cores (100 turns the check off)."""
        return load is not None and self.max_pct < 100 and float(load.get("other_pct", 0.0)) > self.max_pct

    def measured(self, measure: Callable[[], Measurement], label: str) -> Measurement:
        """``measure()``, again after a quiet host while it was disturbed; its ``host_load`` tells what happened:
        ``disturbed`` (this one), and ``measured_again`` (the shares of those it replaced, the wait) when it did."""
        measurement = measure()
        replaced: list[float] = []
        waited = 0.0
        while self.disturbed(measurement.host_load) and len(replaced) < AGAIN:
            load = measurement.host_load
            assert load is not None
            quiet, seconds = self._wait(load, label)
            waited += seconds
            if not quiet:
                break
            replaced.append(float(load["other_pct"]))
            measurement = measure()
        if measurement.host_load is None:
            return measurement
        kept = self.disturbed(measurement.host_load)
        measurement.host_load = measurement.host_load | {"disturbed": kept}
        if replaced or waited:
            measurement.host_load["measured_again"] = {"other_pct": replaced, "waited_s": round(waited, 1)}
        if kept and replaced and len(replaced) == AGAIN:
            self.progress(f"measurement {label}: still disturbed after {AGAIN} more measurements: kept, and marked "
                          f"disturbed on the trial")
        return measurement

    def _wait(self, load: dict[str, Any], label: str) -> tuple[bool, float]:
        """Wait for a quiet host (one window only while it is known busy): (quiet, seconds waited)."""
        said = (f"measurement {label}: other processes took {load['other_pct']:.0f}% of the {load['cores']} cores it "
                f"ran on ({load['other_cores']:.1f} CPUs busy besides it)")
        cores = int(load["cores"])
        if self.busy:
            quiet, seconds, _ = wait_for_quiet(cores=cores, max_pct=self.max_pct, max_wait_s=0.0)
            self.busy = not quiet
            self.progress(f"{said}: the host is quiet now, measuring again" if quiet else
                          f"{said}: the host is still busy: kept, and marked disturbed on the trial")
            return quiet, seconds
        self.progress(f"{said}: measuring again once the host is quiet (waiting up to {self.max_wait_s:.0f} s)")
        quiet, seconds, _ = wait_for_quiet(cores=cores, max_pct=self.max_pct, max_wait_s=self.max_wait_s)
        if not quiet:
            self.busy = True
            self.progress(f"measurement {label}: the host stayed busy for {seconds:.0f} s: kept, and marked disturbed "
                          f"on the trial (later disturbed measurements are measured again only if the host is quiet "
                          f"at once)")
        return quiet, seconds


def disturbed_attr(measurements: list[Measurement | None]) -> list[dict[str, Any]]:
    """The trial's record of its disturbed measurements: for each (by its index among the trial's measurements),
    the other processes' share of every run of it, how long the host was waited for, and whether the one kept was
    disturbed too."""
    notes = []
    for index, m in enumerate(measurements):
        load = m.host_load if m is not None else None
        if load is None or not (load.get("disturbed") or load.get("measured_again")):
            continue
        again = load.get("measured_again") or {"other_pct": [], "waited_s": 0.0}
        notes.append({"measurement": index, "other_pct": [*again["other_pct"], load["other_pct"]],
                      "waited_s": again["waited_s"], "kept_disturbed": bool(load.get("disturbed"))})
    return notes
