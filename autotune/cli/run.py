"""The commands that drive a target: ``run`` (a study), ``bench`` (one set of settings) and ``devices``."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from autotune import backends
from autotune.backends.base import Backend, Measurement
from autotune.compile_cache import default_cache_dir
from autotune.errors import AutotuneError
from autotune.models import (ModelSpec, check_onnx, download_model, get_model, model_sha256, resolve_onnx,
                             synthetic_model, with_calibration, with_inputs)
from autotune.objective import judge
from autotune.results import attrs
from autotune.results.verdict import verdict_line
from autotune.scenarios import Scenario, get_scenario, latency_bound_ms
from autotune.search.accuracy import DEFAULT_MAX_DROP, AccuracySettings, accuracy_settings
from autotune.search.evaluate import Evaluator
from autotune.search.records import (Compiled, MeasureSettings, RunEnvironment, SearchPolicy, ValidationSettings,
                                     build_job, default_study_name)
from autotune.search.tuner import Tuner
from autotune.storage import display_url
from autotune.task_accuracy import random_set

DEFAULT_WORKDIR = Path(".autotune") / "work"
DEFAULT_TRIALS = 40


def cmd_run(args: argparse.Namespace) -> int:
    scenario = get_scenario(args.scenario)
    model = _model(args)
    bound = latency_bound_ms(scenario, model, args.latency_bound_ms)
    backend = _backend(args)
    onnx_path, synthetic = model_file(model, args.onnx, synthetic=args.synthetic)
    model = read_model_inputs(model, onnx_path, args)
    accuracy = _accuracy_settings(args, onnx_path, model, synthetic=synthetic)
    model = with_calibration(model, accuracy.calibration if accuracy else None)
    if args.compile_jobs and not backend.compiles_ahead:
        raise AutotuneError(f"--compile-jobs: the {backend.name} backend compiles on the device it measures on, so it "
                            f"compiles each trial just before measuring it")
    target = backend.target(model=model, scenario=scenario, devices=args.devices)
    job = build_job(
        target=target, backend=backend, model=model, onnx_path=onnx_path, scenario=scenario, bound_ms=bound,
        name=args.study or default_study_name(model.name, scenario.name, backend, target.size), storage=args.storage,
        synthetic=synthetic, model_options=model_options(args), accuracy=accuracy,
        search=SearchPolicy(sampler=args.sampler, n_trials=args.trials if args.trials or args.timeout else
                            DEFAULT_TRIALS, timeout_s=args.timeout, warm_start=args.warm_start,
                            warm_start_top=args.warm_start_top, seed=args.seed),
        measure=MeasureSettings(seconds=args.measure_time or backend.measure_seconds, busy_cpu_pct=args.busy_cpu,
                                quiet_wait_s=args.quiet_wait),
        validation=ValidationSettings(top=args.validate_top, seconds=args.validate_time or backend.validate_seconds,
                                      rounds=args.validate_rounds, max_rounds=args.validate_max_rounds),
        environment=RunEnvironment(workdir=args.workdir.resolve(), cache_dir=args.cache_dir or default_cache_dir(),
                                   heartbeat_s=args.heartbeat, storage_wait_s=args.storage_wait,
                                   compile_jobs=(os.cpu_count() or 1 if backend.compiles_ahead else 0)
                                   if args.compile_jobs is None else args.compile_jobs))
    tuner, study = Tuner(job, progress=lambda line: print(line, flush=True)), job.identity
    print(f"study {study.name} in {display_url(study.storage)} ({len(tuner.study.trials)} trials stored): "
          f"{model.name} {scenario.name} ({scenario.description}), {target.description}, {backend.version()}")
    workers = job.environment.compile_jobs
    jobs = f"{workers} compile workers ahead" if workers else "compiles one at a time, in line"
    print(f"pipeline: {jobs}; compile cache {tuner.cache.root if tuner.cache else 'off'}")
    print(model.file_inputs().describe())
    _print_accuracy(tuner, args)
    if synthetic:
        print("SYNTHETIC MODEL: random weights of the same architecture; figures show speed, and accuracy only as "
              "agreement with fp32 on random inputs")
    if target.baseline is not None:
        print(f"baseline: {target.baseline_label} (batch {target.baseline.batch_size})")
    else:
        print(f"no hand-tuned preset for {model.name} {scenario.name} on this device: starting from scratch")
    try:
        summary = tuner.run()
    except KeyboardInterrupt:
        done = sum(t.state.is_finished() for t in tuner.study.trials)
        print(f"autotune: interrupted; {done} finished trials are stored in study {study.name}. "
              f"Run the same command again to resume.", file=sys.stderr)
        return 130
    _print_device_use(tuner)
    _print_outcome(tuner, summary, args)
    return 0


def _accuracy_settings(args: argparse.Namespace, onnx_path: Path, model: ModelSpec, *,
                       synthetic: bool) -> AccuracySettings | None:
    """The accuracy options checked against the model (bad input: one line, before any study); None where none
    was given and the model is not synthetic (the tuner judges on random inputs where it judges at all)."""
    given = args.accuracy_set or args.calibration_set or args.metric or args.max_drop != DEFAULT_MAX_DROP
    if not (given or synthetic):
        return None
    return accuracy_settings(onnx_path, model.file_inputs(), accuracy_set=args.accuracy_set,
                             calibration_set=args.calibration_set, metric=args.metric, max_drop=args.max_drop,
                             synthetic=synthetic)


def _print_accuracy(tuner: Tuner, args: argparse.Namespace) -> None:
    """How compiles are judged; that the sets go unused where no knob changes the numerics; that int8 is not
    searched where the target takes a calibration set (its base flags name one) and none was given."""
    backend, model = tuner.job.identity.backend, tuner.job.identity.model
    if tuner.accuracy is not None:
        print(tuner.accuracy.describe())
    elif args.accuracy_set or args.calibration_set:
        print(f"accuracy: not judged: no knob {backend.name} searches here changes the numerics")
    probe = random_set(model.file_inputs(), 1)
    if model.calibration is None and backend.base_flags(with_calibration(model, probe)) != backend.base_flags(model):
        print("int8: not searched without a calibration set: give --accuracy-set to search int8")


def _print_outcome(tuner: Tuner, summary: dict[str, Any], args: argparse.Namespace) -> None:
    study = tuner.job.identity
    if attrs.WINNER_TRIAL not in summary:
        if summary.get(attrs.NOTE):
            print(summary[attrs.NOTE])
            return
        print(f"no valid configuration found for {study.model.name} {study.scenario.name}" +
              (f" within {study.bound_ms:g} ms" if study.bound_ms else "") + _best_latency_note(tuner))
        return
    print(verdict_line(summary, study.scenario.unit))
    print(f"export it with: autotune export {study.name}" + (f" --storage {args.storage}" if args.storage else ""))


def _print_device_use(tuner: Tuner) -> None:
    stats = tuner.stats
    if stats is None or not stats.devices or stats.wall_s <= 0:
        return
    word = tuner.job.identity.backend.device_word
    each = ", ".join(f"{word} {index}: {use.measurements} measurements" for index, use in stats.devices.items())
    print(f"{'devices' if len(stats.devices) > 1 else 'device'} busy {stats.busy_fraction():.0%} of "
          f"{stats.wall_s:.0f} s ({each})")


def _best_latency_note(tuner: Tuner) -> str:
    """'; best p99 found X ms' over the study's measured trials, for a bound no configuration met."""
    p99s = [t.user_attrs.get(attrs.SCENARIO_FIGURES, {}).get("server_p99_ms") or
            t.user_attrs.get(attrs.FIGURES, {}).get("latency_p99_ms") for t in tuner.study.get_trials(deepcopy=False)]
    p99s = [p for p in p99s if p is not None]
    return f"; the best p99 found was {min(p99s):.2f} ms" if p99s else ""


def cmd_bench(args: argparse.Namespace) -> int:
    model = _model(args)
    backend = _backend(args, quiet=args.json)
    onnx_path = resolve_onnx(args.onnx, model)
    model = read_model_inputs(model, onnx_path, args)
    accuracy = accuracy_settings(onnx_path, model.file_inputs(), accuracy_set=args.accuracy_set,
                                 calibration_set=args.calibration_set, metric=args.metric,
                                 max_drop=args.max_drop) if args.accuracy_set or args.calibration_set else None
    model = with_calibration(model, accuracy.calibration if accuracy else None)
    _say(model.file_inputs().describe(), args.json)
    scenario = get_scenario(args.scenario) if args.scenario else None
    bound_ms = latency_bound_ms(scenario, model, args.latency_bound_ms) if scenario else None
    target = backend.target(model=model, scenario=scenario or get_scenario("offline"),
                            devices=None if args.device is None else [args.device])
    device = target.devices[0]
    candidate = target.space.parse(args.flags, options=vars(args))
    problems = target.space.violations(candidate)
    if problems:
        raise AutotuneError(f"invalid for device {backend.device_word} {device.index}: " + "; ".join(problems))
    workdir = (args.workdir or DEFAULT_WORKDIR / "bench").resolve()
    evaluator = Evaluator(backend=backend, model=model, onnx_path=onnx_path, scenario=scenario, bound_ms=bound_ms,
                          sku=target.sku, device_size=target.size, workdir=workdir, cache_dir=default_cache_dir(),
                          model_sha256=model_sha256(onnx_path), progress=lambda line: _say(line, args.json),
                          busy_cpu_pct=args.busy_cpu, quiet_wait_s=args.quiet_wait,
                          judge=accuracy.judge if accuracy and args.accuracy_set else None)
    _say(f"compiling {model.name} with {candidate.flag_string()} (batch {candidate.batch_size}) ...", args.json)
    compiled = evaluator.compiled(candidate)
    artifact = compiled.artifact
    _say(("taken from the compile cache" if compiled.reused else f"compiled in {artifact.compile_seconds:.1f} s") +
         f"; measuring {args.time:g} s on {backend.device_word} {device.index}: {candidate.describe()} ...", args.json)
    measurement = evaluator.kept(compiled, lambda artifact: evaluator.measure(
        artifact, candidate, seconds=args.time, label="bench", device=device.index), who="bench")
    artifact = compiled.artifact  # compiled again if it was deleted meanwhile
    commands = {k: v for k, v in backend.preset_fields(candidate, artifact, measurement, name="bench").items()
                if k.endswith("_command")}
    result = {"model": model.name, "backend": backend.name, "candidate": candidate.to_dict(),
              "flags": candidate.flag_string(), "device": {"index": device.index, "name": device.name,
                                                           backend.size_key: device.size},
              "sdk_version": backend.version(), "compile_command": shlex.join(artifact.command),
              "measure_command": shlex.join(measurement.command), "reproduce": commands,
              "compile_seconds": round(artifact.compile_seconds, 3), "compile_log": str(artifact.log_path),
              "measure_log": str(measurement.log_path), **measurement.figures(),
              **_bench_accuracy(evaluator, compiled, device.index, quiet=args.json),
              **_bench_scenario(scenario, measurement, bound_ms)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_bench(result, measurement)
    return 0


def _print_bench(result: dict[str, Any], measurement: Measurement) -> None:
    """A bench result as text."""
    print(f"samples/s        {measurement.samples_per_second:,.1f}")
    print(f"executions       {measurement.executions} in {measurement.duration_seconds:.2f} s "
          f"(batch {measurement.batch_size})")
    if measurement.latency_p50_ms is not None:
        print(f"latency ms       p50 {measurement.latency_p50_ms:.3f}  p90 {measurement.latency_p90_ms:.3f}  "
              f"p99 {measurement.latency_p99_ms:.3f}")
    figure = result.get("scenario")
    if figure is not None:
        print(f"{figure['name']:<16} {figure['metric']} {figure['value']:,.2f} {figure['unit']}"
              f"{' (est.)' if figure['estimated'] else ''}" + (f": {figure['reason']}" if figure["reason"] else ""))
    print(f"compile          {result['compile_seconds']} s, log {result['compile_log']}")
    print(f"compile command  {result['compile_command']}")
    print(f"measure command  {result['measure_command']}")


def _bench_scenario(scenario: Scenario | None, measurement: Measurement, bound_ms: float | None) -> dict[str, Any]:
    """The scenario's figure of a bench measurement, judged (nothing without ``--scenario``)."""
    if scenario is None:
        return {}
    outcome = judge(scenario, measurement, bound_ms=bound_ms)
    return {"scenario": {"name": scenario.name, "metric": scenario.metric, "value": outcome.value,
                         "unit": scenario.unit, "feasible": outcome.feasible, "reason": outcome.reason,
                         "estimated": outcome.estimated}}


def _bench_accuracy(evaluator: Evaluator, compiled: Compiled, device: int, *, quiet: bool) -> dict[str, Any]:
    """The compile's task accuracy where bench was given an accuracy set (said on a line), as its JSON fields."""
    judge = evaluator.judge
    if judge is None:
        return {}
    _say(f"judging {len(judge.judged)} samples of {judge.judged.name} ...", quiet)
    judgement = evaluator.accuracy(compiled, device=device, who="bench")
    _say(f"accuracy: {judge.metric.name} {judgement.metric:.4g}, fp32 reference {judgement.reference:.4g}" +
         (f": {judgement.reason}" if judgement.reason else f", within --max-drop {judge.max_drop}"), quiet)
    return {"accuracy": {"metric": judge.metric.name, "value": judgement.metric, "reference": judgement.reference,
                         "drop": judgement.drop, "within_max_drop": judgement.ok}}


def cmd_devices(args: argparse.Namespace) -> int:
    cls, line = backends.choose(args.backend, args)
    backend = cls.from_options(args)
    devices = backend.devices()
    if args.json:
        print(json.dumps([{"backend": cls.name, "index": d.index, "status": d.status, "ready": d.ready,
                           "name": d.name, cls.size_key: d.size, **d.details} for d in devices], indent=2))
        return 0
    print(line)
    print(f"autotune run would use {cls.name}: {backend.version()}")
    columns = sorted({k for d in devices for k in d.details})
    widths = {c: max(len(c), *(len(str(d.details.get(c, "-"))) for d in devices)) for c in columns}
    print(f"{cls.device_word:>4}  {'status':<12} {cls.size_unit:>6}  " +
          "".join(f"{c:>{widths[c]}}  " for c in columns) + "name")
    for d in devices:
        print(f"{d.index:>4}  {d.status:<12} {d.size:>6}  " +
              "".join(f"{str(d.details.get(c, '-')):>{widths[c]}}  " for c in columns) + d.name)
    if not any(d.ready for d in devices):
        print(f"no Ready device: autotune cannot measure with {cls.name} on this host", file=sys.stderr)
    return 0


def model_file(model: ModelSpec, onnx: str | None, *, synthetic: bool) -> tuple[Path, bool]:
    """The ONNX file to tune: --onnx, else --synthetic, else the official file (downloaded once into the cache)."""
    if onnx is not None:
        return resolve_onnx(onnx, model), False
    if synthetic:
        path = synthetic_model(model)
        print(f"using a SYNTHETIC {model.name} (random weights, same architecture): {path}", file=sys.stderr)
        return path, True
    if model.source is None:
        raise AutotuneError(f"no ONNX file for {model.name}: pass --onnx PATH")
    path = download_model(model.source)
    check_onnx(path)
    return path, False


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    """--batch-dim, --input-shape and --inputs as given, stored on the study so that ``verify`` feeds the same."""
    return {"batch_dim": args.batch_dim, "input_shapes": {name: list(shape) for name, shape in args.input_shape},
            "inputs": str(args.inputs.resolve()) if args.inputs else None}


def read_model_inputs(model: ModelSpec, onnx_path: Path, args: argparse.Namespace) -> ModelSpec:
    """``model`` with the inputs of its file as the model options read them; warns (stderr) of inputs whose random
    values may matter."""
    shapes: dict[str, list[int]] = {}
    for name, shape in args.input_shape:
        if name in shapes:
            raise AutotuneError(f"--input-shape {name} is given twice: give each input once")
        shapes[name] = shape
    model = with_inputs(model, onnx_path, batch_dim=args.batch_dim, input_shapes=shapes, samples=args.inputs)
    warning = model.file_inputs().warning()
    if warning:
        print(warning, file=sys.stderr, flush=True)
    return model


def _model(args: argparse.Namespace) -> ModelSpec:
    """``--model``, else the ``--onnx`` file's name."""
    if args.model is None and args.onnx is None:
        raise AutotuneError("give --model NAME (a known model, or a name for your own) or --onnx FILE")
    return get_model(args.model or Path(args.onnx).stem, onnx_given=args.onnx is not None)


def _backend(args: argparse.Namespace, *, quiet: bool = False) -> Backend:
    cls, line = backends.choose(args.backend, args)
    _say(line, quiet)
    return cls.from_options(args)


def _say(message: str, quiet: bool) -> None:
    print(message, file=sys.stderr if quiet else sys.stdout, flush=True)
