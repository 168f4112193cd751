"""trtexec flag strings as users write them: the searched knobs a string sets (the model variant as
``precision=int8``/``precision=fp16`` settings before the flags), the pass-through build flags a study may carry
unsearched, and the flags autotune sets itself; each refused with a line naming it."""

from __future__ import annotations

import re
import shlex
from typing import Any

from autotune.backends import _int8
from autotune.backends.tensorrt.contract import CONTRACTS
from autotune.errors import AutotuneError

IMPLICIT_INT8 = "int8-calib"  # TensorRT 10's calibrator: --int8 without precision=int8 (with --trt-calib's cache)

# build flags a user may pass through unsearched (--trt-base-flags), and the kind of value each takes
PASS_THROUGH = {"--noTF32": None, "--sparsity": ("disable", "enable", "force"), "--maxTactics": "int",
                "--avgTiming": "int", "--l2LimitForTiling": "int", "--stronglyTyped": None, "--verbose": None}
MANAGED = {"--onnx": "--onnx", "--saveEngine": "the compile", "--loadEngine": "the measurement",
           "--minShapes": "--batch-size and --input-shape", "--optShapes": "--batch-size and --input-shape",
           "--maxShapes": "--batch-size and --input-shape", "--shapes": "--batch-size and --input-shape",
           "--device": "--devices (run) or --device (bench)", "--timingCacheFile": "autotune (one per GPU model and "
           "TensorRT version)", "--calib": "--trt-calib", "--duration": "--measure-time", "--warmUp": "autotune",
           "--iterations": "autotune", "--percentile": "autotune", "--exportTimes": "autotune",
           "--exportOutput": "autotune", "--loadInputs": "--inputs", "--skipInference": "autotune",
           "--noDataTransfers": "autotune (transfers are always measured)",
           "--includeDataTransfers": "autotune (transfers are always measured)"}
SEARCHED = ("--memPoolSize", "--builderOptimizationLevel", "--tilingOptimizationLevel", "--maxAuxStreams",
            "--infStreams", "--streams", "--fp16", "--int8")
SIZE = re.compile(r"(\d+(?:\.\d+)?)([KMG]?)")


def split(text: str) -> list[str]:
    """Shell-style split; unbalanced quotes are a one-line error."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise AutotuneError(f"cannot read the flags {text!r}: {exc}") from None


def read_candidate_flags(text: str, *, contract: int) -> dict[str, Any]:
    """The searched knobs a flag string sets (``precision``, the int8 recipe, ``workspace_mib``, ...)."""
    values: dict[str, Any] = {}
    switches = CONTRACTS[contract].runtime_switches()
    for token in split(text):
        name, has_value, raw = token.partition("=")
        if has_value and name == "precision":
            values["precision"] = raw
            continue
        if has_value and name in _int8.SPELLING.values():
            setting, value = _int8.read_recipe_flag(name, raw, token)
            values[setting] = value
            continue
        _refuse_foreign(token, contract)
        if name in switches and not has_value:
            setting, value = switches[name]
            values[setting] = value
        elif name == "--fp16" and not has_value:
            values.setdefault("precision", "fp16")
        elif name == "--int8" and not has_value:
            if values.get("precision") != _int8.INT8:  # precision=int8 names the QDQ model, which --int8 builds
                values["precision"] = IMPLICIT_INT8
        elif name == "--memPoolSize":
            values["workspace_mib"] = workspace_mib(raw, token)
        elif name in ("--builderOptimizationLevel", "--tilingOptimizationLevel", "--maxAuxStreams", "--infStreams",
                      "--streams"):
            key = {"--builderOptimizationLevel": "opt_level", "--tilingOptimizationLevel": "tiling_level",
                   "--maxAuxStreams": "aux_streams"}.get(name, "streams")
            values[key] = _int(raw, token, minimum=1 if key == "streams" else 0)
        elif name in PASS_THROUGH:
            raise AutotuneError(f"flag {name} is not searched: give it in --trt-base-flags, which every build carries")
        else:
            raise AutotuneError(f"unknown trtexec flag {token!r} in the flags (searched: precision=, "
                                f"{', '.join(_int8.SPELLING.values())}, {', '.join(SEARCHED)}, {', '.join(switches)}; "
                                f"autotune sets the others)")
    return values


def check_base_flags(text: str, *, contract: int) -> tuple[str, ...]:
    """Extra build flags every engine of a study carries: pass-through flags only (no searched knob, no flag autotune
    sets itself, none the contract removed)."""
    tokens = split(text)
    for token in tokens:
        name, has_value, raw = token.partition("=")
        _refuse_foreign(token, contract)
        if name in SEARCHED or name in CONTRACTS[contract].runtime_switches():
            raise AutotuneError(f"base flag {token!r} sets a searched knob; let the search choose it (run) or give it "
                                f"in --flags (bench)")
        if name not in PASS_THROUGH:
            raise AutotuneError(f"unknown trtexec build flag {token!r} in --trt-base-flags (known: "
                                f"{', '.join(PASS_THROUGH)})")
        kind = PASS_THROUGH[name]
        if kind is None and has_value:
            raise AutotuneError(f"malformed flag {token!r}: it is a switch and takes no value")
        if kind == "int":
            _int(raw, token, minimum=0)
        elif isinstance(kind, tuple) and raw not in kind:
            raise AutotuneError(f"malformed flag {token!r}: {name} takes one of {', '.join(kind)}")
    return tuple(tokens)


def workspace_mib(raw: str, token: str) -> int:
    """``workspace:N`` with N in MiB, or with a K, M or G suffix, as whole MiB."""
    pool, _, size = raw.partition(":")
    match = SIZE.fullmatch(size)
    if pool != "workspace" or match is None:
        raise AutotuneError(f"malformed flag {token!r}: autotune searches --memPoolSize=workspace:N (N in MiB, or "
                            f"with a K/M/G suffix)")
    mib = float(match.group(1)) * {"K": 1 / 1024, "": 1, "M": 1, "G": 1024}[match.group(2)]
    if mib < 1 or mib != int(mib):
        raise AutotuneError(f"malformed flag {token!r}: the workspace must be a whole number of MiB")
    return int(mib)


def _refuse_foreign(token: str, contract: int) -> None:
    name = token.partition("=")[0]
    if not name.startswith("--"):
        raise AutotuneError(f"malformed flag {token!r}: trtexec flags look like --name or --name=value")
    reason = CONTRACTS[contract].refusal(token)
    if reason is not None:
        raise AutotuneError(reason)
    if name in MANAGED:
        raise AutotuneError(f"flag {name} is set by autotune (use {MANAGED[name]}): remove it from the flags")
    if contract == 10 and name in ("--bf16", "--fp8", "--best"):
        raise AutotuneError(f"{name}: autotune searches fp32, fp16 and int8 (a calibration set's QDQ model, or "
                            f"--trt-calib) on TensorRT 10")


def _int(raw: str, token: str, *, minimum: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise AutotuneError(f"malformed flag {token!r}: expected an integer value") from None
    if value < minimum:
        raise AutotuneError(f"malformed flag {token!r}: the value must be at least {minimum}")
    return value
