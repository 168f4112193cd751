"""The OpenVINO search space on this CPU: compile-time properties and the batch as a candidate, the requests in flight
searched on the compiled model, the CPU's rules, and flag strings in OpenVINO's own property names."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from autotune.backends import _int8
from autotune.backends.openvino.cpu import PRECISION_CAPABILITIES, OvCpu
from autotune.errors import AutotuneError
from autotune.search_space import Candidate, Knob, Move, SearchSpace, scenario_batches

HINTS = ("LATENCY", "THROUGHPUT", "none")  # none: no hint, NUM_STREAMS and INFERENCE_NUM_THREADS given instead
CORE_TYPES = ("ANY_CORE", "PCORE_ONLY", "ECORE_ONLY")
BATCH_SIZES = (1, 2, 4, 8, 16)
MAX_REQUEST_FACTOR = 4
# candidate field -> OpenVINO property name (flag strings and compile_model use these)
PROPERTIES = {"hint": "PERFORMANCE_HINT", "streams": "NUM_STREAMS", "threads": "INFERENCE_NUM_THREADS",
              "pinning": "ENABLE_CPU_PINNING", "hyper_threading": "ENABLE_HYPER_THREADING",
              "core_type": "SCHEDULING_CORE_TYPE", "precision": "INFERENCE_PRECISION_HINT"}
OWN = {"batch_size": "batch_size", "request_factor": "requests"}  # autotune's own settings, in flag strings
REQUESTS = Knob(name="request_factor", values=tuple(range(1, MAX_REQUEST_FACTOR + 1)), compiled=False)


@dataclass(frozen=True, kw_only=True)
class OvCandidate(Candidate):
    """OpenVINO compile-time properties (None: not set, OpenVINO decides) and the batch, compiled in; and the
    requests in flight, ``request_factor`` times the ``OPTIMAL_NUMBER_OF_INFER_REQUESTS`` of the compiled model.
    ``precision`` int8: the QDQ model of the int8 recipe (``_int8``), its float layers at f32."""

    hint: str = "none"
    streams: int | None = None
    threads: int | None = None
    pinning: bool | None = None
    hyper_threading: bool | None = None
    core_type: str | None = None
    precision: str | None = None
    calibration_method: str = "MinMax"
    per_channel: bool = False
    float_layers: int = 0
    batch_size: int = 1
    request_factor: int = 1

    @property
    def concurrency(self) -> int:
        """Requests in flight as far as known before compiling (a hint's streams are read back after compiling)."""
        return (self.streams or 1) * self.request_factor

    def properties(self) -> dict[str, str]:
        """The ``compile_model`` properties, by OpenVINO's names; knobs left None are not set."""
        props = {}
        for name, key in PROPERTIES.items():
            value = getattr(self, name)
            if value is None or (name == "hint" and value == "none"):
                continue
            value = "f32" if value == _int8.INT8 else value
            props[key] = ("YES" if value else "NO") if isinstance(value, bool) else str(value)
        return props

    def compile_key(self) -> tuple[Any, ...]:
        return tuple(sorted(self.properties().items())) + (("batch_size", self.batch_size), *_int8.recipe_key(self))

    def flag_string(self) -> str:
        """``PERFORMANCE_HINT=THROUGHPUT INFERENCE_PRECISION_HINT=f32 batch_size=4 requests=2x`` (what ``parse``
        reads), the int8 recipe after them at int8; ``PERFORMANCE_HINT=none`` stands for no hint."""
        props = self.properties()
        hint = [] if "PERFORMANCE_HINT" in props else ["PERFORMANCE_HINT=none"]
        return " ".join([*hint, *(f"{k}={v}" for k, v in props.items()), f"batch_size={self.batch_size}",
                         f"requests={self.request_factor}x", *_int8.recipe_flags(self)])

    def describe(self) -> str:
        layout = f"s={self.streams or 'dflt'} t={self.threads or 'dflt'}" if self.hint == "none" else self.hint
        pin = {None: "dflt", True: "on", False: "off"}[self.pinning]
        precision = _int8.describe(self).strip() or self.precision or "dflt-prec"
        return f"{layout} bs={self.batch_size} pin={pin} {precision} req={self.request_factor}x"


@dataclass(frozen=True, kw_only=True)
class OvSpace(SearchSpace[OvCandidate]):
    """The OpenVINO space on ``cpu``: knobs that do not apply to it (hyper-threading without SMT, core types on a
    CPU that is not hybrid, a precision its capabilities do not list) are not in it. Streams and threads are drawn
    only without a hint; the requests in flight are searched on the compiled model (one in singlestream). ``int8``:
    the model carries a calibration set, so precision int8 (its recipe drawn with it) is offered too."""

    candidate_type = OvCandidate
    cpu: OvCpu
    scenario: str
    dynamic_batch: bool = True
    int8: bool = False

    def knobs(self) -> list[Knob]:
        cores, bools = tuple(range(1, self.cpu.cores + 1)), (True, False)
        knobs = [Knob(name="hint", values=HINTS),
                 *(Knob(name=name, values=cores, draw="int", when=lambda v: v["hint"] == "none")
                   for name in ("threads", "streams")),
                 Knob(name="pinning", values=bools)]
        if self.cpu.smt:
            knobs.append(Knob(name="hyper_threading", values=bools))
        if self.cpu.hybrid:
            knobs.append(Knob(name="core_type", values=CORE_TYPES))
        if len(self.precisions) > 1:
            knobs.append(Knob(name="precision", values=self.precisions))
        if self.int8:
            knobs += _int8.RECIPE_KNOBS
        if self.scenario != "singlestream":
            batches = scenario_batches(BATCH_SIZES, self.scenario, dynamic_batch=self.dynamic_batch)
            knobs += [Knob(name="batch_size", values=batches), REQUESTS]
        return knobs

    def candidate(self, values: dict[str, Any]) -> OvCandidate:
        """At most one stream per thread, as OpenVINO itself allows; the CPU's first precision where not drawn."""
        layout = {"streams": min(values["threads"], values["streams"])} if "streams" in values else {}
        return OvCandidate(**({"precision": self.cpu.precisions[0]} | values | layout))

    def runtime_moves(self) -> list[Move[OvCandidate]]:
        """From OpenVINO's optimal number of requests, more while that helps, else fewer."""
        return [Move("requests+", REQUESTS.step(1), repeat=True), self.fallback_move()]

    def fallback_move(self) -> Move[OvCandidate]:
        """Fewer requests while nothing could run."""
        return Move("requests-", REQUESTS.step(-1))

    def params_for(self, candidate: OvCandidate) -> dict[str, Any]:
        """The ``suggest`` parameters of ``candidate``; a knob left to OpenVINO maps to OpenVINO's default."""
        c = candidate
        params: dict[str, Any] = {"hint": c.hint, "pinning": self.cpu.default_pinning if c.pinning is None
                                  else c.pinning, "hyper_threading": True if c.hyper_threading is None
                                  else c.hyper_threading, "core_type": c.core_type or "ANY_CORE",
                                  "precision": c.precision or self.cpu.default_precision, "batch_size": c.batch_size}
        if c.hint == "none":
            params |= {"threads": c.threads or self.cpu.cores, "streams": c.streams or 1}
        params |= {name: getattr(c, name) for name in _int8.RECIPE_DEFAULTS}
        return _int8.recipe_params({k: v for k, v in params.items() if k in self.domains()})

    @property
    def precisions(self) -> tuple[str, ...]:
        """The precisions searched: the CPU's, and int8 with a calibration set."""
        return (*self.cpu.precisions, *((_int8.INT8,) if self.int8 else ()))

    def violations(self, candidate: OvCandidate) -> list[str]:
        c, problems = candidate, self.cpu_problems(candidate)
        if c.hint not in HINTS:
            problems.append(f"PERFORMANCE_HINT={c.hint}: one of {', '.join(HINTS)}")
        if c.hint != "none" and (c.streams is not None or c.threads is not None):
            problems.append(f"NUM_STREAMS and INFERENCE_NUM_THREADS go with PERFORMANCE_HINT=none (the {c.hint} "
                            f"hint chooses them)")
        for name, value in (("NUM_STREAMS", c.streams), ("INFERENCE_NUM_THREADS", c.threads)):
            if value is not None and not 1 <= value <= self.cpu.cores:
                problems.append(f"{name}={value} is outside 1..{self.cpu.cores} (this CPU's cores)")
        if c.streams is not None and c.threads is not None and c.streams > c.threads:
            problems.append(f"NUM_STREAMS={c.streams} needs as many INFERENCE_NUM_THREADS, not {c.threads} (a stream "
                            f"runs on at least one thread)")
        if self.scenario == "singlestream" and (c.batch_size != 1 or c.request_factor != 1):
            problems.append(f"singlestream runs batch 1 with one request in flight, not batch {c.batch_size} with "
                            f"{c.request_factor}x the optimal requests")
        if not self.dynamic_batch and c.batch_size != 1:
            problems.append(f"batch {c.batch_size}: the model has no batch symbol, so batch 1 only")
        if not 1 <= c.request_factor <= MAX_REQUEST_FACTOR:
            problems.append(f"requests={c.request_factor}x is outside 1x..{MAX_REQUEST_FACTOR}x")
        return problems

    def cpu_problems(self, candidate: OvCandidate) -> list[str]:
        """The knobs of ``candidate`` this CPU does not have (a precision, hyper-threading, core types), and an int8
        recipe that cannot be (``_int8.recipe_problems``)."""
        cpu, c, problems = self.cpu, candidate, _int8.recipe_problems(candidate, offered=self.int8)
        if c.precision not in (None, _int8.INT8, *cpu.precisions):
            need = PRECISION_CAPABILITIES.get(c.precision, c.precision)
            problems.append(f"INFERENCE_PRECISION_HINT={c.precision}: {cpu.name} does not list {need} in its "
                            f"capabilities ({', '.join(cpu.capabilities)}); precisions here: "
                            f"{', '.join(cpu.precisions)}")
        if c.hyper_threading is not None and not cpu.smt:
            problems.append("ENABLE_HYPER_THREADING: this CPU runs one thread per core (no SMT)")
        if c.core_type is not None and (not cpu.hybrid or c.core_type not in CORE_TYPES):
            problems.append(f"SCHEDULING_CORE_TYPE={c.core_type}: " + (f"one of {', '.join(CORE_TYPES)}" if cpu.hybrid
                            else "this CPU has no performance and efficient cores to choose between"))
        return problems

    def starts(self) -> list[OvCandidate]:
        """OpenVINO's hints at larger batches, and one stream per core without a hint, at the first precision; the
        first of them at each other precision searched."""
        p, cores = self.cpu.precisions[0], self.cpu.cores
        if self.scenario == "singlestream":
            starts = [OvCandidate(hint="LATENCY", pinning=False, precision=p),
                      OvCandidate(hint="none", streams=1, threads=cores, pinning=True, precision=p)]
        else:
            batches = [OvCandidate(hint="THROUGHPUT", batch_size=b, pinning=True, precision=p) for b in (4, 8)] \
                if self.dynamic_batch else []
            starts = [*batches, OvCandidate(hint="none", streams=cores, threads=cores, pinning=True, precision=p)]
        return starts + [replace(starts[0], precision=other) for other in self.precisions[1:]]

    def neighbours(self, candidate: OvCandidate) -> list[dict[str, Any]]:
        """One-knob steps; a step from a hint to no hint sets streams and threads as the hint would (THROUGHPUT: a
        stream per core; LATENCY: one stream), a step to a hint drops them, fewer threads take fewer streams."""
        layout = {"threads": self.cpu.cores, "streams": self.cpu.cores if candidate.hint == "THROUGHPUT" else 1}
        steps = []
        for step in super().neighbours(candidate):
            if step["hint"] != "none":
                steps.append({k: v for k, v in step.items() if k not in layout})
                continue
            step = layout | step
            steps.append(step | {"streams": min(step["streams"], step["threads"])})  # a stream needs a thread
        return [_int8.recipe_params(step) for step in steps]

    def baseline(self) -> OvCandidate:
        """OpenVINO's own hint for the scenario, nothing else set, with its optimal number of requests."""
        return OvCandidate(hint=baseline_hint(self.scenario))

    def parse(self, text: str, *, options: Mapping[str, Any] | None = None) -> OvCandidate:
        """``PERFORMANCE_HINT=THROUGHPUT ENABLE_CPU_PINNING=NO batch_size=4 requests=2x`` (the form ``flag_string``
        writes; properties left out are not set, ``options["batch_size"]`` sets the batch). A knob this CPU does not
        have (a precision its capabilities do not list) is refused."""
        values = read_flags(text)
        if options and options.get("batch_size"):
            values["batch_size"] = options["batch_size"]
        candidate = OvCandidate(**values)
        problems = self.cpu_problems(candidate)
        if problems:
            raise AutotuneError(f"refused: {problems[0]}")
        return candidate


def baseline_hint(scenario: str) -> str:
    """OpenVINO's hint for an MLPerf scenario: THROUGHPUT for offline and server, LATENCY for the stream scenarios."""
    return "THROUGHPUT" if scenario in ("offline", "server") else "LATENCY"


def read_flags(text: str) -> dict[str, Any]:
    """The candidate fields a flag string sets; raises AutotuneError naming the token it cannot read."""
    names = {key: name for name, key in (PROPERTIES | OWN).items()}
    kinds = {f.name: f.type for f in fields(OvCandidate)}
    values: dict[str, Any] = {}
    int8 = False
    for token in text.split():
        key, sep, raw = token.partition("=")
        if key == "precision" and sep:
            if raw != _int8.INT8:
                raise AutotuneError(f"malformed setting {token!r}: precision=int8 (the others are "
                                    f"INFERENCE_PRECISION_HINT's)")
            int8 = True
        elif key in _int8.SPELLING.values() and sep:
            name, value = _int8.read_recipe_flag(key, raw, token)
            values[name] = value
        elif not sep or key not in names:
            known = [*names, "precision", *_int8.SPELLING.values()]
            raise AutotuneError(f"unknown OpenVINO setting {token!r} (known: {', '.join(known)}, each as NAME=VALUE)")
        else:
            values[names[key]] = _read(names[key], raw, kinds[names[key]], token)
    if int8 and values.get("precision", "f32") != "f32":
        raise AutotuneError(f"precision=int8 runs its float layers at INFERENCE_PRECISION_HINT=f32, not "
                            f"{values['precision']}")
    return values | ({"precision": _int8.INT8} if int8 else {})


def _read(name: str, raw: str, kind: str, token: str) -> Any:
    if name == "hint":
        if raw.upper() in HINTS or raw == "none":
            return raw if raw == "none" else raw.upper()
        raise AutotuneError(f"malformed setting {token!r}: PERFORMANCE_HINT is one of {', '.join(HINTS)}")
    if "bool" in kind:
        if raw.upper() not in ("YES", "NO"):
            raise AutotuneError(f"malformed setting {token!r}: expected YES or NO")
        return raw.upper() == "YES"
    if "str" in kind:
        return raw
    digits = raw[:-1] if name == "request_factor" and raw.endswith("x") else raw
    if name == "request_factor" and digits == raw:
        raise AutotuneError(f"malformed setting {token!r}: requests are a multiple of OpenVINO's optimal number "
                            f"of requests, e.g. requests=2x")
    try:
        value = int(digits)
    except ValueError:
        raise AutotuneError(f"malformed setting {token!r}: expected an integer") from None
    if value < 1:
        raise AutotuneError(f"malformed setting {token!r}: at least 1")
    return value
