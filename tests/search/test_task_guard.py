"""The task-accuracy guard in a study: the reference computed once, each compile judged once, a compile beyond
--max-drop infeasible with stage ``accuracy`` (int8 of a model built to lose it; the float-layers fallback passes), a
metric that raises failing its own trial only."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from autotune import task_accuracy
from autotune.backends.ort import OrtBackend
from autotune.backends.ort.space import OrtCandidate
from autotune.models import with_calibration
from autotune.scenarios import SCENARIOS
from autotune.search.accuracy import accuracy_settings
from autotune.search.records import (MeasureSettings, RunEnvironment, SearchPolicy, StudyIdentity, TuningJob,
                                     ValidationSettings)
from autotune.search.tuner import Tuner

from fakes import FakeBackend, FakeCandidate
from helpers import outlier_classifier, spec_for
from jobs import fake_job


def strict_top1(outputs, labels):
    """A user's metric that refuses what it cannot believe: top-1 below one half raises."""
    top1 = float(np.mean(next(iter(outputs.values())).argmax(axis=1) == labels))
    if top1 < 0.5:
        raise ValueError(f"top-1 {top1:.2f} is not believable")
    return top1


def test_the_reference_is_computed_once_and_each_compile_judged_once(tmp_path, monkeypatch):
    made = []

    class Counted(task_accuracy.OrtModel):
        def __init__(self, *args, **kwargs):
            made.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(task_accuracy, "OrtModel", Counted)
    backend = FakeBackend()
    tuner = Tuner(fake_job(tmp_path, backend, trials=3, validate_top=0), progress=lambda _: None)
    tuner.study.enqueue_trial(tuner.job.identity.space.params_for(FakeCandidate()))  # the baseline's compile, searched
    tuner.study.enqueue_trial(tuner.job.identity.space.params_for(FakeCandidate(level=3, batch_size=4)))
    tuner.run()
    again, other, baseline = tuner.study.get_trials()[:3]  # the baseline, as given, is queued after those
    assert len(made) == 1  # the fp32 reference: once per study
    judged = len(tuner.accuracy.judge.judged)
    assert backend.log.outputs.count((1, 1)) == judged and backend.log.outputs.count((3, 4)) == judged // 4
    assert baseline.user_attrs["baseline"] and again.user_attrs["compile_key"] == baseline.user_attrs["compile_key"]
    assert again.user_attrs["accuracy"]["value"] == baseline.user_attrs["accuracy"]["value"] == 1.0
    assert baseline.user_attrs["accuracy"]["seconds"] < again.user_attrs["accuracy"]["seconds"]  # judged before
    resumed = Tuner(fake_job(tmp_path, backend, trials=1, validate_top=0, storage=tuner.job.identity.storage),
                    progress=lambda _: None)
    assert {baseline.user_attrs["compile_key"], other.user_attrs["compile_key"]} <= set(resumed.memory.accuracy)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """The classifier int8 breaks, and a labelled set of 100 samples (20 calibrate, 80 judge)."""
    return outlier_classifier(tmp_path_factory.mktemp("classifier"))


def _ort_job(tmp_path, classifier, **options) -> TuningJob:
    path, acc = classifier
    model = spec_for(path, "classifier")
    accuracy = accuracy_settings(path, model.file_inputs(), accuracy_set=str(acc), **options)
    model = with_calibration(model, accuracy.calibration)
    backend = OrtBackend()
    target = backend.target(model=model, scenario=SCENARIOS["offline"], devices=None)
    identity = StudyIdentity(name="guard", storage=optuna.storages.InMemoryStorage(), model=model, onnx_path=path,
                             scenario=SCENARIOS["offline"], bound_ms=None, backend=backend, space=target.space,
                             devices=[0], device_size=target.size, sku=target.sku, accuracy=accuracy)
    return TuningJob(identity=identity, search=SearchPolicy(n_trials=3, seed=0),
                     measure=MeasureSettings(seconds=0.3, busy_cpu_pct=100), validation=ValidationSettings(top=0),
                     environment=RunEnvironment(workdir=tmp_path / "work", cache_dir=tmp_path / "cache"))


def test_int8_beyond_max_drop_is_infeasible_and_keeping_two_layers_in_float_passes(tmp_path, classifier):
    tuner = Tuner(_ort_job(tmp_path, classifier), progress=lambda _: None)
    for candidate in (OrtCandidate(precision="int8", batch_size=16), OrtCandidate(precision="int8", float_layers=2,
                                                                                   batch_size=16), OrtCandidate()):
        tuner.study.enqueue_trial(tuner.job.identity.space.params_for(candidate))
    tuner.run()
    broken, mixed, fp32 = tuner.study.get_trials()
    assert broken.constraints == {"feasible": 1.0} and broken.user_attrs["failure_stage"] == "accuracy"
    assert broken.user_attrs["accuracy"]["metric"] == "top1" and broken.user_attrs["accuracy"]["value"] < 0.5
    assert "more than --max-drop 1%" in broken.user_attrs["failure_reason"]
    assert "figures" not in broken.user_attrs  # judged before it was measured
    assert mixed.constraints == {"feasible": 0.0} and mixed.user_attrs["accuracy"]["value"] >= 0.99
    assert fp32.constraints == {"feasible": 0.0} and fp32.user_attrs["accuracy"]["drop"] == 0.0
    reference = tuner.study.user_attrs["accuracy_reference"]
    assert (reference["metric"], reference["value"], reference["judged_set"]) == ("top1", 1.0, "acc.npz[20:100]")


def test_a_metric_that_raises_fails_its_own_trial_and_the_study_goes_on(tmp_path, classifier):
    lines: list[str] = []
    tuner = Tuner(_ort_job(tmp_path, classifier, metric="search.test_task_guard:strict_top1"), progress=lines.append)
    for candidate in (OrtCandidate(precision="int8", batch_size=16), OrtCandidate(batch_size=4)):
        tuner.study.enqueue_trial(tuner.job.identity.space.params_for(candidate))
    tuner.run()
    raised, fine = tuner.study.get_trials()[:2]
    assert raised.user_attrs["failure_stage"] == "accuracy" and raised.constraints == {"feasible": 1.0}
    assert raised.user_attrs["failure_reason"].startswith(
        "metric search.test_task_guard:strict_top1 raised ValueError: top-1 0.")
    assert fine.constraints == {"feasible": 0.0} and fine.user_attrs["accuracy"]["value"] == 1.0
    assert any("[search.test_task_guard:strict_top1 1]" in line for line in lines)


def test_layers_in_float_are_searched_only_once_int8_failed_the_guard(tmp_path, classifier):
    """The two-phase search on a model int8 breaks: no remedy before the int8 start fails; then that start is tried
    again with its remedy, one step at a time, until the fallback passes."""
    job = _ort_job(tmp_path, classifier)
    space = job.identity.space
    int8 = OrtCandidate(precision="int8", float_layers=2, batch_size=8)
    assert space.without_remedies(int8).float_layers == 0 and space.remedied(int8).float_layers == 4
    assert space.remedied(OrtCandidate(precision="int8", float_layers=8)) is None
    job.search.n_trials = 7
    tuner = Tuner(job, progress=lambda _: None)
    tuner.run()
    trials = tuner.study.get_trials()
    failed = next(t for t in trials if t.user_attrs.get("failure_stage") == "accuracy")
    assert failed.user_attrs["candidate"]["float_layers"] == 0
    assert all(t.user_attrs["candidate"].get("float_layers", 0) == 0 for t in trials[:failed.number])
    repairs = [t for t in trials if t.user_attrs.get("repair_of") is not None]
    assert repairs[0].user_attrs["repair_of"] == failed.number
    assert repairs[0].user_attrs["candidate"]["float_layers"] == 1
    assert any(t.user_attrs["candidate"].get("float_layers") and t.constraints == {"feasible": 0.0} for t in repairs)
