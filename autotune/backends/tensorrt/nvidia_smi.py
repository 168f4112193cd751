"""The GPUs as ``nvidia-smi`` reports them (TRTEXEC-FACTS' CSV query), numbered as CUDA, and so trtexec's
``--device``, sees them under ``CUDA_VISIBLE_DEVICES``; a GPU another process holds is busy."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from autotune.errors import AutotuneError

QUERY_FIELDS = ("index", "name", "uuid", "memory.total", "memory.used", "utilization.gpu", "compute_cap")
QUERY = [f"--query-gpu={','.join(QUERY_FIELDS)}", "--format=csv,noheader,nounits"]
NVIDIA_SMI_ENV = "AUTOTUNE_NVIDIA_SMI"
BUSY_MEMORY_MIB = 1024  # more in use than a driver and a display take: another process holds the GPU
BUSY_UTILIZATION_PCT = 5


@dataclass(frozen=True, kw_only=True)
class Gpu:
    """One line of the query; fields nvidia-smi could not read (``[N/A]``, ``[Unknown Error]``) are None."""

    smi_index: int
    name: str
    uuid: str
    memory_total_mib: int | None
    memory_used_mib: int | None
    utilization_pct: int | None
    compute_cap: str | None
    cuda_index: int | None = None  # what trtexec's --device takes; None: hidden by CUDA_VISIBLE_DEVICES

    @property
    def status(self) -> str:
        """``Ready``, ``Busy`` (another process holds it) or ``Error`` (nvidia-smi cannot read it)."""
        if self.memory_total_mib is None or self.memory_used_mib is None or self.compute_cap is None:
            return "Error"
        if self.memory_used_mib > BUSY_MEMORY_MIB or (self.utilization_pct or 0) > BUSY_UTILIZATION_PCT:
            return "Busy"
        return "Ready"

    @property
    def model(self) -> str:
        """What an engine is specific to: the GPU's name and compute capability."""
        return f"{self.name} (compute {self.compute_cap or '?'})"

    def busy_text(self) -> str:
        return f"{self.memory_used_mib} MiB in use, {self.utilization_pct}% utilization"


def find_nvidia_smi(trtexec: Path | None) -> Path:
    """$AUTOTUNE_NVIDIA_SMI, else an nvidia-smi beside trtexec (an emulated toolchain keeps both together), else
    the one on PATH."""
    given = os.environ.get(NVIDIA_SMI_ENV)
    if given and not (Path(given).is_file() and os.access(given, os.X_OK)):
        raise AutotuneError(f"${NVIDIA_SMI_ENV} {given}: no executable nvidia-smi there")
    candidates = [given] + ([str(trtexec.parent / "nvidia-smi")] if trtexec else []) + [shutil.which("nvidia-smi")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise AutotuneError(f"nvidia-smi not found (looked at ${NVIDIA_SMI_ENV}, beside trtexec and on PATH): install "
                        f"the NVIDIA driver, or set {NVIDIA_SMI_ENV} to its nvidia-smi")


def query_gpus(nvidia_smi: Path, *, environ: Mapping[str, str] | None = None) -> list[Gpu]:
    """Every GPU nvidia-smi reports, with its CUDA index under ``CUDA_VISIBLE_DEVICES``."""
    try:
        result = subprocess.run([str(nvidia_smi), *QUERY], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AutotuneError(f"could not run {nvidia_smi}: {exc}") from None
    if result.returncode != 0:
        said = (result.stdout + result.stderr).strip().splitlines()
        raise AutotuneError(f"nvidia-smi failed (exit {result.returncode}): {said[0] if said else 'no output'}")
    env = os.environ if environ is None else environ
    return number_for_cuda(parse_gpus(result.stdout), env.get("CUDA_VISIBLE_DEVICES"))


def parse_gpus(text: str) -> list[Gpu]:
    """Lines such as ``0, NVIDIA H200, GPU-5a1c..., 143771, 1, 0, 9.0``; raises AutotuneError on another shape."""
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) != len(QUERY_FIELDS) or not cells[0].isdigit():
            raise AutotuneError(f"unexpected nvidia-smi line {line.strip()!r} (expected the {len(QUERY_FIELDS)} "
                                f"fields {','.join(QUERY_FIELDS)})")
        gpus.append(Gpu(smi_index=int(cells[0]), name=cells[1], uuid=cells[2], memory_total_mib=_int(cells[3]),
                        memory_used_mib=_int(cells[4]), utilization_pct=_int(cells[5]),
                        compute_cap=cells[6] if _readable(cells[6]) else None))
    return gpus


def number_for_cuda(gpus: list[Gpu], visible: str | None) -> list[Gpu]:
    """The GPUs with the index CUDA gives them: all in nvidia-smi's order, or those ``CUDA_VISIBLE_DEVICES`` names
    (indices or UUIDs, up to the first it cannot match, as CUDA reads it) in its order; the others hidden."""
    if visible is None:
        return [_with_cuda(gpu, gpu.smi_index) for gpu in gpus]
    order: list[int] = []
    for token in (t.strip() for t in visible.split(",")):
        match = next((g for g in gpus if token == str(g.smi_index) or (token and g.uuid.startswith(token))), None)
        if match is None or match.smi_index in order:
            break
        order.append(match.smi_index)
    return [_with_cuda(gpu, order.index(gpu.smi_index) if gpu.smi_index in order else None) for gpu in gpus]


def _with_cuda(gpu: Gpu, index: int | None) -> Gpu:
    return replace(gpu, cuda_index=index)


def _readable(cell: str) -> bool:
    return bool(cell) and not cell.startswith("[")


def _int(cell: str) -> int | None:
    try:
        return int(float(cell)) if _readable(cell) else None
    except ValueError:
        return None
