"""trtexec itself: where it is found, which TensorRT (and so which contract) it is, its exact build and run command
lines, and those run as logged, time-limited, cancellable subprocesses whose failures become typed ones."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from autotune.backends._subprocess import ChildProcesses, signal_name
from autotune.backends.tensorrt.contract import Contract, Version, contract_for
from autotune.backends.tensorrt.parse import is_out_of_memory, outcome, parse_banner_version, parse_failure
from autotune.errors import AutotuneError, CompileFailure, DeviceFailure, MeasureFailure

TRTEXEC_ENV = "AUTOTUNE_TRTEXEC"
WELL_KNOWN = Path("/usr/src/tensorrt/bin/trtexec")  # where NVIDIA's Debian packages and containers put it
EMULATED_MARKER = "EMULATED"  # the project's test emulator carries this file in its root (beside bin/)
DEVICE_ERROR_HINTS = ("Cuda failure", "invalid device ordinal", "no CUDA-capable device")

Shapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]  # input -> (min, opt, max) dims


def find_trtexec(option: str | None) -> Path:
    """``--trtexec PATH``, else $AUTOTUNE_TRTEXEC, else trtexec on PATH, else NVIDIA's packages' place for it."""
    for given, where in ((option, "--trtexec"), (os.environ.get(TRTEXEC_ENV), f"${TRTEXEC_ENV}")):
        if given:
            path = Path(given).expanduser()
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise AutotuneError(f"{where} {given}: no executable trtexec there; point it at TensorRT's "
                                    f"bin/trtexec")
            return path.absolute()
    found = shutil.which("trtexec") or (str(WELL_KNOWN) if WELL_KNOWN.is_file() else None)
    if found:
        return Path(found).absolute()
    raise AutotuneError(f"trtexec not found (looked at --trtexec, ${TRTEXEC_ENV} (unset), PATH and {WELL_KNOWN}): "
                        f"install TensorRT (its tar package's bin/, or NVIDIA's libnvinfer-bin package) and pass "
                        f"--trtexec PATH or set {TRTEXEC_ENV}")


def shape_spec(shapes: dict[str, tuple[int, ...]]) -> str:
    """``input:8x3x224x224,mask:8x384``; a name with ``:`` or ``,`` quoted as trtexec takes it (``'in:0':8x3``)."""
    return ",".join(f"{_name(name)}:{'x'.join(str(d) for d in dims)}" for name, dims in shapes.items())


def _name(name: str) -> str:
    return f"'{name}'" if any(c in name for c in ":,") else name


class Trtexec:
    """One trtexec binary (TensorRT's, or the test emulator), its version read once from ``--help``."""

    def __init__(self, path: Path, *, build_timeout_s: float) -> None:
        self.path = path
        self.build_timeout_s = build_timeout_s
        self.emulated = (path.parent.parent / EMULATED_MARKER).is_file()
        self.children = ChildProcesses()
        self.version = read_version(path)
        self.contract: Contract = contract_for(self.version)

    def build_command(self, onnx: Path, *, engine: Path, shapes: Shapes, flags: list[str], device: int,
                      timing_cache: Path) -> list[str]:
        """``trtexec --onnx --saveEngine`` with min/opt/max shapes, the flags (base, then the candidate's), the
        shared timing cache and the GPU; ``--skipInference``: the engine is measured apart."""
        profile = []
        for i, flag in enumerate(("--minShapes", "--optShapes", "--maxShapes")):
            if shapes:
                profile.append(f"{flag}={shape_spec({name: dims[i] for name, dims in shapes.items()})}")
        return [str(self.path), f"--onnx={onnx}", f"--saveEngine={engine}", *profile, *flags,
                f"--timingCacheFile={timing_cache}", f"--device={device}", "--skipInference"]

    def run_command(self, engine: Path, *, shapes: dict[str, tuple[int, ...]], flags: list[str], device: int,
                    extra: list[str]) -> list[str]:
        """``trtexec --loadEngine --shapes`` with the runtime flags, the GPU, and what the measurement adds."""
        shape = [f"--shapes={shape_spec(shapes)}"] if shapes else []
        return [str(self.path), f"--loadEngine={engine}", *shape, *flags, f"--device={device}", *extra]

    def build(self, command: list[str], log_path: Path) -> str:
        """Run a build; its output, or CompileFailure with trtexec's reason (out of memory named as such)."""
        returncode = self.children.run_logged(command, log_path, timeout_s=self.build_timeout_s)
        output = log_path.read_text(errors="replace")
        if returncode is None:
            raise CompileFailure(f"trtexec still building after {self.build_timeout_s:g} s: killed", log_path=log_path)
        if returncode == -signal.SIGKILL:
            raise CompileFailure("trtexec was killed (SIGKILL: the out-of-memory killer, or from outside); to be "
                                 "retried", log_path=log_path, retryable=True)
        if returncode < 0:
            raise CompileFailure(f"trtexec crashed ({signal_name(-returncode)})", log_path=log_path)
        if returncode != 0 or outcome(output) == "FAILED":
            reason = parse_failure(output) or f"trtexec exited with code {returncode}"
            if is_out_of_memory(reason):
                raise CompileFailure(f"the engine build ran out of GPU memory: {reason}", log_path=log_path)
            if any(hint in reason for hint in DEVICE_ERROR_HINTS):  # the GPU, not the candidate
                raise CompileFailure(f"the GPU failed during the build: {reason}", log_path=log_path, retryable=True)
            raise CompileFailure(reason, log_path=log_path)
        return output

    def run(self, command: list[str], log_path: Path, *, timeout_s: float, device: int) -> str:
        """Run an engine; its output, or MeasureFailure (DeviceFailure when the GPU is at fault)."""
        returncode = self.children.run_logged(command, log_path, timeout_s=timeout_s)
        output = log_path.read_text(errors="replace")
        if returncode is None:
            raise MeasureFailure(f"trtexec did not finish within {timeout_s:g} s: killed", log_path=log_path,
                                 retryable=True)
        if returncode < 0:
            raise MeasureFailure(f"trtexec crashed ({signal_name(-returncode)})", log_path=log_path)
        if returncode != 0 or outcome(output) == "FAILED":
            reason = parse_failure(output) or f"trtexec exited with code {returncode}"
            if any(hint in reason for hint in DEVICE_ERROR_HINTS):
                raise DeviceFailure(f"GPU {device}: {reason}", log_path=log_path)
            raise MeasureFailure(reason, log_path=log_path)
        return output


def read_version(path: Path) -> Version:
    """The TensorRT version from the ``&&&& RUNNING TensorRT.trtexec [TensorRT vNNNNNN]`` line of ``--help``."""
    try:
        result = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AutotuneError(f"could not run {path} --help: {exc}") from None
    version = parse_banner_version(result.stdout + result.stderr)
    if version is None:
        raise AutotuneError(f"{path} --help printed no '&&&& RUNNING TensorRT.trtexec [TensorRT vNNNNNN]' line: "
                            f"point --trtexec at TensorRT's trtexec")
    return version
