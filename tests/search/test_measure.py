"""The measure stage on the in-memory fake target: the runtime search on one compiled artifact, repeats of a setting
near the study's best (the baseline's always), no runtime search for a compile far from the best, and the verdict by
the median of a setting's measurements."""

from __future__ import annotations

from pathlib import Path

from autotune.backends.base import Measurement
from autotune.errors import MeasureFailure
from autotune.objective import Outcome
from autotune.search.noise import BASELINE_REPEATS, REPEATS
from autotune.search.records import Flight, Try
from autotune.search.tuner import Tuner
from fakes import FakeBackend, FakeCandidate, FakeSpace, throughput
from jobs import fake_job

SPACE = FakeSpace(scenario="offline")
PROPOSED = FakeCandidate(level=3, batch_size=4, streams=1)
BEST = FakeCandidate(level=3, batch_size=4, streams=2)  # the fake's best streams for these flags


def _tuner(tmp_path: Path, backend: FakeBackend | None = None) -> Tuner:
    return Tuner(fake_job(tmp_path, backend or FakeBackend()), progress=lambda _: None)


def _compiled(tuner: Tuner, candidate: FakeCandidate, **user_attrs) -> Flight:
    """A flight of ``candidate`` as the compile stage hands it to the measure stage."""
    tuner.study.enqueue_trial(SPACE.params_for(candidate), user_attrs=user_attrs)
    flight = tuner.proposer.admit([])
    flight.artifact, flight.reused = tuner.evaluator.compile(flight.candidate)
    return flight


def test_the_runtime_knobs_are_searched_on_the_one_compiled_artifact(tmp_path):
    backend = FakeBackend()
    tuner = _tuner(tmp_path, backend)
    flight = _compiled(tuner, PROPOSED)
    tries = tuner.measurer.measure(flight, 0)
    assert [t.candidate.streams for t in tries] == [1, 2, 3]  # more streams while they help, then one past
    assert backend.log.compiles == [(3, 4)] and backend.log.measurements == [(0, (3, 4))] * 3
    assert tries[1].outcome.value == throughput(BEST) and tries[1].measurement.log_path.name == "trial-0-1"
    record = tuner.measurer.judged(flight, tries)
    assert record.feasible and record.value == throughput(BEST)
    assert record.attrs["candidate"] == BEST.to_dict() and record.attrs["proposal"] == PROPOSED.to_dict()
    assert [m["candidate"]["streams"] for m in record.attrs["measurements"]] == [1, 2, 3]
    assert record.attrs["artifact_path"] == str(flight.artifact.path)


def test_the_best_setting_is_measured_again_when_it_could_be_the_studys_best(tmp_path):
    tuner = _tuner(tmp_path)
    tuner.memory.noise.offer(throughput(BEST) * 1.01)  # within the noise of the best so far
    tuner.memory.noise.gained(throughput(PROPOSED), throughput(BEST))  # runtime searches gained this much before
    tries = tuner.measurer.measure(_compiled(tuner, PROPOSED), 0)
    assert [t.candidate.streams for t in tries] == [1, 2, 3] + [2] * REPEATS
    assert [t.measurement.log_path.name for t in tries[3:]] == [f"trial-0-again{i}" for i in range(REPEATS)]


def test_a_compile_far_from_the_best_gets_no_runtime_search_and_no_repeat(tmp_path):
    tuner = _tuner(tmp_path)
    tuner.memory.noise.offer(throughput(BEST) * 3)
    tries = tuner.measurer.measure(_compiled(tuner, PROPOSED), 0)
    assert [t.candidate for t in tries] == [PROPOSED]


def test_the_baseline_is_measured_as_given_and_repeated(tmp_path):
    tuner = _tuner(tmp_path)
    tries = tuner.measurer.measure(_compiled(tuner, FakeCandidate(), baseline=True), 0)
    assert [t.candidate for t in tries] == [FakeCandidate()] * BASELINE_REPEATS


def _try(candidate: FakeCandidate, value: float) -> Try:
    measurement = Measurement(samples_per_second=value, duration_seconds=1.0, batch_size=candidate.batch_size,
                              command=["fake-run", str(value)], log_path=Path("runs") / str(value))
    return Try(candidate=candidate, measurement=measurement, outcome=Outcome(value=value, feasible=True))


def test_the_verdict_is_the_setting_with_the_best_median_and_its_measurement_nearest_that_median(tmp_path):
    tuner = _tuner(tmp_path)
    flight = _compiled(tuner, PROPOSED)
    flight.measure_started = 0.0
    lucky = [_try(PROPOSED, v) for v in (100.0, 300.0, 110.0)]  # one lucky run: median 110
    steady = [_try(BEST, v) for v in (150.0, 140.0, 146.0)]  # median 146
    record = tuner.measurer.judged(flight, lucky + steady)
    assert record.feasible and record.value == 146.0
    assert record.attrs["candidate"] == BEST.to_dict() and record.attrs["measure_argv"] == ["fake-run", "146.0"]
    assert [m["value"] for m in record.attrs["measurements"]] == [100.0, 300.0, 110.0, 150.0, 140.0, 146.0]


def test_a_setting_that_cannot_run_is_a_try_with_its_reason_and_none_running_fails_the_trial(tmp_path):
    class Refusing(FakeBackend):
        def measure(self, artifact, candidate, **kwargs):
            raise MeasureFailure(f"{candidate.streams} streams do not fit")
    tuner = _tuner(tmp_path, Refusing())
    flight = _compiled(tuner, PROPOSED)
    tries = tuner.measurer.measure(flight, 0)
    assert [(t.candidate, t.failure.reason) for t in tries] == [(PROPOSED, "1 streams do not fit")]
    record = tuner.measurer.judged(flight, tries)
    assert not record.feasible and not record.retry
    assert (record.attrs["failure_stage"], record.attrs["failure_reason"]) == ("measure", "1 streams do not fit")
    assert record.attrs["measurements"][0]["reason"] == "1 streams do not fit"
