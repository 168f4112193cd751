"""The task's accuracy on the read side: the trials' column, the report's rows, banner and figure, the preset's
accuracy with its reference, and a study of version 1 (output errors under ``accuracy``) read without them."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState, create_trial

from autotune.results import attrs
from autotune.results.export import winner_preset
from autotune.results.frame import trial_frame
from autotune.results.report import write_report
from autotune.search.tuner import Tuner
from fakes import FakeBackend, FakeCandidate
from jobs import fake_job


def test_a_judged_study_reports_and_exports_its_accuracy(tmp_path):
    tuner = Tuner(fake_job(tmp_path, FakeBackend(), trials=4, validate_top=1), progress=lambda _: None)
    tuner.study.enqueue_trial(tuner.job.identity.space.params_for(FakeCandidate(level=4, batch_size=2)))  # lossy: rejected
    tuner.run()
    frame = trial_frame(tuner.study)
    rejected = frame[frame["failure_stage"] == "accuracy"]
    assert len(rejected) and (rejected["accuracy"] < 0.5).all() and rejected["value"].isna().all()  # level 4
    assert (frame.loc[frame["outcome"] == "feasible", "accuracy"] == 1.0).all()
    page = write_report(tuner.study, tmp_path / "report").read_text()
    assert "<th>agreement</th>" in page and 'data-figure="accuracy"' in page and 'data-key="winner_accuracy"' in page
    assert 'data-key="random_inputs"' in page and "Accuracy on random inputs" in page
    assert "agreement: the fp32 reference (ONNX Runtime, the original model) scores 1.0000 on 32 samples" in page
    preset = winner_preset(tuner.study)
    accuracy = preset["accuracy"]
    assert (accuracy["metric"], accuracy["value"], accuracy["drop"]) == ("agreement", 1.0, 0.0)
    assert accuracy["note"].startswith("on random inputs") and accuracy["reference"]["judged_samples"] == 32
    assert accuracy["reference"]["options"]["accuracy_set"] is None


def test_version_1_output_errors_are_left_out_on_reading(tmp_path):
    study = optuna.create_study(direction="maximize")
    study.set_user_attr(attrs.SCHEMA_VERSION, 1)
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=10.0, user_attrs={
        attrs.CANDIDATE: {"batch_size": 1}, attrs.COMPILE_KEY: "k",
        attrs.ACCURACY: {"output": {"max_rel_error": 0.01, "cosine": 1.0}}}))
    [trial] = attrs.trials_of(study)
    assert attrs.ACCURACY not in trial.user_attrs
    assert trial_frame(attrs.upgraded(study))["accuracy"].isna().all()
