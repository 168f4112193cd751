"""The task-accuracy guard's settings: sets read and split, random inputs where none is given, the record a study
stores, and the same settings built again from it (or refused where the samples changed)."""

from __future__ import annotations

import numpy as np
import pytest

from autotune.errors import AutotuneError
from autotune.search.accuracy import RANDOM_NOTE, accuracy_settings, stored_settings
from autotune.synthetic import outlier_classifier_samples
from autotune.task_accuracy import RANDOM_SAMPLES, load_set
from helpers import outlier_classifier, spec_for


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    path, accuracy_set = outlier_classifier(tmp_path_factory.mktemp("classifier"), 50)
    return path, spec_for(path, "classifier").file_inputs(), accuracy_set


def test_without_a_set_random_inputs_judge_by_agreement_and_calibrate_a_synthetic_model_only(classifier):
    path, inputs, _ = classifier
    plain = accuracy_settings(path, inputs)
    assert plain.random and plain.calibration is None and plain.judge.metric.name == "agreement"
    assert len(plain.judge.judged) == RANDOM_SAMPLES * 4 // 5 and plain.judge.judged.labels is None
    synthetic = accuracy_settings(path, inputs, synthetic=True)
    calibration = synthetic.calibration
    assert len(calibration) == RANDOM_SAMPLES // 5 and synthetic.judge.judged == plain.judge.judged
    assert calibration.path.is_file() and load_set(calibration.path, inputs).sha256 == calibration.sha256
    assert accuracy_settings(path, inputs, synthetic=True).calibration.sha256 == calibration.sha256  # seeded
    record = synthetic.record()
    assert record["random_inputs"] and record["note"] == RANDOM_NOTE and record["value"] == 1.0
    assert RANDOM_NOTE in synthetic.describe()


def test_an_accuracy_set_calibrates_with_its_first_part_and_judges_with_the_rest(classifier):
    path, inputs, acc = classifier
    settings = accuracy_settings(path, inputs, accuracy_set=str(acc), max_drop="0.02")
    assert not settings.random and settings.judge.metric.name == "top1"  # labels: top1 by default
    record = settings.record()
    assert (record["calibration_set"], record["calibration_samples"]) == ("acc.npz[0:10]", 10)
    assert (record["judged_set"], record["judged_samples"]) == ("acc.npz[10:50]", 40)
    assert record["max_drop"] == "0.02" and record["allowed_drop"] == 0.02 and "note" not in record
    assert record["options"]["accuracy_set"] == str(acc.resolve())
    assert settings.calibration.path.is_file() and settings.calibration.path != acc


def test_stored_settings_build_the_same_and_refuse_changed_samples(classifier, tmp_path):
    path, inputs, acc = classifier
    record = accuracy_settings(path, inputs, accuracy_set=str(acc), metric="agreement").record()
    again = stored_settings(record, path, inputs).record()
    assert again.pop("seconds") >= 0 and again == {k: v for k, v in record.items() if k != "seconds"}  # timed anew
    x, labels = outlier_classifier_samples(50, seed=5)
    np.savez(tmp_path / "moved.npz", x=x, labels=labels)
    with pytest.raises(AutotuneError, match=r"the judged samples \(acc.npz\[10:50\]\) are not those the preset was "
                                            r"judged on \(their SHA-256 differs\): give --accuracy-set"):
        stored_settings(record, path, inputs, accuracy_set=str(tmp_path / "moved.npz"))
