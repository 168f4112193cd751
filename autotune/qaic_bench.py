"""Cloud AI 100: compile with qaic-exec, measure with qaic-runner, read qaic-util and the SDK version."""

from __future__ import annotations

import csv
import os
import re
import shlex
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from autotune.backend import Artifact, AutotuneError, CompileFailure, DeviceFailure, Measurement, MeasureFailure
from autotune.models import ModelSpec
from autotune.search_space import Candidate, DeviceLimits

DEFAULT_SDK_ROOT = Path("/opt/qti-aic")
SDK_ROOT_ENV = "AUTOTUNE_SDK_ROOT"
DEFAULT_COMPILE_TIMEOUT_S = 3600.0
ACTIVATION_ERROR_HINTS = (
    "Failed to allocate NSP resources",
    "Memory resource exhausted",
    "Failed to allocate virtual channel",
    "Failed to allocate multicast ID resources",
)
DEVICE_ERROR_HINTS = ("not in ready state", "Invalid device", "Failed to initialize QAIC runner")
RUNNER_ERROR_HINTS = DEVICE_ERROR_HINTS + ("Inference run failed",)


@dataclass(frozen=True, kw_only=True)
class QaicDevice:
    """One QID as qaic-util reports it."""

    qid: int
    status: str
    nsp_total: int
    nsp_free: int
    dram_total_mb: int | None
    dram_free_mb: int | None
    sku: str

    @property
    def ready(self) -> bool:
        return self.status == "Ready"

    def limits(self) -> DeviceLimits:
        return DeviceLimits(nsp_total=self.nsp_total, nsp_free=self.nsp_free)


@dataclass(frozen=True, kw_only=True)
class RunnerStats:
    """The ``---- Stats ----`` figures of qaic-runner."""

    executions: int
    duration_us: int
    batch_size: int
    samples_per_second: float


def resolve_sdk_root(sdk_root: str | Path | None = None) -> Path:
    """The SDK root: the argument, else $AUTOTUNE_SDK_ROOT, else /opt/qti-aic; it must hold exec/qaic-exec."""
    root = Path(sdk_root or os.environ.get(SDK_ROOT_ENV) or DEFAULT_SDK_ROOT).expanduser()
    if not (root / "exec" / "qaic-exec").is_file():
        raise AutotuneError(
            f"Cloud AI 100 SDK not found: no {root / 'exec' / 'qaic-exec'}; install the Apps SDK there or point "
            f"--sdk-root (or ${SDK_ROOT_ENV}) at the SDK root")
    return root.resolve()


class QaicBackend:
    """The Cloud AI 100 backend: real subprocesses against an SDK root (the real one or the test emulator)."""

    name = "qaic"

    def __init__(self, *, sdk_root: str | Path | None = None,
                 compile_timeout_s: float = DEFAULT_COMPILE_TIMEOUT_S) -> None:
        self.sdk_root = resolve_sdk_root(sdk_root)
        self.compile_timeout_s = compile_timeout_s
        self.qaic_exec = self.sdk_root / "exec" / "qaic-exec"
        self.qaic_runner = self.sdk_root / "exec" / "qaic-runner"
        self.qaic_util = self.sdk_root / "tools" / "qaic-util"
        self._children = _Children()

    def version(self) -> str:
        """Apps and Platform SDK versions from ``versions/*.xml``."""
        return read_sdk_version(self.sdk_root)

    def devices(self) -> list[QaicDevice]:
        """Every device qaic-util reports, Ready or not."""
        try:
            result = subprocess.run([str(self.qaic_util), "-q"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AutotuneError(f"could not run {self.qaic_util}: {exc}") from None
        if result.returncode != 0:
            raise AutotuneError(f"qaic-util -q failed (exit {result.returncode}): "
                                f"{(result.stdout + result.stderr).strip()[:200]}")
        return parse_devices(result.stdout)

    def ready_devices(self, qids: list[int] | None = None) -> list[QaicDevice]:
        """The devices to measure on: ``qids`` (each must be Ready, all of one SKU), else every Ready device of the
        first Ready one's SKU and size."""
        devices = self.devices()
        if qids:
            chosen = [self.ready_device(qid, devices=devices) for qid in qids]
            kinds = {(d.sku, d.nsp_total) for d in chosen}
            if len(kinds) > 1:
                raise AutotuneError("--devices mixes SKUs (" + ", ".join(f"QID {d.qid}: {d.sku} {d.nsp_total} NSPs"
                                                                      for d in chosen) +
                                    "): a study tunes for one kind of card; pick devices of one SKU")
            return chosen
        first = self.ready_device(devices=devices)
        return [d for d in devices if d.ready and (d.sku, d.nsp_total) == (first.sku, first.nsp_total)]

    def device_status(self, qid: int) -> str:
        """What qaic-util says of device ``qid`` now (``Ready``, ``Error``, ... or ``missing``)."""
        return next((d.status for d in self.devices() if d.qid == qid), "missing")

    def cancel(self) -> None:
        """Kill every qaic-exec and qaic-runner this process started, and start none from now on."""
        with self._children.lock:
            self._children.cancelled = True
            running = list(self._children.running)
        for process in running:
            _kill_group(process)

    def ready_device(self, qid: int | None = None, *, devices: list[QaicDevice] | None = None) -> QaicDevice:
        """The device to use: ``qid`` if given (it must be Ready), else the first Ready one (of ``devices``, else of
        what qaic-util reports now)."""
        devices = self.devices() if devices is None else devices
        if qid is not None:
            for device in devices:
                if device.qid == qid:
                    if not device.ready:
                        raise AutotuneError(f"device QID {qid} is {device.status}, not Ready; check `qaic-util -q` "
                                            f"(a user outside the qaic group sees Error) or pick others "
                                            f"(run --devices, bench --device)")
                    return device
            raise AutotuneError(f"no device QID {qid}: qaic-util reports {[d.qid for d in devices]}")
        for device in devices:
            if device.ready:
                return device
        states = ", ".join(f"QID {d.qid} {d.status}" for d in devices) or "no devices"
        raise AutotuneError(f"no Ready Cloud AI 100 device ({states}); check `qaic-util -q`")

    def compile_command(self, onnx_path: Path, model: ModelSpec, candidate: Candidate, qpc_dir: Path) -> list[str]:
        """The exact qaic-exec command line for a candidate."""
        args = [f"-m={onnx_path}", *model.base_flags, *candidate.compile_args(), f"-aic-binary-dir={qpc_dir}"]
        return [str(self.qaic_exec), *dict.fromkeys(args)]

    def compile(self, onnx_path: Path, model: ModelSpec, candidate: Candidate, workdir: Path) -> Artifact:
        """Compile into a fresh directory under ``workdir``; raises CompileFailure with the compiler's reason."""
        workdir.mkdir(parents=True, exist_ok=True)
        out = Path(tempfile.mkdtemp(prefix="compile-", dir=workdir))
        qpc_dir = out / "qpc"
        log_path = out / "qaic-exec.log"
        command = self.compile_command(onnx_path, model, candidate, qpc_dir)
        started = time.monotonic()
        returncode = _run_logged(command, log_path, timeout_s=self.compile_timeout_s, children=self._children)
        seconds = time.monotonic() - started
        if returncode is None:
            raise CompileFailure(f"qaic-exec still running after {self.compile_timeout_s:g} s: killed",
                                 log_path=log_path)
        if returncode == -signal.SIGKILL:  # the kernel's out-of-memory killer, or someone: not the candidate's fault
            raise CompileFailure("qaic-exec was killed (SIGKILL: out of memory, or from outside); to be retried",
                                 log_path=log_path, retryable=True)
        if returncode < 0:
            raise CompileFailure(f"qaic-exec crashed ({_signal_name(-returncode)})", log_path=log_path)
        if returncode != 0:
            reason = parse_compile_error(log_path.read_text(errors="replace"))
            raise CompileFailure(reason or f"qaic-exec exited with code {returncode}", log_path=log_path)
        if not (qpc_dir / "programqpc.bin").is_file():
            raise CompileFailure("qaic-exec exited 0 but wrote no programqpc.bin", log_path=log_path)
        return Artifact(path=qpc_dir, command=command, log_path=log_path, compile_seconds=seconds,
                        batch_size=candidate.batch_size, cores=candidate.cores)

    def measure_command(self, artifact: Artifact, *, activations: int, set_size: int, device: int,
                        seconds: float, profiling_dir: Path | None = None) -> list[str]:
        """The exact qaic-runner command line."""
        command = [str(self.qaic_runner), "-t", str(artifact.path), "-a", str(activations), "-S", str(set_size),
                   "-d", str(device), "--time", f"{seconds:g}"]
        if profiling_dir is not None:
            command += ["--aic-profiling-type", "latency", "--aic-profiling-out-dir", str(profiling_dir)]
        return command

    def measure_trial(self, artifact: Artifact, candidate: Candidate, *, scenario: str, bound_ms: float | None,
                      seconds: float, device: int, log_dir: Path) -> Measurement:
        """The tuner's call: qaic-runner with the candidate's runtime knobs; latency profiling unless offline."""
        return self.measure(artifact, activations=candidate.activations, set_size=candidate.set_size, device=device,
                            seconds=seconds, latency=scenario != "offline", log_dir=log_dir)

    def measure(self, artifact: Artifact, *, activations: int, set_size: int, device: int = 0,
                seconds: float = 10.0, latency: bool = True, log_dir: Path | None = None) -> Measurement:
        """Run qaic-runner for ``seconds`` (logs under ``log_dir``, else beside the QPC); raises MeasureFailure."""
        root = log_dir or artifact.path.parent
        root.mkdir(parents=True, exist_ok=True)
        run_dir = Path(tempfile.mkdtemp(prefix="measure-", dir=root))
        profiling_dir = run_dir / "profiling" if latency else None
        if profiling_dir is not None:
            profiling_dir.mkdir()
        log_path = run_dir / "qaic-runner.log"
        command = self.measure_command(artifact, activations=activations, set_size=set_size, device=device,
                                       seconds=seconds, profiling_dir=profiling_dir)
        returncode = _run_logged(command, log_path, timeout_s=3 * seconds + 120, children=self._children)
        output = log_path.read_text(errors="replace")
        if returncode is None:
            raise MeasureFailure(f"qaic-runner did not finish within {3 * seconds + 120:g} s: killed",
                                 log_path=log_path, retryable=True)
        if returncode != 0:
            reason = parse_runner_error(output) or f"qaic-runner exited with code {returncode}"
            if any(hint in reason for hint in DEVICE_ERROR_HINTS):
                raise DeviceFailure(f"device QID {device}: {reason}", log_path=log_path)
            raise MeasureFailure(reason, log_path=log_path)
        stats = parse_stats(output)
        measurement = Measurement(samples_per_second=stats.samples_per_second,
                                  duration_seconds=stats.duration_us / 1e6, batch_size=stats.batch_size,
                                  executions=stats.executions, command=command, log_path=log_path)
        if profiling_dir is not None:
            rows = [row for path in sorted(profiling_dir.glob("aic-profiling-program-*-latency.txt"))
                    for row in parse_latency_file(path)]
            if not rows:
                raise MeasureFailure("qaic-runner wrote no latency profile", log_path=log_path)
            round_trip = [row["hostRoundTrip"] / 1000.0 for row in rows]
            measurement.latency_samples_ms = round_trip
            measurement.service_samples_ms = [row["execTotal"] / 1000.0 for row in rows]
            measurement.latency_p50_ms, measurement.latency_p90_ms, measurement.latency_p99_ms = (
                percentiles(round_trip, (50, 90, 99)))
        return measurement


def percentiles(values: list[float], points: tuple[int, ...]) -> tuple[float, ...]:
    """Percentiles by linear interpolation (numpy's default), for a non-empty list."""
    if len(values) == 1:
        return tuple(values[0] for _ in points)
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return tuple(cuts[p - 1] if p < 100 else max(values) for p in points)


def parse_stats(output: str) -> RunnerStats:
    """Read the last ``InferenceCnt ... Inf/Sec`` line of qaic-runner output (leading spaces, -v noise tolerated)."""
    lines = [line.strip() for line in output.splitlines() if "Inf/Sec" in line]
    if not lines:
        raise MeasureFailure("qaic-runner printed no Inf/Sec stats line")
    match = re.search(r"InferenceCnt\s+(\d+)\s+TotalDuration\s+(\d+)us\s+BatchSize\s+(\d+)\s+Inf/Sec\s+([\d.]+)",
                      lines[-1])
    if not match:
        raise MeasureFailure(f"unreadable qaic-runner stats line: {lines[-1]!r}")
    executions, duration_us, batch, rate = match.groups()
    return RunnerStats(executions=int(executions), duration_us=int(duration_us), batch_size=int(batch),
                       samples_per_second=float(rate))


def parse_latency_file(path: Path) -> list[dict[str, float]]:
    """Rows of a ``aic-profiling-program-<N>-latency.txt`` file, columns without their ``Us`` suffix."""
    lines = path.read_text(errors="replace").splitlines()
    header_at = next((i for i, line in enumerate(lines) if "hostRoundTrip" in line), None)
    if header_at is None:
        raise MeasureFailure(f"no latency header (hostRoundTrip...) in {path}")
    reader = csv.reader(lines[header_at:])
    names = [name.strip().removesuffix("Us") for name in next(reader)]
    rows = []
    for cells in reader:
        if not cells or not cells[0].strip():
            continue
        try:
            rows.append({name: float(cell) for name, cell in zip(names, cells) if name})
        except ValueError:
            raise MeasureFailure(f"unreadable latency row {','.join(cells)!r} in {path}") from None
    return rows


def parse_devices(output: str) -> list[QaicDevice]:
    """Devices from ``qaic-util -q``: blocks split on ``QID n`` lines, tab-indented ``Key:Value`` fields."""
    devices = []
    for block in re.split(r"^(?=QID \d+\s*$)", output, flags=re.MULTILINE):
        head = re.match(r"QID (\d+)\s*$", block, flags=re.MULTILINE)
        if not head:
            continue
        fields = {}
        for line in block.splitlines()[1:]:
            key, sep, value = line.strip().partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        devices.append(QaicDevice(
            qid=int(head.group(1)), status=fields.get("Status", "Unknown"),
            nsp_total=_leading_int(fields.get("Nsp Total")) or 0, nsp_free=_leading_int(fields.get("Nsp Free")) or 0,
            dram_total_mb=_leading_int(fields.get("Dram Total")), dram_free_mb=_leading_int(fields.get("Dram Free")),
            sku=fields.get("Sku Type", "unknown")))
    return devices


def parse_compile_error(output: str) -> str | None:
    """The compiler's own reason: the ``Error message:`` line, or the ``Invalid option ...`` line."""
    for line in output.splitlines():
        stripped = line.strip()
        if stripped.startswith("Error message:"):
            return stripped.removeprefix("Error message:").strip()
        if stripped.startswith("Invalid option"):
            return stripped
    return None


def parse_runner_error(output: str) -> str | None:
    """The runner's reason: an activation failure (``... activate failed: <reason>``) or a known runner error."""
    for line in output.splitlines():
        match = re.search(r"activate failed:\s*(.+)$", line)
        if match:
            return match.group(1).strip()
    for line in output.splitlines():
        if any(hint in line for hint in ACTIVATION_ERROR_HINTS + RUNNER_ERROR_HINTS):
            return line.strip().removeprefix("ERROR :").strip()
    return None


def read_sdk_version(sdk_root: Path) -> str:
    """``apps <base_version> (<build_id>) / platform ...`` from ``versions/*.xml``, or ``unknown``."""
    parts = []
    for name in ("apps", "platform"):
        path = sdk_root / "versions" / f"{name}.xml"
        if not path.is_file():
            continue
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError:
            continue
        base = root.findtext(".//base_version")
        build = root.findtext(".//build_id")
        if base:
            parts.append(f"{name} {base}" + (f" ({build})" if build else ""))
    return " / ".join(parts) or "unknown"


def command_line(command: list[str]) -> str:
    """A command as one shell-quoted line, as a user would type it."""
    return shlex.join(command)


def _leading_int(value: str | None) -> int | None:
    match = re.match(r"\s*(\d+)", value or "")
    return int(match.group(1)) if match else None


def _signal_name(number: int) -> str:
    try:
        return f"killed by {signal.Signals(number).name}"
    except ValueError:
        return f"killed by signal {number}"


@dataclass
class _Children:
    """The compiler and runner processes a backend has running (cancel() kills them, and any started after)."""

    running: set[subprocess.Popen[bytes]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    cancelled: bool = False


def _run_logged(command: list[str], log_path: Path, *, timeout_s: float, children: _Children) -> int | None:
    """Run ``command`` with output to ``log_path``; kill its process group past the limit and return None."""
    with log_path.open("w") as log:
        log.write(f"$ {command_line(command)}\n")
        log.flush()
        try:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        except OSError as exc:
            raise AutotuneError(f"could not start {command[0]}: {exc.strerror}") from None
        with children.lock:
            children.running.add(process)
            if children.cancelled:
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
            with children.lock:
                children.running.discard(process)
        if expired.is_set():
            log.write(f"\n[autotune] killed after {timeout_s:g} s\n")
            return None
        return returncode


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
