"""Performance model of the emulated Qualcomm Cloud AI 100 card (stdlib only, pure functions).

The emulated ``qaic-exec`` and ``qaic-runner`` use this module; benchmarks may import it to compute
an exhaustive optimum cheaply.  Everything here is deterministic except :func:`noisy`, which draws
from a caller-supplied ``random.Random``.

A compile configuration ``cfg`` is a dict with the keys

* ``cores`` (int): ``-aic-num-cores``
* ``ols`` (int): ``-ols``
* ``mos`` (list[int]): ``-mos``, one entry per SDP cluster
* ``clusters`` (list[int]): ``-sdp-cluster-sizes`` (``[cores]`` when not given)
* ``batch`` (int): compiled batch size
* ``multicast`` (bool): ``-multicast-weights``
* ``depth_first`` (bool): ``-aic-enable-depth-first``

and optionally ``precision`` (``"int8"`` default, or ``"fp16"``) and ``mxfp6`` (bool).

Model of one instance (``cores`` NSPs), in words:

* Available parallelism ``P = gran * batch**gamma * ols**ols_gain * (1 + 0.6 (mos-1))``; a cluster
  of ``s`` cores keeps ``s * (1 - exp(-P/s))`` of them busy (more cores: diminishing returns).
* ``ols`` and ``mos`` cost split overhead; more cores cost synchronisation; a fixed per-execution
  overhead is amortised by the batch.
* On-chip memory: 8 MB VTCM per NSP.  Working set per core = (largest op weights + peak op
  activations x batch) / mos**0.9 (activations shrunk by depth-first scheduling).  Above 8 MB the
  core spills to DDR and slows down; above 3x the compile fails.  VTCM left over keeps weights
  resident; the rest is streamed from DDR at every execution (once per instance with multicast,
  duplicated per core without).
* SDP clusters form a pipeline: early stages hold large activations, late stages large weights;
  with more than one execution in flight the stages overlap.
* Card: activations share DDR bandwidth, host submission rate and PCIe; a soft minimum of the
  activations' raw rate and these ceilings gives the card throughput.
* Set size: with few inferences in flight the host leaves the activation idle between executions.

Card-wide constants are a :class:`Card`; :func:`surface` draws a family of surfaces (a profile, a card and a noise
level each) from a seed, for choosing a search strategy on surfaces it was not tuned on (``QAIC_EMU_SURFACE=N``
makes the emulated tools use surface N).
"""

from __future__ import annotations

import functools
import math
import os
import random
from collections import namedtuple
from collections.abc import Mapping
from typing import Any

VTCM_MB = 8.0  # on-chip memory per NSP (a public fact: every surface keeps it)
MAX_CORES = 16

Card = namedtuple("Card", (
    "vtcm_fail_ratio",  # working set beyond this multiple of VTCM does not compile
    "spill_power",  # how sharply a working set beyond VTCM slows a core down (the VTCM cliff)
    "idle_scale",  # host idle gap decays as exp(-(S-1)/scale)
    "set_size_cost",  # per extra in-flight inference: host bookkeeping
    "ols_cross_gain",  # how ols adds cross-core parallelism
    "host_pcie_mb_s",  # one activation's host transfer rate (adds to the idle gap)
    "ceiling_sharpness",  # p of the soft minimum between raw rate and card ceilings
    "ddr_scale",  # card DDR bandwidth relative to the SKU's
    "host_scale",  # host submissions per second relative to the SKU's
    "clock_scale",  # NSP clock relative to the SKU's
    "crowding",  # each activation beyond the first slows every activation's cycle by this share (host, DDR)
))
Card.__doc__ = """Card-wide constants of the model: one surface's, or the default card's."""
DEFAULT_CARD = Card(vtcm_fail_ratio=3.0, spill_power=1.2, idle_scale=1.5, set_size_cost=0.0012,
                    ols_cross_gain=0.3, host_pcie_mb_s=3000.0, ceiling_sharpness=6.0, ddr_scale=1.0,
                    host_scale=1.0, clock_scale=1.0, crowding=0.0)
VTCM_FAIL_RATIO = DEFAULT_CARD.vtcm_fail_ratio


_PROFILE_FIELDS = (
    "name",
    "work_us",  # NSP-microseconds of compute per sample at full utilisation
    "fixed_us",  # device overhead per execution (launch, DMA setup, sync)
    "host_us",  # host gap between executions with a single inference in flight
    "gran",  # independent chunks per sample for the cores of a cluster, at ols=1
    "gamma",  # how batch adds cross-core parallelism
    "tfill",  # thread-level work per sample inside one NSP, at ols=1
    "tb",  # how batch adds thread-level work
    "ols_gain",  # how ols adds thread-level work
    "ols_cost",  # split overhead per extra ols step
    "mos_cost",  # overhead per extra mos step
    "sync_cost",  # overhead per extra core in a cluster
    "spill_cost",  # slowdown per unit of VTCM overflow ratio
    "w_op_mb",  # largest op's weights (VTCM working set)
    "act_op_mb",  # peak op activations per sample (VTCM working set)
    "w_lo",  # op weight size at the start of the network relative to the end
    "a_lo",  # op activation size at the end of the network relative to the start
    "weights_mb",  # total weights (DRAM footprint)
    "stream_mb",  # weight traffic per execution when nothing is resident
    "act_traffic_mb",  # DDR traffic per sample for intermediate tensors
    "io_mb",  # host I/O per sample (input + output buffers)
    "scratch_mb",  # device DRAM scratch per sample
    "df_act",  # activation working-set factor with depth-first scheduling
    "df_cost",  # compute overhead of depth-first scheduling
    "xfer_us",  # per-sample cost of handing activations to the next SDP stage
    "dup_frac",  # weight duplication per extra core without multicast (at mos=1)
)


class Profile(namedtuple("Profile", _PROFILE_FIELDS)):
    """What the model needs to know about a network (int8 figures; fp16 scales them).

    An immutable named tuple (cheap to import): build with keywords, copy with ``_replace``.
    """

    __slots__ = ()


PROFILES: dict[str, Profile] = {
    "resnet50": Profile(
        name="resnet50", work_us=560.0, fixed_us=60.0, host_us=450.0,
        gran=1.6, gamma=0.7, tfill=1.0, tb=0.3, ols_gain=0.55, ols_cost=0.016, mos_cost=0.035, sync_cost=0.012,
        spill_cost=0.55, w_op_mb=2.4, act_op_mb=0.75, w_lo=0.15, a_lo=0.2,
        weights_mb=25.5, stream_mb=25.5, act_traffic_mb=1.2, io_mb=0.16, scratch_mb=12.0,
        df_act=0.8, df_cost=0.03, xfer_us=4.0, dup_frac=0.55,
    ),
    "retinanet": Profile(
        name="retinanet", work_us=44000.0, fixed_us=400.0, host_us=900.0,
        gran=10.0, gamma=0.5, tfill=2.0, tb=0.2, ols_gain=0.5, ols_cost=0.025, mos_cost=0.05, sync_cost=0.02,
        spill_cost=0.35, w_op_mb=2.4, act_op_mb=7.5, w_lo=0.25, a_lo=0.15,
        weights_mb=37.0, stream_mb=37.0, act_traffic_mb=48.0, io_mb=8.0, scratch_mb=64.0,
        df_act=0.55, df_cost=0.015, xfer_us=120.0, dup_frac=0.5,
    ),
    "bert": Profile(
        name="bert", work_us=15800.0, fixed_us=350.0, host_us=700.0,
        gran=6.0, gamma=0.6, tfill=1.35, tb=0.25, ols_gain=0.6, ols_cost=0.03, mos_cost=0.05, sync_cost=0.02,
        spill_cost=0.25, w_op_mb=4.0, act_op_mb=2.6, w_lo=1.0, a_lo=1.0,
        weights_mb=340.0, stream_mb=90.0, act_traffic_mb=6.0, io_mb=0.02, scratch_mb=24.0,
        df_act=0.95, df_cost=0.03, xfer_us=60.0, dup_frac=0.45,
    ),
}


def generic_profile(model_bytes: int) -> Profile:
    """A profile for an unknown model whose size parameters scale with its file size."""
    mb = max(float(model_bytes), 1.0) / 1e6
    return Profile(
        name="generic", work_us=40.0 + 12.0 * mb, fixed_us=40.0 + 0.3 * mb, host_us=120.0 + 0.4 * mb,
        gran=1.5, gamma=0.7, tfill=1.0, tb=0.3, ols_gain=0.55, ols_cost=0.02, mos_cost=0.04, sync_cost=0.015,
        spill_cost=0.5, w_op_mb=min(4.0, 0.05 + 0.04 * mb), act_op_mb=0.3 + 0.02 * mb,
        w_lo=0.3, a_lo=0.3, weights_mb=0.25 * mb, stream_mb=0.25 * mb, act_traffic_mb=0.1 + 0.02 * mb,
        io_mb=0.1 + 0.002 * mb, scratch_mb=2.0 + 0.1 * mb, df_act=0.8, df_cost=0.03, xfer_us=5.0,
        dup_frac=0.5,
    )


PROFILES["generic"] = generic_profile(10_000_000)

def profile_for_model(path: str) -> str:
    """Profile name from a model file name: retinanet, bert, resnet50 or generic."""
    name = os.path.basename(str(path)).lower()
    if "retinanet" in name:
        return "retinanet"
    if "bert" in name:
        return "bert"
    if "resnet" in name:
        return "resnet50"
    return "generic"


def resolve_profile(profile: "Profile | str", model_bytes: int | None = None) -> Profile:
    """A Profile from a Profile or a name; ``generic`` is scaled by ``model_bytes`` when given."""
    if isinstance(profile, Profile):
        return profile
    if profile == "generic" and model_bytes is not None:
        return generic_profile(model_bytes)
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown profile {profile!r}") from None


# ---------------------------------------------------------------------------------------- SKUs

Sku = namedtuple("Sku", ("name", "nsp", "dram_mb", "ddr_bw_mb_s", "clock", "host_exec_per_s",
                         "pcie_mb_s"))
Sku.__doc__ = """A card: name, NSPs, DRAM (MB), DDR bandwidth (MB/s), relative NSP clock, host
submissions per second, PCIe MB/s."""


def sku_for_nsp(nsp: int) -> Sku:
    """The emulated card for a number of NSPs per device (16 Pro, 14 Standard, 8 AEDK)."""
    if nsp >= 16:
        return Sku("PCIe Pro", nsp, 32768.0, 136_000.0, 1.0, 32_000.0, 14_000.0)
    if nsp >= 9:
        return Sku("PCIe Standard", nsp, 16384.0, 136_000.0, 0.99, 32_000.0, 14_000.0)
    return Sku("AEDK", nsp, 8192.0, 68_000.0, 0.6, 16_000.0, 7_000.0)


def dram_reported_mb(nsp: int) -> int:
    """`Dram Total` as qaic-util prints it (a little is reserved by firmware)."""
    return int(sku_for_nsp(nsp).dram_mb * 16308 / 16384)


# --------------------------------------------------------------------------------- config checks

def normalize_cfg(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Fill defaults: clusters [cores], mos [1]*clusters, ols 1, batch 1, flags off."""
    cores = int(cfg.get("cores", 1))
    clusters = list(cfg.get("clusters") or [cores])
    mos = cfg.get("mos")
    if mos is None or (isinstance(mos, (list, tuple)) and not mos):
        mos = [1] * len(clusters)
    elif isinstance(mos, int):
        mos = [mos]
    return {
        "cores": cores,
        "ols": int(cfg.get("ols", 1)),
        "mos": [int(m) for m in mos],
        "clusters": [int(c) for c in clusters],
        "batch": int(cfg.get("batch", 1)),
        "multicast": bool(cfg.get("multicast", False)),
        "depth_first": bool(cfg.get("depth_first", False)),
        "precision": str(cfg.get("precision", "int8")).lower(),
        "mxfp6": bool(cfg.get("mxfp6", False)),
    }


def config_error(cfg: Mapping[str, Any]) -> str | None:
    """Option validation qaic-exec does before compiling; the reason, or None."""
    c = normalize_cfg(cfg)
    cores, clusters, mos = c["cores"], c["clusters"], c["mos"]
    if not 1 <= cores <= MAX_CORES:
        return f"Invalid -aic-num-cores={cores}: must be between 1 and {MAX_CORES}"
    if c["ols"] < 1:
        return f"Invalid -ols={c['ols']}: must be a positive integer"
    if c["batch"] < 1:
        return f"Invalid batch size {c['batch']}: must be a positive integer"
    if any(s < 1 for s in clusters):
        return "Invalid -sdp-cluster-sizes: every cluster needs at least 1 core"
    if sum(clusters) != cores:
        sizes = "+".join(str(s) for s in clusters)
        return (f"Sum of -sdp-cluster-sizes ({sizes}={sum(clusters)}) does not match "
                f"-aic-num-cores={cores}")
    if len(mos) != len(clusters):
        return (f"Number of -mos entries ({len(mos)}) does not match number of SDP clusters "
                f"({len(clusters)})")
    for m, s in zip(mos, clusters):
        if m < 1:
            return f"Invalid -mos entry {m}: must be a positive integer"
        if m > s:
            return f"-mos entry {m} exceeds its SDP cluster size {s}"
    return None


# ------------------------------------------------------------------------------- instance model

def _scales(p: Profile, c: Mapping[str, Any]) -> tuple[float, float, float]:
    """(compute, weight bytes, activation bytes) multipliers for the precision."""
    if c.get("precision", "int8") == "fp16":
        wscale = 0.75 if c.get("mxfp6") else 2.0
        return 2.7 * (1.04 if c.get("mxfp6") else 1.0), wscale, 2.0
    return 1.0, 1.0, 1.0


def _instance(p: Profile, c: Mapping[str, Any], nsp: int = 16, card: Card = DEFAULT_CARD) -> dict[str, float]:
    """Per-instance figures: latency, pipelined service time, DDR traffic, working sets."""
    cores, ols, b = c["cores"], c["ols"], c["batch"]
    clusters, mos = c["clusters"], c["mos"]
    k = len(clusters)
    cscale, wscale, ascale = _scales(p, c)
    clock = sku_for_nsp(nsp).clock * card.clock_scale
    df = p.df_act if c["depth_first"] else 1.0
    dfc = 1.0 + p.df_cost if c["depth_first"] else 1.0
    mcast = c["multicast"] and cores > 1
    mcc = 1.015 if mcast else 1.0
    ols_over = 1.0 + p.ols_cost * (ols - 1) ** 1.15
    # hardware threads of one NSP kept busy (ols splits ops finer; batch adds independent work)
    u_thread = 1.0 - math.exp(-p.tfill * b ** p.tb * ols ** p.ols_gain)
    # independent work to spread over the cores of a cluster
    pgrain = p.gran * b ** p.gamma * ols ** card.ols_cross_gain

    stage_times: list[float] = []
    ws_max = 0.0
    resident = 0.0
    stream = 0.0
    spill_traffic = 0.0
    x0 = 0.0
    for s, m in zip(clusters, mos):
        frac = s / cores
        x1 = x0 + frac
        # op weights grow along the network, op activations shrink
        wws = p.w_op_mb * (p.w_lo + (1.0 - p.w_lo) * x1) * wscale
        aws = p.act_op_mb * (p.a_lo + (1.0 - p.a_lo) * (1.0 - x0) ** 2) * ascale * b * df
        ws = (wws + aws) / m ** 0.9
        ws_max = max(ws_max, ws)
        ratio = ws / VTCM_MB
        spill = 1.0 + p.spill_cost * max(0.0, ratio - 1.0) ** card.spill_power
        par = pgrain * (1.0 + 0.6 * (m - 1))
        ceff = s * (1.0 - math.exp(-par / s)) * u_thread
        t = (frac * b * p.work_us * cscale / (ceff * clock)
             * ols_over * (1.0 + p.mos_cost * (m - 1)) * (1.0 + p.sync_cost * (s - 1))
             * spill * dfc * mcc)
        # weights of this stage: share of the total (weights grow along the network)
        wshare = frac * (p.w_lo + (1.0 - p.w_lo) * (x0 + x1) / 2.0) / ((1.0 + p.w_lo) / 2.0)
        dup = 1.0 if mcast else 1.0 + (s - 1) * p.dup_frac / m
        resident += s * max(0.0, VTCM_MB - ws) * 0.6
        stream += p.stream_mb * wscale * wshare * dup
        spill_traffic += frac * b * max(0.0, ws - VTCM_MB) * 2.0
        # DMA limit of the stage's cores (10 GB/s per NSP), overlapped with compute
        stage_times.append(t)
        x0 = x1

    wtot = p.weights_mb * wscale
    resident_frac = min(1.0, resident / wtot) if wtot > 0 else 1.0
    stream *= 1.0 - resident_frac
    act_traffic = b * p.act_traffic_mb * ascale * (0.75 + 0.25 * df)
    ddr_exec = stream + act_traffic + spill_traffic + b * p.io_mb
    dma_us = ddr_exec / (cores * 10_000.0) * 1e6
    # DMA and compute overlap: soft maximum
    times = [(t ** 3 + (dma_us * s / cores) ** 3) ** (1.0 / 3.0) for t, s in zip(stage_times, clusters)]
    fixed = p.fixed_us * (1.0 + 0.03 * (cores - 1)) + 0.3 * p.fixed_us * (k - 1)
    xfer = p.xfer_us * b * (k - 1) * ascale
    latency = fixed + sum(times) + xfer
    service = fixed + max(times) + xfer / max(k - 1, 1) if k > 1 else latency
    return {
        "latency_us": latency,
        "service_us": service,
        "stages": float(k),
        "ddr_mb_per_exec": ddr_exec,
        "ws_mb": ws_max,
        "resident_frac": resident_frac,
    }


def working_set_mb(profile: "Profile | str", cfg: Mapping[str, Any], card: Card = DEFAULT_CARD) -> float:
    """Largest working set per NSP (MB) of the compiled instance."""
    return _instance(resolve_profile(profile), normalize_cfg(cfg), card=card)["ws_mb"]


def compile_check(profile: "Profile | str", cfg: Mapping[str, Any], card: Card = DEFAULT_CARD) -> str | None:
    """Why qaic-exec refuses this config (the `Error message:` text), or None if it compiles."""
    err = config_error(cfg)
    if err:
        return err
    ws = working_set_mb(profile, cfg, card)
    if ws > card.vtcm_fail_ratio * VTCM_MB:
        return (f"Unable to fit working set in VTCM: {ws:.1f} MB per NSP needed, "
                f"{VTCM_MB:.0f} MB VTCM available (increase -mos or reduce the batch size)")
    return None


def dram_per_activation_mb(profile: "Profile | str", cfg: Mapping[str, Any], set_size: int) -> float:
    """Device DRAM one activation needs: weights, scratch, and I/O buffers for the set size."""
    p = resolve_profile(profile)
    c = normalize_cfg(cfg)
    _, wscale, ascale = _scales(p, c)
    b = c["batch"]
    return p.weights_mb * wscale + b * p.scratch_mb * ascale + b * p.io_mb * max(1, set_size) * 2


def activation_check(profile: "Profile | str", cfg: Mapping[str, Any], activations: int,
                     set_size: int, nsp: int) -> str | None:
    """Why qaic-runner cannot activate it (the reason after `activate failed:`), or None."""
    c = normalize_cfg(cfg)
    if activations < 1 or c["cores"] * activations > nsp:
        return "Failed to allocate NSP resources"
    need = activations * dram_per_activation_mb(profile, c, set_size)
    if need > sku_for_nsp(nsp).dram_mb:
        return "Memory resource exhausted"
    return None


def exec_latency_us(profile: "Profile | str", cfg: Mapping[str, Any], nsp: int = 16,
                    card: Card = DEFAULT_CARD) -> float:
    """Service time of one batch execution on one instance (µs), noise free."""
    return _instance(resolve_profile(profile), normalize_cfg(cfg), nsp, card)["latency_us"]


def _cycle(p: Profile, c: Mapping[str, Any], set_size: int, nsp: int,
           card: Card = DEFAULT_CARD) -> tuple[float, dict[str, float]]:
    inst = _instance(p, c, nsp, card)
    s = max(1, int(set_size))
    k = int(inst["stages"])
    service = max(inst["latency_us"] / min(s, k), inst["service_us"])
    idle = (p.host_us + c['batch'] * p.io_mb * 1e6 / card.host_pcie_mb_s) * math.exp(-(s - 1) / card.idle_scale)
    cycle = (service + idle) * (1.0 + card.set_size_cost * (s - 1))
    return cycle, inst


def throughput(profile: "Profile | str", cfg: Mapping[str, Any], activations: int, set_size: int,
               nsp: int, card: Card = DEFAULT_CARD) -> float:
    """Card throughput in samples/s, noise free.

    0.0 where the config does not compile (:func:`compile_check`) or cannot be activated
    (:func:`activation_check`), so an exhaustive scan can call this alone.
    """
    p = resolve_profile(profile)
    c = normalize_cfg(cfg)
    if config_error(c) or activation_check(p, c, activations, set_size, nsp):
        return 0.0
    sku = sku_for_nsp(nsp)
    cycle, inst = _cycle(p, c, set_size, nsp, card)
    if inst["ws_mb"] > card.vtcm_fail_ratio * VTCM_MB:
        return 0.0
    b = c["batch"]
    raw = activations * b / (cycle * (1.0 + card.crowding * (activations - 1))) * 1e6
    caps = [
        sku.ddr_bw_mb_s * card.ddr_scale * b / inst["ddr_mb_per_exec"],  # DDR bandwidth, shared by activations
        sku.host_exec_per_s * card.host_scale * b,  # host submissions
        sku.pcie_mb_s / p.io_mb,  # PCIe transfers
    ]
    q = card.ceiling_sharpness
    inv = (1.0 / raw) ** q + sum((1.0 / cap) ** q for cap in caps)
    return inv ** (-1.0 / q)


def execution_rate(profile: "Profile | str", cfg: Mapping[str, Any], activations: int, set_size: int,
                   nsp: int, card: Card = DEFAULT_CARD) -> float:
    """Executions (batches) per second of the whole card, noise free."""
    c = normalize_cfg(cfg)
    return throughput(profile, c, activations, set_size, nsp, card) / c["batch"]


def host_latency_us(profile: "Profile | str", cfg: Mapping[str, Any], activations: int, set_size: int,
                    nsp: int, card: Card = DEFAULT_CARD) -> float:
    """Mean time from enqueue to completion of one execution with `set_size` in flight (µs)."""
    c = normalize_cfg(cfg)
    rate = execution_rate(profile, c, activations, set_size, nsp, card)
    if rate <= 0:
        return float("inf")
    per_activation_cycle = activations / rate * 1e6
    return max(exec_latency_us(profile, c, nsp, card), set_size * per_activation_cycle)


def noisy(value: float, rng: random.Random, rel: float) -> float:
    """`value` with multiplicative Gaussian noise of relative std-dev `rel` (never below 50%)."""
    return value * max(0.5, 1.0 + rng.gauss(0.0, rel))


# ------------------------------------------------------------------------------ surface family

Surface = namedtuple("Surface", ("index", "profile", "card", "noise", "held_out"))
Surface.__doc__ = """One emulated card surface: a network profile, card constants and measurement noise."""
SURFACES = 300  # surfaces 0..299 of the family
TUNING = frozenset(range(0, 30))  # every default of the search was chosen on these
HELD_OUT = frozenset(range(30, 40))  # never used to choose anything; reported on their own
# a second held-out set, drawn on 2026-12-01 once the first had been looked at five times
FRESH_HELD_OUT = frozenset(range(40, 50))
# drawn on 2026-12-01 (third session) once the first two had been looked at six and two times: the third set decides
# between two variants of the default, each run on it once; the fourth confirms the one chosen, run once
THIRD_HELD_OUT = frozenset(range(50, 60))
FOURTH_HELD_OUT = frozenset(range(60, 70))
# drawn on 2026-12-02, every earlier set having been looked at: the fifth decides whether a measurement rule changes,
# the sixth confirms the default chosen (bench/RESULTS.md gives the rule, written before either was run)
FIFTH_HELD_OUT = frozenset(range(70, 80))
SIXTH_HELD_OUT = frozenset(range(80, 90))
# drawn on 2026-12-02 (third session), every earlier set having been looked at: the seventh decides whether a
# climb tries the SDP split and a larger batch first, the eighth confirms the default chosen (the rule is in
# bench/RESULTS.md, written before either was drawn)
SEVENTH_HELD_OUT = frozenset(range(90, 100))
EIGHTH_HELD_OUT = frozenset(range(100, 110))
# drawn on 2026-12-06 once every held-out set had been looked at: 90 more tuning surfaces (a tuning set of 30 had
# read the default at 11 compiles to 97% where the held-out sets read 18), and one large held-out set that reads the
# default against local search once, with intervals (the reading was written in bench/RESULTS.md before it ran)
MORE_TUNING = frozenset(range(110, 200))
NINTH_HELD_OUT = frozenset(range(200, 300))
_BASES = ("resnet50", "retinanet", "bert")
# per field of a profile: the range of its multiplicative perturbation (log-uniform)
_PERTURB = {
    "work_us": (0.6, 1.7), "fixed_us": (0.4, 2.5), "host_us": (0.25, 4.0), "gran": (0.4, 3.0),
    "gamma": (0.75, 1.3), "tfill": (0.6, 1.6), "tb": (0.6, 1.6), "ols_gain": (0.5, 1.6), "ols_cost": (0.4, 2.5),
    "mos_cost": (0.4, 2.5), "sync_cost": (0.3, 3.0), "spill_cost": (0.3, 3.0), "w_op_mb": (0.5, 2.0),
    "act_op_mb": (0.4, 3.0), "weights_mb": (0.6, 1.6), "stream_mb": (0.5, 1.8), "act_traffic_mb": (0.5, 2.0),
    "io_mb": (0.5, 2.0), "scratch_mb": (0.6, 1.6), "df_act": (0.85, 1.1), "df_cost": (0.5, 2.0),
    "xfer_us": (0.3, 3.0), "dup_frac": (0.5, 1.5),
}
_CARD_RANGES = {  # per card constant: (low, high), drawn uniformly
    "vtcm_fail_ratio": (2.2, 4.0), "spill_power": (0.9, 1.7), "idle_scale": (0.8, 3.0),
    "set_size_cost": (0.0004, 0.004), "ols_cross_gain": (0.15, 0.45), "host_pcie_mb_s": (2000.0, 4500.0),
    "ceiling_sharpness": (3.0, 10.0), "ddr_scale": (0.5, 1.5), "host_scale": (0.5, 1.5), "clock_scale": (0.9, 1.1),
    "crowding": (0.0, 0.06),
}


def surface(index: int) -> Surface:
    """Surface ``index`` of the family: deterministic per index, within the public shapes (NSPs, 8 MB VTCM per NSP,
    batch amortisation, card-wide ceilings); where its optimum lies, how sharp its VTCM cliff is, and what ols, mos,
    multicast and SDP clusters do vary from one surface to the next; noise is 1-5%."""
    rng = random.Random(f"autotune-surface-{index}")
    base = PROFILES[_BASES[index % len(_BASES)]]
    fields = {name: getattr(base, name) * math.exp(rng.uniform(math.log(lo), math.log(hi)))
              for name, (lo, hi) in _PERTURB.items()}
    fields["df_act"] = min(1.0, fields["df_act"])
    fields["dup_frac"] = min(0.95, fields["dup_frac"])
    profile = base._replace(name=f"surface-{index}", **fields)
    card = Card(**{name: rng.uniform(lo, hi) for name, (lo, hi) in _CARD_RANGES.items()})
    return Surface(index=index, profile=profile, card=card, noise=rng.uniform(0.01, 0.05),
                   held_out=index not in TUNING and index not in MORE_TUNING)


def env_surface(environ: Mapping[str, str]) -> Surface | None:
    """The surface QAIC_EMU_SURFACE names (an index of the family), or None for the model-named profiles."""
    raw = environ.get("QAIC_EMU_SURFACE")
    if raw is None or raw == "":
        return None
    try:
        index = int(raw)
    except ValueError:
        return None
    return surface(index) if 0 <= index < SURFACES else None


# ------------------------------------------------------------------ emulator environment helpers

def env_nsp(environ: Mapping[str, str]) -> int:
    """NSPs per device from QAIC_EMU_NSP (default 16)."""
    try:
        return max(1, int(environ.get("QAIC_EMU_NSP", "16")))
    except ValueError:
        return 16


def env_devices(environ: Mapping[str, str]) -> list[str]:
    """Device statuses: the file QAIC_EMU_DEVICES_FILE names when it exists (read at every call, so a test can
    change a device mid-run), else QAIC_EMU_DEVICES (comma list, default one `Ready` device)."""
    raw = environ.get("QAIC_EMU_DEVICES", "Ready")
    path = environ.get("QAIC_EMU_DEVICES_FILE")
    if path and os.path.isfile(path):
        with open(path) as fh:
            raw = fh.read()
    statuses = [s.strip() for s in raw.split(",") if s.strip()]
    return statuses or ["Ready"]


def env_matches(environ: Mapping[str, str], name: str, argv: list[str]) -> bool:
    """True when variable ``name`` is ``1``, or a text found in the command line ``argv`` (joined by spaces)."""
    value = environ.get(name, "")
    return value == "1" or (bool(value) and value in " ".join(argv))


def env_float(environ: Mapping[str, str], name: str, default: float) -> float:
    try:
        return float(environ.get(name, default))
    except ValueError:
        return default


def env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(environ.get(name, default))
    except ValueError:
        return default


# -- an upgraded SDK: another version, some flags slower, some refused ------------------------------------------
UPGRADE_FILE = "emulator-upgrade.json"  # at the SDK root: what this emulated release changed


def sdk_root() -> str:
    """The emulated SDK's root: the folder above exec/ (a copy of the emulator is another SDK)."""
    return os.path.dirname(os.path.abspath(__file__))


@functools.lru_cache(maxsize=1)
def upgrade() -> dict[str, Any]:
    """The release's changes from ``emulator-upgrade.json``: ``build_id``, and ``slower`` and ``refused`` lists of
    ``{"match": {cfg key: value}, "factor": f}`` / ``{"match": ..., "reason": text}``; {} for the base release."""
    import json

    path = os.path.join(sdk_root(), UPGRADE_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path) as fh:
        return json.load(fh)


def _matches(rule: Mapping[str, Any], cfg: Mapping[str, Any]) -> bool:
    return all(cfg.get(k) == v for k, v in rule.get("match", {}).items())


def upgrade_factor(cfg: Mapping[str, Any]) -> float:
    """How much slower this release runs a QPC of ``cfg`` (1.0: as fast as the base release)."""
    factor = 1.0
    for rule in upgrade().get("slower", []):
        if _matches(rule, cfg):
            factor *= float(rule["factor"])
    return factor


def upgrade_refusal(cfg: Mapping[str, Any]) -> str | None:
    """The reason this release cannot compile ``cfg``, if it cannot."""
    return next((rule["reason"] for rule in upgrade().get("refused", []) if _matches(rule, cfg)), None)
