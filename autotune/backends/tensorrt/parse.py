"""Readers of what trtexec prints and writes (TRTEXEC-FACTS): the version banner, the Performance summary, the
warnings worth keeping, the reason of a failure, the per-query trace of ``--exportTimes`` and the outputs of
``--exportOutput``. Pure functions of text: tested on the facts file's samples verbatim."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np

from autotune.backends.tensorrt.contract import Version

NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf|nan"
BANNER = re.compile(r"&&&& (RUNNING|PASSED|FAILED) TensorRT\.trtexec \[TensorRT v(\d+)\]")
VERSION_LINE = re.compile(r"\[I\] TensorRT version: (\d+)\.(\d+)\.(\d+)")
STAT = re.compile(rf"(min|max|mean|median|percentile\(({NUMBER})%\)) = ({NUMBER}) ms")
SEVERITY = re.compile(r"^(?:\[[^\]]*\] )?\[([VIWEF])\] (.*)$")
UNSTABLE = re.compile(rf"coefficient of variance = ({NUMBER})%")
BARE_SPECIAL = re.compile(r"(?<![\w\"])(-?)(inf|nan)(?![\w\"])")


@dataclass(frozen=True, kw_only=True)
class Stats:
    """One ``Name: min = ... ms, ...`` line of the summary; ``percentiles`` by their number (90.0 -> ms)."""

    min: float
    max: float
    mean: float
    median: float
    percentiles: dict[float, float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Summary:
    """The ``=== Performance summary ===`` of one run; lines trtexec did not print (or printed unreadably) are None."""

    throughput_qps: float
    latency: Stats | None = None
    enqueue: Stats | None = None
    h2d: Stats | None = None
    gpu_compute: Stats | None = None
    d2h: Stats | None = None
    host_walltime_s: float | None = None
    gpu_compute_total_s: float | None = None


def message_lines(output: str) -> list[tuple[str, str]]:
    """(severity, text) of every ``[ts] [S] text`` line, the timestamp dropped; other lines are left out."""
    found = []
    for line in output.splitlines():
        match = SEVERITY.match(line.strip())
        if match:
            found.append((match.group(1), match.group(2)))
    return found


def parse_banner_version(output: str) -> Version | None:
    """The version in the first ``&&&& RUNNING|PASSED|FAILED TensorRT.trtexec [TensorRT vNNNNNN]`` line."""
    match = BANNER.search(output)
    return Version.from_tag(int(match.group(2))) if match else None


def parse_version_line(output: str) -> Version | None:
    """The version of the ``[I] TensorRT version: 11.1.0`` device line."""
    match = VERSION_LINE.search(output)
    return Version(major=int(match.group(1)), minor=int(match.group(2)), patch=int(match.group(3))) if match else None


def outcome(output: str) -> str | None:
    """``PASSED`` or ``FAILED`` from the closing banner, None when there is none (an argument error, a crash)."""
    found = [m.group(1) for m in BANNER.finditer(output) if m.group(1) != "RUNNING"]
    return found[-1] if found else None


def parse_stats(text: str) -> Stats | None:
    """``min = 9.1 ms, max = ..., percentile(90%) = ... ms`` as Stats; None when a figure is missing."""
    values: dict[str, float] = {}
    percentiles: dict[float, float] = {}
    for match in STAT.finditer(text):
        if match.group(2) is not None:
            percentiles[float(match.group(2))] = float(match.group(3))
        else:
            values[match.group(1)] = float(match.group(3))
    if set(values) != {"min", "max", "mean", "median"}:
        return None
    return Stats(min=values["min"], max=values["max"], mean=values["mean"], median=values["median"],
                 percentiles=percentiles)


def parse_summary(output: str) -> Summary | None:
    """The last Performance summary in ``output``; None when trtexec printed none (or no Throughput line)."""
    lines = [text for severity, text in message_lines(output) if severity == "I"]
    starts = [i for i, text in enumerate(lines) if text.strip() == "=== Performance summary ==="]
    if not starts:
        return None
    fields: dict[str, str] = {}
    for text in lines[starts[-1] + 1:]:
        name, sep, rest = text.partition(": ")
        if not sep or text.startswith("==="):
            break
        fields.setdefault(name.strip(), rest.strip())
    throughput = re.fullmatch(rf"({NUMBER}) qps", fields.get("Throughput", ""))
    if throughput is None:
        return None
    return Summary(throughput_qps=float(throughput.group(1)), latency=parse_stats(fields.get("Latency", "")),
                   enqueue=parse_stats(fields.get("Enqueue Time", "")), h2d=parse_stats(fields.get("H2D Latency", "")),
                   gpu_compute=parse_stats(fields.get("GPU Compute Time", "")),
                   d2h=parse_stats(fields.get("D2H Latency", "")),
                   host_walltime_s=_seconds(fields.get("Total Host Walltime")),
                   gpu_compute_total_s=_seconds(fields.get("Total GPU Compute Time")))


def parse_warnings(output: str) -> list[str]:
    """The ``[W] * ...`` warnings about the figures (stability, enqueue bound, parallel streams), in order, once each."""
    found = [text[2:].strip() for severity, text in message_lines(output) if severity == "W" and text.startswith("* ")]
    return list(dict.fromkeys(found))


def compute_variation_pct(warnings: list[str]) -> float | None:
    """The coefficient of variance of ``GPU compute time is unstable, with coefficient of variance = 4.1%.``."""
    for warning in warnings:
        match = UNSTABLE.search(warning)
        if match:
            return float(match.group(1))
    return None


def parse_failure(output: str) -> str | None:
    """trtexec's own reason: ``Unknown option: X``, else the first ``[E] Error[N]: ...`` line, else the first
    ``[E]`` line."""
    errors = [text.strip() for severity, text in message_lines(output) if severity in "EF"]
    for text in errors:
        if text.startswith("Unknown option"):
            return text
    return next((text for text in errors if text.startswith("Error[")), errors[0] if errors else None)


def is_out_of_memory(reason: str) -> bool:
    return "out of memory" in reason.lower() or "outofmemory" in reason.lower()


def parse_times(text: str) -> list[dict[str, float]]:
    """The queries of an ``--exportTimes`` trace (those with a ``latencyMs``); raises ValueError when unreadable."""
    entries = json.loads(_json_numbers(text))
    if not isinstance(entries, list):
        raise ValueError("not a list of queries")
    return [{k: float(v) for k, v in e.items()} for e in entries if isinstance(e, dict) and "latencyMs" in e]


def parse_outputs(text: str) -> dict[str, np.ndarray]:
    """``--exportOutput`` JSON: ``[{"name", "dimensions": "8x1000", "values": [...]}]`` -> name -> array; trtexec
    prints infinities and NaNs as C++ streams do (``inf``, ``-nan``). Raises ValueError when unreadable."""
    entries = json.loads(_json_numbers(text))
    arrays = {}
    for entry in entries:
        dims = [int(d) for d in str(entry["dimensions"]).split("x") if d != ""]
        values = np.asarray(entry["values"], dtype=np.float64)
        arrays[str(entry["name"])] = values.reshape(dims) if dims else values.reshape(())
    return arrays


def _json_numbers(text: str) -> str:
    """C++ stream spellings of non-finite numbers (``inf``, ``-inf``, ``nan``, ``-nan``) as JSON's."""
    def spell(match: re.Match[str]) -> str:
        return "NaN" if match.group(2) == "nan" else f"{match.group(1)}Infinity"
    return BARE_SPECIAL.sub(spell, text)


def _seconds(text: str | None) -> float | None:
    match = re.fullmatch(rf"({NUMBER}) s", (text or "").strip())
    return float(match.group(1)) if match else None
