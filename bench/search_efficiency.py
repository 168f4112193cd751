"""Search efficiency on the emulated card: trials needed to come within 1% and 3% of the exhaustive optimum.

For resnet50, retinanet and bert-99 on 14 and 16 NSPs, offline and server, three searches run through autotune's own
Tuner (same search space, objective and duplicate handling) on the emulator's noise-free performance surface:
  autotune  TPE sampler (the default), warm-started from the hand-tuned preset
  random    Optuna's RandomSampler, no warm start
  local     hill climbing from the preset, one knob step at a time, random restart at a local optimum
            (the style of Qualcomm's model configurator)
Cost is counted in measured trials (a duplicate candidate is reused, not measured). Median over seeds.

    .venv/bin/python bench/search_efficiency.py [--seeds 5] [--budget 100] [--random-budget 200] [--cases ...]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "qaic_emulator"))

import perf_model  # noqa: E402  (the emulator's performance model)

from autotune import scenarios  # noqa: E402
from autotune.backends.base import Artifact, Measurement  # noqa: E402
from autotune.backends.qaic.backend import estimate_scenario  # noqa: E402
from autotune.backends.qaic.baselines import find_baseline  # noqa: E402
from autotune.backends.qaic.space import BATCH_SIZES, MAX_OLS, SET_SIZES, DeviceLimits, QaicSpace, suggest  # noqa: E402
from autotune.backends.qaic.space import QaicCandidate as Candidate  # noqa: E402
from autotune.errors import CompileFailure, MeasureFailure  # noqa: E402
from autotune.models import MODELS  # noqa: E402
from autotune.results.attrs import is_feasible  # noqa: E402
from autotune.search.records import TuningJob, candidate_key  # noqa: E402
from autotune.search.tuner import Tuner  # noqa: E402

PROFILES = {"resnet50": "resnet50", "retinanet": "retinanet", "bert-99": "bert"}
LATENCY_SAMPLES = 16


def cfg_of(candidate: Candidate) -> dict[str, Any]:
    """The emulator's compile configuration for a candidate."""
    return {"cores": candidate.cores, "ols": candidate.ols or 1,
            "mos": list(candidate.mos) if candidate.mos else None,
            "clusters": list(candidate.sdp_clusters) if candidate.sdp_clusters else None,
            "batch": candidate.batch_size, "multicast": candidate.multicast_weights,
            "depth_first": "-aic-enable-depth-first" in candidate.extra_flags}


class SurfaceBackend:
    """The emulator's performance model in process, noise free: the same answers as tests/qaic_emulator, fast."""

    name = "surface"
    title = "the emulated card's surface, in process"
    priority = 99
    device_word = "QID"
    size_key = "nsp"
    size_unit = "NSPs"
    knob_labels: dict[str, str] = {}
    export_formats = ("yaml", "json")
    estimated_scenarios = frozenset({"server", "multistream"})
    compiles_ahead = False
    measure_seconds = 1.0
    validate_seconds = 1.0
    emulated = True

    def __init__(self, *, profile: str, nsp: int, workdir: Path) -> None:
        self.profile, self.nsp, self.workdir, self.count = profile, nsp, workdir, 0

    def version(self) -> str:
        return "emulated surface"

    def base_flags(self, model: Any) -> tuple[str, ...]:
        return ()

    def device_status(self, index: int) -> str | None:
        return None

    def cancel(self) -> None:
        pass

    def artifact_usable(self, path: Path) -> bool:
        return (path / "programqpc.bin").is_file()

    def preset_fields(self, candidate: Candidate, artifact: Artifact, measurement: Measurement, *,
                      name: str) -> dict[str, Any]:
        return {}

    def compile(self, onnx_path: Path, model: Any, candidate: Candidate, workdir: Path) -> Artifact:
        cfg = cfg_of(candidate)
        reason = perf_model.compile_check(self.profile, cfg)
        if reason:
            raise CompileFailure(reason)
        self.count += 1
        path = self.workdir / f"qpc{self.count}"
        path.mkdir(parents=True)
        (path / "programqpc.bin").write_text(json.dumps(cfg))
        return Artifact(path=path, command=["qaic-exec"], log_path=path / "log", compile_seconds=0.0,
                        batch_size=candidate.batch_size)

    def measure(self, artifact: Artifact, candidate: Candidate, *, model: Any, scenario: scenarios.Scenario | None,
                bound_ms: float | None, seconds: float, device: int, log_dir: Path) -> Measurement:
        cfg = json.loads((artifact.path / "programqpc.bin").read_text())
        return surface_measurement(self.profile, cfg, candidate.activations, candidate.set_size, self.nsp,
                                   scenario=scenario.name if scenario else None, bound_ms=bound_ms)


@functools.lru_cache(maxsize=None)
def _surface(profile: str, cfg_json: str, activations: int, set_size: int, nsp: int) -> tuple[float, float]:
    cfg = json.loads(cfg_json)
    reason = perf_model.activation_check(profile, cfg, activations, set_size, nsp)
    if reason:
        raise MeasureFailure(reason)
    return (perf_model.throughput(profile, cfg, activations, set_size, nsp),
            perf_model.exec_latency_us(profile, cfg, nsp) / 1000.0)


@functools.lru_cache(maxsize=None)
def _estimated(scenario: str, rate: float, batch: int, activations: int, bound: float | None,
               service_ms: float) -> tuple[float | None, float | None, float | None]:
    """The queueing estimate qaic makes of these figures, memoised: the surface is noise free."""
    m = _plain(rate, batch, service_ms)
    estimate_scenario(m, scenarios.SCENARIOS[scenario], activations=activations, bound_ms=bound)
    return m.server_qps, m.server_p99_ms, m.multistream_p99_ms


def _plain(rate: float, batch: int, latency_ms: float) -> Measurement:
    samples = [latency_ms] * LATENCY_SAMPLES
    return Measurement(samples_per_second=rate, duration_seconds=1.0, batch_size=batch, latency_samples_ms=samples,
                       service_samples_ms=samples, latency_p50_ms=latency_ms, latency_p90_ms=latency_ms,
                       latency_p99_ms=latency_ms, command=["qaic-runner"])


def surface_measurement(profile: str, cfg: dict[str, Any], activations: int, set_size: int, nsp: int, *,
                        scenario: str | None = None, bound_ms: float | None = None) -> Measurement:
    rate, latency_ms = _surface(profile, json.dumps(cfg, sort_keys=True), activations, set_size, nsp)
    m = _plain(rate, cfg["batch"], latency_ms)
    if scenario in ("server", "multistream"):
        m.estimated = True
        m.server_qps, m.server_p99_ms, m.multistream_p99_ms = _estimated(scenario, rate, cfg["batch"], activations,
                                                                         bound_ms, latency_ms)
    return m


def search_space_points(nsp: int, depth_first: bool):
    """Every distinct (compile cfg, activations, set size) that `suggest` can produce."""
    for cores in range(1, nsp + 1):
        cluster_options = [[cores]] + ([[cores // 2, cores // 2]] if cores % 2 == 0 else [])
        for ols, sizes, batch, multicast in itertools.product(range(1, MAX_OLS + 1), cluster_options, BATCH_SIZES,
                                                              (False, True)):
            for mos in itertools.product(*(range(1, s + 1) for s in sizes)):
                cfg = {"cores": cores, "ols": ols, "mos": list(mos), "clusters": sizes, "batch": batch,
                       "multicast": multicast, "depth_first": depth_first}
                for activations in range(1, nsp // cores + 1):
                    for set_size in SET_SIZES:
                        yield cfg, activations, set_size


def optimum(profile: str, nsp: int, scenario: scenarios.Scenario, bound: float | None,
            extra: tuple[str, ...]) -> float:
    """The exhaustive optimum; server uses branch and bound (the rate never exceeds the throughput)."""
    rows = []
    for cfg, activations, set_size in search_space_points(nsp, "-aic-enable-depth-first" in extra):
        rate = perf_model.throughput(profile, cfg, activations, set_size, nsp)  # 0.0 where it cannot run
        if rate > 0:
            rows.append((rate, cfg, activations, set_size))
    rows.sort(key=lambda r: -r[0])
    if scenario.name == "offline":
        return rows[0][0]
    best = 0.0
    for rate, cfg, activations, set_size in rows:
        if rate <= best:
            break
        m = surface_measurement(profile, cfg, activations, set_size, nsp, scenario=scenario.name, bound_ms=bound)
        outcome = scenarios.judge(scenario, m, bound_ms=bound)
        if outcome.feasible:
            best = max(best, outcome.value)
    return best


POLISH_EVERY = 3
POLISH_AFTER = 25


def make_tuner(model: str, scenario: str, nsp: int, *, sampler: str, seed: int, warm: bool,
               budget: int, workdir: Path, polish_every: int = POLISH_EVERY,
               polish_after: int = POLISH_AFTER) -> Tuner:
    spec = MODELS[model]
    scen = scenarios.SCENARIOS[scenario]
    device = DeviceLimits(nsp_total=nsp)
    preset = find_baseline(model, scenario, nsp)
    extra = Candidate.from_flags(preset.flags).extra_flags if preset else ()
    job = TuningJob(
        model=spec, onnx_path=Path("surface.onnx"), scenario=scen, bound_ms=spec.latency_bounds_ms.get(scenario),
        backend=SurfaceBackend(profile=PROFILES[model], nsp=nsp, workdir=workdir),
        space=QaicSpace(device=device, scenario=scenario, extra_flags=extra), devices=[0], device_size=nsp,
        sku="emulated", storage=optuna.storages.InMemoryStorage(), study_name=f"{model}-{scenario}-{nsp}",
        n_trials=budget, validate_top=0, sampler=sampler, seed=seed, polish_every=polish_every,
        polish_after=polish_after, workdir=workdir,
        baseline=preset.candidate(device) if warm and preset else None)
    return Tuner(job, progress=lambda _: None)


def measured_curve(study: optuna.Study, direction: str) -> list[float]:
    """Best feasible value after each measured (non-duplicate) trial."""
    best, curve = 0.0, []
    for t in study.get_trials(deepcopy=False):
        if t.state != optuna.trial.TrialState.COMPLETE or t.user_attrs.get("duplicate_of") is not None:
            continue
        if is_feasible(t):
            best = max(best, t.value)
        curve.append(best)
    return curve


def run_sampler(model: str, scenario: str, nsp: int, *, sampler: str, seed: int, warm: bool, budget: int,
                workdir: Path, polish_every: int = POLISH_EVERY, polish_after: int = POLISH_AFTER) -> list[float]:
    t = make_tuner(model, scenario, nsp, sampler=sampler, seed=seed, warm=warm, budget=budget, workdir=workdir,
                   polish_every=polish_every, polish_after=polish_after)
    t.run()
    return measured_curve(t.study, "maximize")


def run_local(model: str, scenario: str, nsp: int, *, seed: int, budget: int, workdir: Path) -> list[float]:
    """Hill climbing over the same parameters, fed through the Tuner one enqueued trial at a time."""
    t = make_tuner(model, scenario, nsp, sampler="random", seed=seed, warm=False, budget=budget, workdir=workdir)
    rng = random.Random(seed)
    device = DeviceLimits(nsp_total=nsp)
    start = find_baseline(model, scenario, nsp)
    extra = Candidate.from_flags(start.flags).extra_flags if start else ()
    first = start.candidate(device) if start else Candidate(cores=1, activations=nsp)
    space = QaicSpace(device=device, scenario=scenario, extra_flags=extra)
    current = space.params_for(first)
    domains = space.domains()
    seen: dict[str, float] = {}

    def value_of(params: dict[str, Any]) -> float:
        c = suggest(optuna.trial.FixedTrial(params), device, scenario=scenario, extra_flags=extra)
        key = candidate_key(c)
        if key not in seen:
            t.study.enqueue_trial(params)
            _, record = t.step()
            seen[key] = record.value if record.feasible else 0.0
        return seen[key]

    current_value = value_of(current)
    while len(seen) < budget:
        steps = space.neighbours(space.suggest(optuna.trial.FixedTrial(current)))
        rng.shuffle(steps)
        for params in steps:
            if len(seen) >= budget:
                break
            value = value_of(params)
            if value > current_value:
                current, current_value = params, value
                break
        else:
            current = {name: rng.choice(domain) for name, domain in domains.items() if name in current or
                       name == "mos_1"}
            current_value = value_of(current)
    return measured_curve(t.study, "maximize")


def trials_to(curve: list[float], target: float) -> int | None:
    return next((i + 1 for i, v in enumerate(curve) if v >= target), None)


def median_or_none(values: list[int | None], budget: int) -> str:
    if not values:
        return "-"
    capped = [v if v is not None else budget + 1 for v in values]
    m = statistics.median(capped)
    return f">{budget}" if m > budget else f"{m:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=100, help="measured-trial budget of autotune and local")
    parser.add_argument("--random-budget", type=int, default=200)
    parser.add_argument("--cases", nargs="*", default=None, help="e.g. resnet50:offline:14")
    parser.add_argument("--polish-every", type=int, default=POLISH_EVERY,
                        help="autotune's one-knob polishing step every N trials (0: pure TPE)")
    parser.add_argument("--polish-after", type=int, default=POLISH_AFTER, help="first trial that may be a polish step")
    args = parser.parse_args()
    cases = [tuple(c.split(":")) for c in args.cases] if args.cases else [
        (m, s, str(n)) for m in PROFILES for n in (14, 16) for s in ("offline", "server")]
    print(f"{'case':<26} {'optimum':>9} {'preset':>9} | {'trials to 3%: auto / rand / local':>34} | "
          f"{'trials to 1%: auto / rand / local':>34} | {'best@40 auto':>12}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for model, scenario, nsp_text in cases:
            nsp = int(nsp_text)
            scen = scenarios.SCENARIOS[scenario]
            bound = MODELS[model].latency_bounds_ms.get(scenario)
            start = find_baseline(model, scenario, nsp)
            extra = Candidate.from_flags(start.flags).extra_flags if start else ()
            best = optimum(PROFILES[model], nsp, scen, bound, extra)
            results: dict[str, dict[str, list[int | None]]] = {k: {"3": [], "1": []} for k in ("auto", "rand", "local")}
            at40, preset_value = [], None
            for seed in range(args.seeds):
                work = Path(tmp) / f"{model}-{scenario}-{nsp}-{seed}"
                curves = {
                    "auto": run_sampler(model, scenario, nsp, sampler="tpe", seed=seed, warm=True,
                                        budget=args.budget, workdir=work / "auto", polish_every=args.polish_every,
                                        polish_after=args.polish_after),
                    "rand": run_sampler(model, scenario, nsp, sampler="random", seed=seed, warm=False,
                                        budget=args.random_budget, workdir=work / "rand"),
                    "local": run_local(model, scenario, nsp, seed=seed, budget=args.budget, workdir=work / "local"),
                }
                preset_value = curves["auto"][0] if start else None
                at40.append(curves["auto"][min(39, len(curves["auto"]) - 1)] / best * 100)
                for name, curve in curves.items():
                    for pct in ("3", "1"):
                        results[name][pct].append(trials_to(curve, best * (1 - int(pct) / 100)))
            budgets = {"auto": args.budget, "rand": args.random_budget, "local": args.budget}
            t3 = " / ".join(median_or_none(results[k]["3"], budgets[k]) for k in results)
            t1 = " / ".join(median_or_none(results[k]["1"], budgets[k]) for k in results)
            preset = f"{preset_value / best * 100:.1f}%" if preset_value else "-"
            preset += "*" if start and start.adapted_from else ""
            print(f"{model + ' ' + scenario + ' ' + str(nsp):<26} {best:>9.1f} {preset:>9} | {t3:>34} | {t1:>34} | "
                  f"{statistics.median(at40):>11.1f}%", flush=True)
    print(f"medians over {args.seeds} seeds; preset = the hand-tuned preset as % of the optimum (* adapted from "
          f"another NSP count); "
          f"best@40 = autotune's best after 40 measured trials as % of the optimum; {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
