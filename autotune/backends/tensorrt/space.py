"""The TensorRT search space: build knobs drawn by the sampler (each needs a new engine), runtime knobs searched on
the built engine inside the trial, both spelled as trtexec flags of the contract the study runs under."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from autotune.backends import _int8
from autotune.backends.tensorrt.contract import CONTRACTS
from autotune.backends.tensorrt.flags import IMPLICIT_INT8, read_candidate_flags
from autotune.errors import AutotuneError
from autotune.search_space import Candidate, Knob, Move, SearchSpace, scenario_batches

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
WORKSPACES_MIB: tuple[int | None, ...] = (256, 1024, 4096, 16384, None)  # None: trtexec's default, all the memory
OPT_LEVELS = (0, 1, 2, 3, 4, 5)
TILING_LEVELS = (0, 1, 2, 3)
AUX_STREAMS: tuple[int | None, ...] = (None, 0, 1, 2, 4)  # None: TensorRT's heuristic
MAX_STREAMS = 4
FILE_PRECISION = "onnx"  # TensorRT 11: the precision the ONNX file carries
FP16 = "fp16"
PRECISIONS = {10: ("fp32", FP16), 11: (FILE_PRECISION, FP16)}  # then int8: the QDQ model, or 10's calibrator
DEFAULT_OPT_LEVEL = 3
STREAMS = Knob(name="streams", values=tuple(range(1, MAX_STREAMS + 1)), compiled=False)


@dataclass(frozen=True, kw_only=True)
class TrtCandidate(Candidate):
    """Build knobs (batch, precision, workspace, builder and tiling levels, auxiliary streams) and runtime knobs
    (inference streams, CUDA graph, spin wait) for the TensorRT major version ``contract``; ``None`` is trtexec's
    default. ``precision`` int8 builds the QDQ model of its recipe (``_int8``) under either contract, fp16 on 11.x the
    file converted to fp16; int8-calib is TensorRT 10's calibrator (``--int8 --calib``)."""

    contract: int = 10
    batch_size: int = 1
    precision: str = "fp32"
    calibration_method: str = "MinMax"
    per_channel: bool = False
    float_layers: int = 0
    workspace_mib: int | None = None
    opt_level: int = DEFAULT_OPT_LEVEL
    tiling_level: int = 0
    aux_streams: int | None = None
    streams: int = 1
    cuda_graph: bool = False
    spin_wait: bool = False

    @property
    def concurrency(self) -> int:
        return self.streams

    def compile_key(self) -> tuple[Any, ...]:
        return (self.contract, self.batch_size, self.precision, self.workspace_mib, self.opt_level,
                self.tiling_level, self.aux_streams, *_int8.recipe_key(self))

    def model_variant(self) -> str | None:
        """The ONNX file the engine is built from: ``int8`` (the QDQ model, either contract), ``fp16`` (the converted
        file, 11.x); None: the file as given."""
        if self.precision == _int8.INT8:
            return _int8.INT8
        return FP16 if self.precision == FP16 and self.contract != 10 else None

    def variant_flags(self) -> list[str]:
        """The model variant as flag-string settings: ``precision=int8`` and its recipe, ``precision=fp16`` (11.x)."""
        if self.precision == _int8.INT8:
            return _int8.recipe_flags(self)
        return [f"precision={FP16}"] if self.model_variant() == FP16 else []

    def build_flags(self) -> list[str]:
        """The trtexec build flags of the build knobs (the batch goes into the shapes, the variant into --onnx, int8's
        --calib is added by the backend); knobs at trtexec's default are left out. On 10.x int8 (either) takes
        ``--int8 --fp16``: int8 where the model or calibrator gives scales, fp16 where faster for the rest."""
        flags = {FP16: ["--fp16"], _int8.INT8: ["--int8", "--fp16"], IMPLICIT_INT8: ["--int8", "--fp16"]}.get(
            self.precision, []) if self.contract == 10 else []
        if self.workspace_mib is not None:
            flags.append(f"--memPoolSize=workspace:{self.workspace_mib}")
        if self.opt_level != DEFAULT_OPT_LEVEL:
            flags.append(f"--builderOptimizationLevel={self.opt_level}")
        if self.tiling_level:
            flags.append(f"--tilingOptimizationLevel={self.tiling_level}")
        if self.aux_streams is not None:
            flags.append(f"--maxAuxStreams={self.aux_streams}")
        return flags

    def runtime_flags(self) -> list[str]:
        """``--infStreams`` and the CUDA graph and spin wait switches, spelled for this contract."""
        streams = [f"--infStreams={self.streams}"] if self.streams != 1 else []
        contract = CONTRACTS[self.contract]
        return streams + contract.runtime_flags(cuda_graph=self.cuda_graph, spin_wait=self.spin_wait,
                                                transfers=contract.transfers_default)

    def flag_string(self) -> str:
        """The variant's settings, build then runtime flags, as ``TrtSpace.parse`` reads them back (the batch is
        given apart)."""
        return " ".join(self.variant_flags() + self.build_flags() + self.runtime_flags())

    def describe(self) -> str:
        precision = _int8.describe(self).strip() or self.precision
        return (f"bs={self.batch_size} {precision} ws={self.workspace_mib or 'dflt'} opt={self.opt_level} "
                f"tile={self.tiling_level} aux={'dflt' if self.aux_streams is None else self.aux_streams} "
                f"streams={self.streams} graph={int(self.cuda_graph)} spin={int(self.spin_wait)}")


@dataclass(frozen=True, kw_only=True)
class TrtSpace(SearchSpace[TrtCandidate]):
    """The knobs of one study under one contract: precision fp32 and fp16 (10.x flags), or the file as given and its
    fp16 conversion (11.x); ``int8``: a calibration set, so int8 as the QDQ model of a recipe drawn with it;
    ``calib``: TensorRT 10's calibration cache (int8-calib). ``extra_batches`` adds NVIDIA's harness batch."""

    candidate_type = TrtCandidate
    contract: int
    scenario: str
    dynamic_batch: bool = True
    int8: bool = False
    calib: bool = False
    extra_batches: tuple[int, ...] = ()

    def defaults(self) -> TrtCandidate:
        """trtexec's own defaults under this contract (precision fp32 on 10.x, the file's on 11.x)."""
        contract = CONTRACTS[self.contract]
        return TrtCandidate(contract=self.contract, precision=self.precisions()[0],
                            cuda_graph=contract.cuda_graph_default, spin_wait=contract.spin_wait_default)

    def precisions(self) -> tuple[str, ...]:
        calibrator = (IMPLICIT_INT8,) if self.calib and self.contract == 10 else ()
        return PRECISIONS[self.contract] + calibrator + ((_int8.INT8,) if self.int8 else ())

    def batches(self) -> list[int]:
        return list(scenario_batches({*BATCH_SIZES, *self.extra_batches}, self.scenario,
                                     dynamic_batch=self.dynamic_batch))

    def knobs(self) -> list[Knob]:
        """The build knobs (batch and precision where there is a choice), then the runtime knobs of the engine."""
        knobs = [knob for knob in (Knob(name="batch_size", values=tuple(self.batches())),
                                   Knob(name="precision", values=self.precisions())) if len(knob.values) > 1]
        knobs += [*(_int8.RECIPE_KNOBS if self.int8 else []),
                  Knob(name="workspace_mib", values=WORKSPACES_MIB),
                  Knob(name="opt_level", values=OPT_LEVELS, draw="int"),
                  Knob(name="tiling_level", values=TILING_LEVELS, draw="int"),
                  Knob(name="aux_streams", values=AUX_STREAMS)]
        streams = [STREAMS] if self.scenario != "singlestream" else []
        return knobs + [*streams, Knob(name="cuda_graph", values=(False, True), compiled=False),
                        Knob(name="spin_wait", values=(False, True), compiled=False)]

    def candidate(self, values: dict[str, Any]) -> TrtCandidate:
        return replace(self.defaults(), **values)

    def params_for(self, candidate: TrtCandidate) -> dict[str, Any]:
        """The ``suggest`` parameters of ``candidate``, its int8 recipe at int8 only."""
        return _int8.recipe_params(super().params_for(candidate))

    def neighbours(self, candidate: TrtCandidate) -> list[dict[str, Any]]:
        """One-knob steps; a step to int8 takes the default recipe, a step from it drops the recipe."""
        return [_int8.recipe_params(step) for step in super().neighbours(candidate)]

    def runtime_moves(self) -> list[Move[TrtCandidate]]:
        """From trtexec's runtime defaults: the CUDA graph switched, more streams while they help (not in
        singlestream), then the spin wait switched; a few measurements on one engine."""
        streams = [Move("streams+", STREAMS.step(1), repeat=True)] if self.scenario != "singlestream" else []
        return [Move("graph", lambda c: replace(c, cuda_graph=not c.cuda_graph)), *streams,
                Move("spin", lambda c: replace(c, spin_wait=not c.spin_wait))]

    def violations(self, candidate: TrtCandidate) -> list[str]:
        problems = []
        if candidate.contract != self.contract:
            problems.append(f"the candidate is spelled for TensorRT {candidate.contract}.x, the study runs "
                            f"{self.contract}.x")
        problems += self.precision_problems(candidate)
        if candidate.batch_size < 1 or candidate.streams < 1:
            problems.append("batch size and streams must be at least 1")
        if self.scenario == "singlestream" and (candidate.batch_size != 1 or candidate.streams != 1):
            problems.append(f"singlestream runs one stream at batch 1, not {candidate.streams} at batch "
                            f"{candidate.batch_size}")
        elif not self.dynamic_batch and candidate.batch_size != 1:
            problems.append(f"batch {candidate.batch_size}: the model has no batch symbol, so batch 1 only")
        if not 0 <= candidate.opt_level <= 5 or not 0 <= candidate.tiling_level <= 3:
            problems.append("--builderOptimizationLevel is 0..5 and --tilingOptimizationLevel 0..3")
        return problems

    def precision_problems(self, candidate: TrtCandidate) -> list[str]:
        """A precision this study does not offer, an int8 recipe that cannot be (``_int8.recipe_problems``)."""
        problems = _int8.recipe_problems(candidate, offered=self.int8)
        if candidate.precision not in self.precisions() and candidate.precision != _int8.INT8:
            extra = (" (--int8 without precision=int8 is TensorRT 10's calibrator: int8 needs --trt-calib FILE, an "
                     "INT8 calibration cache; a calibration set gives the QDQ model, precision=int8)"
                     if candidate.precision == IMPLICIT_INT8 else "")
            problems.append(f"precision {candidate.precision} is not available here{extra}: "
                            f"{', '.join(self.precisions())}")
        return problems

    def starts(self) -> list[TrtCandidate]:
        """NVIDIA's usual starting points: fp16 at a few batches, two streams and CUDA graphs; with a calibration set,
        the QDQ model's default recipe at the second of those batches."""
        base = replace(self.defaults(), precision=FP16, cuda_graph=True)
        batches = self.batches()
        starts = [replace(base, batch_size=b, streams=1 if self.scenario == "singlestream" else 2)
                  for b in dict.fromkeys(max(x for x in batches if x <= want) for want in (1, 8, 64))]
        int8 = [replace(starts[min(1, len(starts) - 1)], precision=_int8.INT8)] if self.int8 else []
        return starts[:1] + int8 + starts[1:]

    def lightest(self, candidate: TrtCandidate) -> TrtCandidate | None:
        """The same build at the smallest batch (a build's activation memory grows with it; the workspace is left
        as it is: a smaller one limits the tactics tried, not the engine's memory)."""
        lightest = replace(candidate, batch_size=self.batches()[0])
        return None if lightest == candidate else lightest

    def parse(self, text: str, *, options: Mapping[str, Any] | None = None) -> TrtCandidate:
        """trtexec build and runtime flags (``--fp16 --builderOptimizationLevel=4 --infStreams=2 ...``) in this
        contract's spelling, after the model variant's settings (``precision=int8 calibrate_method=Entropy ...``,
        ``precision=fp16``); knobs left out keep trtexec's defaults, ``options["batch_size"]`` sets the batch."""
        values = read_candidate_flags(text, contract=self.contract)
        if "precision" not in values:
            values["precision"] = self.precisions()[0]
        if options and options.get("batch_size"):
            values["batch_size"] = int(options["batch_size"])
        candidate = replace(self.defaults(), **values)
        problems = self.precision_problems(candidate)
        if problems:
            raise AutotuneError(f"refused: {problems[0]}")
        return candidate
