"""Precision on Cloud AI 100 (SDK-FACTS, "Precision"): fp16 (``-convert-to-fp16``) or int8 through a profile, the
int8 recipe as knobs (drawn only when the study has a calibration set), the qaic-exec flags a recipe renders to and
how a flag string's precision flags read back.

A recipe field left None is not rendered: the compiler's default applies, or a base flag the user gave fixes it. The
remedy, fp16 for the ``fp16_nodes`` most sensitive nodes, is spelled in a flag string as the node-precision file
autotune writes for it, ``-node-precision-info=fp16-nodes-K.yaml``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from autotune.errors import AutotuneError
from autotune.search_space import Knob

FP16, INT8 = "fp16", "int8"
PRECISIONS = (FP16, INT8)
CALIBRATIONS = ("None", "Percentile", "KLMinimization", "MSE", "SQNR")  # None: MinMax
KNOWN_CALIBRATIONS = (*CALIBRATIONS, "KLMinimizationV2")  # accepted in flags, not searched
PERCENTILES = (99.9, 99.99, 99.999, 100.0)
SCHEMAS = ("symmetric_with_uint8", "asymmetric", "symmetric", "symmetric_with_power2_scale")
FP16_NODES = (0, 1, 2, 4, 8)  # doubling steps, as the CPU's float layers (``_int8.FLOAT_LAYERS``)
NODE_FILE = re.compile(r"fp16-nodes-(\d+)\.yaml")
# each recipe field, and the qaic-exec flags that set it (a user's base flag fixes it: not searched)
FIELD_FLAGS: dict[str, tuple[str, ...]] = {
    "precision": ("-convert-to-fp16", "-quantization-precision"),
    "calibration": ("-quantization-calibration",),
    "percentile": ("-percentile-calibration-value",),
    "schema_activations": ("-quantization-schema", "-quantization-schema-activations"),
    "schema_constants": ("-quantization-schema", "-quantization-schema-constants"),
    "channelwise": ("-enable-channelwise",),
    "fp16_nodes": ("-node-precision-info",),
    "mxfp6": ("-mxfp6-matmul",),
}
PRECISION_FLAGS = frozenset(flag for flags in FIELD_FLAGS.values() for flag in flags)
PROFILE_FIELDS = ("calibration", "percentile", "schema_activations", "schema_constants")  # what decides a profile
RECIPE_DEFAULTS: dict[str, Any] = {"calibration": "None", "percentile": None,
                                   "schema_activations": "symmetric_with_uint8",
                                   "schema_constants": "symmetric_with_uint8", "channelwise": False, "fp16_nodes": 0,
                                   "mxfp6": False}


def _at_int8(drawn: dict[str, Any]) -> bool:
    return drawn.get("precision") == INT8


def _at_fp16(drawn: dict[str, Any]) -> bool:
    return drawn.get("precision") == FP16


def _at_percentile(drawn: dict[str, Any]) -> bool:
    return drawn.get("calibration") == "Percentile"


@dataclass(frozen=True, kw_only=True)
class Offer:
    """What a study searches of the precision: every recipe field but those the user's base flags ``fixed``,
    ``-mxfp6-matmul`` (at fp16) for a model with MatMul weights (``matmul``), and the recipe the baseline and the
    starts take (``start``: the model's built-in precision flags, else int8 at the SDK's defaults)."""

    fixed: frozenset[str] = frozenset()
    matmul: bool = False
    start: tuple[tuple[str, Any], ...] = ()

    def knobs(self) -> list[Knob]:
        table = [Knob(name="precision", values=PRECISIONS),
                 Knob(name="mxfp6", values=(False, True), when=_at_fp16),
                 Knob(name="calibration", values=CALIBRATIONS, when=_at_int8),
                 Knob(name="percentile", values=PERCENTILES, when=_at_percentile),
                 Knob(name="schema_activations", values=SCHEMAS, when=_at_int8),
                 Knob(name="schema_constants", values=SCHEMAS, when=_at_int8),
                 Knob(name="channelwise", values=(False, True), when=_at_int8),
                 Knob(name="fp16_nodes", values=FP16_NODES, when=_at_int8, remedy=True)]
        return [k for k in table if k.name not in self.fixed and (k.name != "mxfp6" or self.matmul)]

    def start_recipe(self) -> dict[str, Any]:
        """The recipe of the baseline and the starts: the searched fields at their first values, then ``start``."""
        searched = {k.name for k in self.knobs()}
        values = {"precision": INT8} | dict(self.start)
        if values["precision"] == INT8:
            values = {name: RECIPE_DEFAULTS[name] for name in ("calibration", "schema_activations",
                                                               "schema_constants", "channelwise")} | values
        return {name: value for name, value in values.items() if name in searched}


def offer(*, user_flags: tuple[str, ...], model_flags: tuple[str, ...], matmul: bool) -> Offer | None:
    """The precision a study with a calibration set searches; None where the user's base flags fix the precision
    itself (``-convert-to-fp16``, ``-quantization-precision``). ``-load-profile`` there is refused: the study makes
    its own profiles."""
    names = {flag.partition("=")[0] for flag in user_flags}
    loaded = [flag for flag in user_flags if flag.startswith("-load-profile")]
    fixed = frozenset(name for name, flags in FIELD_FLAGS.items() if names & set(flags))
    if "precision" in fixed:
        return None
    if loaded:
        raise AutotuneError(f"base flag {loaded[0]!r} loads a profile, but this study searches the int8 calibration "
                            f"(it has a calibration set): remove -load-profile, or give -convert-to-fp16 to fix the "
                            f"precision")
    values: dict[str, Any] = {}
    for flag in model_flags:
        if flag.partition("=")[0] in PRECISION_FLAGS:
            read_recipe_flag(flag, values)
    return Offer(fixed=fixed, matmul=matmul, start=tuple(sorted(values.items())))


def recipe_flags(candidate: Any) -> list[str]:
    """The qaic-exec flags of ``candidate``'s precision and recipe, the node-precision file by its name
    (``-node-precision-info=fp16-nodes-K.yaml``); none where the precision is not searched."""
    c = candidate
    if c.precision == FP16:
        return ["-convert-to-fp16", *(["-mxfp6-matmul"] if c.mxfp6 else [])]
    if c.precision != INT8:
        return []
    flags = [f"-quantization-calibration={c.calibration}"] if c.calibration is not None else []
    flags += [f"-percentile-calibration-value={c.percentile:g}"] if c.percentile is not None else []
    flags += [f"-quantization-schema-activations={c.schema_activations}"] if c.schema_activations else []
    flags += [f"-quantization-schema-constants={c.schema_constants}"] if c.schema_constants else []
    flags += ["-enable-channelwise"] if c.channelwise else []
    return flags + ([f"-node-precision-info=fp16-nodes-{c.fp16_nodes}.yaml"] if c.fp16_nodes else [])


def profile_flags(candidate: Any) -> list[str]:
    """The flags of ``candidate`` that decide its int8 profile (calibration and schemas): one profile serves every
    compile that shares them."""
    return [flag for flag in recipe_flags(candidate) if flag.startswith(("-quantization-", "-percentile-"))]


def recipe_key(candidate: Any) -> tuple[Any, ...]:
    """What the precision adds to a compile key (nothing where it is not searched)."""
    if candidate.precision is None:
        return ()
    return (candidate.precision, *(getattr(candidate, name) for name in RECIPE_DEFAULTS))


def read_recipe_flag(token: str, values: dict[str, Any]) -> None:
    """One precision flag of a flag string into the candidate's fields (``values``), its value checked as qaic-exec
    checks it; raises AutotuneError naming a value the SDK refuses."""
    name, _, raw = token.partition("=")
    if name == "-convert-to-fp16":
        values["precision"] = FP16
    elif name == "-mxfp6-matmul":
        values["mxfp6"] = True
    elif name == "-enable-channelwise":
        values["channelwise"] = True
    elif name == "-quantization-precision":
        if raw != "Int8":
            raise AutotuneError(f"{token!r}: a searched precision is fp16 or int8; give it in --base-flags to fix "
                                f"the precision")
        values["precision"] = INT8
    elif name == "-quantization-calibration":
        values["calibration"] = _one_of(raw, KNOWN_CALIBRATIONS, token)
    elif name == "-percentile-calibration-value":
        values["percentile"] = _percentile(raw, token)
    elif name == "-node-precision-info":
        match = NODE_FILE.fullmatch(raw)
        if not match:
            raise AutotuneError(f"{token!r}: a searched precision names its node-precision file fp16-nodes-K.yaml "
                                f"(the K most sensitive nodes in fp16); give your own file in --base-flags")
        values["fp16_nodes"] = int(match.group(1))
    else:
        schema = _one_of(raw, SCHEMAS, token)
        targets = {"-quantization-schema": ("schema_activations", "schema_constants"),
                   "-quantization-schema-activations": ("schema_activations",),
                   "-quantization-schema-constants": ("schema_constants",)}[name]
        values.update(dict.fromkeys(targets, schema))
    if name not in ("-convert-to-fp16", "-mxfp6-matmul"):
        values.setdefault("precision", INT8)


def recipe_problems(candidate: Any) -> list[str]:
    """The rules of a searched precision ``candidate`` breaks: int8 settings at fp16, mxfp6 at int8, a percentile
    without Percentile calibration."""
    c = candidate
    if c.precision is None:
        return []
    if c.precision == FP16:
        given = [name for name, value in RECIPE_DEFAULTS.items() if name != "mxfp6" and getattr(c, name) not in
                 (None, False, 0)]
        return [f"{', '.join(given)}: int8 settings, for precision int8 only"] if given else []
    problems = ["-mxfp6-matmul goes with -convert-to-fp16, not int8"] if c.mxfp6 else []
    if c.percentile is not None and c.calibration != "Percentile":
        problems.append("-percentile-calibration-value goes with -quantization-calibration=Percentile")
    return problems


def describe(candidate: Any) -> str:
    """`` int8 Percentile 99.99 act=asymmetric const=symmetric_with_uint8 cw f16n=2`` (empty where not searched)."""
    c = candidate
    if c.precision == FP16:
        return " fp16" + (" mxfp6" if c.mxfp6 else "")
    if c.precision != INT8:
        return ""
    calibration = {"None": "MinMax", None: "default"}.get(c.calibration, c.calibration)
    parts = [INT8, calibration, *([f"{c.percentile:g}"] if c.percentile is not None else []),
             f"act={c.schema_activations or 'default'}", f"const={c.schema_constants or 'default'}",
             *(["cw"] if c.channelwise else []), *([f"f16n={c.fp16_nodes}"] if c.fp16_nodes else [])]
    return " " + " ".join(parts)


def _one_of(raw: str, allowed: tuple[str, ...], token: str) -> str:
    if raw not in allowed:
        raise AutotuneError(f"malformed flag {token!r}: qaic-exec takes one of {', '.join(allowed)}")
    return raw


def _percentile(raw: str, token: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 90.0 <= value <= 100.0:
        raise AutotuneError(f"malformed flag {token!r}: qaic-exec takes a percentile from 90 to 100")
    return value
