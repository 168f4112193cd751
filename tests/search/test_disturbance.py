from __future__ import annotations

from autotune.backends.base import Measurement
from autotune.search.disturbance import Disturbance, disturbed_attr


def _measurement(other_pct: float | None) -> Measurement:
    load = None if other_pct is None else {"other_pct": other_pct, "other_cores": 1.0, "cores": 2}
    return Measurement(samples_per_second=100.0, duration_seconds=1.0, batch_size=1, host_load=load)


def test_an_undisturbed_measurement_is_kept_and_a_target_off_the_cpu_is_never_judged():
    said: list[str] = []
    rule = Disturbance(max_pct=25, max_wait_s=1, progress=said.append)
    quiet = rule.measured(lambda: _measurement(3.0), "t")
    assert quiet.host_load["disturbed"] is False and "measured_again" not in quiet.host_load
    assert rule.measured(lambda: _measurement(None), "t").host_load is None
    assert said == [] and disturbed_attr([quiet, None]) == []
    assert not Disturbance(max_pct=100, max_wait_s=1, progress=said.append).disturbed({"other_pct": 100.0})


def test_a_measurement_on_a_host_that_stays_busy_is_kept_marked_and_later_ones_wait_one_window(monkeypatch):
    waits: list[float] = []

    def wait_for_quiet(**kwargs):
        waits.append(kwargs["max_wait_s"])
        return False, kwargs["max_wait_s"], None
    monkeypatch.setattr("autotune.search.disturbance.wait_for_quiet", wait_for_quiet)
    said: list[str] = []
    rule = Disturbance(max_pct=25, max_wait_s=30, progress=said.append)
    kept = rule.measured(lambda: _measurement(80.0), "t-1")
    assert kept.host_load["disturbed"] is True and kept.host_load["measured_again"] == {"other_pct": [],
                                                                                          "waited_s": 30.0}
    assert disturbed_attr([kept]) == [{"measurement": 0, "other_pct": [80.0], "waited_s": 30.0,
                                       "kept_disturbed": True}]
    assert said[0] == ("measurement t-1: other processes took 80% of the 2 cores it ran on (1.0 CPUs busy besides it):"
                       " measuring again once the host is quiet (waiting up to 30 s)")
    assert said[1].startswith("measurement t-1: the host stayed busy for 30 s: kept, and marked disturbed")
    rule.measured(lambda: _measurement(80.0), "t-2")
    assert waits == [30, 0.0] and said[-1].endswith("the host is still busy: kept, and marked disturbed on the trial")


def test_a_measurement_disturbed_every_time_is_measured_again_at_most_twice(monkeypatch):
    monkeypatch.setattr("autotune.search.disturbance.wait_for_quiet", lambda **kwargs: (True, 1.0, None))
    said: list[str] = []
    runs: list[int] = []

    def measure() -> Measurement:
        runs.append(1)
        return _measurement(80.0)
    kept = Disturbance(max_pct=25, max_wait_s=30, progress=said.append).measured(measure, "t")
    assert len(runs) == 3 and kept.host_load["measured_again"] == {"other_pct": [80.0, 80.0], "waited_s": 2.0}
    assert said[-1] == ("measurement t: still disturbed after 2 more measurements: kept, and marked disturbed on "
                        "the trial")
