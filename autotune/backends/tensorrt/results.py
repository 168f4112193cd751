"""A trtexec run as a Measurement: samples/s = Throughput (queries/s) x batch, the latency percentiles of its
summary, the per-query latencies of its trace, and its stability warnings kept with the figures."""

from __future__ import annotations

from pathlib import Path

from autotune.backends.base import Measurement
from autotune.backends.tensorrt.parse import parse_summary, parse_times, parse_warnings
from autotune.errors import MeasureFailure


def measurement_from(output: str, *, times: Path | None, batch_size: int, command: list[str],
                     log_path: Path) -> Measurement:
    """The figures of one ``trtexec --loadEngine`` run; ``times``: its ``--exportTimes`` trace, when one was asked."""
    summary = parse_summary(output)
    if summary is None:
        raise MeasureFailure("trtexec printed no Performance summary (no 'Throughput: X qps' line)", log_path=log_path)
    latencies: list[float] = []
    if times is not None:
        try:
            latencies = [query["latencyMs"] for query in parse_times(times.read_text())]
        except (OSError, ValueError, TypeError) as exc:
            raise MeasureFailure(f"unreadable --exportTimes trace {times}: {exc}", log_path=log_path) from None
        if not latencies:
            raise MeasureFailure(f"the --exportTimes trace {times} holds no query", log_path=log_path)
    walltime = summary.host_walltime_s or 0.0
    latency = summary.latency
    return Measurement(
        samples_per_second=summary.throughput_qps * batch_size, duration_seconds=walltime, batch_size=batch_size,
        executions=len(latencies) or round(summary.throughput_qps * walltime),
        latency_p50_ms=latency.median if latency else None,
        latency_p90_ms=latency.percentiles.get(90.0) if latency else None,
        latency_p99_ms=latency.percentiles.get(99.0) if latency else None,
        latency_samples_ms=latencies, service_samples_ms=latencies, warnings=parse_warnings(output),
        command=command, log_path=log_path)
