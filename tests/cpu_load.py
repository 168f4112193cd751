"""Other processes that keep every CPU of this host busy for a while (a machine that gets busy)."""

from __future__ import annotations

import subprocess
import sys

from autotune.backends._host_load import host_cpus


def load_every_cpu(seconds: float, *, per_cpu: int = 1) -> list[subprocess.Popen[bytes]]:
    """``per_cpu`` busy-looping processes per CPU this process may use, each for ``seconds``."""
    code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(per_cpu * len(host_cpus()))]


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.kill()
        process.wait()
