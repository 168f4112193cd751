"""The commands that re-measure exported presets: ``verify`` (here, on the toolchain the options name) and
``revalidate`` (after an upgrade: regressions listed, and with ``--retune N`` tuned again from the old winner)."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Any

from autotune import backends
from autotune.backends.base import Backend
from autotune.compile_cache import default_cache_dir
from autotune.errors import AutotuneError
from autotune.results.verdict import verdict_line
from autotune.search.records import MeasureSettings, RunEnvironment, SearchPolicy, ValidationSettings, build_job
from autotune.search.reproduce import Check, check, entry_key, read_presets, select, setting_for
from autotune.search.tuner import Tuner

DEFAULT_WORKDIR = Path(".autotune") / "work" / "verify"


def cmd_verify(args: argparse.Namespace) -> int:
    entries = select(read_presets(args.presets), args.entry, args.presets)
    pairs = [(entry, _backend_for(entry, args)) for entry in entries]  # every backend checked before measuring
    checks = [_check(entry, backend, args) for entry, backend in pairs]
    regressed = [c for c in checks if c.regressed]
    print(f"{len(checks) - len(regressed)} of {len(checks)} presets reproduced or faster" +
          (f"; regressed: {', '.join(c.key for c in regressed)}" if regressed else ""))
    return 1 if regressed else 0


def cmd_revalidate(args: argparse.Namespace) -> int:
    entries = select(read_presets(args.presets), args.entry, args.presets)
    pairs = [(entry, _backend_for(entry, args)) for entry in entries]
    for entry, backend in pairs:
        if entry.get("sdk_version") == backend.version():
            print(f"{entry_key(entry)}: measured on {backend.version()} already (this toolchain): checking it")
    checks = [_check(entry, backend, args) for entry, backend in pairs]
    regressed = [(entry, backend, c) for (entry, backend), c in zip(pairs, checks) if c.regressed]
    print(f"{len(regressed)} of {len(checks)} presets regressed on the new toolchain" +
          (f": {', '.join(c.key for _, _, c in regressed)}" if regressed else ""))
    if regressed and args.retune:
        for entry, backend, _ in regressed:
            _retune(entry, backend, args)
    return 1 if regressed else 0


def _check(entry: dict[str, Any], backend: Backend, args: argparse.Namespace) -> Check:
    print(f"{entry_key(entry)}: compiling and measuring {args.rounds} runs on {backend.version()} (the preset: "
          f"{entry.get('sdk_version')}) ...", flush=True)
    result = check(entry, backend, rounds=args.rounds, seconds=args.time, workdir=args.workdir.resolve(),
                   cache_dir=default_cache_dir(), progress=lambda line: print(line, flush=True),
                   busy_cpu_pct=args.busy_cpu, quiet_wait_s=args.quiet_wait,
                   accuracy_set=args.accuracy_set, calibration_set=args.calibration_set)
    print(result.line, flush=True)
    return result


def _backend_for(entry: dict[str, Any], args: argparse.Namespace) -> Backend:
    """The entry's backend, set up from the command's options, for the size the entry was tuned for."""
    cls = backends.get(str(entry["backend"]))
    why = cls.probe(args)
    if why is not None:
        raise AutotuneError(f"{entry_key(entry)} is a {cls.name} preset and {cls.name} ({cls.title}) is not usable "
                            f"here: {why}")
    options = argparse.Namespace(**vars(args))
    size_key = entry.get("size_key")
    if size_key and getattr(options, size_key, None) is None:
        setattr(options, size_key, entry.get(size_key))
    return cls.from_options(options)


def _retune(entry: dict[str, Any], backend: Backend, args: argparse.Namespace) -> None:
    """An ``args.retune``-trial study on the new toolchain, warm-started from the old winner and its neighbours."""
    setting = setting_for(entry, backend, accuracy_set=args.accuracy_set, calibration_set=args.calibration_set)
    space, key = setting.target.space, entry_key(entry)
    old = space.params_for(setting.candidate)
    warm = [(f"preset {key}", old)] + [(f"preset {key}, one step", p) for p in space.neighbours(setting.candidate)]
    warm = [(f"{label} #{i}" if i else label, params) for i, (label, params) in enumerate(warm)]
    version = backend.version()
    spec = entry.get("reproduce") or {}
    job = build_job(
        target=setting.target, backend=backend, model=setting.model, onnx_path=setting.onnx, scenario=setting.scenario,
        bound_ms=setting.bound_ms, name=f"{key}-sdk-{hashlib.sha256(version.encode()).hexdigest()[:8]}",
        storage=args.storage, synthetic=bool(entry.get("synthetic_model")), accuracy=setting.accuracy,
        model_options={k: v for k, v in spec.items() if k in ("batch_dim", "input_shapes", "inputs")},
        search=SearchPolicy(n_trials=args.retune, seed=0, warm_params=warm),
        measure=MeasureSettings(seconds=args.time or backend.measure_seconds, busy_cpu_pct=args.busy_cpu,
                                quiet_wait_s=args.quiet_wait),
        validation=ValidationSettings(seconds=args.time or spec.get("measure_seconds") or backend.validate_seconds,
                                      rounds=max(3, args.rounds)),
        environment=RunEnvironment(workdir=args.workdir.resolve(), cache_dir=default_cache_dir()))
    print(f"retuning {key} on {version}: study {job.identity.name}, {args.retune} compiles, the old winner and its "
          f"{len(warm) - 1} one-step neighbours first", flush=True)
    summary = Tuner(job, progress=lambda line: print(line, flush=True)).run()
    print(verdict_line(summary, setting.scenario.unit))
    print(f"export it with: autotune export {job.identity.name} --out {args.presets}" +
          (f" --storage {args.storage}" if args.storage else ""))
