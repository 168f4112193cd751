"""The Cloud AI 100 toolchain driver, usable without the tuner (the qaic backend measures through it): the exact
qaic-exec, qaic-runner and qaic-util command lines, run as logged subprocesses, and the parsers of what they print
and write (SDK-FACTS: stats line, latency CSVs, device blocks, errors). With the SDK in $AUTOTUNE_SDK_ROOT
(``emulators/qaic`` is an emulated one) or /opt/qti-aic:

    >>> from autotune.qaic_bench import QaicSdk
    >>> sdk = QaicSdk()
    >>> qpc = sdk.compile("resnet50.onnx", ["-aic-num-cores=2", "-ols=2"], workdir="qaic-work")
    >>> print(sdk.run(qpc, activations=7, seconds=5).samples_per_second)
"""

from __future__ import annotations

import csv
import os
import re
import signal
import statistics
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from autotune.backends._subprocess import ChildProcesses, signal_name
from autotune.backends.base import Artifact, Measurement
from autotune.errors import AutotuneError, CompileFailure, DeviceFailure, MeasureFailure

DEFAULT_SDK_ROOT = Path("/opt/qti-aic")
DEFAULT_COMPILE_TIMEOUT_S = 3600.0
SDK_ROOT_ENV = "AUTOTUNE_SDK_ROOT"
EMULATED_MARKER = "EMULATED"  # a file the project's emulator (emulators/qaic) carries in its root; a real SDK has none
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


class QaicSdk:
    """One SDK root's tools (the real SDK or the emulator), as subprocesses; ``root`` as in resolve_sdk_root."""

    def __init__(self, *, root: str | Path | None = None, compile_timeout_s: float = DEFAULT_COMPILE_TIMEOUT_S) -> None:
        self.root = resolve_sdk_root(root)
        self.compile_timeout_s = compile_timeout_s
        self.qaic_exec = self.root / "exec" / "qaic-exec"
        self.qaic_runner = self.root / "exec" / "qaic-runner"
        self.qaic_util = self.root / "tools" / "qaic-util"
        self.emulated = (self.root / EMULATED_MARKER).is_file()
        self.children = ChildProcesses()

    def version(self) -> str:
        """Apps and Platform SDK versions from ``versions/*.xml``."""
        return read_sdk_version(self.root)

    def query_devices(self) -> list[QaicDevice]:
        """Every device ``qaic-util -q`` reports, Ready or not."""
        try:
            result = subprocess.run([str(self.qaic_util), "-q"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AutotuneError(f"could not run {self.qaic_util}: {exc}") from None
        if result.returncode != 0:
            raise AutotuneError(f"qaic-util -q failed (exit {result.returncode}): "
                                f"{(result.stdout + result.stderr).strip()[:200]}")
        return parse_devices(result.stdout)

    def compile_command(self, onnx_path: str | Path, args: list[str], qpc_dir: Path) -> list[str]:
        """The exact qaic-exec command line: the model, ``args`` (base flags, then the candidate's), the output."""
        return [str(self.qaic_exec), *dict.fromkeys([f"-m={onnx_path}", *args, f"-aic-binary-dir={qpc_dir}"])]

    def compile(self, onnx_path: str | Path, args: list[str], *, workdir: str | Path,
                batch_size: int = 1) -> Artifact:
        """A QPC of ``args`` (their batch: ``batch_size``) in a new folder under ``workdir``; else CompileFailure."""
        Path(workdir).mkdir(parents=True, exist_ok=True)
        out = Path(tempfile.mkdtemp(prefix="compile-", dir=workdir))
        qpc_dir = out / "qpc"
        log_path = out / "qaic-exec.log"
        command = self.compile_command(onnx_path, args, qpc_dir)
        seconds = self._compiler(command, log_path)
        if not (qpc_dir / "programqpc.bin").is_file():
            raise CompileFailure("qaic-exec exited 0 but wrote no programqpc.bin", log_path=log_path)
        return Artifact(path=qpc_dir, command=command, log_path=log_path, compile_seconds=seconds,
                        batch_size=batch_size)

    def dump_profile(self, onnx_path: str | Path, args: list[str], *, profile: Path, input_list: Path,
                     workdir: Path) -> Artifact:
        """``qaic-exec -dump-profile``: the int8 profile of ``args`` (base, calibration and schema flags) over the
        samples listed in ``input_list``, written to ``profile``; else CompileFailure with the SDK's reason."""
        command = [str(self.qaic_exec), *dict.fromkeys([f"-m={onnx_path}", *args]), f"-dump-profile={profile}",
                   f"-input-list-file={input_list}"]
        log_path = workdir / "qaic-exec.log"
        seconds = self._compiler(command, log_path)
        if not profile.is_file():
            raise CompileFailure(f"qaic-exec -dump-profile exited 0 but wrote no {profile.name}", log_path=log_path)
        return Artifact(path=profile, command=command, log_path=log_path, compile_seconds=seconds, batch_size=1)

    def _compiler(self, command: list[str], log_path: Path) -> float:
        """Run qaic-exec; its seconds, else CompileFailure with the compiler's reason (retryable when killed)."""
        started = time.monotonic()
        returncode = self.children.run_logged(command, log_path, timeout_s=self.compile_timeout_s)
        seconds = time.monotonic() - started
        if returncode is None:
            raise CompileFailure(f"qaic-exec still running after {self.compile_timeout_s:g} s: killed",
                                 log_path=log_path)
        if returncode == -signal.SIGKILL:  # the kernel's out-of-memory killer, or someone: not the candidate's fault
            raise CompileFailure("qaic-exec was killed (SIGKILL: out of memory, or from outside); to be retried",
                                 log_path=log_path, retryable=True)
        if returncode < 0:
            raise CompileFailure(f"qaic-exec crashed ({signal_name(-returncode)})", log_path=log_path)
        if returncode != 0:
            reason = parse_compile_error(log_path.read_text(errors="replace"))
            raise CompileFailure(reason or f"qaic-exec exited with code {returncode}", log_path=log_path)
        return seconds

    def runner_command(self, qpc_dir: Path, *, activations: int, set_size: int, device: int, seconds: float,
                       profiling_dir: Path | None = None, input_files: Sequence[Path] = ()) -> list[str]:
        """The exact qaic-runner command line (``input_files``: one raw file per model input, in order)."""
        command = [str(self.qaic_runner), "-t", str(qpc_dir), "-a", str(activations), "-S", str(set_size),
                   "-d", str(device), "--time", f"{seconds:g}"]
        for path in input_files:
            command += ["-i", str(path)]
        if profiling_dir is not None:
            command += ["--aic-profiling-type", "latency", "--aic-profiling-out-dir", str(profiling_dir)]
        return command

    def run(self, artifact: Artifact, *, activations: int = 1, set_size: int = 10, device: int = 0, seconds: float,
            latency: bool = False, log_dir: Path | None = None, input_files: Sequence[Path] = ()) -> Measurement:
        """Run qaic-runner for ``seconds`` (logs under ``log_dir``, else beside the QPC), with latency profiling when
        ``latency``, fed ``input_files`` (else its random inputs); raises MeasureFailure, or DeviceFailure when the
        device is at fault."""
        root = log_dir or artifact.path.parent
        root.mkdir(parents=True, exist_ok=True)
        run_dir = Path(tempfile.mkdtemp(prefix="measure-", dir=root))
        profiling_dir = run_dir / "profiling" if latency else None
        if profiling_dir is not None:
            profiling_dir.mkdir()
        log_path = run_dir / "qaic-runner.log"
        command = self.runner_command(artifact.path, activations=activations, set_size=set_size, device=device,
                                      seconds=seconds, profiling_dir=profiling_dir, input_files=input_files)
        output = self._runner(command, log_path, limit_s=3 * seconds + 120, device=device)
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

    def write_outputs(self, artifact: Artifact, *, input_files: Sequence[Path], device: int, out_dir: Path) -> Path:
        """One inference of ``input_files`` (one raw file per model input) with its outputs written to ``out_dir``
        (``<output name>-activation-0-inf-0.bin``, SDK-FACTS); its log beside them; raises as :meth:`run`."""
        out_dir.mkdir(parents=True, exist_ok=True)
        command = [str(self.qaic_runner), "-t", str(artifact.path), "-a", "1", "-S", "1", "-n", "1", "-d", str(device)]
        for path in input_files:
            command += ["-i", str(path)]
        command += ["--write-output-dir", str(out_dir), "--write-output-num-samples", "1"]
        self._runner(command, out_dir / "qaic-runner.log", limit_s=300.0, device=device)
        return out_dir

    def _runner(self, command: list[str], log_path: Path, *, limit_s: float, device: int) -> str:
        """Run qaic-runner; its output, else MeasureFailure (retryable when it hung), DeviceFailure when the device
        is at fault."""
        returncode = self.children.run_logged(command, log_path, timeout_s=limit_s)
        output = log_path.read_text(errors="replace")
        if returncode is None:
            raise MeasureFailure(f"qaic-runner did not finish within {limit_s:g} s: killed", log_path=log_path,
                                 retryable=True)
        if returncode != 0:
            reason = parse_runner_error(output) or f"qaic-runner exited with code {returncode}"
            if any(hint in reason for hint in DEVICE_ERROR_HINTS):
                raise DeviceFailure(f"device QID {device}: {reason}", log_path=log_path)
            raise MeasureFailure(reason, log_path=log_path)
        return output


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


def _leading_int(value: str | None) -> int | None:
    match = re.match(r"\s*(\d+)", value or "")
    return int(match.group(1)) if match else None


