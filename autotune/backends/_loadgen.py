"""MLPerf LoadGen for in-process backends: run a scenario against a SUT, read the figures from its log.

Two SUTs: ``BatchingSUT`` (worker threads that each run a batch and wait for it) and ``AsyncSUT`` (one feeder thread
that starts asynchronous requests; the runtime's completion callbacks complete LoadGen's samples).

Traps respected (see TOOLCHAIN-NOTES): the log directory exists before the run; offline's expected QPS is set at or
above the real rate; results come from ``mlperf_log_detail.txt``, never from the prose summary; completions are
made by threads that are joined (or requests that are drained) before the SUT is destroyed.
"""

from __future__ import annotations

import json
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

from autotune.backends._host_load import CpuWatch
from autotune.errors import AutotuneError, TrialFailure

RUN_LOCK = threading.Lock()  # LoadGen is one per process: one test at a time (devices measured in threads wait)
SCENARIO_NAMES = {"offline": "Offline", "server": "Server", "singlestream": "SingleStream",
                  "multistream": "MultiStream"}


@dataclass(frozen=True, kw_only=True)
class LoadGenRun:
    """What to run: scenario, duration and the scenario's expectation (LoadGen's units converted here)."""

    scenario: str
    min_duration_ms: int = 2000
    min_query_count: int = 64
    expected_qps: float = 100.0
    expected_latency_ms: float = 10.0
    target_qps: float = 10.0
    latency_bound_ms: float | None = None


@dataclass(kw_only=True)
class LoadGenResult:
    """Figures read from ``mlperf_log_detail.txt``; latencies in ms."""

    scenario: str
    valid: bool
    constraints_met: bool
    samples_per_second: float
    latency_p50_ms: float | None
    latency_p90_ms: float | None
    latency_p99_ms: float | None
    query_count: int
    log_dir: Path
    invalid_reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict, repr=False)
    host_load: dict[str, Any] | None = None  # other processes' use of the CPUs during the run (_host_load.py)


class BatchingSUT:
    """A LoadGen SUT: ``instances`` worker threads take up to ``batch_size`` waiting samples and run ``infer``.

    ``infer(sample_indices)`` runs one batch (ONNX Runtime releases the GIL, so instances run in parallel).
    """

    def __init__(self, infer: Callable[[list[int]], None], *, batch_size: int, instances: int) -> None:
        self.infer, self.batch_size, self.instances = infer, batch_size, instances
        self.pending: queue.Queue[Any] = queue.Queue()
        self.errors: list[BaseException] = []
        self.workers: list[threading.Thread] = []

    def start(self) -> None:
        self.workers = [threading.Thread(target=self._work, daemon=True) for _ in range(self.instances)]
        for worker in self.workers:
            worker.start()

    def stop(self) -> None:
        for _ in self.workers:
            self.pending.put(None)
        for worker in self.workers:
            worker.join()

    def issue(self, samples: list[Any]) -> None:
        for sample in samples:
            self.pending.put(sample)

    def _work(self) -> None:
        import mlperf_loadgen as lg

        while (batch := take_batch(self.pending, self.batch_size)) is not None:
            try:
                self.infer([s.index for s in batch])
            except BaseException as exc:  # report after the run; LoadGen must still see every completion
                self.errors.append(exc)
            lg.QuerySamplesComplete([lg.QuerySampleResponse(s.id, 0, 0) for s in batch])


class AsyncSUT:
    """A LoadGen SUT for runtimes with asynchronous requests: no thread waits on a request.

    One feeder thread calls ``wait_idle()`` (returns once a request is free), gathers up to ``batch_size`` waiting
    samples and calls ``submit(indices, done)``, which starts one request and returns; the runtime's completion
    callback calls ``done(error)`` (None when the request succeeded), which completes the batch's samples with
    LoadGen. ``drain()`` waits for the requests in flight when the run ends.
    """

    def __init__(self, submit: Callable[[list[int], Callable[[BaseException | None], None]], None], *,
                 batch_size: int, wait_idle: Callable[[], Any], drain: Callable[[], Any]) -> None:
        self.submit, self.batch_size, self.wait_idle, self.drain = submit, batch_size, wait_idle, drain
        self.pending: queue.Queue[Any] = queue.Queue()
        self.errors: list[BaseException] = []
        self.feeder: threading.Thread | None = None

    def start(self) -> None:
        self.feeder = threading.Thread(target=self._feed, daemon=True)
        self.feeder.start()

    def stop(self) -> None:
        self.pending.put(None)
        if self.feeder is not None:
            self.feeder.join()
        self.drain()

    def issue(self, samples: list[Any]) -> None:
        for sample in samples:
            self.pending.put(sample)

    def _feed(self) -> None:
        while True:
            self.wait_idle()  # a batch gathers the samples that arrived while every request was busy
            batch = take_batch(self.pending, self.batch_size)
            if batch is None:
                return
            try:
                self.submit([s.index for s in batch], lambda error, batch=batch: self._complete(batch, error))
            except BaseException as exc:  # the request did not start: complete its samples all the same
                self._complete(batch, exc)

    def _complete(self, batch: list[Any], error: BaseException | None) -> None:
        import mlperf_loadgen as lg

        if error is not None:
            self.errors.append(error)
        lg.QuerySamplesComplete([lg.QuerySampleResponse(s.id, 0, 0) for s in batch])


SUT = Union[BatchingSUT, AsyncSUT]


def take_batch(pending: queue.Queue[Any], size: int) -> list[Any] | None:
    """The next sample (waiting for it) and up to ``size - 1`` more already waiting; None once the queue is closed."""
    first = pending.get()
    if first is None:
        return None
    batch = [first]
    while len(batch) < size:
        try:
            item = pending.get_nowait()
        except queue.Empty:
            break
        if item is None:
            pending.put(None)  # the close is for the next taker
            break
        batch.append(item)
    return batch


def run_loadgen(sut: SUT, run: LoadGenRun, *, sample_count: int, log_dir: Path,
                cores: int | None = None) -> LoadGenResult:
    """Run one PerformanceOnly test and return its figures; the logs stay in ``log_dir``. With ``cores`` (what the
    SUT runs on, of the host's CPUs), the host's load during the test comes with them."""
    import mlperf_loadgen as lg

    if run.scenario not in SCENARIO_NAMES:
        raise AutotuneError(f"LoadGen has no scenario {run.scenario!r}")
    log_dir.mkdir(parents=True, exist_ok=True)
    settings = lg.TestSettings()
    settings.scenario = getattr(lg.TestScenario, SCENARIO_NAMES[run.scenario])
    settings.mode = lg.TestMode.PerformanceOnly
    settings.min_duration_ms = int(run.min_duration_ms)
    settings.min_query_count = int(run.min_query_count)
    settings.offline_expected_qps = float(run.expected_qps)
    settings.single_stream_expected_latency_ns = int(run.expected_latency_ms * 1e6)
    settings.multi_stream_expected_latency_ns = int(run.expected_latency_ms * 1e6)
    settings.server_target_qps = float(run.target_qps)
    if run.latency_bound_ms is not None:
        settings.server_target_latency_ns = int(run.latency_bound_ms * 1e6)
    log_settings = lg.LogSettings()
    log_settings.log_output.outdir = str(log_dir)
    log_settings.log_output.copy_summary_to_stdout = False
    log_settings.enable_trace = False

    with RUN_LOCK:
        sut.start()
        handle = lg.ConstructSUT(sut.issue, lambda: None)
        qsl = lg.ConstructQSL(sample_count, min(sample_count, 1024), lambda _: None, lambda _: None)
        watch = CpuWatch(cores=cores) if cores is not None else None
        try:
            lg.StartTestWithLogSettings(handle, qsl, settings, log_settings)
        finally:
            sut.stop()
            lg.DestroyQSL(qsl)
            lg.DestroySUT(handle)
    if sut.errors:
        if isinstance(sut.errors[0], TrialFailure):  # the runtime's own typed failure (a device gone) as it is
            raise sut.errors[0]
        raise AutotuneError(f"inference failed during the LoadGen run: {sut.errors[0]}")
    result = read_result(run.scenario, log_dir)
    result.host_load = watch.stop() if watch is not None else None
    return result


def read_detail_log(path: Path) -> dict[str, Any]:
    """The ``:::MLLOG {json}`` records of a LoadGen detail log as key -> value (last one wins)."""
    if not path.is_file():
        raise AutotuneError(f"LoadGen wrote no {path.name} in {path.parent}")
    values: dict[str, Any] = {}
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(":::MLLOG"):
            record = json.loads(line.split(" ", 1)[1])
            values[record["key"]] = record.get("value")
    return values


def read_result(scenario: str, log_dir: Path) -> LoadGenResult:
    """The figures of one run from its detail log."""
    d = read_detail_log(log_dir / "mlperf_log_detail.txt")
    rate_key = {"offline": "result_samples_per_second", "server": "result_scheduled_samples_per_sec",
                "singlestream": "result_qps_with_loadgen_overhead",
                "multistream": "result_qps_with_loadgen_overhead"}[scenario]
    infix = "per_query_" if scenario == "multistream" else ""

    def ms(percentile: str) -> float | None:
        value = d.get(f"result_{percentile}_percentile_{infix}latency_ns")
        return value / 1e6 if value is not None else None

    rate = d.get(rate_key)
    if rate is None and scenario == "multistream" and d.get("result_mean_query_latency_ns"):
        rate = 8e9 / d["result_mean_query_latency_ns"]
    return LoadGenResult(
        scenario=scenario, valid=d.get("result_validity") == "VALID",
        constraints_met=bool(d.get("result_perf_constraints_met", True)),
        samples_per_second=float(rate or 0.0), latency_p50_ms=ms("50.00"), latency_p90_ms=ms("90.00"),
        latency_p99_ms=ms("99.00"), query_count=int(d.get("result_query_count", 0)), log_dir=log_dir,
        invalid_reason=str(d.get("result_invalid_reason", "") or d.get("early_stopping_result", "")).strip(),
        detail=d)


def find_server_qps(probe: Callable[[float], LoadGenResult], *, start_qps: float, bound_ms: float,
                    max_probes: int = 8) -> tuple[LoadGenResult | None, list[LoadGenResult]]:
    """The highest target QPS whose Server run keeps p99 within ``bound_ms``: bracket by doubling or halving, then
    bisect, within ``max_probes`` LoadGen runs. Returns (best passing run or None, every probe)."""
    probes: list[LoadGenResult] = []

    def passes(qps: float) -> bool:
        result = probe(qps)
        probes.append(result)
        return result.constraints_met and result.latency_p99_ms is not None and result.latency_p99_ms <= bound_ms

    low, high = None, None
    qps = start_qps
    while len(probes) < max_probes and (low is None or high is None):
        if passes(qps):
            low = qps
            qps *= 2
        else:
            if low is None and high is not None and _p99(probes[-1]) > 0.8 * _p99(probes[-2]):
                break  # half the rate did not lower p99 by a fifth: latency itself breaks the bound, not the load
            high = qps
            qps /= 2
        if low is None and qps < start_qps / 64:
            break
    while low is not None and high is not None and len(probes) < max_probes and high / low > 1.05:
        mid = (low + high) / 2
        if passes(mid):
            low = mid
        else:
            high = mid
    passing = [p for p, ok in ((p, p.constraints_met and p.latency_p99_ms is not None and p.latency_p99_ms <= bound_ms)
                               for p in probes) if ok]
    best = max(passing, key=lambda r: r.samples_per_second) if passing else None
    return best, probes


def _p99(result: LoadGenResult) -> float:
    return result.latency_p99_ms if result.latency_p99_ms is not None else float("inf")
