"""The qaic knobs as data, the Candidate they form, and the device constraints on it.

A Candidate renders to the exact qaic-exec and qaic-runner arguments, and a CM-style flag string such as
``-sdp-cluster-sizes=2,2 -multicast-weights -aic-num-cores=4 -mos=1,2 -ols=4`` parses back into one.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from autotune.backend import AutotuneError

Stage = Literal["compile", "runtime"]

BATCH_SIZES = (1, 2, 4, 8, 16)
SET_SIZES = (1, 2, 4, 8, 10, 16)
MAX_OLS = 8


@dataclass(frozen=True, kw_only=True)
class Knob:
    """One tunable setting: its name, how the tool spells it, when it applies and its domain."""

    name: str
    flag: str
    stage: Stage
    domain: str


KNOBS: tuple[Knob, ...] = (
    Knob(name="cores", flag="-aic-num-cores", stage="compile", domain="1..NSPs of the device"),
    Knob(name="ols", flag="-ols", stage="compile", domain=f"1..{MAX_OLS}"),
    Knob(name="mos", flag="-mos", stage="compile", domain="1..cores, or one value per SDP cluster"),
    Knob(name="sdp_clusters", flag="-sdp-cluster-sizes", stage="compile", domain="sizes summing to cores"),
    Knob(name="batch_size", flag="-onnx-define-symbol=batch_size", stage="compile", domain=str(BATCH_SIZES)),
    Knob(name="multicast_weights", flag="-multicast-weights", stage="compile", domain="on/off"),
    Knob(name="activations", flag="-a", stage="runtime", domain="1..floor(NSPs/cores)"),
    Knob(name="set_size", flag="-S", stage="runtime", domain=str(SET_SIZES)),
)

# qaic-exec flags a user may pass through unsearched, and the kind of value each takes.
PASS_THROUGH_FLAGS: dict[str, str] = {
    "-aic-num-of-instances": "int",
    "-aic-enable-depth-first": "bool",
    "-aic-depth-first-mem": "int",
    "-allocator-dealloc-delay": "int",
    "-size-split-granularity": "int",
    "-vtcm-working-set-limit-ratio": "float",
    "-use-producer-dma": "int",
    "-combine-inputs": "str",
    "-combine-outputs": "str",
    "-convert-to-fp16": "bool",
    "-mxfp6-matmul": "bool",
    "-aic-hw": "bool",
    "-aic-hw-version": "str",
    "-compile-only": "bool",
    "-enable-channelwise": "bool",
    "-node-precision-info": "str",
    "-quantization-schema": "str",
    "-quantization-schema-constants": "str",
    "-quantization-schema-activations": "str",
    "-quantization-calibration": "str",
    "-quantization-precision": "str",
    "-quantization-precision-bias": "str",
    "-execute-nodes-in-fp16": "str",
    "-output-node-name": "str",
    "-load-profile": "str",
    "-onnx-define-symbol": "str",
    "-vvv": "bool",
    "-v": "bool",
}
# Flags autotune sets itself; a user must not pass them in a flag string.
MANAGED_FLAGS = {"-m": "--onnx", "-model": "--onnx", "-aic-binary-dir": "the trial's work directory"}


@dataclass(frozen=True, kw_only=True)
class Candidate:
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

    def flag_string(self) -> str:
        """The per-scenario compile flags as a CM-style string (batch size excluded, as in CM presets)."""
        return " ".join(self.tuned_flags())

    def tuned_flags(self) -> list[str]:
        """Compile flags of the searched knobs and pass-through flags, without batch size."""
        flags: list[str] = list(self.extra_flags)
        if self.sdp_clusters:
            flags.append("-sdp-cluster-sizes=" + _join(self.sdp_clusters))
        if self.multicast_weights:
            flags.append("-multicast-weights")
        flags.append(f"-aic-num-cores={self.cores}")
        if self.mos is not None:
            flags.append("-mos=" + _join(self.mos))
        if self.ols is not None:
            flags.append(f"-ols={self.ols}")
        return flags

    def compile_args(self) -> list[str]:
        """Every qaic-exec argument this candidate decides (model, base flags and output dir are added by the backend)."""
        b = self.batch_size
        return [f"-onnx-define-symbol=batch_size,{b}", *self.tuned_flags(), f"-stats-batchsize={b}"]

    def runner_args(self) -> list[str]:
        """The qaic-runner arguments this candidate decides."""
        return ["-a", str(self.activations), "-S", str(self.set_size)]

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
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
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
    def from_flags(cls, flags: str, *, batch_size: int | None = None, activations: int = 1,
                   set_size: int = 10) -> Candidate:
        """Parse a CM-style qaic-exec flag string; raises AutotuneError naming an unknown or malformed flag."""
        values: dict[str, Any] = {"extra_flags": []}
        for token in split_flags(flags):
            _parse_token(token, values)
        if "cores" not in values:
            raise AutotuneError("the flags do not set -aic-num-cores=N; every candidate needs a core count")
        if batch_size is not None:
            values["batch_size"] = batch_size
        values["extra_flags"] = tuple(values["extra_flags"])
        return cls(activations=activations, set_size=set_size, **values)

    def with_runtime(self, *, activations: int, set_size: int) -> Candidate:
        """The same compiled candidate with other runtime knobs."""
        return replace(self, activations=activations, set_size=set_size)


@dataclass(frozen=True, kw_only=True)
class DeviceLimits:
    """What the target device allows: its NSP count (free NSPs for activations)."""

    nsp_total: int
    nsp_free: int | None = None
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def nsp_available(self) -> int:
        return self.nsp_total if self.nsp_free is None else self.nsp_free


def violations(candidate: Candidate, device: DeviceLimits) -> list[str]:
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
        problems.append(f"-sdp-cluster-sizes={_join(c.sdp_clusters)} sums to {sum(c.sdp_clusters)}, "
                        f"not -aic-num-cores={c.cores}")
    if c.mos is not None:
        if len(c.mos) != len(clusters):
            problems.append(f"-mos={_join(c.mos)} needs one entry per SDP cluster ({len(clusters)})")
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


def split_flags(flags: str) -> list[str]:
    """Shell-style split of a flag string; unbalanced quotes are a one-line error."""
    try:
        return shlex.split(flags)
    except ValueError as exc:
        raise AutotuneError(f"cannot read the flags {flags!r}: {exc}") from None


def check_base_flags(flags: str) -> tuple[str, ...]:
    """Extra base flags: only pass-through qaic-exec flags (no searched knob, no flag autotune sets itself)."""
    tokens = split_flags(flags)
    for token in tokens:
        values: dict[str, Any] = {"extra_flags": []}
        _parse_token(token, values)
        if not values["extra_flags"] or "batch_size," in token:
            raise AutotuneError(f"base flag {token!r} sets a searched knob; give it in --flags (bench) or let the "
                                f"search choose it (run)")
    return tuple(tokens)


def max_activations(cores: int, device: DeviceLimits) -> int:
    """How many instances of a ``cores``-core QPC fit on the device at once (MLPerf harness sizing)."""
    return max(1, device.nsp_available // cores)


def _join(values: tuple[int, ...]) -> str:
    return ",".join(str(v) for v in values)


def _parse_token(token: str, values: dict[str, Any]) -> None:
    if not token.startswith("-") or token.startswith("--"):
        raise AutotuneError(f"malformed flag {token!r}: qaic-exec flags look like -name or -name=value")
    name, has_value, raw = token.partition("=")
    if name in MANAGED_FLAGS:
        raise AutotuneError(f"flag {name} is set by autotune (use {MANAGED_FLAGS[name]}), remove it from the flags")
    try:
        if name == "-aic-num-cores":
            values["cores"] = _int(raw, token)
        elif name == "-ols":
            values["ols"] = _int(raw, token)
        elif name == "-mos":
            values["mos"] = _int_list(raw, token)
        elif name == "-sdp-cluster-sizes":
            values["sdp_clusters"] = _int_list(raw, token)
        elif name == "-multicast-weights":
            _no_value(has_value, token)
            values["multicast_weights"] = True
        elif name in ("-batchsize", "-stats-batchsize"):
            values["batch_size"] = _int(raw, token)
        elif name == "-onnx-define-symbol" and raw.startswith("batch_size,"):
            values["batch_size"] = _int(raw.split(",", 1)[1], token)
        elif name in PASS_THROUGH_FLAGS:
            kind = PASS_THROUGH_FLAGS[name]
            if kind == "bool":
                _no_value(has_value, token)
            elif not has_value or not raw:
                raise AutotuneError(f"malformed flag {token!r}: {name} needs a value ({name}=...)")
            elif kind == "int":
                _int(raw, token, minimum=0)
            elif kind == "float":
                _float(raw, token)
            values["extra_flags"].append(token)
        else:
            raise AutotuneError(f"unknown qaic-exec flag {name!r} in the flags (known: -aic-num-cores, -ols, -mos, "
                                f"-sdp-cluster-sizes, -multicast-weights, -batchsize and the SDK's pass-through flags)")
    except ValueError:
        raise AutotuneError(f"malformed flag {token!r}") from None


def _no_value(has_value: str, token: str) -> None:
    if has_value:
        raise AutotuneError(f"malformed flag {token!r}: it is a switch and takes no value")


def _int(raw: str, token: str, *, minimum: int = 1) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise AutotuneError(f"malformed flag {token!r}: expected an integer value") from None
    if value < minimum:
        raise AutotuneError(f"malformed flag {token!r}: the value must be at least {minimum}")
    return value


def _float(raw: str, token: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise AutotuneError(f"malformed flag {token!r}: expected a number") from None


def _int_list(raw: str, token: str) -> tuple[int, ...]:
    if not raw:
        raise AutotuneError(f"malformed flag {token!r}: expected a comma-separated list of integers")
    return tuple(_int(part, token) for part in raw.split(","))


def suggest(trial: Any, device: DeviceLimits, *, scenario: str, extra_flags: tuple[str, ...] = ()) -> Candidate:
    """Draw a candidate from an Optuna trial; every draw satisfies the device's constraints.

    Domains are fixed (as TPE needs); values past a dependent limit (mos above its cluster's cores,
    activations above floor(NSPs/cores)) are clamped to that limit, so they alias a valid candidate.
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
        batch_choices = [b for b in BATCH_SIZES if scenario != "multistream" or b <= 8]
        batch = trial.suggest_categorical("batch_size", batch_choices)
        activations = min(trial.suggest_int("activations", 1, device.nsp_available),
                          max_activations(cores, device))
        set_size = trial.suggest_categorical("set_size", list(SET_SIZES))
    return Candidate(cores=cores, ols=ols, mos=mos, sdp_clusters=sizes if len(sizes) > 1 else None,
                     multicast_weights=multicast, batch_size=batch, extra_flags=extra_flags,
                     activations=activations, set_size=set_size)


def params_for(candidate: Candidate, *, scenario: str) -> dict[str, Any]:
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
        params |= {"batch_size": candidate.batch_size, "activations": candidate.activations,
                   "set_size": candidate.set_size if candidate.set_size in SET_SIZES else 10}
    return params


def param_domains(device: DeviceLimits, *, scenario: str) -> dict[str, list[Any]]:
    """The ordered domain of every ``suggest`` parameter (for one-knob steps)."""
    domains: dict[str, list[Any]] = {
        "cores": list(range(1, device.nsp_total + 1)), "ols": list(range(1, MAX_OLS + 1)), "sdp_clusters": [1, 2],
        "mos_0": list(range(1, device.nsp_total + 1)), "mos_1": list(range(1, device.nsp_total + 1)),
        "multicast_weights": [False, True],
    }
    if scenario != "singlestream":
        domains |= {"batch_size": [b for b in BATCH_SIZES if scenario != "multistream" or b <= 8],
                    "activations": list(range(1, device.nsp_available + 1)), "set_size": list(SET_SIZES)}
    return domains


def neighbours(params: dict[str, Any], domains: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every parameter set one step away from ``params`` in one knob (a second cluster's mos included)."""
    current = ({"mos_1": params["mos_0"]} | params) if "mos_0" in params else params
    steps = []
    for name, domain in domains.items():
        if current.get(name) not in domain:
            continue
        i = domain.index(current[name])
        steps += [current | {name: domain[j]} for j in (i - 1, i + 1) if 0 <= j < len(domain)]
    return steps


@dataclass(frozen=True, kw_only=True)
class QaicSpace:
    """The Cloud AI 100 search space of one study: device limits, scenario rules and the preset's fixed flags."""

    device: DeviceLimits
    scenario: str
    extra_flags: tuple[str, ...] = ()

    def suggest(self, trial: Any) -> Candidate:
        return suggest(trial, self.device, scenario=self.scenario, extra_flags=self.extra_flags)

    def params_for(self, candidate: Candidate) -> dict[str, Any]:
        return params_for(candidate, scenario=self.scenario)

    def domains(self) -> dict[str, list[Any]]:
        return param_domains(self.device, scenario=self.scenario)

    def violations(self, candidate: Candidate) -> list[str]:
        """Device constraints plus the scenario's rule (singlestream: one activation at batch 1)."""
        problems = violations(candidate, self.device)
        if self.scenario == "singlestream" and (candidate.batch_size != 1 or candidate.activations != 1):
            problems.append(f"singlestream runs one activation at batch 1, not {candidate.activations} at batch "
                            f"{candidate.batch_size}")
        return problems

    def from_dict(self, data: dict[str, Any]) -> Candidate:
        return Candidate.from_dict(data)

