"""How often validation declares a gain that is noise, how often it finds a real 5% gain, and what it costs.

Each experiment is one validation (autotune's own Validator, its rounds, shuffling and statistics) of a baseline and
three other trials on a real backend:
  * same:    the three are the baseline's own setting (equal settings: any significant gain is a false one);
  * planted: the same, but one of them has every measured figure scaled by 1.05 (a 5% better candidate under the
             backend's real measurement noise).
Targets: the emulated Cloud AI 100 (its measurement noise, QAIC_EMU_NOISE, default 3%), and ONNX Runtime on this
CPU measured with LoadGen (real noise). Also reported: the measuring time one validation costs against the single
run per candidate it replaces. With --main-job-seeds N, the CPU main job (scripts/main_job.sh's study of the
synthetic ResNet-50 with its own arguments, seed 0 to N-1) is run for N seeds and its verdicts counted.

    .venv/bin/python bench/validation_noise.py [--experiments 100] [--cpu-experiments 20] [--main-job-seeds 5]
        [--main-job-args "--sdk-root ..."]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import create_trial

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autotune import backends  # noqa: E402
from autotune.models import MODELS, with_inputs  # noqa: E402
from autotune.results import attrs  # noqa: E402
from autotune.scenarios import SCENARIOS  # noqa: E402
from autotune.search.records import (RunEnvironment, SearchPolicy, StudyIdentity, TuningJob,  # noqa: E402
                                     ValidationSettings)
from autotune.search.tuner import Tuner  # noqa: E402
from autotune.synthetic import build_convnet  # noqa: E402

PLANTED = 1.05
OTHERS = 3


def experiment(backend: Any, onnx: Path, *, seed: int, planted: bool, seconds: float, rounds: int,
               max_rounds: int | None, cache: Path, work: Path) -> dict[str, Any]:
    """One validation of the baseline and ``OTHERS`` copies of it; returns the record and its wall time."""
    model = with_inputs(MODELS["resnet50"], onnx)
    scenario = SCENARIOS["offline"]
    target = backend.target(model=model, scenario=scenario, devices=None)
    job = TuningJob(
        identity=StudyIdentity(name="noise", storage=optuna.storages.InMemoryStorage(), model=model, onnx_path=onnx,
                               scenario=scenario, bound_ms=None, backend=backend, space=target.space,
                               devices=[target.devices[0].index], device_size=target.size, sku=target.sku,
                               baseline=target.baseline),
        search=SearchPolicy(seed=seed),
        validation=ValidationSettings(top=OTHERS + 1, seconds=seconds, rounds=rounds, max_rounds=max_rounds),
        environment=RunEnvironment(workdir=work, cache_dir=cache))
    tuner = Tuner(job, progress=lambda _: None)
    candidate = target.baseline.to_dict()
    for number in range(OTHERS + 1):  # equal search values: the validation measures all four
        tuner.study.add_trial(create_trial(value=1.0, constraints={"feasible": 0.0}, user_attrs={
            attrs.CANDIDATE: candidate, attrs.BASELINE: number == 0}))
    if planted:
        run = tuner.evaluator.measure

        def scaled(*args: Any, label: str, **kwargs: Any) -> Any:
            measurement = run(*args, label=label, **kwargs)
            if label.startswith(f"validate-{OTHERS}-"):
                measurement.samples_per_second *= PLANTED
            return measurement

        tuner.evaluator.measure = scaled  # type: ignore[method-assign]
    start = time.monotonic()
    record = tuner.validate()
    return {"record": record, "wall": time.monotonic() - start, "planted_won": record.get(attrs.WINNER_TRIAL) == OTHERS}


def series(name: str, backend: Any, onnx: Path, *, n: int, seconds: float, rounds: int, max_rounds: int | None,
           before_s: float) -> dict[str, Any]:
    """``n`` experiments of each kind; the false-gain and detection rates and the time."""
    with tempfile.TemporaryDirectory() as tmp:
        cache, work = Path(tmp) / "cache", Path(tmp) / "work"
        same = [experiment(backend, onnx, seed=s, planted=False, seconds=seconds, rounds=rounds,
                           max_rounds=max_rounds, cache=cache, work=work) for s in range(n)]
        print(f"  [{name}] {n} experiments with equal settings done", flush=True)
        planted = [experiment(backend, onnx, seed=1000 + s, planted=True, seconds=seconds, rounds=rounds,
                              max_rounds=max_rounds, cache=cache, work=work) for s in range(n)]
    false = sum(bool(e["record"].get(attrs.SIGNIFICANT)) for e in same)
    found = sum(bool(e["record"].get(attrs.SIGNIFICANT)) and e["planted_won"] for e in planted)
    everything = same + planted
    return {"name": name, "n": n, "false": false, "found": found, "wall": statistics.median(e["wall"] for e in
                                                                                             everything),
            "single": (OTHERS + 1) * seconds, "before": (OTHERS + 1) * before_s,
            "rounds": statistics.mean(e["record"][attrs.ROUNDS] for e in everything),
            "noise": statistics.median(_spread(e["record"]) for e in same) * 100}


def _spread(record: dict[str, Any]) -> float:
    """The relative spread of one measurement: the baseline's rounds (log standard deviation)."""
    baseline = next(e for e in record[attrs.VALIDATED] if e[attrs.BASELINE])
    return statistics.stdev(math.log(v) for v in baseline[attrs.SAMPLES])


MAIN_JOB = ["--model", "resnet50", "--scenario", "offline", "--measure-time", "2", "--synthetic", "--validate-top",
            "1", "--validate-max-rounds", "5"]  # scripts/main_job.sh's study, less --trials and --seed


def main_job_verdicts(seeds: int, trials: int, extra: list[str]) -> list[str]:
    """The CPU main job's validation verdict for each seed (its own storage each time)."""
    verdicts = []
    for seed in range(seeds):
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run([sys.executable, "-m", "autotune", "run", "--backend", "ort", *MAIN_JOB, "--trials",
                                  str(trials), "--seed", str(seed), "--storage", f"sqlite:///{tmp}/s.db",
                                  "--workdir", f"{tmp}/w", *extra],
                                 capture_output=True, text=True, cwd=ROOT)
            lines = out.stdout.splitlines()
            line = next((ln for ln in lines if ln.startswith("winner:")), out.stderr.strip())
            number = re.search(r"trial #(\d+)", line)
            knobs = next((ln.split(f"] #{number[1]} ", 1)[1].split(" -> ")[0] for ln in lines
                          if number and f"] #{number[1]} " in ln), None)
            line += f" [{knobs}]" if knobs else ""
            verdicts.append(line)
            print(f"  [main job seed {seed}] {line}", flush=True)
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", type=int, default=100, help="per kind on the emulator (default 100)")
    parser.add_argument("--cpu-experiments", type=int, default=20, help="per kind on the CPU (default 20; 0: skip)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-rounds", type=int, help="validation's --validate-max-rounds (default: its own)")
    parser.add_argument("--cpu-seconds", type=float, default=1.0, help="seconds per CPU run (default 1)")
    parser.add_argument("--main-job-seeds", type=int, default=0, help="run the CPU main job for this many seeds")
    parser.add_argument("--main-job-trials", type=int, default=8, help="its compiles (default 8, as in the main job)")
    parser.add_argument("--main-job-args", default="", help="more `autotune run` arguments for the main job runs")
    args = parser.parse_args()
    os.environ.setdefault("QAIC_EMU_NOISE", "0.03")
    os.environ.setdefault("QAIC_EMU_TIME_SCALE", "0.001")
    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_convnet(Path(tmp) / "resnet50-tiny.onnx")
        namespace = argparse.Namespace(sdk_root=str(ROOT / "emulators" / "qaic"), nsp=14)
        rows = [series("emulated Cloud AI 100, QAIC_EMU_NOISE=" + os.environ["QAIC_EMU_NOISE"],
                       backends.get("qaic").from_options(namespace), tiny, n=args.experiments, seconds=10.0,
                       rounds=args.rounds, max_rounds=args.max_rounds, before_s=20.0)] if args.experiments else []
        if args.cpu_experiments:
            cpu = backends.get("ort").from_options(argparse.Namespace())
            rows.append(series("ONNX Runtime on this CPU, tiny convnet", cpu, tiny, n=args.cpu_experiments,
                               seconds=args.cpu_seconds, rounds=args.rounds, max_rounds=args.max_rounds,
                               before_s=10.0 * args.cpu_seconds / 5))
    print(f"\n{'target':<44} {'runs':>5} {'noise':>6} {'false gains':>12} {'5% found':>9} {'rounds':>7} "
          f"{'wall s':>7} {'measuring s: now / before (one longer run each)':>48}")
    for r in rows:
        print(f"{r['name']:<44} {r['n']:>5} {r['noise']:>5.1f}% {r['false'] / r['n']:>11.0%} "
              f"{r['found'] / r['n']:>8.0%} {r['rounds']:>7.1f} {r['wall']:>7.1f} "
              f"{r['rounds'] * r['single']:>33.0f} / {r['before']:.0f} "
              f"({r['rounds'] * r['single'] / r['before']:.1f}x)")
    if args.main_job_seeds:
        verdicts = main_job_verdicts(args.main_job_seeds, args.main_job_trials, args.main_job_args.split())
        kept = sum("no significant gain" in v for v in verdicts)
        print(f"\nCPU main job: no significant gain in {kept} of {len(verdicts)} seeds")


if __name__ == "__main__":
    main()
