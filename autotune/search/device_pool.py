"""The devices of one run: each leased to one measurement at a time, locked host-wide so that two runs on one host
never share one, and set aside with a message when it keeps failing."""

from __future__ import annotations

import fcntl
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from autotune.errors import AutotuneError

DEVICE_FAILURE_LIMIT = 2  # failures in a row that set a device aside


@dataclass(kw_only=True)
class DeviceUse:
    """How long one device was leased, for pipeline figures."""

    busy_s: float = 0.0
    measurements: int = 0
    first_lease: float | None = None
    last_release: float | None = None
    leases: list[tuple[float, float]] = field(default_factory=list)  # (leased, released), monotonic seconds


class DevicePool:
    """Devices leased to one measurement at a time; a device that keeps failing is set aside with a message."""

    def __init__(self, *, devices: list[int], progress: Callable[[str], None],
                 status: Callable[[int], str | None] | None = None, failure_limit: int = DEVICE_FAILURE_LIMIT,
                 lock_dir: Path | None = None, lock_prefix: str = "device", device_word: str = "device") -> None:
        self.free: deque[int] = deque(devices)
        self._lock_dir = lock_dir
        self._lock_prefix = f"{lock_prefix}-{socket.gethostname()}"
        self._handles: dict[int, Any] = {}
        self.usable = list(devices)
        self.set_aside: dict[int, str] = {}
        self.use = {qid: DeviceUse() for qid in devices}
        self._failures = {qid: 0 for qid in devices}
        self._leased_at: dict[int, float] = {}
        self._status = status
        self._progress = progress
        self._limit = failure_limit
        self.word = device_word

    def lease(self) -> int | None:
        """A free usable device no other process on this host measures on, or None."""
        for _ in range(len(self.free)):
            qid = self.free.popleft()
            if self._take(qid):
                break
            self.free.append(qid)
        else:
            return None
        now = time.monotonic()
        self._leased_at[qid] = now
        use = self.use[qid]
        use.first_lease = now if use.first_lease is None else use.first_lease
        return qid

    def release(self, qid: int, *, failure: str | None = None) -> None:
        """Give ``qid`` back; with a ``failure``, count it and set the device aside when it keeps failing."""
        now = time.monotonic()
        self._give(qid)
        use = self.use[qid]
        leased = self._leased_at.pop(qid, now)
        use.busy_s += now - leased
        use.leases.append((leased, now))
        use.last_release = now
        if failure is None:
            use.measurements += 1
            self._failures[qid] = 0
            self.free.append(qid)
            return
        self._failures[qid] += 1
        status = self._query(qid)
        # a device that still reports Ready stays: the candidate, not the device, is then the likelier cause
        if (status is None and self._failures[qid] >= self._limit) or (status is not None and status != "Ready"):
            self.usable.remove(qid)
            self.set_aside[qid] = failure
            state = f", it reports {status}" if status else ""
            rest = ", ".join(map(str, self.usable)) or "none"
            self._progress(f"device {self.word} {qid} set aside after {self._failures[qid]} failure(s){state}: "
                           f"{failure} (devices left: {rest})")
        else:
            self.free.append(qid)

    def _take(self, qid: int) -> bool:
        """Lock ``qid`` for this process (host-wide, so two runs on one host never share a card)."""
        if self._lock_dir is None:
            return True
        handle = open(self._lock_dir / f"{self._lock_prefix}-{qid}.lock", "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._handles[qid] = handle
        return True

    def _give(self, qid: int) -> None:
        handle = self._handles.pop(qid, None)
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def _query(self, qid: int) -> str | None:
        if self._status is None:
            return None
        try:
            return self._status(qid)
        except AutotuneError:
            return None

    def describe_set_aside(self) -> str:
        """``QID 0: why; QID 1: why`` for the devices set aside."""
        return "; ".join(f"{self.word} {qid}: {why}" for qid, why in self.set_aside.items())
