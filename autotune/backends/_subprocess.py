"""Toolchain subprocesses for backends that drive command-line tools: logged, time-limited, cancellable."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
from pathlib import Path

from autotune.errors import AutotuneError


def command_line(command: list[str]) -> str:
    """A command as one shell-quoted line, as a user would type it."""
    return shlex.join(command)


def signal_name(number: int) -> str:
    """``killed by SIGSEGV`` for a return code of minus that signal's number."""
    try:
        return f"killed by {signal.Signals(number).name}"
    except ValueError:
        return f"killed by signal {number}"


class ChildProcesses:
    """The tool processes one backend has running: each logged and time-limited; ``cancel`` kills them all, and
    any started after it."""

    def __init__(self) -> None:
        self._running: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self._cancelled = False

    def cancel(self) -> None:
        """Kill every process running now, and every one started from now on."""
        with self._lock:
            self._cancelled = True
            running = list(self._running)
        for process in running:
            _kill_group(process)

    def run_logged(self, command: list[str], log_path: Path, *, timeout_s: float) -> int | None:
        """Run ``command`` with its output in ``log_path``; past ``timeout_s`` kill its process group and return
        None, else return its exit code (negative: killed by that signal)."""
        with log_path.open("w") as log:
            log.write(f"$ {command_line(command)}\n")
            log.flush()
            try:
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           start_new_session=True)
            except OSError as exc:
                raise AutotuneError(f"could not start {command[0]}: {exc.strerror}") from None
            with self._lock:
                self._running.add(process)
                if self._cancelled:
                    _kill_group(process)
            # Popen.wait(timeout) polls (a wake-up every 50 ms per waiting thread); a timer that kills the group lets
            # this thread block in waitpid instead, which matters with dozens of compiles in flight
            expired = threading.Event()

            def kill_at_limit() -> None:
                expired.set()
                _kill_group(process)
            timer = threading.Timer(timeout_s, kill_at_limit)
            timer.daemon = True
            timer.start()
            try:
                returncode = process.wait()
            except BaseException:
                _kill_group(process)
                process.wait()
                raise
            finally:
                timer.cancel()
                with self._lock:
                    self._running.discard(process)
            if expired.is_set():
                log.write(f"\n[autotune] killed after {timeout_s:g} s\n")
                return None
            return returncode


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
