from __future__ import annotations

import time

import pytest

from autotune.backends._host_load import CpuSample, CpuWatch, load_between, wait_for_quiet
from cpu_load import load_every_cpu, stop


def _samples(*, busy_s: float, own_s: float, cpus: int = 4, seconds: float = 2.0) -> tuple[CpuSample, CpuSample]:
    return (CpuSample(wall=10.0, busy_s=100.0, own_s=5.0, cpus=cpus),
            CpuSample(wall=10.0 + seconds, busy_s=100.0 + busy_s, own_s=5.0 + own_s, cpus=cpus))


def test_other_processes_count_only_for_what_they_take_from_the_cores_measured():
    # 4 CPUs, a measurement on 2 of them for 2 s; others used 1 CPU: it fits on the 2 left free
    assert load_between(*_samples(busy_s=6.0, own_s=4.0), cores=2)["other_pct"] == 0.0
    # others used 3 CPUs: one of them was taken from the measurement's 2 cores
    load = load_between(*_samples(busy_s=10.0, own_s=4.0), cores=2)
    assert load["other_pct"] == 50.0 and load["other_cores"] == 3.0 and load["cores"] == 2 and load["cpus"] == 4
    # a measurement meant for every CPU shares all of them
    assert load_between(*_samples(busy_s=10.0, own_s=8.0), cores=4)["other_pct"] == 25.0


@pytest.mark.alone
def test_a_cpu_loaded_by_other_processes_is_seen():
    loaders = load_every_cpu(3.0)
    try:
        time.sleep(0.5)  # the loaders are running
        watch = CpuWatch(cores=len(loaders))
        time.sleep(1.0)
        load = watch.stop()
    finally:
        stop(loaders)
    assert load is not None and load["other_pct"] > 50, load  # this idle process saw them take the CPUs


def test_the_wait_for_quiet_ends_with_the_first_quiet_window(monkeypatch):
    shares = iter([90.0, 60.0, 10.0, 90.0])

    class Watch:
        def __init__(self, *, cores: int) -> None:
            pass

        def stop(self) -> dict:
            return {"other_pct": next(shares)}
    monkeypatch.setattr("autotune.backends._host_load.CpuWatch", Watch)
    quiet, _, load = wait_for_quiet(cores=2, max_pct=25, max_wait_s=30, sleep=lambda s: None)
    assert quiet and load == {"other_pct": 10.0}


@pytest.mark.alone
def test_the_wait_for_a_quiet_host_is_bounded():
    loaders = load_every_cpu(10.0)
    try:
        time.sleep(0.5)
        started = time.monotonic()
        quiet, waited, load = wait_for_quiet(cores=len(loaders), max_pct=10, max_wait_s=1.0, window_s=0.5)
        assert not quiet and load["other_pct"] > 10 and time.monotonic() - started < 3
    finally:
        stop(loaders)
