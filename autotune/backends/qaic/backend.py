"""The Cloud AI 100 target: qaic-exec compiles, qaic-util names the devices; every scenario is run by LoadGen through
the runtime's Python API (qaicrt) where it can be imported, else qaic-runner measures and server and multistream
figures are estimated from the measured execution times."""

from __future__ import annotations

import argparse
import json
import shlex
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from autotune.backends import _queueing
from autotune.backends.base import Artifact, Device, Measurement, Target
from autotune.backends.qaic import precision as prec
from autotune.backends.qaic import runtime
from autotune.backends.qaic.baselines import cm_env, find_baseline, model_base_flags
from autotune.backends.qaic.flags import check_base_flags
from autotune.backends.qaic.outputs import model_file, output_specs, raw_files, read_outputs
from autotune.backends.qaic.profile import NODE_KEY, RECORD_FILE, int8_args, node_precision_file
from autotune.backends.qaic.space import DeviceLimits, QaicCandidate, QaicSpace
from autotune.errors import AutotuneError
from autotune.inputs import ModelInputs
from autotune.models import ModelSpec
from autotune.options import positive_int
from autotune.qaic_bench import DEFAULT_COMPILE_TIMEOUT_S, QaicDevice, QaicSdk, resolve_sdk_root
from autotune.scenarios import Scenario



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
                   "activations": "act.", "set_size": "set", "precision": "precision", "calibration": "calibration",
                   "percentile": "pctl", "schema_activations": "act. schema", "schema_constants": "const. schema",
                   "channelwise": "channelwise", "fp16_nodes": "fp16 nodes", "mxfp6": "mxfp6"}
    export_formats = ("yaml", "json", "cm", "cmdline")
    estimated_scenarios = _queueing.ESTIMATED_SCENARIOS  # none where qaicrt measures them (an instance's own)
    compiles_ahead = True
    measure_seconds = 5.0
    validate_seconds = 10.0
    emulated = False
    # the precision is the base flags' unless the study has a calibration set: then it is searched, and the accuracy
    # guard judges every compile (objective.guarded: more than one precision in the space)
    changes_numerics = False

    @classmethod
    def add_options(cls, parser: argparse._ActionsContainer, command: str) -> None:
        parser.add_argument("--sdk-root", help="Cloud AI 100 SDK root (default: $AUTOTUNE_SDK_ROOT, else /opt/qti-aic)")
        if command in ("run", "bench"):
            parser.add_argument("--base-flags", default="",
                                help="extra base qaic-exec flags every compile carries (e.g. -node-precision-info=F)")
        if command in ("run", "bench"):
            parser.add_argument("--qaicrt", metavar="WHERE", default="auto",
                                help="the runtime's Python module that LoadGen measures every scenario through: auto "
                                     "(the SDK root's dev/lib/x86_64 or dev/python, else the Python path), off "
                                     "(qaic-runner, server and multistream estimated), or a folder holding qaicrt")
        if command == "run":
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
        offer = self._offer(model)
        preset = find_baseline(model.name, scenario.name, nsp)
        baseline = preset.candidate(limits) if preset else None
        if baseline is not None and scenario.name == "singlestream":
            baseline = baseline.with_runtime(activations=1, set_size=1)
        if baseline is not None and symbol is None:
            baseline = replace(baseline, batch_size=1)
        if baseline is not None and offer is not None:  # the model's built-in precision, judged as any other
            baseline = replace(baseline, **offer.start_recipe())
        space = QaicSpace(device=limits, scenario=scenario.name, extra_flags=baseline.extra_flags if baseline else (),
                          batch_symbol=symbol, precision=offer)
        qids = ", ".join(str(d.qid) for d in chosen)
        return Target(devices=[_device(d) for d in chosen], size=nsp, sku=first.sku, space=space, baseline=baseline,
                      baseline_label=preset.label() if preset else None,
                      description=f"device{'s' if len(chosen) > 1 else ''} QID {qids} {first.sku} {nsp} NSPs"
                                  + self._measured_by(scenario))

    def base_flags(self, model: ModelSpec) -> tuple[str, ...]:
        """The qaic-exec base flags; with the precision searched, the calibration set's SHA-256 too (it decides
        every int8 build)."""
        flags = self._exec_flags(model)
        if self._offer(model) is None or model.calibration is None:
            return flags
        return flags + (f"calibration_sha256={model.calibration.sha256}",)

    def _exec_flags(self, model: ModelSpec) -> tuple[str, ...]:
        """The model's base flags, without its precision flags where the precision is searched (they are the
        baseline's recipe then), and the user's."""
        flags = model_base_flags(model.name)
        if self._offer(model) is not None:
            flags = tuple(flag for flag in flags if flag.partition("=")[0] not in prec.PRECISION_FLAGS)
        return flags + self.extra_base_flags

    def _offer(self, model: ModelSpec) -> prec.Offer | None:
        """The precision the study searches: with a calibration set, what the user's base flags leave free."""
        if model.calibration is None:
            return None
        return prec.offer(user_flags=self.extra_base_flags, model_flags=model_base_flags(model.name),
                          matmul=model.name.startswith("bert"))

    def compile(self, onnx_path: Path, model: ModelSpec, candidate: QaicCandidate, workdir: Path, *,
                cache_dir: Path | None = None) -> Artifact:
        """qaic-exec on the model in its folder: the batch through the model's own symbol, its other symbols at
        their sizes (-onnx-define-symbol=SYMBOL,N); at int8 with the profile of its calibration and schemas
        (``profile.int8_args``, made once and shared) and its node-precision file. What a preset needs of the
        precision is kept beside the QPC (``RECORD_FILE``)."""
        inputs = model.file_inputs()
        symbols = [f"-onnx-define-symbol={symbol},{size}" for symbol, size in inputs.symbols.items()]
        base = [*self._exec_flags(model), *symbols]
        profile: list[str] = []
        record: dict[str, Any] = {"params_base": " ".join([*base, *prec.recipe_flags(candidate)])}
        node_file = None
        if candidate.precision == prec.INT8:
            profile, int8 = int8_args(self.sdk, onnx_path, model, candidate, base=base, workdir=workdir,
                                      cache_dir=cache_dir)
            record |= int8
        if candidate.precision == prec.INT8 and candidate.fp16_nodes:
            workdir.mkdir(parents=True, exist_ok=True)
            path, record[NODE_KEY] = node_precision_file(onnx_path, model, candidate,
                                                         Path(tempfile.mkdtemp(prefix="nodes-", dir=workdir)))
            node_file = str(path)
        args = [*base, *candidate.compile_args(batch_symbol=self._batch_symbol(model), node_file=node_file), *profile]
        artifact = self.sdk.compile(onnx_path, args, batch_size=candidate.batch_size, workdir=workdir)
        if candidate.precision is not None:
            (artifact.path.parent / RECORD_FILE).write_text(json.dumps(record, indent=1))
        return artifact

    def measure(self, artifact: Artifact, candidate: QaicCandidate, *, model: ModelSpec, scenario: Scenario | None,
                bound_ms: float | None, seconds: float, device: int, log_dir: Path) -> Measurement:
        """A scenario run by LoadGen through qaicrt where it was found (server and multistream also estimated the
        old way, stored beside: ``estimate_figures``); else, and for a plain measurement, qaic-runner."""
        if self.qaicrt is None or scenario is None:
            return self._run_runner(artifact, candidate, model=model, scenario=scenario, bound_ms=bound_ms,
                                    seconds=seconds, device=device, log_dir=log_dir)
        qaicrt = self.qaicrt
        measurement = _queueing.measured_beside_estimate(scenario, estimate=lambda: self._run_runner(
            artifact, candidate, model=model, scenario=scenario, bound_ms=bound_ms, seconds=seconds, device=device,
            log_dir=log_dir), measure=lambda: runtime.measure(
            qaicrt, artifact.path, device=device, activations=candidate.activations, set_size=candidate.set_size,
            batch_size=candidate.batch_size, feed=model.file_inputs().feed(candidate.batch_size),
            scenario=scenario.name, bound_ms=bound_ms, seconds=seconds, log_dir=log_dir))
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
        if scenario is not None and scenario.name in _queueing.ESTIMATED_SCENARIOS:
            estimate_scenario(measurement, scenario, activations=candidate.activations, bound_ms=bound_ms)
        return measurement

    def outputs(self, artifact: Artifact, candidate: QaicCandidate, *, model: ModelSpec, feed: dict[str, Any],
                device: int) -> dict[str, Any] | None:
        """One inference of ``feed`` (one batch) by qaic-runner on the QPC, its outputs written to files and read
        back as the model's outputs at the candidate's batch."""
        with tempfile.TemporaryDirectory(prefix="autotune-qaic-outputs-") as work:
            files = raw_files(feed, Path(work) / "inputs")
            written = self.sdk.write_outputs(artifact, input_files=files, device=device, out_dir=Path(work) / "out")
            specs = output_specs(model_file(artifact.command), model.file_inputs(), candidate.batch_size)
            return read_outputs(written, specs)

    def cancel(self) -> None:
        self.sdk.children.cancel()

    def artifact_usable(self, path: Path) -> bool:
        return (path / "programqpc.bin").is_file()

    def preset_fields(self, candidate: QaicCandidate, artifact: Artifact, measurement: Measurement, *,
                      name: str) -> dict[str, Any]:
        """The runtime knobs, CM's split of the flags and its variation env, and qaic-exec and qaic-runner lines that
        write and read a QPC folder ``qpc-<name>`` in the current directory. With the precision searched: CM's base
        flags with the recipe (``CM_QAIC_MODEL_COMPILER_PARAMS_BASE``), and at int8 the ``-dump-profile`` line that
        makes ``profile.yaml`` from ``calib.txt`` (``qaic_profile_command``, first of the lines), the compile line
        loading it, and what the profile was made of and the nodes kept in fp16 (``int8``)."""
        qpc = f"qpc-{name}"
        env = cm_env(candidate)
        record_path = artifact.path.parent / RECORD_FILE
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
        if "params_base" in record:
            env["CM_QAIC_MODEL_COMPILER_PARAMS_BASE"] = record.pop("params_base")
        profile_line = record.pop("profile_command", None)
        return {"activations": candidate.activations, "set_size": candidate.set_size,
                "cm_compiler_args": env["CM_QAIC_MODEL_COMPILER_ARGS"],
                "cm_compiler_args_sut": env["CM_QAIC_MODEL_COMPILER_ARGS_SUT"], "cm_env": env,
                **({"qaic_profile_command": profile_line, "int8": record} if profile_line else {}),
                "qaic_exec_command": shlex.join(_portable(_with_binary_dir(artifact.command, qpc), int8=bool(
                    profile_line))),
                "qaic_runner_command": shlex.join(_with_qpc(measurement.command, qpc))}

    def _measured_by(self, scenario: Scenario) -> str:
        return _queueing.measured_by(scenario, runtime_found=self.qaicrt is not None, note=self.qaicrt_note,
                                     runner="qaic-runner")

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
    return raw_files(inputs.feed(batch_size), folder)


def _device(d: QaicDevice) -> Device:
    return Device(index=d.qid, name=d.sku, size=d.nsp_total, status=d.status,
                  details={"nsp_free": d.nsp_free, "dram_free_mb": d.dram_free_mb, "dram_total_mb": d.dram_total_mb})


def estimate_scenario(m: Measurement, scenario: Scenario, *, activations: int, bound_ms: float | None) -> None:
    """Fill the scenario's figure of a qaic-runner measurement from its execution times (marked estimated)."""
    _queueing.estimate_scenario(m, scenario, concurrency=activations, bound_ms=bound_ms)


def _portable(argv: list[str], *, int8: bool) -> list[str]:
    """At ``int8``, the profile and node-precision file autotune made by the names a preset's lines give them
    (``profile.yaml`` from its dump line, ``fp16-nodes-K.yaml`` from its ``int8`` nodes)."""
    def name(arg: str) -> str:
        flag, _, value = arg.partition("=")
        if flag == "-load-profile":
            return f"{flag}=profile.yaml"
        ours = flag == "-node-precision-info" and prec.NODE_FILE.fullmatch(Path(value).name)
        return f"{flag}={Path(value).name}" if ours else arg
    return [name(arg) for arg in argv] if int8 else argv


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

