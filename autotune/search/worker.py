"""This process as the worker of a trial in flight, and whether the worker a trial records is gone.

A trial records its worker (host, process id, boot id, PID namespace and the process's start time) when it is asked
for. A resume on the same host needs no heartbeats to know that a worker was killed: its process is gone, or its id
now belongs to a process started later (the id was reused), or the host rebooted since. Workers on other hosts, and
in other PID namespaces of this host (containers sharing its host name), cannot be looked at from here; their
trials keep the heartbeat rule.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

_PROC = Path("/proc")


def this_worker(trial_number: int) -> dict[str, Any]:
    """What a trial stores of the process working on it (``trial``: whose record it is; a trial queued again
    inherits its predecessor's attributes, and with them a record that is not its own)."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "boot": _boot_id(), "pidns": _pid_namespace(),
            "start": _start_ticks(pid), "trial": trial_number}


def worker_gone(worker: Any, trial_number: int) -> bool:
    """Whether the worker recorded on trial ``trial_number`` is known to have stopped: it ran on this host (this
    boot) and its process no longer exists. False for other hosts, and for records that are not the trial's own."""
    if not isinstance(worker, dict) or worker.get("trial") != trial_number or worker.get("host") != \
            socket.gethostname() or not isinstance(worker.get("pid"), int):
        return False
    boot = _boot_id()
    if worker.get("boot") and boot and worker["boot"] != boot:
        return True  # the host rebooted (a power loss): every process of the last boot is gone
    if worker.get("pidns") != _pid_namespace():
        return False  # another container: its process ids are not this namespace's
    pid = worker["pid"]
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # a process of another user holds the id: compare start times
    start = _start_ticks(pid)
    if start is None:
        return _PROC.is_dir() and not (_PROC / str(pid)).exists()  # without /proc, an existing id is the worker
    return start == "zombie" or (worker.get("start") is not None and start != worker["start"])


def _start_ticks(pid: int) -> int | str | None:
    """The process's start time in clock ticks after boot (``/proc/PID/stat`` field 22), ``"zombie"`` for a process
    that has exited but was not reaped yet, None where /proc cannot tell."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the command name, in parentheses, may hold spaces
    if fields and fields[0] in ("Z", "X"):
        return "zombie"
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _pid_namespace() -> str | None:
    try:
        return os.readlink(_PROC / "self" / "ns" / "pid")
    except OSError:
        return None


def _boot_id() -> str | None:
    try:
        return (_PROC / "sys" / "kernel" / "random" / "boot_id").read_text().strip()
    except OSError:
        return None
