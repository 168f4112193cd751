"""Search efficiency on a family of emulated card surfaces, counted in compiles.

Every strategy runs through autotune's own Tuner (its search space, runtime search, duplicates and policies) on the
surfaces of emulators/qaic/perf_model.py (bench/surfaces.py), offline, with the surfaces' measurement noise.
Quality after k compiles is the noise-free value of the trial the study holds best by its *measured* value, over the
surface's exhaustive optimum. Surfaces 0-29 tune the defaults; 30-39 are held out and reported apart, and so
are 40-49, a second held-out set drawn once the first had been looked at five times, 50-59 (a third, which decided
between two variants of the default), 60-69 (a fourth, which confirmed the one chosen), 70-79 (a fifth, which decided
on a measurement rule), 80-89 (a sixth, which confirmed the default), 90-99 (a seventh, which decided on the order
of a climb's steps) and 100-109 (an eighth, which confirmed the default); 110-199 are more tuning surfaces and
200-299 a ninth held-out set of 100 (both drawn 2026-12-06). Medians of compiles to 97% come with 90% intervals by
a bootstrap that resamples surfaces, and every strategy is read against local search with intervals too.

Strategies:
  tpe-today    TPE over every knob, activations and set size included (round 1), one-knob steps every 3rd trial
               from the 25th; its cost counted in distinct compiles
  tpe          TPE over compile knobs, runtime knobs searched on each compile, polish steps (--polish-every/-after)
  tpe-plain    the same without polish steps
  two-phase    the preset and the SDK's rules of thumb, greedy climbs from the best of them, then TPE (the default)
  local        multi-start local search from the preset and the SDK's rules of thumb (the configurator's procedure)
  random       random compile knobs, runtime knobs searched on each compile
  gp           Optuna's GPSampler over compile knobs (needs torch; left out when it is not installed)
  once / a-    two-phase with one measurement per compile, or with the activations step alone (runtime rules)
  drawn        two-phase whose climbs try their steps in drawn order alone (no SearchSpace.step_rank): the default
               before the SDP split and a larger batch were tried first
  oracle       two-phase whose climbs try their steps best first by the noise-free surface: a bound on what
               ordering the steps could save, not a strategy (no search knows the surface)

    .venv/bin/python bench/search_efficiency.py [--seeds 3] [--compiles 40] [--strategies tpe local ...]
        [--surfaces 0 1 ...] [--wall | --wall-only] [--wall-compiles 120] [--close-sigmas 1] [--validate-top 3]
    (--wall: time to 97% with compiles of 60-180 s, 16 compile workers and one card, tuning and held-out apart)
    (--validate-top N: autotune's validation of each study's best N after the search, its winner valued noise free)
    (with local among the strategies, each table is followed by the compiles local and every other strategy need
     to first reach the quality local ends with, study by study: the same surface and seed)
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial
from scipy import stats

from surfaces import SETS, TUNING_SETS, Case, SurfaceBackend, optima, true_value

from autotune.backends.qaic.space import RUNTIME_MOVES, DeviceLimits, QaicSpace  # noqa: E402
from autotune.models import MODELS  # noqa: E402
from autotune.results import attrs  # noqa: E402
from autotune.scenarios import SCENARIOS  # noqa: E402
from autotune.search import noise  # noqa: E402
from autotune.search.policies import StartsThenClimb  # noqa: E402
from autotune.search.records import (RunEnvironment, SearchPolicy, StudyIdentity, TuningJob,  # noqa: E402
                                     ValidationSettings)
from autotune.search.tuner import Tuner  # noqa: E402

TARGET = 0.97
WORST_TARGET = 0.93  # the worst case; the table counts the studies below it
BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class Strategy:
    name: str
    sampler: str = "tpe"
    search_runtime: bool = True
    moves: tuple[str, ...] = RUNTIME_MOVES
    polish_every: int = 3
    polish_after: int = 25
    close_sigmas: float = noise.CLOSE_SIGMAS  # a trial within this many noise sigmas of the best is measured again
    oracle: bool = False  # two-phase climbs that try their steps best first by the noise-free surface (a bound)
    drawn: bool = False  # two-phase climbs that try their steps in drawn order alone (no step ranks)


@dataclass
class Run:
    surface: int  # the case's surface index (the bootstrap resamples surfaces, each with its seeds)
    curve: list[float]  # quality after each compile
    measurements: int
    compiles: int
    baseline: float | None  # the preset's noise-free quality
    wall_to_target_s: float | None = None
    found: float = 0.0  # the best setting measured, valued noise free (quality_curve)
    validated: float | None = None  # the validation's winner, valued noise free (--validate-top)
    validation_measurements: int = 0


def strategies(args: argparse.Namespace) -> dict[str, Strategy]:
    every, after = args.polish_every, args.polish_after
    table = {
        "tpe-today": Strategy("tpe-today", search_runtime=False, polish_every=3, polish_after=25),
        "tpe": Strategy("tpe", polish_every=every, polish_after=after),
        "tpe-plain": Strategy("tpe-plain", polish_every=0),
        "two-phase": Strategy("two-phase", sampler="two-phase", polish_every=0),
        "local": Strategy("local", sampler="local", polish_every=0),
        "random": Strategy("random", sampler="random", polish_every=0),
        "gp": Strategy("gp", sampler="gp", polish_every=every, polish_after=after),
        "oracle": Strategy("oracle", sampler="two-phase", polish_every=0, oracle=True),
        "drawn": Strategy("drawn", sampler="two-phase", polish_every=0, drawn=True),
        "once": Strategy("once", sampler="two-phase", moves=(), polish_every=0),
        "a-": Strategy("a-", sampler="two-phase", moves=("activations-",), polish_every=0),
    }
    return {name: replace(table[name], close_sigmas=args.close_sigmas) for name in args.strategies}


def make_tuner(case: Case, strategy: Strategy, *, seed: int, compiles: int, workdir: Path, compile_jobs: int = 0,
               validate_top: int = 0, **timing: Any) -> tuple[Tuner, SurfaceBackend]:
    device = DeviceLimits(nsp_total=case.nsp)
    preset = case.preset
    baseline = preset.candidate(device) if preset else None
    space = QaicSpace(device=device, scenario="offline", extra_flags=baseline.extra_flags if baseline else (),
                      search_runtime=strategy.search_runtime, moves=strategy.moves)
    backend = SurfaceBackend(case, seed=seed, workdir=workdir, **timing)
    sampler = "tpe" if strategy.sampler == "gp" else strategy.sampler
    # round 1's search counts trials; give it enough to reach the same number of distinct compiles
    n_trials = compiles if strategy.search_runtime else compiles * 5
    job = TuningJob(
        identity=StudyIdentity(name=f"s{case.index}", storage=optuna.storages.InMemoryStorage(),
                               model=MODELS[case.model], onnx_path=Path("surface.onnx"), scenario=SCENARIOS["offline"],
                               bound_ms=None, backend=backend, space=space, devices=[0], device_size=case.nsp,
                               sku="emulated", baseline=baseline, baseline_label=preset.label() if preset else None),
        search=SearchPolicy(sampler=sampler, n_trials=n_trials, seed=seed, polish_every=strategy.polish_every,
                            polish_after=strategy.polish_after),
        validation=ValidationSettings(top=validate_top),
        environment=RunEnvironment(workdir=workdir, compile_jobs=compile_jobs))
    tuner = Tuner(job, progress=lambda _: None)
    tuner.memory.noise.close_sigmas = strategy.close_sigmas
    if strategy.oracle or strategy.drawn:
        climbs = tuner.proposer.policy
        assert isinstance(climbs, StartsThenClimb)
        tuner.proposer.policy = SteepestByTruth(space=space, maximize=climbs.maximize, starts=climbs.starts,
                                               case=case) if strategy.oracle else \
            DrawnOrder(space=space, maximize=climbs.maximize, starts=climbs.starts)
    if strategy.sampler == "gp":
        tuner.study.sampler = optuna.samplers.GPSampler(seed=seed)
    return tuner, backend


@dataclass(kw_only=True)
class SteepestByTruth(StartsThenClimb):
    """Two-phase climbs whose steps are tried best first by the case's noise-free surface (each compile at its best
    activation count): what a perfect order of the steps would save, not a strategy a search could follow."""

    case: Case

    def steps_from(self, best: FrozenTrial, trials: list[FrozenTrial]) -> list[dict[str, Any]]:
        def worth(params: dict[str, Any]) -> float:
            candidate = self.space.suggest(optuna.trial.FixedTrial(params))
            return max(true_value(self.case, candidate.with_runtime(activations=a, set_size=candidate.set_size))
                       for a in range(1, candidate.activations + 1))
        return sorted(super().steps_from(best, trials), key=worth, reverse=True)


@dataclass(kw_only=True)
class DrawnOrder(StartsThenClimb):
    """Two-phase climbs that try their steps in drawn order alone, the space's step ranks left out (the default
    before 2026-12-02, third session)."""

    def steps_from(self, best: FrozenTrial, trials: list[FrozenTrial]) -> list[dict[str, Any]]:
        steps = self.space.neighbours(self.space.from_dict(best.user_attrs[attrs.CANDIDATE]))
        random.Random(best.number).shuffle(steps)
        return self._pattern(best, trials) + steps


def quality_curve(case: Case, study: optuna.Study, space: QaicSpace, optimum: float,
                  compiles: int) -> tuple[list[float], int, float]:
    """Quality after each distinct compile (the best trial by measured value, valued noise free), the number of
    measurements the first ``compiles`` compiles took, and the quality of the best setting they found (a trial's
    chosen setting valued noise free, whatever it measured: what a pick free of noise would have taken)."""
    seen: set[str] = set()
    best_measured, best_true, curve, measured, found = 0.0, 0.0, [], 0, 0.0
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.datetime_complete or t.datetime_start):
        stored = t.user_attrs
        if t.state != optuna.trial.TrialState.COMPLETE or stored.get(attrs.DUPLICATE_OF) is not None:
            continue
        key = stored.get(attrs.COMPILE_KEY)
        new_compile = key not in seen and stored.get(attrs.FAILURE_STAGE) != "constraint"
        if new_compile and len(seen) >= compiles:
            break
        measured += len(stored.get(attrs.MEASUREMENTS) or [])
        if t.value and t.constraints.get("feasible", 1.0) <= 0:
            quality = true_value(case, space.from_dict(stored[attrs.CANDIDATE])) / optimum
            found = max(found, quality)
            if t.value > best_measured:
                best_measured, best_true = t.value, quality
        if new_compile:
            seen.add(key)
            curve.append(best_true)
        elif curve:
            curve[-1] = best_true
    return curve, measured, found


def run(case: Case, strategy: Strategy, *, seed: int, compiles: int, optimum: float, validate_top: int = 0) -> Run:
    """One study; with ``validate_top``, autotune's validation of its best few after the search, as a run does."""
    with tempfile.TemporaryDirectory() as tmp:
        tuner, backend = make_tuner(case, strategy, seed=seed, compiles=compiles, workdir=Path(tmp),
                                    validate_top=validate_top)
        validation = tuner.run()
        curve, measured, found = quality_curve(case, tuner.study, tuner.job.identity.space, optimum, compiles)
        validated, samples = validated_quality(case, tuner, validation, optimum)
    preset = case.preset
    baseline = true_value(case, preset.candidate(DeviceLimits(nsp_total=case.nsp))) / optimum if preset else None
    return Run(surface=case.index, curve=curve, measurements=measured, compiles=len(curve), baseline=baseline,
               found=found, validated=validated, validation_measurements=samples)


def validated_quality(case: Case, tuner: Tuner, validation: dict[str, Any],
                      optimum: float) -> tuple[float | None, int]:
    """The validation's winner (the baseline when no gain was significant) valued noise free, and the measurements
    the validation took; (None, 0) without a validation."""
    number = validation.get(attrs.WINNER_TRIAL)
    if number is None:
        return None, 0
    winner = next(t for t in tuner.study.get_trials(deepcopy=False) if t.number == number)
    samples = sum(len(entry[attrs.SAMPLES]) for entry in validation[attrs.VALIDATED])
    return true_value(case, tuner.job.identity.space.from_dict(winner.user_attrs[attrs.CANDIDATE])) / optimum, samples


def wall_run(case: Case, strategy: Strategy, *, seed: int, compiles: int, optimum: float, scale: float) -> Run:
    """The same search with compiles of 60-180 s, 5 s measurements, 16 compile workers and one card, time scaled by
    ``scale``: the wall time until the best measured trial is worth 97% of the optimum."""
    with tempfile.TemporaryDirectory() as tmp:
        tuner, _ = make_tuner(case, strategy, seed=seed, compiles=compiles, workdir=Path(tmp), compile_jobs=16,
                              compile_s=(60 * scale, 180 * scale), measure_s=5 * scale)
        started = time.time()
        tuner.run()
        space, best_measured, reached = tuner.job.identity.space, 0.0, None
        for t in sorted(tuner.study.get_trials(), key=lambda t: t.datetime_complete or t.datetime_start):
            if t.value and t.constraints.get("feasible", 1.0) <= 0 and t.value > best_measured:
                best_measured = t.value
                if reached is None and true_value(case, space.from_dict(t.user_attrs[attrs.CANDIDATE])) >= \
                        TARGET * optimum:
                    reached = (t.datetime_complete.timestamp() - started) / scale
    return Run(surface=case.index, curve=[], measurements=0, compiles=0, baseline=None, wall_to_target_s=reached)


def to_target(curve: list[float], goal: float = TARGET) -> int | None:
    """The first compile after which the curve holds ``goal`` (None: never)."""
    return next((i + 1 for i, q in enumerate(curve) if q >= goal), None)


def at(curve: list[float], k: int) -> float:
    return curve[min(k, len(curve)) - 1] if curve else 0.0


def reach_or_cap(run: Run, compiles: int, goal: float = TARGET) -> int:
    """The compiles a study took to reach ``goal``, ``compiles`` + 1 where it never did within them."""
    reached = to_target(run.curve[:compiles], goal)
    return reached if reached is not None else compiles + 1


def bootstrap(runs: dict[str, list[Run]], statistic: Any) -> tuple[float, float, float]:
    """``statistic`` of the studies and its 90% interval, resampling surfaces (each with every seed it ran) as the
    unit: a surface's seeds are not independent studies. ``runs`` maps each strategy to the same studies in the
    same order; ``statistic`` takes that mapping (one resample of it) and returns a number. With one surface there is
    no interval: its ends are NaN."""
    first = next(iter(runs.values()))
    assert all([r.surface for r in rs] == [r.surface for r in first] for rs in runs.values()), \
        "every strategy runs the same studies in the same order"
    surfaces = sorted({r.surface for r in first})
    rows = {s: [i for i, r in enumerate(first) if r.surface == s] for s in surfaces}

    def of(picked: np.ndarray) -> float:
        index = [i for p in picked for i in rows[surfaces[int(p)]]]
        return float(statistic({name: [rs[i] for i in index] for name, rs in runs.items()}))

    point = of(np.arange(len(surfaces)))
    if len(surfaces) < 2:
        return point, math.nan, math.nan
    result = stats.bootstrap((np.arange(len(surfaces)),), of, vectorized=False, method="percentile",
                             n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=0.9,
                             random_state=np.random.default_rng(0))
    return point, float(result.confidence_interval.low), float(result.confidence_interval.high)


def median_reach(runs: list[Run], compiles: int) -> float:
    return statistics.median(reach_or_cap(r, compiles) for r in runs)


def shown_reach(value: float, compiles: int) -> str:
    """Compiles to 97% as the tables print them: past the budget as ``>40``."""
    return f">{compiles}" if value > compiles else f"{value:g}"


def shown_interval(low: float, high: float, form: Any) -> str:
    """``[low, high]`` in ``form`` (a function of one value), or ``[n/a]`` without an interval."""
    return "[n/a]" if math.isnan(low) else f"[{form(low)}, {form(high)}]"


def versus(results: dict[str, list[Run]], compiles: int, reference: str = "local") -> None:
    """Each strategy against ``reference`` in compiles to 97%, with 90% intervals by surface: the ratio of the
    medians (the issue's reading, ``reference`` over the strategy: 2 means half the compiles) and the geometric mean
    of the per-study ratios (the same surface and seed; a resample takes both strategies' studies of the same
    surfaces, so a hard surface weighs on both). A study that never
    reaches 97% counts at ``compiles`` + 1, so a ratio whose median lies past the budget is a bound, and says so."""
    if reference not in results:
        return
    print(f"  compiles to {TARGET:.0%} against {reference} (90% intervals, resampling surfaces):")
    for name in results:
        if name == reference:
            continue
        pair = {"reference": results[reference], "other": results[name]}
        ratio = bootstrap(pair, lambda rs: median_reach(rs["reference"], compiles) /
                          median_reach(rs["other"], compiles))
        paired = bootstrap(pair, lambda rs: math.exp(statistics.fmean(
            math.log(reach_or_cap(a, compiles) / reach_or_cap(b, compiles))
            for a, b in zip(rs["reference"], rs["other"]))))
        theirs_past, ours_past = (median_reach(results[n], compiles) > compiles for n in (reference, name))
        bound = ("undecided, both past the budget: " if theirs_past and ours_past else "at least " if theirs_past
                 else "at most " if ours_past else "")
        print(f"    {name:<11} {reference}/{name}: ratio of medians {bound}{ratio[0]:.2f}x "
              f"{shown_interval(ratio[1], ratio[2], '{:.2f}'.format)}; per study (geometric mean) {paired[0]:.2f}x "
              f"{shown_interval(paired[1], paired[2], '{:.2f}'.format)}")


def tenth(values: list[float]) -> float:
    """The 10th percentile (a low tail that, unlike the minimum, does not fall as studies are added)."""
    return statistics.quantiles(values, n=10, method="inclusive")[0] if len(values) > 1 else values[0]


def table(title: str, results: dict[str, list[Run]], compiles: int) -> None:
    """One row per strategy; with a validation, also its winner's quality, the studies below the worst target and
    below the preset after it, and the measurements it added per compile."""
    validated = any(r.validated is not None for runs in results.values() for r in runs)
    print(f"\n{title}")
    print(f"{'strategy':<11} {'median@40':>9} {'worst@40':>8} {'p10@40':>6} {f'<{WORST_TARGET:g}':>5} {'median@20':>9} "
          f"{'to 97% (median)':>15} {'90% interval':>12} "
          f"{'reached':>7} {'meas/compile':>12} {'below preset':>12} {'found@40 med/worst':>18}" +
          (f" {'validated med/worst':>19} {'<' + format(WORST_TARGET, 'g'):>5} {'below preset':>12} "
           f"{'+meas/compile':>13}" if validated else ""))
    for name, runs in results.items():
        finals = [at(r.curve, compiles) for r in runs]
        halves = [at(r.curve, compiles // 2) for r in runs]
        reach = [to_target(r.curve) for r in runs]
        median, low, high = bootstrap({name: runs}, lambda rs: median_reach(rs[name], compiles))
        per_compile = sum(r.measurements for r in runs) / max(1, sum(r.compiles for r in runs))
        below = sum(r.baseline is not None and at(r.curve, compiles) < r.baseline - 1e-9 for r in runs)
        found = [r.found for r in runs]
        print(f"{name:<11} {statistics.median(finals):>9.3f} {min(finals):>8.3f} {tenth(finals):>6.3f} "
              f"{sum(q < WORST_TARGET for q in finals):>5} {statistics.median(halves):>9.3f} "
              f"{shown_reach(median, compiles):>15} "
              f"{shown_interval(low, high, lambda v: shown_reach(v, compiles)):>12} "
              f"{sum(r is not None for r in reach):>3}/{len(reach):<3} {per_compile:>12.2f} {below:>12} "
              f"{f'{statistics.median(found):.3f}/{min(found):.3f}':>18}" +
              (validation_columns(runs) if validated else ""))


def matched(results: dict[str, list[Run]], compiles: int, reference: str = "local") -> None:
    """The issue's "fewer compiles for the same quality" read at the quality ``reference`` ends with: per study
    (same surface and seed), the compiles ``reference`` took to first reach its final quality, against those each
    other strategy takes to reach it (``compiles`` + 1 where it never does)."""
    if reference not in results:
        return
    goals = [r.curve[-1] if r.curve else None for r in results[reference]]  # a study with no compile: left out
    first = [to_target(r.curve, goal) for r, goal in zip(results[reference], goals) if goal is not None]
    for name, runs in results.items():
        if name == reference:
            continue
        assert len(runs) == len(goals), "every strategy runs the same studies in the same order"
        needed = [reach_or_cap(r, compiles, goal) for r, goal in zip(runs, goals) if goal is not None]
        theirs, ours = statistics.median(first), statistics.median(needed)
        shown = f"{ours:g}" if ours <= compiles else f">{compiles}"
        print(f"  to {reference}'s final quality: {reference} first reaches it in a median of {theirs:g} compiles, "
              f"{name} in {shown} ({'<' if ours > compiles else ''}{theirs / ours:.2f}x); {name} never reaches it in "
              f"{sum(k > compiles for k in needed)} of {len(needed)} studies")


def validation_columns(runs: list[Run]) -> str:
    """What the validation after the search hands the user, valued noise free (a study without one counts at 0)."""
    picked = [r.validated or 0.0 for r in runs]
    below = sum(r.baseline is not None and (r.validated or 0.0) < r.baseline - 1e-9 for r in runs)
    added = sum(r.validation_measurements for r in runs) / max(1, sum(r.compiles for r in runs))
    return (f" {f'{statistics.median(picked):.3f}/{min(picked):.3f}':>19} "
            f"{sum(q < WORST_TARGET for q in picked):>5} {below:>12} {added:>13.2f}")


def groups(surfaces: list[int]) -> dict[str, list[int]]:
    """The surfaces asked for, by set (the two tuning sets and the nine held-out sets), the sets left empty left
    out."""
    chosen = {name: [i for i in surfaces if i in members] for name, members in SETS.items()}
    return {name: indices for name, indices in chosen.items() if indices}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--compiles", type=int, default=40)
    parser.add_argument("--strategies", nargs="+",
                        default=["tpe-today", "tpe", "tpe-plain", "two-phase", "local", "random"])
    parser.add_argument("--surfaces", nargs="+", type=int, default=[i for members in SETS.values() for i in members])
    parser.add_argument("--close-sigmas", type=float, default=noise.CLOSE_SIGMAS,
                        help="a trial within this many noise sigmas of the best is measured again (default: "
                             "autotune's)")
    parser.add_argument("--polish-every", type=int, default=3)
    parser.add_argument("--polish-after", type=int, default=25)
    parser.add_argument("--validate-top", type=int, default=0,
                        help="after each study, autotune's validation of its best N (a run's default is 3) and "
                             "columns for its winner; default 0, the search's own pick alone")
    parser.add_argument("--wall", action="store_true", help="also the wall-clock view (two-phase and local)")
    parser.add_argument("--wall-scale", type=float, default=0.01, help="real seconds per emulated second")
    parser.add_argument("--wall-compiles", type=int, default=120, help="compiles per study in the wall view")
    parser.add_argument("--wall-only", action="store_true", help="only the wall-clock view")
    args = parser.parse_args()
    started = time.monotonic()
    chosen = strategies(args)
    if "gp" in chosen:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("gp left out: torch is not installed (pip install torch==2.13.0, the CPU build)", file=sys.stderr)
            del chosen["gp"]
    best = optima(args.surfaces)
    print(f"{len(args.surfaces)} surfaces, {args.seeds} seeds, {args.compiles} compiles; optima computed "
          f"in {time.monotonic() - started:.0f} s")
    held_out: dict[str, list[Run]] = {name: [] for name in chosen}
    sets = {} if args.wall_only else groups(args.surfaces)
    held_out_sets = [indices for group, indices in sets.items() if group not in TUNING_SETS]
    for group, indices in sets.items():
        results: dict[str, list[Run]] = {name: [] for name in chosen}
        for index in indices:
            case = Case(index)
            for name, strategy in chosen.items():
                for seed in range(args.seeds):
                    results[name].append(run(case, strategy, seed=seed, compiles=args.compiles,
                                             optimum=best[index], validate_top=args.validate_top))
            finals = {n: statistics.median(at(r.curve, args.compiles) for r in rs[-args.seeds:])
                      for n, rs in results.items()}
            print(f"  {case.label()}: " + ", ".join(f"{n} {q:.3f}" for n, q in finals.items()), file=sys.stderr,
                  flush=True)
        table(f"{group} surfaces ({len(indices)}): quality = noise-free value of the best measured trial / optimum",
              results, args.compiles)
        matched(results, args.compiles)
        versus(results, args.compiles)
        if group not in TUNING_SETS:
            for name, runs in results.items():
                held_out[name] += runs
    if len(held_out_sets) > 1:
        table(f"every held-out surface ({sum(map(len, held_out_sets))}), pooled", held_out, args.compiles)
        matched(held_out, args.compiles)
        versus(held_out, args.compiles)
    if args.wall or args.wall_only:
        wall(args, best)
    print(f"\n{time.monotonic() - started:.0f} s")


def wall(args: argparse.Namespace, best: dict[int, float]) -> None:
    print(f"\nwall clock to 97% of the optimum (compile 60-180 s, measurement 5 s, 16 compile workers, one card; "
          f"at most {args.wall_compiles} compiles):")
    for group, indices in groups(args.surfaces).items():
        for name in ("two-phase", "local"):
            strategy = strategies(argparse.Namespace(**vars(args) | {"strategies": [name]}))[name]
            times = [wall_run(Case(i), strategy, seed=0, compiles=args.wall_compiles, optimum=best[i],
                              scale=args.wall_scale) for i in indices]
            reached = sorted(t.wall_to_target_s / 60 for t in times if t.wall_to_target_s is not None)
            median = statistics.median(reached) if reached else float("nan")
            worst = reached[-1] if reached else float("nan")
            print(f"  {group:<8} {name:<9} reached on {len(reached)}/{len(times)}; median {median:.0f} min, "
                  f"slowest {worst:.0f} min", flush=True)


if __name__ == "__main__":
    main()
