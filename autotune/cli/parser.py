"""The ``autotune`` command line: every subcommand, its options and its help (backends add their own options)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from autotune import backends
from autotune.cli import presets, read, run
from autotune.compile_cache import default_cache_dir
from autotune.models import MODELS
from autotune.options import (device_list, duration, input_shape, int_at_least, non_negative_int, positive_float,
                              positive_int)
from autotune.results.export import EXPORT_FORMATS
from autotune.scenarios import SCENARIOS
from autotune.search.accuracy import DEFAULT_MAX_DROP
from autotune.search.disturbance import DEFAULT_BUSY_CPU_PCT, DEFAULT_QUIET_WAIT_S
from autotune.search.strategies import DEFAULT_STRATEGY, STRATEGIES
from autotune.storage import DEFAULT_HEARTBEAT_S, DEFAULT_WAIT_S, default_storage_url
from autotune.task_accuracy import BUILTIN_METRICS, RANDOM_SAMPLES


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error on one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = _Parser(prog="autotune", description="Measured search of inference compiler and runtime settings: "
                                                  + ", ".join(f"{cls.title} ({cls.name})"
                                                              for cls in backends.available()) + ".")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_run(commands)
    _add_bench(commands)
    _add_devices(commands)
    _add_read_commands(commands)
    _add_preset_commands(commands)
    return parser


def join_dash_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``--flags "-ols=2"`` as ``--flags=-ols=2``: argparse would read a lone ``-ols=2`` (or ``-5m``) as an option.

    Applies to every option that takes one value, when the next word is not an option of the command."""
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    command = sub.choices.get(argv[0]) if sub is not None and argv else None
    if command is None:
        return argv
    known = {s for action in command._actions for s in action.option_strings}
    valued = {s for action in command._actions for s in action.option_strings
              if action.nargs is None and not isinstance(action, (argparse._StoreTrueAction,
                                                                 argparse._HelpAction))}
    joined: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in valued and i + 1 < len(argv) and argv[i + 1].startswith("-") and \
                argv[i + 1].partition("=")[0] not in known:
            joined.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            joined.append(argv[i])
            i += 1
    return joined


def _add_run(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "run", help="search the settings of one model and scenario (an Optuna study)",
        description="Search a target's compile and runtime knobs with an Optuna study: each trial compiles a "
                    "candidate and measures it for the scenario. The baseline (a hand-tuned preset, or the "
                    "runtime's defaults) is measured first; the best few are re-measured with a longer run at the "
                    "end. Running the same command again continues the study.")
    _add_model_options(p)
    p.add_argument("--scenario", required=True, help=f"MLPerf scenario: {', '.join(SCENARIOS)}")
    p.add_argument("--trials", type=positive_int,
                   help="number of new compiles (default 40 without --timeout): one trial is one compile, its "
                        "runtime knobs searched on the compiled model; duplicates and runs on a model the study "
                        "compiled already are not counted")
    p.add_argument("--timeout", type=duration, help="wall-clock budget for new trials, e.g. 90m, 2h, 600")
    p.add_argument("--latency-bound-ms", type=positive_float,
                   help="p99 latency bound (default: the model's MLPerf bound)")
    _add_storage_option(p)
    p.add_argument("--study", help="study name (default <model>-<scenario>-<backend>-<N><unit>, e.g. "
                                   "resnet50-offline-qaic-14nsp)")
    _add_backend_option(p)
    p.add_argument("--devices", type=device_list,
                   help="devices to measure on, e.g. 0,1 (default: the backend's; on Cloud AI 100 every Ready card "
                        "of the first one's SKU)")
    p.add_argument("--device", type=lambda text: device_list(text)[:1], dest="devices", help=argparse.SUPPRESS)
    p.add_argument("--compile-jobs", type=non_negative_int,
                   help="compiles run ahead in parallel while devices measure; 0 compiles each trial just before "
                        f"its measurement (default: this host's cores, {os.cpu_count() or 1}, where the backend "
                        "compiles off the device; 0 on the CPU backends, whose compiles would disturb measurements)")
    p.add_argument("--compile-timeout", type=positive_float,
                   help="seconds before a hanging compiler is killed (default 3600)")
    p.add_argument("--cache-dir", type=Path,
                   help=f"compile cache shared by all studies (default {default_cache_dir()}); share it between "
                        "hosts to compile each flag set once")
    p.add_argument("--heartbeat", type=positive_int, default=DEFAULT_HEARTBEAT_S,
                   help="seconds between this worker's heartbeats; a trial silent for 3 heartbeats (a crashed "
                        f"worker) is failed and queued again (default {DEFAULT_HEARTBEAT_S})")
    p.add_argument("--storage-wait", type=duration, default=DEFAULT_WAIT_S,
                   help=f"how long to wait and retry while the storage is unreachable (default {DEFAULT_WAIT_S:g} s)")
    p.add_argument("--synthetic", action="store_true",
                   help="tune a random-weight model of the same architecture (resnet50, retinanet) instead of "
                        "downloading the official file; every output marks the study as synthetic")
    _add_search_options(p)
    _add_accuracy_options(p, "run")
    p.add_argument("--workdir", type=Path, default=run.DEFAULT_WORKDIR,
                   help=f"compiled models and logs (default {run.DEFAULT_WORKDIR})")
    _add_backend_options(p, "run")
    p.set_defaults(handler=run.cmd_run)


def _add_search_options(p: argparse.ArgumentParser) -> None:
    """How ``run`` searches and measures: strategy, warm start, measurement lengths, validation, accuracy."""
    p.add_argument("--measure-time", type=positive_float,
                   help="seconds per measurement while searching (default: the backend's, "
                        + ", ".join(f"{c.measure_seconds:g} on {c.name}" for c in backends.available()) + ")")
    _add_quiet_host_options(p)
    p.add_argument("--validate-top", type=positive_int, default=3,
                   help="re-measure this many of the best at the end (default 3)")
    p.add_argument("--validate-time", type=positive_float,
                   help="seconds per validation measurement (default: the backend's, "
                        + ", ".join(f"{c.validate_seconds:g} on {c.name}" for c in backends.available()) + ")")
    p.add_argument("--validate-rounds", type=int_at_least(3), default=5,
                   help="interleaved rounds of validation, each measuring every candidate once in a shuffled order; "
                        "a winner must beat the baseline over them, paired by round (default 5, at least 3)")
    p.add_argument("--validate-max-rounds", type=int_at_least(3), metavar="N",
                   help="rounds at most: while the best gain is still within noise, validation measures more batches "
                        "of --validate-rounds up to N (default four batches)")
    p.add_argument("--sampler", choices=STRATEGIES, default=DEFAULT_STRATEGY,
                   help="search strategy: two-phase (the baseline and the toolchain's rules of thumb, greedy climbs "
                        "from the best of them, then TPE), tpe (TPE with one-knob steps from the best), local "
                        "(multi-start local search, as Qualcomm's configurator does), random (default "
                        f"{DEFAULT_STRATEGY}: chosen on emulated card surfaces, bench/RESULTS.md)")
    p.add_argument("--warm-start", metavar="STUDY",
                   help="a related study in the same storage (the other NSP count, an earlier SDK version, another "
                        "scenario of the same model and backend): its best trials are measured after the baseline")
    p.add_argument("--warm-start-top", type=positive_int, default=5,
                   help="how many of the --warm-start study's best trials (default 5)")
    p.add_argument("--seed", type=int, help="sampler seed; the search repeats exactly only with --compile-jobs 0 "
                                            "(compiles ahead finish in an order the seed does not fix)")


def _add_bench(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "bench", help="compile and measure one set of settings",
        description="Compile one set of settings and measure it: what you run to check a preset by hand. "
                    "Example: autotune bench --model resnet50 --onnx model.onnx "
                    "--flags \"-aic-num-cores=2 -mos=1 -ols=2\" --activations 7")
    _add_model_options(p)
    _add_backend_option(p)
    p.add_argument("--flags", required=True,
                   help="the settings in the backend's own form: CM-style qaic-exec flags, e.g. "
                        "\"-aic-num-cores=4 -mos=1,2 -ols=4 -sdp-cluster-sizes=2,2 -multicast-weights\"; trtexec "
                        "build and runtime flags, e.g. \"--fp16 --builderOptimizationLevel=4 --infStreams=2\"; ONNX "
                        "Runtime session settings, e.g. \"intra_op_num_threads=2 execution_mode=sequential\"")
    p.add_argument("--batch-size", type=positive_int, help="batch size (default: from --flags, else 1)")
    p.add_argument("--time", type=positive_float, default=10.0, help="seconds to measure (default 10)")
    p.add_argument("--scenario", help=f"measure for an MLPerf scenario ({', '.join(SCENARIOS)}): its figure measured, "
                                      f"or estimated where the backend estimates it (default: throughput and latency)")
    p.add_argument("--latency-bound-ms", type=positive_float,
                   help="p99 latency bound with --scenario server (default: the model's MLPerf bound)")
    p.add_argument("--device", type=int, help="device to measure on (default: the backend's first ready one)")
    p.add_argument("--compile-timeout", type=positive_float,
                   help="seconds before a hanging compiler is killed (default 3600)")
    p.add_argument("--workdir", type=Path, default=None,
                   help=f"where compiled models and logs go (default {run.DEFAULT_WORKDIR}/bench)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_quiet_host_options(p)
    _add_accuracy_options(p, "bench")
    _add_backend_options(p, "bench")
    p.set_defaults(handler=run.cmd_bench)


def _add_devices(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("devices", help="list the devices a backend would measure on",
                            description="List the devices the backend reports (only Ready ones are used): Cloud AI "
                                        "100 cards from qaic-util where an SDK is found, NVIDIA GPUs from "
                                        "nvidia-smi where trtexec is found, else this host's CPU.")
    _add_backend_option(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_backend_options(p, "devices")
    p.set_defaults(handler=run.cmd_devices)


def _add_read_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "export", help="write a study's winner as a preset",
        description="Write the validated winner of a study as a preset: flags, figures, provenance and the exact "
                    "command lines. Into an existing file it updates that one entry and keeps the others.")
    p.add_argument("study", help="study name (see autotune studies)")
    _add_storage_option(p)
    p.add_argument("--format", choices=EXPORT_FORMATS, default="yaml",
                   help="yaml/json preset file, cm (CM script variation env) or cmdline (shell lines); the formats "
                        "a study offers depend on its backend")
    p.add_argument("--out", type=Path, help="file to write or update (default: print to stdout)")
    p.set_defaults(handler=read.cmd_export)

    p = commands.add_parser("studies", help="list the studies in a storage",
                            description="The studies in a storage with trial counts, best and baseline values.")
    _add_storage_option(p)
    p.set_defaults(handler=read.cmd_studies)

    p = commands.add_parser(
        "report", help="write an HTML report of a study",
        description="Write a self-contained HTML page (summary, figures, every trial; opens without network) and "
                    "trials.csv for a study. Read-only: works on a study that is still running.")
    p.add_argument("study", help="study name (see autotune studies)")
    _add_storage_option(p)
    p.add_argument("--out", type=Path, help="directory to write index.html and trials.csv (default reports/<study>/)")
    p.set_defaults(handler=read.cmd_report)

    p = commands.add_parser(
        "compare", help="compare studies or trials side by side",
        description="Compare studies (their winners) or single trials (STUDY#TRIAL) side by side: figures with "
                    "ratios against the first, differing rows and flags marked. Example: autotune compare "
                    "retinanet-server-qaic-14nsp retinanet-server-qaic-16nsp --out reports/nsp.html")
    p.add_argument("targets", nargs="+", metavar="STUDY[#TRIAL]", help="two or more studies or trials")
    p.add_argument("--storage", action="append", help="Optuna storage URL: once for all, or once per study/trial in "
                                                      f"order (default {default_storage_url(create=False)})")
    p.add_argument("--out", type=Path, help="also write an HTML page (a .html file, or a directory)")
    p.set_defaults(handler=read.cmd_compare)

    p = commands.add_parser(
        "dashboard", help="open the live optuna-dashboard on a storage",
        description="Serve optuna-dashboard (pip install optuna-dashboard) on 127.0.0.1 for the storage's studies; "
                    "Ctrl-C stops it.")
    p.add_argument("study", nargs="?", help="study to open first (default: the list of studies)")
    _add_storage_option(p)
    p.add_argument("--port", type=positive_int, default=8080, help="port on 127.0.0.1 (default 8080)")
    p.set_defaults(handler=read.cmd_dashboard)

    p = commands.add_parser(
        "cache", help="show or prune the compile cache",
        description="The compile cache holds one compiled artifact per model file, compile flags, base flags, "
                    "toolchain version and device: a hit skips the compiler. info shows its size; prune removes "
                    "entries not used for --older-than (all without it) and what interrupted compiles left behind.")
    p.add_argument("action", choices=("info", "prune"), help="info or prune")
    p.add_argument("--older-than", type=duration, help="prune only entries unused for this long, e.g. 7d, 12h")
    p.add_argument("--cache-dir", type=Path, help=f"the cache folder (default {default_cache_dir()})")
    p.set_defaults(handler=read.cmd_cache)


def _add_preset_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "verify", help="measure exported presets again and say whether they reproduce",
        description="Compile each preset of a presets file anew from its stored settings (its own command lines) and "
                    "measure it in a few runs: per entry 'reproduced', 'slower by X% (outside noise)' or 'faster by "
                    "X%', judged against the noise its study measured. Exits 1 when one regressed.")
    _add_preset_options(p, "verify")
    p.set_defaults(handler=presets.cmd_verify)

    p = commands.add_parser(
        "revalidate", help="measure presets on a new toolchain; list regressions and optionally tune them again",
        description="After an SDK or runtime upgrade: compile every preset anew on the toolchain the options name "
                    "(e.g. --sdk-root NEW; the compile cache keys by version) and measure it; list the presets that "
                    "regressed beyond noise or no longer compile. With --retune N, run an N-compile study per "
                    "regressed preset, warm-started from the old winner and its one-step neighbours. Example: "
                    "autotune revalidate presets.yaml --sdk-root /opt/qti-aic-1.13 --retune 20")
    _add_preset_options(p, "revalidate")
    p.add_argument("--retune", type=positive_int, metavar="N", help="compiles of the study per regressed preset")
    _add_storage_option(p)
    p.set_defaults(handler=presets.cmd_revalidate)


def _add_quiet_host_options(p: argparse._ActionsContainer) -> None:
    """How a measurement on this host's CPU that other processes disturbed is measured again (every command that
    measures)."""
    p.add_argument("--busy-cpu", type=positive_float, default=DEFAULT_BUSY_CPU_PCT, metavar="PCT",
                   help="for targets on this host's CPU: a measurement during which other processes took more than "
                        "PCT%% of the cores it ran on is measured again once the host is quiet (default "
                        f"{DEFAULT_BUSY_CPU_PCT:g}; 100 turns the check off)")
    p.add_argument("--quiet-wait", type=duration, default=DEFAULT_QUIET_WAIT_S,
                   help="how long a disturbed measurement waits for a quiet host before it is measured again anyway "
                        f"(default {DEFAULT_QUIET_WAIT_S:g} s)")


def _add_preset_options(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument("presets", type=Path, help="a presets file written by autotune export (yaml or json)")
    p.add_argument("--entry", metavar="KEY", help="only this entry: the study it was exported from (default: all)")
    p.add_argument("--rounds", type=positive_int, default=3, help="measurements per preset (default 3)")
    p.add_argument("--time", type=positive_float,
                   help="seconds per measurement (default: what the preset's validation used)")
    p.add_argument("--workdir", type=Path, default=presets.DEFAULT_WORKDIR,
                   help=f"where compiles and logs go (default {presets.DEFAULT_WORKDIR})")
    _add_quiet_host_options(p)
    _add_accuracy_options(p, command)
    _add_backend_options(p, command)


def _add_accuracy_options(p: argparse.ArgumentParser, command: str) -> None:
    """The task's accuracy: ``run`` judges every compile where the space can change the numerics; ``bench`` judges
    its one with --accuracy-set; ``verify`` and ``revalidate`` take the sets' paths where they moved."""
    where = {"run": "", "bench": "; bench judges its compile when given one"}.get(
        command, "; default: the path the preset recorded (its samples must be the same)")
    p.add_argument("--accuracy-set", metavar="FILE.npz",
                   help="samples of every model input along a leading axis, each as the application feeds it at "
                        "batch 1, and optionally 'labels': the accuracy of every compile whose knobs can change the "
                        "numerics (precision) is measured on them against ONNX Runtime's fp32 outputs; its first "
                        "part calibrates int8 unless --calibration-set is given (default: "
                        f"{RANDOM_SAMPLES} random samples, agreement with fp32; they calibrate a --synthetic model "
                        f"only){where}")
    p.add_argument("--calibration-set", metavar="FILE.npz",
                   help=f"samples (same form) that calibrate int8 builds; int8 is searched only with one{where}")
    if command not in ("run", "bench"):
        return
    p.add_argument("--metric", help=f"{', '.join(BUILTIN_METRICS)} or package.module:function (outputs, labels) -> "
                                    "float, higher is better (default: top1 with labels, else agreement)")
    p.add_argument("--max-drop", default=DEFAULT_MAX_DROP,
                   help="how far below the fp32 reference's metric a compile may fall before it is infeasible: a "
                        f"percentage of it or an absolute amount such as 0.005 (default {DEFAULT_MAX_DROP})")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help=f"a known model ({', '.join(MODELS)}) or a name for your own --onnx model "
                                        "(default: the --onnx file's name)")
    parser.add_argument("--onnx", help="path of the ONNX file to compile (its external data files beside it)")
    parser.add_argument("--batch-dim", metavar="SYMBOL",
                        help="the symbolic dimension that is the batch, where the graph leaves it ambiguous (default: "
                             "the symbol that leads an input and most inputs carry)")
    parser.add_argument("--input-shape", type=input_shape, action="append", default=[], metavar="NAME=D0,D1,...",
                        help="the sizes of an input's dynamic dimensions other than the batch (its batch axis is "
                             "set to each batch size); repeatable")
    parser.add_argument("--inputs", type=Path, metavar="FILE.npz",
                        help="one sample per input name (numpy.savez), as the application feeds it at batch 1: "
                             "tiled to each batch along the input's batch axis and fed to every measurement "
                             "(default: random values)")


def _add_backend_option(parser: argparse.ArgumentParser) -> None:
    names = backends.names()
    parser.add_argument("--backend", choices=("auto", *names), default="auto",
                        help=", ".join(f"{cls.name} ({cls.title})" for cls in backends.available()) +
                             ", or auto (default): a backend whose options you gave, else the first of "
                             f"{', '.join(names)} usable here")


def _add_backend_options(parser: argparse.ArgumentParser, command: str) -> None:
    for cls in backends.available():
        cls.add_options(parser.add_argument_group(f"{cls.title} ({cls.name})"), command)


def _add_storage_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", help=f"Optuna storage: sqlite:///FILE (default "
                                          f"{default_storage_url(create=False)}), journal:FILE for several processes "
                                          "on one host, postgresql://USER:PASSWORD@HOST/DB for several hosts")
