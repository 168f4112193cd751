"""``--accuracy-set``, ``--calibration-set``, ``--metric`` and ``--max-drop`` from the command line: bad input
refused on one line before any study is made; a study judged by its task accuracy, its report and preset carrying it, the
preset's bench line calibrating as the study did, and ``verify`` judging the accuracy again."""

from __future__ import annotations

import shlex

import numpy as np
import pytest
import yaml

from autotune.storage import load_study
from autotune.synthetic import outlier_classifier_samples
from helpers import one_line_error, outlier_classifier, run_cli


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """The classifier int8 breaks and a labelled accuracy set of 100 samples (20 calibrate, 80 judge)."""
    folder = tmp_path_factory.mktemp("classifier")
    return outlier_classifier(folder)[0], folder


def _arrays(classifier, **changes):
    x, labels = outlier_classifier_samples(10)
    arrays = {"x": x, "labels": labels} | changes
    return {name: value for name, value in arrays.items() if value is not None}


BAD_SETS = [
    ({"x": None}, "--accuracy-set: bad.npz lacks input 'x'"),
    ({"y": np.zeros((10, 1, 32), np.float32)}, "bad.npz has 'y', which is not an input of the model"),
    ({"x": np.zeros((10, 1, 32), np.float64)}, "'x' is float64; the model's input takes float32"),
    ({"x": np.zeros((10, 1, 16), np.float32)}, "'x' has shape (1, 16); the model's input x[batch_size,32] needs 32"),
    ({"labels": np.arange(9)}, "labels has shape (9,); it needs one label per sample (10,)"),
]


@pytest.mark.parametrize("option", ["--accuracy-set", "--calibration-set"])
@pytest.mark.parametrize("changes, message", BAD_SETS)
def test_a_set_that_does_not_fit_the_model_is_refused_before_any_study(classifier, tmp_path, capsys, option, changes,
                                                                       message):
    path, _ = classifier
    np.savez(tmp_path / "bad.npz", **_arrays(classifier, **changes))
    line = one_line_error(*_run(capsys, path, tmp_path, option, str(tmp_path / "bad.npz"))[::2])
    assert message.replace("--accuracy-set", option) in line
    assert not (tmp_path / "s.db").exists()  # no study: nothing stored


@pytest.mark.parametrize("options, message", [
    (["--metric", "top1"], "--metric top1 needs labels"),
    (["--metric", "no_such_module:score"], "--metric no_such_module:score: cannot import it"),
    (["--max-drop", "1 percent"], "--max-drop '1 percent': give a percentage"),
    (["--max-drop", "150%"], "--max-drop '150%'"),
    (["--accuracy-set", "{acc}", "--metric", "test_task_accuracy:failing_metric"],
     "on the fp32 reference outputs, metric test_task_accuracy:failing_metric raised ValueError"),
])
def test_a_bad_metric_or_drop_is_refused_before_any_study(classifier, tmp_path, capsys, options, message):
    path, folder = classifier
    line = one_line_error(*_run(capsys, path, tmp_path, *(o.format(acc=folder / "acc.npz") for o in options))[::2])
    assert message in line and not (tmp_path / "s.db").exists()


def test_a_users_model_without_a_set_is_not_judged_and_says_how_to_search_int8(classifier, tmp_path, capsys):
    path, _ = classifier
    code, out, err = _run(capsys, path, tmp_path)
    assert code == 0, err
    assert "int8: not searched without a calibration set: give --accuracy-set to search int8" in out
    assert "accuracy:" not in out  # ONNX Runtime's session settings keep the numbers: nothing to judge
    study = load_study(f"sqlite:///{tmp_path / 's.db'}", "classifier-offline-ort-" + out.split("-ort-")[1].split()[0])
    assert "accuracy_reference" not in study.user_attrs and "accuracy" not in study.trials[0].user_attrs


NO_BUSY_CHECK = ("--busy-cpu", "100")  # a shared test machine is rarely quiet (test_busy_host.py)


def _run(capsys, onnx, tmp_path, *options: str, trials: int = 1):
    return run_cli(capsys, "run", "--backend", "ort", "--model", "classifier", "--onnx", str(onnx), "--scenario",
                   "offline", "--storage", f"sqlite:///{tmp_path / 's.db'}", "--workdir", str(tmp_path / "w"),
                   "--trials", str(trials), "--measure-time", "0.3", "--validate-time", "0.3", "--validate-rounds",
                   "3", "--validate-max-rounds", "3", *NO_BUSY_CHECK, "--seed", "0", *options)


@pytest.mark.slow
def test_a_judged_study_reports_exports_benches_and_verifies_its_accuracy(classifier, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path, folder = classifier
    acc = tmp_path / "acc.npz"
    acc.write_bytes((folder / "acc.npz").read_bytes())
    code, out, err = _run(capsys, path, tmp_path, "--accuracy-set", str(acc), trials=6)
    assert code == 0, err
    assert ("accuracy: top1 on 80 samples of acc.npz[20:100], fp32 reference 1, --max-drop 1%; int8 calibrated on "
            "20 samples of acc.npz[0:20]") in out and "[top1 1]" in out
    study = load_study(f"sqlite:///{tmp_path / 's.db'}", "classifier-offline-ort-" + out.split("-ort-")[1].split()[0])
    broken = [t for t in study.trials if t.user_attrs.get("failure_stage") == "accuracy"]
    assert broken and broken[0].user_attrs["candidate"]["precision"] == "int8"
    code, _, err = run_cli(capsys, "report", study.study_name, "--storage", f"sqlite:///{tmp_path / 's.db'}")
    page = (tmp_path / "reports" / study.study_name / "index.html").read_text()
    assert code == 0 and "<th>top1</th>" in page and 'data-figure="accuracy"' in page and "winner_accuracy" in page
    presets = tmp_path / "presets.yaml"
    code, _, err = run_cli(capsys, "export", study.study_name, "--storage", f"sqlite:///{tmp_path / 's.db'}",
                           "--out", str(presets))
    preset = yaml.safe_load(presets.read_text())["presets"][0]
    assert code == 0 and preset["accuracy"]["metric"] == "top1" and preset["accuracy"]["value"] == 1.0
    assert preset["accuracy"]["reference"]["judged_set"] == "acc.npz[20:100]"
    bench = shlex.split(preset["bench_command"])
    assert "--calibration-set" in bench  # calibrated as the study was: its compile key is the study's
    code, out, err = run_cli(capsys, *bench[1:], "--time", "0.3", "--accuracy-set", str(acc), *NO_BUSY_CHECK)
    assert code == 0 and "taken from the compile cache" in out and "accuracy: top1 1, fp32 reference 1" in out, err
    code, out, err = run_cli(capsys, "verify", str(presets), "--rounds", "1", "--time", "0.3", *NO_BUSY_CHECK)
    assert "; top1 1 (fp32 reference 1)" in out, err  # its speed against the preset's: one short run, noisy
    int8 = {**preset, "candidate": preset["candidate"] | {"precision": "int8"}}
    (tmp_path / "int8.yaml").write_text(yaml.safe_dump({"presets": [int8]}))
    code, out, err = run_cli(capsys, "verify", str(tmp_path / "int8.yaml"), "--rounds", "1", "--time", "0.3",
                             *NO_BUSY_CHECK)
    assert code == 1 and "accuracy failed: top1 0." in out and "more than --max-drop 1%" in out
    x, labels = outlier_classifier_samples(100, seed=4)
    np.savez(acc, x=x, labels=labels)
    line = one_line_error(*run_cli(capsys, "verify", str(presets), "--rounds", "1")[::2])
    assert "the judged samples (acc.npz[20:100]) are not those the preset was judged on" in line
