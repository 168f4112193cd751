"""The tuner and the pipeline on the in-memory fake target: no emulator, no subprocess."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autotune.errors import DeviceFailure
from autotune.results.report import write_report
from autotune.scenarios import SCENARIOS
from autotune.search.study import enqueue_baseline
from autotune.search.tuner import Tuner
from fakes import FakeBackend, FakeCandidate, throughput
from jobs import fake_job as _job


def _enqueue(tuner: Tuner, *candidates: FakeCandidate) -> None:
    for c in candidates:
        tuner.study.enqueue_trial(tuner.job.identity.space.params_for(c))


def test_a_study_on_the_fake_measures_the_baseline_first_and_validates_the_best(tmp_path):
    backend = FakeBackend()
    tuner = Tuner(_job(tmp_path, backend, trials=8), progress=lambda _: None)
    summary = tuner.run()
    trials = tuner.study.get_trials()
    assert trials[0].user_attrs["baseline"] and trials[0].value == throughput(FakeCandidate())
    assert summary["baseline_trial"] == 0 and summary["winner_value"] == max(t.value for t in trials)
    assert trials[0].user_attrs["preset_fields"]["fake_run_command"].startswith("fake-run --out toy-t0 ")
    assert trials[0].user_attrs["concurrency"] == 1
    stored = tuner.study.user_attrs
    assert (stored["backend"], stored["slots"], stored["size_unit"], stored["device_word"]) == \
        ("fake", 16, "slots", "slot")
    assert stored["emulated"] is True and stored["export_formats"] == ["yaml", "json", "cmdline"]


def test_compile_failures_are_infeasible_once_and_never_compiled_again(tmp_path):
    backend = FakeBackend(fail_level=2)
    tuner = Tuner(_job(tmp_path, backend, trials=3, baseline=None), progress=lambda _: None)
    _enqueue(tuner, FakeCandidate(level=2, batch_size=1), FakeCandidate(level=2, batch_size=2),
             FakeCandidate(level=3))
    tuner.run()
    first, again, fine = tuner.study.get_trials()
    assert first.constraints == again.constraints == {"feasible": 1.0}
    assert first.user_attrs["failure_reason"] == "level 2 does not compile"
    assert again.user_attrs["failure_reason"] == "level 2 does not compile"
    assert fine.constraints == {"feasible": 0.0} and backend.log.compiles == [(3, 1)]


def test_broken_rules_are_told_as_infeasible_without_compiling(tmp_path):
    backend = FakeBackend()  # suggestions never break its rule; a baseline is taken as given, and this one does
    tuner = Tuner(_job(tmp_path, backend, trials=1, baseline=FakeCandidate(batch_size=8, streams=4), validate_top=0),
                  progress=lambda _: None)
    tuner.run()
    trial, compiled = tuner.study.get_trials()  # a broken rule costs no compile: the budget's one went to the next
    assert trial.user_attrs["failure_stage"] == "constraint" and "more than 16 slots" in trial.user_attrs[
        "failure_reason"]
    assert backend.log.compiles == [tuple(compiled.params.values())]


def test_one_trial_is_one_compile_whose_runtime_knobs_are_searched_and_stored(tmp_path):
    backend = FakeBackend()
    lines: list[str] = []
    tuner = Tuner(_job(tmp_path, backend, trials=2, baseline=None, validate_top=0), progress=lines.append)
    _enqueue(tuner, FakeCandidate(level=3, batch_size=4), FakeCandidate(level=3, batch_size=4))
    tuner.run()
    first, duplicate, second_compile = tuner.study.get_trials()  # the duplicate does not count as a compile
    assert backend.log.compiles[0] == (3, 4) and len(backend.log.compiles) == 2
    assert [d for d, key in backend.log.measurements if key == (3, 4)] == [0, 0, 0]  # streams 1, 2 and 3
    assert [m["candidate"]["streams"] for m in first.user_attrs["measurements"]] == [1, 2, 3]
    assert first.user_attrs["candidate"]["streams"] == 2 and first.value == throughput(
        FakeCandidate(level=3, batch_size=4, streams=2))
    assert first.user_attrs["proposal"]["streams"] == 1 and first.params == {"level": 3, "batch_size": 4}
    assert duplicate.user_attrs["duplicate_of"] == 0 and duplicate.value == first.value
    assert "[best of 3 runtime settings]" in lines[0]


def test_trials_count_compiles_and_an_exhausted_space_ends_the_run(tmp_path):
    backend = FakeBackend()
    lines: list[str] = []
    tuner = Tuner(_job(tmp_path, backend, trials=30, scenario="singlestream", validate_top=0), progress=lines.append)
    tuner.run()
    assert len(backend.log.compiles) == 4  # four levels: the whole singlestream space
    assert any(line.startswith("the search space holds no new compile setting: stopped after 4") for line in lines)


def test_compiles_run_ahead_while_two_devices_measure_at_once(tmp_path):
    backend = FakeBackend(devices=2, compile_seconds=0.05, measure_seconds=0.2)
    tuner = Tuner(_job(tmp_path, backend, trials=8, baseline=None, validate_top=0, compile_jobs=4),
                  progress=lambda _: None)
    _enqueue(tuner, *(FakeCandidate(level=lv, batch_size=b) for lv in (1, 2, 3, 4) for b in (1, 2)))
    tuner.run()
    assert all(t.state == TrialState.COMPLETE for t in tuner.study.get_trials())
    assert backend.log.most_in_flight == 2 and {d for d, _ in backend.log.measurements} == {0, 1}
    assert tuner.stats.busy_fraction() > 0.5


def test_a_failing_device_is_set_aside_and_the_trial_measured_on_the_other(tmp_path):
    backend = FakeBackend(devices=2, statuses={})
    lines: list[str] = []
    tuner = Tuner(_job(tmp_path, backend, trials=3, baseline=None, validate_top=0, compile_jobs=1),
                  progress=lines.append)
    backend.statuses[1] = "Error"  # after the target was chosen: it fails mid-run
    _enqueue(tuner, FakeCandidate(level=1), FakeCandidate(level=2), FakeCandidate(level=3))
    tuner.run()
    assert all(t.state == TrialState.COMPLETE and t.constraints == {"feasible": 0.0}
               for t in tuner.study.get_trials())
    assert any(line.startswith("device slot 1 set aside") and "it reports Error" in line for line in lines)
    assert {d for d, _ in backend.log.measurements} == {0}


def test_no_usable_device_stops_the_run_with_no_trial_left_running(tmp_path):
    backend = FakeBackend(devices=1)
    tuner = Tuner(_job(tmp_path, backend, trials=2, baseline=None), progress=lambda _: None)
    backend.statuses[0] = "Error"
    with pytest.raises(DeviceFailure, match="no usable device left \\(slot 0: slot 0 is Error\\)"):
        tuner.run()
    assert backend.cancelled
    assert [t.state for t in tuner.study.get_trials()] == [TrialState.FAIL]


def test_server_and_singlestream_values_come_from_the_measurement(tmp_path):
    for scenario, key in (("server", "server_qps"), ("singlestream", "p90_ms")):
        tuner = Tuner(_job(tmp_path, FakeBackend(), trials=2, scenario=scenario, study_name=scenario),
                      progress=lambda _: None)
        tuner.run()
        first = tuner.study.get_trials()[0]
        assert first.user_attrs["scenario_figures"][key] == pytest.approx(first.value)


def test_the_accuracy_guard_rejects_a_lossy_setting_and_accepts_the_exact_ones(tmp_path):
    backend = FakeBackend()
    tuner = Tuner(_job(tmp_path, backend, trials=2, baseline=None, validate_top=0), progress=lambda _: None)
    _enqueue(tuner, FakeCandidate(level=4, batch_size=2), FakeCandidate(level=3, batch_size=2))
    tuner.run()
    lossy, exact = tuner.study.get_trials()
    assert lossy.constraints == {"feasible": 1.0} and lossy.user_attrs["failure_stage"] == "accuracy"
    assert "below the fp32 reference's 1, more than --max-drop 1%" in lossy.user_attrs["failure_reason"]
    assert lossy.user_attrs["accuracy"]["metric"] == "agreement" and lossy.user_attrs["accuracy"]["value"] < 0.5
    assert exact.constraints == {"feasible": 0.0} and exact.user_attrs["accuracy"]["value"] == 1.0
    assert exact.user_attrs["accuracy"]["drop"] == 0.0 and exact.user_attrs["accuracy"]["seconds"] >= 0
    assert tuner.study.user_attrs["accuracy_reference"]["random_inputs"]


def test_the_baseline_is_measured_again_on_every_tenth_trial_and_its_drift_is_stored_and_reported(tmp_path):
    calls = [0]

    def drifting(candidate: FakeCandidate) -> float:
        calls[0] += 1
        return throughput(candidate) * (1.0 if calls[0] <= 3 else 1.1)  # the machine speeds up after the baseline

    backend = FakeBackend(surface=drifting)
    lines: list[str] = []
    tuner = Tuner(_job(tmp_path, backend, trials=11, validate_top=0), progress=lines.append)
    enqueue_baseline(tuner.study, tuner.job.identity)
    _enqueue(tuner, *[FakeCandidate(level=lv, batch_size=b) for lv in (1, 2, 3) for b in (1, 2, 4, 8)][1:11])
    tuner.run()
    trials = tuner.study.get_trials()
    checked = {t.number: t.user_attrs["baseline_check"] for t in trials if "baseline_check" in t.user_attrs}
    assert list(checked) == [10] and checked[10]["trial"] == 0 and checked[10]["drift_pct"] == pytest.approx(10.0)
    baseline_key = FakeCandidate().compile_key()
    assert [key for _, key in backend.log.measurements].count(baseline_key) == 3 + 1
    assert any(line.split()[1] == "#10" and "[baseline again: +10.0%]" in line for line in lines)
    assert tuner.memory.noise.drift == pytest.approx(0.10)
    page = write_report(tuner.study, tmp_path / "report").read_text()
    assert "+10.0% (trial 10)" in page


class _Vanishing(FakeBackend):
    """Deletes the baseline's compiled artifact as it is measured (or, ``at="outputs"``, as its outputs are checked
    for accuracy): the first time only, or every time (``always``)."""

    def __init__(self, *, always: bool = False, at: str = "measure", **kwargs) -> None:
        super().__init__(**kwargs)
        self.always = always
        self.at = at
        self.deleted: list[Path] = []

    def _vanish(self, artifact, candidate, stage: str) -> None:
        if stage == self.at and candidate.compile_key() == FakeCandidate().compile_key() and \
                (self.always or not self.deleted):
            artifact.path.unlink(missing_ok=True)
            self.deleted.append(artifact.path)

    def measure(self, artifact, candidate, **kwargs):
        self._vanish(artifact, candidate, "measure")
        return super().measure(artifact, candidate, **kwargs)

    def outputs(self, artifact, candidate, **kwargs):
        self._vanish(artifact, candidate, "outputs")
        return super().outputs(artifact, candidate, **kwargs)


@pytest.mark.parametrize("compile_jobs", [0, 2], ids=["in-line", "compiles-ahead"])
@pytest.mark.parametrize("at", ["measure", "outputs"], ids=["measured", "accuracy-checked"])
def test_an_artifact_deleted_under_the_run_is_compiled_again_and_the_candidate_not_blamed(tmp_path, compile_jobs,
                                                                                          at):
    said: list[str] = []
    backend = _Vanishing(at=at)
    tuner = Tuner(_job(tmp_path, backend, trials=3, validate_top=0, compile_jobs=compile_jobs), progress=said.append)
    tuner.run()
    first = tuner.study.trials[0]
    assert first.state == TrialState.COMPLETE and first.value == throughput(FakeCandidate())
    assert backend.log.compiles.count(FakeCandidate().compile_key()) == 2
    assert any(line.startswith(f"trial #0: its compiled artifact {backend.deleted[0]} was deleted before it was "
                               f"measured (was the compile cache cleared?): compiling it again") for line in said)

    always = _Vanishing(always=True, at=at)
    tuner = Tuner(_job(tmp_path / "again", always, trials=1, validate_top=0, compile_jobs=compile_jobs),
                  progress=lambda _: None)
    tuner.run()
    (trial,) = tuner.study.trials
    assert trial.state == TrialState.FAIL and trial.user_attrs["failure_stage"] == "measure"  # proposed again
    assert "was deleted before it was measured" in trial.user_attrs["failure_reason"]
    assert len(always.log.compiles) == 2


@pytest.mark.parametrize("when", ["before", "during"], ids=["deleted-before-the-check", "deleted-during-it"])
def test_a_drift_check_without_the_baselines_artifact_is_skipped_with_a_line(tmp_path, when):
    lines: list[str] = []
    backend = FakeBackend()
    tuner = Tuner(_job(tmp_path, backend, trials=12, validate_top=0), progress=lines.append)
    original = backend.measure

    def measure(artifact, candidate, **kwargs):
        baseline = Path(tuner.study.trials[0].user_attrs.get("artifact_path", "none"))
        label = kwargs["log_dir"].name
        due = label.endswith("-baseline") if when == "during" else not label.startswith("trial-0")
        if due and baseline.is_file():  # deleted once the baseline was measured, or as the check measures it
            baseline.unlink()
        return original(artifact, candidate, **kwargs)

    backend.measure = measure
    tuner.run()
    trials = tuner.study.get_trials()
    baseline_key = FakeCandidate().compile_key()
    assert backend.log.compiles.count(baseline_key) == 1  # nothing brought the baseline's artifact back
    due = [t for t in trials if t.number and t.number % 10 == 0 and t.user_attrs.get("measurements")]
    assert due and all(t.state == TrialState.COMPLETE and "baseline_check" not in t.user_attrs for t in due)
    skipped = [line for line in lines if "no drift check: the baseline's compiled artifact" in line]
    assert [line.split()[1] for line in skipped] == [f"#{t.number}:" for t in due]
    assert all(trials[0].user_attrs["artifact_path"] in line for line in skipped)


@pytest.mark.parametrize("cached", [False, True])
def test_trials_count_compiles_when_compiles_run_ahead(tmp_path, cached):
    backend = FakeBackend()
    job = _job(tmp_path, backend, trials=2, validate_top=0, compile_jobs=2,
               cache_dir=tmp_path / "cache" if cached else None)
    tuner = Tuner(job, progress=lambda _: None)
    _enqueue(tuner, FakeCandidate())  # the baseline's flags, its runtime knobs searched, beside the baseline
    tuner.run()
    assert len(backend.log.compiles) == 2  # every compile made is counted
    if cached:  # a compile of the same flags in flight is waited for through the cache, not made again
        assert len({t.user_attrs["compile_key"] for t in tuner.study.get_trials()}) == 2
