from __future__ import annotations

import time
from pathlib import Path

import pytest

from autotune.errors import AutotuneError
from autotune.backends._loadgen import BatchingSUT, LoadGenRun, find_server_qps, read_detail_log, run_loadgen


def _sleeper(ms_per_batch: float):
    batches: list[int] = []

    def infer(indices: list[int]) -> None:
        batches.append(len(indices))
        time.sleep(ms_per_batch / 1000)
    return infer, batches


def test_offline_runs_batches_and_reads_the_detail_log(tmp_path):
    infer, batches = _sleeper(2.0)
    sut = BatchingSUT(infer, batch_size=4, instances=2)
    run = LoadGenRun(scenario="offline", min_duration_ms=600, expected_qps=6000)
    result = run_loadgen(sut, run, sample_count=256, log_dir=tmp_path / "offline")
    detail = read_detail_log(tmp_path / "offline" / "mlperf_log_detail.txt")
    assert result.samples_per_second == detail["result_samples_per_second"] > 500
    assert max(batches) == 4 and min(batches) >= 1
    assert (tmp_path / "offline" / "mlperf_log_summary.txt").is_file()


@pytest.mark.parametrize("scenario", ["singlestream", "multistream"])
def test_latency_scenarios_read_percentiles(tmp_path, scenario):
    infer, _ = _sleeper(1.0)
    run = LoadGenRun(scenario=scenario, min_duration_ms=500, min_query_count=100, expected_latency_ms=1.5)
    result = run_loadgen(BatchingSUT(infer, batch_size=8, instances=1), run, sample_count=64,
                         log_dir=tmp_path / scenario)
    assert 0.9 < result.latency_p90_ms < 20 and result.latency_p50_ms <= result.latency_p99_ms
    assert result.query_count >= 100


def test_server_run_reads_scheduled_rate_and_p99(tmp_path):
    infer, _ = _sleeper(2.0)
    run = LoadGenRun(scenario="server", min_duration_ms=600, min_query_count=50, target_qps=40.0,
                     latency_bound_ms=200.0)
    result = run_loadgen(BatchingSUT(infer, batch_size=2, instances=1), run, sample_count=64, log_dir=tmp_path)
    assert result.detail["requested_server_target_qps"] == 40.0
    assert 20 < result.samples_per_second < 60 and result.latency_p99_ms >= 2.0 and result.query_count >= 50


def _fake_probe(capacity: float, calls: list[float]):
    from autotune.backends._loadgen import LoadGenResult

    def probe(qps: float) -> LoadGenResult:
        calls.append(qps)
        p99 = 5.0 if qps <= capacity else 5.0 + 500.0 * (qps - capacity) / qps  # overload: p99 grows with the rate
        return LoadGenResult(scenario="server", valid=True, constraints_met=qps <= capacity, samples_per_second=qps,
                             latency_p50_ms=1.0, latency_p90_ms=2.0, latency_p99_ms=p99, query_count=600,
                             log_dir=Path("."))
    return probe


def test_server_search_doubles_then_bisects():
    calls: list[float] = []
    best, probes = find_server_qps(_fake_probe(330.0, calls), start_qps=100.0, bound_ms=15.0, max_probes=8)
    assert calls[:3] == [100.0, 200.0, 400.0] and calls[3] == 300.0
    assert len(probes) <= 8 and 320.0 <= best.samples_per_second <= 330.0


def test_server_search_halves_when_the_start_is_too_high_and_gives_up_cleanly():
    calls: list[float] = []
    best, _ = find_server_qps(_fake_probe(30.0, calls), start_qps=100.0, bound_ms=15.0, max_probes=6)
    assert calls[:3] == [100.0, 50.0, 25.0] and 25.0 <= best.samples_per_second <= 30.0
    best, probes = find_server_qps(_fake_probe(0.0, []), start_qps=100.0, bound_ms=15.0, max_probes=4)
    assert best is None and len(probes) == 2  # half the rate kept p99 as high: no lower rate is tried


def test_missing_log_is_a_clear_error(tmp_path):
    with pytest.raises(AutotuneError, match="wrote no mlperf_log_detail.txt"):
        read_detail_log(tmp_path / "mlperf_log_detail.txt")


def test_inference_errors_surface_after_the_run(tmp_path):
    def broken(indices: list[int]) -> None:
        raise RuntimeError("input shape mismatch")
    run = LoadGenRun(scenario="singlestream", min_duration_ms=100, min_query_count=10, expected_latency_ms=1)
    with pytest.raises(AutotuneError, match="input shape mismatch"):
        run_loadgen(BatchingSUT(broken, batch_size=1, instances=1), run, sample_count=8, log_dir=tmp_path)


class _AsyncRuntime:
    """Requests that finish on a timer thread after ``ms``, at most ``slots`` at once (an AsyncInferQueue's shape)."""

    def __init__(self, slots: int, ms: float, fail: bool = False) -> None:
        import threading

        self.free = threading.Semaphore(slots)
        self.ms, self.fail = ms, fail
        self.lock = threading.Lock()
        self.in_flight = self.most_in_flight = 0
        self.batches: list[int] = []
        self.completing_threads: set[int] = set()

    def wait_idle(self) -> None:
        self.free.acquire()
        self.free.release()

    def submit(self, indices: list[int], done) -> None:
        import threading

        self.free.acquire()
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.batches.append(len(indices))

        def finish() -> None:
            with self.lock:
                self.in_flight -= 1
                self.completing_threads.add(threading.get_ident())
            self.free.release()
            done(RuntimeError("request failed") if self.fail else None)
        threading.Timer(self.ms / 1000, finish).start()

    def drain(self) -> None:
        while self.in_flight:
            time.sleep(0.001)


def test_the_async_sut_keeps_requests_in_flight_and_completes_from_their_callbacks(tmp_path):
    from autotune.backends._loadgen import AsyncSUT

    runtime = _AsyncRuntime(slots=3, ms=2.0)
    sut = AsyncSUT(runtime.submit, batch_size=4, wait_idle=runtime.wait_idle, drain=runtime.drain)
    run = LoadGenRun(scenario="offline", min_duration_ms=500, expected_qps=6000)
    result = run_loadgen(sut, run, sample_count=256, log_dir=tmp_path / "offline")
    detail = read_detail_log(tmp_path / "offline" / "mlperf_log_detail.txt")
    assert result.samples_per_second == detail["result_samples_per_second"] > 0
    assert runtime.most_in_flight == 3 and max(runtime.batches) == 4  # three requests of four samples at once
    assert sut.feeder is not None and sut.feeder.ident not in runtime.completing_threads


def test_a_failed_asynchronous_request_surfaces_after_the_run(tmp_path):
    from autotune.backends._loadgen import AsyncSUT

    runtime = _AsyncRuntime(slots=1, ms=0.5, fail=True)
    run = LoadGenRun(scenario="singlestream", min_duration_ms=100, min_query_count=10, expected_latency_ms=1)
    with pytest.raises(AutotuneError, match="request failed"):
        run_loadgen(AsyncSUT(runtime.submit, batch_size=1, wait_idle=runtime.wait_idle, drain=runtime.drain), run,
                    sample_count=8, log_dir=tmp_path)
