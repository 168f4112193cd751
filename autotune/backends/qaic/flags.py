"""qaic-exec flag strings, as CM presets and users write them: which flags exist, which autotune sets itself, and
how a string such as ``-sdp-cluster-sizes=2,2 -multicast-weights -aic-num-cores=4 -mos=1,2 -ols=4`` reads (where the
precision is searched, its precision flags read into the candidate's recipe: ``precision.read_recipe_flag``)."""

from __future__ import annotations

import shlex
from typing import Any

from autotune.backends.qaic.precision import PRECISION_FLAGS, read_recipe_flag
from autotune.errors import AutotuneError

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
    "-percentile-calibration-value": "float",
    "-num-histogram-bins": "int",
    "-enable-rowwise": "bool",
    "-keep-original-precision-for-nodes": "str",
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
MANAGED_FLAGS = {"-m": "--onnx", "-model": "--onnx", "-aic-binary-dir": "the trial's work directory",
                 "-dump-profile": "--calibration-set", "-input-list-file": "--calibration-set"}


def read_flags(flags: str, *, batch_symbol: str | None = "batch_size", precision: bool = False) -> dict[str, Any]:
    """The searched knobs a flag string sets (``cores``, ``ols``, ``mos``, ..., the batch through
    ``-onnx-define-symbol=<batch_symbol>,N``; with ``precision`` searched, the precision and its recipe) and its
    pass-through flags (``extra_flags``); raises AutotuneError naming an unknown or malformed flag."""
    values: dict[str, Any] = {"extra_flags": []}
    for token in split_flags(flags):
        _parse_token(token, values, batch_symbol=batch_symbol, precision=precision)
    values["extra_flags"] = tuple(values["extra_flags"])
    return values


def join_ints(values: tuple[int, ...]) -> str:
    """``2,2`` for (2, 2): how qaic-exec spells a list."""
    return ",".join(str(v) for v in values)


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


def _parse_token(token: str, values: dict[str, Any], *, batch_symbol: str | None = "batch_size",
                 precision: bool = False) -> None:
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
        elif name == "-onnx-define-symbol" and batch_symbol and raw.startswith(f"{batch_symbol},"):
            values["batch_size"] = _int(raw.split(",", 1)[1], token)
        elif precision and name in PRECISION_FLAGS:
            if PASS_THROUGH_FLAGS[name] == "bool":
                _no_value(has_value, token)
            read_recipe_flag(token, values)
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
