"""The Cloud AI 100 target: qaic-exec compiles, qaic-util names the devices; every scenario is run by LoadGen through
the runtime's Python API (qaicrt) where it can be imported, else qaic-runner measures and server and multistream
figures are estimated from the measured execution times."""

from __future__ import annotations

import argparse
import shlex
from dataclasses import replace
from pathlib import Path
from typing import Any

from autotune.backends import _queueing
from autotune.backends.base import Artifact, Device, Measurement, Target
from autotune.backends.qaic import runtime
from autotune.backends.qaic.baselines import cm_env, find_baseline, model_base_flags
from autotune.backends.qaic.flags import check_base_flags
from autotune.backends.qaic.space import DeviceLimits, QaicCandidate, QaicSpace
from autotune.errors import AutotuneError
from autotune.inputs import ModelInputs
from autotune.models import ModelSpec
from autotune.options import positive_int
from autotune.paths import safe_component
from autotune.qaic_bench import DEFAULT_COMPILE_TIMEOUT_S, QaicDevice, QaicSdk, resolve_sdk_root
from autotune.scenarios import Scenario

ESTIMATED_SCENARIOS = frozenset({"server", "multistream"})  # what qaic-runner's figures can only estimate


class QaicBackend:
    """Qualcomm Cloud AI 100 through its SDK's tools (the real SDK, or the emulator in emulators/qaic), driven by
    autotune.qaic_bench."""

    name = "qaic"
    title = "Cloud AI 100"
    priority = 10
    device_word = "QID"
    size_key = "nsp"
    size_unit = "NSPs"
    knob_labels = {"sdp_clusters": "sdp", "multicast_weights": "multicast", "batch_size": "batch",
                   "activations": "act.", "set_size": "set"}
    export_formats = ("yaml", "json", "cm", "cmdline")
    estimated_scenarios = ESTIMATED_SCENARIOS  # none where qaicrt measures them (an instance's own)
    compiles_ahead = True
    measure_seconds = 5.0
    validate_seconds = 10.0
    emulated = False
    changes_numerics = False  # precision is set by the model's base flags, not searched

    @classmethod
    def add_options(cls, parser: argparse._ActionsContainer, command: str) -> None:
        parser.add_argument("--sdk-root", help="Cloud AI 100 SDK root (default: $AUTOTUNE_SDK_ROOT, else /opt/qti-aic)")
        if command in ("run", "bench"):
            parser.add_argument("--base-flags", default="",
                                help="extra base qaic-exec flags every compile carries (e.g. -node-precision-info=F)")
        if command == "run":
            parser.add_argument("--qaicrt", metavar="WHERE", default="auto",
                                help="the runtime's Python module that LoadGen measures every scenario through: auto "
                                     "(the SDK root's dev/lib/x86_64 or dev/python, else the Python path), off "
                                     "(qaic-runner, server and multistream estimated), or a folder holding qaicrt")
            parser.add_argument("--nsp", type=positive_int, help="NSPs to tune for (default: the device's)")
        if command == "bench":
            parser.add_argument("--activations", type=positive_int,
                                help="qaic-runner -a (default: floor(free NSPs / cores), as MLPerf harnesses do)")
            parser.add_argument("--set-size", type=positive_int, default=10, help="qaic-runner -S (default 10)")

    @classmethod
    def requested(cls, args: argparse.Namespace) -> bool:
        return getattr(args, "sdk_root", None) is not None or getattr(args, "nsp", None) is not None

    @classmethod
    def probe(cls, args: argparse.Namespace) -> str | None:
        try:
            resolve_sdk_root(getattr(args, "sdk_root", None))
        except AutotuneError:
            return "no Cloud AI 100 SDK found (pass --sdk-root DIR or set AUTOTUNE_SDK_ROOT to use one)"
        return None

    @classmethod
    def from_options(cls, args: argparse.Namespace) -> QaicBackend:
        return cls(sdk_root=getattr(args, "sdk_root", None),
                   compile_timeout_s=getattr(args, "compile_timeout", None) or DEFAULT_COMPILE_TIMEOUT_S,
                   extra_base_flags=getattr(args, "base_flags", "") or "", nsp=getattr(args, "nsp", None),
                   qaicrt=getattr(args, "qaicrt", None) or "auto")

    def __init__(self, *, sdk_root: str | Path | None = None, compile_timeout_s: float = DEFAULT_COMPILE_TIMEOUT_S,
                 extra_base_flags: str = "", nsp: int | None = None, qaicrt: str = "auto") -> None:
        self.sdk = QaicSdk(root=sdk_root, compile_timeout_s=compile_timeout_s)
        self.extra_base_flags = check_base_flags(extra_base_flags)
        self.nsp = nsp
        self.emulated = self.sdk.emulated
        self.qaicrt, self.qaicrt_note = runtime.find_qaicrt(self.sdk.root, qaicrt)
        if self.qaicrt is None and qaicrt not in ("auto", "off"):  # a folder the user named: no fallback
            raise AutotuneError(f"--qaicrt {qaicrt}: {self.qaicrt_note}")
        if self.qaicrt is not None:
            self.estimated_scenarios = frozenset()

    def version(self) -> str:
        return self.sdk.version()

    def devices(self) -> list[Device]:
        return [_device(d) for d in self.sdk.query_devices()]

    def device_status(self, index: int) -> str | None:
        return next((d.status for d in self.sdk.query_devices() if d.qid == index), "missing")

    def target(self, *, model: ModelSpec, scenario: Scenario, devices: list[int] | None) -> Target:
        chosen = self._ready_devices(devices)
        first = chosen[0]
        nsp = self.nsp or first.nsp_total
        if nsp > first.nsp_total:
            raise AutotuneError(f"--nsp {nsp} is more than the {first.nsp_total} NSPs of device QID {first.qid}")
        limits = DeviceLimits(nsp_total=nsp, nsp_free=min(nsp, first.nsp_free))
        symbol = self._batch_symbol(model)
        preset = find_baseline(model.name, scenario.name, nsp)
        baseline = preset.candidate(limits) if preset else None
        if baseline is not None and scenario.name == "singlestream":
            baseline = baseline.with_runtime(activations=1, set_size=1)
        if baseline is not None and symbol is None:
            baseline = replace(baseline, batch_size=1)
        space = QaicSpace(device=limits, scenario=scenario.name, extra_flags=baseline.extra_flags if baseline else (),
                          batch_symbol=symbol)
        qids = ", ".join(str(d.qid) for d in chosen)
        return Target(devices=[_device(d) for d in chosen], size=nsp, sku=first.sku, space=space, baseline=baseline,
                      baseline_label=preset.label() if preset else None,
                      description=f"device{'s' if len(chosen) > 1 else ''} QID {qids} {first.sku} {nsp} NSPs"
                                  + self._measured_by(scenario))

    def base_flags(self, model: ModelSpec) -> tuple[str, ...]:
        return model_base_flags(model.name) + self.extra_base_flags

    def compile(self, onnx_path: Path, model: ModelSpec, candidate: QaicCandidate, workdir: Path, *,
                cache_dir: Path | None = None) -> Artifact:
        """qaic-exec on the model in its folder: the batch through the model's own symbol, its other symbols at
        their sizes (-onnx-define-symbol=SYMBOL,N)."""
        inputs = model.file_inputs()
        symbols = [f"-onnx-define-symbol={symbol},{size}" for symbol, size in inputs.symbols.items()]
        args = [*self.base_flags(model), *symbols, *candidate.compile_args(batch_symbol=self._batch_symbol(model))]
        return self.sdk.compile(onnx_path, args, batch_size=candidate.batch_size, workdir=workdir)

    def measure(self, artifact: Artifact, candidate: QaicCandidate, *, model: ModelSpec, scenario: Scenario | None,
                bound_ms: float | None, seconds: float, device: int, log_dir: Path) -> Measurement:
        """A scenario run by LoadGen through qaicrt where it was found (server and multistream also estimated the
        old way, stored beside: ``estimate_figures``); else, and for a plain measurement, qaic-runner."""
        if self.qaicrt is None or scenario is None:
            return self._run_runner(artifact, candidate, model=model, scenario=scenario, bound_ms=bound_ms,
                                    seconds=seconds, device=device, log_dir=log_dir)
        old = None
        if scenario.name in ESTIMATED_SCENARIOS:  # the old path's estimate, kept beside the measurement
            old = self._run_runner(artifact, candidate, model=model, scenario=scenario, bound_ms=bound_ms,
                                   seconds=seconds, device=device, log_dir=log_dir)
        measurement = runtime.measure(self.qaicrt, artifact.path, device=device, activations=candidate.activations,
                                      set_size=candidate.set_size, batch_size=candidate.batch_size,
                                      feed=model.file_inputs().feed(candidate.batch_size), scenario=scenario.name,
                                      bound_ms=bound_ms, seconds=seconds, log_dir=log_dir)
        if old is not None:
            measurement.estimate_figures = _queueing.estimate_figures(old)
        measurement.command = self.sdk.runner_command(artifact.path, activations=candidate.activations,
                                                      set_size=candidate.set_size, device=device, seconds=seconds)
        return measurement

    def _run_runner(self, artifact: Artifact, candidate: QaicCandidate, *, model: ModelSpec,
                    scenario: Scenario | None, bound_ms: float | None, seconds: float, device: int,
                    log_dir: Path) -> Measurement:
        """qaic-runner with the candidate's runtime knobs, latency profiling unless offline, fed the samples of
        ``--inputs`` (else qaic-runner's random inputs); server and multistream figures are then estimated by a
        queueing simulation of the measured execution times."""
        inputs = model.file_inputs()
        files = input_files(inputs, candidate.batch_size, log_dir / "inputs") if inputs.samples is not None else []
        measurement = self.sdk.run(artifact, activations=candidate.activations, set_size=candidate.set_size,
                                   device=device, seconds=seconds, latency=scenario is None or
                                   scenario.name != "offline", log_dir=log_dir, input_files=files)
        if scenario is not None and scenario.name in ESTIMATED_SCENARIOS:
            estimate_scenario(measurement, scenario, activations=candidate.activations, bound_ms=bound_ms)
        return measurement

    def outputs(self, artifact: Artifact, candidate: QaicCandidate, *, model: ModelSpec, feed: dict[str, Any],
                device: int) -> dict[str, Any] | None:
        return None  # no searched knob changes numerics, so no accuracy check needs the card's outputs

    def cancel(self) -> None:
        self.sdk.children.cancel()

    def artifact_usable(self, path: Path) -> bool:
        return (path / "programqpc.bin").is_file()

    def preset_fields(self, candidate: QaicCandidate, artifact: Artifact, measurement: Measurement, *,
                      name: str) -> dict[str, Any]:
        """The runtime knobs, CM's split of the flags and its variation env, and qaic-exec and qaic-runner lines that
        write and read a QPC folder ``qpc-<name>`` in the current directory."""
        qpc = f"qpc-{name}"
        env = cm_env(candidate)
        return {"activations": candidate.activations, "set_size": candidate.set_size,
                "cm_compiler_args": env["CM_QAIC_MODEL_COMPILER_ARGS"],
                "cm_compiler_args_sut": env["CM_QAIC_MODEL_COMPILER_ARGS_SUT"], "cm_env": env,
                "qaic_exec_command": shlex.join(_with_binary_dir(artifact.command, qpc)),
                "qaic_runner_command": shlex.join(_with_qpc(measurement.command, qpc))}

    def _measured_by(self, scenario: Scenario) -> str:
        """How the study's figures come, for the run's header: measured through qaicrt, or estimated and why."""
        if self.qaicrt is not None:
            return f"; every scenario measured by LoadGen through {self.qaicrt_note}"
        if scenario.name in ESTIMATED_SCENARIOS:
            return f"; {scenario.name} figures estimated from qaic-runner's times: {self.qaicrt_note}"
        return ""

    def _batch_symbol(self, model: ModelSpec) -> str | None:
        """The model's batch symbol; base flags that define it would fight the searched batch."""
        symbol = model.file_inputs().batch_symbol
        defining = [f for f in self.base_flags(model) if symbol and f.startswith(f"-onnx-define-symbol={symbol},")]
        if defining:
            raise AutotuneError(f"base flag {defining[0]!r} sets the batch symbol {symbol}, a searched knob: remove "
                                f"it from --base-flags")
        return symbol

    def _ready_devices(self, qids: list[int] | None) -> list[QaicDevice]:
        """``qids`` (each must be Ready, all of one SKU), else every Ready device of the first Ready one's SKU."""
        devices = self.sdk.query_devices()
        if qids:
            chosen = [_ready(devices, qid) for qid in qids]
            if len({(d.sku, d.nsp_total) for d in chosen}) > 1:
                raise AutotuneError("--devices mixes SKUs (" + ", ".join(f"QID {d.qid}: {d.sku} {d.nsp_total} NSPs"
                                                                      for d in chosen) +
                                    "): a study tunes for one kind of card; pick devices of one SKU")
            return chosen
        first = _ready(devices, None)
        return [d for d in devices if d.ready and (d.sku, d.nsp_total) == (first.sku, first.nsp_total)]


def _ready(devices: list[QaicDevice], qid: int | None) -> QaicDevice:
    """Device ``qid`` (it must be Ready), else the first Ready one."""
    if qid is not None:
        for device in devices:
            if device.qid == qid:
                if not device.ready:
                    raise AutotuneError(f"device QID {qid} is {device.status}, not Ready; check `qaic-util -q` "
                                        f"(a user outside the qaic group sees Error) or pick others "
                                        f"(run --devices, bench --device)")
                return device
        raise AutotuneError(f"no device QID {qid}: qaic-util reports {[d.qid for d in devices]}")
    for device in devices:
        if device.ready:
            return device
    states = ", ".join(f"QID {d.qid} {d.status}" for d in devices) or "no devices"
    raise AutotuneError(f"no Ready Cloud AI 100 device ({states}); check `qaic-util -q`")


def input_files(inputs: ModelInputs, batch_size: int, folder: Path) -> list[Path]:
    """One raw file per input, in the model's order, holding one batch of ``inputs`` (qaic-runner's ``-i``)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, (name, array) in enumerate(inputs.feed(batch_size).items()):
        path = folder / f"{i}-{safe_component(name)}.raw"
        array.tofile(path)
        files.append(path)
    return files


def _device(d: QaicDevice) -> Device:
    return Device(index=d.qid, name=d.sku, size=d.nsp_total, status=d.status,
                  details={"nsp_free": d.nsp_free, "dram_free_mb": d.dram_free_mb, "dram_total_mb": d.dram_total_mb})


def estimate_scenario(m: Measurement, scenario: Scenario, *, activations: int, bound_ms: float | None) -> None:
    """Fill the scenario's figure of a qaic-runner measurement from its execution times (marked estimated)."""
    _queueing.estimate_scenario(m, scenario, concurrency=activations, bound_ms=bound_ms)


def _with_binary_dir(argv: list[str], qpc: str) -> list[str]:
    return [f"-aic-binary-dir={qpc}" if a.startswith("-aic-binary-dir=") else a for a in argv]


def _with_qpc(argv: list[str], qpc: str) -> list[str]:
    out: list[str] = []
    for i, arg in enumerate(argv):
        if i and argv[i - 1] in ("-t", "--test-data"):
            out.append(qpc)
        elif i and argv[i - 1] == "--aic-profiling-out-dir":
            out.append(".")
        else:
            out.append(arg)
    return out

