"""ONNX Runtime and OpenVINO on this CPU, untuned and tuned, measured side by side with LoadGen.

For the synthetic ResNet-50 v1.5 and the synthetic RetinaNet-shaped detector, offline and singlestream: four settings
per case (ONNX Runtime's default session, ONNX Runtime's tuned winner, OpenVINO's hint for the scenario with its
optimal number of requests, OpenVINO's tuned winner). The winners come from the studies in --storage (each tuned
first with a short `autotune run` when it is missing; raise --trials, --measure-time and --seconds for firmer
figures). With the defaults ResNet-50 alone (--models resnet50) takes about 10 minutes on 2 shared cores; RetinaNet
is ~10x slower per sample (its singlestream runs need LoadGen's 32 queries of over a second each), so both models
took about an hour there. The four are then measured in turn,
--repeats rounds, in one process, each a LoadGen run of the scenario itself; medians and ratios are printed.

    .venv/bin/python bench/cpu_runtimes.py [--repeats 3] [--seconds 3] [--trials 3] [--measure-time 1.5]
        [--models resnet50 retinanet] [--storage sqlite:///FILE] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autotune import backends  # noqa: E402
from autotune.errors import AutotuneError  # noqa: E402
from autotune.models import MODELS, synthetic_model, with_inputs  # noqa: E402
from autotune.results.export import winner_preset  # noqa: E402
from autotune.scenarios import SCENARIOS  # noqa: E402
from autotune.storage import load_study  # noqa: E402

RUNTIMES = ("ort", "openvino")
SCENARIO_METRICS = {"offline": "samples/s", "singlestream": "p90 ms"}


def tuned_candidate(backend: Any, name: str, scenario: str, args: argparse.Namespace) -> Any:
    """The validated winner of the study of ``name`` for ``scenario`` on ``backend`` (tuned now if it is missing)."""
    study_name = f"{name}-{scenario}-{backend.name}-{backend.devices()[0].size}cores"
    try:
        study = load_study(args.storage, study_name)
    except AutotuneError:
        print(f"[{name} {scenario} {backend.name}] no study {study_name}: tuning it now ({args.trials} trials) ...",
              flush=True)
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "autotune", "run", "--backend", backend.name, "--model", name,
                        "--scenario", scenario, "--synthetic", "--trials", str(args.trials), "--storage",
                        args.storage, "--measure-time", str(args.measure_time), "--validate-top", "1",
                        "--validate-time", str(2 * args.measure_time), "--seed", "0"], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL)
        print(f"[{name} {scenario} {backend.name}] tuned in {time.monotonic() - started:.0f} s", flush=True)
        study = load_study(args.storage, study_name)
    return winner_preset(study)["candidate"]


def settings(name: str, scenario: str, model: Any, args: argparse.Namespace) -> list[tuple[str, Any, Any]]:
    """(label, backend, candidate) of the four settings measured for one case."""
    rows = []
    for runtime in RUNTIMES:
        backend = backends.get(runtime)()
        target = backend.target(model=model, scenario=SCENARIOS[scenario], devices=None)
        tuned = target.space.from_dict(tuned_candidate(backend, name, scenario, args))
        rows += [(f"{runtime} {'hint' if runtime == 'openvino' else 'default'}", backend, target.baseline),
                 (f"{runtime} tuned", backend, tuned)]
    return rows


def measure_case(name: str, scenario: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Every setting of one case measured in turn, ``args.repeats`` rounds; the figures per setting."""
    onnx = synthetic_model(MODELS[name])
    model = with_inputs(MODELS[name], onnx)
    rows = settings(name, scenario, model, args)
    artifacts = [backend.compile(onnx, model, candidate, work / f"{name}-{scenario}-{i}")
                 for i, (_, backend, candidate) in enumerate(rows)]
    figures: dict[str, list[float]] = {label: [] for label, _, _ in rows}
    for repeat in range(args.repeats):
        for (label, backend, candidate), artifact in zip(rows, artifacts):
            m = backend.measure(artifact, candidate, model=model, scenario=SCENARIOS[scenario], bound_ms=None,
                                seconds=args.seconds, device=0, log_dir=work / "runs" / f"{label}-{time.time_ns()}")
            figures[label].append(m.samples_per_second if scenario == "offline" else m.latency_p90_ms)
        print(f"[{name} {scenario}] round {repeat + 1}: " +
              ", ".join(f"{label} {values[-1]:.2f}" for label, values in figures.items()), flush=True)
    return {"medians": {label: statistics.median(values) for label, values in figures.items()},
            "flags": {label: candidate.flag_string() for label, _, candidate in rows}}


def speedup(scenario: str, new: float, old: float) -> float:
    """How many times better ``new`` is: throughput ratio (offline) or inverse latency ratio (singlestream)."""
    return new / old if scenario == "offline" else old / new


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage", default=f"sqlite:///{ROOT / 'studies' / 'bench-cpu-runtimes.db'}")
    parser.add_argument("--models", nargs="+", default=["resnet50", "retinanet"], choices=["resnet50", "retinanet"])
    parser.add_argument("--trials", type=int, default=3, help="trials of each tuning study (default 3)")
    parser.add_argument("--measure-time", type=float, default=1.5,
                        help="seconds per measurement while tuning (default 1.5; validation twice that)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per measured run (default 3)")
    parser.add_argument("--cache-dir", type=Path, help="compile cache and synthetic models (default $AUTOTUNE_CACHE)")
    args = parser.parse_args()
    if args.cache_dir:
        os.environ["AUTOTUNE_CACHE"] = str(args.cache_dir.resolve())
    (ROOT / "studies").mkdir(exist_ok=True)
    print(" / ".join(backends.get(r)().version() for r in RUNTIMES) +
          f"; {args.repeats} interleaved LoadGen runs of {args.seconds:g} s per setting", flush=True)
    started = time.monotonic()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for scenario in SCENARIO_METRICS:
                results[(name, scenario)] = measure_case(name, scenario, args, Path(tmp))
    print_table(results)
    print(f"medians; x = how many times better (throughput ratio offline, inverse p90 ratio singlestream); "
          f"{time.monotonic() - started:.0f} s")


def print_table(results: dict[tuple[str, str], dict[str, Any]]) -> None:
    print(f"\n{'case':<31} {'ort default':>11} {'ort tuned':>10} {'ov hint':>9} {'ov tuned':>9} "
          f"{'ov hint/ort dflt':>16} {'ov tuned/ort tuned':>18} {'ort tuned/dflt':>14} {'ov tuned/hint':>13}")
    for (name, scenario), result in results.items():
        m = result["medians"]
        d, t, h, o = m["ort default"], m["ort tuned"], m["openvino hint"], m["openvino tuned"]
        print(f"{name + ' ' + scenario + ' (' + SCENARIO_METRICS[scenario] + ')':<31} {d:>11.2f} {t:>10.2f} "
              f"{h:>9.2f} {o:>9.2f} {speedup(scenario, h, d):>15.2f}x {speedup(scenario, o, t):>17.2f}x "
              f"{speedup(scenario, t, d):>13.2f}x {speedup(scenario, o, h):>12.2f}x")
    print("\ntuned settings:")
    for (name, scenario), result in results.items():
        for label in ("ort tuned", "openvino tuned"):
            print(f"  {name} {scenario} {label}: {result['flags'][label]}")


if __name__ == "__main__":
    main()
