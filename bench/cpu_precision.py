"""Precision on the CPU: ONNX Runtime's fp32 defaults, each target's tuned winner without int8, and its tuned winner
with int8 in the search, measured side by side with LoadGen, with each one's accuracy beside its speed.

For each target (ONNX Runtime, OpenVINO) and scenario (offline, singlestream) on the synthetic ResNet-50 v1.5:
  1. two studies with `autotune run` (a small budget each, the defaults otherwise):
     "no int8"  the model file alone: no calibration set, so ONNX Runtime searches fp32 only; OpenVINO searches its
                precisions other than int8 (f32, and bf16/f16 where the CPU lists them), under the accuracy guard on
                random inputs;
     "int8"     the same with `--accuracy-set` (random samples: its first part calibrates, the rest judges), so int8
                and its recipe are searched too;
  2. ONNX Runtime's default session, and both winners, measured in interleaved rounds; medians and ratios over the
     defaults (throughput offline, p90 latency singlestream);
  3. each winner's top-1 agreement with ONNX Runtime fp32 on a third random set that neither calibrated nor judged
     any trial (the model has random weights: agreement is the only honest metric here).

    .venv/bin/python bench/cpu_precision.py [--targets ort openvino] [--scenarios offline singlestream]
        [--trials 10] [--rounds 3] [--seconds 3] [--storage sqlite:///studies/bench-precision.db]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autotune.backends import get as get_backend  # noqa: E402
from autotune.backends._cpu import cpu_device  # noqa: E402
from autotune.backends.base import Backend  # noqa: E402
from autotune.models import MODELS, ModelSpec, synthetic_model, with_calibration, with_inputs  # noqa: E402
from autotune.results.export import winner_preset  # noqa: E402
from autotune.scenarios import SCENARIOS  # noqa: E402
from autotune.storage import load_study  # noqa: E402
from autotune.task_accuracy import (AccuracyJudge, load_set, parse_max_drop, parse_metric,  # noqa: E402
                                    random_set as random_samples, split_sets)

SAMPLES = 160  # the accuracy set of the "int8" studies (its first fifth calibrates)
TEST_SAMPLES = 96  # the third set: the accuracy reported beside each speed


def random_set(model: ModelSpec, count: int, seed: int, path: Path) -> Path:
    """``count`` random samples of the model's inputs (``task_accuracy.random_set``), saved as an accuracy set."""
    np.savez(path, **random_samples(model.file_inputs(), count, seed=seed).arrays)
    return path


def tuned(target: str, scenario: str, kind: str, *, onnx: Path, accuracy_set: Path, args: argparse.Namespace) -> dict:
    """The winner's preset of the study of this target, scenario and kind (tuned now when the study is missing)."""
    name = f"bench-precision-{target}-{scenario}-{kind}"
    try:
        study = load_study(args.storage, name)
    except Exception:  # noqa: BLE001 - a missing study, whatever the storage says
        extra = ["--accuracy-set", str(accuracy_set)] if kind == "int8" else []
        print(f"[{target} {scenario} {kind}] tuning {args.trials} compiles ...", flush=True)
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "autotune", "run", "--backend", target, "--model", "resnet50",
                        "--scenario", scenario, "--onnx", str(onnx), "--trials", str(args.trials), "--study", name,
                        "--storage", args.storage, "--seed", "0", "--measure-time", str(args.seconds),
                        "--validate-top", "2", "--validate-max-rounds", "5", *extra], check=True, cwd=ROOT)
        print(f"[{target} {scenario} {kind}] tuned in {time.monotonic() - started:.0f} s", flush=True)
        study = load_study(args.storage, name)
    return winner_preset(study)


def measure(backend: Backend, model: ModelSpec, onnx: Path, candidate: Any, scenario: str, seconds: float,
            workdir: Path, artifacts: dict[str, Any], label: str) -> float:
    """One LoadGen run of the candidate (compiled once per label): samples/s offline, p90 ms singlestream."""
    if label not in artifacts:
        artifacts[label] = backend.compile(onnx, model, candidate, workdir / label)
    m = backend.measure(artifacts[label], candidate, model=model, scenario=SCENARIOS[scenario], bound_ms=None,
                        seconds=seconds, device=0, log_dir=workdir / f"{label}-{time.time_ns()}")
    return m.samples_per_second if scenario == "offline" else float(m.latency_p90_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="+", default=["ort", "openvino"], choices=["ort", "openvino"])
    parser.add_argument("--scenarios", nargs="+", default=["offline", "singlestream"],
                        choices=["offline", "singlestream"])
    parser.add_argument("--trials", type=int, default=10, help="compiles per study")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--storage", default=f"sqlite:///{ROOT / 'studies' / 'bench-precision.db'}")
    args = parser.parse_args()
    (ROOT / "studies").mkdir(exist_ok=True)
    onnx = synthetic_model(MODELS["resnet50"])
    model = with_inputs(MODELS["resnet50"], onnx)
    work = Path(tempfile.mkdtemp(prefix="bench-precision-"))
    accuracy_set = random_set(model, SAMPLES, 1, work / "accuracy.npz")
    calibrated = with_calibration(model, split_sets(load_set(accuracy_set, model.file_inputs())).calibration)
    test = load_set(random_set(model, TEST_SAMPLES, 2, work / "test.npz"), model.file_inputs())
    judge = AccuracyJudge(onnx_path=onnx, inputs=model.file_inputs(), judged=test,
                          metric=parse_metric("agreement", labels=False), max_drop=parse_max_drop("1%"))
    print(f"host CPU flags: {' '.join(cpu_device().isa_flags)}; {cpu_device().cores} cores")
    rows = []
    for target in args.targets:
        backend = get_backend(target)()
        print(f"{target}: {backend.version()}", flush=True)
        for scenario in args.scenarios:
            configs = {"ORT fp32 defaults": (get_backend("ort")(), model, "graph_optimization_level=all")}
            for kind in ("no int8", "int8"):
                preset = tuned(target, scenario, kind.replace(" ", "-"), onnx=onnx, accuracy_set=accuracy_set,
                               args=args)
                configs[f"{target} tuned, {kind}"] = (backend, calibrated if kind == "int8" else model,
                                                      preset["flags"])
            rows += compare(configs, scenario, onnx, judge, args, work / f"{target}-{scenario}")
    report(rows)


def compare(configs: dict[str, tuple[Backend, ModelSpec, str]], scenario: str, onnx: Path, judge: AccuracyJudge,
            args: argparse.Namespace, workdir: Path) -> list[tuple]:
    """The configurations measured in interleaved rounds, then each one's agreement on the test set."""
    artifacts: dict[str, Any] = {}
    figures: dict[str, list[float]] = {label: [] for label in configs}
    candidates = {}
    for label, (backend, model, flags) in configs.items():
        target = backend.target(model=model, scenario=SCENARIOS[scenario], devices=None)
        candidates[label] = target.space.parse(flags, options={})
    for _ in range(args.rounds):
        for label, (backend, model, _flags) in configs.items():
            figures[label].append(measure(backend, model, onnx, candidates[label], scenario, args.seconds, workdir,
                                          artifacts, label))
    rows = []
    base = statistics.median(figures["ORT fp32 defaults"])
    for label, (backend, model, _flags) in configs.items():
        candidate, artifact = candidates[label], artifacts[label]
        verdict = judge.evaluate(lambda feed: backend.outputs(artifact, candidate, model=model, feed=feed, device=0),
                                 batch_size=candidate.batch_size)
        value = statistics.median(figures[label])
        ratio = value / base if scenario == "offline" else base / value
        rows.append((scenario, label, value, ratio, verdict.metric, candidate.flag_string(), figures[label]))
        print(f"[{scenario}] {label}: {figures[label]} agreement {verdict.metric:.3f}", flush=True)
    return rows


def report(rows: list[tuple]) -> None:
    print(f"\n{'scenario':<13} {'configuration':<28} {'median':>9} {'vs ORT fp32':>11} {'agreement':>9}  settings")
    for scenario, label, value, ratio, agreement, flags, _ in rows:
        unit = "img/s" if scenario == "offline" else "ms p90"
        print(f"{scenario:<13} {label:<28} {value:>9.2f} {ratio:>10.2f}x {agreement:>9.3f}  {flags}  ({unit})")
    print("medians of interleaved rounds; ratio = throughput over ORT fp32 defaults (offline) or its p90 latency "
          "over this one's (singlestream); agreement = top-1 agreement with ORT fp32 on random inputs that neither "
          "calibrated nor judged any trial")


if __name__ == "__main__":
    main()
