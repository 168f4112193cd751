"""The ``autotune`` command: argument checking, progress output, one-line errors."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from autotune.backend import AutotuneError
from autotune.models import (MODELS, ModelSpec, check_onnx, download_model, get_model,
                             resolve_onnx, synthetic_model)
from autotune.objective import SCENARIOS, Scenario, get_scenario, latency_bound_ms
from autotune.presets import EXPORT_FORMATS, find_baseline, winner_preset, write_preset
from autotune.qaic_bench import QaicBackend, command_line
from autotune.search_space import Candidate, DeviceLimits, QaicSpace, max_activations, violations
from autotune.compile_cache import CompileCache, default_cache_dir
from autotune.storage import (DEFAULT_HEARTBEAT_S, DEFAULT_WAIT_S, default_storage_url, display_url, load_study,
                              open_existing_storage)
from autotune.tuner import Tuner, TuningJob, default_study_name, study_overview

DEFAULT_WORKDIR = Path(".autotune") / "work"
FLAG_VALUED_OPTIONS = ("--flags", "--base-flags", "--timeout", "--latency-bound-ms")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error on one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``autotune`` console script."""
    parser = build_parser()
    args = parser.parse_args(_join_flag_values(sys.argv[1:] if argv is None else list(argv)))
    handler: Callable[[argparse.Namespace], int] = args.handler
    for name in ("SIGTERM", "SIGHUP"):  # a stopped run ends like Ctrl-C: trial recorded, children killed
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _interrupt)
    try:
        return handler(args)
    except AutotuneError as exc:
        print(f"autotune: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("autotune: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"autotune: error: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""),
              file=sys.stderr)
        return 1
    except Exception as exc:  # a bug or a storage failure: one line, the details only on request
        if os.environ.get("AUTOTUNE_DEBUG"):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"autotune: error: {type(exc).__name__}: {first} (set AUTOTUNE_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _join_flag_values(argv: list[str]) -> list[str]:
    """``--flags "-ols=2"`` as ``--flags=-ols=2``: argparse would read a lone ``-ols=2`` as an option."""
    joined: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in FLAG_VALUED_OPTIONS and i + 1 < len(argv):
            joined.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            joined.append(argv[i])
            i += 1
    return joined


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="autotune", description="Measured search of inference compiler flags "
                                                  "(Qualcomm Cloud AI 100 via qaic-exec/qaic-runner).")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    devices = commands.add_parser("devices", help="list Cloud AI 100 devices (qaic-util -q), or the CPU",
                                  description="List the devices qaic-util reports (only Ready ones are used); "
                                              "where no SDK is found, the CPU that autotune run would use.")
    _add_sdk_options(devices)
    devices.add_argument("--json", action="store_true", help="print JSON instead of a table")
    devices.set_defaults(handler=cmd_devices)

    bench = commands.add_parser(
        "bench", help="compile and measure one flag set",
        description="Compile one flag set with qaic-exec and measure it with qaic-runner: what you run to check a "
                    "preset by hand. Example: autotune bench --model resnet50 --onnx model.onnx "
                    "--flags \"-aic-num-cores=2 -mos=1 -ols=2\" --activations 7")
    _add_sdk_options(bench)
    _add_model_options(bench)
    bench.add_argument("--flags", required=True,
                       help="CM-style qaic-exec flags, e.g. \"-aic-num-cores=4 -mos=1,2 -ols=4 "
                            "-sdp-cluster-sizes=2,2 -multicast-weights\"")
    bench.add_argument("--batch-size", type=_positive_int, help="batch size (default: from --flags, else 1)")
    bench.add_argument("--activations", type=_positive_int,
                       help="qaic-runner -a (default: floor(free NSPs / cores), as MLPerf harnesses do)")
    bench.add_argument("--set-size", type=_positive_int, default=10, help="qaic-runner -S (default 10)")
    bench.add_argument("--time", type=_positive_float, default=10.0, help="seconds to measure (default 10)")
    bench.add_argument("--device", type=int, help="device QID (default: first Ready device)")
    bench.add_argument("--workdir", type=Path, default=None,
                       help=f"where QPCs and logs go (default {DEFAULT_WORKDIR}/bench)")
    bench.add_argument("--json", action="store_true", help="print the result as JSON")
    bench.set_defaults(handler=cmd_bench)

    run = commands.add_parser(
        "run", help="search the flags of one model and scenario (an Optuna study)",
        description="Search compiler and runtime knobs with an Optuna study: each trial compiles with qaic-exec and "
                    "measures with qaic-runner. The hand-tuned preset is measured first; the best few are "
                    "re-measured with a longer run at the end. Running the same command again continues the study.")
    _add_sdk_options(run)
    _add_model_options(run)
    run.add_argument("--scenario", required=True, help=f"MLPerf scenario: {', '.join(SCENARIOS)}")
    run.add_argument("--trials", type=_positive_int, help="number of new trials (default 40 without --timeout)")
    run.add_argument("--timeout", type=_duration, help="wall-clock budget for new trials, e.g. 90m, 2h, 600")
    run.add_argument("--latency-bound-ms", type=_positive_float,
                     help="p99 latency bound (default: the model's MLPerf bound)")
    _add_storage_option(run)
    run.add_argument("--study", help="study name (default <model>-<scenario>-<backend>-<N>nsp)")
    run.add_argument("--devices", type=_qid_list,
                     help="device QIDs to measure on, e.g. 0,1 (default: every Ready device of the first one's SKU)")
    run.add_argument("--device", type=lambda text: _qid_list(text)[:1], dest="devices", help=argparse.SUPPRESS)
    run.add_argument("--compile-jobs", type=_non_negative_int,
                     help="compiles run ahead in parallel while devices measure; 0 compiles each trial just before "
                          f"its measurement (default on qaic: this host's cores, {os.cpu_count() or 1}; ort: 0, as "
                          "compiling on the CPU would disturb its measurements)")
    run.add_argument("--cache-dir", type=Path,
                     help=f"compile cache shared by all studies (default {default_cache_dir()}); share it between "
                          "hosts to compile each flag set once")
    run.add_argument("--heartbeat", type=_positive_int, default=DEFAULT_HEARTBEAT_S,
                     help="seconds between this worker's heartbeats; a trial silent for 3 heartbeats (a crashed "
                          f"worker) is failed and queued again (default {DEFAULT_HEARTBEAT_S})")
    run.add_argument("--storage-wait", type=_duration, default=DEFAULT_WAIT_S,
                     help=f"how long to wait and retry while the storage is unreachable (default {DEFAULT_WAIT_S:g} s)")
    run.add_argument("--nsp", type=_positive_int, help="NSPs to tune for (default: the device's)")
    run.add_argument("--backend", choices=("auto", "qaic", "ort"), default="auto",
                     help="qaic (Cloud AI 100), ort (ONNX Runtime on this CPU, measured with MLPerf LoadGen), or "
                          "auto: qaic when an SDK is found, else ort (default)")
    run.add_argument("--synthetic", action="store_true",
                     help="tune a random-weight model of the same architecture (resnet50, retinanet) instead of "
                          "downloading the official file; every output marks the study as synthetic")
    run.add_argument("--input-shape", type=_input_shape, action="append", default=[],
                     help="NAME=D0,D1,... for an input with dynamic dimensions (ort; repeatable)")
    run.add_argument("--measure-time", type=_positive_float,
                     help="seconds per measurement while searching (default 5 on qaic, 3 on ort)")
    run.add_argument("--validate-top", type=_positive_int, default=3,
                     help="re-measure this many of the best at the end (default 3)")
    run.add_argument("--validate-time", type=_positive_float,
                     help="seconds per validation measurement (default 20 on qaic, 10 on ort)")
    run.add_argument("--sampler", choices=("tpe", "random"), default="tpe", help="search strategy (default tpe)")
    run.add_argument("--seed", type=int, help="sampler seed; the search repeats exactly only with --compile-jobs 0 "
                                                 "(compiles ahead finish in an order the seed does not fix)")
    run.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help=f"QPCs and logs (default {DEFAULT_WORKDIR})")
    run.set_defaults(handler=cmd_run)

    cache = commands.add_parser(
        "cache", help="show or prune the compile cache",
        description="The compile cache holds one compiled artifact per model file, compile flags, base flags, SDK "
                    "version and SKU: a hit skips the compiler. info shows its size; prune removes entries not used "
                    "for --older-than (all without it) and what interrupted compiles left behind.")
    cache.add_argument("action", choices=("info", "prune"), help="info or prune")
    cache.add_argument("--older-than", type=_duration, help="prune only entries unused for this long, e.g. 7d, 12h")
    cache.add_argument("--cache-dir", type=Path, help=f"the cache folder (default {default_cache_dir()})")
    cache.set_defaults(handler=cmd_cache)

    export = commands.add_parser(
        "export", help="write a study's winner as a preset",
        description="Write the validated winner of a study as a preset: flags, figures, provenance and the exact "
                    "command lines. Into an existing file it updates that one entry and keeps the others.")
    export.add_argument("study", help="study name (see autotune studies)")
    _add_storage_option(export)
    export.add_argument("--format", choices=EXPORT_FORMATS, default="yaml",
                        help="yaml/json preset file, cm (CM script variation env) or cmdline (shell lines)")
    export.add_argument("--out", type=Path, help="file to write or update (default: print to stdout)")
    export.set_defaults(handler=cmd_export)

    studies = commands.add_parser("studies", help="list the studies in a storage",
                                  description="The studies in a storage with trial counts, best and baseline values.")
    _add_storage_option(studies)
    studies.set_defaults(handler=cmd_studies)
    _add_report_commands(commands)
    return parser


def _add_report_commands(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser(
        "report", help="write an HTML report of a study",
        description="Write a self-contained HTML page (summary, figures, every trial; opens without network) and "
                    "trials.csv for a study. Read-only: works on a study that is still running.")
    report.add_argument("study", help="study name (see autotune studies)")
    _add_storage_option(report)
    report.add_argument("--out", type=Path, help="directory to write index.html and trials.csv (default reports/<study>/)")
    report.set_defaults(handler=cmd_report)

    compare = commands.add_parser(
        "compare", help="compare studies or trials side by side",
        description="Compare studies (their winners) or single trials (STUDY#TRIAL) side by side: figures with "
                    "ratios against the first, differing rows and flags marked. Example: autotune compare "
                    "retinanet-server-qaic-14nsp retinanet-server-qaic-16nsp --out reports/nsp.html")
    compare.add_argument("targets", nargs="+", metavar="STUDY[#TRIAL]", help="two or more studies or trials")
    compare.add_argument("--storage", action="append",
                         help="Optuna storage URL: once for all, or once per study/trial in order "
                              "(default sqlite:///studies/autotune.db)")
    compare.add_argument("--out", type=Path, help="also write an HTML page (a .html file, or a directory)")
    compare.set_defaults(handler=cmd_compare)

    dashboard = commands.add_parser(
        "dashboard", help="open the live optuna-dashboard on a storage",
        description="Serve optuna-dashboard (pip install optuna-dashboard) on 127.0.0.1 for the storage's studies; "
                    "Ctrl-C stops it.")
    dashboard.add_argument("study", nargs="?", help="study to open first (default: the list of studies)")
    _add_storage_option(dashboard)
    dashboard.add_argument("--port", type=_positive_int, default=8080, help="port on 127.0.0.1 (default 8080)")
    dashboard.set_defaults(handler=cmd_dashboard)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help=f"a known model ({', '.join(MODELS)}) or a name for your own --onnx model")
    parser.add_argument("--onnx", help="path of the ONNX file to compile")
    parser.add_argument("--base-flags", default="", help="extra base qaic-exec flags (e.g. -node-precision-info=F)")


def _add_storage_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", help=f"Optuna storage: sqlite:///FILE (default "
                                          f"{default_storage_url(create=False)}), journal:FILE for several processes "
                                          "on one host, postgresql://USER:PASSWORD@HOST/DB for several hosts")


def _add_sdk_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sdk-root", help="Cloud AI 100 SDK root (default: $AUTOTUNE_SDK_ROOT, else /opt/qti-aic)")
    parser.add_argument("--compile-timeout", type=_positive_float, default=3600.0,
                        help="seconds before a hanging qaic-exec is killed (default 3600)")


def cmd_devices(args: argparse.Namespace) -> int:
    if args.sdk_root is None and choose_backend("auto", None, quiet=True) == "ort":
        from autotune.ort_bench import cpu_device

        cpu = cpu_device()
        if args.json:
            print(json.dumps([{"backend": "ort", "cores": cpu.cores, "model": cpu.model_name,
                               "isa_flags": list(cpu.isa_flags)}], indent=2))
        else:
            print("no Cloud AI 100 SDK found (pass --sdk-root DIR or set AUTOTUNE_SDK_ROOT to use one); "
                  f"autotune run will use this CPU: {cpu.model_name}, {cpu.cores} cores, "
                  f"{', '.join(cpu.isa_flags) or 'no AVX2'}")
        return 0
    backend = QaicBackend(sdk_root=args.sdk_root)
    devices = backend.devices()
    if args.json:
        print(json.dumps([vars(d) | {"ready": d.ready} for d in devices], indent=2))
        return 0
    print(f"SDK {backend.sdk_root}: {backend.version()}")
    print(f"{'QID':>4}  {'status':<12} {'NSP free/total':>14}  {'DRAM free/total MB':>18}  SKU")
    for d in devices:
        print(f"{d.qid:>4}  {d.status:<12} {f'{d.nsp_free}/{d.nsp_total}':>14}  "
              f"{f'{d.dram_free_mb}/{d.dram_total_mb}':>18}  {d.sku}")
    if not any(d.ready for d in devices):
        print("no Ready device: autotune cannot measure on this host", file=sys.stderr)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    backend = QaicBackend(sdk_root=args.sdk_root, compile_timeout_s=args.compile_timeout)
    model = get_model(args.model, extra_base_flags=args.base_flags, onnx_given=args.onnx is not None)
    onnx_path = resolve_onnx(args.onnx, model)
    candidate = Candidate.from_flags(args.flags, batch_size=args.batch_size)
    device = backend.ready_device(args.device)
    limits = device.limits()
    activations = args.activations or max_activations(candidate.cores, limits)
    candidate = candidate.with_runtime(activations=activations, set_size=args.set_size)
    problems = violations(candidate, limits)
    if problems:
        raise AutotuneError(f"invalid for device QID {device.qid}: " + "; ".join(problems))

    workdir = (args.workdir or DEFAULT_WORKDIR / "bench").resolve()
    _progress(f"compiling {model.name} with {candidate.flag_string()} (batch {candidate.batch_size}) ...", args.json)
    artifact = backend.compile(onnx_path, model, candidate, workdir)
    _progress(f"compiled in {artifact.compile_seconds:.1f} s; measuring {args.time:g} s on QID {device.qid} "
              f"with {activations} activations, set size {args.set_size} ...", args.json)
    measurement = backend.measure(artifact, activations=activations, set_size=args.set_size, device=device.qid,
                                  seconds=args.time)
    result = {
        "model": model.name,
        "candidate": candidate.to_dict(),
        "flags": candidate.flag_string(),
        "device": {"qid": device.qid, "sku": device.sku, "nsp_total": device.nsp_total},
        "sdk_version": backend.version(),
        "compile_command": command_line(artifact.command),
        "measure_command": command_line(measurement.command),
        "compile_seconds": round(artifact.compile_seconds, 3),
        "compile_log": str(artifact.log_path),
        "measure_log": str(measurement.log_path),
        **measurement.figures(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"samples/s        {measurement.samples_per_second:,.1f}")
    print(f"executions       {measurement.executions} in {measurement.duration_seconds:.2f} s "
          f"(batch {measurement.batch_size})")
    if measurement.latency_p50_ms is not None:
        print(f"latency ms       p50 {measurement.latency_p50_ms:.3f}  p90 {measurement.latency_p90_ms:.3f}  "
              f"p99 {measurement.latency_p99_ms:.3f}")
    print(f"compile          {result['compile_seconds']} s, log {artifact.log_path}")
    print(f"qaic-exec        {result['compile_command']}")
    print(f"qaic-runner      {result['measure_command']}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    scenario = get_scenario(args.scenario)
    model = get_model(args.model, extra_base_flags=args.base_flags, onnx_given=args.onnx is not None)
    bound = latency_bound_ms(scenario, model, args.latency_bound_ms)
    backend_name = choose_backend(args.backend, args.sdk_root)
    onnx_path, synthetic = model_file(model, args.onnx, synthetic=args.synthetic)
    build = _qaic_job if backend_name == "qaic" else _ort_job
    job, device_text = build(args, model=model, scenario=scenario, bound=bound, onnx_path=onnx_path)
    job.storage = args.storage or default_storage_url()
    job.n_trials = args.trials if args.trials or args.timeout else 40
    job.synthetic = synthetic
    job.heartbeat_s = args.heartbeat
    job.storage_wait_s = args.storage_wait
    job.cache_dir = args.cache_dir or default_cache_dir()
    tuner = Tuner(job, progress=lambda line: print(line, flush=True))
    stored = len(tuner.study.trials)
    print(f"study {job.study_name} in {display_url(job.storage)} ({stored} trials stored): {model.name} "
          f"{scenario.name} ({scenario.description}), {device_text}, {job.backend.version()}")
    jobs = f"{job.compile_jobs} compile workers ahead" if job.compile_jobs else "compiles one at a time, in line"
    print(f"pipeline: {jobs}; compile cache {tuner.cache.root if tuner.cache else 'off'}")
    if synthetic:
        print("SYNTHETIC MODEL: random weights of the same architecture; figures show speed, not accuracy")
    if job.baseline_label:
        print(f"baseline: {job.baseline_label} (batch {job.baseline.batch_size})")
    else:
        print(f"no hand-tuned preset for {model.name} {scenario.name} on this device: starting from scratch")
    try:
        summary = tuner.run()
    except KeyboardInterrupt:
        done = sum(t.state.is_finished() for t in tuner.study.trials)
        print(f"autotune: interrupted; {done} finished trials are stored in study {job.study_name}. "
              f"Run the same command again to resume.", file=sys.stderr)
        return 130
    _print_device_use(tuner)
    if "winner_trial" not in summary:
        print(f"no valid configuration found for {model.name} {scenario.name}" +
              (f" within {bound:g} ms" if bound else "") + _best_latency_note(tuner))
        return 0
    print(f"winner: trial #{summary['winner_trial']} {summary['winner_value']:,.2f} {scenario.unit}" +
          (f", {summary['gain_pct']:+.1f}% against the baseline ({summary['baseline_value']:,.2f})"
           if "gain_pct" in summary else ""))
    print(f"export it with: autotune export {job.study_name}" +
          (f" --storage {args.storage}" if args.storage else ""))
    return 0


def _print_device_use(tuner: Tuner) -> None:
    stats = tuner.stats
    if stats is None or not stats.devices or stats.wall_s <= 0:
        return
    each = ", ".join(f"QID {qid}: {use.measurements} measurements" for qid, use in stats.devices.items())
    print(f"devices busy {stats.busy_fraction():.0%} of {stats.wall_s:.0f} s ({each})")


def choose_backend(requested: str, sdk_root: str | None, *, quiet: bool = False) -> str:
    """``auto``: qaic where a Cloud AI 100 SDK is found, else the local CPU (ONNX Runtime); says which."""
    if requested != "auto":
        return requested
    from autotune.qaic_bench import resolve_sdk_root

    try:
        root = resolve_sdk_root(sdk_root)
    except AutotuneError:
        if not quiet:
            print("backend: ort (ONNX Runtime on this CPU; no Cloud AI 100 SDK found, pass --sdk-root to use one)")
        return "ort"
    if not quiet:
        print(f"backend: qaic (Cloud AI 100 SDK at {root})")
    return "qaic"


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


def _qaic_job(args: argparse.Namespace, *, model: ModelSpec, scenario: Scenario, bound: float | None,
              onnx_path: Path) -> tuple[TuningJob, str]:
    backend = QaicBackend(sdk_root=args.sdk_root, compile_timeout_s=args.compile_timeout)
    devices = backend.ready_devices(args.devices)
    device = devices[0]
    nsp = args.nsp or device.nsp_total
    if nsp > device.nsp_total:
        raise AutotuneError(f"--nsp {nsp} is more than the {device.nsp_total} NSPs of device QID {device.qid}")
    limits = DeviceLimits(nsp_total=nsp, nsp_free=min(nsp, device.nsp_free))
    preset = find_baseline(model.name, scenario.name, nsp)
    baseline = preset.candidate(limits) if preset else None
    if baseline is not None and scenario.name == "singlestream":
        baseline = baseline.with_runtime(activations=1, set_size=1)
    job = TuningJob(
        model=model, onnx_path=onnx_path, scenario=scenario, bound_ms=bound, backend=backend,
        space=QaicSpace(device=limits, scenario=scenario.name, extra_flags=baseline.extra_flags if baseline else ()),
        devices=[d.qid for d in devices], device_size=nsp, sku=device.sku, storage="",
        study_name=args.study or default_study_name(model.name, scenario.name, backend.name, nsp),
        timeout_s=args.timeout, measure_seconds=args.measure_time or 5.0, validate_top=args.validate_top,
        validate_seconds=args.validate_time or 20.0, sampler=args.sampler, seed=args.seed,
        workdir=args.workdir.resolve(), baseline=baseline,
        baseline_label=preset.label() if preset else None,
        compile_jobs=os.cpu_count() or 1 if args.compile_jobs is None else args.compile_jobs)
    qids = ", ".join(str(d.qid) for d in devices)
    return job, f"device{'s' if len(devices) > 1 else ''} QID {qids} {device.sku} {nsp} NSPs"


def _ort_job(args: argparse.Namespace, *, model: ModelSpec, scenario: Scenario, bound: float | None,
             onnx_path: Path) -> tuple[TuningJob, str]:
    from autotune.ort_bench import OrtBackend, OrtSpace

    if args.compile_jobs:
        raise AutotuneError("--compile-jobs is for Cloud AI 100: the CPU backend compiles and measures on the same "
                            "cores, so it compiles each trial just before measuring it")
    if args.devices and args.devices != [0]:
        raise AutotuneError("--devices is for Cloud AI 100: the CPU backend measures on this host's CPU (device 0)")
    backend = OrtBackend(input_shapes=dict(args.input_shape))
    cores = backend.device.cores
    space = OrtSpace(cores=cores, scenario=scenario.name)
    job = TuningJob(
        model=model, onnx_path=onnx_path, scenario=scenario, bound_ms=bound, backend=backend, space=space,
        devices=[0], device_size=cores, sku=backend.device.model_name, storage="",
        study_name=args.study or default_study_name(model.name, scenario.name, backend.name, cores),
        timeout_s=args.timeout, measure_seconds=args.measure_time or 3.0, validate_top=args.validate_top,
        validate_seconds=args.validate_time or 10.0, sampler=args.sampler, seed=args.seed,
        workdir=args.workdir.resolve(), baseline=space.baseline(),
        baseline_label="ONNX Runtime's default session settings")
    isa = ", ".join(backend.device.isa_flags) or "no AVX2"
    return job, f"CPU {backend.device.model_name} ({cores} cores; {isa})"


def _best_latency_note(tuner: Any) -> str:
    """'; best p99 found X ms' over the study's measured trials, for a bound no configuration met."""
    p99s = [t.user_attrs.get("scenario_figures", {}).get("server_p99_ms") or
            t.user_attrs.get("figures", {}).get("latency_p99_ms") for t in tuner.study.get_trials(deepcopy=False)]
    p99s = [p for p in p99s if p is not None]
    return f"; the best p99 found was {min(p99s):.2f} ms" if p99s else ""


def cmd_cache(args: argparse.Namespace) -> int:
    cache = CompileCache(root=args.cache_dir or default_cache_dir())
    if args.action == "prune":
        result = cache.prune(older_than_s=args.older_than)
        print(f"pruned {result.entries} entries, {result.partial} unfinished compiles and {result.failed_logs} "
              f"failure logs from {cache.root}: {result.freed_bytes / 2**20:,.1f} MB freed")
    info = cache.info()
    when = lambda t: "-" if t is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(t))  # noqa: E731
    print(f"compile cache {info.root}: {info.entries} entries, {info.entry_bytes / 2**20:,.1f} MB; last used "
          f"{when(info.oldest_use)} .. {when(info.newest_use)}; {info.partial} unfinished compiles "
          f"({info.partial_bytes / 2**20:,.1f} MB), {info.failed_logs} failure logs")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    study = load_study(_reading(args.storage), args.study)
    preset = winner_preset(study)
    text = write_preset(preset, fmt=args.format, out=args.out)
    if args.out is None:
        print(text, end="")
    else:
        print(f"wrote {args.format} preset for {preset['model']} {preset['scenario']} ({preset['value']:,.2f} "
              f"{preset['unit']}, trial #{preset['trial']}) to {args.out}")
    return 0


def cmd_studies(args: argparse.Namespace) -> int:
    rows = study_overview(open_existing_storage(_reading(args.storage)))
    if not rows:
        print("no studies in this storage")
        return 0
    print(f"{'study':<36} {'feasible':>8} {'infeasible':>10} {'failed':>6} {'best':>12} {'baseline':>12}")
    for r in rows:
        print(f"{r['study']:<36} {r['feasible']:>8} {r['infeasible']:>10} {r['failed']:>6} "
              f"{_fmt(r['best']):>12} {_fmt(r['baseline']):>12}")
    return 0


def _reading(url: str | None) -> str:
    """The storage URL to read: the given one, else the default (reading never creates it)."""
    return url or default_storage_url(create=False)


def cmd_report(args: argparse.Namespace) -> int:
    from autotune.report import default_report_dir, write_report

    study = load_study(_reading(args.storage), args.study)
    page = write_report(study, args.out or default_report_dir(args.study))
    print(f"wrote {page} and {page.parent / 'trials.csv'} ({len(study.trials)} trials)")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from autotune.compare import compare, format_table, write_html

    entries, rows = compare(args.targets, [_reading(s) for s in args.storage or [None]])
    print(format_table(entries, rows), end="")
    if args.out is not None:
        print(f"wrote {write_html(entries, rows, args.out)}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from autotune.report import serve_dashboard

    try:
        serve_dashboard(_reading(args.storage), args.study, args.port, say=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print("dashboard stopped")
    return 0


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _input_shape(text: str) -> tuple[str, list[int]]:
    name, sep, dims = text.partition("=")
    try:
        shape = [int(d) for d in dims.split(",")]
    except ValueError:
        shape = []
    if not sep or not name or not shape or any(d < 1 for d in shape):
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=D0,D1,... with positive integer dimensions")
    return name, shape


def _duration(text: str) -> float:
    match = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 600, 45s, 90m, 2h, 7d)")
    value = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return value


def _progress(message: str, quiet: bool) -> None:
    print(message, file=sys.stderr if quiet else sys.stdout, flush=True)


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} must be at least {minimum}")
        return value
    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _qid_list(text: str) -> list[int]:
    try:
        qids = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of device QIDs, e.g. 0,1") from None
    if any(q < 0 for q in qids) or len(set(qids)) != len(qids):
        raise argparse.ArgumentTypeError(f"{text!r}: QIDs must be distinct and not negative")
    return qids


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return value


if __name__ == "__main__":
    sys.exit(main())
