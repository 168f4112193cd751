"""Every scenario measured with LoadGen, for in-process runtimes: each run's settings from the time of one batch, the
server's target-QPS search, and the Measurement the figures make."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from autotune.backends._loadgen import SUT, BatchingSUT, LoadGenResult, LoadGenRun, find_server_qps, run_loadgen
from autotune.backends.base import Measurement
from autotune.errors import AutotuneError, MeasureFailure, TrialFailure
from autotune.scenarios import MULTISTREAM_SAMPLES_PER_QUERY

SERVER_PROBES = 5
SAMPLE_COUNT = 1024
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class Workload:
    """What a backend puts under LoadGen: a function making a fresh SUT, its batch, how many batches run at once and
    the seconds one batch takes alone (LoadGen's expectations come from these); ``sut`` names the SUT in the
    measurement's command ("" for none); ``cores``: how many of the host's CPUs it uses."""

    make_sut: Callable[[], SUT]
    batch_size: int
    concurrency: int
    batch_seconds: float
    sut: str = ""
    cores: int | None = None  # the host's CPUs it runs on: the host's load is watched on them (None: not watched)


def pooled_workload(run: Callable[[T], None], slots: Sequence[T], *, batch_size: int, concurrency: int,
                    sut: str) -> Workload:
    """A device runtime's requests under LoadGen: one worker per slot (a request a runtime keeps in flight: an
    ExecObj of an activation, an execution context on its stream); a worker takes a free slot, runs one batch on it
    with ``run(slot)`` (start, wait for the completion) and frees it. The time of one batch alone comes from a
    warm-up and two timed runs on the first slot."""
    run(slots[0])
    times = []
    for _ in range(2):
        started = time.perf_counter()
        run(slots[0])
        times.append(time.perf_counter() - started)

    def make_sut() -> BatchingSUT:
        free: queue.Queue[T] = queue.Queue()
        for slot in slots:
            free.put(slot)

        def infer(indices: list[int]) -> None:
            slot = free.get()
            try:
                run(slot)
            finally:
                free.put(slot)

        return BatchingSUT(infer, batch_size=batch_size, instances=len(slots))

    return Workload(make_sut=make_sut, batch_size=batch_size, concurrency=concurrency,
                    batch_seconds=max(min(times), 1e-5), sut=sut)


def measure_scenario(work: Workload, *, scenario: str | None, bound_ms: float | None, seconds: float,
                     log_dir: Path) -> Measurement:
    """Run ``scenario`` itself with LoadGen for about ``seconds`` (offline when it is None). Server: the highest target
    QPS whose p99 stays within ``bound_ms``, bracketed then bisected in a few short probes."""
    rate = work.concurrency * work.batch_size / work.batch_seconds
    duration_ms = int(seconds * 1000)
    name = scenario or "offline"
    if name == "server":
        assert bound_ms is not None
        return _server(work, rate=rate, bound_ms=bound_ms, seconds=seconds, log_dir=log_dir)
    if name == "offline":
        run = LoadGenRun(scenario="offline", min_duration_ms=duration_ms, expected_qps=rate * 1.5)
    elif name == "singlestream":
        run = LoadGenRun(scenario="singlestream", min_duration_ms=duration_ms, min_query_count=32,
                         expected_latency_ms=work.batch_seconds * 1000)
    else:
        rounds = -(-MULTISTREAM_SAMPLES_PER_QUERY // work.batch_size) / max(1, work.concurrency)
        run = LoadGenRun(scenario="multistream", min_duration_ms=duration_ms, min_query_count=32,
                         expected_latency_ms=max(1.0, rounds) * work.batch_seconds * 1000)
    return run_once(work.make_sut, run, batch_size=work.batch_size, log_dir=log_dir, sut=work.sut, cores=work.cores)


def run_once(make_sut: Callable[[], SUT], run: LoadGenRun, *, batch_size: int, log_dir: Path,
             sut: str = "", cores: int | None = None) -> Measurement:
    """One LoadGen run of ``run`` against the SUT ``make_sut`` makes (the host's load watched on ``cores``)."""
    result = _run(make_sut, run, log_dir, cores=cores)
    return Measurement(samples_per_second=result.samples_per_second, duration_seconds=run.min_duration_ms / 1000,
                       batch_size=batch_size, executions=result.query_count, latency_p50_ms=result.latency_p50_ms,
                       latency_p90_ms=result.latency_p90_ms, latency_p99_ms=result.latency_p99_ms, loadgen=True,
                       multistream_p99_ms=result.latency_p99_ms if run.scenario == "multistream" else None,
                       command=[f"loadgen {run.scenario}" + (f", {sut}" if sut else "")], log_path=log_dir,
                       host_load=result.host_load)


def _server(work: Workload, *, rate: float, bound_ms: float, seconds: float, log_dir: Path) -> Measurement:
    probe_ms = max(500, int(seconds * 1000 / SERVER_PROBES))

    def probe(qps: float) -> LoadGenResult:
        run = LoadGenRun(scenario="server", min_duration_ms=probe_ms, min_query_count=100, target_qps=qps,
                         latency_bound_ms=bound_ms)
        return _run(work.make_sut, run, log_dir / f"server-{qps:.1f}qps", cores=work.cores)

    best, probes = find_server_qps(probe, start_qps=rate * 0.5, bound_ms=bound_ms, max_probes=SERVER_PROBES)
    shown = best or min(probes, key=lambda p: p.latency_p99_ms or float("inf"))
    loads = [p.host_load for p in probes if p.host_load is not None]
    return Measurement(
        samples_per_second=shown.samples_per_second, duration_seconds=len(probes) * probe_ms / 1000,
        batch_size=work.batch_size, executions=shown.query_count, latency_p50_ms=shown.latency_p50_ms,
        latency_p90_ms=shown.latency_p90_ms, latency_p99_ms=shown.latency_p99_ms, loadgen=True,
        server_qps=best.samples_per_second if best else 0.0, server_p99_ms=shown.latency_p99_ms,
        server_probes=[{"target_qps": float(p.detail.get("requested_server_target_qps", 0.0)),
                        "scheduled_qps": p.samples_per_second, "p99_ms": p.latency_p99_ms,
                        "constraints_met": p.constraints_met, "log_dir": str(p.log_dir)} for p in probes],
        command=[f"loadgen server, {len(probes)} probes" + (f", {work.sut}" if work.sut else "")], log_path=log_dir,
        host_load=max(loads, key=lambda load: load["other_pct"]) if loads else None)


def _run(make_sut: Callable[[], SUT], run: LoadGenRun, log_dir: Path, *, cores: int | None = None) -> LoadGenResult:
    try:
        return run_loadgen(make_sut(), run, sample_count=SAMPLE_COUNT, log_dir=log_dir, cores=cores)
    except TrialFailure:  # the runtime said what failed (DeviceFailure: the device is set aside)
        raise
    except AutotuneError as exc:
        raise MeasureFailure(str(exc), log_path=log_dir) from None
