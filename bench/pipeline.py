"""Pipeline utilisation on the emulated SDK: device busy fraction and wall time, serial loop against the pipeline.

Real compiles take one to several minutes and a measurement seconds. Here the emulated qaic-exec sleeps
``--compile-seconds`` and qaic-runner sleeps ``--measure-time`` x ``--time-scale``: compile about 30x a measurement
(its runner start-up included), scaled down. Every configuration runs autotune's own Tuner (TPE, a fresh storage and compile cache) through
real subprocesses. The storage is Optuna's journal file (what several processes on one host share); the last row
repeats the two-device run on SQLite, whose per-trial cost on this host is the storage's, not the pipeline's.
The table shows:

  busy     leased time of the devices / (devices x wall time): the whole run, the first compile wave included
  steady   leased time / (first lease .. last release): the devices once the pipeline is full
  wall     wall time of the trials (validation excluded)

    .venv/bin/python bench/pipeline.py [--compile-seconds 13] [--time-scale 0.2] [--trials 200] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autotune.backends.qaic import QaicBackend  # noqa: E402
from autotune.backends.qaic.space import DeviceLimits, QaicSpace  # noqa: E402
from autotune.models import MODELS, with_inputs  # noqa: E402
from autotune.scenarios import SCENARIOS  # noqa: E402
from autotune.search.records import (MeasureSettings, RunEnvironment, SearchPolicy, StudyIdentity,  # noqa: E402
                                     TuningJob, ValidationSettings)
from autotune.search.tuner import Tuner  # noqa: E402
from autotune.synthetic import build_convnet  # noqa: E402

EMULATOR = ROOT / "emulators" / "qaic"
STORAGES = {"journal": lambda folder: f"journal:{folder / 'study.log'}",
            "sqlite": lambda folder: f"sqlite:///{folder / 'study.db'}"}


@dataclass(frozen=True)
class Config:
    label: str
    compile_jobs: int
    devices: int
    trials: int
    storage: str = "journal"


@dataclass(frozen=True)
class Row:
    config: Config
    wall_s: float
    busy: float
    steady: float
    measure_s: float
    compile_s: float


def run_config(config: Config, *, onnx: Path, work: Path, measure_time: float) -> Row:
    """One Tuner run of ``config`` in a fresh storage and compile cache."""
    os.environ["QAIC_EMU_DEVICES"] = ",".join(["Ready"] * config.devices)
    folder = Path(tempfile.mkdtemp(prefix=config.label.replace(" ", "-") + "-", dir=work))
    spec = with_inputs(MODELS["resnet50"], onnx)
    device = DeviceLimits(nsp_total=16)
    job = TuningJob(
        identity=StudyIdentity(name="pipeline", storage=STORAGES[config.storage](folder), model=spec, onnx_path=onnx,
                               scenario=SCENARIOS["offline"], bound_ms=None, backend=QaicBackend(sdk_root=EMULATOR),
                               space=QaicSpace(device=device, scenario="offline"),
                               devices=list(range(config.devices)), device_size=16, sku="PCIe Pro"),
        search=SearchPolicy(n_trials=config.trials, seed=0), measure=MeasureSettings(seconds=measure_time),
        validation=ValidationSettings(top=0),
        environment=RunEnvironment(workdir=folder / "work", cache_dir=folder / "cache",
                                   compile_jobs=config.compile_jobs))
    tuner = Tuner(job, progress=lambda _: None)
    tuner.run()
    stats = tuner.stats
    trials = [t for t in tuner.study.get_trials(deepcopy=False) if "measure_seconds" in t.user_attrs]
    return Row(config=config, wall_s=stats.wall_s, busy=stats.busy_fraction(), steady=stats.steady_busy_fraction(),
               measure_s=statistics.median(t.user_attrs["measure_seconds"] for t in trials),
               compile_s=statistics.median(t.user_attrs["compile_seconds"] for t in trials))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compile-seconds", type=float, default=13.0, help="emulated compile time (default 13)")
    parser.add_argument("--time-scale", type=float, default=0.2,
                        help="emulated runner sleeps measure-time x this (default 0.2)")
    parser.add_argument("--measure-time", type=float, default=1.0, help="nominal seconds per measurement")
    parser.add_argument("--trials", type=int, default=200, help="trial budget of the pipelined runs (default 200)")
    parser.add_argument("--serial-trials", type=int, default=12,
                        help="trial budget of the serial and 1-worker runs, which take compile time per trial")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (seconds, not minutes)")
    args = parser.parse_args()
    if args.quick:
        args.compile_seconds, args.trials, args.serial_trials = 1.0, 24, 4
    os.environ.update({"QAIC_EMU_COMPILE_SECONDS": str(args.compile_seconds), "QAIC_EMU_SEED": "0",
                       "QAIC_EMU_TIME_SCALE": str(args.time_scale), "QAIC_EMU_NSP": "16"})
    nominal_measure = args.measure_time * args.time_scale
    enough = max(1, round(1.2 * args.compile_seconds / (nominal_measure + 0.2)))  # workers x measure >= compile
    configs = [
        Config("serial loop", 0, 1, args.serial_trials),
        Config("1 compile worker", 1, 1, args.serial_trials),
        Config("8 compile workers", 8, 1, max(args.serial_trials, min(args.trials, 48))),
        Config(f"{enough} compile workers", enough, 1, args.trials),
        Config(f"{2 * enough} compile workers", 2 * enough, 1, args.trials),
        Config(f"{2 * enough} workers, 2 devices", 2 * enough, 2, args.trials),
        Config(f"{2 * enough} workers, 2 dev., SQLite", 2 * enough, 2, args.trials, "sqlite"),
    ]
    print(f"emulated compile {args.compile_seconds:g} s, measurement {nominal_measure:g} s nominal "
          f"(+ runner start-up); host {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="autotune-pipeline-") as tmp:
        work = Path(tmp)
        onnx = build_convnet(work / "resnet50-bench.onnx")
        rows = []
        for config in configs:
            started = time.monotonic()
            rows.append(run_config(config, onnx=onnx, work=work, measure_time=args.measure_time))
            print(f"  ran {config.label} ({config.trials} trials) in {time.monotonic() - started:.0f} s",
                  file=sys.stderr, flush=True)
    print(f"\n{'configuration':<28} {'devices':>7} {'trials':>6} {'wall s':>8} {'s/trial':>8} {'busy':>6} "
          f"{'steady':>7} {'compile s':>9} {'measure s':>9}")
    for row in rows:
        c = row.config
        print(f"{c.label:<28} {c.devices:>7} {c.trials:>6} {row.wall_s:>8.1f} {row.wall_s / c.trials:>8.2f} "
              f"{row.busy:>6.0%} {row.steady:>7.0%} {row.compile_s:>9.2f} {row.measure_s:>9.2f}")
    serial, one_dev, two_dev = rows[0], rows[4], rows[5]
    print(f"\nper trial: serial {serial.wall_s / serial.config.trials:.2f} s, best pipeline "
          f"{min(r.wall_s / r.config.trials for r in rows[1:]):.2f} s "
          f"({serial.wall_s / serial.config.trials / min(r.wall_s / r.config.trials for r in rows[1:]):.1f}x)")
    print(f"two devices / one device, same {args.trials} trials and {2 * enough} workers: "
          f"{two_dev.wall_s / one_dev.wall_s:.2f}x the wall time (target <= 0.6)")
    print(f"steady device busy with {enough} workers (workers x measure >= compile): {rows[3].steady:.0%} "
          f"(target >= 90%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
