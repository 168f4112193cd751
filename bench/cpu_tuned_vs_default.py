"""ONNX Runtime's default session settings against autotune's tuned winner, measured side by side with LoadGen.

For resnet50 (the synthetic ResNet-50 v1.5 unless --onnx is given) offline and singlestream: the winner comes from
the study in --storage (tuned first with `autotune run` if the study is missing), then default and tuned are
measured alternately, --repeats times each, in the same process; medians and the ratio are printed.

    .venv/bin/python bench/cpu_tuned_vs_default.py [--repeats 3] [--seconds 5] [--trials 12]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autotune.backends.ort import OrtBackend  # noqa: E402
from autotune.backends.ort.space import OrtCandidate  # noqa: E402
from autotune.errors import AutotuneError  # noqa: E402
from autotune.models import MODELS, synthetic_model, with_inputs  # noqa: E402
from autotune.results.export import winner_preset  # noqa: E402
from autotune.scenarios import SCENARIOS  # noqa: E402
from autotune.storage import load_study  # noqa: E402


def tuned_candidate(scenario: str, *, storage: str, onnx: Path, trials: int) -> OrtCandidate:
    """The validated winner of the CPU study for this scenario (tuned now if the study does not exist)."""
    backend = OrtBackend()
    name = f"resnet50-{scenario}-ort-{backend.cpu.cores}cores"
    try:
        study = load_study(storage, name)
    except AutotuneError:
        print(f"[{scenario}] no study {name}: tuning it now ({trials} trials) ...", flush=True)
        subprocess.run([sys.executable, "-m", "autotune", "run", "--backend", "ort", "--model", "resnet50",
                        "--scenario", scenario, "--onnx", str(onnx), "--trials", str(trials), "--storage", storage,
                        "--seed", "0"], check=True, cwd=ROOT)
        study = load_study(storage, name)
    return OrtCandidate.from_dict(winner_preset(study)["candidate"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=Path, help="model file (default: the synthetic ResNet-50 v1.5)")
    parser.add_argument("--storage", default=f"sqlite:///{ROOT / 'studies' / 'bench-cpu.db'}")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    (ROOT / "studies").mkdir(exist_ok=True)
    onnx = args.onnx or synthetic_model(MODELS["resnet50"])
    backend = OrtBackend()
    model = with_inputs(MODELS["resnet50"], onnx)
    print(f"{backend.version()}; model {onnx.name}; {args.repeats} alternating LoadGen runs of {args.seconds:g} s")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scenario, metric, better in (("offline", "samples/s", max), ("singlestream", "p90 ms", min)):
            tuned = tuned_candidate(scenario, storage=args.storage, onnx=onnx, trials=args.trials)
            figures: dict[str, list[float]] = {"default": [], "tuned": []}
            for repeat in range(args.repeats):
                for label, candidate in (("default", OrtCandidate()), ("tuned", tuned)):
                    artifact = backend.compile(onnx, model, candidate, Path(tmp) / f"{scenario}-{label}")
                    m = backend.measure(artifact, candidate, model=model, scenario=SCENARIOS[scenario],
                                        bound_ms=None, seconds=args.seconds, device=0,
                                        log_dir=Path(tmp) / f"{scenario}-{label}-{repeat}-{time.time_ns()}")
                    figures[label].append(m.samples_per_second if scenario == "offline" else m.latency_p90_ms)
            default, best = statistics.median(figures["default"]), statistics.median(figures["tuned"])
            ratio = best / default if better is max else default / best
            rows.append((scenario, metric, default, best, ratio, tuned.flag_string()))
            print(f"[{scenario}] default {figures['default']}  tuned {figures['tuned']}", flush=True)
    print(f"\n{'scenario':<13} {'metric':<10} {'default':>10} {'tuned':>10} {'speed-up':>9}  tuned settings")
    for scenario, metric, default, best, ratio, flags in rows:
        print(f"{scenario:<13} {metric:<10} {default:>10.2f} {best:>10.2f} {ratio:>8.2f}x  {flags}")
    print("medians; speed-up = tuned/default throughput (offline) or default/tuned p90 latency (singlestream)")


if __name__ == "__main__":
    main()
