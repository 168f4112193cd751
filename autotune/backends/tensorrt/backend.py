"""The TensorRT target: trtexec builds an engine per set of build knobs (from the ONNX file, or its fp16 or int8 QDQ
variant) and measures it per runtime setting; the GPUs come from nvidia-smi; server and multistream are estimated
from trtexec's per-query latencies."""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from autotune.backends._queueing import (ESTIMATED_SCENARIOS, estimate_scenario, measured_beside_estimate,
                                        measured_by)
from autotune.backends.base import Artifact, Device, Measurement, Target
from autotune.backends.tensorrt.baseline import baseline_label, harness_batch
from autotune.backends.tensorrt.engine import (PLAN, BuiltBy, build_shapes, check_engine, input_files, read_built_by,
                                               run_shapes, write_built_by)
from autotune.backends.tensorrt.flags import IMPLICIT_INT8, check_base_flags
from autotune.backends.tensorrt.nvidia_smi import Gpu, find_nvidia_smi, query_gpus
from autotune.backends.tensorrt.parse import parse_outputs, parse_version_line
from autotune.backends.tensorrt.results import measurement_from
from autotune.backends.tensorrt.runtime import find_runtime, measure_engine
from autotune.backends.tensorrt.space import TrtCandidate, TrtSpace
from autotune.backends.tensorrt.trtexec import Trtexec, find_trtexec
from autotune.backends.tensorrt.variant import model_variant, read_record, record
from autotune.errors import AutotuneError, CompileFailure, MeasureFailure
from autotune.models import ModelSpec, cache_dir
from autotune.paths import safe_component
from autotune.scenarios import Scenario

DEFAULT_BUILD_TIMEOUT_S = 3600.0
WARM_UP_MS = 200  # trtexec's default, given explicitly so that both contracts measure alike
PERCENTILES = "90,95,99"


class TensorrtBackend:
    """NVIDIA GPUs through TensorRT's trtexec (the real one, or the emulator in emulators/trtexec) and nvidia-smi."""

    name = "tensorrt"
    title = "NVIDIA GPUs with TensorRT"
    priority = 50
    device_word = "GPU"
    size_key = "gib"
    size_unit = "GiB"
    knob_labels = {"batch_size": "batch", "precision": "prec.", "workspace_mib": "workspace MiB", "opt_level": "opt",
                   "tiling_level": "tiling", "aux_streams": "aux", "streams": "streams", "cuda_graph": "graph",
                   "spin_wait": "spin", "contract": "TRT", "calibration_method": "calibration",
                   "per_channel": "per-channel", "float_layers": "float layers"}
    export_formats = ("yaml", "json", "cmdline")
    estimated_scenarios = ESTIMATED_SCENARIOS  # none where its Python runtime measures them (an instance's own)
    compiles_ahead = False  # the builder times kernels on the GPU: a build beside a measurement disturbs both
    measure_seconds = 3.0
    validate_seconds = 5.0
    emulated = False
    changes_numerics = True  # fp16 and int8 (flags or model variants), TF32 and fused kernels on either version

    @classmethod
    def add_options(cls, parser: argparse._ActionsContainer, command: str) -> None:
        parser.add_argument("--trtexec", metavar="PATH",
                            help="TensorRT's trtexec (default: $AUTOTUNE_TRTEXEC, else trtexec on PATH)")
        if command in ("run", "bench"):
            parser.add_argument("--trt-base-flags", default="", metavar="FLAGS",
                                help="extra trtexec build flags every engine carries, unsearched (e.g. --noTF32)")
            parser.add_argument("--trt-calib", type=Path, metavar="FILE",
                                help="an INT8 calibration cache: int8 by TensorRT's calibrator (int8-calib) is "
                                     "searched too (TensorRT 10 only; a calibration set gives the QDQ model on both)")
        if command in ("run", "bench"):
            parser.add_argument("--trt-runtime", choices=("auto", "off"), default="auto",
                                help="auto: LoadGen measures every scenario through TensorRT's Python runtime where "
                                     "it can be imported (tensorrt, cuda-python); off: trtexec, server and "
                                     "multistream estimated")

    @classmethod
    def requested(cls, args: argparse.Namespace) -> bool:
        return getattr(args, "trtexec", None) is not None

    @classmethod
    def probe(cls, args: argparse.Namespace) -> str | None:
        try:
            find_trtexec(getattr(args, "trtexec", None))
        except AutotuneError:
            return "trtexec not found (pass --trtexec PATH or set AUTOTUNE_TRTEXEC to use it)"
        return None

    @classmethod
    def from_options(cls, args: argparse.Namespace) -> TensorrtBackend:
        return cls(trtexec=getattr(args, "trtexec", None), base_flags=getattr(args, "trt_base_flags", "") or "",
                   calib=getattr(args, "trt_calib", None),
                   build_timeout_s=getattr(args, "compile_timeout", None) or DEFAULT_BUILD_TIMEOUT_S,
                   runtime=getattr(args, "trt_runtime", None) or "auto")

    def __init__(self, *, trtexec: str | Path | None = None, base_flags: str = "", calib: Path | None = None,
                 build_timeout_s: float = DEFAULT_BUILD_TIMEOUT_S, runtime: str = "auto") -> None:
        self.tool = Trtexec(find_trtexec(str(trtexec) if trtexec else None), build_timeout_s=build_timeout_s)
        self.contract = self.tool.contract
        self.extra_base_flags = check_base_flags(base_flags, contract=self.contract.major)
        self.calib = _check_calib(calib, self.contract.major)
        self.nvidia_smi = find_nvidia_smi(self.tool.path)
        self.emulated = self.tool.emulated
        self.runtime, self.runtime_note = _python_runtime(runtime, emulated=self.emulated)
        if self.runtime is not None:
            self.estimated_scenarios = frozenset()
        self._gpus: dict[int, Gpu] = {}  # by CUDA index: the study's GPUs, chosen by target()

    def version(self) -> str:
        gpu = self._build_gpu(required=False)
        return f"TensorRT {self.tool.version} on {gpu.model if gpu else 'no GPU'}"

    def devices(self) -> list[Device]:
        return [_device(g) for g in self._query() if g.cuda_index is not None]

    def device_status(self, index: int) -> str | None:
        return next((g.status for g in self._query() if g.cuda_index == index), "missing")

    def target(self, *, model: ModelSpec, scenario: Scenario, devices: list[int] | None) -> Target:
        chosen = self._choose(devices)
        self._gpus = {g.cuda_index: g for g in chosen if g.cuda_index is not None}
        first = chosen[0]
        dynamic = model.file_inputs().batch_symbol is not None
        harness = harness_batch(model.name, scenario.name)
        space = TrtSpace(contract=self.contract.major, scenario=scenario.name, dynamic_batch=dynamic,
                         int8=model.calibration is not None, calib=self.calib is not None,
                         extra_batches=(harness.batch_size,) if harness and dynamic else ())
        batch = harness.batch_size if harness and dynamic else 1
        baseline = replace(space.defaults(), batch_size=batch)
        ids = ", ".join(str(g.cuda_index) for g in chosen)
        size = (first.memory_total_mib or 0) // 1024
        return Target(devices=[_device(g) for g in chosen], size=size, sku=first.model, space=space,
                      baseline=baseline, baseline_label=baseline_label(harness, batch),
                      description=f"GPU{'s' if len(chosen) > 1 else ''} {ids} {first.model}, {size} GiB, trtexec "
                                  f"{self.contract.major}.x flags" + self._measured_by(scenario))

    def base_flags(self, model: ModelSpec) -> tuple[str, ...]:
        """``--trt-base-flags``, the calibration cache int8-calib engines are built from, and what decides the QDQ
        models besides their recipe: the calibration set's SHA-256 and the quantizer's version."""
        calib = (f"--calib={self.calib}",) if self.calib is not None else ()
        qdq = (f"calibration_sha256={model.calibration.sha256}",
               f"int8_quantizer=onnxruntime-{metadata.version('onnxruntime')}") if model.calibration else ()
        return self.extra_base_flags + calib + qdq

    def compile(self, onnx_path: Path, model: ModelSpec, candidate: TrtCandidate, workdir: Path, *,
                cache_dir: Path | None = None) -> Artifact:
        """trtexec --onnx --saveEngine for the candidate's build knobs, shapes from batch 1 to its batch, the timing
        cache of this GPU model and TensorRT version; the engine folder records what built it. The file built is the
        candidate's model variant where it has one (``variant.model_variant``: the fp16 file, the int8 QDQ model),
        a compile-cache entry of its own under ``cache_dir``, recorded beside the engine (``variant.record``)."""
        gpu = self._build_gpu()
        workdir.mkdir(parents=True, exist_ok=True)
        out = Path(tempfile.mkdtemp(prefix="build-", dir=workdir))
        folder = out / "engine"
        folder.mkdir()
        log_path = out / "trtexec-build.log"
        variant = model_variant(onnx_path, model, candidate, out / "variant", cache_dir=cache_dir)
        command = self.tool.build_command(variant.path if variant else onnx_path, engine=folder / PLAN,
                                          shapes=build_shapes(model.file_inputs(), candidate.batch_size),
                                          flags=[*self.extra_base_flags, *candidate.build_flags(),
                                                 *self._calibration(candidate)],
                                          device=gpu.cuda_index or 0, timing_cache=self.timing_cache(gpu))
        started = time.monotonic()
        output = self.tool.build(command, log_path)
        seconds = time.monotonic() - started
        built = parse_version_line(output)
        if built is not None and built != self.tool.version:
            raise CompileFailure(f"trtexec --help said TensorRT {self.tool.version} but the build ran TensorRT "
                                 f"{built}: fix the installation (libraries of another version on the path?)",
                                 log_path=log_path)
        if not (folder / PLAN).is_file():
            raise CompileFailure("trtexec passed but wrote no engine", log_path=log_path)
        write_built_by(folder, self._built_by(gpu), batch_size=candidate.batch_size)
        if variant is not None:
            record(folder, candidate, variant)
        return Artifact(path=folder, command=command, log_path=log_path, compile_seconds=seconds,
                        batch_size=candidate.batch_size)

    def measure(self, artifact: Artifact, candidate: TrtCandidate, *, model: ModelSpec, scenario: Scenario | None,
                bound_ms: float | None, seconds: float, device: int, log_dir: Path) -> Measurement:
        """A scenario run by LoadGen through TensorRT's Python runtime where it was found (server and multistream also
        estimated the old way, stored beside: ``estimate_figures``); else, and for a plain measurement, trtexec."""
        if self.runtime is None or scenario is None:
            return self._trtexec_measure(artifact, candidate, model=model, scenario=scenario, bound_ms=bound_ms,
                                         seconds=seconds, device=device, log_dir=log_dir)
        plan = check_engine(artifact.path, self._built_by(self._gpu(device)))
        inputs, trt = model.file_inputs(), self.runtime
        measurement = measured_beside_estimate(scenario, estimate=lambda: self._trtexec_measure(
            artifact, candidate, model=model, scenario=scenario, bound_ms=bound_ms, seconds=seconds, device=device,
            log_dir=log_dir), measure=lambda: measure_engine(
            trt, plan, device=device, feed=inputs.feed(candidate.batch_size), streams=candidate.streams,
            cuda_graph=candidate.cuda_graph, batch_size=candidate.batch_size, scenario=scenario.name,
            bound_ms=bound_ms, seconds=seconds, log_dir=log_dir))
        measurement.command = self.tool.run_command(
            plan, shapes=run_shapes(inputs, candidate.batch_size), flags=self._runtime_flags(candidate), device=device,
            extra=[f"--warmUp={WARM_UP_MS}", f"--duration={seconds:g}", f"--percentile={PERCENTILES}"])
        return measurement

    def _trtexec_measure(self, artifact: Artifact, candidate: TrtCandidate, *, model: ModelSpec,
                         scenario: Scenario | None, bound_ms: float | None, seconds: float, device: int,
                         log_dir: Path) -> Measurement:
        """trtexec --loadEngine for ``seconds`` with the candidate's runtime knobs (data transfers included on both
        contracts); server and multistream then estimated from the per-query trace (--exportTimes)."""
        plan = check_engine(artifact.path, self._built_by(self._gpu(device)))
        log_dir.mkdir(parents=True, exist_ok=True)
        run_dir = Path(tempfile.mkdtemp(prefix="measure-", dir=log_dir))
        estimate = scenario is not None and scenario.name in ESTIMATED_SCENARIOS
        times = run_dir / "times.json"
        inputs = model.file_inputs()
        extra = [f"--warmUp={WARM_UP_MS}", f"--duration={seconds:g}", f"--percentile={PERCENTILES}"]
        if estimate:
            extra.append(f"--exportTimes={times}")
        if inputs.samples is not None:
            extra.append(f"--loadInputs={input_files(inputs.feed(candidate.batch_size), run_dir / 'inputs')}")
        command = self.tool.run_command(plan, shapes=run_shapes(inputs, candidate.batch_size),
                                        flags=self._runtime_flags(candidate), device=device, extra=extra)
        log_path = run_dir / "trtexec.log"
        output = self.tool.run(command, log_path, timeout_s=3 * seconds + WARM_UP_MS / 1000 + 120, device=device)
        measurement = measurement_from(output, times=times if estimate else None, batch_size=candidate.batch_size,
                                       command=command, log_path=log_path)
        if estimate:
            assert scenario is not None
            estimate_scenario(measurement, scenario, concurrency=candidate.streams, bound_ms=bound_ms)
        return measurement

    def outputs(self, artifact: Artifact, candidate: TrtCandidate, *, model: ModelSpec, feed: dict[str, Any],
                device: int) -> dict[str, Any] | None:
        """One inference of ``feed`` (--loadInputs) whose outputs trtexec writes (--exportOutput)."""
        plan = check_engine(artifact.path, self._built_by(self._gpu(device)))
        with tempfile.TemporaryDirectory(prefix="autotune-trt-outputs-") as folder:
            exported = Path(folder) / "outputs.json"
            extra = [f"--loadInputs={input_files(feed, Path(folder) / 'inputs')}", f"--exportOutput={exported}",
                     "--iterations=1", "--warmUp=0", "--duration=0"]
            command = self.tool.run_command(plan, shapes=run_shapes(model.file_inputs(), candidate.batch_size),
                                            flags=self._runtime_flags(candidate), device=device, extra=extra)
            self.tool.run(command, Path(folder) / "trtexec.log", timeout_s=600, device=device)
            try:
                return {name: np.asarray(a, dtype=np.float32) for name, a in
                        parse_outputs(exported.read_text()).items()}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise MeasureFailure(f"unreadable --exportOutput file from trtexec: {exc}") from None

    def cancel(self) -> None:
        self.tool.children.cancel()

    def artifact_usable(self, path: Path) -> bool:
        """A whole engine built by this trtexec's TensorRT for this study's GPU model."""
        gpu = self._build_gpu(required=False)
        built = read_built_by(path)
        return built is not None and gpu is not None and built == self._built_by(gpu)

    def preset_fields(self, candidate: TrtCandidate, artifact: Artifact, measurement: Measurement, *,
                      name: str) -> dict[str, Any]:
        """The runtime knobs, their names in NVIDIA's harness configs, and the lines that build ``<name>.plan`` (with
        a timing cache beside it) in the current directory and measure it; for a model variant, first the Python
        line that makes ``<name>.<precision>.onnx`` (the fp16 file, the QDQ model), and the variant with its recipe."""
        engine = f"{name}.plan"
        variant = read_record(artifact.path)
        source = f"{name}.{variant['precision']}.onnx" if variant else None
        build = [f"--saveEngine={engine}" if a.startswith("--saveEngine=") else
                 f"--timingCacheFile={name}.timing.cache" if a.startswith("--timingCacheFile=") else
                 f"--onnx={source}" if source and a.startswith("--onnx=") else a for a in artifact.command]
        run = [f"--loadEngine={engine}" if a.startswith("--loadEngine=") else a for a in measurement.command
               if not a.startswith("--exportTimes=")]
        made = {"model_variant": {k: v for k, v in variant.items() if k != "command"},
                "model_variant_command": shlex.join([a.replace(variant["file"], str(source)) for a in
                                                     variant["command"]])} if variant else {}
        return {"inference_streams": candidate.streams, "cuda_graph": candidate.cuda_graph,
                "spin_wait": candidate.spin_wait,
                "nvidia_harness": {"gpu_batch_size": candidate.batch_size,
                                   "gpu_inference_streams": candidate.streams, "use_graphs": candidate.cuda_graph,
                                   "workspace_size": None if candidate.workspace_mib is None
                                   else candidate.workspace_mib * 2**20},
                **made, "trtexec_build_command": shlex.join(build), "trtexec_measure_command": shlex.join(run)}

    def timing_cache(self, gpu: Gpu) -> Path:
        """The timing cache every build for this GPU model and TensorRT version shares (in autotune's cache)."""
        folder = cache_dir() / "tensorrt-timing"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{safe_component(f'trt{self.tool.version}-{gpu.name}-cc{gpu.compute_cap}')}.cache"

    def _measured_by(self, scenario: Scenario) -> str:
        return measured_by(scenario, runtime_found=self.runtime is not None, note=self.runtime_note, runner="trtexec")

    def _calibration(self, candidate: TrtCandidate) -> list[str]:
        return [f"--calib={self.calib}"] if candidate.precision == IMPLICIT_INT8 and self.calib is not None else []

    def _runtime_flags(self, candidate: TrtCandidate) -> list[str]:
        if candidate.contract != self.contract.major:
            raise MeasureFailure(f"the candidate is spelled for TensorRT {candidate.contract}.x; this trtexec is "
                                 f"{self.tool.version}")
        return candidate.runtime_flags() + self.contract.runtime_flags(
            cuda_graph=self.contract.cuda_graph_default, spin_wait=self.contract.spin_wait_default, transfers=True)

    def _built_by(self, gpu: Gpu) -> BuiltBy:
        return BuiltBy(tensorrt=str(self.tool.version), gpu=gpu.name, compute_cap=gpu.compute_cap)

    def _query(self) -> list[Gpu]:
        return query_gpus(self.nvidia_smi)

    def _gpu(self, index: int) -> Gpu:
        gpu = self._gpus.get(index) or next((g for g in self._query() if g.cuda_index == index), None)
        if gpu is None:
            raise MeasureFailure(f"no GPU {index}: nvidia-smi reports none at that CUDA index")
        return gpu

    def _build_gpu(self, *, required: bool = True) -> Gpu | None:
        """The GPU builds run on: the study's first, else the first ready one."""
        if self._gpus:
            return next(iter(self._gpus.values()))
        gpu = next((g for g in self._query() if g.cuda_index is not None and g.status == "Ready"), None)
        if gpu is None and required:
            raise AutotuneError("no ready GPU to build on: check nvidia-smi")
        return gpu

    def _choose(self, indices: list[int] | None) -> list[Gpu]:
        """``indices`` (each must be visible and readable), else every GPU of the first ready one's model; GPUs busy
        with another process are left out with a warning."""
        visible = [g for g in self._query() if g.cuda_index is not None]
        if indices:
            missing = [i for i in indices if i not in {g.cuda_index for g in visible}]
            if missing:
                raise AutotuneError(f"no GPU {missing[0]}: nvidia-smi reports CUDA indices "
                                    f"{[g.cuda_index for g in visible]} (CUDA_VISIBLE_DEVICES renumbers them)")
            wanted = [next(g for g in visible if g.cuda_index == i) for i in indices]
        else:
            wanted = visible
        usable = []
        for gpu in wanted:
            if gpu.status == "Busy":
                print(f"autotune: warning: GPU {gpu.cuda_index} ({gpu.name}) is busy with another process "
                      f"({gpu.busy_text()}): left out", file=sys.stderr, flush=True)
            elif gpu.status != "Ready":
                if indices:
                    raise AutotuneError(f"GPU {gpu.cuda_index} ({gpu.name}) cannot be read by nvidia-smi: check it "
                                        f"or pick others (--devices)")
                print(f"autotune: warning: GPU {gpu.cuda_index} ({gpu.name}) cannot be read by nvidia-smi: left out",
                      file=sys.stderr, flush=True)
            else:
                usable.append(gpu)
        if not usable:
            states = ", ".join(f"GPU {g.cuda_index} {g.status}" for g in wanted) or "no GPUs"
            raise AutotuneError(f"no ready GPU ({states}): free one or pick others (--devices)")
        if indices and len({g.model for g in usable}) > 1:
            raise AutotuneError("--devices mixes GPU models (" + ", ".join(f"GPU {g.cuda_index}: {g.model}"
                                                                         for g in usable) +
                                "): an engine is specific to one; pick GPUs of one model")
        return [g for g in usable if g.model == usable[0].model]


def _device(gpu: Gpu) -> Device:
    return Device(index=gpu.cuda_index if gpu.cuda_index is not None else gpu.smi_index, name=gpu.name,
                  size=(gpu.memory_total_mib or 0) // 1024, status=gpu.status,
                  details={"compute_cap": gpu.compute_cap, "memory_used_mib": gpu.memory_used_mib,
                           "utilization_pct": gpu.utilization_pct, "nvidia_smi_index": gpu.smi_index,
                           "uuid": gpu.uuid})


def _python_runtime(where: str, *, emulated: bool) -> tuple[Any, str]:
    """TensorRT's Python runtime and a few words, unless ``where`` is off or the trtexec is the emulator's (its engines
    are no plans); (None, why not) otherwise."""
    if where == "off":
        return None, "TensorRT's Python runtime not used (--trt-runtime off)"
    if emulated:
        return None, "the emulated trtexec has no Python runtime"
    return find_runtime()


def _check_calib(calib: Path | None, major: int) -> Path | None:
    if calib is None:
        return None
    if major != 10:
        raise AutotuneError("--trt-calib: TensorRT 11 has no INT8 calibration (weak typing is gone): give a "
                            "calibration set instead (--accuracy-set or --calibration-set): int8 is then searched as "
                            "its QDQ model")
    if not calib.is_file():
        raise AutotuneError(f"--trt-calib {calib}: no such file (an INT8 calibration cache written by a calibrator)")
    return calib.resolve()
