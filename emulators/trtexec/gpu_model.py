"""Performance model of the emulated NVIDIA GPUs (stdlib only, pure functions but :func:`noisy`).

The emulated ``trtexec`` and ``nvidia-smi`` use it. In words:

* A GPU has a relative speed, a memory size and a PCIe rate. A network profile has the work of one sample at full
  occupancy (fp32 with TF32 on an H200), the batch that half fills the GPU, a fixed cost per query on the GPU, the
  host's launch cost per query without a CUDA graph, its I/O bytes, and its build-time memory per sample.
* One query of batch ``b`` alone keeps ``fill(b) = 1 - exp(-b / b_half)`` of the GPU busy (batch amortisation);
  auxiliary streams let parallel branches fill it sooner. Inference streams run queries at once: they help until
  ``streams x fill(b)`` reaches the whole GPU, then only contend.
* Precision scales the work (fp16 ~1/3 of TF32, int8 a network's factor faster than fp16, less for layers a QDQ
  model keeps in float: ``int8_speedup``, recorded in the plan; fp32 without TF32 before compute 8.0 is slower); the
  builder optimisation level, tiling level and a too-small workspace scale it a few percent either way.
* The host side: each query costs an enqueue (small with a CUDA graph) and a wake-up after completion (small with
  spin wait); a stream's cycle is the slower of the GPU chain and the host chain, so small models at small batches
  are enqueue-bound without a CUDA graph. Transfers share the PCIe rate.
* A build needs weights + batch x activations (+ workspace); past the GPU's free memory it fails, out of memory.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
from collections import namedtuple
from collections.abc import Mapping

GpuKind = namedtuple("GpuKind", ("name", "memory_mib", "compute_cap", "sms", "speed", "pcie_gb_s"))
GPUS = {
    "H200": GpuKind("NVIDIA H200", 143771, "9.0", 132, 1.0, 50.0),
    "H100": GpuKind("NVIDIA H100 80GB HBM3", 81559, "9.0", 132, 0.92, 50.0),
    "A100": GpuKind("NVIDIA A100-SXM4-80GB", 81920, "8.0", 108, 0.45, 24.0),
    "L4": GpuKind("NVIDIA L4", 23034, "8.9", 58, 0.16, 24.0),
    "T4": GpuKind("Tesla T4", 15360, "7.5", 40, 0.07, 12.0),
}
STATES = ("ready", "busy", "lost")  # busy: another process holds it; lost: fallen off the bus
BUSY_USED_MIB = 31000
RESERVED_MIB = 600  # the driver's and the CUDA context's share, never free for a build

Profile = namedtuple("Profile", ("name", "work_us", "b_half", "gpu_fixed_us", "launch_us", "in_bytes", "out_bytes",
                                 "act_mb", "weights_mb", "scratch_mb", "branches", "build_s"))
PROFILES = {
    "resnet50": Profile("resnet50", 95.0, 12.0, 120.0, 450.0, 602112, 4000, 40.0, 100.0, 6.0, 1, 45.0),
    "retinanet": Profile("retinanet", 3900.0, 2.5, 300.0, 900.0, 7680000, 2400000, 1400.0, 150.0, 64.0, 5, 110.0),
    "bert": Profile("bert", 1100.0, 6.0, 250.0, 1200.0, 9216, 3072, 220.0, 1300.0, 40.0, 1, 150.0),
}
PRECISION_WORK = {"fp32": 1.0, "tf32": 1.0, "fp16": 0.34, "bf16": 0.34, "int8": 0.17, "int8-fp32": 0.22}
INT8_OVER_FP16 = {"resnet50": 1.9, "retinanet": 1.6, "bert": 1.45}  # int8's speed-up over fp16 (generic: 1.7)
PRECISION_MEMORY = {"fp32": 1.0, "tf32": 1.0, "fp16": 0.5, "bf16": 0.5, "int8": 0.3, "int8-fp32": 0.35}
OPT_LEVEL_WORK = {0: 1.45, 1: 1.22, 2: 1.07, 3: 1.0, 4: 0.972, 5: 0.958}
OPT_LEVEL_BUILD = {0: 0.15, 1: 0.3, 2: 0.6, 3: 1.0, 4: 2.5, 5: 6.0}


def generic_profile(model_bytes: int) -> Profile:
    """An unknown network whose sizes scale with its file."""
    mb = max(float(model_bytes), 1.0) / 1e6
    return Profile("generic", 2.0 + 4.0 * mb, 8.0, 20.0 + 2.0 * mb, 60.0 + 8.0 * mb, 4096, 1024, 1.0 + 0.5 * mb,
                   2.0 * mb, 0.5 + 0.1 * mb, 1, 2.0 + 0.5 * mb)


def profile_for_model(path: str, model_bytes: int) -> Profile:
    """From the model file's name, as the qaic emulator does: retinanet, bert, resnet (-> resnet50), else generic."""
    name = os.path.basename(path).lower()
    for key, profile in (("retinanet", "retinanet"), ("bert", "bert"), ("resnet", "resnet50")):
        if key in name:
            return PROFILES[profile]
    return generic_profile(model_bytes)


def effective_precision(precision: str, compute_cap: str, tf32: bool) -> str:
    """What the GPU runs: fp32 is TF32 from compute 8.0 on unless --noTF32; bf16 needs 8.0."""
    cap = float(compute_cap)
    if precision == "bf16" and cap < 8.0:
        return "fp32"
    if precision == "fp32" and cap >= 8.0 and tf32:
        return "tf32"
    return precision


def int8_speedup(profile: Profile, quantized_share: float = 1.0) -> float:
    """How much faster an int8 engine runs than fp16: the network's factor for its compute nodes in int8, less for
    a share kept in float (a QDQ model's float layers)."""
    return round(1.0 + (INT8_OVER_FP16.get(profile.name, 1.7) - 1.0) * quantized_share, 4)


def _level_noise(profile: Profile, what: str, level: int) -> float:
    """A fixed few-percent twist per network and level: no two networks rank the levels quite alike."""
    digest = hashlib.sha256(f"{profile.name}-{what}-{level}".encode()).digest()
    return 1.0 + (digest[0] / 255.0 - 0.5) * 0.04


def aux_effective(profile: Profile, aux_streams: int | None) -> int:
    """Auxiliary streams the builder uses: the heuristic (None) takes half the parallel branches."""
    return profile.branches // 2 if aux_streams is None else min(aux_streams, profile.branches)


def build_memory_mb(profile: Profile, cfg: Mapping, gpu: GpuKind) -> float:
    """Device memory a build of ``cfg`` needs (the builder holds every tactic's buffers of the max batch)."""
    precision = effective_precision(cfg["precision"], gpu.compute_cap, cfg.get("tf32", True))
    scale = PRECISION_MEMORY[precision]
    batch = cfg["batch"]
    activations = batch * profile.act_mb * scale * (1.0 + 0.1 * aux_effective(profile, cfg.get("aux_streams")))
    workspace = batch * profile.scratch_mb
    if cfg.get("workspace_mib") is not None:
        workspace = min(workspace, cfg["workspace_mib"])
    return profile.weights_mb * scale + activations + workspace


def build_seconds(profile: Profile, cfg: Mapping, *, cache_hit: bool) -> float:
    """Nominal build time: minutes at level 3 for large networks, much longer at 4-5; a timing cache hit cuts it."""
    precision_cost = {"int8": 1.5, "int8-fp32": 1.4, "fp16": 1.2, "bf16": 1.2}.get(cfg["precision"], 1.0)
    seconds = (profile.build_s * OPT_LEVEL_BUILD[cfg["opt_level"]] * (1.0 + 0.4 * cfg["tiling_level"])
               * precision_cost * (1.0 + math.log2(max(1, cfg["batch"])) / 8.0))
    return seconds * (0.35 if cache_hit else 1.0)


def work_factor(profile: Profile, cfg: Mapping, gpu: GpuKind, batch: int) -> float:
    """Work per sample relative to TF32 at level 3: precision, builder and tiling levels, workspace."""
    precision = effective_precision(cfg["precision"], gpu.compute_cap, cfg.get("tf32", True))
    fp32_penalty = 2.2 if precision == "fp32" else 1.0
    level = cfg["opt_level"]
    opt = OPT_LEVEL_WORK[level] * (_level_noise(profile, "opt", level) if level != 3 else 1.0)
    tiling = 1.0 - 0.05 * cfg["tiling_level"] / 3.0 / (1.0 + batch / 8.0)
    needed = batch * profile.scratch_mb
    workspace = cfg.get("workspace_mib")
    short = 0.0 if workspace is None or needed <= 0 else max(0.0, 1.0 - workspace / needed)
    base = PRECISION_WORK["fp16"] / cfg["int8_speedup"] if precision == "int8" and "int8_speedup" in cfg \
        else PRECISION_WORK[precision]
    return base * fp32_penalty * opt * tiling * (1.0 + 0.12 * short)


def query_times(profile: Profile, cfg: Mapping, gpu: GpuKind, run: Mapping) -> dict[str, float]:
    """Per-query figures in microseconds (h2d, compute, d2h, enqueue) and the queries per second of the whole run.

    ``run``: batch (of the --shapes), streams, cuda_graph, spin_wait, transfers, busy (another process on the GPU).
    """
    batch, streams = run["batch"], run["streams"]
    boost = 1.0 + 0.25 * aux_effective(profile, cfg.get("aux_streams"))
    fill = 1.0 - math.exp(-batch * boost / profile.b_half)
    work = profile.work_us * work_factor(profile, cfg, gpu, batch) / gpu.speed
    alone = profile.gpu_fixed_us * (0.6 if run["cuda_graph"] else 1.0) + batch * work / fill
    occupancy = batch * work / alone  # the share of the whole GPU one query keeps busy while it runs alone
    slow = max(1.0, streams * occupancy)  # streams share the GPU once together they would more than fill it
    compute = alone * slow * (1.0 + 0.04 * (streams - 1)) * (1.8 if run.get("busy") else 1.0)
    rate = gpu.pcie_gb_s * 1e3  # bytes per microsecond
    h2d = batch * profile.in_bytes / rate if run["transfers"] else 0.0
    d2h = batch * profile.out_bytes / rate if run["transfers"] else 0.0
    enqueue = (30.0 if run["cuda_graph"] else profile.launch_us) + 10.0
    wake = 8.0 if run["spin_wait"] else 55.0
    gpu_chain, host_chain = compute + 0.35 * (h2d + d2h), enqueue + wake
    cycle = (gpu_chain ** 4 + host_chain ** 4) ** 0.25
    qps = streams / cycle * 1e6
    if run["transfers"] and h2d + d2h > 0:
        cap = gpu.pcie_gb_s * 1e9 / (batch * (profile.in_bytes + profile.out_bytes))
        qps = (qps ** -4 + cap ** -4) ** -0.25
    return {"h2d": h2d, "compute": compute, "d2h": d2h, "enqueue": enqueue, "qps": qps}


def compute_variation(times: Mapping[str, float], run: Mapping, noise: float) -> float:
    """Coefficient of variation of the GPU compute time: short kernels, parallel streams and blocking syncs jitter."""
    return (noise + 0.035 * math.exp(-times["compute"] / 300.0) + 0.01 * (run["streams"] - 1)
            + (0.0 if run["spin_wait"] else 0.012))


def noisy(value: float, rng: random.Random, rel: float) -> float:
    """``value`` with multiplicative Gaussian noise of relative std-dev ``rel`` (never below half)."""
    return value * max(0.5, 1.0 + rng.gauss(0.0, rel))


def seeded_rng(*parts: object) -> random.Random:
    """A generator fixed by its parts (seed, engine, run settings, the plan's runs before this one): the same parts
    print the same figures."""
    return random.Random(int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big"))


# ------------------------------------------------------------------ emulator environment

def env_gpus(environ: Mapping[str, str]) -> list[tuple[GpuKind, str]]:
    """(kind, state) per GPU: TRT_EMU_GPUS_FILE's text when that file exists (read at every call, so a GPU can change
    state mid-run), else TRT_EMU_GPUS (comma list of KIND[:STATE], default one ready H200)."""
    raw = environ.get("TRT_EMU_GPUS", "H200")
    path = environ.get("TRT_EMU_GPUS_FILE")
    if path and os.path.isfile(path):
        with open(path) as handle:
            raw = handle.read()
    gpus = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        kind, _, state = item.partition(":")
        gpus.append((GPUS.get(kind.upper(), GPUS["H200"]), state.lower() if state.lower() in STATES else "ready"))
    return gpus or [(GPUS["H200"], "ready")]


def env_version(environ: Mapping[str, str]) -> tuple[int, int, int]:
    """TRT_EMU_VERSION: ``10`` (10.13.0, the default), ``11`` (11.1.0) or a full ``X.Y.Z``."""
    raw = environ.get("TRT_EMU_VERSION", "10").strip()
    named = {"10": "10.13.0", "11": "11.1.0"}.get(raw, raw)
    try:
        major, minor, patch = (int(part) for part in named.split("."))
    except ValueError:
        return 10, 13, 0
    return major, minor, patch


def env_float(environ: Mapping[str, str], name: str, default: float) -> float:
    try:
        return float(environ.get(name, default))
    except ValueError:
        return default


def gpu_uuid(index: int, kind: GpuKind) -> str:
    digest = hashlib.sha256(f"{index}-{kind.name}".encode()).hexdigest()
    return f"GPU-{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
