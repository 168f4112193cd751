"""The ONNX Runtime search space on the host's cores: session settings as a candidate, and its rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from autotune.backends import _int8
from autotune.errors import AutotuneError
from autotune.search_space import Candidate, Knob, Move, SearchSpace, scenario_batches

GRAPH_LEVELS = ("disable", "basic", "extended", "all")
EXECUTION_MODES = ("sequential", "parallel")
PRECISIONS = ("fp32", _int8.INT8)
QUANTIZED_LEVELS = ("extended", "all")  # the QDQ fusions are level-2 transformers: int8 runs at these only
BATCH_SIZES = (1, 2, 4, 8, 16)
# how flag_string spells each knob (what a user sets in SessionOptions), and back
SPELLING = {"graph_level": "graph_optimization_level", "batch_size": "batch_size",
            "intra_threads": "intra_op_num_threads", "inter_threads": "inter_op_num_threads",
            "execution_mode": "execution_mode", "spinning": "allow_spinning", "instances": "instances",
            "precision": "precision"} | _int8.SPELLING


@dataclass(frozen=True, kw_only=True)
class OrtCandidate(Candidate):
    """ONNX Runtime knobs: graph level, precision (the int8 recipe with it) and batch are compiled in; the rest are
    runtime settings (0 threads: the runtime's default)."""

    graph_level: str = "all"
    precision: str = "fp32"
    calibration_method: str = "MinMax"
    per_channel: bool = False
    float_layers: int = 0
    batch_size: int = 1
    intra_threads: int = 0
    inter_threads: int = 0
    execution_mode: str = "sequential"
    spinning: bool = True
    instances: int = 1

    @property
    def concurrency(self) -> int:
        return self.instances

    def compile_key(self) -> tuple[Any, ...]:
        return (self.graph_level, self.batch_size, *_int8.recipe_key(self))

    def flag_string(self) -> str:
        """The session settings as one line (what a user sets in SessionOptions), and the int8 recipe at int8."""
        session = [f"{SPELLING[name]}={_spell(name, value)}" for name, value in self.to_dict().items()
                   if name != "precision" and name not in _int8.SPELLING]
        return " ".join([*session[:1], *_int8.recipe_flags(self), *session[1:]])

    def describe(self) -> str:
        return (f"opt={self.graph_level} bs={self.batch_size} intra={self.intra_threads or 'dflt'} "
                f"inter={self.inter_threads or 'dflt'} {self.execution_mode[:3]} spin={int(self.spinning)} "
                f"inst={self.instances}{_int8.describe(self)}")


@dataclass(frozen=True, kw_only=True)
class OrtSpace(SearchSpace[OrtCandidate]):
    """The ONNX Runtime search space on ``cores`` CPU cores; the untuned default session is the baseline.

    Graph level and batch are compiled into the optimised model; the session settings need no rebuild, so a trial
    searches them on its model, from ONNX Runtime's defaults. ``dynamic_batch`` False: the model has no batch symbol,
    so batch 1 only. ``int8``: the model carries a calibration set, so precision int8 (its recipe drawn with it) is
    offered beside fp32.
    """

    candidate_type = OrtCandidate
    cores: int
    scenario: str
    dynamic_batch: bool = True
    int8: bool = False

    def knobs(self) -> list[Knob]:
        threads = tuple(range(1, self.cores + 1))
        precision = [Knob(name="precision", values=PRECISIONS), *_int8.RECIPE_KNOBS] if self.int8 else []
        knobs = [Knob(name="graph_level", values=GRAPH_LEVELS), *precision,
                 Knob(name="intra_threads", values=threads, compiled=False, draw="int"),
                 Knob(name="inter_threads", values=threads, compiled=False, draw="int"),
                 Knob(name="execution_mode", values=EXECUTION_MODES, compiled=False),
                 Knob(name="spinning", values=(True, False), compiled=False)]
        if self.scenario != "singlestream":
            batches = scenario_batches(BATCH_SIZES, self.scenario, dynamic_batch=self.dynamic_batch)
            knobs += [Knob(name="batch_size", values=batches),
                      Knob(name="instances", values=threads, compiled=False, draw="int")]
        return knobs

    def candidate(self, values: dict[str, Any]) -> OrtCandidate:
        """int8 drawn below graph level extended is compiled at extended: the search never measures it lower."""
        if values.get("precision") == _int8.INT8 and values["graph_level"] not in QUANTIZED_LEVELS:
            values = values | {"graph_level": QUANTIZED_LEVELS[0]}
        return OrtCandidate(**values)

    def runtime_moves(self) -> list[Move[OrtCandidate]]:
        """From the defaults: more sessions (each with a share of the cores) while that helps, then no spinning."""
        sessions = [Move("sessions+", self._more_sessions, repeat=True)] if self.scenario != "singlestream" else []
        return [*sessions, Move("spinning-", lambda c: replace(c, spinning=False) if c.spinning else None)]

    def _more_sessions(self, c: OrtCandidate) -> OrtCandidate | None:
        if c.instances >= self.cores:
            return None
        instances = c.instances + 1
        return replace(c, instances=instances, intra_threads=max(1, self.cores // instances), inter_threads=1)

    def params_for(self, candidate: OrtCandidate) -> dict[str, Any]:
        """Threads at the runtime's default (0) read as all the cores for one intra-op pool, one inter-op thread."""
        data = candidate.to_dict() | {"intra_threads": candidate.intra_threads or self.cores,
                                      "inter_threads": candidate.inter_threads or 1}
        return _int8.recipe_params({k: v for k, v in data.items() if k in self.domains()})

    def neighbours(self, candidate: OrtCandidate) -> list[dict[str, Any]]:
        """One-knob steps; a step to int8 takes the default recipe, and none takes int8 below graph level extended."""
        steps = [_int8.recipe_params(step) for step in super().neighbours(candidate)]
        return [s for s in steps if s.get("precision") != _int8.INT8 or s["graph_level"] in QUANTIZED_LEVELS]

    def violations(self, candidate: OrtCandidate) -> list[str]:
        c = candidate
        problems = self.precision_problems(c)
        if c.precision == _int8.INT8 and c.graph_level not in QUANTIZED_LEVELS:
            problems.append(f"precision int8 runs at graph_optimization_level {' or '.join(QUANTIZED_LEVELS)} (the "
                            f"QDQ fusions), not {c.graph_level}")
        if self.scenario == "singlestream" and (c.batch_size != 1 or c.instances != 1):
            problems.append(f"singlestream runs one session at batch 1, not {c.instances} at batch {c.batch_size}")
        if not self.dynamic_batch and c.batch_size != 1:
            problems.append(f"batch {c.batch_size}: the model has no batch symbol, so batch 1 only")
        return problems

    def precision_problems(self, candidate: OrtCandidate) -> list[str]:
        """A precision ONNX Runtime does not run here, an int8 recipe that cannot be (``_int8.recipe_problems``)."""
        known = [] if candidate.precision in PRECISIONS else [f"precision={candidate.precision}: one of "
                                                               f"{', '.join(PRECISIONS)}"]
        return known + _int8.recipe_problems(candidate, offered=self.int8)

    def starts(self) -> list[OrtCandidate]:
        """ONNX Runtime's defaults at larger batches, and without graph optimisation; with int8 offered, the default
        recipe at the largest of those batches."""
        single = self.scenario == "singlestream"
        batches = [OrtCandidate(batch_size=4), OrtCandidate(batch_size=8)] if self.dynamic_batch and not single else []
        int8 = [OrtCandidate(precision=_int8.INT8, batch_size=8 if batches else 1)] if self.int8 else []
        if single:
            return [OrtCandidate(graph_level="extended"), OrtCandidate(graph_level="basic"), *int8]
        return [*batches, OrtCandidate(graph_level="extended"), *int8]

    def baseline(self) -> OrtCandidate:
        """ONNX Runtime's default session settings: what a user gets without tuning."""
        return OrtCandidate()

    def parse(self, text: str, *, options: Mapping[str, Any] | None = None) -> OrtCandidate:
        """``graph_optimization_level=all intra_op_num_threads=2 ...`` (the form ``flag_string`` writes); settings
        left out keep ONNX Runtime's defaults, and ``options["batch_size"]`` sets the batch. An int8 recipe is
        refused without a calibration set."""
        names = {spelled: name for name, spelled in SPELLING.items()}
        types = {f.name: f.type for f in fields(OrtCandidate)}
        values: dict[str, Any] = {}
        for token in text.split():
            key, sep, raw = token.partition("=")
            if not sep or key not in names:
                raise AutotuneError(f"unknown ONNX Runtime setting {token!r} (known: {', '.join(SPELLING.values())},"
                                    f" each as NAME=VALUE)")
            values[names[key]] = _read(names[key], raw, types[names[key]], token)
        if options and options.get("batch_size"):
            values["batch_size"] = options["batch_size"]
        candidate = OrtCandidate(**values)
        if candidate.graph_level not in GRAPH_LEVELS or candidate.execution_mode not in EXECUTION_MODES:
            raise AutotuneError(f"graph_optimization_level must be one of {', '.join(GRAPH_LEVELS)} and "
                                f"execution_mode one of {', '.join(EXECUTION_MODES)}")
        problems = self.precision_problems(candidate)
        if problems:
            raise AutotuneError(f"refused: {problems[0]}")
        return candidate


def _spell(name: str, value: Any) -> str:
    if name.endswith("threads") and value == 0:
        return "default"
    return str(int(value)) if isinstance(value, bool) else str(value)


def _read(name: str, raw: str, kind: str, token: str) -> Any:
    if kind == "str":
        return raw
    if name.endswith("threads") and raw == "default":
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise AutotuneError(f"malformed setting {token!r}: expected an integer") from None
    if value < 0 or (kind == "bool" and value > 1):
        raise AutotuneError(f"malformed setting {token!r}: out of range")
    return bool(value) if kind == "bool" else value
