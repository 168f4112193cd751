"""A Cloud AI 100 study with an accuracy set on the emulated card: precision and the int8 recipe searched, every
compile judged against the fp32 reference, an int8 recipe within --max-drop beating fp16, the recipe the emulator
makes lose accuracy rejected at stage accuracy, and the preset's quantized build; a set that does not fit the model
refused before the study."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from autotune.storage import load_study
from helpers import one_line_error, run_cli


def _accuracy_set(path, samples: int = 100, shape=(1, 3, 32, 32)):
    np.savez(path, input=np.random.default_rng(0).random((samples, *shape), dtype=np.float32))
    return path


def _run(capsys, emulator, tiny_onnx, tmp_path, *extra: str):
    return run_cli(capsys, "run", "--backend", "qaic", "--sdk-root", str(emulator), "--model", "resnet50",
                   "--scenario", "offline", "--onnx", str(tiny_onnx), "--storage", f"sqlite:///{tmp_path / 's.db'}",
                   "--workdir", str(tmp_path / "w"), "--seed", "0", "--compile-jobs", "0", "--validate-rounds", "3",
                   "--validate-max-rounds", "3", *extra)


@pytest.mark.slow
def test_a_precision_study_finds_int8_within_the_drop_and_rejects_a_lossy_recipe(emulator, tiny_onnx, tmp_path,
                                                                                 capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    acc = _accuracy_set(tmp_path / "acc.npz", 40)
    # random proposals: the recipe's values are drawn alike, the lossy schema among them
    code, out, err = _run(capsys, emulator, tiny_onnx, tmp_path, "--accuracy-set", str(acc), "--max-drop", "2%",
                          "--trials", "12", "--sampler", "random")
    assert code == 0, err
    assert "accuracy: agreement on 32 samples of acc.npz[8:40]" in out
    study = load_study(f"sqlite:///{tmp_path / 's.db'}", "resnet50-offline-qaic-16nsp")
    trials = [t for t in study.trials if t.user_attrs.get("candidate")]
    feasible = [t for t in trials if t.value is not None and t.user_attrs.get("failure_stage") is None]
    int8 = [t for t in feasible if t.user_attrs["candidate"]["precision"] == "int8"]
    fp16 = [t for t in feasible if t.user_attrs["candidate"]["precision"] == "fp16"]
    assert int8 and fp16 and max(t.value for t in int8) > max(t.value for t in fp16)
    assert all(t.user_attrs["accuracy"]["drop"] <= 0.02 for t in int8)
    lossy = [t for t in trials if t.user_attrs.get("failure_stage") == "accuracy"]
    assert any(t.user_attrs["candidate"]["schema_activations"] == "symmetric_with_power2_scale" for t in lossy)
    baseline = study.trials[0].user_attrs["candidate"]
    assert (baseline["precision"], baseline["schema_activations"]) == ("int8", "symmetric_with_uint8")
    presets = tmp_path / "presets.yaml"
    code, _, err = run_cli(capsys, "export", study.study_name, "--storage", f"sqlite:///{tmp_path / 's.db'}",
                           "--out", str(presets))
    assert code == 0, err
    preset = yaml.safe_load(presets.read_text())["presets"][0]
    fields = json.dumps(preset)
    assert "CM_QAIC_MODEL_COMPILER_PARAMS_BASE" in fields and "-convert-to-fp16" not in preset["flags"]
    assert "-dump-profile=profile.yaml -input-list-file=calib.txt" in fields and "-load-profile=profile.yaml" in fields


def test_a_set_that_does_not_fit_the_model_is_refused_before_the_study(emulator, tiny_onnx, tmp_path, capsys):
    acc = _accuracy_set(tmp_path / "acc.npz", 10, shape=(1, 3, 16, 16))
    code, _, err = _run(capsys, emulator, tiny_onnx, tmp_path, "--accuracy-set", str(acc), "--trials", "1")
    assert "--accuracy-set acc.npz sample 0: 'input' has shape (1, 3, 16, 16)" in one_line_error(code, err)
    assert not (tmp_path / "s.db").exists()


def test_a_loaded_profile_with_a_searched_calibration_is_one_line(emulator, tiny_onnx, tmp_path, capsys):
    acc = _accuracy_set(tmp_path / "acc.npz", 10)
    code, _, err = _run(capsys, emulator, tiny_onnx, tmp_path, "--accuracy-set", str(acc), "--trials", "1",
                        "--base-flags", "-load-profile=p.yaml")
    assert "base flag '-load-profile=p.yaml' loads a profile" in one_line_error(code, err)
    assert not (tmp_path / "s.db").exists()
