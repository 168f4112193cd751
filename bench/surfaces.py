"""The family of emulated Cloud AI 100 surfaces as in-process targets for the search benchmarks.

Each case is one surface of ``emulators/qaic/perf_model.surface`` (its profile, card constants and noise) on a
14- or 16-NSP card, searched offline through autotune's own Tuner with the qaic search space. Surfaces 0-29 are
the tuning set (every default was chosen on them); 30-39 are held out and reported on their own,
40-49 are a second held-out set, drawn once the first had been looked at five times, 50-59 a third (it decided
between two variants of the default) and 60-69 a fourth (it confirmed the one chosen); 70-79 and 80-89, drawn a day
later, a fifth (it decided on a measurement rule) and a sixth (it confirmed the default); 90-99 and 100-109, drawn
later that day, a seventh (it decided on the order of a climb's steps) and an eighth (it confirmed the default).
110-199, drawn on 2026-12-06, are more tuning surfaces, and 200-299 a ninth held-out set of 100 surfaces that reads
the default against local search once, with intervals.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EMULATOR = ROOT / "emulators" / "qaic"

import sys  # noqa: E402

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(EMULATOR))

import perf_model  # noqa: E402  (the emulator's performance model)

from autotune.backends.base import Artifact, Measurement  # noqa: E402
from autotune.backends.qaic.baselines import Baseline, find_baseline  # noqa: E402
from autotune.backends.qaic.space import BATCH_SIZES, MAX_OLS, SET_SIZES, QaicCandidate  # noqa: E402
from autotune.errors import CompileFailure, MeasureFailure  # noqa: E402
from autotune.scenarios import Scenario  # noqa: E402

BASE_MODELS = ("resnet50", "retinanet", "bert-99")  # the network each surface perturbs (perf_model's _BASES order)
CACHE = ROOT / ".autotune" / "bench-cache" / "optima.json"
TUNING = tuple(sorted(perf_model.TUNING))
MORE_TUNING = tuple(sorted(perf_model.MORE_TUNING))  # 90 more tuning surfaces, drawn 2026-12-06
HELD_OUT = tuple(sorted(perf_model.HELD_OUT))
FRESH = tuple(sorted(perf_model.FRESH_HELD_OUT))  # the second held-out set
THIRD = tuple(sorted(perf_model.THIRD_HELD_OUT))  # decided between two variants of the default
FOURTH = tuple(sorted(perf_model.FOURTH_HELD_OUT))  # confirms the variant chosen
FIFTH = tuple(sorted(perf_model.FIFTH_HELD_OUT))  # decides whether a measurement rule changes (2026-12-02)
SIXTH = tuple(sorted(perf_model.SIXTH_HELD_OUT))  # confirms the default chosen then
SEVENTH = tuple(sorted(perf_model.SEVENTH_HELD_OUT))  # decides whether climbs rank their steps (third session)
EIGHTH = tuple(sorted(perf_model.EIGHTH_HELD_OUT))  # confirms the default chosen then
NINTH = tuple(sorted(perf_model.NINTH_HELD_OUT))  # 100 surfaces: the default against local search, read once
SETS = {"tuning": TUNING, "more tuning": MORE_TUNING, "held-out": HELD_OUT, "fresh held-out": FRESH,
        "third held-out": THIRD, "fourth held-out": FOURTH, "fifth held-out": FIFTH, "sixth held-out": SIXTH,
        "seventh held-out": SEVENTH, "eighth held-out": EIGHTH, "ninth held-out": NINTH}  # reported apart
TUNING_SETS = ("tuning", "more tuning")  # defaults are chosen on these; the others are pooled as held out


@dataclass(frozen=True)
class Case:
    """One surface on one card: what the search sees, and the hand-tuned preset of the network it perturbs."""

    index: int

    @property
    def surface(self) -> Any:
        return perf_model.surface(self.index)

    @property
    def nsp(self) -> int:
        return 16 if self.index % 2 == 0 else 14

    @property
    def model(self) -> str:
        return BASE_MODELS[self.index % len(BASE_MODELS)]

    @property
    def preset(self) -> Baseline | None:
        return find_baseline(self.model, "offline", self.nsp)

    def label(self) -> str:
        return f"s{self.index:02d} {self.model}-like {self.nsp} NSPs"


def cfg_of(candidate: QaicCandidate) -> dict[str, Any]:
    """The emulator's compile configuration of a candidate."""
    return {"cores": candidate.cores, "ols": candidate.ols or 1,
            "mos": list(candidate.mos) if candidate.mos else None,
            "clusters": list(candidate.sdp_clusters) if candidate.sdp_clusters else None,
            "batch": candidate.batch_size, "multicast": candidate.multicast_weights,
            "depth_first": "-aic-enable-depth-first" in candidate.extra_flags}


def true_value(case: Case, candidate: QaicCandidate) -> float:
    """The candidate's noise-free throughput on the case's surface (0 where it does not compile or run)."""
    sf = case.surface
    return perf_model.throughput(sf.profile, cfg_of(candidate), candidate.activations, candidate.set_size, case.nsp,
                                 sf.card)


class SurfaceBackend:
    """A case's surface as a target: compiles are checked by the performance model, measurements are its throughput
    with the surface's noise. ``compile_s``/``measure_s`` sleep, for the wall-clock view."""

    name = "surface"
    title = "an emulated card surface, in process"
    priority = 99
    device_word = "QID"
    size_key = "nsp"
    size_unit = "NSPs"
    knob_labels: dict[str, str] = {}
    export_formats = ("yaml", "json")
    estimated_scenarios: frozenset[str] = frozenset()
    compiles_ahead = True
    measure_seconds = 1.0
    validate_seconds = 1.0
    emulated = True
    changes_numerics = False

    def __init__(self, case: Case, *, seed: int, workdir: Path, compile_s: tuple[float, float] = (0.0, 0.0),
                 measure_s: float = 0.0) -> None:
        self.case, self.seed, self.workdir = case, seed, workdir
        self.compile_s, self.measure_s = compile_s, measure_s
        self.compiles = 0
        self.measurements = 0
        self._repeats: dict[str, int] = {}

    def version(self) -> str:
        return f"surface {self.case.index}"

    def base_flags(self, model: Any) -> tuple[str, ...]:
        return ()

    def device_status(self, index: int) -> str | None:
        return None

    def cancel(self) -> None:
        pass

    def artifact_usable(self, path: Path) -> bool:
        return (path / "programqpc.bin").is_file()

    def outputs(self, *args: Any, **kwargs: Any) -> None:
        return None

    def preset_fields(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {}

    def compile(self, onnx_path: Path, model: Any, candidate: QaicCandidate, workdir: Path) -> Artifact:
        import time

        cfg = cfg_of(candidate)
        time.sleep(_spread(self.compile_s, json.dumps(cfg, sort_keys=True)))
        reason = perf_model.compile_check(self.case.surface.profile, cfg, self.case.surface.card)
        if reason:
            raise CompileFailure(reason)
        self.compiles += 1
        path = self.workdir / f"qpc{self.compiles}-{random.random():.9f}"
        path.mkdir(parents=True)
        (path / "programqpc.bin").write_text(json.dumps(cfg))
        return Artifact(path=path, command=["qaic-exec"], log_path=path / "log", compile_seconds=0.0,
                        batch_size=candidate.batch_size)

    def measure(self, artifact: Artifact, candidate: QaicCandidate, *, model: Any, scenario: Scenario | None,
                bound_ms: float | None, seconds: float, device: int, log_dir: Path) -> Measurement:
        import time

        time.sleep(self.measure_s)
        sf, case = self.case.surface, self.case
        cfg = json.loads((artifact.path / "programqpc.bin").read_text())
        reason = perf_model.activation_check(sf.profile, cfg, candidate.activations, candidate.set_size, case.nsp)
        if reason:
            raise MeasureFailure(reason)
        self.measurements += 1
        key = json.dumps([cfg, candidate.activations, candidate.set_size], sort_keys=True)
        self._repeats[key] = self._repeats.get(key, 0) + 1
        rng = random.Random(f"{self.seed}:{case.index}:{key}:{self._repeats[key]}")
        rate = perf_model.noisy(perf_model.throughput(sf.profile, cfg, candidate.activations, candidate.set_size,
                                                      case.nsp, sf.card), rng, sf.noise)
        return Measurement(samples_per_second=rate, duration_seconds=seconds, batch_size=candidate.batch_size,
                           command=["qaic-runner"])


def _spread(span: tuple[float, float], key: str) -> float:
    """A compile time within ``span``, fixed per configuration (some configurations take longer)."""
    low, high = span
    if high <= 0:
        return 0.0
    return low + (high - low) * int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def _compile_configs(nsp: int, depth_first: bool) -> Any:
    for cores in range(1, nsp + 1):
        cluster_options = [[cores]] + ([[cores // 2, cores // 2]] if cores % 2 == 0 else [])
        for ols, sizes, batch, multicast in itertools.product(range(1, MAX_OLS + 1), cluster_options, BATCH_SIZES,
                                                              (False, True)):
            for mos in itertools.product(*(range(1, s + 1) for s in sizes)):
                yield {"cores": cores, "ols": ols, "mos": list(mos), "clusters": sizes, "batch": batch,
                       "multicast": multicast, "depth_first": depth_first}


def _optimum(index: int) -> tuple[int, float]:
    """The exhaustive offline optimum of a case over every compile config and runtime setting the space holds."""
    case = Case(index)
    sf = case.surface
    preset = case.preset
    depth_first = bool(preset and "-aic-enable-depth-first" in preset.flags)
    best = 0.0
    for cfg in _compile_configs(case.nsp, depth_first):
        if perf_model.compile_check(sf.profile, cfg, sf.card):
            continue
        for activations in range(1, case.nsp // cfg["cores"] + 1):
            for set_size in SET_SIZES:
                best = max(best, perf_model.throughput(sf.profile, cfg, activations, set_size, case.nsp, sf.card))
    return index, best


def optima(indices: list[int]) -> dict[int, float]:
    """The optimum of each case, computed once (two processes) and cached beside the project's work files."""
    fingerprint = hashlib.sha256((EMULATOR / "perf_model.py").read_bytes()).hexdigest()[:16]
    cached: dict[str, float] = json.loads(CACHE.read_text()) if CACHE.is_file() else {}
    missing = [i for i in indices if f"{fingerprint}:{i}" not in cached]
    if missing:
        with Pool(2) as pool:
            for index, value in pool.imap_unordered(_optimum, missing):
                cached[f"{fingerprint}:{index}"] = value
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        CACHE.write_text(json.dumps(cached, indent=1))
    return {i: cached[f"{fingerprint}:{i}"] for i in indices}
