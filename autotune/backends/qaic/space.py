"""The Cloud AI 100 search space: the candidate its knobs form, its knob table and the device's rules.

A candidate renders to the exact qaic-exec and qaic-runner arguments; its CM-style flag string parses back into one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from autotune.backends.qaic import precision as prec
from autotune.backends.qaic.flags import join_ints, read_flags
from autotune.errors import AutotuneError
from autotune.search_space import Candidate, Knob, Move, SearchSpace, scenario_batches

BATCH_SIZES = (1, 2, 4, 8, 16)
SET_SIZES = (1, 2, 4, 8, 10, 16)
DEFAULT_SET_SIZE = 10  # qaic-runner's own default
MAX_OLS = 8
# how a trial searches qaic-runner's knobs on its QPC, in order (chosen on the tuning surfaces: bench/RESULTS.md);
# activations start at floor(NSPs / cores) and step down only while nothing fits in memory
RUNTIME_MOVES = ("set_size+", "set_size-")


@dataclass(frozen=True, kw_only=True)
class QaicCandidate(Candidate):
    """One point of the search: compile knobs, runtime knobs and unsearched pass-through flags.

    ``ols`` and ``mos`` are None when the flag is not given (the compiler's default applies). ``precision`` and its
    int8 recipe (``precision.recipe_flags``) are None unless the study searches them (it has a calibration set).
    """

    cores: int
    ols: int | None = None
    mos: tuple[int, ...] | None = None
    sdp_clusters: tuple[int, ...] | None = None
    multicast_weights: bool = False
    batch_size: int = 1
    extra_flags: tuple[str, ...] = ()
    activations: int = 1
    set_size: int = 10
    precision: str | None = None
    calibration: str | None = None
    percentile: float | None = None
    schema_activations: str | None = None
    schema_constants: str | None = None
    channelwise: bool = False
    fp16_nodes: int = 0
    mxfp6: bool = False

    @property
    def concurrency(self) -> int:
        return self.activations

    def flag_string(self) -> str:
        """The per-scenario compile flags as a CM-style string (batch size excluded, as in CM presets), then the
        searched precision's."""
        return " ".join([*self.tuned_flags(), *prec.recipe_flags(self)])

    def tuned_flags(self) -> list[str]:
        """Compile flags of the searched knobs and pass-through flags, without batch size."""
        flags: list[str] = list(self.extra_flags)
        if self.sdp_clusters:
            flags.append("-sdp-cluster-sizes=" + join_ints(self.sdp_clusters))
        if self.multicast_weights:
            flags.append("-multicast-weights")
        flags.append(f"-aic-num-cores={self.cores}")
        if self.mos is not None:
            flags.append("-mos=" + join_ints(self.mos))
        if self.ols is not None:
            flags.append(f"-ols={self.ols}")
        return flags

    def compile_args(self, *, batch_symbol: str | None, node_file: str | None = None) -> list[str]:
        """Every qaic-exec argument this candidate decides, the batch through the model's ``batch_symbol`` (None: a
        model without one), the node-precision file at ``node_file``; the model, base flags, profile and output dir
        are added by the SDK."""
        b = self.batch_size
        symbol = [f"-onnx-define-symbol={batch_symbol},{b}"] if batch_symbol is not None else []
        recipe = [f"-node-precision-info={node_file}" if flag.startswith("-node-precision-info=") else flag
                  for flag in prec.recipe_flags(self)]
        return [*symbol, *self.tuned_flags(), *recipe, f"-stats-batchsize={b}"]

    def compile_key(self) -> tuple[Any, ...]:
        """Identity of the compiled artifact: equal keys share one QPC whatever the runtime knobs."""
        return (self.cores, self.ols, self.mos, self.sdp_clusters, self.multicast_weights, self.batch_size,
                tuple(sorted(self.extra_flags)), *prec.recipe_key(self))

    def to_dict(self) -> dict[str, Any]:
        """As stored; without a searched precision, without its (unused) recipe fields, as before it was searched."""
        data = Candidate.to_dict(self)
        return data if self.precision is not None else {k: v for k, v in data.items() if k not in prec.FIELD_FLAGS}

    def describe(self) -> str:
        """A short one-line view for progress output."""
        return (f"cores={self.cores} ols={self.ols} mos={','.join(map(str, self.mos or ()))} bs={self.batch_size} "
                f"mc={'on' if self.multicast_weights else 'off'} a={self.activations} S={self.set_size}"
                + prec.describe(self))

    @classmethod
    def from_flags(cls, flags: str, *, batch_size: int | None = None, activations: int = 1, set_size: int = 10,
                   batch_symbol: str | None = "batch_size", precision: bool = False) -> QaicCandidate:
        """Parse a CM-style qaic-exec flag string (``-onnx-define-symbol=<batch_symbol>,N`` sets the batch; with
        ``precision`` searched, its precision flags set the recipe); raises AutotuneError naming an unknown or
        malformed flag."""
        values = read_flags(flags, batch_symbol=batch_symbol, precision=precision)
        if "cores" not in values:
            raise AutotuneError("the flags do not set -aic-num-cores=N; every candidate needs a core count")
        if batch_size is not None:
            values["batch_size"] = batch_size
        return cls(activations=activations, set_size=set_size, **values)

    def with_runtime(self, *, activations: int, set_size: int) -> QaicCandidate:
        """The same compiled candidate with other runtime knobs."""
        return replace(self, activations=activations, set_size=set_size)


@dataclass(frozen=True, kw_only=True)
class DeviceLimits:
    """What the target device allows: its NSP count (free NSPs for activations)."""

    nsp_total: int
    nsp_free: int | None = None

    @property
    def nsp_available(self) -> int:
        return self.nsp_total if self.nsp_free is None else self.nsp_free


def violations(candidate: QaicCandidate, device: DeviceLimits) -> list[str]:
    """Every way the candidate breaks the device's rules, as readable reasons (empty when valid)."""
    c = candidate
    problems: list[str] = []
    if not 1 <= c.cores <= device.nsp_total:
        problems.append(f"-aic-num-cores={c.cores} is outside 1..{device.nsp_total} (the device has "
                        f"{device.nsp_total} NSPs)")
    if c.ols is not None and c.ols < 1:
        problems.append(f"-ols={c.ols} must be at least 1")
    clusters = c.sdp_clusters or (c.cores,)
    if c.sdp_clusters and sum(c.sdp_clusters) != c.cores:
        problems.append(f"-sdp-cluster-sizes={join_ints(c.sdp_clusters)} sums to {sum(c.sdp_clusters)}, "
                        f"not -aic-num-cores={c.cores}")
    if c.mos is not None:
        if len(c.mos) != len(clusters):
            problems.append(f"-mos={join_ints(c.mos)} needs one entry per SDP cluster ({len(clusters)})")
        else:
            for m, size in zip(c.mos, clusters):
                if not 1 <= m <= size:
                    problems.append(f"-mos entry {m} is outside 1..{size} (its cluster's cores)")
    if c.batch_size < 1:
        problems.append(f"batch size {c.batch_size} must be at least 1")
    if c.activations < 1:
        problems.append(f"activations {c.activations} must be at least 1")
    elif c.cores >= 1 and c.cores * c.activations > device.nsp_available:
        problems.append(f"{c.cores} cores x {c.activations} activations = {c.cores * c.activations} NSPs, "
                        f"more than the {device.nsp_available} available")
    if c.set_size < 1:
        problems.append(f"set size {c.set_size} must be at least 1")
    return problems


def filling_core_counts(nsp: int) -> list[int]:
    """The core counts whose floor(NSPs / cores) activations use every NSP: the divisors of the NSP count."""
    return [cores for cores in range(1, nsp + 1) if nsp % cores == 0]


def max_activations(cores: int, device: DeviceLimits) -> int:
    """How many instances of a ``cores``-core QPC fit on the device at once (MLPerf harness sizing)."""
    return max(1, device.nsp_available // cores)


def _two_clusters(values: dict[str, Any]) -> bool:
    """Whether drawn values split the cores into two SDP clusters: asked for, and an even count to halve."""
    return values["sdp_clusters"] == 2 and values["cores"] % 2 == 0


@dataclass(frozen=True, kw_only=True)
class QaicSpace(SearchSpace[QaicCandidate]):
    """The Cloud AI 100 search space of one study: device limits, scenario rules and the preset's fixed flags.
    ``batch_symbol`` is the model's (flag strings set the batch through it); None: the model has none, so batch 1
    only. ``moves`` names the steps of qaic-runner's knobs a trial takes on its QPC (``runtime_moves``).
    ``precision``: the precision and int8 recipe searched (a study with a calibration set), else None."""

    candidate_type = QaicCandidate
    device: DeviceLimits
    scenario: str
    extra_flags: tuple[str, ...] = ()
    batch_symbol: str | None = "batch_size"
    moves: tuple[str, ...] = RUNTIME_MOVES
    precision: prec.Offer | None = None

    @property
    def dynamic_batch(self) -> bool:
        return self.batch_symbol is not None

    def knobs(self) -> list[Knob]:
        """Fixed domains (as TPE needs): a mos past its cluster's cores, activations past floor(NSPs / cores) alias a
        valid candidate (``candidate`` clamps them). The second cluster's mos is drawn for two clusters only; a step
        of the batch scales mos with it; singlestream runs one activation at batch 1."""
        nsps = tuple(range(1, self.device.nsp_total + 1))
        knobs = [Knob(name="cores", values=nsps, draw="int", jumps=self._core_jumps),
                 Knob(name="ols", values=tuple(range(1, MAX_OLS + 1)), draw="int"),
                 Knob(name="sdp_clusters", values=(1, 2)), Knob(name="mos_0", values=nsps, draw="log"),
                 Knob(name="mos_1", values=nsps, draw="log", when=_two_clusters),
                 Knob(name="multicast_weights", values=(False, True)),
                 *(self.precision.knobs() if self.precision else [])]
        if self.scenario == "singlestream":
            return knobs
        batches = scenario_batches(BATCH_SIZES, self.scenario, dynamic_batch=self.dynamic_batch)
        return knobs + [Knob(name="batch_size", values=batches, coupled={"mos_0": 2.0, "mos_1": 2.0}),
                        Knob(name="activations", values=tuple(range(1, self.device.nsp_available + 1)),
                             compiled=False, draw="int"),
                        Knob(name="set_size", values=SET_SIZES, compiled=False)]

    def candidate(self, values: dict[str, Any]) -> QaicCandidate:
        """Two SDP clusters split an even core count in halves; with the runtime knobs searched, a trial starts at
        floor(NSPs / cores) activations and qaic-runner's default set size."""
        cores = values["cores"]
        sizes = (cores // 2, cores // 2) if _two_clusters(values) else (cores,)
        runtime = {"activations": 1, "set_size": 1}
        if self.scenario != "singlestream":
            most = max_activations(cores, self.device)
            runtime = {"activations": most, "set_size": DEFAULT_SET_SIZE} if self.search_runtime else \
                {"activations": min(values["activations"], most), "set_size": values["set_size"]}
        return QaicCandidate(cores=cores, ols=values["ols"], mos=tuple(min(values[f"mos_{i}"], size)
                                                                       for i, size in enumerate(sizes)),
                             sdp_clusters=sizes if len(sizes) > 1 else None,
                             multicast_weights=values["multicast_weights"], batch_size=values.get("batch_size", 1),
                             extra_flags=self.extra_flags, **runtime,
                             **{name: values[name] for name in prec.FIELD_FLAGS if name in values})

    def params_for(self, candidate: QaicCandidate) -> dict[str, Any]:
        """The ``suggest`` parameters closest to ``candidate`` (compiler defaults read as 1), for warm starts."""
        mos = candidate.mos or (1,)
        params: dict[str, Any] = {
            "cores": candidate.cores,
            "ols": candidate.ols or 1,
            "sdp_clusters": 2 if candidate.sdp_clusters and len(candidate.sdp_clusters) == 2 else 1,
            "multicast_weights": candidate.multicast_weights,
            **{f"mos_{i}": m for i, m in enumerate(mos)},
        }
        if self.scenario != "singlestream":
            params["batch_size"] = candidate.batch_size
            if not self.search_runtime:
                params |= {"activations": candidate.activations,
                           "set_size": candidate.set_size if candidate.set_size in SET_SIZES else DEFAULT_SET_SIZE}
        return params | self._recipe_params(candidate.to_dict())

    def _recipe_params(self, given: dict[str, Any]) -> dict[str, Any]:
        """The precision's ``suggest`` parameters as ``given`` (a candidate's fields, a step) sets them, in draw order;
        one drawn there but not given (a step just reached int8) takes the start recipe's value, else its first."""
        if self.precision is None:
            return {}
        start, drawn = self.precision.start_recipe(), {}
        for knob in self.precision.knobs():
            if knob.when is None or knob.when(drawn):
                value = given.get(knob.name)
                drawn[knob.name] = value if value in knob.values else start.get(knob.name, knob.values[0])
        return drawn

    def runtime_moves(self) -> list[Move[QaicCandidate]]:
        """The steps ``moves`` names, each again while it improves: ``activations-`` (one fewer), ``set_size+`` and
        ``set_size-`` (the next set size up or down)."""
        return [self._move(name) for name in self.moves]

    def fallback_move(self) -> Move[QaicCandidate]:
        """One activation fewer while nothing fits in memory."""
        return self._move("activations-")

    def _move(self, name: str) -> Move[QaicCandidate]:
        return Move(name, self.knob_table[name[:-1]].step(1 if name.endswith("+") else -1), repeat=True)

    def violations(self, candidate: QaicCandidate) -> list[str]:
        """Device constraints plus the scenario's rule (singlestream: one activation at batch 1)."""
        problems = violations(candidate, self.device)
        if self.scenario == "singlestream" and (candidate.batch_size != 1 or candidate.activations != 1):
            problems.append(f"singlestream runs one activation at batch 1, not {candidate.activations} at batch "
                            f"{candidate.batch_size}")
        elif not self.dynamic_batch and candidate.batch_size != 1:
            problems.append(f"batch {candidate.batch_size}: the model has no batch symbol, so batch 1 only")
        if candidate.precision is not None and self.precision is None:
            problems.append(f"precision {candidate.precision} is searched only with a calibration set (--accuracy-set "
                            f"or --calibration-set)")
        return problems + prec.recipe_problems(candidate)

    def starts(self) -> list[QaicCandidate]:
        """The Cloud AI SDK's rules of thumb: core counts that fill the card (floor(NSPs / cores) activations leave
        no NSP idle), at a moderate batch with mos at half the cores (a working set that fits VTCM for most models:
        the climbs raise the batch from there). With the precision searched, each at the start recipe (the model's
        built-in precision), and the first also at the other precision."""
        batches = scenario_batches(BATCH_SIZES, self.scenario, dynamic_batch=self.dynamic_batch)
        starts = []
        for cores in filling_core_counts(self.device.nsp_total):
            wanted = 1 if cores == 1 else 4
            params = {"cores": cores, "ols": 1 if cores == 1 else 2, "sdp_clusters": 1, "mos_0": max(1, cores // 2),
                      "multicast_weights": False, "batch_size": max((b for b in batches if b <= wanted),
                                                                    default=batches[0]),
                      "activations": max_activations(cores, self.device), "set_size": DEFAULT_SET_SIZE}
            starts.append(self.from_params(params | self._recipe_params({})))
        if self.precision is not None:
            first = self.params_for(starts[0])
            other = prec.FP16 if first["precision"] == prec.INT8 else prec.INT8
            starts.append(self.from_params(first | self._recipe_params({"precision": other})))
        return starts

    def neighbours(self, candidate: QaicCandidate) -> list[dict[str, Any]]:
        """One-knob steps, the core count's jumps and the batch's steps with mos scaled; a step to two SDP clusters
        starts the second cluster's mos at the first's."""
        params = self.params_for(candidate)
        params.setdefault("mos_1", params["mos_0"])
        if self.precision is None:
            return self.steps_from(params)
        return [{k: v for k, v in step.items() if k not in prec.FIELD_FLAGS} | self._recipe_params(step)
                for step in self.steps_from(params)]

    def _core_jumps(self, params: dict[str, Any]) -> set[int]:
        """Besides the next core count: the next and previous counts that fill the card, half and double (two SDP
        clusters need an even count: there it also steps by two)."""
        cores, filling = params["cores"], filling_core_counts(self.device.nsp_total)
        jumps = {cores * 2, cores // 2, max((c for c in filling if c < cores), default=cores),
                 min((c for c in filling if c > cores), default=cores)}
        jumps |= {cores - 2, cores + 2} if params["sdp_clusters"] == 2 else set()
        return jumps - {cores, cores - 1, cores + 1}

    def step_rank(self, params: dict[str, Any], step: dict[str, Any]) -> int:
        """The split into two SDP clusters first, then a larger batch (alone or with mos doubled), then the rest:
        the moves by which the hand-tuned ResNet-50 presets leave the SDK's rules of thumb (SDK-FACTS), and the
        order chosen on the bench's tuning surfaces (bench/RESULTS.md)."""
        if step.get("sdp_clusters", 1) > params.get("sdp_clusters", 1):
            return 0
        if step.get("batch_size", 1) > params.get("batch_size", 1):
            return 1
        return 2

    def lightest(self, candidate: QaicCandidate) -> QaicCandidate | None:
        """The same cores, ols and clusters (as the space spells them: two clusters are equal halves, a compiler
        default is 1) at the smallest batch with mos at each cluster's size: the least VTCM a core's working set can
        take (qaic-exec's remedy for a working set that does not fit, both ways at once)."""
        params = self.params_for(candidate)
        domains = self.domains()
        lightest = params | {name: domains[name][-1] for name in ("mos_0", "mos_1")}  # suggest clamps to the cluster
        if "batch_size" in domains:
            lightest["batch_size"] = domains["batch_size"][0]
        result = self.from_params(lightest)
        return None if self.params_for(result) == params else result

    def parse(self, text: str, *, options: Mapping[str, Any] | None = None) -> QaicCandidate:
        """A CM-style flag string; ``batch_size``, ``activations`` (default floor(free NSPs / cores), as MLPerf
        harnesses size it) and ``set_size`` come from ``options`` when given there. With the precision searched, its
        flags there set the recipe (the start recipe's where they give no precision)."""
        options = options or {}
        candidate = QaicCandidate.from_flags(text, batch_size=options.get("batch_size"), batch_symbol=self.batch_symbol,
                                             precision=self.precision is not None)
        if self.precision is not None and candidate.precision is None:
            candidate = replace(candidate, **self.precision.start_recipe())
        activations = options.get("activations") or max_activations(candidate.cores, self.device)
        return candidate.with_runtime(activations=activations, set_size=options.get("set_size") or DEFAULT_SET_SIZE)
