"""The Cloud AI 100 search space: the candidate its knobs form, the device's rules, and Optuna suggestions.

A candidate renders to the exact qaic-exec and qaic-runner arguments; its CM-style flag string parses back into one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import optuna

from autotune.backends._runtime import Move, Once, StepSearch
from autotune.backends.base import RuntimeSearch, one_knob_steps
from autotune.backends.qaic.flags import join_ints, read_flags
from autotune.errors import AutotuneError

BATCH_SIZES = (1, 2, 4, 8, 16)
SET_SIZES = (1, 2, 4, 8, 10, 16)
DEFAULT_SET_SIZE = 10  # qaic-runner's own default
MAX_OLS = 8
# how a trial searches qaic-runner's knobs on its QPC, in order (chosen on the tuning surfaces: bench/RESULTS.md);
# activations start at floor(NSPs / cores) and step down only while nothing fits in memory
RUNTIME_MOVES = ("set_size+", "set_size-")


@dataclass(frozen=True, kw_only=True)
class QaicCandidate:
    """One point of the search: compile knobs, runtime knobs and unsearched pass-through flags.

    ``ols`` and ``mos`` are None when the flag is not given (the compiler's default applies).
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

    @property
    def concurrency(self) -> int:
        return self.activations

    def flag_string(self) -> str:
        """The per-scenario compile flags as a CM-style string (batch size excluded, as in CM presets)."""
        return " ".join(self.tuned_flags())

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

    def compile_args(self, *, batch_symbol: str | None) -> list[str]:
        """Every qaic-exec argument this candidate decides, the batch through the model's ``batch_symbol`` (None: a
        model without one); the model, base flags and output dir are added by the SDK."""
        b = self.batch_size
        symbol = [f"-onnx-define-symbol={batch_symbol},{b}"] if batch_symbol is not None else []
        return [*symbol, *self.tuned_flags(), f"-stats-batchsize={b}"]

    def compile_key(self) -> tuple[Any, ...]:
        """Identity of the compiled artifact: equal keys share one QPC whatever the runtime knobs."""
        return (self.cores, self.ols, self.mos, self.sdp_clusters, self.multicast_weights, self.batch_size,
                tuple(sorted(self.extra_flags)))

    def describe(self) -> str:
        """A short one-line view for progress output."""
        return (f"cores={self.cores} ols={self.ols} mos={','.join(map(str, self.mos or ()))} bs={self.batch_size} "
                f"mc={'on' if self.multicast_weights else 'off'} a={self.activations} S={self.set_size}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form (lists for tuples)."""
        return {
            "cores": self.cores,
            "ols": self.ols,
            "mos": list(self.mos) if self.mos is not None else None,
            "sdp_clusters": list(self.sdp_clusters) if self.sdp_clusters else None,
            "multicast_weights": self.multicast_weights,
            "batch_size": self.batch_size,
            "extra_flags": list(self.extra_flags),
            "activations": self.activations,
            "set_size": self.set_size,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QaicCandidate:
        """Inverse of ``to_dict``."""
        return cls(
            cores=int(data["cores"]),
            ols=data.get("ols"),
            mos=tuple(data["mos"]) if data.get("mos") is not None else None,
            sdp_clusters=tuple(data["sdp_clusters"]) if data.get("sdp_clusters") else None,
            multicast_weights=bool(data.get("multicast_weights", False)),
            batch_size=int(data.get("batch_size", 1)),
            extra_flags=tuple(data.get("extra_flags", ())),
            activations=int(data.get("activations", 1)),
            set_size=int(data.get("set_size", 10)),
        )

    @classmethod
    def from_flags(cls, flags: str, *, batch_size: int | None = None, activations: int = 1, set_size: int = 10,
                   batch_symbol: str | None = "batch_size") -> QaicCandidate:
        """Parse a CM-style qaic-exec flag string (``-onnx-define-symbol=<batch_symbol>,N`` sets the batch); raises
        AutotuneError naming an unknown or malformed flag."""
        values = read_flags(flags, batch_symbol=batch_symbol)
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


def batch_sizes(scenario: str, *, dynamic_batch: bool = True) -> list[int]:
    """The batch sizes searched: none in singlestream, up to 8 in multistream, 1 for a model without a batch."""
    if scenario == "singlestream":
        return []
    return [b for b in BATCH_SIZES if scenario != "multistream" or b <= 8] if dynamic_batch else [1]


def suggest(trial: Any, device: DeviceLimits, *, scenario: str, extra_flags: tuple[str, ...] = (),
            search_runtime: bool = True, dynamic_batch: bool = True) -> QaicCandidate:
    """Draw a candidate from an Optuna trial; every draw satisfies the device's constraints.

    Domains are fixed (as TPE needs); values past a dependent limit (mos above its cluster's cores,
    activations above floor(NSPs/cores)) are clamped to that limit, so they alias a valid candidate. With
    ``search_runtime`` the trial draws compile knobs only: activations start at floor(NSPs/cores) and the set size at
    qaic-runner's default, and the trial's runtime search takes them from there.
    """
    cores = trial.suggest_int("cores", 1, device.nsp_total)
    ols = trial.suggest_int("ols", 1, MAX_OLS)
    clusters = trial.suggest_categorical("sdp_clusters", [1, 2])
    sizes = (cores // 2, cores // 2) if clusters == 2 and cores % 2 == 0 else (cores,)
    mos = tuple(min(trial.suggest_int(f"mos_{i}", 1, device.nsp_total, log=True), size)
                for i, size in enumerate(sizes))
    multicast = trial.suggest_categorical("multicast_weights", [False, True])
    if scenario == "singlestream":
        batch, activations, set_size = 1, 1, 1
    else:
        batch = trial.suggest_categorical("batch_size", batch_sizes(scenario, dynamic_batch=dynamic_batch))
        if search_runtime:
            activations, set_size = max_activations(cores, device), DEFAULT_SET_SIZE
        else:
            activations = min(trial.suggest_int("activations", 1, device.nsp_available),
                              max_activations(cores, device))
            set_size = trial.suggest_categorical("set_size", list(SET_SIZES))
    return QaicCandidate(cores=cores, ols=ols, mos=mos, sdp_clusters=sizes if len(sizes) > 1 else None,
                         multicast_weights=multicast, batch_size=batch, extra_flags=extra_flags,
                         activations=activations, set_size=set_size)


def params_for(candidate: QaicCandidate, *, scenario: str, search_runtime: bool = True) -> dict[str, Any]:
    """The ``suggest`` parameters closest to ``candidate`` (compiler defaults read as 1), for warm starts."""
    mos = candidate.mos or (1,)
    params: dict[str, Any] = {
        "cores": candidate.cores,
        "ols": candidate.ols or 1,
        "sdp_clusters": 2 if candidate.sdp_clusters and len(candidate.sdp_clusters) == 2 else 1,
        "multicast_weights": candidate.multicast_weights,
        **{f"mos_{i}": m for i, m in enumerate(mos)},
    }
    if scenario != "singlestream":
        params["batch_size"] = candidate.batch_size
        if not search_runtime:
            params |= {"activations": candidate.activations,
                       "set_size": candidate.set_size if candidate.set_size in SET_SIZES else DEFAULT_SET_SIZE}
    return params


def param_domains(device: DeviceLimits, *, scenario: str, search_runtime: bool = True,
                  dynamic_batch: bool = True) -> dict[str, list[Any]]:
    """The ordered domain of every ``suggest`` parameter (for one-knob steps)."""
    domains: dict[str, list[Any]] = {
        "cores": list(range(1, device.nsp_total + 1)), "ols": list(range(1, MAX_OLS + 1)), "sdp_clusters": [1, 2],
        "mos_0": list(range(1, device.nsp_total + 1)), "mos_1": list(range(1, device.nsp_total + 1)),
        "multicast_weights": [False, True],
    }
    if scenario != "singlestream":
        domains["batch_size"] = batch_sizes(scenario, dynamic_batch=dynamic_batch)
        if not search_runtime:
            domains |= {"activations": list(range(1, device.nsp_available + 1)), "set_size": list(SET_SIZES)}
    return domains


def runtime_moves(names: tuple[str, ...]) -> list[Move[QaicCandidate]]:
    """The named steps of qaic-runner's knobs: ``activations-`` (one fewer, again while it improves; also the way
    down when nothing fits), ``set_size+`` and ``set_size-`` (the next set size up or down)."""
    def fewer(c: QaicCandidate) -> QaicCandidate | None:
        return c.with_runtime(activations=c.activations - 1, set_size=c.set_size) if c.activations > 1 else None

    def set_size(offset: int) -> Any:
        def step(c: QaicCandidate) -> QaicCandidate | None:
            i = SET_SIZES.index(c.set_size) + offset if c.set_size in SET_SIZES else -1
            return c.with_runtime(activations=c.activations, set_size=SET_SIZES[i]) if 0 <= i < len(SET_SIZES) \
                else None
        return step
    moves = {"activations-": Move("activations-", fewer, repeat=True),
             "set_size+": Move("set_size+", set_size(1), repeat=True),
             "set_size-": Move("set_size-", set_size(-1), repeat=True)}
    return [moves[name] for name in names]


@dataclass(frozen=True, kw_only=True)
class QaicSpace:
    """The Cloud AI 100 search space of one study: device limits, scenario rules and the preset's fixed flags.
    ``batch_symbol`` is the model's (flag strings set the batch through it); None: the model has none, so batch 1
    only."""

    device: DeviceLimits
    scenario: str
    extra_flags: tuple[str, ...] = ()
    batch_symbol: str | None = "batch_size"
    search_runtime: bool = True  # False: the sampler draws activations and set size too, as in round 1
    moves: tuple[str, ...] = RUNTIME_MOVES

    @property
    def dynamic_batch(self) -> bool:
        return self.batch_symbol is not None

    def suggest(self, trial: Any) -> QaicCandidate:
        return suggest(trial, self.device, scenario=self.scenario, extra_flags=self.extra_flags,
                       search_runtime=self.search_runtime, dynamic_batch=self.dynamic_batch)

    def runtime_search(self, candidate: QaicCandidate) -> RuntimeSearch:
        if self.scenario == "singlestream" or not self.search_runtime:
            return Once(candidate)
        fewer = runtime_moves(("activations-",))[0]
        return StepSearch(candidate, runtime_moves(self.moves), fallback=fewer)

    def params_for(self, candidate: QaicCandidate) -> dict[str, Any]:
        return params_for(candidate, scenario=self.scenario, search_runtime=self.search_runtime)

    def domains(self) -> dict[str, list[Any]]:
        return param_domains(self.device, scenario=self.scenario, search_runtime=self.search_runtime,
                             dynamic_batch=self.dynamic_batch)

    def violations(self, candidate: QaicCandidate) -> list[str]:
        """Device constraints plus the scenario's rule (singlestream: one activation at batch 1)."""
        problems = violations(candidate, self.device)
        if self.scenario == "singlestream" and (candidate.batch_size != 1 or candidate.activations != 1):
            problems.append(f"singlestream runs one activation at batch 1, not {candidate.activations} at batch "
                            f"{candidate.batch_size}")
        elif not self.dynamic_batch and candidate.batch_size != 1:
            problems.append(f"batch {candidate.batch_size}: the model has no batch symbol, so batch 1 only")
        return problems

    def starts(self) -> list[QaicCandidate]:
        """The Cloud AI SDK's rules of thumb: core counts that fill the card (floor(NSPs / cores) activations leave
        no NSP idle), at a moderate batch with mos at half the cores (a working set that fits VTCM for most models:
        the climbs raise the batch from there)."""
        batches = batch_sizes(self.scenario, dynamic_batch=self.dynamic_batch) or [1]
        starts = []
        for cores in filling_core_counts(self.device.nsp_total):
            wanted = 1 if cores == 1 else 4
            params = {"cores": cores, "ols": 1 if cores == 1 else 2, "sdp_clusters": 1, "mos_0": max(1, cores // 2),
                      "multicast_weights": False, "batch_size": max((b for b in batches if b <= wanted),
                                                                    default=batches[0]),
                      "activations": max_activations(cores, self.device), "set_size": DEFAULT_SET_SIZE}
            starts.append(self.suggest(optuna.trial.FixedTrial(params)))
        return starts

    def neighbours(self, candidate: QaicCandidate) -> list[dict[str, Any]]:
        """One-knob steps, and for the core count also the next and previous counts that fill the card, half and
        double (two SDP clusters need an even count: there it also steps by two); a step to two SDP clusters starts
        the second cluster's mos at the first's."""
        params = self.params_for(candidate)
        params.setdefault("mos_1", params["mos_0"])
        steps = one_knob_steps(params, self.domains())
        cores, domain = params["cores"], self.domains()["cores"]
        filling = filling_core_counts(self.device.nsp_total)
        jumps = {cores * 2, cores // 2, max((c for c in filling if c < cores), default=cores),
                 min((c for c in filling if c > cores), default=cores)}
        jumps |= {cores - 2, cores + 2} if params["sdp_clusters"] == 2 else set()
        steps += [params | {"cores": c} for c in sorted(jumps - {cores, cores - 1, cores + 1}) if c in domain]
        return steps + self._working_set_steps(params)

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
        result = self.suggest(optuna.trial.FixedTrial(lightest))
        return None if self.params_for(result) == params else result

    def _working_set_steps(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Moves that keep the VTCM working set per core (weights + activations x batch, over mos) about the same:
        a larger batch with mos doubled, a smaller one with mos halved, as qaic-exec's VTCM error advises."""
        domains = self.domains()
        batches, mos_domain = domains.get("batch_size", []), domains["mos_0"]
        if params.get("batch_size") not in batches:
            return []
        i = batches.index(params["batch_size"])
        steps = []
        for j, scale in ((i + 1, 2.0), (i - 1, 0.5)):
            if 0 <= j < len(batches):
                mos = {k: min(max(mos_domain[0], round(v * scale)), mos_domain[-1]) for k, v in params.items()
                       if k.startswith("mos_")}
                if mos != {k: v for k, v in params.items() if k.startswith("mos_")}:
                    steps.append(params | mos | {"batch_size": batches[j]})
        return steps

    def from_dict(self, data: dict[str, Any]) -> QaicCandidate:
        return QaicCandidate.from_dict(data)

    def parse(self, text: str, *, options: Mapping[str, Any] | None = None) -> QaicCandidate:
        """A CM-style flag string; ``batch_size``, ``activations`` (default floor(free NSPs / cores), as MLPerf
        harnesses size it) and ``set_size`` come from ``options`` when given there."""
        options = options or {}
        candidate = QaicCandidate.from_flags(text, batch_size=options.get("batch_size"), batch_symbol=self.batch_symbol)
        activations = options.get("activations") or max_activations(candidate.cores, self.device)
        return candidate.with_runtime(activations=activations, set_size=options.get("set_size") or DEFAULT_SET_SIZE)
